#!/usr/bin/env bash
# Builds everything and runs the whole test suite (unit, property, crash and end-to-end tests).
# PROGSYNC_PROPERTY_CASES sets the number of convergence cases (default 2000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
swift build --build-tests
# Serial: the long synchronous property and crash tests would otherwise starve the async ones.
swift test --skip-build --no-parallel
