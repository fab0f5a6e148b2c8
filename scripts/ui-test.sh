#!/usr/bin/env bash
# The web app in a real browser: headless Chromium + chromedriver (Debian, from setup.sh --test),
# Selenium and axe-core (PyPI, in a virtual environment under .build/). Needs a built progsyncd.
# Screenshots: .build/ui-screenshots/.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.build/ui-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import selenium, axe_selenium_python" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "selenium>=4.20,<5" "axe-selenium-python==2.1.6"
fi
timeout 600 "$venv/bin/python" scripts/ui_test.py "${1:-.build/debug/progsyncd}"
