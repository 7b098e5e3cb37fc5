/* io.c — the library's write, writev, send, sendto, sendmsg, and read,
 * readv, recv, recvfrom, recvmsg (and the _chk forms): the calls a
 * program's own code makes on the socket under its BIO. During a
 * handshake call they tell find.c which descriptor its BIO writes to (and,
 * after, which write carries what a "later" BIO took); once kTLS TX is on
 * under such a BIO, a write on its socket carries what framing.c holds for
 * it (a control record, the bytes held at the switch). read() notes the
 * ClientHellos a thread reads once a "later" BIO was found; the reads of a
 * socket whose receive may go to the kernel are watched, then framed
 * (rxframe.c). Until a
 * handshake call meets a program's own BIO each is one jump to libc's
 * function (bs.h); from then on one test and libc's function, from the one
 * table (core/libc.h). ks_io_send and ks_io_sendmsg are these hooks for the
 * library's own sends on a program's connection. */
#include "tls/biosock/bs.h"
#include "core/libc.h"

/* The slow path of every write hook: noting the descriptor for the watch,
 * or sending a pending control record. false: call the real one. */
static bool write_slow(int fd, const struct msghdr *m, int flags, ssize_t *ret)
{
    if (bs_watch.target)
        bs_watch_saw(fd);
    else if (bs_later.st)
        bs_later_check(fd, m);
    return bs_frame_write(fd, m, flags, ret);
}

/* write_slow, then what `later` needs to know of the result. */
static bool write_slow_later(int fd, const struct msghdr *m, int flags, ssize_t *ret)
{
    if (!write_slow(fd, m, flags, ret))
        return false;
    if (bs_later.st && bs_later.matched)
        bs_later_sent(*ret);
    return true;
}

/* A write with nothing to note or send differently. */
#define WRITE_FAST(fd) (KS_LIKELY(!bs_watch.target && !bs_later.st && !bs_fd_pending(fd)))

static size_t iov_total(const struct iovec *iov, size_t cnt)
{
    size_t n = 0;
    for (size_t i = 0; i < cnt; i++)
        n += iov[i].iov_len;
    return n;
}

/* After the real call on the slow path: what the watch needs to know. */
#define WATCH_AFTER(fd, r, n)                                                                      \
    do {                                                                                           \
        if (bs_watch.target)                                                                       \
            bs_watch_wrote((fd), (r), (n), errno);                                                 \
        else if (bs_later.st && bs_later.matched)                                                  \
            bs_later_sent(r);                                                                      \
    } while (0)
/* Each hook's pointer (the hook's one jump, bs.h): a stub that takes libc's
 * function from the one table and puts it there, libc's function until a
 * program's BIO is met, then the hook's watching function (bs_io_watch). */
