//! What `stream-hub`'s sub-commands do, all but `serve`: the registry, policies,
//! connection strings, endpoints, open streams and the activity log, on the data
//! directory the CLI shares with a running hub. Whether a device is online and which
//! streams are open is what the running hub last published there ([`crate::live`]).

use std::{collections::HashMap, time::Duration};

use anyhow::Context;
use device_streams_protocol::{
    connection_string::{DeviceConnectionString, HostName, ServiceConnectionString},
    Secret,
};

use crate::{
    activity, certs,
    cli::{
        AuthType, CaCommand, Command, DeviceCommand, ModuleCommand, PolicyCommand, StreamsCommand,
    },
    init::{self, DataDir},
    live::{self, DeviceState},
    registry::{Device, DeviceAuth, Module, Policy, Registry, Right},
    registry_api::{auth_json, device_json},
    x509, Config,
};

/// Runs every sub-command but `serve` (which needs the runtime: see [`crate::cli::serve`]).
pub fn run(dir: &DataDir, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init { hostname, cluster } => init_data_dir(dir, &hostname, cluster),
        Command::Device(cmd) => device(dir, cmd),
        Command::Policy(cmd) => policy(dir, cmd),
        Command::Ca(cmd) => ca(dir, cmd),
        Command::Module(cmd) => module(dir, cmd),
        Command::Streams(cmd) => streams(dir, cmd),
        Command::ConnectionString { policy } => service_string(dir, &policy),
        Command::Endpoints {
            listen,
            streaming_url,
        } => {
            let registry = dir.registry()?;
            let config = Config::new(dir.hostname(&registry)?, listen.port(), streaming_url);
            println!("{}", config.endpoints_json());
            Ok(())
        }
        Command::Logs {
            device,
            since,
            json,
        } => logs(dir, device.as_deref(), since, json),
        Command::Cert { names } => cert(dir, &names),
        Command::Serve(_) => anyhow::bail!("serve runs through cli::serve"),
        Command::Cluster(crate::cli::ClusterCommand::Status { json }) => {
            crate::cluster::status(&dir.path, json)
        }
    }
}

/// `stream-hub init`: a new data directory, with a warning if Microsoft's SDKs could not
/// use the host name.
fn init_data_dir(
    dir: &DataDir,
    hostname: &str,
    cluster: crate::cluster::ClusterArgs,
) -> anyhow::Result<()> {
    init::init_with(dir, hostname, cluster.given().as_ref())?;
    if let Some(warning) = init::microsoft_sdk_warning(hostname) {
        eprintln!("stream-hub: {warning}");
    }
    eprintln!(
        "initialised {} for {hostname}; CA certificate: {}",
        dir.path.display(),
        dir.ca_file().display()
    );
    Ok(())
}

/// `stream-hub connection-string`: a policy's service connection string.
fn service_string(dir: &DataDir, policy: &str) -> anyhow::Result<()> {
    let registry = dir.registry()?;
    let p = registry
        .policy(policy)?
        .with_context(|| format!("policy '{policy}' does not exist"))?;
    print_service_string(&dir.host(&registry)?, &p);
    Ok(())
}

/// `stream-hub cert`: re-issues the server certificate from the data directory's CA.
fn cert(dir: &DataDir, names: &[String]) -> anyhow::Result<()> {
    let registry = dir.registry()?;
    let host = dir.host(&registry)?;
    let covered = certs::reissue(&dir.cert_files(), &host.host, &host.host, names)?;
    println!(
        "{}: a new certificate for {}",
        dir.cert_file().display(),
        covered.join(", ")
    );
    Ok(())
}

fn print_service_string(host: &HostName, p: &Policy) {
    let cs = ServiceConnectionString::new(host.clone(), &p.name, p.primary_key.clone());
    println!("{}", cs.to_secret_string().expose());
}

/// The device's primary key, or its secondary one.
fn key(d: &Device, secondary: bool) -> &Secret {
    match secondary {
        true => &d.secondary_key,
        false => &d.primary_key,
    }
}

