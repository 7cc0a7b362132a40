#!/bin/sh
# pip install inside an image build. A TLS-inspecting proxy's CA reaches the build as the build
# secret `ca` (deploy.sh passes the host's bundle, see README): pip trusts that bundle then,
# verification stays on. Secrets are mounted for one RUN only and never stored in a layer.
set -eu
if [ -s /run/secrets/ca ]; then
    export PIP_CERT=/run/secrets/ca
fi
exec pip install --no-cache-dir --disable-pip-version-check "$@"
