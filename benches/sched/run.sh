#!/usr/bin/env bash
# Scheduling benchmark: a layered graph of `sleep` phases with a few long ones deep in
# the graph, built at -j JOBS by orch (with and without recorded durations), ninja and
# make, against the lower bound max(critical path, total work / jobs).
#
# Usage: benches/sched/run.sh [LAYERS] [WIDTH] [ORCH_BIN]
#   LAYERS, WIDTH  the graph (default 6 layers of 10 phases; see gen.py)
#   ORCH_BIN       orch binary (default: target/release/orch under the repo root)
#
# Environment: JOBS (default 2) is -j for every tool; ROUNDS (default 3) rounds, each
# building once with every tool, the tools' order rotating from round to round, so the
# load of a shared machine falls on all of them alike; KEEP=1 keeps the work directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

LAYERS="${1:-6}"
WIDTH="${2:-10}"
ORCH_BIN="${3:-$repo/target/release/orch}"
JOBS="${JOBS:-2}"
ROUNDS="${ROUNDS:-3}"

die() { echo "run.sh: error: $*" >&2; exit 1; }

[[ "$LAYERS" =~ ^[1-9][0-9]*$ ]] || die "LAYERS must be a positive integer, got '$LAYERS'"
[[ "$WIDTH" =~ ^[1-9][0-9]*$ ]] || die "WIDTH must be a positive integer, got '$WIDTH'"
[[ -f "$ORCH_BIN" && -x "$ORCH_BIN" ]] || die "orch binary not found: $ORCH_BIN
       build it first (cargo build --release) or pass its path as the third argument"
ORCH_BIN="$(cd "$(dirname "$ORCH_BIN")" && pwd)/$(basename "$ORCH_BIN")"
command -v python3 >/dev/null || die "python3 is required"
command -v make >/dev/null || die "make is required"
command -v ninja >/dev/null || die "ninja is required (apt-get install ninja-build)"

work="$(mktemp -d "${TMPDIR:-/tmp}/orch-sched.XXXXXX")"
if [[ "${KEEP:-0}" == 1 ]]; then
    trap 'echo; echo "work dir kept: $work"' EXIT
else
    trap 'rm -rf "$work"' EXIT
fi
bounds="$(python3 "$here/gen.py" "$work" "$LAYERS" "$WIDTH" "$JOBS")"
cp -r "$work/orch" "$work/orch-cold"

echo "layers=$LAYERS width=$WIDTH jobs=$JOBS rounds=$ROUNDS nproc=$(nproc) $(uname -srm)"
echo "ninja $(ninja --version)  $(make --version | head -1)"
echo "orch: $ORCH_BIN"
echo "graph: $bounds"

# The history run: one build records every phase's duration; each timed orch build is
# then `--force-all`, which reruns everything (forced instances never come from the
# cache) with those durations known.
"$ORCH_BIN" build -C "$work/orch" -q -j "$JOBS" >/dev/null

# Each tool: the preparation before a timed build, and the build.
declare -A prep build
prep[orch]="true"
build[orch]="$ORCH_BIN build -C $work/orch -q -j $JOBS --force-all"
prep[orch-cold]="rm -rf $work/orch-cold/out $work/orch-cold/.orch"
build[orch-cold]="$ORCH_BIN build -C $work/orch-cold -q -j $JOBS"
prep[ninja]="rm -rf $work/ninja/out $work/ninja/.ninja_log $work/ninja/.ninja_deps"
build[ninja]="ninja -C $work/ninja -j $JOBS"
prep[make]="rm -rf $work/make/out"
build[make]="make -C $work/make -j $JOBS -s"
tools=(orch orch-cold ninja make)

times="$work/times.txt"
: >"$times"
for ((r = 0; r < ROUNDS; r++)); do
    for ((t = 0; t < ${#tools[@]}; t++)); do
        tool="${tools[$(((t + r) % ${#tools[@]}))]}"
        eval "${prep[$tool]}"
        start=$(date +%s%N)
        eval "${build[$tool]}" >/dev/null
        end=$(date +%s%N)
        echo "$tool $(((end - start) / 1000000))" | tee -a "$times"
    done
done

python3 - "$times" "$bounds" <<'PY'
import json, statistics, sys
b = json.loads(sys.argv[2])
runs = {}
for line in open(sys.argv[1]):
    tool, ms = line.split()
    runs.setdefault(tool, []).append(int(ms) / 1000)
lb = b["lower_bound_s"]
print()
print("lower bound %.2f s (critical path %.2f s, work %.2f s / %d jobs); simulated without"
      " overhead: file order %.2f s, longest path first %.2f s"
      % (lb, b["critical_path_s"], b["work_s"], b["jobs"], b["file_order_s"], b["longest_path_s"]))
print("%-10s %8s %8s %8s %12s" % ("tool", "median", "min", "max", "median/bound"))
for tool in ["orch", "orch-cold", "ninja", "make"]:
    v = runs[tool]
    m = statistics.median(v)
    print("%-10s %8.2f %8.2f %8.2f %11.2fx" % (tool, m, min(v), max(v), m / lb))
PY
