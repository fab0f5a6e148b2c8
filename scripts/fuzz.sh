#!/usr/bin/env bash
# Fuzzes the decoders and a whole apply with libFuzzer: scripts/fuzz.sh [seconds per target] [target…]
# (default 60 s, every target; 0 only builds). Run `swift build --build-tests` first: only our own sources
# (ProgSyncCore, ProgSyncStore, the CSV parser, Tests/Fuzz) are compiled again, instrumented;
# the dependencies are linked from the debug build as they are.
# Seeds are in Tests/Fuzz/Corpus/<target>; what the fuzzer adds goes to .build/fuzz/corpus.
# A crash fails the run and its input is printed; replay it with
#   PROGSYNC_FUZZ_TARGET=<target> .build/fuzz/progsync-fuzz <input>
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(commit wire bundle json csv registry apply)

bin="$(swift build --show-bin-path)"
link_list="$bin/progsync-crash-writer.product/Objects.LinkFileList"
[ -f "$link_list" ] || { echo "fuzz: no debug build; run 'swift build --build-tests' first" >&2; exit 2; }
out=.build/fuzz
mkdir -p "$out/Modules" "$out/corpus" "$out/crashes" "$out/logs"
checkouts=.build/checkouts

flags=(
    -sanitize=fuzzer,address -O -g -parse-as-library -enable-testing -package-name progsync
    -swift-version 6 -enable-upcoming-feature ExistentialAny -enable-upcoming-feature MemberImportVisibility
    -I "$out/Modules" -I "$bin/Modules" -module-cache-path "$out/ModuleCache"
    -Xcc -fmodule-map-file=Sources/CZlib/module.modulemap
    -Xcc -fmodule-map-file=$checkouts/GRDB.swift/Sources/GRDBSQLite/module.modulemap
    -Xcc -fmodule-map-file=$checkouts/swift-crypto/Sources/CCryptoBoringSSLShims/include/module.modulemap
    -Xcc -I -Xcc $checkouts/swift-crypto/Sources/CCryptoBoringSSLShims/include
    -Xcc -fmodule-map-file=$checkouts/swift-crypto/Sources/CCryptoBoringSSL/include/module.modulemap
    -Xcc -I -Xcc $checkouts/swift-crypto/Sources/CCryptoBoringSSL/include
)
module() {  # name, sources…: one instrumented object and its module
    local name="$1"; shift
    swiftc "${flags[@]}" -suppress-warnings -module-name "$name" -wmo -emit-module -emit-module-path "$out/Modules/$name.swiftmodule" \
        -c "$@" -o "$out/$name.o"
}

start=$(date +%s)
module ProgSyncCore Sources/ProgSyncCore/*.swift
module ProgSyncStore Sources/ProgSyncStore/*.swift
module ProgSyncFuzz Tests/Fuzz/*.swift Sources/ProgSyncReport/CSV.swift
# The dependencies' objects as SwiftPM links them, less the modules compiled above.
grep -v -e '/ProgSyncCore\.build/' -e '/ProgSyncStore\.build/' -e '/progsync_crash_writer\.build/' "$link_list" > "$out/deps.list"
# gold warns about every ASan helper symbol; show its output only when the link fails.
swiftc -sanitize=fuzzer,address -lstdc++ -o "$out/progsync-fuzz" "$out"/ProgSyncCore.o "$out"/ProgSyncStore.o "$out"/ProgSyncFuzz.o \
    @"$out/deps.list" > "$out/logs/link.log" 2>&1 || { grep -v 'Cannot export local symbol' "$out/logs/link.log" >&2; exit 1; }
echo "fuzz: built in $(( $(date +%s) - start )) s"
[ "$seconds" -gt 0 ] || exit 0

# Short allocation stacks: ASan's stack depot was the largest cost of the apply target.
export SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=0:malloc_context_size=4
failed=()
for target in "${targets[@]}"; do
    mkdir -p "$out/corpus/$target" "Tests/Fuzz/Corpus/$target"
    log="$out/logs/$target.log"
    if PROGSYNC_FUZZ_TARGET="$target" "$out/progsync-fuzz" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=3072 \
        -print_final_stats=1 -detect_leaks=0 -artifact_prefix="$out/crashes/$target-" \
        "$out/corpus/$target" "Tests/Fuzz/Corpus/$target" > "$log" 2>&1; then
        runs=$(grep -m1 '^stat::number_of_executed_units' "$log" | awk '{print $2}')
        echo "fuzz: $target: ${runs:-?} runs in ${seconds} s, no crash"
    else
        failed+=("$target")
        echo "fuzz: $target: CRASH (log $log)"
        grep -E 'invariant broken|Fatal error|ERROR: (libFuzzer|AddressSanitizer)|^SUMMARY' "$log" | head -5 | sed 's/^/    /'
        grep -E 'Test unit written to' "$log" | sed 's/^.*written to /    input: /'
    fi
done
[ ${#failed[@]} -eq 0 ] || { echo "fuzz: crashes in: ${failed[*]}" >&2; exit 1; }
