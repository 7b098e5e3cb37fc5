/* rxframe.c — kTLS receive under a program's own BIO (Apache mod_ssl,
 * HAProxy, h2o, PostgreSQL): the proof that the program has passed on to
 * libssl everything it read from the socket, and its reads of the socket
 * once the kernel decrypts.
 *
 * Why: their BIOs read the socket with their own calls into their own
 * buffers, so libssl's kTLS record layer cannot sit under them, and a plain
 * read() of a kTLS socket fails on every control record. Here the library's
 * own switch (tls/kswitch/) takes receive instead, in three steps:
 *
 * 1. Watch. From the moment the socket is found under their BIO (find.c,
 *    before the client's Finished can arrive), the program's reads of it
 *    (read, readv, recv, recvfrom, recvmsg and their _chk forms: io.c) are
 *    counted, and the last BS_RX_TAIL bytes they took kept; so are the last
 *    BS_RX_TAIL bytes libssl took through the BIO (bio.c's BIO_read).
 * 2. Prove (ks_biosock_rx_caught_up), at a record boundary libssl reached
 *    (tls/kswitch/defer.c): the two tails are equal, so libssl has taken
 *    what the program's last read of the socket brought (ciphertext ends in
 *    a 16-byte AEAD tag: no other place in the stream matches), and the
 *    kernel's count of bytes read from the socket since the watch began
 *    (tcpi_bytes_received less the bytes still queued) is the hooks' count,
 *    so no read went past them. Then nothing read from the socket waits in
 *    the program's buffers.
 * 3. Frame. With TLS_RX on, each read of the socket by the program returns
 *    the kernel's records as a stream of pieces, each a 5-byte header (type,
 *    'k' 't', length) and that many bytes of plaintext, as many as fit
 *    (a short read means the socket had no more, as before). Their BIO
 *    hands the stream on; the library reads it back through their BIO
 *    (ks_biosock_rx_read) in SSL_read. Their buffering, event loop and
 *    timeouts stay theirs. The socket's identity is checked on every framed
 *    read, so a reused descriptor is never framed.
 * What is never switched: a chain of BIOs, a BIO whose reads libssl makes
 * with anything but BIO_read, a socket read through a call the hooks do not
 * see (io_uring, syscall()): step 2 fails and receive stays with libssl. */
#include "tls/biosock/bs.h"
#include "core/libc.h"
#include "core/log.h"
#include "kernel/ktls.h"
#include "kernel/uapi.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h> /* FIONREAD */
#include <sys/stat.h>

#define RX_HDR 5       /* a piece's header: type, 0x03 0x03, length */
#define RX_PIECE 16384 /* the most plaintext a piece carries (a record's) */
#define RX_SPILL_CAP (RX_HDR + RX_PIECE)
#define RX_REC_DATA 23
#define RX_PAD 0 /* a byte of padding between pieces (never a content type) */
/* A piece's header: content type, these two bytes, length. Never a TLS
 * record's version (03 0x): ciphertext reaching the reader (a stream not
 * framed here) fails its check at once instead of passing for plaintext. */
#define RX_MARK1 'k'
#define RX_MARK2 't'

enum { RXF_NONE = 0, RXF_WATCH, RXF_FRAMED };

struct bs_rxfd {
    dev_t dev;
    ino_t ino;
    uint8_t state;
    uint8_t tail_len;
    uint16_t spill_off, spill_len;
    int err;        /* framed: an error met after bytes were returned, for the next read */
    uint64_t base;  /* watch: bytes read from the socket by anyone when it began */
    uint64_t taken; /* watch: bytes the hooked reads took since */
    uint8_t tail[BS_RX_TAIL];
    uint8_t *spill; /* framed: RX_SPILL_CAP bytes (made on first use): a whole record taken
                       for a read too small for it, handed out by the next reads */
};

static struct bs_rxfd *rx_fds;       /* BS_FD_MAX entries, made on first use */
uint64_t bs_rx_bits[BS_FD_MAX / 64]; /* bit: rx_fds[fd] watched or framed */
int bs_rx_nfds;                      /* atomic: at least the bits set (0: none) */
int bs_rx_watching;                  /* atomic: entries in RXF_WATCH */
static int rx_allowed;               /* atomic: ks_biosock_rx_allow() */

