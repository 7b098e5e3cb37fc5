/* connlog.c — the optional per-connection log, KTLSSHIM_CONN_LOG=/abs/path.
 *
 * Why: the exit record sums connections; an operator chasing one client's
 * slow download, or checking that every connection of a test got kTLS,
 * needs each connection's own line. One JSON object per TLS connection
 * whose handshake completed, written when libssl frees the SSL.
 *
 * Cost: off, one predictable branch at handshake (ks_connlog_enabled) and
 * none after it (the entry pointer stays NULL). On, at handshake one
 * getpeername and one clock read, per I/O call an add, and at the end one
 * fstat (the descriptor is still ours) and one write(2) of a line built on
 * the stack.
 *
 * The file is opened once, when the library loads (before the program can
 * drop privileges), O_APPEND and close-on-exec: forked processes share it
 * and their lines never interleave (one write each); an exec'd program
 * that has the library opens it afresh. If the program closes the
 * descriptor (daemons close every fd), the fstat check sees it and the log
 * stops with one line on stderr, rather than write into the program's
 * file that took the number. */
#include "stats/connlog.h"
#include "core/config.h"
#include "core/log.h"
#include "core/libc.h"
#include "stats/stats.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int ks_connlog_fd = -1;
static dev_t log_dev;
static ino_t log_ino;

void ks_connlog_open(void)
{
    const char *path = ks_config()->conn_log_path;
    if (!path[0])
        return;
    KS_SAVE_ERRNO;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        ks_log_error("KTLSSHIM_CONN_LOG=\"%.200s\" cannot be opened for appending: %s; "
                     "using no connection log",
                     path, strerror(errno));
        if (fd >= 0)
            close(fd);
    } else {
        log_dev = st.st_dev;
        log_ino = st.st_ino;
        __atomic_store_n(&ks_connlog_fd, fd, __ATOMIC_RELEASE);
    }
    KS_RESTORE_ERRNO;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void peer_of(int fd, char *out, size_t size)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char addr[INET6_ADDRSTRLEN];
    out[0] = '\0';
    if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &len) != 0)
        return;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        if (inet_ntop(AF_INET, &a->sin_addr, addr, sizeof addr))
            snprintf(out, size, "%s:%u", addr, ntohs(a->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        if (inet_ntop(AF_INET6, &a->sin6_addr, addr, sizeof addr))
            snprintf(out, size, "[%s]:%u", addr, ntohs(a->sin6_port));
    } else if (ss.ss_family == AF_UNIX) {
        snprintf(out, size, "unix");
    }
}

struct ks_connlog *ks_connlog_begin(const char *sni, int fd, int version, const char *cipher,
                                    bool resumed, const struct ks_connlog_dir *tx,
                                    const struct ks_connlog_dir *rx)
{
    if (!ks_connlog_enabled())
        return NULL;
    KS_SAVE_ERRNO;
    struct ks_connlog *l = calloc(1, sizeof *l);
    if (l) {
        l->start_ns = now_ns();
        l->version = version;
        l->resumed = resumed;
        l->tx = *tx;
        l->rx = *rx;
        snprintf(l->cipher, sizeof l->cipher, "%s", cipher ? cipher : "");
        peer_of(fd, l->peer, sizeof l->peer);
        snprintf(l->sni, sizeof l->sni, "%s", sni ? sni : "");
    }
    KS_RESTORE_ERRNO;
    return l;
}

/* ---- the line ---- */

struct line {
    char buf[4096];
    size_t len;
};

static void put(struct line *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct line *o, const char *fmt, ...)
{
    va_list ap;
    if (o->len >= sizeof o->buf)
        return;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->len, sizeof o->buf - o->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len += (size_t)n;
}

/* A JSON string, or null when s is empty. SNI comes from the client: every
 * byte outside printable ASCII, and the quote and backslash, is escaped. */
static void put_string(struct line *o, const char *s)
{
    if (!*s) {
        put(o, "null");
        return;
    }
    put(o, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            put(o, "\\%c", *p);
        else if (*p < 0x20 || *p >= 0x7f)
            put(o, "\\u%04x", *p);
        else
            put(o, "%c", *p);
    }
    put(o, "\"");
}

static const char *version_name(int v)
{
    switch (v) {
    case 0x0304:
        return "1.3";
    case 0x0303:
        return "1.2";
    case 0x0302:
        return "1.1";
    case 0x0301:
        return "1.0";
    default:
        return "other";
    }
}

static void put_dir(struct line *o, const char *name, const struct ks_connlog_dir *d, uint64_t ktls,
                    uint64_t user, const uint64_t *sendfile)
{
    put(o, ",\"%s\":{\"path\":\"%s\"", name, d->path);
    if (strcmp(d->path, "user") == 0)
        put(o, ",\"reason\":\"%s\"", ks_fallback_name((enum ks_fallback)d->reason));
    else
        put(o, ",\"offload\":\"%s\",\"offload_estimated\":%s", d->nic ? "nic" : "sw",
            d->estimated ? "true" : "false");
    put(o, ",\"bytes_ktls\":%llu,\"bytes_user\":%llu", (unsigned long long)ktls,
        (unsigned long long)user);
    if (sendfile)
        put(o, ",\"bytes_sendfile\":%llu", (unsigned long long)*sendfile);
    put(o, "}");
}

/* The descriptor still names the file we opened (the program may have
 * closed it and got the number back for a file of its own). */
static bool still_ours(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && st.st_dev == log_dev && st.st_ino == log_ino;
}

void ks_connlog_end(struct ks_connlog *l)
{
    if (!l)
        return;
    KS_SAVE_ERRNO;
    int fd = __atomic_load_n(&ks_connlog_fd, __ATOMIC_ACQUIRE);
    if (fd >= 0 && !still_ours(fd)) {
        /* One thread reports it; the others see -1 from now on. */
        if (__atomic_compare_exchange_n(&ks_connlog_fd, &fd, -1, false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
            ks_log_error("the connection log's descriptor %d was closed by the program; "
                         "KTLSSHIM_CONN_LOG is off for this process from now on",
                         fd);
        fd = -1;
    }
    if (fd >= 0) {
        struct line o = {.len = 0};
        uint64_t us = (now_ns() - l->start_ns) / 1000;
        put(&o, "{\"ktlsshim_conn\":1,\"time\":%lld,\"pid\":%d,\"peer\":", (long long)time(NULL),
            (int)getpid());
        put_string(&o, l->peer);
        put(&o, ",\"sni\":");
        put_string(&o, l->sni);
        put(&o, ",\"tls\":\"%s\",\"cipher\":", version_name(l->version));
        put_string(&o, l->cipher);
        put(&o, ",\"resumed\":%s,\"duration_us\":%llu", l->resumed ? "true" : "false",
            (unsigned long long)us);
        put_dir(&o, "tx", &l->tx, l->tx_ktls, l->tx_user, &l->tx_sendfile);
        put_dir(&o, "rx", &l->rx, l->rx_ktls, l->rx_user, NULL);
        put(&o, "}\n");
        /* The buffer holds any line: SNI is at most 255 bytes, 6 each
         * escaped. A truncated line would not be JSON: never written. */
        if (o.len < sizeof o.buf) {
            ssize_t n;
            do
                n = ks_libc()->write(fd, o.buf, o.len);
            while (n < 0 && errno == EINTR);
            if (n != (ssize_t)o.len)
                ks_log_debug("connection log write: %s", n < 0 ? strerror(errno) : "short");
        }
    }
    free(l);
    KS_RESTORE_ERRNO;
}
