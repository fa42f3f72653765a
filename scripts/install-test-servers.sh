#!/usr/bin/env bash
# Installs the servers the tests run on loopback: nginx (WebDAV, from Debian) and s3rver
# (an S3 stand-in, from npm) for tests/remote.rs; Slurm and munge (slurmctld, slurmd, the
# client commands, munged, from Debian) for tests/slurm.rs's one-node cluster; and
# Chromium (from Debian), the headless browser tests/report.rs opens `orch report`'s page in.
# Idempotent: does nothing when all are there.
#
#   scripts/install-test-servers.sh          # as root (apt-get), node and npm on PATH
#
# s3rver goes to ${ORCH_TEST_SERVERS:-~/.cache/orch-test-servers}; the tests look there
# (or at $ORCH_S3RVER, the path of the s3rver executable).
set -euo pipefail

S3RVER_VERSION=3.7.1
prefix="${ORCH_TEST_SERVERS:-$HOME/.cache/orch-test-servers}"

if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine has no package lists: update them first.
    apt-get update
    apt-get install -y --no-install-recommends nginx
    # The package may start a system nginx on port 80; the tests start their own.
    if command -v service >/dev/null; then service nginx stop >/dev/null 2>&1 || true; fi
fi

slurm_missing=false
for program in slurmctld slurmd sbatch munged; do
    command -v "$program" >/dev/null || [ -x "/usr/sbin/$program" ] || slurm_missing=true
done
if $slurm_missing; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge
    # The packages may start system daemons (on the default ports, with /etc's key); the
    # tests start their own cluster with its own configuration.
    if command -v service >/dev/null; then
        for service in slurmd slurmctld munge; do service "$service" stop >/dev/null 2>&1 || true; done
    fi
fi

if ! command -v chromium >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends chromium
fi

bin="$prefix/node_modules/.bin/s3rver"
if [ ! -x "$bin" ] || ! grep -q "\"version\": \"$S3RVER_VERSION\"" "$prefix/node_modules/s3rver/package.json" 2>/dev/null; then
    command -v npm >/dev/null || { echo "install-test-servers: npm is missing (apt-get install nodejs npm)" >&2; exit 1; }
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "s3rver@$S3RVER_VERSION"
fi

echo "install-test-servers: nginx $(nginx -v 2>&1 | sed 's/.*\///'), s3rver $S3RVER_VERSION at $bin, $(PATH="$PATH:/usr/sbin" slurmctld -V), $(chromium --version 2>/dev/null || echo chromium)"
