/* ktls.c — the kernel side of kTLS, read-only except for one option:
 * - whether the tls ULP exists (/proc/sys/net/ipv4/tcp_available_ulp);
 * - software or NIC crypto per connection, from /proc/net/tls_stat: with no
 *   device-offloaded connection in the namespace (TlsCurrTxDevice = 0) a
 *   kTLS connection is certainly software, with no software one it is
 *   certainly NIC; otherwise the answer is a guess and says so. (inet_diag's
 *   TLS_INFO_TXCONF would be exact but needs CAP_NET_ADMIN.)
 * - TLS_TX_ZEROCOPY_RO;
 * - a bitmap of fds with kTLS TX, for counting plain sendfile(). */
#include "ktls.h"

#include <fcntl.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TLS_TX_ZEROCOPY_RO
#define TLS_TX_ZEROCOPY_RO 3
#endif

static ssize_t read_small_file(const char *path, char *buf, size_t n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t got = 0, r;
    while ((size_t)got < n - 1 && (r = read(fd, buf + got, n - 1 - (size_t)got)) > 0)
        got += r;
    close(fd);
    buf[got] = '\0';
    return got;
}

bool ks_ktls_kernel_has_tls(void)
{
    static int known_yes;        /* once there, the ULP stays there */
    static int64_t no_until_ms;  /* a "no" is trusted for a second: the
                                    module may be loaded meanwhile */
    if (__atomic_load_n(&known_yes, __ATOMIC_RELAXED))
        return true;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (now < __atomic_load_n(&no_until_ms, __ATOMIC_RELAXED))
        return false;
    KS_SAVE_ERRNO;
    char buf[256];
    bool yes = false;
    if (read_small_file("/proc/sys/net/ipv4/tcp_available_ulp", buf, sizeof buf) > 0)
        for (char *save, *tok = strtok_r(buf, " \n", &save); tok;
             tok = strtok_r(NULL, " \n", &save))
            if (strcmp(tok, "tls") == 0)
                yes = true;
    if (yes)
        __atomic_store_n(&known_yes, 1, __ATOMIC_RELAXED);
    else
        __atomic_store_n(&no_until_ms, now + 1000, __ATOMIC_RELAXED);
    KS_RESTORE_ERRNO;
    return yes;
}

static long stat_value(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = text; (p = strstr(p, name)); p += n)
        if ((p == text || p[-1] == '\n') && (p[n] == ' ' || p[n] == '\t'))
            return strtol(p + n, NULL, 10);
    return -1;
}

enum ks_offload ks_ktls_offload(int fd, bool tx, bool *estimated)
{
    (void)fd;
    KS_SAVE_ERRNO;
    char buf[2048];
    *estimated = true;
    enum ks_offload kind = KS_OFFLOAD_SW;
    if (read_small_file("/proc/net/tls_stat", buf, sizeof buf) > 0) {
        long dev = stat_value(buf, tx ? "TlsCurrTxDevice" : "TlsCurrRxDevice");
        long sw = stat_value(buf, tx ? "TlsCurrTxSw" : "TlsCurrRxSw");
        if (dev == 0) {
            *estimated = false;
        } else if (sw == 0 && dev > 0) {
            kind = KS_OFFLOAD_NIC;
            *estimated = false;
        }
    }
    KS_RESTORE_ERRNO;
    return kind;
}

int ks_ktls_set_zerocopy(int fd)
{
    int one = 1;
    return setsockopt(fd, SOL_TLS, TLS_TX_ZEROCOPY_RO, &one, sizeof one);
}

#define FD_BITS 65536
static uint64_t fd_bits[FD_BITS / 64];

void ks_ktls_fd_mark(int fd, bool on)
{
    if (fd < 0 || fd >= FD_BITS)
        return;
    uint64_t bit = 1ULL << (fd % 64);
    if (on)
        __atomic_fetch_or(&fd_bits[fd / 64], bit, __ATOMIC_RELAXED);
    else
        __atomic_fetch_and(&fd_bits[fd / 64], ~bit, __ATOMIC_RELAXED);
}

bool ks_ktls_fd_marked(int fd)
{
    if (fd < 0 || fd >= FD_BITS)
        return false;
    return __atomic_load_n(&fd_bits[fd / 64], __ATOMIC_RELAXED) & (1ULL << (fd % 64));
}
