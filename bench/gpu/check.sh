#!/usr/bin/env bash
# The GPU check of llama-cpp-python built with CUDA, on a lent GPU machine (x86-64, nvcc, CMake,
# ninja, Python 3.12 with aiohttp/jinja2/aiofiles/prometheus-client; no network). Prepare here
# with `bash bench/gpu/prepare.sh`, then make three device calls back to back (a machine goes
# back after 30 s idle, taking /tmp/agentic-gpu with it):
#   1. carry ["bench/gpu/.carry/sdist", "bench/gpu/.carry/wheels"]:  bash bench/gpu/check.sh build
#   2. carry ["bench/gpu/.carry/model/part-00"]:                      bash bench/gpu/check.sh model
#   3. carry ["bench/gpu/.carry/model/part-01"]:                      bash bench/gpu/check.sh model diagnose run
# `build` compiles with -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 plus deploy.sh's safe CPU
# flags; `run` loads the bundled model with every layer offloaded, chats end to end through a
# real server, and runs bench/chat_bench.py at N=1/8/16 (2 rounds) against the raw loop on the same GPU.
# Results land in $OUT (check.log, server.log).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
STATE=/tmp/agentic-gpu
SITE="$STATE/site"
OUT="${OUT:-$STATE/out}"
mkdir -p "$STATE" "$SITE" "$OUT"
export PYTHONPATH="$SITE:$ROOT" PYTHONUNBUFFERED=1
log() { echo "[$(date -u +%T)] $*" | tee -a "$OUT/check.log"; }

build() {
    local cmake_args; cmake_args="$("$ROOT/deploy.sh" llama-cmake-args) -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90"
    log "building llama-cpp-python with CMAKE_ARGS: $cmake_args"
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$ROOT"/bench/gpu/.carry/wheels/*.whl
    local started=$SECONDS
    CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" python3 -m pip wheel -q --no-index --no-deps \
        --no-build-isolation -w "$STATE/wheel" "$ROOT"/bench/gpu/.carry/sdist/*.tar.gz 2>&1 | tail -n 20 | tee -a "$OUT/check.log"
    python3 -m pip install -q --no-index --no-deps --target "$SITE" "$STATE"/wheel/llama_cpp_python-*.whl
    log "built in $((SECONDS - started)) s; GPU offload: $(python3 -c 'import llama_cpp; print(llama_cpp.llama_supports_gpu_offload())')"
}

model() {
    # A carried part stays on the machine for the next call, so each part is added once, in order.
    local part
    for part in "$ROOT"/bench/gpu/.carry/model/part-*; do
        grep -qx "$(basename "$part")" "$STATE/parts-added" 2>/dev/null && continue
        cat "$part" >> "$STATE/model.gguf"
        basename "$part" >> "$STATE/parts-added"
        log "model part $(basename "$part") added: $(stat -c %s "$STATE/model.gguf") bytes"
    done
}

run() {
    export MODEL_PATH="$STATE/model.gguf"
    log "end-to-end chat through a real server, all layers offloaded"
    python3 -m agentic serve --port 8765 --data-dir "$STATE/data" > "$OUT/server.log" 2>&1 &
    local server=$!
    python3 - <<'PY' 2>&1 | tee -a "$OUT/check.log"
import json, time, urllib.request
def call(method, path, body=None):
    req = urllib.request.Request("http://127.0.0.1:8765" + path, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)
for _ in range(240):
    try:
        health = call("GET", "/health"); break
    except Exception:
        time.sleep(0.5)
print("health:", health["status"], "gpu_offload:", health["gpu_offload"])
sid = call("POST", "/sessions", {"client_id": "gpu-check"})["session_id"]
reply = call("POST", f"/sessions/{sid}/messages", {"content": "Say hello in five words.", "max_tokens": 24})
print("reply:", reply["message"]["content"][:80].replace("\n", " "), "| usage:", reply["usage"])
assert health["gpu_offload"] is True and reply["usage"]["completion_tokens"] > 0
PY
    kill "$server"; wait "$server" || true
    log "chat_bench N=1/8/16 vs the raw loop on this GPU"
    python3 "$ROOT/bench/chat_bench.py" --model "$MODEL_PATH" --n 1 8 16 --rounds 2 --scenarios empty realistic 2>&1 | tee -a "$OUT/check.log"
}

diagnose() {
    # The first lent H100 (2026-11-27): the model loaded from a script on the main thread and on a
    # plain thread, yet `agentic serve` segfaulted inside llama_model_load_from_file on its inference
    # thread, twice. This narrows it down: the script again, then the server alone (no /health
    # polls) and with polls, under gdb where the image has it (a C backtrace lands in diagnose.log).
    export MODEL_PATH="$STATE/model.gguf" PYTHONFAULTHANDLER=1
    local where; for where in main thread; do python3 "$ROOT/bench/gpu/load_model.py" "$where" "$MODEL_PATH" 2>&1 | grep -E "^loaded|Fatal|File" | tee -a "$OUT/check.log"; done
    local gdb=(); command -v gdb >/dev/null && gdb=(gdb -q -batch -ex run -ex bt --args)
    log "the server alone for 20 s, ${gdb[0]:-no gdb}"
    "${gdb[@]}" python3 -m agentic serve --port 8765 --data-dir "$STATE/diagnose" > "$OUT/diagnose.log" 2>&1 &
    local server=$!
    sleep 20
    if kill -0 "$server" 2>/dev/null; then log "alive after 20 s without polls"; else log "died without polls"; fi
    for _ in $(seq 10); do curl -s -m 5 http://127.0.0.1:8765/health > /dev/null; sleep 0.5; done
    if kill -0 "$server" 2>/dev/null; then log "alive after /health polls: $(curl -s -m 5 http://127.0.0.1:8765/health)"; else log "died after /health polls"; fi
    kill "$server" 2>/dev/null; wait "$server" || true
}

for step in "$@"; do "$step"; done