void ks_biosock_rx_allow(void)
{
    __atomic_store_n(&rx_allowed, 1, __ATOMIC_RELEASE);
}

static struct bs_rxfd *rx_table(void)
{
    struct bs_rxfd *t = __atomic_load_n(&rx_fds, __ATOMIC_ACQUIRE);
    if (t)
        return t;
    t = calloc(BS_FD_MAX, sizeof *t); /* untouched pages stay unmapped */
    if (!t)
        return NULL;
    struct bs_rxfd *expected = NULL;
    if (!__atomic_compare_exchange_n(&rx_fds, &expected, t, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        free(t);
        t = expected;
    }
    return t;
}

/* fd's entry if its bit is set. */
static struct bs_rxfd *rx_entry(int fd)
{
    struct bs_rxfd *t = __atomic_load_n(&rx_fds, __ATOMIC_ACQUIRE);
    return t && bs_rx_fd(fd) ? &t[fd] : NULL;
}

static bool same_socket(int fd, const struct bs_rxfd *f)
{
    struct stat st;
    return fstat(fd, &st) == 0 && st.st_dev == f->dev && st.st_ino == f->ino;
}

/* The entry goes back to nothing (its bit last: a reader that sees the
 * bit sees the state). */
static void rx_clear(int fd, struct bs_rxfd *f)
{
    if (f->state == RXF_WATCH)
        __atomic_sub_fetch(&bs_rx_watching, 1, __ATOMIC_RELAXED);
    f->state = RXF_NONE;
    if (f->spill)
        explicit_bzero(f->spill, RX_SPILL_CAP);
    free(f->spill);
    f->spill = NULL;
    f->spill_len = f->spill_off = 0;
    uint64_t bit = 1ULL << (fd % 64);
    if (__atomic_fetch_and(&bs_rx_bits[fd / 64], ~bit, __ATOMIC_RELEASE) & bit)
        __atomic_sub_fetch(&bs_rx_nfds, 1, __ATOMIC_RELAXED);
}

/* Bytes read from fd by anyone so far: what the peer sent less what still
 * waits in the socket. Three reads of the kernel's counts, so that bytes
 * arriving in between are seen (the total changes) and the answer is
 * refused rather than wrong. */
static bool socket_consumed(int fd, uint64_t *out)
{
    for (int i = 0; i < 3; i++) {
        uint8_t ti[KS_TCPI_SIZE_MIN + 64];
        uint64_t r1, r2;
        socklen_t len = sizeof ti;
        int inq = 0;
        if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, ti, &len) != 0 || len < KS_TCPI_SIZE_MIN)
            return false;
        memcpy(&r1, ti + KS_TCPI_BYTES_RECEIVED, sizeof r1);
        if (ioctl(fd, FIONREAD, &inq) != 0 || inq < 0)
            return false;
        len = sizeof ti;
        if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, ti, &len) != 0 || len < KS_TCPI_SIZE_MIN)
            return false;
        memcpy(&r2, ti + KS_TCPI_BYTES_RECEIVED, sizeof r2);
        if (r1 == r2 && r1 >= (uint64_t)inq) {
            *out = r1 - (uint64_t)inq;
            return true;
        }
    }
    return false;
}

uint64_t bs_rx_watch(int fd)
{
    if (!__atomic_load_n(&rx_allowed, __ATOMIC_ACQUIRE) || (unsigned)fd >= BS_FD_MAX ||
        !ks_ktls_kernel_has_tls())
        return 0;
    uint64_t id = 0;
    KS_SAVE_ERRNO;
    struct bs_rxfd *t = rx_table();
    struct stat st;
    uint64_t base;
    if (t && fstat(fd, &st) == 0 && socket_consumed(fd, &base)) {
        struct bs_rxfd *f = &t[fd];
        if (bs_rx_fd(fd))
            rx_clear(fd, f); /* a descriptor reused: its old entry goes */
        f->dev = st.st_dev;
        f->ino = st.st_ino;
        f->base = base;
        f->taken = 0;
        f->tail_len = 0;
        f->err = 0;
        f->state = RXF_WATCH;
        __atomic_add_fetch(&bs_rx_watching, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&bs_rx_nfds, 1, __ATOMIC_RELAXED);
        __atomic_fetch_or(&bs_rx_bits[fd / 64], 1ULL << (fd % 64), __ATOMIC_RELEASE);
        id = (uint64_t)st.st_ino;
    }
    KS_RESTORE_ERRNO;
    return id;
}

