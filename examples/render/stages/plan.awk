# Stage 4, shot list + assets -> render plan: one job per shot, `fps` frames a second,
# two seconds for a wide shot and one for any other, frames numbered across the film.
FILENAME ~ /assets\.json$/ && /^\{"asset":/ {
    a = str($0, "asset")
    k = list($0, "shots", used)
    for (i = 1; i <= k; i++) needs[used[i]] = needs[used[i]] (needs[used[i]] == "" ? "" : ",") "\"" a "\""
}
FILENAME ~ /shots\.json$/ && /^\{"shot":/ {
    n++
    id[n] = str($0, "shot")
    frames[n] = fps * (str($0, "camera") == "wide" ? 2 : 1)
}
END {
    total = 0
    for (i = 1; i <= n; i++) total += frames[i]
    printf "{\"fps\":%d,\"total_frames\":%d,\"jobs\":[\n", fps, total
    start = 0
    for (i = 1; i <= n; i++) {
        printf "{\"job\":%d,\"shot\":\"%s\",\"start\":%d,\"frames\":%d,\"assets\":[%s]}%s\n", i, id[i], start, frames[i], needs[id[i]], (i < n ? "," : "")
        start += frames[i]
    }
    print "]}"
}
