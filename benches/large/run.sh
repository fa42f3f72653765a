#!/usr/bin/env bash
# Large-output benchmark: one phase writing SIZE bytes, timed as a bare command, under
# `orch build --no-cache`, and under `orch build` with the local cache on.
#
# Usage: benches/large/run.sh [SIZE] [ORCH_BIN] [ORCH_BIN_B]
#   SIZE        bytes the phase writes, as `head -c` takes them (default 1G)
#   ORCH_BIN    orch binary (default: target/release/orch under the repo root)
#   ORCH_BIN_B  a second binary (an earlier build, say) timed with the cache on beside it
#
# Environment:
#   KEEP=1       keep the work directory (its path is printed)
#   RESULT=path  where to write every run's time as JSON (default: not written)
#   RUNS         rounds; each runs every command once (default 7)
#
# Every run writes new content (a counter prefixes the bytes), so the cache-on runs store
# a blob the store does not have and nothing is ever restored; the store is emptied
# before each run so the disk holds at most one stored copy.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

SIZE="${1:-1G}"
ORCH_BIN="${2:-$repo/target/release/orch}"
ORCH_BIN_B="${3:-}"
RUNS="${RUNS:-7}"

die() { echo "run.sh: error: $*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 is required"
for b in "$ORCH_BIN" ${ORCH_BIN_B:+"$ORCH_BIN_B"}; do
    [[ -f "$b" && -x "$b" ]] || die "not an executable file: $b (cargo build --release)"
done
ORCH_BIN="$(realpath "$ORCH_BIN")"
if [[ -n "$ORCH_BIN_B" ]]; then ORCH_BIN_B="$(realpath "$ORCH_BIN_B")"; fi

work="$(mktemp -d "${TMPDIR:-/tmp}/orch-large.XXXXXX")"
if [[ "${KEEP:-0}" == 1 ]]; then
    trap 'echo; echo "work dir kept: $work"' EXIT
else
    trap 'rm -rf "$work"' EXIT
fi
avail=$(df -Pk "$work" | awk 'NR == 2 { print $4 }')
need=$(numfmt --from=iec "$SIZE")
(( avail * 1024 > 4 * need )) || die "$work has less than 4 × $SIZE free"

# The phase: a counter (its input) followed by SIZE zero bytes; zeros come from the
# kernel faster than any generator, so the command costs little beside the write.
gen="cat seed > out.bin && head -c $SIZE /dev/zero >> out.bin"
cat >"$work/Orchfile.toml" <<TOML
[orch]
format = 1

[phase.big]
run     = "$gen"
inputs  = ["seed"]
outputs = ["out.bin"]
TOML

echo "orch:   $ORCH_BIN"
if [[ -n "$ORCH_BIN_B" ]]; then echo "orch B: $ORCH_BIN_B"; fi
echo "size:   $SIZE, work dir on $(findmnt -n -o FSTYPE -T "$work"), $RUNS rounds"

# hyperfine runs all of one command's runs before the next command's, so a burst of load
# from other work on the machine would land on one command only; instead each round runs
# every command once, in an order rotated each round.
python3 "$here/rounds.py" "$work" "$gen" "$RUNS" "${RESULT:-}" "$ORCH_BIN" "$ORCH_BIN_B"
