/* Helpers shared by the library's sources; not installed. */
#ifndef DEMO_INTERNAL_H
#define DEMO_INTERNAL_H

#include <stddef.h>

/* How much a buffer grows when it is full. */
#define DEMO_GROWTH 2

static inline size_t demo_max(size_t a, size_t b) { return a > b ? a : b; }

#endif