/* The entry is still that of the socket id (a descriptor closed before its
 * connection's end may already be another connection's). */
static struct bs_rxfd *rx_entry_of(int fd, uint64_t id)
{
    struct bs_rxfd *f = id ? rx_entry(fd) : NULL;
    return f && (uint64_t)f->ino == id ? f : NULL;
}

void bs_rx_unwatch(int fd, uint64_t id)
{
    struct bs_rxfd *f = rx_entry_of(fd, id);
    if (f && f->state == RXF_WATCH)
        rx_clear(fd, f);
}

void ks_biosock_rx_end(int fd, uint64_t id)
{
    struct bs_rxfd *f = rx_entry_of(fd, id);
    if (f)
        rx_clear(fd, f);
}

/* ---- the tails ---- */

void bs_rx_tail_add(uint8_t *tail, uint8_t *tail_len, const uint8_t *p, size_t n)
{
    if (n >= BS_RX_TAIL) {
        memcpy(tail, p + n - BS_RX_TAIL, BS_RX_TAIL);
        *tail_len = BS_RX_TAIL;
        return;
    }
    size_t keep = *tail_len + n > BS_RX_TAIL ? BS_RX_TAIL - n : *tail_len;
    memmove(tail, tail + *tail_len - keep, keep);
    memcpy(tail + keep, p, n);
    *tail_len = (uint8_t)(keep + n);
}

/* The hooked read of r bytes into iov (cnt entries) on a watched fd. */
static void watch_took(struct bs_rxfd *f, const struct iovec *iov, size_t cnt, size_t r)
{
    f->taken += r;
    /* The last bytes: walk the entries that hold them. */
    size_t skip = r > BS_RX_TAIL ? r - BS_RX_TAIL : 0;
    for (size_t i = 0; i < cnt && r; i++) {
        size_t n = iov[i].iov_len < r ? iov[i].iov_len : r;
        r -= n;
        if (skip >= n) {
            skip -= n;
            continue;
        }
        bs_rx_tail_add(f->tail, &f->tail_len, (const uint8_t *)iov[i].iov_base + skip, n - skip);
        skip = 0;
    }
}

void bs_rx_took(int fd, const struct iovec *iov, size_t cnt, ssize_t r, int flags)
{
    struct bs_rxfd *f = rx_entry(fd);
    if (f && f->state == RXF_WATCH && r > 0 && !(flags & MSG_PEEK))
        watch_took(f, iov, cnt, (size_t)r);
}

void bs_rx_bio_took(BIO *b, const void *p, int n)
{
    if (bs_api.next(b) || bs_libcrypto_bio(b) || bs_memory_bio(b))
        return;
    struct bs_bio *st = bs_bio_state_make(b);
    if (st)
        bs_rx_tail_add(st->rx_tail, &st->rx_tail_len, p, (size_t)n);
}

int ks_biosock_rx_fd(BIO *rbio, BIO *wbio)
{
    if (!rbio || !api_ready() || bs_api.next(rbio))
        return -1; /* a chain: libssl's reads would not be the BIO's */
    struct bs_bio *st = bs_bio_state(rbio);
    int fd = st && st->fd >= 0 && !st->ambiguous ? st->fd : -1;
    if (fd < 0 && wbio && wbio != rbio) {
        st = bs_bio_state(bs_chain_end(wbio));
        fd = st && st->fd >= 0 && !st->ambiguous ? st->fd : -1;
    }
    struct bs_rxfd *f = fd >= 0 ? rx_entry(fd) : NULL;
    return f && f->state == RXF_WATCH ? fd : -1;
}

bool ks_biosock_rx_caught_up(BIO *rbio, int fd)
{
    struct bs_bio *st = rbio ? bs_bio_state(rbio) : NULL;
    struct bs_rxfd *f = rx_entry(fd);
    if (!st || !f || f->state != RXF_WATCH || st->rx_tail_len < BS_RX_TAIL ||
        f->tail_len < BS_RX_TAIL || memcmp(st->rx_tail, f->tail, BS_RX_TAIL) != 0)
        return false;
    KS_SAVE_ERRNO;
    uint64_t now = 0;
    bool ok = same_socket(fd, f) && socket_consumed(fd, &now) && now - f->base == f->taken;
    KS_RESTORE_ERRNO;
    if (!ok)
        ks_log_debug("fd %d: the program's reads and libssl's agree, but the socket's count does "
                     "not (a read the hooks did not see, or bytes arriving): not yet",
                     fd);
    return ok;
}

