#!/bin/sh
# cut.sh LOG OUT: the lines of LOG whose `ts` is at most ORCH_TICK (every line when it
# is unset). Timestamps are RFC 3339 UTC, so they compare as text.
set -eu
log=$1 out=$2
tick=${ORCH_TICK:-9999-12-31T23:59:59Z}
awk -v tick="$tick" '{
    if (match($0, /"ts":"[^"]*"/)) {
        ts = substr($0, RSTART + 6, RLENGTH - 7)
        if (ts <= tick) print
    }
}' "$log" > "$out"
