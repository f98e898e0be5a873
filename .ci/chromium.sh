#!/usr/bin/env bash
# Make sure Debian's Chromium is installed, for the browser tests (tests/web drive it
# headless through Playwright, which is told to use /usr/bin/chromium and never
# downloads a browser of its own). Run as root: `bash .ci/chromium.sh`.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "Chromium: $(/usr/bin/chromium --version 2>/dev/null || echo present)"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "Chromium is not installed and this is not root: install Debian's 'chromium' package" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
echo "Chromium: $(/usr/bin/chromium --version)"
