/* bs.h — what the files of biosock/ share, and why they exist. kTLS TX for
 * programs whose TLS I/O goes through a BIO of their own (Apache mod_ssl,
 * HAProxy, h2o): their BIO feeds their own buffers and event loop, which
 * write to an ordinary TCP socket, so libssl's kTLS controls
 * (BIO_CTRL_SET_KTLS, GET_KTLS_SEND, SET_KTLS_TX_SEND_CTRL_MSG) get "no"
 * and libssl stays in user space. Their bytes must keep going through their
 * code, in order, for their buffering and EAGAIN bookkeeping.
 *
 * 1. Finding the socket under their BIO (find.c).
 * 2. Switching TX: answering libssl's controls on it (ctrl.c).
 * 3. Control records and held bytes through their own writes (framing.c).
 * 4. RX: libssl's kTLS record layer cannot sit under their reads (ctrl.c
 *    says no to it); the own switch (tls/kswitch/) takes receive once
 *    their reads are proven to have reached libssl, and their reads of
 *    the socket are framed from then on (rxframe.c).
 * 5. Which chains are whose: bioproof.c, by the BIO's method. libssl's
 *    BIO_CTRL_SET_KTLS reaches libcrypto only under a chain proven to be
 *    its socket BIO; under a program's own BIO this module answers (TX) or
 *    says no (RX); under anything else (a filter of the program's over
 *    libcrypto's socket BIO) no, in every process (bio_unproven). A copy
 *    of libcrypto's socket method with the program's own read and write
 *    (PostgreSQL) is the program's: libcrypto's ctrl would switch the
 *    socket while the program's reads and writes know nothing of kTLS.
 * What is known of each such BIO: state.c. The hooks: bio.c (BIO_ctrl,
 * BIO_write, BIO_read) and io.c (libc's write, writev, send, sendto,
 * sendmsg, and read, readv, recv, recvfrom, recvmsg, the _chk forms).
 *
 * Cost: until a handshake call meets a program's own BIO (nginx, Python,
 * s_server: libcrypto's socket BIOs; asyncio: memory BIOs) nothing of this
 * can apply, and each hook (BIO_write, BIO_read, the libc writes and read)
 * is one indirect jump to the real function; BIO_ctrl one test of the
 * command first (BIO_CTRL_SET_KTLS is always checked: 5. above). From then
 * on: two thread-local tests and one bitmap test per write call, a load and
 * a test per read call and BIO_read (a bitmap test where a socket is
 * watched or framed), a few tests on the command per BIO_ctrl.
 * While a thread follows a "later" BIO, its writes compare their first
 * bytes (at most BS_LATER_TRIES writes). */
#ifndef KTLSSHIM_BS_H
#define KTLSSHIM_BS_H

#include "tls/biosock/biosock.h"
#include "tls/ossl/api.h"

#include <openssl/bio.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* libcrypto's internal controls (include/internal/bio.h in OpenSSL 3). */
#define KS_BIO_CTRL_SET_KTLS 72
#define KS_BIO_CTRL_SET_KTLS_TX_SEND_CTRL_MSG 74
#define KS_BIO_CTRL_CLEAR_KTLS_TX_CTRL_MSG 75

/* libcrypto: biosock's block of the one table (tls/ossl/api.c). This
 * library's own table: declared as such, a call through it is one
 * instruction (no load of its address first). */
extern struct ks_ossl_api ks_ossl_api __attribute__((visibility("hidden")));
#define bs_api ks_ossl_api.bio
#define api_ready ks_ossl_bio_ready
#define BS_RESOLVE(field, name) ks_ossl_bio_sym((void **)&bs_api.field, name)

/* This module's own data, declared as such: read with no GOT load. */
#define BS_HIDDEN __attribute__((visibility("hidden")))

#define BS_FD_MAX 65536   /* descriptors whose control records can be noted */
#define BS_SIG_MAX 48     /* record and handshake headers, version, random */
#define BS_SIG_MIN 32     /* fewer bytes known: too weak to name a socket */
#define BS_LATER_TRIES 64 /* writes on a thread before `later` gives up */
#define BS_HELD_MAX 16384 /* bytes a "later" BIO may hold at the switch point */
#define BS_RX_TAIL 16     /* receive: the stream's last bytes compared (an AEAD tag's) */
#define BS_RX_SPILL 64    /* receive: a control record's bytes kept whole */

