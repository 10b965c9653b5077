# Helpers shared by the scripts: free ports, a throw-away sshd, waiting for a port.
# Source it; it defines functions only.

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() { # host port [tries]
    local tries=${3:-100}
    for _ in $(seq "$tries"); do
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $1:$2" >&2
    return 1
}

# start_sshd DIR PORT: a throw-away sshd on 127.0.0.1:PORT that lets the current user in
# with DIR/id_ed25519; its pid goes to DIR/sshd.pid.
start_sshd() {
    local dir=$1 port=$2 sshd
    sshd=$(command -v sshd || echo /usr/sbin/sshd)
    mkdir -p "$dir" /run/sshd 2>/dev/null || true
    ssh-keygen -q -t ed25519 -N '' -f "$dir/host_key" <<<y >/dev/null
    ssh-keygen -q -t ed25519 -N '' -f "$dir/id_ed25519" <<<y >/dev/null
    cp "$dir/id_ed25519.pub" "$dir/authorized_keys"
    cat >"$dir/sshd_config" <<CONF
Port $port
ListenAddress 127.0.0.1
HostKey $dir/host_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
LogLevel ERROR
CONF
    "$sshd" -f "$dir/sshd_config" -E "$dir/sshd.log"
    wait_for_port 127.0.0.1 "$port"
}

ssh_opts() { # DIR
    echo "-i $1/id_ed25519 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR"
}
