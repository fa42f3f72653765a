#!/usr/bin/env bash
# Cold build benchmark: orch's own cost per instance, against ninja and the spawn floor.
#
# Usage: benches/cold/run.sh [--shape wide|layered|chain] [N] [ORCH_BIN]
#   --shape   graph shape from benches/peers/workload.py (default wide)
#   N         number of phases (default 1000)
#   ORCH_BIN  orch binary (default: target/release/orch under the repo root)
#
# Environment:
#   OLD_BIN=path   another orch binary (say, the previous commit), timed in the same
#                  hyperfine run on its own copy of the project
#   JOBS           -j for every tool and the floor (default 2)
#   RUNS, WARMUP   hyperfine --runs / --warmup (default 5 / 1)
#   KEEP=1         keep the work directory (its path is printed)
#   RESULT=path    where hyperfine's JSON goes (default: in the work directory)
#
# Every timed build starts cold: outputs, `.orch/` (state, logs and the local cache) and
# ninja's log are moved out of the project by hyperfine's --prepare before each run. The floor is
# benches/peers/floors.c: N `/bin/true` at most JOBS at a time, the least any tool must
# spend to start N commands.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

SHAPE=wide
if [[ "${1:-}" == --shape ]]; then SHAPE="${2:-}"; shift 2 || shift; fi
[[ "$SHAPE" == wide || "$SHAPE" == layered || "$SHAPE" == chain ]] \
    || { echo "run.sh: error: --shape must be wide, layered or chain, got '$SHAPE'" >&2; exit 1; }
N="${1:-1000}"
ORCH_BIN="${2:-$repo/target/release/orch}"
OLD_BIN="${OLD_BIN:-}"
JOBS="${JOBS:-2}"
RUNS="${RUNS:-5}"
WARMUP="${WARMUP:-1}"

die() { echo "run.sh: error: $*" >&2; exit 1; }
[[ "$N" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer, got '$N'"
[[ -f "$ORCH_BIN" && -x "$ORCH_BIN" ]] || die "orch binary not found: $ORCH_BIN"
[[ -z "$OLD_BIN" || -x "$OLD_BIN" ]] || die "OLD_BIN is not an executable file: $OLD_BIN"
for tool in python3 ninja hyperfine cc; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

work="$(mktemp -d "${TMPDIR:-/tmp}/orch-cold.XXXXXX")"
if [[ "${KEEP:-0}" == 1 ]]; then
    trap 'echo; echo "work dir kept: $work"' EXIT
else
    trap 'rm -rf "$work"' EXIT
fi
RESULT="${RESULT:-$work/hyperfine.json}"
cc -O2 -o "$work/floors" "$repo/benches/peers/floors.c"

# One copy of the project per tool, written by the peer benchmark's generator.
python3 - "$repo/benches/peers" "$work" "$SHAPE" "$N" "${OLD_BIN:+old}" <<'PY'
import sys
sys.path.insert(0, sys.argv[1])
import workload
work, shape, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
copies = [("ninja", "ninja"), ("orch", "orch")] + ([("old", "orch")] if sys.argv[5] else [])
for name, tool in copies:
    workload.write_project("%s/%s" % (work, name), tool, shape, n, 1)
PY

echo "shape=$SHAPE N=$N jobs=$JOBS nproc=$(nproc) load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "ninja $(ninja --version)  $(hyperfine --version)"

# Cold: the previous run's files are moved aside, not deleted. ext4 skips inodes freed
# in the last 30 s (5 min while their table block is dirty) when it allocates new ones,
# and that scan grows with every file deleted: a tool whose last run wrote more files
# would pay for them in its next run. A fresh checkout has no such recent deletions.
cat >"$work/cold.sh" <<'SH'
#!/bin/sh
# cold.sh DIR: moves DIR's outputs and build state to a new directory under trash/.
set -e
trash="$(mktemp -d "$(dirname "$0")/trash/XXXXXX")"
for f in out .orch .ninja_log .ninja_deps; do
    if [ -e "$1/$f" ]; then mv "$1/$f" "$trash/"; fi
done
mkdir "$1/out"
SH
chmod +x "$work/cold.sh"
mkdir -p "$work/trash"
cold() { echo "$work/cold.sh $1"; }
args=(-N --warmup "$WARMUP" --runs "$RUNS" --export-json "$RESULT")
args+=(--prepare "$(cold "$work/ninja")" -n ninja "ninja -C $work/ninja -j $JOBS")
args+=(--prepare "$(cold "$work/orch")" -n orch "$ORCH_BIN build -C $work/orch -q -j $JOBS")
if [[ -n "$OLD_BIN" ]]; then
    args+=(--prepare "$(cold "$work/old")" -n old "$OLD_BIN build -C $work/old -q -j $JOBS")
fi
args+=(--prepare true -n floor "$work/floors spawn $N $JOBS")
hyperfine "${args[@]}"

# The outputs must be the same bytes whichever tool made them.
diff -r "$work/ninja/out" "$work/orch/out" >/dev/null || die "orch's outputs differ from ninja's"
[[ -z "$OLD_BIN" ]] || diff -r "$work/ninja/out" "$work/old/out" >/dev/null \
    || die "OLD_BIN's outputs differ from ninja's"

python3 - "$RESULT" "$N" <<'PY'
import json, sys
res = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
n = int(sys.argv[2])
cpu = lambda r: r["user"] + r["system"]
print()
print("%-6s %10s %10s %10s %12s %16s" % ("", "median ms", "mean ms", "cpu ms", "vs ninja", "(x-floor)/N us"))
floor = res["floor"]["median"]
for name, r in res.items():
    ratio = r["median"] / res["ninja"]["median"]
    print("%-6s %10.1f %10.1f %10.1f %11.2fx %16.1f" % (
        name, r["median"] * 1e3, r["mean"] * 1e3, cpu(r) * 1e3, ratio,
        (r["median"] - floor) / n * 1e6))
for name in ("orch", "old"):
    if name in res:
        print("%s/ninja: median %.2fx, cpu %.2fx; orch's own cpu beyond ninja's: %.0f us per instance" % (
            name, res[name]["median"] / res["ninja"]["median"], cpu(res[name]) / cpu(res["ninja"]),
            (cpu(res[name]) - cpu(res["ninja"])) / n * 1e6))
if "old" in res:
    o, b = res["orch"], res["old"]
    print("orch/old: median %.2fx, mean %.2fx, cpu %.2fx" % (
        o["median"] / b["median"], o["mean"] / b["mean"], cpu(o) / cpu(b)))
PY
echo "hyperfine JSON: $RESULT"