fn device(dir: &DataDir, cmd: DeviceCommand) -> anyhow::Result<()> {
    let registry: Registry = dir.registry()?;
    let host = dir.host(&registry)?;
    let print_cs = |id: &str, key: &Secret| print_device_string(&registry, &host, id, key);
    let find = |id: &str| {
        registry
            .device(id)?
            .with_context(|| format!("device '{}' is not registered", escape(id, false)))
    };
    let state = |id: &str| -> anyhow::Result<DeviceState> {
        Ok(states(dir, &registry)?.remove(id).unwrap_or_default())
    };
    match cmd {
        DeviceCommand::Add {
            id,
            auth,
            thumbprint,
            secondary_thumbprint,
        } => {
            let auth = auth_of(auth, thumbprint, secondary_thumbprint)?;
            print_cs(&id, &registry.add_device_with_auth(&id, &auth)?.primary_key)?;
        }
        DeviceCommand::SetThumbprint {
            id,
            thumbprint,
            secondary,
            remove: _,
        } => {
            registry.set_thumbprint(&id, thumbprint.as_deref(), secondary)?;
        }
        DeviceCommand::ConnectionString { id, secondary } => {
            print_cs(&id, key(&find(&id)?, secondary))?;
        }
        DeviceCommand::RotateKey { id, secondary } => {
            print_cs(&id, key(&registry.rotate_key(&id, secondary)?, secondary))?;
        }
        DeviceCommand::List { json } => list_devices(dir, &registry, json)?,
        DeviceCommand::Show { id, json: true } => {
            let auth = registry.device_auth(&id)?;
            println!("{}", device_view(&find(&id)?, &state(&id)?, &auth))
        }
        DeviceCommand::Show { id, json: false } => {
            let auth = registry.device_auth(&id)?;
            print!("{}", device_text(&find(&id)?, &state(&id)?, &auth))
        }
        DeviceCommand::Enable { id } => registry.set_enabled(&id, true)?,
        DeviceCommand::Disable { id } => registry.set_enabled(&id, false)?,
        DeviceCommand::Delete { id } => registry.delete_device(&id)?,
    }
    Ok(())
}

/// A device's connection string; an X.509 device's names no key: its certificate is its
/// credential.
fn print_device_string(
    registry: &Registry,
    host: &HostName,
    id: &str,
    key: &Secret,
) -> anyhow::Result<()> {
    let cs = match registry.device_auth(id)?.is_x509() {
        true => DeviceConnectionString::new_x509(host.clone(), id),
        false => DeviceConnectionString::new(host.clone(), id, key.clone()),
    };
    println!("{}", cs.to_secret_string().expose());
    Ok(())
}

/// How `device add --auth …` registers the device.
fn auth_of(
    auth: AuthType,
    thumbprint: Option<String>,
    secondary_thumbprint: Option<String>,
) -> anyhow::Result<DeviceAuth> {
    if auth != AuthType::X509Thumbprint && thumbprint.is_some() {
        anyhow::bail!("--thumbprint is for --auth x509-thumbprint");
    }
    Ok(match auth {
        AuthType::Sas => DeviceAuth::Sas,
        AuthType::X509Thumbprint => DeviceAuth::SelfSigned {
            primary: thumbprint,
            secondary: secondary_thumbprint,
        },
        AuthType::X509Ca => DeviceAuth::CertificateAuthority,
    })
}

/// A device as the CLI shows it in JSON: Azure's shape ([`device_json`]) with the
/// connection state the running hub published, and without the keys.
fn device_view(d: &Device, state: &DeviceState, auth: &DeviceAuth) -> serde_json::Value {
    let mut json = device_json(d, state.online_since.is_some(), state);
    if let Some(obj) = json.as_object_mut() {
        // Keys only through connection-string; thumbprints are not secret.
        obj.insert("authentication".into(), auth_json(auth, None));
        obj.insert("openStreams".into(), state.open_streams.into());
    }
    json
}

