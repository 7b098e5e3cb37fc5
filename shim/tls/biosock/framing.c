/* framing.c — per-socket notes of what a program's next writes on a socket
 * must carry differently, once this module put kTLS TX under its BIO.
 * Control records (TLS 1.2 Finished, TLS 1.3 tickets, alerts such as
 * close_notify): libssl flushes, sets SET_KTLS_TX_SEND_CTRL_MSG and writes
 * the record's payload with BIO_write. The length of that write is noted on
 * the socket as "the next n bytes are a record of type t"; their next write
 * calls on it send those n bytes (no more: a short write, which their code
 * handles like any other) with sendmsg and a TLS_SET_RECORD_TYPE cmsg. The
 * bytes a "later" BIO still held at the switch (ctrl.c) are a first segment
 * of their own: they leave as they are, checked against the copy, and the
 * key goes in right after. The socket's identity (st_dev, st_ino) is
 * checked, so a pending note never touches a reused descriptor. */
#include "tls/biosock/bs.h"
#include "core/libc.h"
#include "core/log.h"
#include "kernel/cryptoinfo.h"
#include "kernel/ktls.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define BS_SEGS 4

/* Segment types besides TLS record types (20-23). BS_SEG_HELD: bytes the
 * program still held when libssl switched; they go out as they are, then
 * TLS_TX goes in. BS_SEG_BROKEN: TLS_TX failed after libssl was told yes;
 * the plaintext behind must never leave, so every write fails. */
#define BS_SEG_HELD 0
#define BS_SEG_BROKEN 255

/* A switch waiting for the bytes the program held to leave. */
struct bs_deferred {
    union ks_crypto_info key; /* secret: wiped when installed or dropped */
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

static struct bs_fd *bs_fds;         /* BS_FD_MAX entries, made on first use */
uint64_t bs_pending[BS_FD_MAX / 64]; /* bit: bs_fds[fd] has segments */
int bs_pending_fds;                  /* atomic: at least the bits set in bs_pending (0: none) */

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

bool bs_frames_ready(int fd)
{
    return (unsigned)fd < BS_FD_MAX && fd_table();
}

/* The next n bytes written to fd (after those already noted) are the
 * payload of one record of type `type`. */
void bs_ctrl_note(int fd, uint8_t type, size_t n)
{
    struct bs_fd *t = fd_table();
    struct stat st;
    if (!t || (unsigned)fd >= BS_FD_MAX || n == 0 || fstat(fd, &st) != 0)
        return;
    struct bs_fd *f = &t[fd];
    if (!bs_fd_pending(fd) || f->dev != st.st_dev || f->ino != st.st_ino) {
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
void bs_ctrl_unnote(int fd, size_t n)
{
    if (!bs_fd_pending(fd) || !bs_fds)
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

/* Every later write on fd fails, or the key goes in after the held bytes:
 * what is left when the BIO whose TX this module installed is freed. */
void bs_frame_bio_gone(int fd)
{
    if (!bs_fd_pending(fd) || !bs_fds || !same_socket(fd, &bs_fds[fd]))
        return;
    if (bs_fds[fd].deferred) /* plaintext may wait behind the held bytes */
        fd_break(&bs_fds[fd], fd);
    else
        bs_ctrl_unnote(fd, SIZE_MAX); /* never flushed: nothing left to mark */
}

/* TX for fd once the bytes its program holds (held) have left: noted on
 * the socket as its first segment, with the key. */
bool bs_frame_hold(int fd, const void *crypto_info, socklen_t ci_len, const uint8_t *held,
                   uint32_t len)
{
    struct bs_deferred *d = malloc(sizeof *d + len);
    if (!d || ci_len > sizeof d->key) {
        free(d);
        return false;
    }
    memcpy(&d->key, crypto_info, ci_len);
    d->key_len = ci_len;
    d->off = 0;
    d->len = len;
    memcpy(d->bytes, held, len);
    bs_ctrl_note(fd, BS_SEG_HELD, len);
    struct bs_fd *f = &bs_fds[fd];
    if (!bs_fd_pending(fd) || f->nseg != 1 || f->seg[0].type != BS_SEG_HELD) {
        deferred_free(d);
        bs_ctrl_unnote(fd, SIZE_MAX);
        return false;
    }
    f->deferred = d;
    return true;
}

bool bs_frame_write(int fd, const struct msghdr *m, int flags, ssize_t *ret)
{
    if (!bs_fd_pending(fd) || !bs_fds)
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
