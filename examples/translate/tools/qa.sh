#!/bin/sh
# qa.sh LANG SOURCE TRANSLATED: checks one language's translation against the source
# records (every announcement exactly once, tagged LANG, with a text) and writes a
# Markdown report: for each route, its number of announcements and the first one. Any
# missing, extra or empty announcement fails the check, naming it.
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
    function fail(msg) {
        printf "qa.sh: %s: %s\n", FILENAME, msg > "/dev/stderr"
        bad = 1
        exit 1
    }
    NR == FNR { expected[field("seq")] = 1; source++; next }
    {
        seq = field("seq")
        if (field("lang") != lang) fail("announcement " seq " is not tagged " lang)
        if (!(seq in expected)) fail("announcement " seq " is not in the source")
        if (seq in seen) fail("announcement " seq " appears twice")
        if (field("text") == "") fail("announcement " seq " has no text")
        seen[seq] = 1
        route = field("route_id")
        if (!(route in lines)) { order[++routes] = route; first[route] = field("text") }
        lines[route]++
        total++
    }
    END {
        if (bad) exit 1
        if (total != source) {
            printf "qa.sh: %d of %d announcements translated into %s\n", total, source, lang > "/dev/stderr"
            exit 1
        }
        printf "# Announcements (%s)\n\n| route | lines | first |\n| --- | --- | --- |\n", lang
        for (i = 1; i <= routes; i++)
            printf "| %s | %d | %s |\n", order[i], lines[order[i]], first[order[i]]
        printf "\n%d announcements on %d routes, all translated\n", total, routes
    }' "$2" "$3"
