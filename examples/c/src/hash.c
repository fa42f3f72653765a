#include "demo.h"
#include "fnv.h"

unsigned long long demo_hash(const char *s) {
    unsigned long long h = DEMO_FNV_OFFSET;
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= DEMO_FNV_PRIME;
    }
    return h;
}
