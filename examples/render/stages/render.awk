# Stage 5, render plan -> render output: what each job rendered (its frame files) and
# the film's running time.
/^\{"fps":/ { fps = num($0, "fps"); total = num($0, "total_frames") }
/^\{"job":/ {
    n++
    job[n] = num($0, "job"); shot[n] = str($0, "shot")
    first[n] = num($0, "start"); last[n] = first[n] + num($0, "frames") - 1
}
END {
    printf "{\"frames\":%d,\"seconds\":%d,\"renders\":[\n", total, total / fps
    for (i = 1; i <= n; i++)
        printf "{\"job\":%d,\"shot\":\"%s\",\"files\":\"frames/%s.%04d-%04d.exr\",\"first\":%d,\"last\":%d}%s\n", job[i], shot[i], shot[i], first[i], last[i], first[i], last[i], (i < n ? "," : "")
    print "]}"
}
