#!/bin/sh
# report.sh LANG TRANSLATED: a Markdown summary of one language: for each route, in
# the order of the translated file, its number of announcements and the first one.
set -eu
export LC_ALL=C
awk -v lang="$1" '
    # The value of a string or number field of a flat JSON record without escapes.
    function field(name,    rest) {
        rest = substr($0, index($0, "\"" name "\":") + length(name) + 3)
        if (substr(rest, 1, 1) == "\"") {
            rest = substr(rest, 2)
            return substr(rest, 1, index(rest, "\"") - 1)
        }
        return substr(rest, 1, match(rest, /[,}]/) - 1)
    }
    {
        route = field("route_id")
        if (!(route in lines)) { order[++routes] = route; first[route] = field("text") }
        lines[route]++
        total++
    }
    END {
        printf "# Announcements (%s)\n\n| route | lines | first |\n| --- | --- | --- |\n", lang
        for (i = 1; i <= routes; i++)
            printf "| %s | %d | %s |\n", order[i], lines[order[i]], first[order[i]]
        printf "\n%d announcements on %d routes\n\n", total, routes
    }' "$2"
