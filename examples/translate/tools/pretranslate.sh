#!/bin/sh
# pretranslate.sh DICTIONARY: compiles `english = translation` lines into a sed script that
# rewrites the "text" field of a JSON record word by word (lower-case and Capitalised
# forms), leaving the other fields alone. Entries are sorted, so the script does not
# depend on the order of the dictionary.
set -eu
export LC_ALL=C
if [ ! -r "$1" ]; then
    echo "pretranslate.sh: no dictionary $1" >&2
    exit 1
fi
# Keep the record in the hold space and work on its text, with a space in front so the
# first word, like every other, follows a non-letter.
printf '%s\n' 'h' 's/.*"text":"//' 's/^/ /'
sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$1" | sort -u |
    awk -F'=' '
        function trim(s) { sub(/^[ \t]+/, "", s); sub(/[ \t]+$/, "", s); return s }
        function cap(s) { return toupper(substr(s, 1, 1)) substr(s, 2) }
        # Each rule twice: a match takes the non-letter after the word, so the second
        # of two words in a row ("the the") is only seen on the second pass.
        function rule(from, to,    i) {
            for (i = 0; i < 2; i++)
                printf "s/\\([^A-Za-z]\\)%s\\([^A-Za-z]\\)/\\1%s\\2/g\n", from, to
        }
        NF == 2 { from = trim($1); to = trim($2); rule(from, to); rule(cap(from), cap(to)) }'
# Drop the space and put the translated text back after the record's other fields.
printf '%s\n' 's/^ //' 'G' 's/^\(.*\)\n\(.*"text":"\).*$/\2\1/'
