#!/bin/sh
# report.sh OUT REGIME...: the regimes as one JSON array, in symbol order.
set -eu
out=$1
shift
{
    printf '['
    sep=''
    for f in $(printf '%s\n' "$@" | LC_ALL=C sort); do
        printf '%s' "$sep"
        tr -d '\n' < "$f"
        sep=','
    done
    printf ']\n'
} > "$out"