bool ks_biosock_rx_frame(int fd, uint64_t *id)
{
    struct bs_rxfd *f = rx_entry(fd);
    if (!f || f->state != RXF_WATCH)
        return false;
    *id = (uint64_t)f->ino;
    __atomic_sub_fetch(&bs_rx_watching, 1, __ATOMIC_RELAXED);
    f->state = RXF_FRAMED;
    f->spill_len = f->spill_off = 0;
    f->err = 0;
    return true;
}

/* ---- the program's reads of a framed socket ---- */

/* Copies n bytes from p into iov at byte offset pos. */
static void iov_put(const struct iovec *iov, size_t cnt, size_t pos, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < cnt && n; i++) {
        if (pos >= iov[i].iov_len) {
            pos -= iov[i].iov_len;
            continue;
        }
        size_t k = iov[i].iov_len - pos < n ? iov[i].iov_len - pos : n;
        memcpy((uint8_t *)iov[i].iov_base + pos, p, k);
        p += k;
        n -= k;
        pos = 0;
    }
}

/* The part of iov from byte pos on, at most max bytes, as entries in sub
 * (at most nsub); their count. */
static size_t iov_sub(const struct iovec *iov, size_t cnt, size_t pos, size_t max,
                      struct iovec *sub, size_t nsub)
{
    size_t k = 0;
    for (size_t i = 0; i < cnt && max && k < nsub; i++) {
        if (pos >= iov[i].iov_len) {
            pos -= iov[i].iov_len;
            continue;
        }
        size_t n = iov[i].iov_len - pos < max ? iov[i].iov_len - pos : max;
        sub[k].iov_base = (uint8_t *)iov[i].iov_base + pos;
        sub[k].iov_len = n;
        k++;
        max -= n;
        pos = 0;
    }
    return k;
}

/* One recvmsg with the record type: -1 with errno; 0 with *type 0 at the
 * end of the stream. */
static ssize_t recv_typed(int fd, struct iovec *iov, size_t cnt, int flags, uint8_t *type)
{
    union {
        char buf[CMSG_SPACE(sizeof(uint8_t))];
        struct cmsghdr align;
    } cbuf;
    struct msghdr m = {.msg_iov = iov,
                       .msg_iovlen = cnt,
                       .msg_control = cbuf.buf,
                       .msg_controllen = sizeof cbuf.buf};
    ssize_t r = ks_libc_table.recvmsg(fd, &m, flags);
    *type = 0;
    if (r < 0)
        return r;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
        if (c->cmsg_level == SOL_TLS && c->cmsg_type == TLS_GET_RECORD_TYPE)
            *type = *CMSG_DATA(c);
    if (r > 0 && *type == 0)
        *type = RX_REC_DATA;
    return r;
}

static void put_header(uint8_t *h, uint8_t type, size_t n)
{
    h[0] = type;
    h[1] = RX_MARK1;
    h[2] = RX_MARK2;
    h[3] = (uint8_t)(n >> 8);
    h[4] = (uint8_t)n;
}

/* What the spill holds, into iov from byte pos on (at most n bytes); peek
 * leaves it there. */
static size_t from_spill(struct bs_rxfd *f, const struct iovec *iov, size_t cnt, size_t pos,
                         size_t n, bool peek)
{
    size_t have = (size_t)(f->spill_len - f->spill_off);
    if (n > have)
        n = have;
    iov_put(iov, cnt, pos, f->spill + f->spill_off, n);
    if (!peek) {
        f->spill_off += (uint16_t)n;
        if (f->spill_off == f->spill_len) {
            explicit_bzero(f->spill, f->spill_len);
            f->spill_off = f->spill_len = 0;
        }
    }
    return n;
}