/// Every identity's connection state: in a cluster, the presence bucket's (the CLI's
/// copy of the registry has none); else what the running hub published in the database.
fn states(dir: &DataDir, registry: &Registry) -> anyhow::Result<HashMap<String, DeviceState>> {
    match crate::cluster::remembered(&dir.path)? {
        Some(cluster) => crate::cluster::activity::device_states(&cluster),
        None => Ok(live::device_states(registry)?),
    }
}

fn list_devices(dir: &DataDir, registry: &Registry, json: bool) -> anyhow::Result<()> {
    let devices = registry.devices()?;
    let states = states(dir, registry)?;
    let auths = registry.device_auths()?;
    let state = |d: &Device| states.get(&d.id).copied().unwrap_or_default();
    let auth = |d: &Device| auths.get(&d.id).cloned().unwrap_or_default();
    if json {
        let list = devices
            .iter()
            .map(|d| device_view(d, &state(d), &auth(d)))
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(());
    }
    let header = ["DEVICE", "STATUS", "STATE", "LAST SEEN", "STREAMS", "AUTH"];
    let mut rows = vec![header.map(String::from).to_vec()];
    for d in &devices {
        let s = state(d);
        rows.push(vec![
            escape(&d.id, true),
            status(d).into(),
            online(&s).into(),
            last_seen(d, &s),
            s.open_streams.to_string(),
            auth(d).kind().into(),
        ]);
    }
    print!("{}", table(&rows));
    Ok(())
}

fn status(d: &Device) -> &'static str {
    if d.enabled {
        "enabled"
    } else {
        "disabled"
    }
}

fn online(s: &DeviceState) -> &'static str {
    match s.online_since {
        Some(_) => "online",
        None => "offline",
    }
}

/// "connected now", when the device was last seen, or "never".
fn last_seen(d: &Device, s: &DeviceState) -> String {
    match (s.online_since, s.last_seen.or(d.last_connected_at)) {
        (Some(_), _) => "connected now".into(),
        (None, Some(at)) => unix_time(at),
        (None, None) => "never".into(),
    }
}

/// One device for people: aligned `key: value` lines.
fn device_text(d: &Device, s: &DeviceState, auth: &DeviceAuth) -> String {
    let ago = |at: u64| {
        let elapsed =
            Duration::from_secs(device_streams_protocol::sas::unix_now().saturating_sub(at));
        format!("{} ({} ago)", unix_time(at), age(elapsed))
    };
    let seen = match (s.online_since, s.last_seen.or(d.last_connected_at)) {
        (None, Some(at)) => ago(at),
        _ => last_seen(d, s),
    };
    let connection = match s.online_since {
        Some(since) => format!("online since {}", ago(since)),
        None => "offline".into(),
    };
    let lines = [
        ("device id", escape(&d.id, false)),
        ("status", status(d).into()),
        ("connection", connection),
        ("last seen", seen),
        ("open streams", s.open_streams.to_string()),
        ("authentication", auth_text(auth)),
        ("created", unix_time(d.created_at)),
        (
            "last connected",
            d.last_connected_at.map_or("never".into(), unix_time),
        ),
    ];
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    lines
        .iter()
        .map(|(k, v)| format!("{:width$} {v}\n", format!("{k}:")))
        .collect()
}

/// The authentication type, with a thumbprint device's thumbprints.
fn auth_text(auth: &DeviceAuth) -> String {
    match auth {
        DeviceAuth::SelfSigned { primary, secondary } => {
            let t = |t: &Option<String>| t.clone().unwrap_or_else(|| "none".into());
            format!(
                "selfSigned (primary thumbprint {}, secondary {})",
                t(primary),
                t(secondary)
            )
        }
        other => other.kind().into(),
    }
}

