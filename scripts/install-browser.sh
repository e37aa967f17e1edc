#!/usr/bin/env bash
# Installs Debian's Chromium (/usr/bin/chromium) when it is missing: the registry's dashboard
# test drives it with playwright-core. Needs root (CI runs as root); elsewhere it prints the
# command to run. Playwright's own browser download is not used (only Debian apt is reachable).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-browser.sh: /usr/bin/chromium is missing; run: sudo apt-get install -y chromium" >&2
  exit 1
fi
echo "install-browser.sh: installing chromium with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
/usr/bin/chromium --version >&2
