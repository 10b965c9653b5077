//! What `stream-hub`'s sub-commands do, all but `serve`: the registry, policies,
//! connection strings, endpoints and the activity log, on the data directory the CLI
//! shares with a running hub.

use std::time::Duration;

use anyhow::Context;
use device_streams_protocol::{
    connection_string::{DeviceConnectionString, HostName, ServiceConnectionString},
    Secret,
};

use crate::{
    activity, certs,
    cli::{Command, DeviceCommand, PolicyCommand},
    init::{self, DataDir},
    registry::{Device, Policy, Registry, Right},
    registry_api::device_json,
    Config, Limits,
};

/// Runs every sub-command but `serve` (which needs the runtime: see [`crate::cli::serve`]).
pub fn run(dir: &DataDir, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init { hostname } => {
            init::init(dir, &hostname)?;
            if let Some(warning) = init::microsoft_sdk_warning(&hostname) {
                eprintln!("stream-hub: {warning}");
            }
            eprintln!(
                "initialised {} for {hostname}; CA certificate: {}",
                dir.path.display(),
                dir.ca_file().display()
            );
            Ok(())
        }
        Command::Device(cmd) => device(dir, cmd),
        Command::Policy(cmd) => policy(dir, cmd),
        Command::ConnectionString { policy } => {
            let registry = dir.registry()?;
            let p = registry
                .policy(&policy)?
                .with_context(|| format!("policy '{policy}' does not exist"))?;
            print_service_string(&dir.host(&registry)?, &p);
            Ok(())
        }
        Command::Endpoints {
            listen,
            streaming_url,
        } => {
            let registry = dir.registry()?;
            let config = Config::new(
                dir.hostname(&registry)?,
                listen.port(),
                streaming_url,
                Limits::default(),
            );
            println!("{}", config.endpoints_json());
            Ok(())
        }
        Command::Logs {
            device,
            since,
            json,
        } => logs(dir, device.as_deref(), since, json),
        Command::Cert { names } => {
            let registry = dir.registry()?;
            let host = dir.host(&registry)?;
            let covered = certs::reissue(dir, &host.host, &host.host, &names)?;
            println!(
                "{}: a new certificate for {}",
                dir.cert_file().display(),
                covered.join(", ")
            );
            Ok(())
        }
        Command::Serve(_) => anyhow::bail!("serve runs through cli::serve"),
    }
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
    let print_cs = |id: &str, key: &Secret| {
        let cs = DeviceConnectionString::new(host.clone(), id, key.clone());
        println!("{}", cs.to_secret_string().expose())
    };
    let find = |id: &str| {
        registry
            .device(id)?
            .with_context(|| format!("device '{id}' is not registered"))
    };
    let public = |d: &Device| {
        let mut json = device_json(d, false);
        if let Some(obj) = json.as_object_mut() {
            obj.remove("authentication");
            obj.remove("connectionState");
        }
        json
    };
    match cmd {
        DeviceCommand::Add { id } => print_cs(&id, &registry.add_device(&id)?.primary_key),
        DeviceCommand::ConnectionString { id, secondary } => {
            print_cs(&id, key(&find(&id)?, secondary));
        }
        DeviceCommand::RotateKey { id, secondary } => {
            print_cs(&id, key(&registry.rotate_key(&id, secondary)?, secondary));
        }
        DeviceCommand::List { json: true } => {
            let list = registry.devices()?.iter().map(public).collect();
            println!("{}", serde_json::Value::Array(list));
        }
        DeviceCommand::List { json: false } => {
            for d in registry.devices()? {
                println!(
                    "{}\t{}",
                    d.id,
                    if d.enabled { "enabled" } else { "disabled" }
                );
            }
        }
        DeviceCommand::Show { id, json: true } => println!("{}", public(&find(&id)?)),
        DeviceCommand::Show { id, json: false } => {
            println!("{}", serde_json::to_string_pretty(&public(&find(&id)?))?)
        }
        DeviceCommand::Enable { id } => registry.set_enabled(&id, true)?,
        DeviceCommand::Disable { id } => registry.set_enabled(&id, false)?,
        DeviceCommand::Delete { id } => registry.delete_device(&id)?,
    }
    Ok(())
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
    }
    Ok(())
}

fn logs(dir: &DataDir, device: Option<&str>, since: Duration, json: bool) -> anyhow::Result<()> {
    let registry = dir.registry()?;
    let from = std::time::SystemTime::now()
        .checked_sub(since)
        .unwrap_or(std::time::UNIX_EPOCH);
    let entries = activity::query(registry.path(), device, activity::unix_ms(from))?;
    if json {
        println!("{}", serde_json::to_string(&entries)?);
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
