#!/usr/bin/env bash
# Builds one .deb per binary (device-local-proxy, service-local-proxy, stream-hub) with
# cargo-deb: release binaries, systemd units, example configs, man pages and shell
# completions generated from the binaries' own clap definitions.
#
#   scripts/package-deb.sh            # .debs land in target/debian/
#
# Installs cargo-deb (from crates.io, with cargo) if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
    echo "installing cargo-deb…" >&2
    cargo install cargo-deb --locked
fi

bins=(device-local-proxy service-local-proxy stream-hub)
cargo build --release --locked $(printf -- '-p %s ' "${bins[@]}")

# Man pages and completions come from the binaries themselves (hidden `man` and
# `completions SHELL` first arguments), so they always match the flags.
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
gen="$target_dir/release/generated"
mkdir -p "$gen"
for bin in "${bins[@]}"; do
    exe="$target_dir/release/$bin"
    "$exe" man > "$gen/$bin.1"
    "$exe" completions bash > "$gen/$bin.bash"
    "$exe" completions zsh > "$gen/_$bin"
done

for bin in "${bins[@]}"; do
    cargo deb --no-build --strip -p "$bin"
done
ls -l "$target_dir"/debian/*.deb
