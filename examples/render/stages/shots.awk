# Stage 2, script -> shot list: one shot per action; a scene opens on a wide shot, then
# alternates medium and close-up.
/^\{"scene":/ {
    scene = num($0, "scene")
    k = list($0, "actions", acts)
    for (i = 1; i <= k; i++) {
        n++
        id[n] = scene "-" i
        sc[n] = scene
        act[n] = acts[i]
        cam[n] = i == 1 ? "wide" : (i % 2 == 0 ? "medium" : "close")
    }
}
END {
    print "{\"shots\":["
    for (i = 1; i <= n; i++)
        printf "{\"shot\":\"%s\",\"scene\":%d,\"camera\":\"%s\",\"action\":\"%s\"}%s\n", id[i], sc[i], cam[i], act[i], (i < n ? "," : "")
    print "]}"
}
