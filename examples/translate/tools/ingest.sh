#!/bin/sh
# ingest.sh SCRIPTS: one JSON object per announcement, in file order:
#   {"route_id":"R1","seq":1,"text":"Welcome aboard, the next stop is the station."}
# Comments and blank lines are skipped. Double quotes, backslashes and tabs in a text
# become single quotes, slashes and spaces, so every line is valid JSON without escapes.
set -eu
export LC_ALL=C
sed -e 's/[[:space:]]*$//' -e '/^#/d' -e '/^$/d' "$1" |
    tr '"\\\t' "'/ " |
    awk -F'|' '
        NF < 2 || $1 == "" {
            printf "ingest.sh: announcement %d is not ROUTE|TEXT: %s\n", NR, $0 > "/dev/stderr"
            exit 1
        }
        {
            text = substr($0, length($1) + 2)
            sub(/^[ \t]+/, "", text)
            printf "{\"route_id\":\"%s\",\"seq\":%d,\"text\":\"%s\"}\n", $1, NR, text
        }'
