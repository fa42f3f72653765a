#!/usr/bin/env bash
# C library build benchmark: orch (files shard + depfile) vs ninja (deps = gcc).
#
# Usage: benches/c/run.sh [SOURCES] [HEADERS] [ORCH_BIN]
#   SOURCES   C sources (default 200)
#   HEADERS   headers, each included by about 3*SOURCES/HEADERS sources (default 20)
#   ORCH_BIN  orch binary (default: target/release/orch under the repo root)
#
# Environment: KEEP=1 keeps the work directory; JOBS (default 2) is -j for both tools;
# RUNS (default 10) timed runs per scenario, COLD_RUNS (default 3) for the cold build.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

SOURCES="${1:-200}"
HEADERS="${2:-20}"
ORCH_BIN="${3:-$repo/target/release/orch}"
JOBS="${JOBS:-2}"
RUNS="${RUNS:-10}"
COLD_RUNS="${COLD_RUNS:-3}"

die() { echo "run.sh: error: $*" >&2; exit 1; }
say() { printf '\n=== %s\n' "$*"; }

[[ "$SOURCES" =~ ^[1-9][0-9]*$ ]] || die "SOURCES must be a positive integer, got '$SOURCES'"
[[ "$HEADERS" =~ ^[1-9][0-9]*$ ]] || die "HEADERS must be a positive integer, got '$HEADERS'"
[[ -f "$ORCH_BIN" && -x "$ORCH_BIN" ]] || die "orch binary not found: $ORCH_BIN
       build it first (cargo build --release) or pass its path as the third argument"
ORCH_BIN="$(cd "$(dirname "$ORCH_BIN")" && pwd)/$(basename "$ORCH_BIN")"

command -v python3 >/dev/null || die "python3 is required"
command -v cc >/dev/null || die "a C compiler (cc) is required"
command -v ar >/dev/null || die "ar (binutils) is required"
if ! command -v ninja >/dev/null || ! command -v hyperfine >/dev/null; then
    echo "Installing ninja-build and hyperfine with apt-get..."
    command -v apt-get >/dev/null || die "ninja and hyperfine are missing and apt-get is unavailable; install them"
    sudo=""
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null || die "need root (or sudo) to apt-get install ninja-build hyperfine"
        sudo="sudo"
    fi
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q ninja-build hyperfine
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/orch-c.XXXXXX")"
if [[ "${KEEP:-0}" == 1 ]]; then
    trap 'echo; echo "work dir kept: $work"' EXIT
else
    trap 'rm -rf "$work"' EXIT
fi
A="$work/ninja"
B="$work/orch"
python3 "$here/gen.py" "$A" "$SOURCES" "$HEADERS"
python3 "$here/gen.py" "$B" "$SOURCES" "$HEADERS"

say "setup"
echo "sources=$SOURCES headers=$HEADERS jobs=$JOBS nproc=$(nproc) $(uname -srm)"
echo "ninja $(ninja --version)  $(hyperfine --version)  $(cc --version | head -1)"
echo "orch: $ORCH_BIN"
echo "work dir: $work"

NINJA="ninja -C $A -j $JOBS"
ORCH="$ORCH_BIN build -C $B -q -j $JOBS"

# A real edit of one value, so the object really changes: every build recompiles.
bump() {  # bump FILE MACRO: a new value for `#define MACRO`, unique per call
    # (A leading 1 keeps the value decimal: C reads a leading 0 as octal.)
    echo "sed -i \"s/^#define $2 .*/#define $2 1\$(date +%s%N | cut -c10-18)/\" $1"
}
# The first header that at least one source includes (all are, with the default rule).
HEADER=include/h0.h
INCLUDERS=$(grep -l '"h0.h"' "$A"/src/*.c | wc -l)

results="$work/results.txt"
: >"$results"
bench() {  # bench NAME RUNS PREPARE_NINJA PREPARE_ORCH
    local name="$1" runs="$2" pn="$3" po="$4"
    say "$name"
    local json="$work/$name.json"
    hyperfine --runs "$runs" --export-json "$json" \
        --prepare "$pn" -n ninja "$NINJA" \
        --prepare "$po" -n orch "$ORCH" >"$work/$name.log" 2>&1 \
        || { cat "$work/$name.log" >&2; die "hyperfine failed in scenario $name"; }
    python3 - "$json" "$name" >>"$results" <<'PY'
import json, sys
res = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
o, n = res["orch"], res["ninja"]
print("%-12s %10.1f %10.1f %10.1f %8.2fx" % (sys.argv[2], n["median"] * 1e3, o["median"] * 1e3,
      o["mean"] * 1e3, o["median"] / n["median"]))
PY
    tail -n 1 "$results"
}

# Cold: nothing built, no state, no cache.
bench cold "$COLD_RUNS" \
    "rm -rf $A/build $A/.ninja_log $A/.ninja_deps" \
    "rm -rf $B/build $B/.orch"

# Both trees must now agree, and both tools must see nothing to do.
cmp "$A/build/libgen.a" "$B/build/libgen.a" || die "the two libraries differ"
ninja -C "$A" -n | grep -q 'no work to do' || die "ninja still has work after a full build"
"$ORCH_BIN" plan -C "$B" | grep -q 'nothing to do' || die "orch still has work after a full build"

bench no-op "$RUNS" "true" "true"
bench one-source "$RUNS" "$(bump "$A/src/f7.c" SALT)" "$(bump "$B/src/f7.c" SALT)"
bench one-header "$RUNS" "$(bump "$A/$HEADER" H0_SALT)" "$(bump "$B/$HEADER" H0_SALT)"

# After a header edit, orch must have rerun exactly its includers: count the compile shards
# the last build ran, from its events.
say "check: a header edit reruns exactly its $INCLUDERS includers"
eval "$(bump "$B/$HEADER" H0_SALT)"
ran=$("$ORCH_BIN" build -C "$B" -j "$JOBS" --json 2>/dev/null \
      | grep -c '"type":"instance_completed".*"instance":"compile#' || true)
echo "orch reran $ran compile shards; $INCLUDERS sources include $HEADER"
[[ "$ran" == "$INCLUDERS" ]] || die "orch reran $ran shards, expected $INCLUDERS"

say "results (median ms; ratio = orch median / ninja median; < 1 means orch is faster)"
printf '%-12s %10s %10s %10s %9s\n' scenario ninja orch "orch mean" ratio
cat "$results"
