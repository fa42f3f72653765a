#!/bin/sh
# export.sh TRANSLATED...: one record per announcement with its text in every language,
# in announcement order, languages in byte order whatever the order of the files:
#   {"route_id":"R1","seq":1,"de":"Willkommen ...","fr":"Bienvenue ..."}
set -eu
export LC_ALL=C
# First to "SEQ<TAB>LANG<TAB>ROUTE<TAB>TEXT" lines (texts hold no tabs: ingest.sh turns
# them into spaces), sorted, then joined per announcement.
awk '
    function field(name,    rest) {
        rest = substr($0, index($0, "\"" name "\":") + length(name) + 3)
        if (substr(rest, 1, 1) == "\"") {
            rest = substr(rest, 2)
            return substr(rest, 1, index(rest, "\"") - 1)
        }
        return substr(rest, 1, match(rest, /[,}]/) - 1)
    }
    { printf "%s\t%s\t%s\t%s\n", field("seq"), field("lang"), field("route_id"), field("text") }' "$@" |
    sort -t '	' -k1,1n -k2,2 |
    awk -F '	' '
        $1 != seq { if (NR > 1) print "}"; seq = $1; printf "{\"route_id\":\"%s\",\"seq\":%d", $3, $1 }
        { printf ",\"%s\":\"%s\"", $2, $4 }
        END { if (NR > 0) print "}" }'
