/* parse.h — the strict number parser that the library's variables and the
 * launcher's options share, so that both accept exactly the same values. */
#ifndef KTLSSHIM_PARSE_H
#define KTLSSHIM_PARSE_H

#include <stdbool.h>

/* Strict decimal: digits only, no sign, no spaces, at most max. */
static inline bool ks_parse_count(const char *s, long max, long *out)
{
    long v = 0;
    if (*s == '\0')
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        v = v * 10 + (*s - '0');
        if (v > max)
            return false;
    }
    *out = v;
    return true;
}

#endif
