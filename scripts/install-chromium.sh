#!/usr/bin/env bash
# Install the headless browser the report tests drive (tests/report/test_browser.py): Debian's
# chromium and its WebDriver. Does nothing when both are already there, so CI may call it on every run.
set -euo pipefail

if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    echo "chromium and chromedriver already installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver
