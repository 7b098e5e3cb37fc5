/* bioproof.c — which BIO chains kTLS may be switched under.
 *
 * Why: libssl's kTLS (switched on by the library's SSL_OP_ENABLE_KTLS) asks
 * the BIO with BIO_CTRL_SET_KTLS, and the BIO's ctrl answers. A program may
 * build its BIO method as a copy of libcrypto's socket method: PostgreSQL's
 * backend takes BIO_s_socket()'s ctrl, create, destroy, gets and puts and
 * puts its own read and write (plain recv()/send()) under a type of its own.
 * libcrypto's ctrl then switches the socket, while the reads libssl's kTLS
 * record layer relies on (libcrypto's sock_read gives each record with its
 * type, from recvmsg and TLS_GET_RECORD_TYPE) and the writes of control
 * records (libcrypto's sock_write sends them with TLS_SET_RECORD_TYPE) are
 * the program's own: a TLS 1.2 receive side fails on the first record, a
 * control record would leave as application data. Same ctrl, same type
 * bits, even the same name prove nothing about read and write.
 *
 * The proof: a BIO's method is libcrypto's own static method object exactly
 * when BIO_method_name() gives the address of that object's name. Since
 * OpenSSL 1.1.1, BIO_meth_new() keeps a copy of the name it is given, and
 * BIO_METHOD is opaque: no method made by a program can point there. The
 * addresses are learnt once, from one BIO made with each of libcrypto's
 * methods (BIO_s_socket, BIO_s_connect, BIO_s_accept, BIO_s_fd,
 * BIO_s_datagram, BIO_s_mem, BIO_s_bio, BIO_f_buffer).
 *
 * A chain is proven for kTLS (KS_BIO_SOCKET) when it is libcrypto's socket
 * or connect BIO alone, or on the send side under one of libcrypto's
 * buffering BIOs (libssl pushes one on the program's write BIO for the
 * handshake, and flushes it before it switches). Everything else: a chain
 * ending in the program's own BIO goes to biosock/, which takes over the
 * send side where it can find the socket and refuses the receive side; a
 * chain ending in libcrypto's descriptor BIO through anything unproven gets
 * no kTLS (bio_unproven); memory BIOs and the like have no socket.
 *
 * Cost: a few calls and pointer compares per question; asked at handshake
 * time and for libssl's kTLS controls, never per record. */
#include "tls/bioproof.h"
#include "core/libc.h"
#include "tls/ossl/sym.h"

#include <string.h>

enum { M_SOCKET, M_CONNECT, M_ACCEPT, M_FD, M_DGRAM, M_MEM, M_PAIR, M_BUFFER, M_N };

static const char *const ctor_names[M_N] = {
    [M_SOCKET] = "BIO_s_socket", [M_CONNECT] = "BIO_s_connect", [M_ACCEPT] = "BIO_s_accept",
    [M_FD] = "BIO_s_fd",         [M_DGRAM] = "BIO_s_datagram",  [M_MEM] = "BIO_s_mem",
    [M_PAIR] = "BIO_s_bio",      [M_BUFFER] = "BIO_f_buffer",
};

static const char *genuine[M_N]; /* atomic: each method's name, by address */
static int state;                /* atomic: 0 not yet, 1 learnt, -1 cannot be */
static __thread bool learning __attribute__((tls_model("initial-exec")));

static struct {
    const char *(*method_name)(const BIO *);
    BIO *(*next)(BIO *);
} fn;

/* One BIO of each of libcrypto's methods, made and freed at once: the
 * address of each method's name. Threads that race here learn the same
 * addresses; nothing is locked (this may run inside a BIO_ctrl hook). */
static bool learn(void)
{
    int s = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
    if (KS_LIKELY(s))
        return s > 0;
    if (learning) /* a BIO call made while learning came back here */
        return false;
    learning = true;
    KS_SAVE_ERRNO;
    BIO *(*bio_new)(const BIO_METHOD *) = ks_ossl_sym("BIO_new");
    int (*bio_free)(BIO *) = ks_ossl_sym("BIO_free");
    const char *(*method_name)(const BIO *) = ks_ossl_sym("BIO_method_name");
    BIO *(*next)(BIO *) = ks_ossl_sym("BIO_next");
    bool ok = bio_new && bio_free && method_name && next;
    for (int i = 0; ok && i < M_N; i++) {
        const BIO_METHOD *(*ctor)(void) = ks_ossl_sym(ctor_names[i]);
        const BIO_METHOD *m = ctor ? ctor() : NULL;
        BIO *b = m ? bio_new(m) : NULL;
        const char *name = b ? method_name(b) : NULL;
        if (b)
            bio_free(b);
        ok = name != NULL;
        __atomic_store_n(&genuine[i], name, __ATOMIC_RELAXED);
    }
    if (ok) {
        __atomic_store_n(&fn.method_name, method_name, __ATOMIC_RELAXED);
        __atomic_store_n(&fn.next, next, __ATOMIC_RELAXED);
    }
    __atomic_store_n(&state, ok ? 1 : -1, __ATOMIC_RELEASE);
    learning = false;
    KS_RESTORE_ERRNO;
    return ok;
}

/* Which of libcrypto's methods b's is, M_N if none. */
static int method_of(const BIO *b)
{
    const char *name = __atomic_load_n(&fn.method_name, __ATOMIC_RELAXED)(b);
    for (int i = 0; name && i < M_N; i++)
        if (name == __atomic_load_n(&genuine[i], __ATOMIC_RELAXED))
            return i;
    return M_N;
}

enum ks_bio_shape ks_bio_shape(BIO *b, bool tx)
{
    if (!b)
        return KS_BIO_OTHER;
    if (!learn())
        return KS_BIO_UNPROVEN;
    /* Down the chain: what sits above its end. */
    int buffers = 0;
    bool unproven = false;
    BIO *end = b;
    for (int depth = 0;; depth++) {
        BIO *n = __atomic_load_n(&fn.next, __ATOMIC_RELAXED)(end);
        if (!n)
            break;
        if (depth == 16)
            return KS_BIO_UNPROVEN; /* a loop, or deeper than any program's */
        if (method_of(end) == M_BUFFER)
            buffers++;
        else
            unproven = true;
        end = n;
    }
    switch (method_of(end)) {
    case M_SOCKET:
    case M_CONNECT:
        if (unproven || buffers > (tx ? 1 : 0))
            return KS_BIO_UNPROVEN;
        return KS_BIO_SOCKET;
    case M_ACCEPT:
    case M_FD:
    case M_DGRAM:
        return unproven || buffers ? KS_BIO_UNPROVEN : KS_BIO_OTHER;
    case M_MEM:
    case M_PAIR:
    case M_BUFFER: /* a buffer with nothing under it */
        return KS_BIO_OTHER;
    default:
        return KS_BIO_PROGRAM;
    }
}
