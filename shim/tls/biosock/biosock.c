/* biosock.c — kTLS TX for programs whose TLS I/O goes through a BIO of their
 * own (Apache mod_ssl, HAProxy, h2o): their BIO feeds their own buffers and
 * event loop, which write to an ordinary TCP socket, so libssl's kTLS
 * controls (BIO_CTRL_SET_KTLS, GET_KTLS_SEND, SET_KTLS_TX_SEND_CTRL_MSG) get
 * "no" and libssl stays in user space. Their bytes must keep going through
 * their code, in order, for their buffering and EAGAIN bookkeeping.
 *
 * 1. Finding the socket: while a thread is in a handshake call and inside
 *    BIO_write / BIO_flush on a BIO chain that does not end in one of
 *    libcrypto's own descriptor BIOs, the descriptors its write calls
 *    (write, writev, send, sendto, sendmsg) use are noted on that BIO
 *    (ex_data). One TCP socket: found. Two, or not TCP: not found, the
 *    connection stays in user space. A BIO call that reported everything
 *    taken while its last write on the socket was short (or EAGAIN) means
 *    the program keeps bytes of its own to send later: no kTLS under it
 *    either (bio_busy), since those bytes would reach a kernel that
 *    encrypts them.
 *    None (h2o: its BIO appends to a buffer its event loop writes with
 *    writev after the handshake call returns): the first bytes the BIO took
 *    (a ServerHello, 32 random bytes in it) are remembered on the thread,
 *    and the next write on the thread that starts with exactly them names
 *    the socket ("later"). Memory BIOs are never followed. TLS 1.3 asks to
 *    switch in the first handshake call, before anything left: once a
 *    "later" BIO has been found in the process, read() notes the
 *    ClientHellos a thread reads, and the first bytes libssl reads through
 *    the program's BIO name the socket (before that: bio_no_fd).
 * 2. Switching TX: libssl flushes the BIO and then asks BIO_CTRL_SET_KTLS
 *    with the kernel's crypto info. If their flush left nothing pending
 *    (BIO_CTRL_WPENDING), the library attaches the tls ULP and TLS_TX on
 *    that socket, and answers yes, then GET_KTLS_SEND yes: libssl then
 *    writes plaintext through their BIO and the kernel encrypts it.
 *    A "later" BIO always still holds bytes then (TLS 1.2: the
 *    ChangeCipherSpec). When the library knows them to the byte (the first
 *    write carried all the BIO had taken; what it took since is copied),
 *    it answers yes, notes them on the socket as a first segment with the
 *    key, and their next writes send exactly those bytes (checked against
 *    the copy: a mismatch fails the write, EIO, never sends plaintext);
 *    TLS_TX goes in right after, the key is wiped. Not known to the byte:
 *    bio_busy.
 * 3. Control records (TLS 1.2 Finished, TLS 1.3 tickets, alerts such as
 *    close_notify): libssl flushes, sets SET_KTLS_TX_SEND_CTRL_MSG and
 *    writes the record's payload with BIO_write. The length of that write is
 *    noted on the socket as "the next n bytes are a record of type t"; their
 *    next write calls on it send those n bytes (no more: a short write,
 *    which their code handles like any other) with sendmsg and a
 *    TLS_SET_RECORD_TYPE cmsg. The socket's identity (st_dev, st_ino) is
 *    checked, so a pending note never touches a reused descriptor.
 * 4. RX is not done: their BIOs read ahead into their own buffers (Apache's
 *    brigades, HAProxy's channel buffer), so at the switch point bytes of
 *    the next records may already be in user space where the kernel cannot
 *    see them; and after TLS_RX their plain read()/recv() would fail with
 *    EIO on every control record (close_notify, tickets, key updates).
 *    Reason bio_rx.
 * 5. Which chains are whose: bioproof.c, by the BIO's method. libssl's
 *    BIO_CTRL_SET_KTLS reaches libcrypto only under a chain proven to be
 *    its socket BIO; under a program's own BIO this file answers (TX) or
 *    says no (RX); under anything else (a filter of the program's over
 *    libcrypto's socket BIO) no, in every process (bio_unproven). A copy
 *    of libcrypto's socket method with the program's own read and write
 *    (PostgreSQL) is the program's: libcrypto's ctrl would switch the
 *    socket while the program's reads and writes know nothing of kTLS.
 *
 * Cost: until a handshake call meets a program's own BIO (nginx, Python,
 * s_server: libcrypto's socket BIOs; asyncio: memory BIOs) nothing of this
 * can apply, and each hook (BIO_write, BIO_read, the libc writes and read)
 * is one indirect jump to the real function; BIO_ctrl one test of the
 * command first (BIO_CTRL_SET_KTLS is always checked: 5. above). From then
 * on: two thread-local tests and one bitmap test per write call, a load and a test
 * per read() and BIO_read, a few tests on the command per BIO_ctrl. While a
 * thread follows a "later" BIO, its writes compare their first bytes (at
 * most BS_LATER_TRIES writes). */
#define KS_HOOKS_BIO
#include "tls/ossl/hooks.h" /* first: the hook bodies' names */
#include "tls/biosock/biosock.h"
#include "tls/bioproof.h"
#include "core/config.h"
#include "kernel/ktls.h"
#include "core/log.h"
#include "tls/ossl/api.h"
#include "core/libc.h"
#include "tls/ossl/sym.h"

#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif

/* libcrypto's internal controls (include/internal/bio.h in OpenSSL 3). */
#define KS_BIO_CTRL_SET_KTLS 72
#define KS_BIO_CTRL_SET_KTLS_TX_SEND_CTRL_MSG 74
#define KS_BIO_CTRL_CLEAR_KTLS_TX_CTRL_MSG 75

__thread int ks_biosock_handshaking __attribute__((tls_model("initial-exec")));
__thread bool ks_biosock_rx_fresh __attribute__((tls_model("initial-exec")));

/* ---- libcrypto: biosock.c's block of the one table (tls/ossl/api.c) ---- */

/* This library's own table: declared as such, a call through it is one
 * instruction (no load of its address first). */
extern struct ks_ossl_api ks_ossl_api __attribute__((visibility("hidden")));
#define bs_api ks_ossl_api.bio
#define api_ready ks_ossl_bio_ready
#define BS_RESOLVE(field, name) ks_ossl_bio_sym((void **)&bs_api.field, name)

static int bs_bio_idx = -1; /* BIO ex_data: struct bs_bio */
/* Fork: see config.c's cfg_once (a child runs an interrupted once again). */
static pthread_once_t bs_idx_once = PTHREAD_ONCE_INIT;
static int bs_any_tx; /* atomic: some BIO got kTLS TX from us */

/* ---- per-socket notes: pending control records ---- */

#define BS_FD_MAX 65536
#define BS_SEGS 4
#define BS_SIG_MAX 48     /* record and handshake headers, version, random */
#define BS_SIG_MIN 32     /* fewer bytes known: too weak to name a socket */
#define BS_LATER_TRIES 64 /* writes on a thread before `later` gives up */
#define BS_HELD_MAX 16384 /* bytes a "later" BIO may hold at the switch point */

