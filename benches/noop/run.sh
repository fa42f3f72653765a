#!/usr/bin/env bash
# No-op build benchmark: orch vs ninja on an N-phase generated project.
#
# Usage: benches/noop/run.sh [--shape layered|wide] [N] [ORCH_BIN]
#   --shape   graph shape passed to gen.py (default layered)
#   N         number of phases (default 10000)
#   ORCH_BIN  orch binary (default: target/release/orch under the repo root)
#
# Environment:
#   KEEP=1         keep the temporary work directory (path is printed)
#   RESULT=path    where to write hyperfine's JSON (default: in the work dir;
#                  with the default the JSON is deleted unless KEEP=1)
#   NINJA_ONLY=1   skip everything orch-related (to check the harness itself)
#   WARMUP, RUNS   hyperfine --warmup / --runs (default 3 / 20)
#   OLD_BIN=path   another orch binary (say, a build of the previous commit), timed
#                  in the same hyperfine run on a third copy of the project
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

SHAPE=layered
if [[ "${1:-}" == --shape ]]; then SHAPE="${2:-}"; shift 2 || shift; fi
if [[ "${1:-}" == --shape=* ]]; then SHAPE="${1#--shape=}"; shift; fi
[[ "$SHAPE" == layered || "$SHAPE" == wide ]] || { echo "run.sh: error: --shape must be layered or wide, got '$SHAPE'" >&2; exit 1; }
N="${1:-10000}"
ORCH_BIN="${2:-$repo/target/release/orch}"
NINJA_ONLY="${NINJA_ONLY:-0}"
WARMUP="${WARMUP:-3}"
RUNS="${RUNS:-20}"
OLD_BIN="${OLD_BIN:-}"

die() { echo "run.sh: error: $*" >&2; exit 1; }
say() { printf '\n=== %s\n' "$*"; }

