#include <ctype.h>

#include "demo.h"
#include "internal.h"

size_t demo_words(const char *s) {
    size_t n = 0;
    int in_word = 0;
    for (; *s != '\0'; s++) {
        if (isspace((unsigned char)*s)) {
            in_word = 0;
        } else if (!in_word) {
            in_word = 1;
            n++;
        }
    }
    return n;
}
