/* log.c — formats a message into one "ktlsshim[pid]: ..." line and writes it
 * to stderr with a single write(2), so lines from concurrent workers never
 * interleave. Never touches stdout, never changes errno, never allocates. */
#include "core/common.h"
#include "core/libc.h"
#include "core/config.h"
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void ks_log_raw(const char *line, size_t len)
{
    KS_SAVE_ERRNO;
    while (len > 0) {
        ssize_t n = ks_libc()->write(STDERR_FILENO, line, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        line += n;
        len -= (size_t)n;
    }
    KS_RESTORE_ERRNO;
}

static void vlog(const char *fmt, va_list ap)
{
    KS_SAVE_ERRNO;
    char buf[1024];
    int head = snprintf(buf, sizeof buf, "ktlsshim[%d]: ", (int)getpid());
    int body = vsnprintf(buf + head, sizeof buf - (size_t)head - 1, fmt, ap);
    size_t len = (size_t)head + (body < 0 ? 0 : (size_t)body);
    if (len > sizeof buf - 2)
        len = sizeof buf - 2;
    buf[len++] = '\n';
    ks_log_raw(buf, len);
    KS_RESTORE_ERRNO;
}

void ks_log_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(fmt, ap);
    va_end(ap);
}

void ks_log_info(const char *fmt, ...)
{
    if (ks_config()->log_level < KS_LOG_INFO)
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(fmt, ap);
    va_end(ap);
}

void ks_log_debug(const char *fmt, ...)
{
    if (ks_config()->log_level < KS_LOG_DEBUG)
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(fmt, ap);
    va_end(ap);
}
