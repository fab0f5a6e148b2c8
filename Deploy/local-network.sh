#!/usr/bin/env bash
# A three-organisation progsync network on this machine, over mutual TLS on loopback:
#   jenv     - the coordinating ministry; loads the 2021 programme and may edit every record
#   politie  - owns the activities the programme assigns to the police
#   comensha - owns the activities the programme assigns to CoMensha
# Usage: Deploy/local-network.sh start|stop|status
# Folder: $PROGSYNC_NET (default /tmp/progsync-net). Binaries: $PROGSYNC_BIN (default .build/release,
# else .build/debug).
set -euo pipefail
cd "$(dirname "$0")/.."
NET=${PROGSYNC_NET:-/tmp/progsync-net}
BIN=${PROGSYNC_BIN:-}
if [ -z "$BIN" ]; then
    if [ -x .build/release/progsyncd ]; then BIN=.build/release; else BIN=.build/debug; fi
fi
BIN=$(cd "$BIN" && pwd)
ORGS=(jenv politie comensha)
declare -A PORT=([jenv]=7441 [politie]=7442 [comensha]=7443)

registry() {
    # The shared partner registry: every node with its key, certificate pin and address.
    python3 - "$NET" "${ORGS[@]}" <<'PY'
import json, sys, os
net, orgs = sys.argv[1], sys.argv[2:]
ports = {"jenv": 7441, "politie": 7442, "comensha": 7443}
entries = []
for org in orgs:
    ident = json.load(open(os.path.join(net, org, "identity.json")))
    pin = open(os.path.join(net, org, "pin")).read().strip()
    entries.append({"code": org, "name": org, "nodes": [{"id": ident["id"], "name": org, "publicKey": ident["publicKey"],
        "certificatePin": pin, "address": f"https://127.0.0.1:{ports[org]}"}]})
print(json.dumps({"coordinators": ["jenv"], "orgs": entries}, indent=2))
PY
}

start() {
    mkdir -p "$NET"
    for org in "${ORGS[@]}"; do
        if [ ! -f "$NET/$org/identity.json" ]; then
            "$BIN/progsyncd" init --data-dir "$NET/$org" --org "$org" --name "$org" > "$NET/$org.init.txt"
            sed -n 's/^certificate: *//p' "$NET/$org.init.txt" > "$NET/$org/pin"
        fi
    done
    registry > "$NET/registry.json"
    for org in "${ORGS[@]}"; do
        if [ -f "$NET/$org/pid" ] && kill -0 "$(cat "$NET/$org/pid")" 2>/dev/null; then
            echo "$org: already running (pid $(cat "$NET/$org/pid"))"
            continue
        fi
        cp "$NET/registry.json" "$NET/$org/registry.json"
        extra=()
        [ "$org" = jenv ] || extra=(--empty)
        # The daemon keeps none of our descriptors: a caller waiting for its pipes (a CI step, a
        # test) would otherwise wait until the daemons stop.
        (
            for fd in /proc/self/fd/*; do fd=${fd##*/}; [ "$fd" -le 2 ] || eval "exec $fd>&-" 2>/dev/null || true; done
            PROGSYNC_PEERS_LISTEN="127.0.0.1:${PORT[$org]}" exec nohup "$BIN/progsyncd" --data-dir "$NET/$org" "${extra[@]}" \
                >> "$NET/$org/daemon.log" 2>&1 < /dev/null
        ) &
        echo $! > "$NET/$org/pid"
    done
    for org in "${ORGS[@]}"; do
        for _ in $(seq 1 100); do [ -S "$NET/$org/progsync.sock" ] && break; sleep 0.1; done
        echo "$org: socket $NET/$org/progsync.sock  (peer port ${PORT[$org]}, log $NET/$org/daemon.log)"
    done
    echo "try: PROGSYNC_SOCKET=$NET/politie/progsync.sock $BIN/progsync status"
}

stop() {
    for org in "${ORGS[@]}"; do
        if [ -f "$NET/$org/pid" ]; then
            pid=$(cat "$NET/$org/pid")
            if kill -0 "$pid" 2>/dev/null; then
                kill -TERM "$pid"
                for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
                if kill -0 "$pid" 2>/dev/null; then echo "$org: still stopping after 30 s (pid $pid)" >&2; continue; fi
                echo "$org: stopped"
            fi
            rm -f "$NET/$org/pid"
        fi
    done
}

status() {
    for org in "${ORGS[@]}"; do
        if [ -f "$NET/$org/pid" ] && kill -0 "$(cat "$NET/$org/pid")" 2>/dev/null; then
            digest=$("$BIN/progsync" --socket "$NET/$org/progsync.sock" digest 2>/dev/null || echo "?")
            echo "$org: running (pid $(cat "$NET/$org/pid")), socket $NET/$org/progsync.sock, digest $digest"
        else
            echo "$org: stopped"
        fi
    done
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
