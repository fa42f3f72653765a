#!/bin/sh
# context.sh RECORDS: gives each record its place in its route, as a translator of one
# route sees it: "n" (1, 2, ...) among the route's announcements in file order, and
# "of" (how many the route has). The file is read twice: once to count, once to write.
#   {"route_id":"R1","seq":1,"n":1,"of":5,"text":"Welcome aboard, ..."}
set -eu
export LC_ALL=C
awk '
    function route(    rest) {
        rest = substr($0, index($0, "\"route_id\":\"") + 12)
        return substr(rest, 1, index(rest, "\"") - 1)
    }
    NR == FNR { of[route()]++; next }
    {
        r = route()
        n[r]++
        at = index($0, ",\"text\":")
        printf "%s,\"n\":%d,\"of\":%d%s\n", substr($0, 1, at - 1), n[r], of[r], substr($0, at)
    }' "$1" "$1"
