//! What packaging takes from the binaries: `--version` with the git commit, man pages and
//! shell completions generated from the same clap definitions as `--help`.

use std::process::Command;

use e2e::bin;

const BINARIES: [&str; 3] = ["device-local-proxy", "service-local-proxy", "stream-hub"];

fn stdout(binary: &str, args: &[&str]) -> String {
    let out = Command::new(bin(binary)).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{binary} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn version_names_the_git_commit() {
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    for binary in BINARIES {
        let version = stdout(binary, &["--version"]);
        let want = format!(
            "{binary} {} (git {})",
            env!("CARGO_PKG_VERSION"),
            head.as_deref().unwrap_or("unknown")
        );
        // build-version.rs rebuilds on every commit, so the binary names the current HEAD.
        assert_eq!(version.trim(), want);
    }
}

#[test]
fn man_pages_and_completions_cover_the_flags() {
    for binary in BINARIES {
        let man = stdout(binary, &["man"]);
        assert!(
            man.contains(".TH") && man.contains("log\\-format"),
            "{binary}: {man}"
        );
        let bash = stdout(binary, &["completions", "bash"]);
        assert!(
            bash.contains("--config") && bash.contains("complete -F"),
            "{binary}"
        );
        let zsh = stdout(binary, &["completions", "zsh"]);
        assert!(zsh.starts_with("#compdef"), "{binary}");
    }
    // The hub's sub-commands are in its page and completions.
    assert!(stdout("stream-hub", &["completions", "bash"]).contains("serve"));
    let out = Command::new(bin("stream-hub"))
        .args(["completions", "no-such-shell"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_lists_the_man_and_completions_commands() {
    for binary in BINARIES {
        let help = stdout(binary, &["--help"]);
        for command in ["man", "completions"] {
            assert!(
                help.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{command} "))),
                "{binary} --help does not list {command}: {help}"
            );
        }
    }
    // Also after flags, where clap parses them as the sub-commands they are listed as.
    let man = stdout("device-local-proxy", &["--map", "ssh=127.0.0.1:22", "man"]);
    assert!(man.contains(".TH"), "{man}");
    let bash = stdout("service-local-proxy", &["--stdio", "completions", "bash"]);
    assert!(bash.contains("complete -F"), "{bash}");
}
