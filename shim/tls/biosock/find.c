/* find.c — which TCP socket lies under a program's own BIO, the one its
 * program writes what libssl gives the BIO to.
 * While a thread is in a handshake call and inside BIO_write / BIO_flush on
 * a BIO chain that does not end in one of libcrypto's own descriptor BIOs,
 * the descriptors its write calls (write, writev, send, sendto, sendmsg)
 * use are noted on that BIO (ex_data). One TCP socket: found. Two, or not
 * TCP: not found, the connection stays in user space. A BIO call that
 * reported everything taken while its last write on the socket was short
 * (or EAGAIN) means the program keeps bytes of its own to send later: no
 * kTLS under it either (bio_busy), since those bytes would reach a kernel
 * that encrypts them.
 * None (h2o: its BIO appends to a buffer its event loop writes with writev
 * after the handshake call returns): the first bytes the BIO took (a
 * ServerHello, 32 random bytes in it) are remembered on the thread, and the
 * next write on the thread that starts with exactly them names the socket
 * ("later"). Memory BIOs are never followed. TLS 1.3 asks to switch in the
 * first handshake call, before anything left: once a "later" BIO has been
 * found in the process, read() notes the ClientHellos a thread reads, and
 * the first bytes libssl reads through the program's BIO name the socket
 * (before that: bio_no_fd). */
#include "tls/biosock/bs.h"
#include "core/log.h"

#include <netinet/in.h>
#include <string.h>
#include <stdlib.h>
#include <sys/socket.h>

__thread int ks_biosock_handshaking __attribute__((tls_model("initial-exec")));
__thread bool ks_biosock_rx_fresh __attribute__((tls_model("initial-exec")));

static bool is_tcp(int fd)
{
    int v = 0;
    socklen_t len = sizeof v;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) != 0 || v != SOCK_STREAM)
        return false;
    len = sizeof v;
    return getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &len) == 0 && v == IPPROTO_TCP;
}

/* ---- the watch: which descriptor a BIO call writes to ---- */

__thread struct bs_watch bs_watch __attribute__((tls_model("initial-exec")));

/* ---- later: a BIO that takes bytes and writes nothing during the call ----
 * h2o's BIO appends what libssl gives it to a buffer of h2o's, and h2o's
 * event loop writes that buffer (writev) after the handshake call returns.
 * The thread remembers the first bytes such a BIO took while its socket is
 * unknown; the next write on the thread that starts with exactly those
 * bytes (a ServerHello: 32 random bytes among them) names the socket. Until
 * a match, every write on the thread takes the slow path: given up after
 * BS_LATER_TRIES writes, or when another BIO takes its place. */
int bs_hellos_on; /* atomic: a "later" BIO was found: read() notes ClientHellos */

__thread struct bs_later bs_later __attribute__((tls_model("initial-exec")));

void bs_later_drop(void)
{
    struct bs_bio *st = bs_later.st;
    bs_later.st = NULL;
    if (st)
        bs_bio_unref(st);
}

static void later_set(struct bs_bio *st, const uint8_t *sig, uint8_t len)
{
    if (bs_later.st == st)
        return; /* the first bytes not seen leaving are still the ones known */
    bs_later_drop();
    __atomic_add_fetch(&st->refs, 1, __ATOMIC_ACQ_REL);
    bs_later.st = st;
    bs_later.tries = 0;
    bs_later.matched = false;
    bs_later.sig_len = len;
    memcpy(bs_later.sig, sig, len);
}

/* The bytes of an iovec array start with bs_later.sig. */
static bool later_matches(const struct iovec *iov, size_t cnt)
{
    size_t have = 0;
    for (size_t i = 0; i < cnt && have < bs_later.sig_len; i++) {
        size_t l = iov[i].iov_len;
        if (l > (size_t)bs_later.sig_len - have)
            l = bs_later.sig_len - have;
        if (l && memcmp(iov[i].iov_base, bs_later.sig + have, l) != 0)
            return false;
        have += l;
    }
    return have == bs_later.sig_len;
}

/* A write on fd outside any BIO call, with later set: is it the one? When
 * it is, bs_later_sent follows with its result. Logs nothing (it runs
 * inside the program's write). */