/* Segment types besides TLS record types (20-23). BS_SEG_HELD: bytes the
 * program still held when libssl switched; they go out as they are, then
 * TLS_TX goes in. BS_SEG_BROKEN: TLS_TX failed after libssl was told yes;
 * the plaintext behind must never leave, so every write fails. */
#define BS_SEG_HELD 0
#define BS_SEG_BROKEN 255

/* The kernel's crypto info, any cipher the library passes on. */
union bs_key {
    struct tls12_crypto_info_aes_gcm_128 gcm128;
    struct tls12_crypto_info_aes_gcm_256 gcm256;
    struct tls12_crypto_info_aes_ccm_128 ccm128;
#ifdef TLS_CIPHER_CHACHA20_POLY1305
    struct tls12_crypto_info_chacha20_poly1305 chacha;
#endif
};

/* A switch waiting for the bytes the program held to leave. */
struct bs_deferred {
    union bs_key key; /* secret: wiped when installed or dropped */
    socklen_t key_len;
    uint32_t off, len; /* bytes[] sent so far, and in all */
    uint8_t bytes[];   /* exactly what must leave first */
};

struct bs_fd {
    dev_t dev;
    ino_t ino;
    uint8_t nseg;
    struct {
        uint8_t type;
        uint32_t left;
    } seg[BS_SEGS];               /* in stream order */
    struct bs_deferred *deferred; /* with a BS_SEG_HELD segment first */
};

static void deferred_free(struct bs_deferred *d)
{
    if (!d)
        return;
    explicit_bzero(&d->key, sizeof d->key);
    free(d);
}

/* Nothing is pending on f any more: its key, if any, goes. */
static void fd_forget(struct bs_fd *f)
{
    struct bs_deferred *d = f->deferred;
    f->deferred = NULL;
    deferred_free(d);
}
static struct bs_fd *bs_fds;                /* BS_FD_MAX entries, made on first use */
static uint64_t bs_pending[BS_FD_MAX / 64]; /* bit: bs_fds[fd] has segments */
static int bs_pending_fds; /* atomic: at least the bits set in bs_pending (0: none) */

/* One load per write call while no socket has a note (the fast path). */
static inline bool fd_pending(int fd)
{
    return __atomic_load_n(&bs_pending_fds, __ATOMIC_RELAXED) && (unsigned)fd < BS_FD_MAX &&
           (__atomic_load_n(&bs_pending[fd / 64], __ATOMIC_RELAXED) & (1ULL << (fd % 64)));
}

/* The count goes up before a bit is set and down after one is cleared: a
 * write that can see a bit sees the count. */
static void fd_set_pending(int fd, bool on)
{
    uint64_t bit = 1ULL << (fd % 64);
    if (on) {
        __atomic_add_fetch(&bs_pending_fds, 1, __ATOMIC_RELAXED);
        if (__atomic_fetch_or(&bs_pending[fd / 64], bit, __ATOMIC_RELAXED) & bit)
            __atomic_sub_fetch(&bs_pending_fds, 1, __ATOMIC_RELAXED); /* it was set */
    } else if (__atomic_fetch_and(&bs_pending[fd / 64], ~bit, __ATOMIC_RELAXED) & bit) {
        __atomic_sub_fetch(&bs_pending_fds, 1, __ATOMIC_RELAXED);
    }
}

