#!/usr/bin/env bash
# Builds progsyncd and progsync (release) and runs the daemon on the zero-config default:
# ./progsync-data, the 2021 programme loaded on first start. Arguments go to progsyncd.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { echo "run.sh: $*" >&2; }
step "[1/3] checking the build's Debian packages (scripts/setup.sh)"
scripts/setup.sh
if [ -x .build/release/progsyncd ]; then
    step "[2/3] building progsyncd and progsync (release; only what changed)"
else
    step "[2/3] first release build: every dependency is compiled (SwiftNIO, BoringSSL, GRDB, ...)."
    step "      This takes about 15 minutes on 2 cores; the [n/m] counter below shows the progress."
    step "      Later runs rebuild only what changed."
fi
started=$SECONDS
swift build -c release --product progsyncd
swift build -c release --product progsync
step "      built in $((SECONDS - started)) s"
step "[3/3] starting progsyncd: $(.build/release/progsyncd --version)"
echo "progsyncd: socket ${PROGSYNC_DATA:-./progsync-data}/progsync.sock; in another shell: .build/release/progsync status" >&2
exec .build/release/progsyncd "$@"
