#!/bin/sh
# Issue 3: local API load over the Unix socket next to nginx on a Unix socket.
# Builds progsyncd and the benchmark in release, then runs it; extra arguments go to the benchmark
# (--activities N, --connections C, --duration S, --runs R, --warmup S, --keep-temp,
# --bulk-changes N and --bulk-duration S for GET during a partner's bulk pull; issue 14).
set -eu
cd "$(dirname "$0")/.."
SCRATCH="${SCRATCH:-.build-bench}"
swift build -c release --scratch-path "$SCRATCH" --product progsyncd
swift build -c release --scratch-path "$SCRATCH" --product ProgSyncLocalAPIBench
BIN="$SCRATCH/release"
exec "$BIN/ProgSyncLocalAPIBench" --progsyncd "$BIN/progsyncd" "$@"