#define HOOK_FIRST(name, params, args)                                                             \
    static ssize_t name##_first params;                                                            \
    static ssize_t(*name##_hook) params = name##_first;                                            \
    static ssize_t name##_first params                                                             \
    {                                                                                              \
        ssize_t(*f_) params = ks_libc()->name;                                                     \
        HOOK_SET(name##_hook, name##_first, f_);                                                   \
        return f_ args;                                                                            \
    }
HOOK_FIRST(write, (int fd, const void *buf, size_t n), (fd, buf, n))
HOOK_FIRST(writev, (int fd, const struct iovec *iov, int cnt), (fd, iov, cnt))
HOOK_FIRST(send, (int fd, const void *buf, size_t n, int flags), (fd, buf, n, flags))
HOOK_FIRST(sendto,
           (int fd, const void *buf, size_t n, int flags, const struct sockaddr *to,
            socklen_t tolen),
           (fd, buf, n, flags, to, tolen))
HOOK_FIRST(sendmsg, (int fd, const struct msghdr *msg, int flags), (fd, msg, flags))
HOOK_FIRST(read, (int fd, void *buf, size_t n), (fd, buf, n))
HOOK_FIRST(readv, (int fd, const struct iovec *iov, int cnt), (fd, iov, cnt))
HOOK_FIRST(recv, (int fd, void *buf, size_t n, int flags), (fd, buf, n, flags))
HOOK_FIRST(recvfrom,
           (int fd, void *buf, size_t n, int flags, struct sockaddr *from, socklen_t *fromlen),
           (fd, buf, n, flags, from, fromlen))
HOOK_FIRST(recvmsg, (int fd, struct msghdr *msg, int flags), (fd, msg, flags))
HOOK_FIRST(read_chk, (int fd, void *buf, size_t n, size_t cap), (fd, buf, n, cap))
HOOK_FIRST(recv_chk, (int fd, void *buf, size_t n, size_t cap, int flags), (fd, buf, n, cap, flags))
HOOK_FIRST(recvfrom_chk,
           (int fd, void *buf, size_t n, size_t cap, int flags, struct sockaddr *from,
            socklen_t *fromlen),
           (fd, buf, n, cap, flags, from, fromlen))
#undef HOOK_FIRST
/* libc's function, in a watching function: bs_io_watch made sure the table
 * was resolved before it put them in the hooks' pointers (HOOK_JUMP's
 * acquire sees it), so a load and no call. */
#define LIBC(name) (ks_libc_table.name)

/* Each write hook once a program's BIO was met: the fast test, then libc's
 * function, or the hook's slow path. */
__attribute__((noinline)) static ssize_t write_watched(int fd, const void *buf, size_t n)
{
    struct iovec iov = {(void *)buf, n};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    ssize_t r;
    if (write_slow_later(fd, &m, 0, &r))
        return r;
    r = LIBC(write)(fd, buf, n);
    WATCH_AFTER(fd, r, n);
    return r;
}

static ssize_t write_watching(int fd, const void *buf, size_t n)
{
    if (WRITE_FAST(fd))
        return LIBC(write)(fd, buf, n);
    return write_watched(fd, buf, n);
}

KS_EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
    return HOOK_JUMP(write_hook)(fd, buf, n);
}

__attribute__((noinline)) static ssize_t writev_watched(int fd, const struct iovec *iov, int cnt)
{
    struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)cnt};
    ssize_t r;
    if (write_slow_later(fd, &m, 0, &r))
        return r;
    r = LIBC(writev)(fd, iov, cnt);
    WATCH_AFTER(fd, r, iov_total(iov, (size_t)cnt));
    return r;
}

static ssize_t writev_watching(int fd, const struct iovec *iov, int cnt)
{
    if (WRITE_FAST(fd) || cnt < 0)
        return LIBC(writev)(fd, iov, cnt);
    return writev_watched(fd, iov, cnt);
}

KS_EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    return HOOK_JUMP(writev_hook)(fd, iov, cnt);
}

__attribute__((noinline)) static ssize_t send_watched(int fd, const void *buf, size_t n, int flags)
{
    struct iovec iov = {(void *)buf, n};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    ssize_t r;
    if (write_slow_later(fd, &m, flags, &r))
        return r;
    r = LIBC(send)(fd, buf, n, flags);
    WATCH_AFTER(fd, r, n);
    return r;
}

static ssize_t send_watching(int fd, const void *buf, size_t n, int flags)
{
    if (WRITE_FAST(fd))
        return LIBC(send)(fd, buf, n, flags);
    return send_watched(fd, buf, n, flags);
}

ssize_t ks_io_send(int fd, const void *buf, size_t n, int flags)
{
    return HOOK_JUMP(send_hook)(fd, buf, n, flags);
}

KS_EXPORT ssize_t send(int fd, const void *buf, size_t n, int flags)
{
    return ks_io_send(fd, buf, n, flags);
}

__attribute__((noinline)) static ssize_t sendto_watched(int fd, const void *buf, size_t n,
                                                        int flags, const struct sockaddr *to,
                                                        socklen_t tolen)
{
    struct iovec iov = {(void *)buf, n};
    struct msghdr m = {
        .msg_name = (void *)to, .msg_namelen = tolen, .msg_iov = &iov, .msg_iovlen = 1};
    ssize_t r;
    if (write_slow_later(fd, &m, flags, &r))
        return r;
    r = LIBC(sendto)(fd, buf, n, flags, to, tolen);
    WATCH_AFTER(fd, r, n);
    return r;
}

