//! `--config FILE`: a TOML file whose keys are the binary's long flag names.
//!
//! A file's values become the *defaults* of the flags they name (clap's `default_value`),
//! so clap then parses as usual and the precedence is flag > environment variable > file >
//! built-in default, without a second definition of any option: the clap `Args` structs
//! stay the one place options are declared, and no environment variable is touched.
//!
//! Keys may be written `max-streams` or `max_streams`. Values are strings, numbers or
//! booleans; an array is allowed for a flag that takes a list (`map = ["ssh=…", "rdp=…"]`).
//! A key that names no flag with an environment variable is an error naming the key and
//! the file, so a typo is never silently ignored.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    path::{Path, PathBuf},
};

use clap::{Arg, Command};

/// The id of the argument every binary declares for the file: `--config`.
pub const ARG: &str = "config";

#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read config file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("config file {path}: unknown key '{key}' (known keys: {known})")]
    UnknownKey {
        path: PathBuf,
        key: String,
        known: String,
    },
    #[error("config file {path}: key '{key}' {problem}")]
    BadValue {
        path: PathBuf,
        key: String,
        problem: &'static str,
    },
}

/// A settable key: whether its flag takes a list.
struct Setting {
    list: bool,
}

/// Every flag of `cmd` and its sub-commands that reads an environment variable, by long
/// name: what a file may set, as the environment may. Sub-commands' flags share a name
/// only when they are the same option.
fn settings(cmd: &Command) -> BTreeMap<String, Setting> {
    let mut out = BTreeMap::new();
    collect(cmd, &mut out);
    out
}

fn collect(cmd: &Command, out: &mut BTreeMap<String, Setting>) {
    for arg in cmd.get_arguments() {
        if let (Some(long), Some(_)) = (arg.get_long(), arg.get_env()) {
            if arg.get_id() != ARG {
                let list = arg.get_value_delimiter().is_some();
                out.entry(long.to_string()).or_insert(Setting { list });
            }
        }
    }
    for sub in cmd.get_subcommands() {
        collect(sub, out);
    }
}

/// The file named by `--config FILE` / `--config=FILE` on the command line, else by the
/// `--config` argument's environment variable.
pub fn find(cmd: &Command, args: &[OsString]) -> Option<PathBuf> {
    let arg: &Arg = cmd.get_arguments().find(|a| a.get_id() == ARG)?;
    let long = format!("--{}", arg.get_long()?);
    let mut iter = args.iter().skip(1);
    while let Some(a) = iter.next() {
        let a = a.to_string_lossy();
        if a == "--" {
            break;
        }
        if a == long {
            return iter.next().map(PathBuf::from);
        }
        if let Some(value) = a.strip_prefix(&format!("{long}=")) {
            return Some(PathBuf::from(value));
        }
    }
    let env = std::env::var_os(arg.get_env()?)?;
    (!env.is_empty()).then(|| PathBuf::from(env))
}

/// The defaults `text` (the file at `path`) sets: (long flag name, values) for each key.
pub fn values(
    cmd: &Command,
    path: &Path,
    text: &str,
) -> Result<Vec<(String, Vec<String>)>, ConfigFileError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigFileError::Toml {
            path: path.into(),
            message: e.message().to_string(),
        })?;
    let known = settings(cmd);
    let mut out = Vec::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let setting = known
            .get(&long)
            .ok_or_else(|| ConfigFileError::UnknownKey {
                path: path.into(),
                key: key.clone(),
                known: known.keys().cloned().collect::<Vec<_>>().join(", "),
            })?;
        let bad = |problem| ConfigFileError::BadValue {
            path: path.into(),
            key: key.clone(),
            problem,
        };
        let values = match value {
            toml::Value::Array(_) if !setting.list => {
                return Err(bad("takes one value, not a list"))
            }
            toml::Value::Array(items) => items
                .into_iter()
                .map(|v| scalar(v).ok_or_else(|| bad("must be a list of strings or numbers")))
                .collect::<Result<Vec<_>, _>>()?,
            other => vec![scalar(other).ok_or_else(|| bad("must be a string, number or boolean"))?],
        };
        out.push((long, values));
    }
    Ok(out)
}

