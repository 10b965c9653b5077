# Helpers for scripts/test: collect missing Debian packages, install them at once, and
# check the Rust toolchain. Source it; it defines functions and one array only.

MISSING_PACKAGES=()

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# need_cmd CMD PACKAGE [PATH]: PACKAGE is installed unless CMD is on PATH (or at PATH).
need_cmd() {
    local cmd=$1 pkg=$2 path=${3:-}
    command -v "$cmd" >/dev/null 2>&1 && return 0
    [ -n "$path" ] && [ -x "$path" ] && return 0
    case " ${MISSING_PACKAGES[*]} " in *" $pkg "*) ;; *) MISSING_PACKAGES+=("$pkg") ;; esac
}

install_missing() {
    [ ${#MISSING_PACKAGES[@]} -eq 0 ] && return 0
    echo "scripts/test: installing ${MISSING_PACKAGES[*]}" >&2
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "scripts/test: no apt-get here; install these yourself: ${MISSING_PACKAGES[*]}" >&2
        return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${MISSING_PACKAGES[@]}" >/dev/null
    MISSING_PACKAGES=()
}

# The minimum Rust version the workspace declares (rust-version in Cargo.toml).
msrv() {
    sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml | head -n 1
}

# version_le A B: A <= B, where a missing part counts as 0 (1.88 is 1.88.0).
version_le() {
    local a b
    a=$(full_version "$1")
    b=$(full_version "$2")
    printf '%s\n%s\n' "$a" "$b" | sort -V -C
}

full_version() {
    local v=$1
    while [ "$(tr -cd . <<<"$v" | wc -c)" -lt 2 ]; do v=$v.0; done
    echo "$v"
}

# The toolchain builds with the workspace's declared minimum, and that minimum is true:
# no locked dependency needs a newer one, and the code itself builds with it (when
# rustup can fetch that toolchain; clippy's incompatible_msrv lint covers the standard
# library either way).
check_toolchain() {
    local min have
    min=$(msrv)
    have=$(rustc --version | sed 's/^rustc \([0-9.]*\).*/\1/')
    if ! version_le "$min" "$have"; then
        echo "scripts/test: rustc $have is older than this workspace's minimum $min;" \
            "install a current one with rustup (https://rustup.rs): rustup update stable" >&2
        return 1
    fi
    local needed
    needed=$(cargo metadata --format-version 1 --locked | python3 -c '
import json, sys
def key(v): return tuple(int(x) for x in v.split("."))
m = json.load(sys.stdin)
versions = [(key(p["rust_version"]), p["rust_version"], p["name"]) for p in m["packages"] if p.get("rust_version")]
print(max(versions)[1], max(versions)[2])')
    if ! version_le "${needed% *}" "$min"; then
        echo "scripts/test: the lock file needs Rust ${needed% *} (${needed#* }), but" \
            "Cargo.toml declares rust-version = $min" >&2
        return 1
    fi
    if command -v rustup >/dev/null 2>&1 &&
        rustup toolchain install "$min" --profile minimal >/dev/null 2>&1; then
        echo "scripts/test: checking the workspace with Rust $min (rust-version)" >&2
        cargo "+$min" check --workspace --all-targets --locked --quiet \
            --target-dir target/msrv
    else
        echo "scripts/test: warning: cannot fetch Rust $min with rustup; building with it skipped" >&2
    fi
}