static ssize_t sendto_watching(int fd, const void *buf, size_t n, int flags,
                               const struct sockaddr *to, socklen_t tolen)
{
    if (WRITE_FAST(fd))
        return LIBC(sendto)(fd, buf, n, flags, to, tolen);
    return sendto_watched(fd, buf, n, flags, to, tolen);
}

KS_EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *to,
                         socklen_t tolen)
{
    return HOOK_JUMP(sendto_hook)(fd, buf, n, flags, to, tolen);
}

__attribute__((noinline)) static ssize_t sendmsg_watched(int fd, const struct msghdr *msg,
                                                         int flags)
{
    ssize_t r;
    if (write_slow_later(fd, msg, flags, &r))
        return r;
    r = LIBC(sendmsg)(fd, msg, flags);
    WATCH_AFTER(fd, r, iov_total(msg->msg_iov, msg->msg_iovlen));
    return r;
}

static ssize_t sendmsg_watching(int fd, const struct msghdr *msg, int flags)
{
    if (WRITE_FAST(fd) || !msg)
        return LIBC(sendmsg)(fd, msg, flags);
    return sendmsg_watched(fd, msg, flags);
}

ssize_t ks_io_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    return HOOK_JUMP(sendmsg_hook)(fd, msg, flags);
}

KS_EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    return ks_io_sendmsg(fd, msg, flags);
}

/* ---- the reads ----
 * Once a "later" BIO was found, read() notes the ClientHellos it brings
 * (find.c). A socket found under a program's BIO is watched (its reads
 * counted) and, once the own switch gave its receive to the kernel, framed
 * (rxframe.c): every read call must then pass here, so all of libc's that
 * read a socket are hooked. */

/* A read of a socket that is watched or framed. */
#define READ_FAST(fd) (KS_LIKELY(!bs_rx_fd(fd)))

/* After the real call on a watched socket: what it took is counted. */
#define RX_TOOK(fd, iov, cnt, r, flags) bs_rx_took((fd), (iov), (cnt), (r), (flags))

__attribute__((noinline)) static ssize_t read_noting(int fd, void *buf, size_t n)
{
    struct iovec iov = {buf, n};
    ssize_t r;
    if (bs_rx_fd(fd) && bs_rx_read(fd, &iov, 1, 0, &r))
        return r;
    r = LIBC(read)(fd, buf, n);
    RX_TOOK(fd, &iov, 1, r, 0);
    if (r < BS_SIG_MAX || !__atomic_load_n(&bs_hellos_on, __ATOMIC_RELAXED))
        return r;
    const uint8_t *b = buf;
    if (b[0] == 22 && b[1] == 3 && b[5] == 1) /* a handshake record, a ClientHello */
        bs_hello_note(fd, b);
    return r;
}

/* The flag is tested before the read (a tail call): a read already under way
 * in another thread when the first "later" BIO is found is not noted. */
static ssize_t read_watching(int fd, void *buf, size_t n)
{
    if (KS_LIKELY(!__atomic_load_n(&bs_hellos_on, __ATOMIC_RELAXED)) && READ_FAST(fd))
        return LIBC(read)(fd, buf, n);
    return read_noting(fd, buf, n);
}

KS_EXPORT ssize_t read(int fd, void *buf, size_t n)
{
    return HOOK_JUMP(read_hook)(fd, buf, n);
}

__attribute__((noinline)) static ssize_t read_chk_rx(int fd, void *buf, size_t n, size_t cap)
{
    struct iovec iov = {buf, n};
    ssize_t r;
    if (n <= cap && bs_rx_read(fd, &iov, 1, 0, &r)) /* beyond cap: glibc's check fails it */
        return r;
    r = LIBC(read_chk)(fd, buf, n, cap);
    RX_TOOK(fd, &iov, 1, r, 0);
    return r;
}

