#!/usr/bin/env bash
# Install the toolchains Vivarium's builders need. Idempotent: each step is
# skipped when its result is already present.
set -euo pipefail

have_target() { rustup target list --installed 2>/dev/null | grep -qx "$1"; }
for t in wasm32-wasip2 wasm32-unknown-unknown; do
  if ! have_target "$t"; then
    echo "setup: rustup target add $t"
    rustup target add "$t"
  fi
done

# Headless Chromium, for the report test (host/tests/report.rs), which opens
# the HTML report in a browser and checks that it renders the lineage nodes.
# Without it that test checks the HTML structurally and skips the browser.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi
    echo "setup: apt-get install -y chromium"
    $sudo apt-get install -y chromium \
      || { $sudo apt-get update && $sudo apt-get install -y chromium; } \
      || echo "setup: could not install chromium; the report test will skip its browser check"
  else
    echo "setup: no apt-get; install chromium yourself for the report's browser test"
  fi
fi