fn scalar(value: toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `cmd` with the defaults of the config file named in `args` (or its variable), if any.
pub fn apply(cmd: Command, args: &[OsString]) -> Result<Command, ConfigFileError> {
    let Some(path) = find(&cmd, args) else {
        return Ok(cmd);
    };
    let text = std::fs::read_to_string(&path).map_err(|cause| ConfigFileError::Read {
        path: path.clone(),
        cause,
    })?;
    let values = values(&cmd, &path, &text)?;
    Ok(with_defaults(cmd, &values))
}

/// Sets each named flag's default, in `cmd` and every sub-command that has it.
fn with_defaults(mut cmd: Command, values: &[(String, Vec<String>)]) -> Command {
    let ids: Vec<(clap::Id, Vec<String>)> = cmd
        .get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?;
            let (_, v) = values.iter().find(|(name, _)| name == long)?;
            Some((a.get_id().clone(), v.clone()))
        })
        .collect();
    for (id, v) in ids {
        // A value from the file is given, so a required flag need not be.
        cmd = cmd.mut_arg(id, |a| a.default_values(v).required(false));
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in subs {
        cmd = cmd.mut_subcommand(name, |sub| with_defaults(sub, values));
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Parser, Debug)]
    struct Args {
        #[arg(long, env = "CFT_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, env = "CFT_MAX_STREAMS", default_value_t = 100)]
        max_streams: usize,
        #[arg(long, env = "CFT_MAP", value_delimiter = ',')]
        map: Vec<String>,
        #[arg(long, env = "CFT_STDIO")]
        stdio: bool,
        #[arg(long)]
        json: bool,
    }

    fn argv(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    fn vals(text: &str) -> Result<Vec<(String, Vec<String>)>, ConfigFileError> {
        values(&Args::command(), Path::new("/etc/x.toml"), text)
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn keys_become_the_flags_defaults() {
        let v =
            vals("max-streams = 5\nmap = [\"ssh=127.0.0.1:22\", \"rdp=h:3389\"]\nstdio = true\n")
                .unwrap();
        assert_eq!(
            v,
            vec![
                ("map".into(), s(&["ssh=127.0.0.1:22", "rdp=h:3389"])),
                ("max-streams".into(), s(&["5"])),
                ("stdio".into(), s(&["true"])),
            ]
        );
        // snake_case works too.
        assert_eq!(vals("max_streams = 7").unwrap()[0].1, s(&["7"]));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_file() {
        let e = vals("max-stream = 5").unwrap_err().to_string();
        assert!(
            e.contains("'max-stream'") && e.contains("/etc/x.toml"),
            "{e}"
        );
        assert!(e.contains("max-streams"), "lists the known keys: {e}");
        // A flag without a variable is not settable from the file.
        assert!(vals("json = true")
            .unwrap_err()
            .to_string()
            .contains("'json'"));
        // --config itself is not a key.
        assert!(vals("config = 'a'").is_err());
        let e = vals("max-streams = [1, 2]").unwrap_err().to_string();
        assert!(e.contains("not a list"), "{e}");
        let e = vals("max-streams = { a = 1 }").unwrap_err().to_string();
        assert!(e.contains("max-streams"), "{e}");
        let e = vals("max-streams = ").unwrap_err().to_string();
        assert!(e.contains("not valid TOML"), "{e}");
    }

    #[test]
    fn the_file_is_found_on_the_command_line() {
        let cmd = Args::command();
        let found = |a: &[&str]| find(&cmd, &argv(a));
        assert_eq!(found(&["p", "--config", "a.toml"]), Some("a.toml".into()));
        assert_eq!(
            found(&["p", "--stdio", "--config=b.toml"]),
            Some("b.toml".into())
        );
        assert_eq!(found(&["p", "--", "--config", "c"]), None);
    }

    /// The environment's place (between flag and file) is shown by each binary's own CLI
    /// test, which can give a child process a variable; a test here cannot set one safely.
    #[test]
    fn file_values_are_defaults_under_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "max-streams = 5\nmap = [\"a=h:1\", \"b=h:2\"]\nstdio = true\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let parse = |a: &[&str]| {
            let cmd = apply(Args::command(), &argv(a)).unwrap();
            Args::from_arg_matches(&cmd.try_get_matches_from(a).unwrap()).unwrap()
        };
        let args = parse(&["p", "--config", p]);
        assert_eq!(args.max_streams, 5, "file over default");
        assert_eq!(args.map, vec!["a=h:1", "b=h:2"]);
        assert!(args.stdio);
        let args = parse(&["p", "--config", p, "--max-streams", "9", "--map", "c=h:3"]);
        assert_eq!(args.max_streams, 9, "flag over file");
        assert_eq!(args.map, vec!["c=h:3"]);
        assert_eq!(
            parse(&["p"]).max_streams,
            100,
            "no file: the built-in default"
        );

        let e = apply(
            Args::command(),
            &argv(&["p", "--config", "/nonexistent/c.toml"]),
        );
        assert!(e.unwrap_err().to_string().contains("/nonexistent/c.toml"));
    }
}
