#!/usr/bin/env bash
# What the admin's browser tests (tests/admin/test_admin_browser.py) need from the system:
# Debian's chromium, which Playwright drives (it never downloads a browser of its own), and a
# font family so that screenshots show readable text. Idempotent: installs only what is missing.
set -euo pipefail

packages=()
[ -x /usr/bin/chromium ] || packages+=(chromium)
if ! { command -v fc-list >/dev/null && fc-list | grep -qi dejavu; }; then
  packages+=(fonts-dejavu-core)
fi

if [ "${#packages[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${packages[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi

/usr/bin/chromium --headless=new --no-sandbox --disable-gpu --dump-dom about:blank >/dev/null 2>&1 \
  || { echo "chromium is installed but does not start headless" >&2; exit 1; }
echo "chromium ready: $(dpkg-query -W -f='${Version}' chromium)"