void bs_later_check(int fd, const struct msghdr *m)
{
    struct bs_bio *st = bs_later.st;
    if (bs_later.matched) /* a write from a signal handler, in the middle */
        return;
    KS_SAVE_ERRNO;
    if (__atomic_load_n(&st->orphan, __ATOMIC_ACQUIRE) || st->ambiguous ||
        (st->fd >= 0 && (!st->by_later || st->tx_asked))) {
        bs_later_drop();
    } else if ((st->fd >= 0 && st->fd != fd) || !later_matches(m->msg_iov, m->msg_iovlen)) {
        if (++bs_later.tries >= BS_LATER_TRIES)
            bs_later_drop();
    } else {
        bs_later.matched = true;
        if (st->fd >= 0) {
            /* known already (its ClientHello): the bytes are counted */
        } else if (is_tcp(fd)) {
            st->fd = fd;
            st->by_later = true;
            st->rx_id = bs_rx_watch(fd);
        } else {
            st->ambiguous = true;
        }
    }
    KS_RESTORE_ERRNO;
}

/* The write bs_later_check matched returned r: its bytes are no longer the
 * program's to send. */
void bs_later_sent(ssize_t r)
{
    struct bs_bio *st = bs_later.st;
    if (!st)
        return;
    KS_SAVE_ERRNO;
    int fd = st->fd;
    bool found = !st->ambiguous;
    if (found)
        __atomic_store_n(&bs_hellos_on, 1, __ATOMIC_RELAXED);
    if (r > 0 && found) {
        /* Exactly what it took, in one write: from here on, every byte it
         * takes is known until libssl switches. */
        st->precise = (uint64_t)r == st->unsent;
        st->held_len = 0;
        st->unsent -= (uint64_t)r < st->unsent ? (uint64_t)r : st->unsent;
    }
    bs_later_drop();
    if (found)
        ks_log_debug("fd %d: the program's BIO wrote nothing during the handshake call; its "
                     "bytes left later, on this socket",
                     fd);
    KS_RESTORE_ERRNO;
}

/* ---- the ClientHello: a "later" BIO's socket before anything left ----
 * Over TLS 1.3 libssl asks to switch in the first handshake call, before h2o
 * has written a byte. But h2o read() the ClientHello from its socket just
 * before, and libssl reads the same bytes through h2o's BIO. Once a "later"
 * BIO has been found in the process, read() keeps, per thread, the first
 * bytes of the last few reads that open a ClientHello record (a load and a
 * test per read() until then), and the first bytes libssl reads through a
 * program's BIO during a handshake call are looked up there. */
#define BS_HELLOS 4
static __thread struct {
    int fd;
    bool used;
    uint8_t head[BS_SIG_MAX];
} hellos[BS_HELLOS] __attribute__((tls_model("initial-exec")));
static __thread unsigned hellos_next __attribute__((tls_model("initial-exec")));
static __thread struct {
    BIO *bio; /* the program's BIO libssl reads from */
    uint8_t len;
    uint8_t head[BS_SIG_MAX];
} rx_seen __attribute__((tls_model("initial-exec")));

void bs_hello_note(int fd, const uint8_t *b)
{
    unsigned i = hellos_next++ % BS_HELLOS;
    hellos[i].fd = fd;
    hellos[i].used = true;
    memcpy(hellos[i].head, b, BS_SIG_MAX);
}

/* libssl read n bytes at p through b, in a handshake call. */
void bs_rx_saw(BIO *b, const void *p, int n)
{
    BIO *end = bs_chain_end(b);
    if (!end || bs_libcrypto_bio(end))
        return;
    if (ks_biosock_rx_fresh || rx_seen.bio != end) {
        ks_biosock_rx_fresh = false;
        rx_seen.bio = end;
        rx_seen.len = 0;
    }
    if (rx_seen.len >= BS_SIG_MAX)
        return;
    uint8_t l = BS_SIG_MAX - rx_seen.len;
    if ((unsigned)n < l)
        l = (uint8_t)n;
    memcpy(rx_seen.head + rx_seen.len, p, l);
    rx_seen.len += l;
    if (rx_seen.len < BS_SIG_MAX || bs_memory_bio(end))
        return;
    struct bs_bio *st = bs_bio_state(end);
    if (st && (st->fd >= 0 || st->ambiguous || st->tx_asked))
        return;
    int fd = -1;
    for (unsigned i = 0; i < BS_HELLOS; i++) {
        if (hellos[i].used && memcmp(hellos[i].head, rx_seen.head, BS_SIG_MAX) == 0) {
            hellos[i].used = false;
            fd = hellos[i].fd;
            break;
        }
    }
    if (fd < 0 || !is_tcp(fd) || !(st = bs_bio_state_make(end)) || st->fd >= 0 || st->ambiguous)
        return;
    st->fd = fd;
    st->by_later = true;
    st->rx_id = bs_rx_watch(fd);
    st->precise = st->unsent == 0; /* nothing taken yet: all it takes is copied */
    st->held_len = 0;
    ks_log_debug("fd %d: found under the program's BIO by the ClientHello it read", fd);
}

