#!/usr/bin/env bash
# Builds progsyncd and progsync (release) and runs the daemon on the zero-config default:
# ./progsync-data, the 2021 programme loaded on first start. Arguments go to progsyncd.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build -c release --product progsyncd
swift build -c release --product progsync
echo "progsyncd: socket ${PROGSYNC_DATA:-./progsync-data}/progsync.sock; in another shell: .build/release/progsync status" >&2
exec .build/release/progsyncd "$@"
