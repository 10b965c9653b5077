//! `--config FILE`: a TOML file whose keys are the binary's long flag names.
//!
//! Every flag already reads an environment variable, so a file is applied by setting, for
//! each key, the variable of the flag with that long name — unless the environment already
//! sets it. Clap then parses as usual, which gives the precedence
//! flag > environment > file > default without a second definition of any option: the
//! clap `Args` structs stay the one place options are declared.
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

/// A settable key: the flag's environment variable and its list delimiter, if it takes a list.
struct Setting {
    env: OsString,
    delimiter: Option<char>,
}

/// Every flag of `cmd` and its sub-commands that reads an environment variable, by long name.
/// Sub-commands' flags share a name only when they are the same option (same variable).
fn settings(cmd: &Command) -> BTreeMap<String, Setting> {
    let mut out = BTreeMap::new();
    collect(cmd, &mut out);
    out
}

fn collect(cmd: &Command, out: &mut BTreeMap<String, Setting>) {
    for arg in cmd.get_arguments() {
        if let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) {
            if arg.get_id() != ARG {
                out.entry(long.to_string()).or_insert_with(|| Setting {
                    env: env.to_os_string(),
                    delimiter: arg.get_value_delimiter(),
                });
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

/// The variables `text` (the file at `path`) sets: (name, value) for each key.
pub fn variables(
    cmd: &Command,
    path: &Path,
    text: &str,
) -> Result<Vec<(OsString, String)>, ConfigFileError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigFileError::Toml {
            path: path.into(),
            message: e.message().to_string(),
        })?;
    let known = settings(cmd);
    let mut vars = Vec::new();
    for (key, value) in table {
        let setting =
            known
                .get(&key.replace('_', "-"))
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
        let text = match value {
            toml::Value::Array(items) => {
                let delimiter = setting
                    .delimiter
                    .ok_or_else(|| bad("takes one value, not a list"))?;
                let items = items
                    .into_iter()
                    .map(|v| scalar(v).ok_or_else(|| bad("must be a list of strings or numbers")))
                    .collect::<Result<Vec<_>, _>>()?;
                items.join(&delimiter.to_string())
            }
            other => scalar(other).ok_or_else(|| bad("must be a string, number or boolean"))?,
        };
        vars.push((setting.env.clone(), text));
    }
    Ok(vars)
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

/// Finds the config file for `cmd` in `args` (or its variable) and sets the environment
/// variables it implies that are not set already. Call before any thread starts.
pub fn apply(cmd: &Command, args: &[OsString]) -> Result<(), ConfigFileError> {
    let Some(path) = find(cmd, args) else {
        return Ok(());
    };
    let text = std::fs::read_to_string(&path).map_err(|cause| ConfigFileError::Read {
        path: path.clone(),
        cause,
    })?;
    for (name, value) in variables(cmd, &path, &text)? {
        if std::env::var_os(&name).is_none() {
            std::env::set_var(name, value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

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

    fn vars(text: &str) -> Result<Vec<(OsString, String)>, ConfigFileError> {
        variables(&Args::command(), Path::new("/etc/x.toml"), text)
    }

    #[test]
    fn keys_become_the_flags_variables() {
        let v =
            vars("max-streams = 5\nmap = [\"ssh=127.0.0.1:22\", \"rdp=h:3389\"]\nstdio = true\n")
                .unwrap();
        assert_eq!(
            v,
            vec![
                ("CFT_MAP".into(), "ssh=127.0.0.1:22,rdp=h:3389".to_string()),
                ("CFT_MAX_STREAMS".into(), "5".to_string()),
                ("CFT_STDIO".into(), "true".to_string()),
            ]
        );
        // snake_case works too.
        assert_eq!(vars("max_streams = 7").unwrap()[0].1, "7");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_file() {
        let e = vars("max-stream = 5").unwrap_err().to_string();
        assert!(
            e.contains("'max-stream'") && e.contains("/etc/x.toml"),
            "{e}"
        );
        assert!(e.contains("max-streams"), "lists the known keys: {e}");
        // A flag without a variable is not settable from the file.
        assert!(vars("json = true")
            .unwrap_err()
            .to_string()
            .contains("'json'"));
        // --config itself is not a key.
        assert!(vars("config = 'a'").is_err());
        let e = vars("max-streams = [1, 2]").unwrap_err().to_string();
        assert!(e.contains("not a list"), "{e}");
        let e = vars("max-streams = { a = 1 }").unwrap_err().to_string();
        assert!(e.contains("max-streams"), "{e}");
        let e = vars("max-streams = ").unwrap_err().to_string();
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

    #[test]
    fn precedence_is_flag_then_environment_then_file_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "max-streams = 5\nmap = [\"a=h:1\"]\n").unwrap();
        let p = path.to_str().unwrap();
        // This test alone touches the CFT_ variables.
        std::env::set_var("CFT_MAP", "b=h:2");
        apply(&Args::command(), &argv(&["p", "--config", p])).unwrap();
        let args = Args::try_parse_from(["p", "--config", p]).unwrap();
        assert_eq!(args.max_streams, 5, "file over default");
        assert_eq!(args.map, vec!["b=h:2"], "environment over file");
        let args = Args::try_parse_from(["p", "--max-streams", "9"]).unwrap();
        assert_eq!(args.max_streams, 9, "flag over file");

        let e = apply(
            &Args::command(),
            &argv(&["p", "--config", "/nonexistent/c.toml"]),
        );
        assert!(e.unwrap_err().to_string().contains("/nonexistent/c.toml"));
    }
}
