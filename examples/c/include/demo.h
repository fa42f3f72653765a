/* demo: a tiny library of text helpers, built by orch's C example. */
#ifndef DEMO_H
#define DEMO_H

#include <stddef.h>

/* A growable byte buffer; zero-initialise it before the first push. */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
} demo_buf;

/* Appends a NUL-terminated string; returns 0, or -1 when out of memory. */
int demo_buf_push(demo_buf *b, const char *s);

/* Frees the buffer's memory and empties it. */
void demo_buf_free(demo_buf *b);

/* The 64-bit FNV-1a hash of a string. */
unsigned long long demo_hash(const char *s);

/* The number of whitespace-separated words in a string. */
size_t demo_words(const char *s);

/* The library's version, "MAJOR.MINOR.PATCH". */
const char *demo_version(void);

#endif
