# Helpers shared by the stages: every JSON artifact of this example holds one record
# per line, so a record's fields can be read with plain pattern matching.

# `s` as the inside of a JSON string.
function esc(s) {
    gsub(/\\/, "\\\\", s)
    gsub(/"/, "\\\"", s)
    return s
}

# The number in field `key` of the one-line record `line` ("" when absent).
function num(line, key,    s) {
    s = line
    if (!sub(".*\"" key "\":", "", s)) return ""
    sub(/[^0-9].*/, "", s)
    return s
}

# The string in field `key` of `line`, still escaped as in the JSON ("" when absent).
function str(line, key,    s) {
    s = line
    if (!sub(".*\"" key "\":\"", "", s)) return ""
    sub(/".*/, "", s)
    return s
}

# The strings of list field `key` of `line`, into `out`; returns how many.
function list(line, key, out,    s, k, i) {
    s = line
    if (!sub(".*\"" key "\":\\[", "", s)) return 0
    sub(/\].*/, "", s)
    if (s == "") return 0
    k = split(s, out, /","/)
    for (i = 1; i <= k; i++) gsub(/^"|"$/, "", out[i])
    return k
}