/* A read fills what it is given, as a plain socket read does, and nothing
 * the kernel gave is kept back where the program's poll cannot see it:
 * - a short read still means the socket had no more (an event loop that
 *   takes it so, and waits for the next edge, is never left with records in
 *   the kernel): pieces follow one another, the first as the program's
 *   flags say, the others without waiting (an error met then is said at the
 *   next read);
 * - where the room left cannot take the next piece whole (fewer than 6
 *   bytes, or a control record longer than what is left: control records
 *   are never split, tls/kswitch/rx.c takes each whole), the rest of the
 *   read is padding (RX_PAD bytes, which the reader skips): the read is
 *   full, the program reads again, the record waits in the kernel;
 * - a read of fewer than 69 bytes in all (a libssl-like BIO reads a
 *   record's 5-byte header, then its body) takes a whole record into the
 *   spill, and the next reads (the body's) are served from there.
 * A peek shows one piece (or the spill) and takes nothing. */
static ssize_t framed_read(struct bs_rxfd *f, int fd, const struct iovec *iov, size_t cnt,
                           int flags)
{
    size_t room = 0;
    for (size_t i = 0; i < cnt; i++)
        room += iov[i].iov_len;
    bool peek = flags & MSG_PEEK;
    flags &= MSG_PEEK | MSG_DONTWAIT;
    if (room == 0)
        return 0;
    if (f->spill_len)
        return (ssize_t)from_spill(f, iov, cnt, 0, room, peek);
    if (f->err) {
        errno = f->err;
        if (!peek)
            f->err = 0;
        return -1;
    }
    uint8_t type;
    ssize_t r;
    if (room < RX_HDR + BS_RX_SPILL) { /* small: a whole record through the spill */
        if (!f->spill && !(f->spill = malloc(RX_SPILL_CAP))) {
            errno = ENOMEM;
            return -1;
        }
        struct iovec one = {f->spill + RX_HDR, RX_PIECE};
        r = recv_typed(fd, &one, 1, flags, &type);
        if (r <= 0 && type == 0)
            return r;
        put_header(f->spill, type, (size_t)r);
        f->spill_off = 0;
        f->spill_len = (uint16_t)(RX_HDR + r);
        size_t n = from_spill(f, iov, cnt, 0, room, peek);
        if (peek) {
            explicit_bzero(f->spill, f->spill_len);
            f->spill_len = 0;
        }
        return (ssize_t)n;
    }
    size_t pos = 0;
    bool full = false; /* stopped for want of room, with a record waiting */
    while (!full && room - pos >= RX_HDR + 1) {
        int fl = pos ? flags | MSG_DONTWAIT : flags;
        size_t left = room - pos - RX_HDR;
        if (left < BS_RX_SPILL) {
            /* A control record must fit whole: look at the next one first. */
            uint8_t look[BS_RX_SPILL];
            struct iovec one = {look, sizeof look};
            r = recv_typed(fd, &one, 1, fl | MSG_PEEK, &type);
            explicit_bzero(look, sizeof look);
            if (r < 0 || (r == 0 && type == 0))
                goto stop;
            if (type != RX_REC_DATA && (size_t)r > left) {
                full = true;
                break;
            }
        }
        struct iovec sub[16];
        size_t ns = iov_sub(iov, cnt, pos + RX_HDR, left < RX_PIECE ? left : RX_PIECE, sub, 16);
        r = recv_typed(fd, sub, ns, fl, &type);
        if (r < 0 || (r == 0 && type == 0))
            goto stop;
        uint8_t h[RX_HDR];
        put_header(h, type, (size_t)r);
        iov_put(iov, cnt, pos, h, RX_HDR);
        pos += RX_HDR + (size_t)r;
        if (peek)
            return (ssize_t)pos;
    }
    if (!peek && pos < room && (full || room - pos < RX_HDR + 1)) {
        /* Padding to the end: unless the next read finds the socket empty,
         * a short read here would be taken for that. */
        static const uint8_t zeros[RX_HDR + BS_RX_SPILL];
        iov_put(iov, cnt, pos, zeros, room - pos);
        pos = room;
    }
    return (ssize_t)pos;
stop: /* an error, nothing more now, or the end of the stream */
    if (r < 0 && !pos)
        return -1;
    if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        f->err = errno; /* said at the next read */
    return (ssize_t)pos;
}