/* ---- the hooks' one jump (bio.c, io.c) ----
 * Everything this module does is for a program's own BIO. Until a handshake
 * call meets one (ks_biosock_handshake_bios, for good), no BIO_ctrl,
 * BIO_write, BIO_read nor libc write or read has anything for it to do: each
 * hook is then one indirect jump through its pointer, to libcrypto's or
 * libc's function (BIO_ctrl: to bio_ctrl_proving, which tests the command,
 * BIO_CTRL_SET_KTLS being libssl's request to switch that bioproof.c must
 * allow). Each pointer starts at a function that finds the real one (and
 * puts it there, unless a program's BIO was met meanwhile); once one is met,
 * it is the hook's watching function, which tests what the hook must act
 * on. The load is an acquire: a watching function may read what was
 * published before it was put there (libc's table, io.c). */
#define HOOK_SET(hook, from, to)                                                                   \
    do {                                                                                           \
        __typeof__(hook) from_ = (from);                                                           \
        __atomic_compare_exchange_n(&(hook), &from_, (to), false, __ATOMIC_SEQ_CST,                \
                                    __ATOMIC_SEQ_CST);                                             \
    } while (0)
#define HOOK_JUMP(hook) __atomic_load_n(&(hook), __ATOMIC_ACQUIRE)

/* ---- what is known of a program's BIO (state.c) ---- */

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
    uint8_t rx_tail_len; /* receive (rxframe.c): the last bytes libssl read through it */
    uint8_t rx_tail[BS_RX_TAIL];
    uint64_t rx_id; /* the socket watched for it (bs_rx_watch), 0 none */
};

/* The state of the chain end b, or NULL; _make: made if there is none. */
struct bs_bio *bs_bio_state(const BIO *b);
struct bs_bio *bs_bio_state_make(BIO *b);
void bs_bio_unref(struct bs_bio *st);
/* The BIO at the end of the chain (libssl puts a buffering BIO on top of
 * the program's during the handshake). */
BIO *bs_chain_end(BIO *b);
/* A chain end that is libcrypto's own BIO, not the program's. */
bool bs_libcrypto_bio(BIO *end);
/* A BIO with no socket behind it by design: a memory BIO or a BIO pair. */
bool bs_memory_bio(BIO *b);

extern int bs_any_tx BS_HIDDEN;    /* atomic: some BIO got kTLS TX from us (ctrl.c) */
extern int bs_hellos_on BS_HIDDEN; /* atomic: a "later" BIO was found: read() notes
                            ClientHellos (find.c) */
extern int bs_watching BS_HIDDEN;  /* atomic: a program's own BIO was met (bio.c) */
void bs_own_bio_seen(void);        /* from now on every hook watches (bio.c) */
void bs_io_watch(void);            /* the libc hooks' part of it (io.c) */

/* ---- finding the socket (find.c) ---- */

/* The watch: which descriptor a BIO call writes to. */
struct bs_watch {
    BIO *target; /* the chain end being watched, NULL when none */
    int fd;
    bool multi;
    bool last_short; /* the last write on fd sent less than asked (or EAGAIN) */
    bool queued;
    uint64_t handed; /* bytes the program's BIO took in this call */
    uint8_t sig_len; /* the first of them, to know them again */
    uint8_t sig[BS_SIG_MAX];
};
extern __thread struct bs_watch bs_watch __attribute__((tls_model("initial-exec")));

/* later: the thread follows a BIO that took bytes and wrote nothing. */
struct bs_later {
    struct bs_bio *st; /* a reference (refs), NULL when none */
    uint8_t sig_len;
    uint8_t tries;
    bool matched; /* the write in progress is the one: bs_later_sent follows */
    uint8_t sig[BS_SIG_MAX];
};
extern __thread struct bs_later bs_later __attribute__((tls_model("initial-exec")));

bool bs_watch_begin(BIO *b);
void bs_watch_end(void);
void bs_watch_handed(const void *p, int n);
void bs_watch_wrote(int fd, ssize_t r, size_t n, int err);
/* The watched call returned: success after its last socket write was short
 * means the program kept the rest to send later, from its own buffers. */
static inline void bs_watch_returned(bool all_taken)
{
    if (all_taken && bs_watch.last_short)
        bs_watch.queued = true;
}
static inline void bs_watch_saw(int fd)
{
    if (bs_watch.fd < 0)
        bs_watch.fd = fd;
    else if (bs_watch.fd != fd)
        bs_watch.multi = true;
}
void bs_later_drop(void);
void bs_later_check(int fd, const struct msghdr *m);
void bs_later_sent(ssize_t r);
void bs_hello_note(int fd, const uint8_t *b);
void bs_rx_saw(BIO *b, const void *p, int n);

