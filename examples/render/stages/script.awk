# Stage 1, story text -> script: the title (`# ...`), then scenes separated by blank
# lines, each a heading followed by its actions.
/^# / { title = substr($0, 3); next }
/^[ \t]*$/ { heading = ""; next }
heading == "" { heading = $0; n++; head[n] = $0; acts[n] = ""; next }
{ acts[n] = acts[n] (acts[n] == "" ? "" : ",") "\"" esc($0) "\"" }
END {
    printf "{\"title\":\"%s\",\"scenes\":[\n", esc(title)
    for (i = 1; i <= n; i++)
        printf "{\"scene\":%d,\"heading\":\"%s\",\"actions\":[%s]}%s\n", i, esc(head[i]), acts[i], (i < n ? "," : "")
    print "]}"
}