[[ "$N" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer, got '$N'"

# --- orch binary --------------------------------------------------------------
if [[ "$NINJA_ONLY" != 1 ]]; then
    [[ -e "$ORCH_BIN" ]] || die "orch binary not found: $ORCH_BIN
       build it first (cargo build --release) or pass its path: run.sh $N /path/to/orch"
    [[ -f "$ORCH_BIN" && -x "$ORCH_BIN" ]] || die "not an executable file: $ORCH_BIN"
    ORCH_BIN="$(cd "$(dirname "$ORCH_BIN")" && pwd)/$(basename "$ORCH_BIN")"
    if [[ -n "$OLD_BIN" ]]; then
        [[ -f "$OLD_BIN" && -x "$OLD_BIN" ]] || die "OLD_BIN is not an executable file: $OLD_BIN"
        OLD_BIN="$(cd "$(dirname "$OLD_BIN")" && pwd)/$(basename "$OLD_BIN")"
    fi
fi

# --- tools --------------------------------------------------------------------
command -v python3 >/dev/null || die "python3 is required"
if ! command -v ninja >/dev/null || ! command -v hyperfine >/dev/null; then
    echo "Installing ninja-build and hyperfine with apt-get..."
    command -v apt-get >/dev/null || die "ninja and hyperfine are missing and apt-get is unavailable; install them manually"
    sudo=""
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null || die "need root (or sudo) to apt-get install ninja-build hyperfine"
        sudo="sudo"
    fi
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q ninja-build hyperfine
fi
command -v ninja >/dev/null || die "ninja still not found after install"
command -v hyperfine >/dev/null || die "hyperfine still not found after install"

# --- work dir -----------------------------------------------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/orch-noop.XXXXXX")"
if [[ "${KEEP:-0}" == 1 ]]; then
    trap 'echo; echo "work dir kept: $work"' EXIT
else
    trap 'rm -rf "$work"' EXIT
fi
A="$work/ninja"   # ninja's copy
B="$work/orch"    # orch's copy
C="$work/old"     # OLD_BIN's copy
RESULT="${RESULT:-$work/hyperfine.json}"

say "setup"
echo "N=$N  shape=$SHAPE  nproc=$(nproc)  $(uname -srm)"
echo "ninja $(ninja --version)  $(hyperfine --version)"
[[ "$NINJA_ONLY" == 1 ]] && echo "orch: skipped (NINJA_ONLY=1)" || echo "orch: $ORCH_BIN"
echo "work dir: $work"

python3 "$here/gen.py" --shape "$SHAPE" "$A" "$N"
[[ "$NINJA_ONLY" == 1 ]] || python3 "$here/gen.py" --shape "$SHAPE" "$B" "$N"
[[ -z "$OLD_BIN" ]] || python3 "$here/gen.py" --shape "$SHAPE" "$C" "$N"

# Build logs go to files (10k progress lines); shown only on failure.
run_logged() {  # run_logged LOG CMD...
    local log="$1"; shift
    if ! "$@" >"$log" 2>&1; then
        echo "--- last 30 lines of $log:" >&2; tail -n 30 "$log" >&2
        die "command failed: $*"
    fi
}

ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# --- initial full builds --------------------------------------------------------
say "initial full build (-j 2)"
t0=$(date +%s%N); run_logged "$work/ninja-full.log" ninja -C "$A" -j 2
echo "ninja full build: $(ms_since "$t0") ms"
if [[ "$NINJA_ONLY" != 1 ]]; then
    t0=$(date +%s%N); run_logged "$work/orch-full.log" "$ORCH_BIN" build -C "$B" -q -j 2
    echo "orch  full build: $(ms_since "$t0") ms"
    if [[ -n "$OLD_BIN" ]]; then
        run_logged "$work/old-full.log" "$OLD_BIN" build -C "$C" -q -j 2
        echo "old   full build done ($OLD_BIN)"
    fi
fi

count_outputs() { find "$1/out" -type f -name 'p*.txt' | wc -l; }
[[ "$(count_outputs "$A")" == "$N" ]] || die "ninja produced $(count_outputs "$A") outputs, expected $N"
if [[ "$NINJA_ONLY" != 1 ]]; then
    orch_log() { echo "--- orch output (last 30 lines of $work/orch-full.log):" >&2
                 tail -n 30 "$work/orch-full.log" >&2; }
    [[ -d "$B/out" ]] || { orch_log; die "orch exited 0 but created no out/ directory in $B"; }
    [[ "$(count_outputs "$B")" == "$N" ]] \
        || { orch_log; die "orch produced $(count_outputs "$B") outputs, expected $N"; }
    diff -r "$A/out" "$B/out" >"$work/out.diff" 2>&1 \
        || { head -n 20 "$work/out.diff" >&2; die "outputs of orch and ninja differ"; }
    echo "outputs identical: $N files (diff -r out/)"
fi

# ninja must consider the tree clean, otherwise the benchmark is meaningless.
ninja -C "$A" -n | grep -q 'no work to do' || die "ninja -n still has work after the full build"

# A no-op after the racy window (2 s after the last write) leaves .orch/fresh.bin, which
# every later no-op checks instead of planning: the state a user's second no-op is in.
if [[ "$NINJA_ONLY" != 1 ]]; then
    sleep 2.1
    "$ORCH_BIN" build -C "$B" -q
    [[ -z "$OLD_BIN" ]] || "$OLD_BIN" build -C "$C" -q
    if [[ -f "$B/.orch/fresh.bin" ]]; then
        echo "orch  .orch/fresh.bin: $(wc -c <"$B/.orch/fresh.bin") bytes"
    else
        echo "orch  no .orch/fresh.bin (an older orch, or a stat still too recent)"
    fi
fi

# Marker: any output rewritten after this point is newer than it.
sleep 0.05; touch "$work/marker"

# --- no-op benchmark ------------------------------------------------------------
say "no-op build, side by side (hyperfine, $WARMUP warmups, $RUNS runs)"
cmds=(-n ninja "ninja -C $A")
[[ "$NINJA_ONLY" == 1 ]] || cmds+=(-n orch "$ORCH_BIN build -C $B -q")
[[ -z "$OLD_BIN" ]] || cmds+=(-n old "$OLD_BIN build -C $C -q")
# -N (no intermediate shell, hyperfine >= 1.13): the no-op builds take only a
# few ms, below what hyperfine can correct for shell start-up. Applied to both.
hf_opts=()
hyperfine --help 2>&1 | grep -q -- '^ *-N' && hf_opts+=(-N)
hyperfine "${hf_opts[@]}" --warmup "$WARMUP" --runs "$RUNS" --export-json "$RESULT" "${cmds[@]}" \
    || die "hyperfine failed (did a build command exit non-zero?)"

python3 - "$RESULT" <<'PY'
import json, sys
res = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
print()
print("%-6s %10s %10s %10s %10s" % ("", "mean ms", "stddev", "median ms", "min ms"))
for name, r in res.items():
    print("%-6s %10.2f %10.2f %10.2f %10.2f" % (name, r["mean"] * 1e3, (r["stddev"] or 0) * 1e3,
                                                 r["median"] * 1e3, r["min"] * 1e3))
if "orch" in res and "ninja" in res:
    o, n = res["orch"], res["ninja"]
    print()
    print("ratio orch/ninja  mean:   %.2fx" % (o["mean"] / n["mean"]))
    print("ratio orch/ninja  median: %.2fx" % (o["median"] / n["median"]))
    print("(< 1 means orch is faster; > 1 means orch is slower)")
    print("cpu (user+sys) orch/ninja: %.2fx" % ((o["user"] + o["system"]) / (n["user"] + n["system"])))
if "old" in res and "orch" in res:
    o, n = res["orch"], res["old"]
    print("ratio orch/old    mean:   %.2fx   median: %.2fx   cpu: %.2fx" % (
        o["mean"] / n["mean"], o["median"] / n["median"],
        (o["user"] + o["system"]) / (n["user"] + n["system"])))
PY

# Peak RSS of one no-op build each (GNU time's %M, in KB), when GNU time is there.
if [[ -x /usr/bin/time ]]; then
    rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -n 1; }
    line="peak RSS KB: ninja $(rss ninja -C "$A")"
    [[ "$NINJA_ONLY" == 1 ]] || line+="  orch $(rss "$ORCH_BIN" build -C "$B" -q)"
    [[ -z "$OLD_BIN" ]] || line+="  old $(rss "$OLD_BIN" build -C "$C" -q)"
    echo "$line"
fi
echo "hyperfine JSON: $RESULT"

newer() { find "$1/out" -type f -newer "$work/marker" | wc -l; }
[[ "$(newer "$A")" == 0 ]] || die "ninja rewrote $(newer "$A") outputs during the no-op benchmark"
if [[ "$NINJA_ONLY" != 1 ]]; then
    say "orch no-op check: $ORCH_BIN build -C $B  (should report no work)"
    "$ORCH_BIN" build -C "$B" 2>&1 || die "orch no-op build exited non-zero"
    n_new="$(newer "$B")"
    [[ "$n_new" == 0 ]] || die "orch rewrote $n_new outputs during no-op builds (it should run nothing)"
    echo "(no output in $B/out was rewritten during the no-op builds)"
fi

# --- touched sources: mtime changes, content does not -------------------------
say "all $N sources touched (mtime only, content unchanged), one build each"
find "$A/src" -type f -exec touch {} +
t0=$(date +%s%N); run_logged "$work/ninja-touch.log" ninja -C "$A"
t_ninja=$(ms_since "$t0")
n_ninja=$(grep -c '^\[' "$work/ninja-touch.log" || true)
echo "ninja: ${t_ninja} ms, ran $n_ninja commands  (ninja is mtime-based: it rebuilds everything)"
if [[ "$NINJA_ONLY" != 1 ]]; then
    find "$B/src" -type f -exec touch {} +
    touch "$work/marker2"
    t0=$(date +%s%N); run_logged "$work/orch-touch.log" "$ORCH_BIN" build -C "$B" -q
    t_orch=$(ms_since "$t0")
    n_new="$(find "$B/out" -type f -newer "$work/marker2" | wc -l)"
    echo "orch:  ${t_orch} ms, rewrote $n_new outputs  (content-addressed: rehashes $N sources, should run nothing)"
    [[ -s "$work/orch-touch.log" ]] && { echo "orch output:"; cat "$work/orch-touch.log"; }
    [[ "$n_new" == 0 ]] || echo "WARNING: orch re-ran phases although no content changed"
    diff -r "$A/out" "$B/out" >/dev/null || die "outputs differ after the touched-sources build"
fi
