#!/usr/bin/env bash
# The whole test suite: installs the servers the remote-cache and Slurm tests start on
# loopback (nginx, s3rver, Slurm and munge; needs root for apt-get, and npm) and the
# headless Chromium tests/report.rs opens report pages in, then runs cargo test and the tests of
# the peer benchmark harness (python3, installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-servers.sh
cargo test --locked "$@"
if ! command -v python3 >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update && apt-get install -y --no-install-recommends python3
fi
python3 -m unittest discover -s benches/peers
