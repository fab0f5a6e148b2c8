#!/usr/bin/env bash
# Installs what the build needs from Debian when it is missing: libcurl's and zlib's headers (the
# HTTP client, bundles); with --test also faketime and iproute2 (clock-skew and partition tests)
# and LibreOffice Calc, headless (the spreadsheet round-trip test); Prometheus with promtool and
# systemd-analyze (the monitoring and unit-file tests); socat and a Python venv with schemathesis in
# .build/schemathesis-venv (the API contract test, scripts/api-contract.sh);
# Chromium and chromedriver (the web app's browser tests);
# with --bench nginx-light. Safe to run again.
set -euo pipefail
need=()
dpkg -s libcurl4-openssl-dev >/dev/null 2>&1 || need+=(libcurl4-openssl-dev)
dpkg -s zlib1g-dev >/dev/null 2>&1 || need+=(zlib1g-dev)
if [ "${1:-}" = "--test" ]; then
    command -v faketime >/dev/null 2>&1 || need+=(faketime)
    command -v ip >/dev/null 2>&1 || need+=(iproute2)
    command -v soffice >/dev/null 2>&1 || need+=(libreoffice-calc-nogui)
    command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || need+=(prometheus)
    command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
    command -v socat >/dev/null 2>&1 || need+=(socat)
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
    # The web app's browser tests (scripts/ui-test.sh).
    command -v chromium >/dev/null 2>&1 || need+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
    dpkg -s fonts-noto-color-emoji >/dev/null 2>&1 || need+=(fonts-noto-color-emoji)
fi
if [ "${1:-}" = "--bench" ]; then
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
fi
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ "${1:-}" = "--test" ]; then
    # The OpenAPI contract checker, pinned, in a venv of its own under .build/.
    venv="$(dirname "$0")/../.build/schemathesis-venv"
    if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "4.32.5"; then
        echo "setup: installing schemathesis 4.32.5 into $venv" >&2
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q 'schemathesis==4.32.5'
    fi
fi
command -v swift >/dev/null 2>&1 || { echo "setup: swift is not on PATH (expected Swift 6.3 at /opt/swift)" >&2; exit 1; }
