#!/usr/bin/env bash
# A progsync network on this machine, over mutual TLS on loopback, built the way partners join:
# the coordinator invites, each new node joins with `progsyncd init --invite`.
#   jenv     - the coordinating ministry; loads the 2021 programme and may edit every record
#   politie  - owns the activities the programme assigns to the police
#   comensha - owns the activities the programme assigns to CoMensha
#   then the programme's other partners (vng, bz, nla, ...), then partner-NN, up to --orgs N.
# Usage: Deploy/local-network.sh start [--orgs N] [--mesh] | stop | status
#   --orgs N   organisations (default 3; a running network keeps its size)
#   --mesh     every node dials every other; default: a hub, the others dial jenv only
# Folder: $PROGSYNC_NET (default /tmp/progsync-net). Binaries: $PROGSYNC_BIN (default .build/release,
# else .build/debug). Peer ports from $PROGSYNC_NET_BASE_PORT (default 7441: jenv 7441, politie 7442, ...;
# keep them below the ephemeral range, 32768 and up on Linux, where outgoing connections take theirs).
set -euo pipefail
cd "$(dirname "$0")/.."
NET=${PROGSYNC_NET:-/tmp/progsync-net}
BIN=${PROGSYNC_BIN:-}
if [ -z "$BIN" ]; then
    if [ -x .build/release/progsyncd ]; then BIN=.build/release; else BIN=.build/debug; fi
fi
BIN=$(cd "$BIN" && pwd)
BASE_PORT=${PROGSYNC_NET_BASE_PORT:-7441}
NAMES=(jenv politie comensha vng bz nla koraal fairwork fiu ccv ckm regioplan kenniscentrum-lvb school-en-veiligheid)

# The organisations of this network, in join order: from $NET/orgs once it exists.
orgs() {
    if [ -f "$NET/orgs" ]; then cat "$NET/orgs"; return; fi
    local n=$1 i
    for ((i = 0; i < n; i++)); do
        if [ "$i" -lt "${#NAMES[@]}" ]; then echo "${NAMES[$i]}"; else printf 'partner-%02d\n' "$((i + 1))"; fi
    done
}

port_of() { local i=0 org; while read -r org; do [ "$org" = "$1" ] && { echo $((BASE_PORT + i)); return; }; i=$((i + 1)); done < "$NET/orgs"; }

running() { [ -f "$NET/$1/pid" ] && kill -0 "$(cat "$NET/$1/pid")" 2>/dev/null; }

launch() {
    local org=$1 port
    port=$(port_of "$org")
    if running "$org"; then echo "$org: already running (pid $(cat "$NET/$org/pid"))"; return; fi
    # Every partner calls from 127.0.0.1 here, where across organisations each has its own
    # address: the per-address connection cap (32) would refuse the hub's 17th spoke.
    local env=(PROGSYNC_PEERS_LISTEN="127.0.0.1:$port" PROGSYNC_PEERS_MAX_CONNECTIONS_PER_ADDRESS=1000)
    [ "$org" = jenv ] || [ -f "$NET/mesh" ] || env+=(PROGSYNC_PEERS_CONNECT=jenv)
    # The daemon keeps none of our descriptors: a caller waiting for its pipes (a CI step, a
    # test) would otherwise wait until the daemons stop.
    (
        for fd in /proc/self/fd/*; do fd=${fd##*/}; [ "$fd" -le 2 ] || eval "exec $fd>&-" 2>/dev/null || true; done
        exec env "${env[@]}" nohup "$BIN/progsyncd" --data-dir "$NET/$org" >> "$NET/$org/daemon.log" 2>&1 < /dev/null
    ) &
    echo $! > "$NET/$org/pid"
}

wait_socket() {
    local _
    for _ in $(seq 1 600); do [ -S "$NET/$1/progsync.sock" ] && "$BIN/progsync" --socket "$NET/$1/progsync.sock" status > /dev/null 2>&1 && return; sleep 0.1; done
    echo "$1: did not start; see $NET/$1/daemon.log" >&2
    exit 1
}

start() {
    local n=3 mesh=false
    while [ $# -gt 0 ]; do
        case "$1" in
            --orgs) n=${2:?--orgs needs a number}; shift 2 ;;
            --mesh) mesh=true; shift ;;
            *) echo "unknown option $1; usage: $0 start [--orgs N] [--mesh]" >&2; exit 2 ;;
        esac
    done
    [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 200 ] || { echo "--orgs must be 1 to 200" >&2; exit 2; }
    mkdir -p "$NET"
    [ -f "$NET/orgs" ] || { orgs "$n" > "$NET/orgs.new"; mv "$NET/orgs.new" "$NET/orgs"; }
    if [ ! -d "$NET/jenv" ] && $mesh; then touch "$NET/mesh"; fi
    # The coordinator: a zero-config node of jenv with the 2021 programme and a peer listener.
    if [ ! -f "$NET/jenv/identity.json" ]; then
        "$BIN/progsyncd" init --data-dir "$NET/jenv" --org jenv --name jenv > "$NET/jenv.init.txt"
    fi
    launch jenv
    wait_socket jenv
    local hub="https://127.0.0.1:$(port_of jenv)" org
    while read -r org; do
        [ "$org" = jenv ] && continue
        if [ ! -f "$NET/$org/identity.json" ]; then
            "$BIN/progsync" --socket "$NET/jenv/progsync.sock" partners invite --org "$org" --name "$org" \
                --address "$hub" --expires 1h -o "$NET/$org.invite" > /dev/null
            "$BIN/progsyncd" init --data-dir "$NET/$org" --invite "$NET/$org.invite" \
                --address "https://127.0.0.1:$(port_of "$org")" > "$NET/$org.init.txt"
            echo "$org: joined by invite"
        fi
        launch "$org"
    done < "$NET/orgs"
    while read -r org; do
        wait_socket "$org"
        echo "$org: socket $NET/$org/progsync.sock  (peer port $(port_of "$org"), log $NET/$org/daemon.log)"
    done < "$NET/orgs"
    echo "try: PROGSYNC_SOCKET=$NET/politie/progsync.sock $BIN/progsync status"
}

stop() {
    [ -f "$NET/orgs" ] || { echo "no network in $NET"; return; }
    local org pid
    while read -r org; do
        [ -f "$NET/$org/pid" ] && kill -TERM "$(cat "$NET/$org/pid")" 2>/dev/null || true
    done < "$NET/orgs"
    while read -r org; do
        if [ -f "$NET/$org/pid" ]; then
            pid=$(cat "$NET/$org/pid")
            for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            if kill -0 "$pid" 2>/dev/null; then echo "$org: still stopping after 30 s (pid $pid)" >&2; continue; fi
            echo "$org: stopped"
            rm -f "$NET/$org/pid"
        fi
    done < "$NET/orgs"
}

status() {
    [ -f "$NET/orgs" ] || { echo "no network in $NET"; return; }
    local org digest
    while read -r org; do
        if running "$org"; then
            digest=$("$BIN/progsync" --socket "$NET/$org/progsync.sock" digest 2>/dev/null || echo "?")
            echo "$org: running (pid $(cat "$NET/$org/pid")), socket $NET/$org/progsync.sock, digest $digest"
        else
            echo "$org: stopped"
        fi
    done < "$NET/orgs"
}

command=${1:-}
[ $# -gt 0 ] && shift
case "$command" in
    start) start "$@" ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start [--orgs N] [--mesh] | stop | status" >&2; exit 2 ;;
esac
