#!/usr/bin/env bash
# Builds everything and runs the whole test suite (unit, property, crash and end-to-end tests).
# PROGSYNC_PROPERTY_CASES sets the number of convergence cases (default 2000); PROGSYNC_FUZZ_SECONDS
# the libFuzzer run per target (default 60, 0 to only build the fuzz targets).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
swift build --build-tests
# Serial: the long synchronous property and crash tests would otherwise starve the async ones.
swift test --skip-build --no-parallel
# The OpenAPI document against a real daemon (schemathesis, ~2 min), and the .deb (from the
# debug binaries) installed into a throwaway root.
scripts/api-contract.sh
scripts/test-package-deb.sh
# The web app in a real browser (two nodes, about a minute).
scripts/ui-test.sh
# Last, on the debug build's dependency objects: each fuzz target; a crash fails the run.
scripts/fuzz.sh "${PROGSYNC_FUZZ_SECONDS:-60}"
