// Build script shared by the three binaries (each one's build.rs is a link to this file):
// `--version` shows the git commit it was built from (`0.1.0 (git 1a2b3c4)`), or "unknown"
// outside a git checkout (a source tarball).
use std::{path::Path, process::Command};

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    let hash = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=GIT_HASH={hash}");
    // Rebuild when HEAD moves: logs/HEAD changes on every commit and checkout.
    for path in ["HEAD", "logs/HEAD"] {
        // A missing path would make cargo rerun this script (and rebuild) every time.
        if let Some(p) = git(&["rev-parse", "--git-path", path]).filter(|p| Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    // Each binary crate's build.rs is a link to this file.
    println!("cargo:rerun-if-changed=build.rs");
}