/* ---- answering libssl's controls (ctrl.c) ---- */

/* A control record is announced: its payload is the next BIO_write. */
struct bs_ctrl_next {
    BIO *bio; /* the BIO libssl announced it on (its next BIO_write is the record) */
    int fd;
    uint8_t type;
    bool armed;
};
extern __thread struct bs_ctrl_next bs_ctrl_next __attribute__((tls_model("initial-exec")));

/* libssl's kTLS controls (72-75) on the chain b: true with *ret when this
 * module answers, false when libcrypto's BIO_ctrl does. */
bool bs_ctrl(BIO *b, int cmd, long num, void *ptr, long *ret);
/* BIO_write of the announced control record's payload (bs_ctrl_next armed). */
int bs_ctrl_write(BIO *b, const void *data, int dlen);

/* ---- per-socket notes (framing.c) ---- */

extern uint64_t bs_pending[BS_FD_MAX / 64] BS_HIDDEN; /* bit: fd has segments noted */
extern int bs_pending_fds BS_HIDDEN; /* atomic: at least the bits set in bs_pending (0: none) */

/* One load per write call while no socket has a note (the fast path). */
static inline bool bs_fd_pending(int fd)
{
    return __atomic_load_n(&bs_pending_fds, __ATOMIC_RELAXED) && (unsigned)fd < BS_FD_MAX &&
           (__atomic_load_n(&bs_pending[fd / 64], __ATOMIC_RELAXED) & (1ULL << (fd % 64)));
}

/* Notes can be kept for fd (below BS_FD_MAX, and the table made). */
bool bs_frames_ready(int fd);
/* The next n bytes written to fd (after those already noted) are the
 * payload of one record of type `type`; _unnote: n bytes noted last were not
 * taken by the program's BIO after all (SIZE_MAX: all). */
void bs_ctrl_note(int fd, uint8_t type, size_t n);
void bs_ctrl_unnote(int fd, size_t n);
/* TLS_TX for fd once exactly held[0..len) has left through the program's
 * writes: the key (crypto_info, ci_len bytes) is kept until then. */
bool bs_frame_hold(int fd, const void *crypto_info, socklen_t ci_len, const uint8_t *held,
                   uint32_t len);
/* The BIO whose TX this module installed on fd is freed. */
void bs_frame_bio_gone(int fd);
/* A write hook's call on fd with a note pending: sends what it must (a
 * record, the held bytes) or fails; true with *ret, false: the real call. */
bool bs_frame_write(int fd, const struct msghdr *m, int flags, ssize_t *ret);

/* ---- receive under a program's BIO (rxframe.c) ---- */

extern uint64_t bs_rx_bits[BS_FD_MAX / 64] BS_HIDDEN; /* bit: fd watched or framed */
extern int bs_rx_nfds BS_HIDDEN;                      /* atomic: at least the bits set (0: none) */
extern int bs_rx_watching BS_HIDDEN; /* atomic: sockets watched (BIO_read keeps tails) */

/* One load per read call while no socket is watched or framed. */
static inline bool bs_rx_fd(int fd)
{
    return __atomic_load_n(&bs_rx_nfds, __ATOMIC_RELAXED) && (unsigned)fd < BS_FD_MAX &&
           (__atomic_load_n(&bs_rx_bits[fd / 64], __ATOMIC_ACQUIRE) & (1ULL << (fd % 64)));
}
/* fd was found under a program's BIO: its reads are watched from now on.
 * The socket's identity (its inode), 0 if it is not watched. */
uint64_t bs_rx_watch(int fd);
/* The BIO that watched fd (socket id) is gone: so is the watch (never a
 * framed fd, never another socket's). */
void bs_rx_unwatch(int fd, uint64_t id);
/* A hooked read of fd returned r into iov (cnt entries). */
void bs_rx_took(int fd, const struct iovec *iov, size_t cnt, ssize_t r, int flags);
/* libssl read n bytes at p through b (bio.c's BIO_read). */
void bs_rx_bio_took(BIO *b, const void *p, int n);
/* The program's read of fd when fd is framed: true with *ret. */
bool bs_rx_read(int fd, const struct iovec *iov, size_t cnt, int flags, ssize_t *ret);
/* Appends n bytes at p to a tail of BS_RX_TAIL bytes (*tail_len of them so far). */
void bs_rx_tail_add(uint8_t *tail, uint8_t *tail_len, const uint8_t *p, size_t n);

#endif