/// `stream-hub module ...`.
fn module(dir: &DataDir, cmd: ModuleCommand) -> anyhow::Result<()> {
    let registry = dir.registry()?;
    let host = dir.host(&registry)?;
    let print_cs = |m: &Module, secondary: bool| {
        let key = match secondary {
            true => &m.secondary_key,
            false => &m.primary_key,
        };
        let cs = DeviceConnectionString::new(host.clone(), &m.device_id, key.clone())
            .with_module(&m.module_id);
        println!("{}", cs.to_secret_string().expose());
    };
    match cmd {
        ModuleCommand::Add { device, module } => {
            print_cs(&registry.add_module(&device, &module)?, false)
        }
        ModuleCommand::ConnectionString {
            device,
            module,
            secondary,
        } => {
            let m = registry.module(&device, &module)?.with_context(|| {
                format!(
                    "module '{}/{}' is not registered",
                    escape(&device, false),
                    escape(&module, false)
                )
            })?;
            print_cs(&m, secondary);
        }
        ModuleCommand::RotateKey {
            device,
            module,
            secondary,
        } => print_cs(
            &registry.rotate_module_key(&device, &module, secondary)?,
            secondary,
        ),
        ModuleCommand::Enable { device, module } => {
            registry.set_module_enabled(&device, &module, true)?
        }
        ModuleCommand::Disable { device, module } => {
            registry.set_module_enabled(&device, &module, false)?
        }
        ModuleCommand::Delete { device, module } => registry.delete_module(&device, &module)?,
        ModuleCommand::List { device, json } => list_modules(dir, &registry, &device, json)?,
    }
    Ok(())
}

fn list_modules(
    dir: &DataDir,
    registry: &Registry,
    device: &str,
    json: bool,
) -> anyhow::Result<()> {
    if registry.device(device)?.is_none() {
        anyhow::bail!("device '{}' is not registered", escape(device, false));
    }
    let modules = registry.modules(device)?;
    let states = states(dir, registry)?;
    let state = |m: &Module| states.get(&m.identity()).copied().unwrap_or_default();
    if json {
        let list = modules.iter().map(|m| {
            let s = state(m);
            serde_json::json!({
                "deviceId": m.device_id,
                "moduleId": m.module_id,
                "status": if m.enabled { "enabled" } else { "disabled" },
                "connectionState": if s.online_since.is_some() { "Connected" } else { "Disconnected" },
                "createdAt": m.created_at,
                "lastConnectedAt": m.last_connected_at,
                "openStreams": s.open_streams,
            })
        });
        println!("{}", serde_json::Value::Array(list.collect()));
        return Ok(());
    }
    let header = ["MODULE", "STATUS", "STATE", "LAST SEEN", "STREAMS"];
    let mut rows = vec![header.map(String::from).to_vec()];
    for m in &modules {
        let s = state(m);
        let seen = match (s.online_since, s.last_seen.or(m.last_connected_at)) {
            (Some(_), _) => "connected now".into(),
            (None, Some(at)) => unix_time(at),
            (None, None) => "never".into(),
        };
        rows.push(vec![
            escape(&m.module_id, true),
            if m.enabled { "enabled" } else { "disabled" }.into(),
            online(&s).into(),
            seen,
            s.open_streams.to_string(),
        ]);
    }
    print!("{}", table(&rows));
    Ok(())
}

/// `stream-hub ca ...`.
fn ca(dir: &DataDir, cmd: CaCommand) -> anyhow::Result<()> {
    let registry = dir.registry()?;
    match cmd {
        CaCommand::Add { name, cert } => {
            let der = device_streams_protocol::tls::load_certs(&cert)?.remove(0);
            x509::check_ca(&der).map_err(|e| {
                anyhow::anyhow!("{} is not a usable CA certificate: {e}", cert.display())
            })?;
            let ca = registry.add_ca(&name, &der)?;
            println!(
                "CA '{}' registered (SHA-256 thumbprint {})",
                escape(&ca.name, false),
                x509::thumbprints(&ca.der).1
            );
        }
        CaCommand::List { json } => {
            let cas = registry.cas()?;
            if json {
                let list = cas.iter().map(|ca| {
                    serde_json::json!({
                        "name": ca.name,
                        "thumbprint": x509::thumbprints(&ca.der).1,
                        "addedAt": ca.added_at,
                    })
                });
                println!("{}", serde_json::Value::Array(list.collect()));
                return Ok(());
            }
            let mut rows = vec![["CA", "SHA-256 THUMBPRINT", "ADDED"]
                .map(String::from)
                .to_vec()];
            for ca in &cas {
                rows.push(vec![
                    escape(&ca.name, true),
                    x509::thumbprints(&ca.der).1,
                    unix_time(ca.added_at),
                ]);
            }
            print!("{}", table(&rows));
        }
        CaCommand::Delete { name } => registry.delete_ca(&name)?,
    }
    Ok(())
}