static ssize_t read_chk_watching(int fd, void *buf, size_t n, size_t cap)
{
    if (READ_FAST(fd))
        return LIBC(read_chk)(fd, buf, n, cap);
    return read_chk_rx(fd, buf, n, cap);
}

KS_EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t cap)
{
    return HOOK_JUMP(read_chk_hook)(fd, buf, n, cap);
}

__attribute__((noinline)) static ssize_t readv_rx(int fd, const struct iovec *iov, int cnt)
{
    ssize_t r;
    if (bs_rx_read(fd, iov, (size_t)cnt, 0, &r))
        return r;
    r = LIBC(readv)(fd, iov, cnt);
    RX_TOOK(fd, iov, (size_t)cnt, r, 0);
    return r;
}

static ssize_t readv_watching(int fd, const struct iovec *iov, int cnt)
{
    if (READ_FAST(fd) || cnt <= 0 || !iov)
        return LIBC(readv)(fd, iov, cnt);
    return readv_rx(fd, iov, cnt);
}

KS_EXPORT ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
    return HOOK_JUMP(readv_hook)(fd, iov, cnt);
}

__attribute__((noinline)) static ssize_t recv_rx(int fd, void *buf, size_t n, int flags)
{
    struct iovec iov = {buf, n};
    ssize_t r;
    if (bs_rx_read(fd, &iov, 1, flags, &r))
        return r;
    r = LIBC(recv)(fd, buf, n, flags);
    RX_TOOK(fd, &iov, 1, r, flags);
    return r;
}

static ssize_t recv_watching(int fd, void *buf, size_t n, int flags)
{
    if (READ_FAST(fd))
        return LIBC(recv)(fd, buf, n, flags);
    return recv_rx(fd, buf, n, flags);
}

KS_EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags)
{
    return HOOK_JUMP(recv_hook)(fd, buf, n, flags);
}

__attribute__((noinline)) static ssize_t recv_chk_rx(int fd, void *buf, size_t n, size_t cap,
                                                     int flags)
{
    struct iovec iov = {buf, n};
    ssize_t r;
    if (n <= cap && bs_rx_read(fd, &iov, 1, flags, &r))
        return r;
    r = LIBC(recv_chk)(fd, buf, n, cap, flags);
    RX_TOOK(fd, &iov, 1, r, flags);
    return r;
}

static ssize_t recv_chk_watching(int fd, void *buf, size_t n, size_t cap, int flags)
{
    if (READ_FAST(fd))
        return LIBC(recv_chk)(fd, buf, n, cap, flags);
    return recv_chk_rx(fd, buf, n, cap, flags);
}

KS_EXPORT ssize_t __recv_chk(int fd, void *buf, size_t n, size_t cap, int flags)
{
    return HOOK_JUMP(recv_chk_hook)(fd, buf, n, cap, flags);
}

/* A framed read names no sender (a TCP socket's is never given). */
static ssize_t no_name(ssize_t r, socklen_t *fromlen)
{
    if (r >= 0 && fromlen)
        *fromlen = 0;
    return r;
}

__attribute__((noinline)) static ssize_t recvfrom_rx(int fd, void *buf, size_t n, int flags,
                                                     struct sockaddr *from, socklen_t *fromlen)
{
    struct iovec iov = {buf, n};
    ssize_t r;
    if (bs_rx_read(fd, &iov, 1, flags, &r))
        return no_name(r, fromlen);
    r = LIBC(recvfrom)(fd, buf, n, flags, from, fromlen);
    RX_TOOK(fd, &iov, 1, r, flags);
    return r;
}

static ssize_t recvfrom_watching(int fd, void *buf, size_t n, int flags, struct sockaddr *from,
                                 socklen_t *fromlen)
{
    if (READ_FAST(fd))
        return LIBC(recvfrom)(fd, buf, n, flags, from, fromlen);
    return recvfrom_rx(fd, buf, n, flags, from, fromlen);
}

