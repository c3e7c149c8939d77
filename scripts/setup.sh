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
