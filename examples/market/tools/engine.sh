#!/bin/sh
# engine.sh SYMBOL FAIL_SYMBOL CUT OUT: the symbol's regime from the prices in CUT.
# When SYMBOL is FAIL_SYMBOL the price feed "is down": every attempt fails, so the
# phase's retries run out and the failure is recorded.
set -eu
symbol=$1 fail=$2 cut=$3 out=$4
if [ "$symbol" = "$fail" ]; then
    echo "engine: price feed for $symbol unavailable" >&2
    exit 75
fi
awk -v symbol="$symbol" -f tools/engine.awk "$cut" > "$out"