fn streams(dir: &DataDir, cmd: StreamsCommand) -> anyhow::Result<()> {
    let registry = dir.registry()?;
    // A cluster's streams are each node's own: every node is asked.
    let cluster = crate::cluster::remembered(&dir.path)?;
    match cmd {
        StreamsCommand::List { device, json } => {
            let rows = match &cluster {
                Some(c) => crate::cluster::streams::list(c, device.as_deref())?,
                None => live::open_streams(&registry, device.as_deref())?,
            };
            print_streams(&rows, json)
        }
        StreamsCommand::Close { id } => match &cluster {
            Some(c) => match crate::cluster::streams::close(c, &id)? {
                true => {
                    println!("closed stream {}", escape(&id, false));
                    Ok(())
                }
                false => anyhow::bail!(
                    "no open stream '{}' on any node (`stream-hub streams list` shows them)",
                    escape(&id, false)
                ),
            },
            None => close_stream(&registry, &id),
        },
    }
}

/// `streams list`: a table, or JSON rows with their age in seconds.
fn print_streams(rows: &[live::StreamRow], json: bool) -> anyhow::Result<()> {
    let now = activity::unix_ms(std::time::SystemTime::now());
    let age_of = |r: &live::StreamRow| Duration::from_millis(now.saturating_sub(r.opened_at));
    if json {
        let mut list = Vec::new();
        for r in rows {
            let mut v = serde_json::to_value(r)?;
            v["ageSeconds"] = age_of(r).as_secs().into();
            list.push(v);
        }
        println!("{}", serde_json::Value::Array(list));
        return Ok(());
    }
    let header = [
        "STREAM",
        "DEVICE",
        "NAME",
        "POLICY",
        "AGE",
        "TO DEVICE",
        "FROM DEVICE",
    ];
    let mut table_rows = vec![header.map(String::from).to_vec()];
    for r in rows {
        table_rows.push(vec![
            escape(&r.stream_id, true),
            escape(&r.device_id, true),
            escape(&r.stream_name, true),
            escape(&r.policy, true),
            age(age_of(r)),
            r.bytes_to_device.to_string(),
            r.bytes_from_device.to_string(),
        ]);
    }
    print!("{}", table(&table_rows));
    Ok(())
}

/// How long `streams close` waits to see the hub end the stream.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

