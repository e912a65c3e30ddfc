#!/usr/bin/env bash
# What tests/ops/test_metrics.py needs from the system: promtool, to check the /metrics exposition
# format (`promtool check metrics`). Debian ships it in the `prometheus` package (the server comes
# with it; nothing here starts it). Idempotent: installs only when promtool is missing.
set -euo pipefail

if ! command -v promtool >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: prometheus (for promtool)"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

echo "# HELP ci_check_total A check.
# TYPE ci_check_total counter
ci_check_total 1" | promtool check metrics \
  || { echo "promtool is installed but does not check metrics" >&2; exit 1; }
echo "promtool ready: $(promtool --version 2>&1 | head -n 1)"