KS_EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *from,
                           socklen_t *fromlen)
{
    return HOOK_JUMP(recvfrom_hook)(fd, buf, n, flags, from, fromlen);
}

__attribute__((noinline)) static ssize_t recvfrom_chk_rx(int fd, void *buf, size_t n, size_t cap,
                                                         int flags, struct sockaddr *from,
                                                         socklen_t *fromlen)
{
    struct iovec iov = {buf, n};
    ssize_t r;
    if (n <= cap && bs_rx_read(fd, &iov, 1, flags, &r))
        return no_name(r, fromlen);
    r = LIBC(recvfrom_chk)(fd, buf, n, cap, flags, from, fromlen);
    RX_TOOK(fd, &iov, 1, r, flags);
    return r;
}

static ssize_t recvfrom_chk_watching(int fd, void *buf, size_t n, size_t cap, int flags,
                                     struct sockaddr *from, socklen_t *fromlen)
{
    if (READ_FAST(fd))
        return LIBC(recvfrom_chk)(fd, buf, n, cap, flags, from, fromlen);
    return recvfrom_chk_rx(fd, buf, n, cap, flags, from, fromlen);
}

KS_EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t cap, int flags,
                                 struct sockaddr *from, socklen_t *fromlen)
{
    return HOOK_JUMP(recvfrom_chk_hook)(fd, buf, n, cap, flags, from, fromlen);
}

__attribute__((noinline)) static ssize_t recvmsg_rx(int fd, struct msghdr *msg, int flags)
{
    ssize_t r;
    if (bs_rx_read(fd, msg->msg_iov, msg->msg_iovlen, flags, &r)) {
        if (r >= 0) { /* no sender, no ancillary data, nothing cut */
            msg->msg_namelen = 0;
            msg->msg_controllen = 0;
            msg->msg_flags = 0;
        }
        return r;
    }
    r = LIBC(recvmsg)(fd, msg, flags);
    RX_TOOK(fd, msg->msg_iov, msg->msg_iovlen, r, flags);
    return r;
}

static ssize_t recvmsg_watching(int fd, struct msghdr *msg, int flags)
{
    if (READ_FAST(fd) || !msg || (!msg->msg_iov && msg->msg_iovlen))
        return LIBC(recvmsg)(fd, msg, flags);
    return recvmsg_rx(fd, msg, flags);
}

KS_EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    return HOOK_JUMP(recvmsg_hook)(fd, msg, flags);
}

/* From now on every libc hook of this module watches (bs_own_bio_seen). */
void bs_io_watch(void)
{
    (void)ks_libc(); /* resolved (at load, normally): LIBC reads it */
    __atomic_store_n(&write_hook, write_watching, __ATOMIC_SEQ_CST);
    __atomic_store_n(&writev_hook, writev_watching, __ATOMIC_SEQ_CST);
    __atomic_store_n(&send_hook, send_watching, __ATOMIC_SEQ_CST);
    __atomic_store_n(&sendto_hook, sendto_watching, __ATOMIC_SEQ_CST);
    __atomic_store_n(&sendmsg_hook, sendmsg_watching, __ATOMIC_SEQ_CST);
    __atomic_store_n(&read_hook, read_watching, __ATOMIC_SEQ_CST);
    __atomic_store_n(&read_chk_hook, read_chk_watching, __ATOMIC_SEQ_CST);
    __atomic_store_n(&readv_hook, readv_watching, __ATOMIC_SEQ_CST);
    __atomic_store_n(&recv_hook, recv_watching, __ATOMIC_SEQ_CST);
    __atomic_store_n(&recv_chk_hook, recv_chk_watching, __ATOMIC_SEQ_CST);
    __atomic_store_n(&recvfrom_hook, recvfrom_watching, __ATOMIC_SEQ_CST);
    __atomic_store_n(&recvfrom_chk_hook, recvfrom_chk_watching, __ATOMIC_SEQ_CST);
    __atomic_store_n(&recvmsg_hook, recvmsg_watching, __ATOMIC_SEQ_CST);
}
