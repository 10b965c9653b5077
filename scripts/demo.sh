#!/usr/bin/env bash
# Runs the whole system on this machine and shows an ssh session through it:
# a hub, a device proxy, a service proxy and a throw-away sshd, all on loopback.
#   scripts/demo.sh            # builds (release) and runs
# Needs cargo; installs OpenSSH's client and server and python3 if they are missing
# (root or sudo). Every command it runs is printed first, as `+ command`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. scripts/test.d/lib.sh
need_cmd sshd openssh-server /usr/sbin/sshd
need_cmd ssh openssh-client
need_cmd ssh-keygen openssh-client
need_cmd python3 python3
install_missing

# Prints a command (secrets in the environment, never on the line), then runs it.
show() {
    printf '+' >&2
    printf ' %q' "$@" >&2
    printf '\n' >&2
    "$@"
}

show cargo build --release --quiet --bins
BIN=$PWD/target/release
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -f "$WORK/sshd/sshd.pid" ] && kill "$(cat "$WORK/sshd/sshd.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

HUB_PORT=$(free_port); SSHD_PORT=$(free_port); PROXY_PORT=$(free_port)
echo "== hub data directory, device and service credentials"
show "$BIN/stream-hub" init --data-dir "$WORK/hub" --hostname "localhost:$HUB_PORT"
DEVICE_CONNECTION_STRING=$(show "$BIN/stream-hub" device add demo-device --data-dir "$WORK/hub")
SERVICE_CONNECTION_STRING=$(show "$BIN/stream-hub" connection-string --data-dir "$WORK/hub")
export DEVICE_CONNECTION_STRING SERVICE_CONNECTION_STRING

echo "== a throw-away sshd on 127.0.0.1:$SSHD_PORT (the device's ssh server)"
start_sshd "$WORK/sshd" "$SSHD_PORT"

echo "== stream-hub on 127.0.0.1:$HUB_PORT"
show "$BIN/stream-hub" serve --data-dir "$WORK/hub" --listen "127.0.0.1:$HUB_PORT" 2>"$WORK/hub.log" &
PIDS+=($!)
wait_for_port 127.0.0.1 "$HUB_PORT"

echo "== device-local-proxy (maps stream 'ssh' to 127.0.0.1:$SSHD_PORT)"
show "$BIN/device-local-proxy" --ca-file "$WORK/hub/ca.pem" --map "ssh=127.0.0.1:$SSHD_PORT" 2>"$WORK/device.log" &
PIDS+=($!)

echo "== service-local-proxy on 127.0.0.1:$PROXY_PORT (streams to demo-device)"
show "$BIN/service-local-proxy" --ca-file "$WORK/hub/ca.pem" --device-id demo-device \
    --listen "127.0.0.1:$PROXY_PORT" 2>"$WORK/service.log" &
PIDS+=($!)
wait_for_port 127.0.0.1 "$PROXY_PORT"
for _ in $(seq 100); do grep -q "connected to hub" "$WORK/device.log" && break; sleep 0.1; done

echo
echo "\$ ssh -p $PROXY_PORT $(id -un)@localhost 'echo ...; uname -a'"
# shellcheck disable=SC2046
ssh $(ssh_opts "$WORK/sshd") -p "$PROXY_PORT" "$(id -un)@localhost" \
    'echo "hello from sshd (pid $PPID) through hub, device proxy and service proxy"; uname -a'
echo
echo "\$ ssh -o ProxyCommand='service-local-proxy --stdio --device-id %h ...' $(id -un)@demo-device hostname"
# shellcheck disable=SC2046
ssh $(ssh_opts "$WORK/sshd") \
    -o ProxyCommand="$BIN/service-local-proxy --stdio --ca-file $WORK/hub/ca.pem --device-id %h" \
    "$(id -un)@demo-device" 'echo "hello again, this time over ProxyCommand, from $(hostname)"'
echo
echo "== activity log (hub)"
grep -h "activity" "$WORK/hub.log" | tail -n 2 || true
