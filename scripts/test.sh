#!/usr/bin/env bash
# The whole test suite: installs the servers the remote-cache and Slurm tests start on
# loopback (nginx, s3rver, Slurm and munge; needs root for apt-get, and npm), the headless
# Chromium tests/report.rs opens report pages in, and the shells the completion tests type
# into (zsh, fish, tmux), then runs cargo test and the tests of
# the peer benchmark harness (python3, installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-servers.sh
# The completion tests source orch's scripts in real bash, zsh and fish, typing into
# them through tmux.
shells_missing=false
for tool in zsh fish tmux; do command -v "$tool" >/dev/null || shells_missing=true; done
if $shells_missing; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update && apt-get install -y --no-install-recommends zsh fish tmux
fi
cargo test --locked "$@"
if ! command -v python3 >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update && apt-get install -y --no-install-recommends python3
fi
python3 -m unittest discover -s benches/peers