static struct bs_fd *fd_table(void)
{
    struct bs_fd *t = __atomic_load_n(&bs_fds, __ATOMIC_ACQUIRE);
    if (t)
        return t;
    t = calloc(BS_FD_MAX, sizeof *t); /* untouched pages stay unmapped */
    if (!t)
        return NULL;
    struct bs_fd *expected = NULL;
    if (!__atomic_compare_exchange_n(&bs_fds, &expected, t, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        free(t);
        t = expected;
    }
    return t;
}

static bool same_socket(int fd, const struct bs_fd *f)
{
    struct stat st;
    return fstat(fd, &st) == 0 && st.st_dev == f->dev && st.st_ino == f->ino;
}

/* The next n bytes written to fd (after those already noted) are the
 * payload of one record of type `type`. */
static void ctrl_note(int fd, uint8_t type, size_t n)
{
    struct bs_fd *t = fd_table();
    struct stat st;
    if (!t || (unsigned)fd >= BS_FD_MAX || n == 0 || fstat(fd, &st) != 0)
        return;
    struct bs_fd *f = &t[fd];
    if (!fd_pending(fd) || f->dev != st.st_dev || f->ino != st.st_ino) {
        fd_forget(f);
        f->nseg = 0;
        f->dev = st.st_dev;
        f->ino = st.st_ino;
    }
    if (f->nseg && f->seg[f->nseg - 1].type == type) {
        f->seg[f->nseg - 1].left += (uint32_t)n;
    } else if (f->nseg < BS_SEGS) {
        f->seg[f->nseg].type = type;
        f->seg[f->nseg].left = (uint32_t)n;
        f->nseg++;
    } else {
        /* libssl flushes before each control record: cannot happen. */
        ks_log_error("fd %d: more than %d control records queued in the program's buffers; "
                     "merged into the last one",
                     fd, BS_SEGS);
        f->seg[f->nseg - 1].left += (uint32_t)n;
    }
    fd_set_pending(fd, true);
}

/* n bytes noted last were not taken by the program's BIO after all. */
static void ctrl_unnote(int fd, size_t n)
{
    if (!fd_pending(fd) || !bs_fds)
        return;
    struct bs_fd *f = &bs_fds[fd];
    while (n && f->nseg) {
        uint32_t *left = &f->seg[f->nseg - 1].left;
        size_t d = n < *left ? n : *left;
        *left -= (uint32_t)d;
        n -= d;
        if (!*left)
            f->nseg--;
    }
    if (!f->nseg) {
        fd_forget(f);
        fd_set_pending(fd, false);
    }
}

/* n bytes of the first segment went out. */
static void ctrl_sent(struct bs_fd *f, int fd, size_t n)
{
    f->seg[0].left -= (uint32_t)n;
    if (f->seg[0].left)
        return;
    memmove(&f->seg[0], &f->seg[1], sizeof f->seg[0] * (BS_SEGS - 1));
    if (!--f->nseg)
        fd_set_pending(fd, false);
}

static void fd_break(struct bs_fd *f, int fd);

/* ---- per-BIO state ---- */

struct bs_bio {
    int fd;          /* the socket seen under it, -1 none */
    bool ambiguous;  /* more than one socket, or not TCP */
    bool queued;     /* it said "all written" after a short write: the
                        program keeps bytes of its own to send later */
    bool tx_on;      /* kTLS TX installed by us on fd */
    uint8_t reason;  /* enum ks_fallback, when SET_KTLS was refused */
    bool by_later;   /* fd found after the handshake call, by the bytes (h2o) */
    uint64_t unsent; /* bytes it took during handshake calls without writing
                        anything, not yet seen leaving on fd (an upper bound) */
    int refs;        /* atomic: the BIO's ex_data, plus a thread's `later` */
    bool orphan;     /* the BIO is gone; only a `later` still holds this */
    bool precise;    /* by_later, and unsent is exact: all it took since
                        unsent was last 0 is in held */
    bool held_over;  /* more than BS_HELD_MAX of it */
    bool tx_asked;   /* libssl asked to switch TX: nothing more to copy */
    uint32_t held_len;
    uint8_t *held;
};

static void bio_state_unref(struct bs_bio *st)
{
    if (__atomic_sub_fetch(&st->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        free(st->held);
        free(st);
    }
}

static void bio_state_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                           void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    struct bs_bio *st = ptr;
    if (!st)
        return;
    if (st->tx_on && fd_pending(st->fd) && bs_fds && same_socket(st->fd, &bs_fds[st->fd])) {
        if (bs_fds[st->fd].deferred) /* plaintext may wait behind the held bytes */
            fd_break(&bs_fds[st->fd], st->fd);
        else
            ctrl_unnote(st->fd, SIZE_MAX); /* never flushed: nothing left to mark */
    }
    __atomic_store_n(&st->orphan, true, __ATOMIC_RELEASE);
    bio_state_unref(st);
}

static void make_index(void)
{
    bs_bio_idx = bs_api.get_ex_new_index(CRYPTO_EX_INDEX_BIO, 0, NULL, NULL, ks_ex_dup_keep_own,
                                         bio_state_free);
}

static struct bs_bio *bio_state(const BIO *b)
{
    if (__atomic_load_n(&bs_bio_idx, __ATOMIC_ACQUIRE) < 0 || !b)
        return NULL;
    return bs_api.get_ex_data(b, bs_bio_idx);
}

static struct bs_bio *bio_state_make(BIO *b)
{
    pthread_once(&bs_idx_once, make_index);
    struct bs_bio *st = bio_state(b);
    if (st || bs_bio_idx < 0 || !(st = calloc(1, sizeof *st)))
        return st;
    st->fd = -1;
    st->refs = 1;
    if (!bs_api.set_ex_data(b, bs_bio_idx, st)) {
        free(st);
        return NULL;
    }
    return st;
}

/* A chain end that is libcrypto's own BIO (socket, fd, connect, accept,
 * datagram, memory, pair: by its method, bioproof.c), not the program's:
 * nothing for this file to watch under it. A program's BIO may carry a
 * socket type and even libcrypto's name and ctrl (PostgreSQL's is a copy
 * of BIO_s_socket's method with its own read and write): it is the
 * program's. */
static bool libcrypto_socket_bio(BIO *end)
{
    return !ks_bio_end_is_programs(end);
}

/* The BIO at the end of the chain (libssl puts a buffering BIO on top of
 * the program's during the handshake). */
static BIO *chain_end(BIO *b)
{
    for (int i = 0; b && i < 16; i++) {
        BIO *n = bs_api.next(b);
        if (!n)
            return b;
        b = n;
    }
    return b;
}

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

static __thread struct {
    BIO *target; /* the chain end being watched, NULL when none */
    int fd;
    bool multi;
    bool last_short; /* the last write on fd sent less than asked (or EAGAIN) */
    bool queued;
    uint64_t handed; /* bytes the program's BIO took in this call */
    uint8_t sig_len; /* the first of them, to know them again */
    uint8_t sig[BS_SIG_MAX];
} watch __attribute__((tls_model("initial-exec")));

/* ---- later: a BIO that takes bytes and writes nothing during the call ----
 * h2o's BIO appends what libssl gives it to a buffer of h2o's, and h2o's
 * event loop writes that buffer (writev) after the handshake call returns.
 * The thread remembers the first bytes such a BIO took while its socket is
 * unknown; the next write on the thread that starts with exactly those
 * bytes (a ServerHello: 32 random bytes among them) names the socket. Until
 * a match, every write on the thread takes the slow path: given up after
 * BS_LATER_TRIES writes, or when another BIO takes its place. */
static int bs_hellos_on; /* atomic: a "later" BIO was found: read() notes ClientHellos */

static __thread struct {
    struct bs_bio *st; /* a reference (refs), NULL when none */
    uint8_t sig_len;
    uint8_t tries;
    bool matched; /* the write in progress is the one: later_sent follows */
    uint8_t sig[BS_SIG_MAX];
} later __attribute__((tls_model("initial-exec")));

static void later_drop(void)
{
    struct bs_bio *st = later.st;
    later.st = NULL;
    if (st)
        bio_state_unref(st);
}

static void later_set(struct bs_bio *st, const uint8_t *sig, uint8_t len)
{
    if (later.st == st)
        return; /* the first bytes not seen leaving are still the ones known */
    later_drop();
    __atomic_add_fetch(&st->refs, 1, __ATOMIC_ACQ_REL);
    later.st = st;
    later.tries = 0;
    later.matched = false;
    later.sig_len = len;
    memcpy(later.sig, sig, len);
}

/* The bytes of an iovec array start with later.sig. */
static bool later_matches(const struct iovec *iov, size_t cnt)
{
    size_t have = 0;
    for (size_t i = 0; i < cnt && have < later.sig_len; i++) {
        size_t l = iov[i].iov_len;
        if (l > (size_t)later.sig_len - have)
            l = later.sig_len - have;
        if (l && memcmp(iov[i].iov_base, later.sig + have, l) != 0)
            return false;
        have += l;
    }
    return have == later.sig_len;
}

/* A write on fd outside any BIO call, with later set: is it the one? When
 * it is, later_sent follows with its result. Logs nothing (log.c writes
 * through these hooks). */
static void later_check(int fd, const struct msghdr *m)
{
    struct bs_bio *st = later.st;
    if (later.matched) /* a write from a signal handler, in the middle */
        return;
    KS_SAVE_ERRNO;
    if (__atomic_load_n(&st->orphan, __ATOMIC_ACQUIRE) || st->ambiguous ||
        (st->fd >= 0 && (!st->by_later || st->tx_asked))) {
        later_drop();
    } else if ((st->fd >= 0 && st->fd != fd) || !later_matches(m->msg_iov, m->msg_iovlen)) {
        if (++later.tries >= BS_LATER_TRIES)
            later_drop();
    } else {
        later.matched = true;
        if (st->fd >= 0) {
            /* known already (its ClientHello): the bytes are counted */
        } else if (is_tcp(fd)) {
            st->fd = fd;
            st->by_later = true;
        } else {
            st->ambiguous = true;
        }
    }
    KS_RESTORE_ERRNO;
}

/* The write later_check matched returned r: its bytes are no longer the
 * program's to send. */
static void later_sent(ssize_t r)
{
    struct bs_bio *st = later.st;
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
    later_drop();
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
static bool memory_bio(BIO *b);
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

static void hello_note(int fd, const uint8_t *b)
{
    unsigned i = hellos_next++ % BS_HELLOS;
    hellos[i].fd = fd;
    hellos[i].used = true;
    memcpy(hellos[i].head, b, BS_SIG_MAX);
}

/* libssl read n bytes at p through b, in a handshake call. */
static void rx_saw(BIO *b, const void *p, int n)
{
    BIO *end = chain_end(b);
    if (!end || libcrypto_socket_bio(end))
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
    if (rx_seen.len < BS_SIG_MAX || memory_bio(end))
        return;
    struct bs_bio *st = bio_state(end);
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
    if (fd < 0 || !is_tcp(fd) || !(st = bio_state_make(end)) || st->fd >= 0 || st->ambiguous)
        return;
    st->fd = fd;
    st->by_later = true;
    st->precise = st->unsent == 0; /* nothing taken yet: all it takes is copied */
    st->held_len = 0;
    ks_log_debug("fd %d: found under the program's BIO by the ClientHello it read", fd);
}

static int bs_own_bio_seen; /* atomic: a program's own BIO was met (ks_biosock_handshake_bios) */
static void own_bio_seen(void);

/* Starts watching the chain under b for this call; false if already
 * watching (a nested call) or nothing to watch. */
static bool watch_begin(BIO *b)
{
    if (watch.target || !b || !api_ready())
        return false;
    BIO *end = chain_end(b);
    if (!end || libcrypto_socket_bio(end))
        return false;
    if (!__atomic_load_n(&bs_own_bio_seen, __ATOMIC_RELAXED) && !memory_bio(end))
        own_bio_seen(); /* found here first: a BIO under no SSL's own ones */
    struct bs_bio *st = bio_state(end);
    if (st && (st->ambiguous || st->tx_on))
        return false;
    watch.target = end;
    watch.fd = -1;
    watch.multi = false;
    watch.last_short = false;
    watch.queued = false;
    watch.handed = 0;
    watch.sig_len = 0;
    return true;
}

/* The watched call returned: success after its last socket write was short
 * means the program kept the rest to send later, from its own buffers. */
static inline void watch_returned(bool all_taken)
{
    if (all_taken && watch.last_short)
        watch.queued = true;
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
static void watch_handed(const void *p, int n)
{
    struct bs_bio *st = bio_state(watch.target);
    if (st && st->by_later && st->precise && !st->tx_asked)
        held_add(st, p, n);
    watch.handed += (uint64_t)n;
    if (watch.sig_len < BS_SIG_MAX) {
        uint8_t l = BS_SIG_MAX - watch.sig_len;
        if ((unsigned)n < l)
            l = (uint8_t)n;
        memcpy(watch.sig + watch.sig_len, p, l);
        watch.sig_len += l;
    }
}

/* The watched call wrote nothing, yet the program's BIO took bytes: they
 * wait in the program's own buffers (h2o) or in a memory BIO. */
static void watch_end_deferred(BIO *end)
{
    if (!watch.handed || memory_bio(end))
        return;
    struct bs_bio *st = bio_state_make(end);
    if (!st)
        return;
    st->unsent += watch.handed;
    if ((st->fd < 0 || (st->by_later && !st->tx_asked)) && !st->ambiguous &&
        watch.sig_len >= BS_SIG_MIN)
        later_set(st, watch.sig, watch.sig_len);
}

static void watch_end(void)
{
    BIO *end = watch.target;
    watch.target = NULL;
    if (watch.fd < 0 && !watch.multi) {
        KS_SAVE_ERRNO;
        watch_end_deferred(end);
        KS_RESTORE_ERRNO;
        return;
    }
    KS_SAVE_ERRNO;
    struct bs_bio *st = bio_state_make(end);
    if (st && later.st == st)
        later_drop(); /* it writes during its calls: the watch knows its socket */
    if (st)
        st->precise = false; /* bytes left during a call: unsent is not exact */
    if (st && watch.queued && !st->queued) {
        ks_log_debug("fd %d: the program's BIO took bytes its socket did not: it buffers "
                     "output of its own, no kTLS under it",
                     watch.fd);
        st->queued = true;
    }
    if (st) {
        if (watch.multi || (st->fd >= 0 && st->fd != watch.fd) || !is_tcp(watch.fd)) {
            if (!st->ambiguous)
                ks_log_debug("the program's BIO writes to %s: no kTLS under it",
                             watch.multi || st->fd >= 0 ? "more than one descriptor"
                                                        : "a descriptor that is not TCP");
            st->ambiguous = true;
        } else {
            st->fd = watch.fd;
        }
    }
    KS_RESTORE_ERRNO;
}

static inline void watch_saw(int fd)
{
    if (watch.fd < 0)
        watch.fd = fd;
    else if (watch.fd != fd)
        watch.multi = true;
}

/* A write on fd during the watch returned r for n bytes asked. */
static void watch_wrote(int fd, ssize_t r, size_t n, int err)
{
    if (fd == watch.fd)
        watch.last_short =
            r < 0 ? (err == EAGAIN || err == EWOULDBLOCK || err == EINTR) : (size_t)r < n;
}

/* ---- answering libssl's kTLS controls ---- */

/* The kernel's size of the crypto info libssl made (libssl's own struct
 * wraps it with a length whose offset depends on how it was built). */
static socklen_t crypto_info_len(const void *p)
{
    const struct tls_crypto_info *ci = p;
    if (ci->version != TLS_1_2_VERSION && ci->version != TLS_1_3_VERSION)
        return 0;
    switch (ci->cipher_type) {
    case TLS_CIPHER_AES_GCM_128:
        return sizeof(struct tls12_crypto_info_aes_gcm_128);
    case TLS_CIPHER_AES_GCM_256:
        return sizeof(struct tls12_crypto_info_aes_gcm_256);
    case TLS_CIPHER_AES_CCM_128:
        return sizeof(struct tls12_crypto_info_aes_ccm_128);
#ifdef TLS_CIPHER_CHACHA20_POLY1305
    case TLS_CIPHER_CHACHA20_POLY1305:
        return sizeof(struct tls12_crypto_info_chacha20_poly1305);
#endif
    default:
        return 0;
    }
}

/* TX for st->fd once the st->unsent bytes its program holds (st->held)
 * have left: noted on the socket as its first segment, with the key. */
static bool defer_tx(struct bs_bio *st, const void *crypto_info, socklen_t len)
{
    struct bs_deferred *d = malloc(sizeof *d + st->held_len);
    if (!d || len > sizeof d->key) {
        free(d);
        return false;
    }
    memcpy(&d->key, crypto_info, len);
    d->key_len = len;
    d->off = 0;
    d->len = st->held_len;
    memcpy(d->bytes, st->held, st->held_len);
    ctrl_note(st->fd, BS_SEG_HELD, st->held_len);
    struct bs_fd *f = &bs_fds[st->fd];
    if (!fd_pending(st->fd) || f->nseg != 1 || f->seg[0].type != BS_SEG_HELD) {
        deferred_free(d);
        ctrl_unnote(st->fd, SIZE_MAX);
        return false;
    }
    f->deferred = d;
    ks_log_debug("fd %d: kTLS TX once the %u bytes the program's BIO still holds have left", st->fd,
                 (unsigned)st->held_len);
    free(st->held);
    st->held = NULL;
    st->held_len = 0;
    return true;
}

/* BIO_CTRL_SET_KTLS for TX on the program's BIO `end`: 1 if the kernel now
 * encrypts what is written to its socket. */
static long set_ktls_tx(BIO *end, void *crypto_info)
{
    struct bs_bio *st = bio_state_make(end);
    if (st)
        st->tx_asked = true;
    if (st && st->fd >= 0 && later.st == st)
        later_drop(); /* what it holds now is counted at the switch itself */
    if (!st || st->fd < 0 || st->ambiguous) {
        if (st)
            st->reason = KS_FB_BIO_NO_FD;
        return 0;
    }
    if (st->tx_on) /* renegotiation: libssl refuses it under kTLS itself */
        return 0;
    if (st->queued) {
        st->reason = KS_FB_BIO_BUSY;
        return 0;
    }
    /* Its flush said yes with bytes still in its buffer (h2o: TLS 1.2's
     * ChangeCipherSpec): under kTLS now, the kernel would encrypt them again
     * when its event loop writes them. Known to the byte, they go out first
     * and the key after them (deferred); else no kTLS. */
    bool deferred = st->by_later && st->unsent;
    if (deferred &&
        (!st->precise || st->held_over || st->held_len != st->unsent || fd_pending(st->fd))) {
        ks_log_debug("fd %d: the program's BIO holds %llu bytes it has not sent yet: no kTLS TX",
                     st->fd, (unsigned long long)st->unsent);
        st->reason = KS_FB_BIO_BUSY;
        return 0;
    }
    long pending = bs_api.ctrl(end, BIO_CTRL_WPENDING, 0, NULL);
    if (pending > 0) {
        ks_log_debug("fd %d: the program's BIO still holds %ld bytes: no kTLS TX", st->fd, pending);
        st->reason = KS_FB_BIO_BUSY;
        return 0;
    }
    socklen_t len = crypto_info ? crypto_info_len(crypto_info) : 0;
    if (!len) {
        st->reason = KS_FB_CIPHER;
        return 0;
    }
    /* Control records must be noted on the socket: no table, no kTLS. */
    if (st->fd >= BS_FD_MAX || !fd_table()) {
        ks_log_debug("fd %d: beyond the %d descriptors whose control records can be tracked "
                     "(or no memory): no kTLS TX",
                     st->fd, BS_FD_MAX);
        st->reason = KS_FB_OTHER;
        return 0;
    }
    if (setsockopt(st->fd, SOL_TCP, TCP_ULP, "tls", sizeof "tls") != 0 && errno != EEXIST) {
        st->reason = errno == ENOENT ? KS_FB_NO_KERNEL_TLS : KS_FB_OTHER;
        if (errno != ENOENT)
            ks_log_error("fd %d: setsockopt(TCP_ULP, tls) failed: %s", st->fd, strerror(errno));
        return 0;
    }
    if (deferred) {
        if (!defer_tx(st, crypto_info, len)) {
            st->reason = KS_FB_OTHER;
            return 0;
        }
    } else if (setsockopt(st->fd, SOL_TLS, TLS_TX, crypto_info, len) != 0) {
        ks_log_error("fd %d: setsockopt(SOL_TLS, TLS_TX) failed: %s", st->fd, strerror(errno));
        st->reason = KS_FB_OTHER;
        return 0;
    }
    st->tx_on = true;
    __atomic_store_n(&bs_any_tx, 1, __ATOMIC_RELAXED);
    return 1;
}

/* A control record is announced: its payload is the next BIO_write. */
static __thread struct {
    BIO *bio; /* the BIO libssl announced it on (its next BIO_write is the record) */
    int fd;
    uint8_t type;
    bool armed;
} ctrl_next __attribute__((tls_model("initial-exec")));

/* libssl asks to switch direction tx under the chain b: true if the call may
 * go on, to libcrypto when the chain is proven to be its socket BIO
 * (bioproof.c), to this file for TX under a program's own BIO; false with
 * *ret 0 (no) for anything else. With KTLSSHIM_KTLS=off libssl's kTLS is the
 * program's own doing: untouched. */
static bool set_ktls_allowed(BIO *b, bool tx, long *ret)
{
    if (ks_config()->ktls == KS_KTLS_OFF)
        return true;
    enum ks_bio_shape shape = ks_bio_shape(b, tx);
    if (shape == KS_BIO_SOCKET || (shape == KS_BIO_PROGRAM && tx))
        return true;
    if (shape != KS_BIO_OTHER)
        ks_log_debug("libssl's kTLS %s refused: %s", tx ? "TX" : "RX",
                     shape == KS_BIO_PROGRAM
                         ? "receiving through the program's own BIO (see biosock.c)"
                         : "the BIO chain is not proven to be libcrypto's socket BIO");
    *ret = 0;
    return false;
}

static bool biosock_ctrl(BIO *b, int cmd, long num, void *ptr, long *ret)
{
    if (cmd == KS_BIO_CTRL_SET_KTLS) {
        bool on;
        KS_SAVE_ERRNO;
        on = set_ktls_allowed(b, num != 0, ret);
        KS_RESTORE_ERRNO;
        if (!on)
            return true; /* refused: *ret is 0 */
    }
    if (!api_ready())
        return false;
    BIO *end = chain_end(b);
    if (!end || libcrypto_socket_bio(end))
        return false;
    struct bs_bio *st;
    switch (cmd) {
    case KS_BIO_CTRL_SET_KTLS:
        if (!num || ks_config()->ktls == KS_KTLS_OFF) /* RX: refused above */
            return false;
        KS_SAVE_ERRNO;
        *ret = set_ktls_tx(end, ptr);
        if ((st = bio_state(end))) { /* decided: the copy has served */
            free(st->held);
            st->held = NULL;
            st->held_len = 0;
        }
        KS_RESTORE_ERRNO;
        return true;
    case KS_BIO_CTRL_SET_KTLS_TX_SEND_CTRL_MSG:
        if (!(st = bio_state(end)) || !st->tx_on)
            return false;
        ctrl_next.bio = b;
        ctrl_next.fd = st->fd;
        ctrl_next.type = (uint8_t)num;
        ctrl_next.armed = true;
        *ret = 0;
        return true;
    case KS_BIO_CTRL_CLEAR_KTLS_TX_CTRL_MSG:
        if (!(st = bio_state(end)) || !st->tx_on)
            return false;
        ctrl_next.armed = false;
        *ret = 0;
        return true;
    default:
        return false;
    }
}

/* ---- hooks: libcrypto ---- */

/* The real function cannot be found in any loaded libcrypto.so.3 (a caller
 * reached this hook, so one should be there): the call fails as libcrypto's
 * would on a bad BIO, said once; never an abort in the program. */
static void missing(const char *name)
{
    static int said;
    if (!__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
        ks_log_error("cannot find the real %s in any loaded libcrypto.so.3; the call fails", name);
}

/* ---- the hooks' one jump ----
 * Everything this file does is for a program's own BIO (the top of the
 * file). Until a handshake call meets one (ks_biosock_handshake_bios, for
 * good), no BIO_ctrl, BIO_write, BIO_read nor libc write or read has
 * anything for it to do: each hook is then one indirect jump through its
 * pointer below, to libcrypto's or libc's function (BIO_ctrl: to
 * bio_ctrl_proving, which tests the command, BIO_CTRL_SET_KTLS being
 * libssl's request to switch that bioproof.c must allow). Each pointer starts at
 * a function that finds the real one (and puts it there, unless a program's
 * BIO was met meanwhile); once one is met, it is the hook's watching
 * function, which tests what the hook must act on. */
#define HOOK_SET(hook, from, to)                                                                   \
    do {                                                                                           \
        __typeof__(hook) from_ = (from);                                                           \
        __atomic_compare_exchange_n(&(hook), &from_, (to), false, __ATOMIC_SEQ_CST,                \
                                    __ATOMIC_SEQ_CST);                                             \
    } while (0)
#define HOOK_JUMP(hook) __atomic_load_n(&(hook), __ATOMIC_RELAXED)

static long bio_ctrl_slow(BIO *b, int cmd, long larg, void *parg);
static int bio_write_slow(BIO *b, const void *data, int dlen);
static int bio_read_slow(BIO *b, void *data, int dlen);
static long (*bio_ctrl_hook)(BIO *, int, long, void *) = bio_ctrl_slow;
static int (*bio_write_hook)(BIO *, const void *, int) = bio_write_slow;
static int (*bio_read_hook)(BIO *, void *, int) = bio_read_slow;

/* Until a program's BIO is met: libssl's request to switch (once per
 * connection and direction) is the one control that must be looked at, by
 * every process, whatever BIO it meets first: only a chain proven to be
 * libcrypto's socket BIO gets libcrypto's answer (bioproof.c). */
static long bio_ctrl_proving(BIO *b, int cmd, long larg, void *parg)
{
    long (*real)(BIO *, int, long, void *) = __atomic_load_n(&bs_api.ctrl, __ATOMIC_RELAXED);
    if (KS_LIKELY(cmd != KS_BIO_CTRL_SET_KTLS) && KS_LIKELY(real != NULL))
        return real(b, cmd, larg, parg);
    return bio_ctrl_slow(b, cmd, larg, parg);
}

__attribute__((noinline)) static long bio_ctrl_slow(BIO *b, int cmd, long larg, void *parg)
{
    if (KS_UNLIKELY(!api_ready()) && !bs_api.ctrl && !BS_RESOLVE(ctrl, "BIO_ctrl")) {
        missing("BIO_ctrl");
        return 0;
    }
    HOOK_SET(bio_ctrl_hook, bio_ctrl_slow, bio_ctrl_proving);
    long r;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        if (ks_biosock_handshaking && watch_begin(b)) {
            r = bs_api.ctrl(b, cmd, larg, parg);
            watch_returned(r > 0);
            watch_end();
            return r;
        }
        break;
    case BIO_CTRL_GET_KTLS_SEND:
        r = bs_api.ctrl(b, cmd, larg, parg);
        if (r > 0 || !__atomic_load_n(&bs_any_tx, __ATOMIC_RELAXED) || !b)
            return r;
        return ks_biosock_tx_fd(b) >= 0 ? 1 : r;
    case KS_BIO_CTRL_SET_KTLS:
    case KS_BIO_CTRL_SET_KTLS_TX_SEND_CTRL_MSG:
    case KS_BIO_CTRL_CLEAR_KTLS_TX_CTRL_MSG:
        if (b && biosock_ctrl(b, cmd, larg, parg, &r))
            return r;
        break;
    default:
        break;
    }
    return bs_api.ctrl(b, cmd, larg, parg);
}

/* Once a program's BIO was met: the controls this file acts on, given the
 * state, go to bio_ctrl_slow; everything else straight to libcrypto.
 * Tested in the order of how often libssl asks them: per request of a
 * small keep-alive response about 9 GET_KTLS_SEND (before every record it
 * writes) and 7 FLUSH; SET_KTLS and the control-message controls (72-75)
 * once per connection or never. */
static long bio_ctrl_watching(BIO *b, int cmd, long larg, void *parg)
{
    long (*real)(BIO *, int, long, void *) = __atomic_load_n(&bs_api.ctrl, __ATOMIC_RELAXED);
    if (KS_UNLIKELY(!real))
        return bio_ctrl_slow(b, cmd, larg, parg);
    if (cmd == BIO_CTRL_GET_KTLS_SEND) {
        if (KS_LIKELY(!__atomic_load_n(&bs_any_tx, __ATOMIC_RELAXED)))
            return real(b, cmd, larg, parg);
    } else if (cmd == BIO_CTRL_FLUSH) {
        if (KS_LIKELY(!ks_biosock_handshaking))
            return real(b, cmd, larg, parg);
    } else if (KS_LIKELY((unsigned)cmd - KS_BIO_CTRL_SET_KTLS >
                         KS_BIO_CTRL_CLEAR_KTLS_TX_CTRL_MSG - KS_BIO_CTRL_SET_KTLS)) {
        return real(b, cmd, larg, parg);
    }
    return bio_ctrl_slow(b, cmd, larg, parg);
}

KS_EXPORT long BIO_ctrl(BIO *b, int cmd, long larg, void *parg)
{
    return HOOK_JUMP(bio_ctrl_hook)(b, cmd, larg, parg);
}

__attribute__((noinline)) static int bio_write_slow(BIO *b, const void *data, int dlen)
{
    if (KS_UNLIKELY(!api_ready()) && !bs_api.write && !BS_RESOLVE(write, "BIO_write")) {
        missing("BIO_write");
        return -1;
    }
    HOOK_SET(bio_write_hook, bio_write_slow, bs_api.write);
    if (!ctrl_next.armed && !ks_biosock_handshaking)
        return bs_api.write(b, data, dlen);
    if (ctrl_next.armed) {
        /* The payload of the announced control record: libssl writes it to
         * the BIO it announced it on, right after. Anything else means the
         * announcement was abandoned (an error path): forget it. */
        ctrl_next.armed = false;
        int fd = ctrl_next.fd;
        if (dlen <= 0 || b != ctrl_next.bio)
            return bs_api.write(b, data, dlen);
        int e = errno;
        ctrl_note(fd, ctrl_next.type, (size_t)dlen);
        errno = e;
        int r = bs_api.write(b, data, dlen);
        if (r < dlen) {
            e = errno;
            ctrl_unnote(fd, (size_t)(dlen - (r > 0 ? r : 0)));
            errno = e;
        }
        return r;
    }
    bool mine = watch_begin(b);
    int r = bs_api.write(b, data, dlen);
    if (r > 0 && watch.target == b) /* into the program's BIO itself */
        watch_handed(data, r);
    if (mine) {
        watch_returned(r == dlen);
        watch_end();
    }
    return r;
}

/* Once a program's BIO was met: outside handshake calls (every record of
 * every connection), BIO_write and BIO_read tail-call libcrypto's. */
static int bio_write_watching(BIO *b, const void *data, int dlen)
{
    int (*real)(BIO *, const void *, int) = __atomic_load_n(&bs_api.write, __ATOMIC_RELAXED);
    if (KS_LIKELY(real != NULL) && KS_LIKELY(!ctrl_next.armed && !ks_biosock_handshaking))
        return real(b, data, dlen);
    return bio_write_slow(b, data, dlen);
}

KS_EXPORT int BIO_write(BIO *b, const void *data, int dlen)
{
    return HOOK_JUMP(bio_write_hook)(b, data, dlen);
}

__attribute__((noinline)) static int bio_read_slow(BIO *b, void *data, int dlen)
{
    if (KS_UNLIKELY(!api_ready()) && !bs_api.read && !BS_RESOLVE(read, "BIO_read")) {
        missing("BIO_read");
        return -1;
    }
    HOOK_SET(bio_read_hook, bio_read_slow, bs_api.read);
    if (!ks_biosock_handshaking || !__atomic_load_n(&bs_hellos_on, __ATOMIC_RELAXED))
        return bs_api.read(b, data, dlen);
    int r = bs_api.read(b, data, dlen);
    if (r > 0 && b && data && api_ready()) {
        KS_SAVE_ERRNO;
        rx_saw(b, data, r);
        KS_RESTORE_ERRNO;
    }
    return r;
}

static int bio_read_watching(BIO *b, void *data, int dlen)
{
    int (*real)(BIO *, void *, int) = __atomic_load_n(&bs_api.read, __ATOMIC_RELAXED);
    if (KS_LIKELY(real != NULL) && KS_LIKELY(!ks_biosock_handshaking))
        return real(b, data, dlen);
    return bio_read_slow(b, data, dlen);
}

KS_EXPORT int BIO_read(BIO *b, void *data, int dlen)
{
    return HOOK_JUMP(bio_read_hook)(b, data, dlen);
}

/* ---- what tls/hooks.c asks ---- */

int ks_biosock_tx_fd(BIO *b)
{
    if (!b || !api_ready())
        return -1;
    struct bs_bio *st = bio_state(chain_end(b));
    return st && st->tx_on ? st->fd : -1;
}

/* A BIO with no socket behind it by design: a memory BIO (asyncio,
 * uvicorn) or a BIO pair. */
static bool memory_bio(BIO *b)
{
    BIO *end = b && api_ready() ? chain_end(b) : NULL;
    if (!end)
        return true;
    const char *name = bs_api.method_name(end);
    return bs_api.method_type(end) == BIO_TYPE_BIO || (name && strcmp(name, "memory buffer") == 0);
}

bool ks_biosock_found(BIO *b, bool tx)
{
    if (!b || !api_ready())
        return false;
    if (!tx) /* not tried (see the top): the reason is the general one, or bio_rx */
        return !memory_bio(b);
    struct bs_bio *st = bio_state(chain_end(b));
    return st && st->fd >= 0 && !st->ambiguous;
}

enum ks_fallback ks_biosock_reason(BIO *b, bool tx, bool found)
{
    if (!found)
        return memory_bio(b) ? KS_FB_NOT_SOCKET : KS_FB_BIO_NO_FD;
    if (!tx)
        return KS_FB_BIO_RX;
    struct bs_bio *st = bio_state(chain_end(b));
    return st && st->reason ? (enum ks_fallback)st->reason : KS_FB_OTHER;
}

/* ---- hooks: libc writes ---- */

/* Every later write on fd fails: plaintext sits in the program's buffer
 * behind what was sent, and no key is on the socket to encrypt it. */
static void fd_break(struct bs_fd *f, int fd)
{
    fd_forget(f);
    f->nseg = 1;
    f->seg[0].type = BS_SEG_BROKEN;
    f->seg[0].left = UINT32_MAX;
    fd_set_pending(fd, true);
}

/* The held bytes have all left: the key goes in. */
static void held_done(struct bs_fd *f, int fd)
{
    struct bs_deferred *d = f->deferred;
    f->deferred = NULL;
    if (setsockopt(fd, SOL_TLS, TLS_TX, &d->key, d->key_len) != 0) {
        ks_log_error("fd %d: setsockopt(SOL_TLS, TLS_TX) failed after the program's held bytes "
                     "left: %s; its next writes on this connection fail (EIO), since what "
                     "follows is plaintext",
                     fd, strerror(errno));
        deferred_free(d);
        fd_break(f, fd);
        return;
    }
    ks_log_debug("fd %d: kTLS TX on, after the %u bytes the program held", fd, (unsigned)d->len);
    deferred_free(d);
}

/* Sends what the caller asked, limited to the held bytes still to leave on
 * fd, as they are, when they are exactly those bytes; then the key. */
static ssize_t send_held(int fd, struct bs_fd *f, const struct msghdr *theirs, int flags)
{
    struct bs_deferred *d = f->deferred;
    size_t want = f->seg[0].left, took = 0;
    struct iovec iov[64];
    int n = 0;
    for (size_t i = 0; d && i < theirs->msg_iovlen && took < want && n < 64; i++) {
        size_t l = theirs->msg_iov[i].iov_len;
        if (!l)
            continue;
        if (l > want - took)
            l = want - took;
        if (memcmp(theirs->msg_iov[i].iov_base, d->bytes + d->off + took, l) != 0) {
            d = NULL; /* not the bytes its BIO took: a count went wrong */
            break;
        }
        iov[n].iov_base = theirs->msg_iov[i].iov_base;
        iov[n].iov_len = l;
        took += l;
        n++;
    }
    if (!d) {
        ks_log_error("fd %d: the program's write does not carry the bytes its BIO held at the "
                     "kTLS switch; the connection's writes fail (EIO) rather than send "
                     "plaintext",
                     fd);
        fd_break(f, fd);
        errno = EIO;
        return -1;
    }
    if (!took) /* a zero-length write */
        return ks_libc()->sendmsg(fd, theirs, flags);
    struct msghdr m = {
        .msg_name = theirs->msg_name,
        .msg_namelen = theirs->msg_namelen,
        .msg_iov = iov,
        .msg_iovlen = (size_t)n,
    };
    ssize_t r = ks_libc()->sendmsg(fd, &m, flags);
    if (r > 0) {
        KS_SAVE_ERRNO;
        d->off += (uint32_t)r;
        ctrl_sent(f, fd, (size_t)r);
        if (d->off == d->len)
            held_done(f, fd);
        KS_RESTORE_ERRNO;
    }
    return r;
}

/* Sends what the caller asked, limited to the first pending control record
 * on fd, as that record type. -1 with errno like the real call. */
static ssize_t send_ctrl(int fd, struct bs_fd *f, const struct msghdr *theirs, int flags)
{
    size_t want = f->seg[0].left, took = 0;
    struct iovec iov[64];
    int n = 0;
    for (size_t i = 0; i < theirs->msg_iovlen && took < want && n < 64; i++) {
        size_t l = theirs->msg_iov[i].iov_len;
        if (!l)
            continue;
        if (l > want - took)
            l = want - took;
        iov[n].iov_base = theirs->msg_iov[i].iov_base;
        iov[n].iov_len = l;
        took += l;
        n++;
    }
    if (!took) /* a zero-length write: nothing to mark */
        return ks_libc()->sendmsg(fd, theirs, flags);
    union ks_record_type_cmsg room;
    struct msghdr m = {
        .msg_name = theirs->msg_name,
        .msg_namelen = theirs->msg_namelen,
        .msg_iov = iov,
        .msg_iovlen = (size_t)n,
    };
    ks_ktls_set_record_type(&m, &room, f->seg[0].type);
    /* The kernel takes no MSG_MORE with a record type. */
    ssize_t r = ks_libc()->sendmsg(fd, &m, flags & ~MSG_MORE);
    if (r > 0) {
        KS_SAVE_ERRNO;
        ctrl_sent(f, fd, (size_t)r);
        KS_RESTORE_ERRNO;
    }
    return r;
}

/* The slow path of every write hook: noting the descriptor for the watch,
 * or sending a pending control record. NULL result: call the real one. */
static bool write_slow(int fd, const struct msghdr *m, int flags, ssize_t *ret)
{
    if (watch.target)
        watch_saw(fd);
    else if (later.st)
        later_check(fd, m);
    if (!fd_pending(fd) || !bs_fds)
        return false;
    struct bs_fd *f = &bs_fds[fd];
    KS_SAVE_ERRNO;
    bool same = f->nseg && same_socket(fd, f);
    KS_RESTORE_ERRNO;
    if (!same) {
        fd_forget(f); /* a stale note of a closed socket */
        fd_set_pending(fd, false);
        return false;
    }
    if (f->seg[0].type == BS_SEG_BROKEN) {
        errno = EIO;
        *ret = -1;
        return true;
    }
    if (m->msg_controllen) {
        /* Their own cmsg on a kTLS socket with a control record due: no
         * program known does this. Sent as it is, the record's bytes would
         * reach the peer as application data (a corrupt stream): the call
         * fails instead, and the program ends that connection. */
        ks_log_error("fd %d: sendmsg with ancillary data while a TLS control record is due; "
                     "the write fails (EPROTO) rather than send the record as data",
                     fd);
        errno = EPROTO;
        *ret = -1;
        return true;
    }
    *ret = f->seg[0].type == BS_SEG_HELD ? send_held(fd, f, m, flags) : send_ctrl(fd, f, m, flags);
    return true;
}

/* write_slow, then what `later` needs to know of the result. */
static bool write_slow_later(int fd, const struct msghdr *m, int flags, ssize_t *ret)
{
    if (!write_slow(fd, m, flags, ret))
        return false;
    if (later.st && later.matched)
        later_sent(*ret);
    return true;
}

/* A write with nothing to note or send differently. */
#define WRITE_FAST(fd) (KS_LIKELY(!watch.target && !later.st && !fd_pending(fd)))

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
        if (watch.target)                                                                          \
            watch_wrote((fd), (r), (n), errno);                                                    \
        else if (later.st && later.matched)                                                        \
            later_sent(r);                                                                         \
    } while (0)

/* libc's functions behind the hooks below, copied from core/libc.c's table by
 * the first call (a stub until then), and each hook's pointer (the hook's
 * one jump, as for the BIO hooks above): the stub, then libc's function
 * until a program's BIO is met, then the hook's watching function. */
#define LIBC_NEXT(name, params, args)                                                              \
    static ssize_t name##_first params;                                                            \
    static ssize_t(*libc_##name) params = name##_first;                                            \
    static ssize_t(*name##_hook) params = name##_first;                                            \
    static ssize_t name##_first params                                                             \
    {                                                                                              \
        ssize_t(*f_) params = ks_libc()->name;                                                     \
        __atomic_store_n(&libc_##name, f_, __ATOMIC_RELAXED);                                      \
        HOOK_SET(name##_hook, name##_first, f_);                                                   \
        return f_ args;                                                                            \
    }
LIBC_NEXT(write, (int fd, const void *buf, size_t n), (fd, buf, n))
LIBC_NEXT(writev, (int fd, const struct iovec *iov, int cnt), (fd, iov, cnt))
LIBC_NEXT(send, (int fd, const void *buf, size_t n, int flags), (fd, buf, n, flags))
LIBC_NEXT(sendto,
          (int fd, const void *buf, size_t n, int flags, const struct sockaddr *to,
           socklen_t tolen),
          (fd, buf, n, flags, to, tolen))
LIBC_NEXT(sendmsg, (int fd, const struct msghdr *msg, int flags), (fd, msg, flags))
LIBC_NEXT(read, (int fd, void *buf, size_t n), (fd, buf, n))
#undef LIBC_NEXT
#define LIBC(name) __atomic_load_n(&libc_##name, __ATOMIC_RELAXED)

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

/* Once a "later" BIO was found: a read that opens a ClientHello is noted. */
__attribute__((noinline)) static ssize_t read_noting(int fd, void *buf, size_t n)
{
    ssize_t r = LIBC(read)(fd, buf, n);
    if (r < BS_SIG_MAX)
        return r;
    const uint8_t *b = buf;
    if (b[0] == 22 && b[1] == 3 && b[5] == 1) /* a handshake record, a ClientHello */
        hello_note(fd, b);
    return r;
}

/* The flag is tested before the read (a tail call): a read already under way
 * in another thread when the first "later" BIO is found is not noted. */
static ssize_t read_watching(int fd, void *buf, size_t n)
{
    if (KS_LIKELY(!__atomic_load_n(&bs_hellos_on, __ATOMIC_RELAXED)))
        return LIBC(read)(fd, buf, n);
    return read_noting(fd, buf, n);
}

KS_EXPORT ssize_t read(int fd, void *buf, size_t n)
{
    return HOOK_JUMP(read_hook)(fd, buf, n);
}

/* ---- a program's own BIO met in a handshake call ---- */

/* A BIO chain that ends in neither one of libcrypto's descriptor BIOs nor a
 * memory BIO (or a BIO pair): a program's own, under which a socket may be
 * found. */
static bool program_bio(BIO *b)
{
    BIO *end = b ? chain_end(b) : NULL;
    return end && !libcrypto_socket_bio(end) && !memory_bio(end);
}

/* From now on every hook of this file watches (for good). */
static void own_bio_seen(void)
{
    if (__atomic_exchange_n(&bs_own_bio_seen, 1, __ATOMIC_SEQ_CST))
        return;
    __atomic_store_n(&bio_ctrl_hook, bio_ctrl_watching, __ATOMIC_SEQ_CST);
    __atomic_store_n(&bio_write_hook, bio_write_watching, __ATOMIC_SEQ_CST);
    __atomic_store_n(&bio_read_hook, bio_read_watching, __ATOMIC_SEQ_CST);
    __atomic_store_n(&write_hook, write_watching, __ATOMIC_SEQ_CST);
    __atomic_store_n(&writev_hook, writev_watching, __ATOMIC_SEQ_CST);
    __atomic_store_n(&send_hook, send_watching, __ATOMIC_SEQ_CST);
    __atomic_store_n(&sendto_hook, sendto_watching, __ATOMIC_SEQ_CST);
    __atomic_store_n(&sendmsg_hook, sendmsg_watching, __ATOMIC_SEQ_CST);
    __atomic_store_n(&read_hook, read_watching, __ATOMIC_SEQ_CST);
    ks_log_debug("a handshake call goes through a BIO of the program's own: its hooks watch");
}

void ks_biosock_handshake_bios(BIO *rbio, BIO *wbio)
{
    if (KS_LIKELY(__atomic_load_n(&bs_own_bio_seen, __ATOMIC_RELAXED)) ||
        ks_ossl_flavour() == KS_OSSL_111 || (!rbio && !wbio) || !api_ready())
        return;
    KS_SAVE_ERRNO;
    if (program_bio(rbio) || (wbio != rbio && program_bio(wbio)))
        own_bio_seen();
    KS_RESTORE_ERRNO;
}
