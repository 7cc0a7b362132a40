#!/bin/sh
# Builds the llama-cpp-python wheel of one version into a folder, from its source release with
# our patches to the llama.cpp it vendors applied (patches/llama.cpp/*.patch, each says why).
# CMAKE_ARGS come from the environment. Used by deploy.sh and the main images.
#
#   containers/llama-wheel.sh VERSION OUT_DIR [PATCH_DIR]
set -eu
version="$1"
out="$2"
patches="${3:-$(cd "$(dirname "$0")/.." && pwd)/patches/llama.cpp}"
python="${PY:-python3}"
# In an image build a TLS-inspecting proxy's CA comes as the secret `ca` (see pip-install.sh).
if [ -s /run/secrets/ca ]; then
    export PIP_CERT=/run/secrets/ca
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$python" -m pip download --quiet --no-cache-dir --no-deps --no-binary :all: --disable-pip-version-check \
    -d "$work" "llama-cpp-python==$version"
tar -xzf "$work"/llama_cpp_python-"$version".tar.gz -C "$work"
src="$work/llama_cpp_python-$version"
for patch_file in "$patches"/*.patch; do
    [ -e "$patch_file" ] || continue
    echo "applying $(basename "$patch_file")"
    if command -v patch >/dev/null 2>&1; then
        patch --quiet --forward -p1 -d "$src/vendor/llama.cpp" < "$patch_file"
    else
        git -C "$src/vendor/llama.cpp" apply -p1 "$patch_file"
    fi
done
"$python" -m pip wheel --quiet --no-cache-dir --no-deps --disable-pip-version-check -w "$out" "$src"
