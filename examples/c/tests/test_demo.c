/* Checks the library's functions; prints one line per check and exits non-zero on a failure. */
#include <stdio.h>
#include <string.h>

#include "demo.h"

static int failures = 0;

static void check(int ok, const char *what) {
    printf("%s %s\n", ok ? "ok" : "FAIL", what);
    if (!ok) {
        failures++;
    }
}

int main(void) {
    demo_buf b = {0};
    check(demo_buf_push(&b, "hello, ") == 0 && demo_buf_push(&b, "world") == 0, "push");
    check(b.len == 12 && strcmp(b.data, "hello, world") == 0, "buffer content");
    check(demo_words(b.data) == 2, "word count");
    demo_buf_free(&b);
    check(demo_hash("") == 14695981039346656037ULL, "hash of the empty string");
    check(demo_hash("a") == 0xaf63dc4c8601ec8cULL, "hash of \"a\"");
    check(strlen(demo_version()) >= 5, "version");
    return failures == 0 ? 0 : 1;
}
