#include <stdlib.h>
#include <string.h>

#include "demo.h"
#include "internal.h"

int demo_buf_push(demo_buf *b, const char *s) {
    size_t n = strlen(s);
    if (b->len + n + 1 > b->cap) {
        size_t cap = demo_max(b->cap * DEMO_GROWTH, b->len + n + 1);
        char *data = realloc(b->data, cap);
        if (data == NULL) {
            return -1;
        }
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n + 1);
    b->len += n;
    return 0;
}

void demo_buf_free(demo_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}