fn close_stream(registry: &Registry, id: &str) -> anyhow::Result<()> {
    let shown = escape(id, false);
    if !live::request_close(registry, id)? {
        anyhow::bail!("no open stream '{shown}' (`stream-hub streams list` shows them)");
    }
    let deadline = std::time::Instant::now() + CLOSE_WAIT;
    while std::time::Instant::now() < deadline {
        if !live::is_open(registry, id)? {
            println!("closed stream {shown}");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!(
        "asked the hub to close stream '{shown}', but it is still open after {CLOSE_WAIT:?}: is the hub running?"
    )
}

/// Unix seconds as an RFC 3339 time (UTC).
fn unix_time(secs: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A duration in one short word: `42s`, `3m05s`, `2h07m`, `4d03h`.
fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// Rows as columns padded to their widest cell (the cells are escaped already).
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells = row.iter().zip(&widths).map(|(c, w)| format!("{c:w$}"));
        out.push_str(cells.collect::<Vec<_>>().join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn policy(dir: &DataDir, cmd: PolicyCommand) -> anyhow::Result<()> {
    let registry = dir.registry()?;
    match cmd {
        PolicyCommand::Add { name, rights } => {
            let rights = rights
                .iter()
                .map(|r| Right::parse(r))
                .collect::<Result<Vec<_>, _>>()?;
            let p = registry.add_policy(&name, &rights)?;
            print_service_string(&dir.host(&registry)?, &p);
        }
        PolicyCommand::List { json } => {
            let policies = registry.policies()?;
            if json {
                let list: Vec<_> = policies
                    .iter()
                    .map(|p| serde_json::json!({ "name": p.name, "rights": p.rights }))
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for p in policies {
                    println!("{}\t{}", p.name, p.rights.join(","));
                }
            }
        }
        PolicyCommand::Delete { name } => registry.delete_policy(&name)?,
        PolicyCommand::RotateKey { name, secondary } => {
            let mut p = registry.rotate_policy_key(&name, secondary)?;
            if secondary {
                // The printed string carries the key that was just made.
                std::mem::swap(&mut p.primary_key, &mut p.secondary_key);
            }
            print_service_string(&dir.host(&registry)?, &p);
        }
    }
    Ok(())
}

fn logs(dir: &DataDir, device: Option<&str>, since: Duration, json: bool) -> anyhow::Result<()> {
    let registry = dir.registry()?;
    let from = std::time::SystemTime::now()
        .checked_sub(since)
        .unwrap_or(std::time::UNIX_EPOCH);
    let since = activity::unix_ms(from);
    // A cluster's log is every node's, in JetStream; the CLI's copy of the registry has none.
    let entries = match crate::cluster::remembered(&dir.path)? {
        Some(cluster) => crate::cluster::activity::query(&cluster, device, since)?,
        None => activity::query(registry.path(), device, since)?,
    };
    if json {
        println!("{}", terminal_safe_json(serde_json::to_string(&entries)?));
        return Ok(());
    }
    for e in entries {
        println!("{}", log_line(&e));
    }
    Ok(())
}

/// One record as a line of text. Every field but the counts can be the text of an
/// unauthenticated request (a device id from a URL), so nothing reaches the admin's terminal
/// raw: control and invisible characters are escaped (a newline would forge a record, an
/// ESC drive the terminal), and so are spaces in the one-word columns, which would shift them.
fn log_line(e: &activity::Entry) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_millis(e.time);
    let ms = |v: Option<f64>| v.map(|v| format!("{v:.1}ms")).unwrap_or_else(|| "-".into());
    let word = |s: &str| escape(s, true);
    format!(
        "{} {} {} {} policy={} setup={} duration={} to_device={} from_device={} {}",
        humantime::format_rfc3339_millis(time),
        word(&e.device),
        word(&e.stream),
        word(&e.result),
        word(&e.policy),
        ms(e.setup_ms),
        ms(e.duration_ms),
        e.bytes_to_device,
        e.bytes_from_device,
        escape(&e.detail, false)
    )
}

/// `s` with `\n`, `\r`, `\t`, `\\` and `\xNN`/`\u{N}` for everything a terminal would not
/// print as itself; the backslash is escaped too, so a typed `\n` cannot pass for an escaped one.
fn escape(s: &str, spaces: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            ' ' if spaces => out.push_str("\\x20"),
            c if (c as u32) < 0x100 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if invisible(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// JSON as serde_json writes it escapes only what JSON requires (below 0x20, quotes,
/// backslashes): DEL, the C1 controls (0x9b is a terminal's CSI) and the invisible
/// characters [`escape`] handles would still reach a terminal raw. They are only ever
/// inside strings, where `\uXXXX` means the same character to any JSON reader.
fn terminal_safe_json(json: String) -> String {
    if !json.chars().any(unsafe_in_json) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if unsafe_in_json(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

fn unsafe_in_json(c: char) -> bool {
    c == '\u{7f}' || ('\u{80}'..='\u{9f}').contains(&c) || invisible(c)
}

/// Unicode's line separators, bidirectional overrides and zero-width characters: not control
/// characters to Rust, yet they break a line or reorder or hide what the admin reads.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{061c}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(device: &str) -> activity::Entry {
        activity::Entry {
            category: "DeviceStreams",
            time: 1_700_000_000_000,
            device: device.into(),
            stream: "ssh".into(),
            policy: "service".into(),
            result: "unauthorized".into(),
            setup_ms: None,
            duration_ms: None,
            bytes_to_device: 0,
            bytes_from_device: 0,
            detail: "bad token\r\n\u{1b}]0;x\u{7}".into(),
        }
    }

    #[test]
    fn log_lines_escape_what_an_attacker_put_in_a_record() {
        let forged = "x\n2023-11-14T22:13:20.000Z dev1 ssh accepted\u{1b}[2J";
        let line = log_line(&entry(forged));
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(
            !line.chars().any(|c| c.is_control()),
            "control character left in {line:?}"
        );
        assert!(
            line.starts_with(
                "2023-11-14T22:13:20.000Z x\\n2023-11-14T22:13:20.000Z\\x20dev1\\x20ssh\\x20accepted\\x1b[2J ssh unauthorized policy=service "
            ),
            "{line}"
        );
        assert!(line.ends_with(" bad token\\r\\n\\x1b]0;x\\x07"), "{line}");
    }

    #[test]
    fn json_logs_escape_del_c1_and_invisible_characters_yet_read_back_the_same() {
        let mut e = entry("dev\u{7f}1");
        e.detail = "csi\u{9b}2J rtl\u{202e}txt \u{1b} é ✓".into();
        let json = terminal_safe_json(serde_json::to_string(&[&e]).unwrap());
        assert!(
            !json.chars().any(|c| c.is_control() || invisible(c)),
            "{json:?}"
        );
        assert!(
            json.contains(r"dev\u007f1") && json.contains(r"\u009b2J"),
            "{json}"
        );
        assert!(
            json.contains("é ✓"),
            "printable text stays as it is: {json}"
        );
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back[0]["device"], "dev\u{7f}1");
        assert_eq!(back[0]["detail"], e.detail.as_str());
    }

    #[test]
    fn ages_are_one_word_and_tables_line_up() {
        let ages = [5, 65, 7260, 2 * 86400 + 3600].map(|s| age(Duration::from_secs(s)));
        assert_eq!(ages, ["5s", "1m05s", "2h01m", "2d01h"]);
        let rows = [["ID", "STATE"], ["a-long-id", "online"], ["b", "offline"]];
        let rows: Vec<Vec<String>> = rows.iter().map(|r| r.map(String::from).to_vec()).collect();
        assert_eq!(
            table(&rows),
            "ID         STATE\na-long-id  online\nb          offline\n"
        );
    }

    #[test]
    fn device_text_escapes_and_aligns() {
        let device = Device {
            id: "x\u{1b}[2J".into(),
            primary_key: Secret::new("k1"),
            secondary_key: Secret::new("k2"),
            enabled: false,
            created_at: 0,
            last_connected_at: None,
        };
        let text = device_text(&device, &DeviceState::default(), &DeviceAuth::Sas);
        assert!(text.starts_with("device id:      x\\x1b[2J\n"), "{text}");
        assert!(text.contains("\nlast seen:      never\n"), "{text}");
        assert!(text.contains("\nstatus:         disabled\n"), "{text}");
        assert!(!text.contains("k1") && !text.contains("k2"));
        let online = DeviceState {
            online_since: Some(0),
            last_seen: Some(0),
            open_streams: 2,
        };
        let text = device_text(&device, &online, &DeviceAuth::Sas);
        assert!(text.contains("\nlast seen:      connected now\n"), "{text}");
        assert!(
            text.contains("\nconnection:     online since 1970-01-01T00:00:00Z ("),
            "{text}"
        );
    }

    #[test]
    fn escaping_leaves_ordinary_text_alone_and_marks_the_rest() {
        assert_eq!(escape("dev-1.a_b:c@d", true), "dev-1.a_b:c@d");
        assert_eq!(escape("a b", false), "a b");
        assert_eq!(escape("a b", true), "a\\x20b");
        assert_eq!(escape("a\\nb", false), "a\\\\nb");
        assert_eq!(escape("\u{7f}\u{85}\u{0}", false), "\\x7f\\x85\\x00");
        assert_eq!(escape("a\u{202e}b\u{2028}", false), "a\\u{202e}b\\u{2028}");
        assert_eq!(escape("grüße, 日本", false), "grüße, 日本");
    }
}
