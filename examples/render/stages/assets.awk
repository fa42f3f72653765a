# Stage 3, script + shot list -> asset manifest: a set per location and a light per time
# of day (from the scene headings), a camera rig per framing, each with the shots that
# use it, in order of first use.
function use(asset, kind, shot) {
    if (!(asset in kinds)) { order[++n] = asset; kinds[asset] = kind; shots[asset] = "" }
    shots[asset] = shots[asset] (shots[asset] == "" ? "" : ",") "\"" shot "\""
}
FILENAME ~ /script\.json$/ && /^\{"scene":/ {
    h = str($0, "heading")
    loc = h; sub(/^(INT|EXT)\. /, "", loc); sub(/ - .*$/, "", loc)
    tod = h; sub(/^.* - /, "", tod)
    s = num($0, "scene")
    set[s] = "set-" tolower(loc); gsub(/ /, "-", set[s])
    light[s] = "light-" tolower(tod)
}
FILENAME ~ /shots\.json$/ && /^\{"shot":/ {
    shot = str($0, "shot"); s = num($0, "scene")
    use(set[s], "set", shot)
    use(light[s], "light", shot)
    use("rig-" str($0, "camera"), "camera", shot)
}
END {
    print "{\"assets\":["
    for (i = 1; i <= n; i++)
        printf "{\"asset\":\"%s\",\"kind\":\"%s\",\"shots\":[%s]}%s\n", order[i], kinds[order[i]], shots[order[i]], (i < n ? "," : "")
    print "]}"
}
