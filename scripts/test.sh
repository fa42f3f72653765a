#!/usr/bin/env bash
# The whole test suite: installs the servers the remote-cache tests start on loopback
# (nginx, s3rver; needs root for apt-get, and npm), then runs cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-servers.sh
cargo test --locked "$@"
