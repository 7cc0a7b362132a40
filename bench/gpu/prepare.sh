#!/usr/bin/env bash
# Prepares what the GPU check carries to a lent GPU machine (which fetches nothing) into
# bench/gpu/.carry/ (ignored by git). Run here, then follow the steps in check.sh's header.
#   sdist/   llama-cpp-python's sdist without models/docs/tests/benches (the whole one is 73 MiB)
#   wheels/  Python 3.12 wheels of what the server needs beyond the device image's own packages
#   model/   the bundled GGUF in two parts: one call carries at most 64 MiB
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$HERE/../.."
CARRY="$HERE/.carry"
VERSION="$("$ROOT/.venv/bin/python" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')"
PY312=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
       --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
rm -rf "$CARRY"; mkdir -p "$CARRY/sdist" "$CARRY/wheels" "$CARRY/model"

work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$work"
tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
src="$(find "$work" -maxdepth 1 -type d -name 'llama_cpp_python-*')"
rm -rf "$src"/vendor/llama.cpp/{models,docs,tests,benches,.git} "$src/.git"
tar -czf "$CARRY/sdist/llama_cpp_python-$VERSION.tar.gz" -C "$work" "$(basename "$src")"

# Build backend of the sdist, llama_cpp's own needs, and ours (setup.cfg) less what the image has.
pip download --quiet --no-deps "${PY312[@]}" -d "$CARRY/wheels" \
    scikit-build-core pathspec packaging numpy diskcache typing-extensions \
    aiohttp-session cryptography cffi pycparser aiohttp-jinja2 pypdf openpyxl et-xmlfile \
    python-docx python-pptx lxml pillow xlsxwriter

model="$("$ROOT/.venv/bin/python" -c 'from agentic.config import bundled_model_path; print(bundled_model_path())')"
split -n 2 -d "$model" "$CARRY/model/part-"
du -sh "$CARRY"/*