bool bs_rx_read(int fd, const struct iovec *iov, size_t cnt, int flags, ssize_t *ret)
{
    struct bs_rxfd *f = rx_entry(fd);
    if (!f || f->state != RXF_FRAMED)
        return false;
    if (!same_socket(fd, f)) {
        rx_clear(fd, f); /* the connection is gone; the descriptor is another's */
        return false;
    }
    int saved = errno; /* a read that returns bytes leaves errno as it was */
    *ret = framed_read(f, fd, iov, cnt, flags);
    if (*ret >= 0)
        errno = saved;
    return true;
}

/* ---- the library's reads of the framed stream, through the program's BIO ---- */

/* One BIO_read: bytes, or -1 with errno (EAGAIN: the BIO asks to retry),
 * or 0 at the end of the stream. */
static int bio_take(BIO *b, void *p, int n)
{
    errno = 0;
    int r = bs_api.read(b, p, n);
    if (r > 0)
        return r;
    if (bs_api.test_flags(b, BIO_FLAGS_SHOULD_RETRY)) {
        errno = EAGAIN;
        return -1;
    }
    if (r == 0)
        return 0;
    if (!errno)
        errno = EIO;
    return -1;
}

void ks_biosock_rx_release(struct ks_bio_rx *p)
{
    explicit_bzero(p, sizeof *p);
}

ssize_t ks_biosock_rx_read(BIO *rbio, struct ks_bio_rx *p, void *buf, size_t n, uint8_t *type)
{
    *type = 0;
    for (;;) {
        if (p->hdr_got < RX_HDR) {
            /* As much of a header as is missing, exactly (their BIO reads
             * no further ahead than libssl's reads would have). */
            int r = bio_take(rbio, p->hdr + p->hdr_got, RX_HDR - p->hdr_got);
            if (r < 0)
                return -1;
            if (r == 0) {
                if (p->hdr_got == 0)
                    return 0; /* the end of the stream, at a piece's start */
                errno = EPROTO;
                return -1;
            }
            p->hdr_got += (uint8_t)r;
            uint8_t pad = 0; /* padding before the piece: dropped */
            while (pad < p->hdr_got && p->hdr[pad] == RX_PAD)
                pad++;
            memmove(p->hdr, p->hdr + pad, p->hdr_got - pad);
            p->hdr_got -= pad;
            if (p->hdr_got < RX_HDR)
                continue;
            size_t len = (size_t)p->hdr[3] << 8 | p->hdr[4];
            if (p->hdr[0] < 20 || p->hdr[0] > 23 || p->hdr[1] != RX_MARK1 ||
                p->hdr[2] != RX_MARK2 || len > RX_PIECE) {
                /* Not what rxframe.c wrote: the stream is not the socket's. */
                errno = EPROTO;
                return -1;
            }
            p->left = (uint16_t)len;
            p->ctl_got = 0;
            if (len == 0 && p->hdr[0] == RX_REC_DATA) {
                p->hdr_got = 0; /* an empty record */
                continue;
            }
        }
        uint8_t t = p->hdr[0];
        if (t == RX_REC_DATA) {
            int r = bio_take(rbio, buf, (int)(n < p->left ? n : p->left));
            if (r <= 0) {
                if (r == 0)
                    errno = EPROTO; /* the stream ended inside a piece */
                return -1;
            }
            p->left -= (uint16_t)r;
            if (!p->left)
                p->hdr_got = 0;
            *type = t;
            return r;
        }
        /* A control record: whole (alerts, KeyUpdate), or its first
         * BS_RX_SPILL bytes, which are enough to refuse it. */
        size_t whole = p->left < sizeof p->ctl ? p->left : sizeof p->ctl;
        while (p->ctl_got < whole) {
            int r = bio_take(rbio, p->ctl + p->ctl_got, (int)(whole - p->ctl_got));
            if (r <= 0) {
                if (r == 0)
                    errno = EPROTO;
                return -1;
            }
            p->ctl_got += (uint8_t)r;
        }
        size_t k = whole < n ? whole : n;
        memcpy(buf, p->ctl, k);
        explicit_bzero(p->ctl, sizeof p->ctl);
        p->left -= (uint16_t)whole;
        p->ctl_got = 0;
        if (!p->left)
            p->hdr_got = 0;
        *type = t;
        return (ssize_t)k;
    }
}