/* Starts watching the chain under b for this call; false if already
 * watching (a nested call) or nothing to watch. */
bool bs_watch_begin(BIO *b)
{
    if (bs_watch.target || !b || !api_ready())
        return false;
    BIO *end = bs_chain_end(b);
    if (!end || bs_libcrypto_bio(end))
        return false;
    if (!__atomic_load_n(&bs_watching, __ATOMIC_RELAXED) && !bs_memory_bio(end))
        bs_own_bio_seen(); /* found here first: a BIO under no SSL's own ones */
    struct bs_bio *st = bs_bio_state(end);
    if (st && (st->ambiguous || st->tx_on))
        return false;
    bs_watch.target = end;
    bs_watch.fd = -1;
    bs_watch.multi = false;
    bs_watch.last_short = false;
    bs_watch.queued = false;
    bs_watch.handed = 0;
    bs_watch.sig_len = 0;
    return true;
}

/* A copy of what a "later" BIO takes once its socket is known, up to the
 * switch point: the bytes its program must send before kTLS goes in. */
static void held_add(struct bs_bio *st, const void *p, int n)
{
    uint8_t *grown;
    if (st->held_over || (size_t)st->held_len + (size_t)n > BS_HELD_MAX ||
        !(grown = realloc(st->held, (size_t)st->held_len + (size_t)n))) {
        st->held_over = true;
        return;
    }
    st->held = grown;
    memcpy(st->held + st->held_len, p, (size_t)n);
    st->held_len += (uint32_t)n;
}

/* The program's BIO (the watched chain end) took n bytes at p. */
void bs_watch_handed(const void *p, int n)
{
    struct bs_bio *st = bs_bio_state(bs_watch.target);
    if (st && st->by_later && st->precise && !st->tx_asked)
        held_add(st, p, n);
    bs_watch.handed += (uint64_t)n;
    if (bs_watch.sig_len < BS_SIG_MAX) {
        uint8_t l = BS_SIG_MAX - bs_watch.sig_len;
        if ((unsigned)n < l)
            l = (uint8_t)n;
        memcpy(bs_watch.sig + bs_watch.sig_len, p, l);
        bs_watch.sig_len += l;
    }
}

/* The watched call wrote nothing, yet the program's BIO took bytes: they
 * wait in the program's own buffers (h2o) or in a memory BIO. */
static void watch_end_deferred(BIO *end)
{
    if (!bs_watch.handed || bs_memory_bio(end))
        return;
    struct bs_bio *st = bs_bio_state_make(end);
    if (!st)
        return;
    st->unsent += bs_watch.handed;
    if ((st->fd < 0 || (st->by_later && !st->tx_asked)) && !st->ambiguous &&
        bs_watch.sig_len >= BS_SIG_MIN)
        later_set(st, bs_watch.sig, bs_watch.sig_len);
}

void bs_watch_end(void)
{
    BIO *end = bs_watch.target;
    bs_watch.target = NULL;
    if (bs_watch.fd < 0 && !bs_watch.multi) {
        KS_SAVE_ERRNO;
        watch_end_deferred(end);
        KS_RESTORE_ERRNO;
        return;
    }
    KS_SAVE_ERRNO;
    struct bs_bio *st = bs_bio_state_make(end);
    if (st && bs_later.st == st)
        bs_later_drop(); /* it writes during its calls: the watch knows its socket */
    if (st)
        st->precise = false; /* bytes left during a call: unsent is not exact */
    if (st && bs_watch.queued && !st->queued) {
        ks_log_debug("fd %d: the program's BIO took bytes its socket did not: it buffers "
                     "output of its own, no kTLS under it",
                     bs_watch.fd);
        st->queued = true;
    }
    if (st) {
        if (bs_watch.multi || (st->fd >= 0 && st->fd != bs_watch.fd) || !is_tcp(bs_watch.fd)) {
            if (!st->ambiguous)
                ks_log_debug("the program's BIO writes to %s: no kTLS under it",
                             bs_watch.multi || st->fd >= 0 ? "more than one descriptor"
                                                           : "a descriptor that is not TCP");
            st->ambiguous = true;
        } else if (st->fd != bs_watch.fd) {
            st->fd = bs_watch.fd;
            st->rx_id = bs_rx_watch(st->fd); /* before the client's Finished can come */
        }
    }
    KS_RESTORE_ERRNO;
}

/* A write on fd during the watch returned r for n bytes asked. */
void bs_watch_wrote(int fd, ssize_t r, size_t n, int err)
{
    if (fd == bs_watch.fd)
        bs_watch.last_short =
            r < 0 ? (err == EAGAIN || err == EWOULDBLOCK || err == EINTR) : (size_t)r < n;
}
