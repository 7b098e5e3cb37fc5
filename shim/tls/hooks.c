/* tls/hooks.c — the OpenSSL hooks (OpenSSL 3, and 1.1 through the same bodies:
 * tls/ossl/gates.c; on 1.1 libssl has no kTLS, so both directions are the
 * own switch's, tls/kswitch/switch.c and tls/kswitch/tx.c).
 *
 * - SSL_CTX_new / SSL_CTX_new_ex: set SSL_OP_ENABLE_KTLS (unless
 *   KTLSSHIM_KTLS=off), so that libssl itself moves each connection's keys
 *   into the kernel when its handshake completes.
 * - SSL_accept / SSL_connect / SSL_do_handshake, and SSL_read / SSL_write
 *   (and their _ex forms, which may complete a handshake implicitly): when a
 *   connection's handshake is seen complete for the first time, record what
 *   it got: TLS version, kTLS TX and RX or the reason for each fallback,
 *   software or NIC.
 * - An info callback on every SSL_CTX sees SSL_CB_HANDSHAKE_DONE too, for
 *   programs whose I/O goes through BIO_f_ssl (openssl s_server -WWW), where
 *   libssl calls its internals directly. The program's own info callbacks
 *   are kept and called: the setters and getters are hooked, so the program
 *   sees exactly what it set.
 * - SSL_read / SSL_write / SSL_sendfile: bytes by path.
 *
 * - Sharded: every SSL_CTX gets the workers' shared session resumption
 *   (resume.c), unless the program set its own ticket keys or callbacks
 *   (SSL_CTX_set_tlsext_ticket_key_evp_cb, SSL_CTX_ctrl and
 *   SSL_CTX_callback_ctrl are watched for that).
 *
 * Per-connection state hangs off the SSL object (ex_data), freed by libssl
 * with the SSL; per-context state likewise off the SSL_CTX. Each direction records its path, so
 * that a later installer of keys of our own (for what libssl cannot do) only adds a path value. */
#include "tls/ossl/hooks.h" /* first: the hook bodies' names */
#include "tls/biosock/biosock.h"
#include "tls/bioproof.h"
#include "core/common.h"
#include "core/config.h"
#include "stats/connlog.h"
#include "tls/connwatch.h"
#include "tls/kswitch/kswitch.h"
#include "kernel/ktls.h"
#include "core/log.h"
#include "tls/ossl/gates.h"
#include "tls/ossl/api.h"
#include "core/libc.h"
#include "tls/resume.h"
#include "tls/tls.h"
#include "stats/stats.h"
#include "tls/ossl/sym.h"

#include <openssl/bio.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum ks_path {
    KS_PATH_USER = 0,     /* user-space TLS in libssl */
    KS_PATH_KTLS_OPENSSL, /* kTLS set up by libssl */
    KS_PATH_KTLS_OWN,     /* kTLS set up by the library's own switch (tls/kswitch/switch.c) */
    KS_PATH_KTLS_BIO,     /* kTLS by libssl through the program's own BIO (biosock/) */
};

struct ks_conn {
    uint8_t tx, rx;                   /* enum ks_path */
    uint8_t tx_reason, rx_reason;     /* enum ks_fallback, when on KS_PATH_USER */
    int fd;                           /* the socket with kTLS TX, -1 if none */
    bool rx_own_due;                  /* RX is for the own switch to try when the
                                         handshake call returns (tls/kswitch/switch.c) */
    bool tx_own_due;                  /* TX likewise, right after RX (tls/kswitch/tx.c) */
    bool tx_nic, rx_nic, offload_est; /* kTLS crypto on the NIC; a guess */
    bool watched;                     /* counted in ks_conns_watched (connwatch.h) */
    bool io;                          /* the program made an I/O call on it */
    pid_t user;                       /* the process that last used it (see below) */
    unsigned fork_gen;                /* fork_gen when its handshake was recorded */
    struct ks_connlog *log;           /* KTLSSHIM_CONN_LOG entry, NULL when off */
};

/* A connection is one process's to end.
 *
 * After fork() both processes hold a copy of every SSL (and of the socket);
 * usually one of them goes on with it and the other only frees its copy
 * and closes its descriptor: the parent of a server that forks a child per
 * connection after the handshake (Perl's IO::Socket::SSL servers), or a
 * child forked for other work (a CGI helper) that exits or execs. The rule:
 * a process USES a connection from its handshake on, and from its first
 * I/O call on it (SSL_read/_ex, SSL_peek/_ex, SSL_write/_ex, SSL_sendfile,
 * SSL_shutdown); the process that made the last such call in its own
 * history is its user (pid recorded in the copy, so a child's copy says
 * its parent until the child makes one). A process that merely holds a
 * copy is one that is not its user, or one that made no I/O call on it
 * since its handshake and forked since (the connection was handed over).
 *
 * The library never touches a connection's socket outside the program's
 * own calls on it: no read, drain, alert, close_notify or KeyUpdate of its
 * own at SSL_free, close or exit (own_free in tls/kswitch/switch.c wipes memory only),
 * and every call that does touch the socket makes the caller its user. So
 * SSL_free, SSL_shutdown-less close and exit in a holder do on the socket
 * exactly what libssl alone does (nothing). What a holder must not do
 * either is write the connection's KTLSSHIM_CONN_LOG line: the user writes
 * it, with the bytes it moved, once. A connection freed without any I/O
 * call after a fork since its handshake writes no line (docs/config.md). */
static unsigned fork_gen; /* forks of this process or its ancestors (both sides count) */

static void conn_forked(void)
{
    __atomic_add_fetch(&fork_gen, 1, __ATOMIC_RELAXED);
}

/* This process merely holds its copy of c (the rule above). */
static bool conn_held_only(const struct ks_conn *c)
{
    return c->user != ks_self_pid ||
           (!c->io && c->fork_gen != __atomic_load_n(&fork_gen, __ATOMIC_RELAXED));
}

/* The libssl/libcrypto functions we call: the one table (tls/ossl/api.h). */
#define api ks_ossl_api

static int conn_idx = -1;   /* SSL: struct ks_conn */
static int ssl_cb_idx = -1; /* SSL: the program's info callback */
static int ctx_idx = -1;    /* SSL_CTX: struct ks_ctx */

/* What we keep per SSL_CTX. All live contexts are on a list, so that a new
 * worker can set up the ones the program made before it forked. */
struct ks_ctx {
    ks_info_cb_t cb;     /* the program's info callback */
    bool own_tickets;    /* the program set ticket keys or a callback */
    bool shared_tickets; /* we installed the workers' shared ticket keys */
    SSL_CTX *ctx;
    struct ks_ctx *prev, *next;
};
static struct ks_ctx *ctx_list;
static pthread_mutex_t ctx_list_lock = PTHREAD_MUTEX_INITIALIZER;

/* Fork handlers, registered when the hooks are first used (resolve()).
 * A fork while another thread holds the list's lock would leave the child
 * with it held for ever (its next SSL_CTX_new or SSL_CTX_free would hang):
 * fork waits for it, and both sides let it go (the lock is held only around
 * list updates, which never fork). Both sides also count the fork for the
 * connections' ownership (conn_forked). */
static void before_fork(void)
{
    pthread_mutex_lock(&ctx_list_lock);
}
static void after_fork(void)
{
    pthread_mutex_unlock(&ctx_list_lock);
    conn_forked();
}

static void ctx_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    struct ks_ctx *k = ptr;
    if (!k)
        return;
    pthread_mutex_lock(&ctx_list_lock);
    if (k->prev)
        k->prev->next = k->next;
    else if (ctx_list == k)
        ctx_list = k->next;
    if (k->next)
        k->next->prev = k->prev;
    pthread_mutex_unlock(&ctx_list_lock);
    free(k);
}
static bool api_ok; /* every helper above was found */
static pthread_once_t api_once = PTHREAD_ONCE_INIT;

static void conn_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    struct ks_conn *c = ptr;
    if (!c)
        return;
    if (c->fd >= 0)
        ks_ktls_fd_mark(c->fd, false);
    if (KS_UNLIKELY(c->log)) {
        if (conn_held_only(c))
            free(c->log); /* the user's line, not a holder's */
        else
            ks_connlog_end(c->log);
    }
    if (c->watched)
        ks_conns_watch(-1);
    free(c);
}

static void box_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    free(ptr);
}

static void resolve(void)
{
    bool ok = ks_ossl_api_load();
    if (ok) {
        conn_idx =
            api.get_ex_new_index(CRYPTO_EX_INDEX_SSL, 0, NULL, NULL, ks_ex_dup_keep_own, conn_free);
        ssl_cb_idx =
            api.get_ex_new_index(CRYPTO_EX_INDEX_SSL, 0, NULL, NULL, ks_ex_dup_keep_own, box_free);
        ctx_idx = api.get_ex_new_index(CRYPTO_EX_INDEX_SSL_CTX, 0, NULL, NULL, NULL, ctx_free);
    }
    api_ok = ok && conn_idx >= 0 && ssl_cb_idx >= 0 && ctx_idx >= 0;
    if (api_ok && pthread_atfork(before_fork, after_fork, after_fork) != 0)
        api_ok = false; /* no memory: the hooks pass everything through */
    if (api_ok) {
        ks_switch_setup();
        ks_ossl_flavour_loaded(); /* the record says which OpenSSL */
    }
    if (!api_ok)
        ks_log_error("%s lacks functions the library needs; kTLS statistics are off "
                     "for this process (connections are untouched)",
                     ks_ossl_flavour() == KS_OSSL_111 ? "libssl.so.1.1" : "libssl.so.3");
    /* Every function the fast paths call is there: they may run. */
    if (api_ok && api.read && api.read_ex && api.write && api.write_ex && api.get_error)
        ks_conns_watch(-1);
}

/* Called on every hook: after the first call this is one load. */
static inline void need_api(void)
{
    pthread_once(&api_once, resolve);
}

bool ks_ossl_ready(void)
{
    need_api();
    return api_ok;
}

/* The SSL whose SSL_accept / SSL_do_handshake (called by the program) is
 * running on this thread: its handshake completing there has read nothing
 * past the peer's Finished (tls/kswitch/switch.c relies on it). */
static __thread SSL *handshake_call;

/* The program called an OpenSSL 3 function whose real definition cannot be
 * found (no libssl.so.3 this library can see: it cannot happen when the
 * program's libssl is loaded). Never abort in the program: the hook fails
 * the call the way libssl fails it (an error return), and says so once. */
static void missing(const char *name)
{
    static int said;
    if (!__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
        ks_log_error("cannot find the real %s in any loaded libssl.so.3; failing the call "
                     "(further such calls fail silently)",
                     name);
}

/* ---- what a completed handshake got ---- */

static bool cipher_ktls_capable(const char *name, int version)
{
    if (!name)
        return false;
    if (strstr(name, "GCM") || strstr(name, "CHACHA20"))
        return true;
    /* AES-128-CCM (not CCM8) is carried for TLS 1.2 by OpenSSL 3.0. */
    return version == TLS1_2_VERSION && strstr(name, "AES128-CCM") && !strstr(name, "CCM8");
}

static enum ks_fallback why_not(SSL *s, bool tx, int version, const char *cipher)
{
    int mode = ks_config()->ktls;
    /* OpenSSL 1.1's libssl has no kTLS: only the own switch can. */
    bool v111 = ks_ossl_flavour() == KS_OSSL_111;
    /* KTLSSHIM_KTLS=own: libssl is not asked; the own switch does both
     * directions (sending only where its send side can run). */
    if (mode == KS_KTLS_OFF || (mode == KS_KTLS_OWN && tx && !ks_switch_tx_ready()) ||
        (mode != KS_KTLS_OWN && !v111 && !(api.get_options(s) & SSL_OP_ENABLE_KTLS)))
        return KS_FB_DISABLED;
    BIO *b = tx ? api.get_wbio(s) : api.get_rbio(s);
    /* libcrypto's socket BIO itself, proven by its method (bioproof.c), for
     * both directions: the own switch reads and writes the socket past it. */
    enum ks_bio_shape shape = ks_bio_shape(b, false);
    if (shape == KS_BIO_UNPROVEN)
        return KS_FB_BIO_UNPROVEN;
    bool own_bio = shape != KS_BIO_SOCKET, found = own_bio && !v111 && ks_biosock_found(b, tx);
    if (own_bio && v111)
        return KS_FB_NOT_SOCKET;
    if (own_bio && !found)
        return ks_biosock_reason(b, tx, false);
    if (!ks_ktls_kernel_has_tls())
        return KS_FB_NO_KERNEL_TLS;
    if (version != TLS1_2_VERSION && version != TLS1_3_VERSION)
        return KS_FB_VERSION;
    if (!cipher_ktls_capable(cipher, version))
        return KS_FB_CIPHER;
    if (own_bio)
        return ks_biosock_reason(b, tx, true);
    /* OpenSSL before 3.2 has no TLS 1.3 receive offload; 1.1 none at all. */
    if (v111 || (!tx && version == TLS1_3_VERSION && api.version_num() < 0x30200000UL))
        return KS_FB_LIBSSL;
    return KS_FB_OTHER;
}

static const char *reason_text(enum ks_fallback r)
{
    switch (r) {
    case KS_FB_DISABLED:
        return "kTLS disabled (KTLSSHIM_KTLS=off or by the program)";
    case KS_FB_NOT_SOCKET:
        return "the connection's BIO is not a socket";
    case KS_FB_NO_KERNEL_TLS:
        return "the kernel has no tls ULP";
    case KS_FB_VERSION:
        return "a TLS version kTLS cannot carry";
    case KS_FB_CIPHER:
        return "a cipher kTLS cannot carry";
    case KS_FB_LIBSSL:
        return "this libssl cannot do it (OpenSSL 1.1 has no kTLS; TLS 1.3 receive needs 3.2)";
    case KS_FB_CLIENT:
        return "a client connection (receive left to libssl)";
    case KS_FB_UNREAD:
        return "libssl may hold received bytes (handshake not completed by "
               "SSL_accept/SSL_do_handshake, or read-ahead)";
    case KS_FB_REFUSED:
        return "the kernel refused the keys";
    case KS_FB_BIO_NO_FD:
        return "the program's own BIO, with no single TCP socket found under it";
    case KS_FB_BIO_BUSY:
        return "the program's own BIO still held output when libssl switched";
    case KS_FB_BIO_RX:
        return "receiving through the program's own BIO stays in user space";
    case KS_FB_BIO_UNPROVEN:
        return "a BIO chain kTLS is not proven sound under (a filter over libcrypto's socket BIO)";
    default:
        return "libssl did not enable it";
    }
}

static void count_fallback(SSL *s, struct ks_conn *c, bool tx, int version, const char *cipher,
                           enum ks_fallback r);

static void record_direction(SSL *s, struct ks_conn *c, bool tx, int version, const char *cipher)
{
    BIO *b = tx ? api.get_wbio(s) : api.get_rbio(s);
    /* OpenSSL 1.1: libssl never has kTLS, nor its BIOs these controls. */
    bool v111 = ks_ossl_flavour() == KS_OSSL_111;
    bool on = b && !v111 &&
              api.BIO_ctrl(b, tx ? BIO_CTRL_GET_KTLS_SEND : BIO_CTRL_GET_KTLS_RECV, 0, NULL) == 1;
    int bio_fd = on || !tx || v111 ? -1 : ks_biosock_tx_fd(b); /* biosock's switch */
    if (on || bio_fd >= 0) {
        bool est;
        enum ks_offload kind = ks_ktls_offload(api.get_wfd(s), tx, &est);
        *(tx ? &c->tx_nic : &c->rx_nic) = kind == KS_OFFLOAD_NIC;
        c->offload_est |= est;
        if (tx && bio_fd >= 0) {
            c->tx = KS_PATH_KTLS_BIO;
            c->fd = bio_fd;
            ks_count(KS_C_KTLS_TX, 1);
            ks_count(KS_C_KTLS_TX_BIO, 1);
            ks_count(kind == KS_OFFLOAD_NIC ? KS_C_KTLS_TX_NIC : KS_C_KTLS_TX_SW, 1);
        } else if (tx) {
            c->tx = KS_PATH_KTLS_OPENSSL;
            ks_count(KS_C_KTLS_TX, 1);
            ks_count(kind == KS_OFFLOAD_NIC ? KS_C_KTLS_TX_NIC : KS_C_KTLS_TX_SW, 1);
        } else {
            c->rx = KS_PATH_KTLS_OPENSSL;
            ks_count(KS_C_KTLS_RX, 1);
            ks_count(kind == KS_OFFLOAD_NIC ? KS_C_KTLS_RX_NIC : KS_C_KTLS_RX_SW, 1);
        }
        if (est)
            ks_count(KS_C_KTLS_OFFLOAD_ESTIMATED, 1);
        return;
    }
    enum ks_fallback r = why_not(s, tx, version, cipher);
    /* What libssl leaves of the send side, the own switch may take with
     * the receive side (server connections only): decided right after it. */
    if (tx && (r == KS_FB_LIBSSL || r == KS_FB_OTHER) && ks_switch_tx_ready()) {
        if (!api.is_server(s)) {
            if (ks_config()->ktls == KS_KTLS_OWN)
                r = KS_FB_CLIENT;
        } else if (handshake_call == s) {
            c->tx_own_due = true;
            return;
        } else {
            r = KS_FB_UNREAD;
        }
    }
    /* What libssl leaves of the receive side, the own switch may take:
     * decided (and counted) when the program's handshake call returns. */
    if (!tx && (r == KS_FB_LIBSSL || r == KS_FB_OTHER) && ks_switch_ready()) {
        if (handshake_call == s) {
            c->rx_own_due = true;
            return;
        }
        if (api.is_server(s))
            r = KS_FB_UNREAD;
        else if (ks_config()->ktls == KS_KTLS_OWN)
            r = KS_FB_CLIENT;
    }
    count_fallback(s, c, tx, version, cipher, r);
}

/* A TLS version as people write it, for log lines. */
static const char *version_name(int version)
{
    switch (version) {
    case TLS1_3_VERSION:
        return "TLS 1.3";
    case TLS1_2_VERSION:
        return "TLS 1.2";
    case TLS1_1_VERSION:
        return "TLS 1.1";
    case TLS1_VERSION:
        return "TLS 1.0";
    default:
        return "TLS ?";
    }
}

static void count_fallback(SSL *s, struct ks_conn *c, bool tx, int version, const char *cipher,
                           enum ks_fallback r)
{
    if (tx) {
        c->tx_reason = (uint8_t)r;
        ks_count((enum ks_counter)(KS_C_FB_TX_DISABLED + r), 1);
    } else {
        c->rx_reason = (uint8_t)r;
        ks_count((enum ks_counter)(KS_C_FB_RX_DISABLED + r), 1);
    }
    /* Strict mode: a deployment that must know hears of every TX fallback,
     * and of RX fallbacks other than libssl's known TLS 1.3 limit. */
    if (ks_config()->ktls == KS_KTLS_STRICT && (tx || r != KS_FB_LIBSSL))
        ks_log_error("strict: connection on fd %d (%s, %s) has no kTLS %s: %s", api.get_wfd(s),
                     version_name(version), cipher ? cipher : "?", tx ? "TX" : "RX",
                     reason_text(r));
}

/* The server name the client asked for (SNI), or NULL: for the connection
 * log. Looked up on first use (racing threads store the same value). */
static const char *server_name(SSL *s)
{
    static const char *(*get_servername)(const SSL *, int);
    if (!__atomic_load_n((void **)&get_servername, __ATOMIC_ACQUIRE))
        __atomic_store_n((void **)&get_servername, ks_ossl_sym("SSL_get_servername"),
                         __ATOMIC_RELEASE);
    return get_servername ? get_servername(s, TLSEXT_NAMETYPE_host_name) : NULL;
}
/* A direction's path as the connection log names it. */
static const char *path_name(uint8_t path)
{
    switch (path) {
    case KS_PATH_KTLS_OPENSSL:
        return "ktls_libssl";
    case KS_PATH_KTLS_OWN:
        return "ktls_own";
    case KS_PATH_KTLS_BIO:
        return "ktls_bio";
    default:
        return "user";
    }
}

static struct ks_conn *handshake_done(SSL *s)
{
    struct ks_conn *c = calloc(1, sizeof *c);
    if (c && !api.set_ex_data(s, conn_idx, c)) {
        free(c);
        c = NULL;
    }
    if (!c) { /* not recorded: the next calls on s look it up and try again */
        ks_conns_watch_for_good();
        return NULL;
    }
    c->fd = -1;
    c->user = ks_self_pid;
    c->fork_gen = __atomic_load_n(&fork_gen, __ATOMIC_RELAXED);
    ks_stats_mark_active();
    int version = api.version(s);
    const SSL_CIPHER *ciph = api.get_current_cipher(s);
    const char *cipher = ciph ? api.CIPHER_get_name(ciph) : NULL;
    ks_count(KS_C_TLS, 1);
    ks_count(version == TLS1_3_VERSION   ? KS_C_TLS13
             : version == TLS1_2_VERSION ? KS_C_TLS12
                                         : KS_C_TLS_OTHER,
             1);
    bool resumed = api.session_reused(s) == 1;
    if (resumed)
        ks_count(KS_C_TLS_RESUMED, 1);
    record_direction(s, c, true, version, cipher);
    record_direction(s, c, false, version, cipher);
    if (c->tx_own_due && !c->rx_own_due) {
        /* The own send side follows the own receive side, which is not
         * coming: sending stays with libssl, for receive's reason. */
        c->tx_own_due = false;
        count_fallback(s, c, true, version, cipher,
                       c->rx == KS_PATH_USER ? (enum ks_fallback)c->rx_reason : KS_FB_OTHER);
    }
    if (!c->tx_own_due) /* decided: libssl's records need no more counting */
        ks_own_tx_counting_over(s);
    if (!c->rx_own_due) /* the own switch will not run: no secret of its stays */
        ks_switch_settled(s);
    if (c->tx != KS_PATH_USER) {
        if (c->fd < 0)
            c->fd = api.get_wfd(s);
        ks_ktls_fd_mark(c->fd, true);
        if (ks_config()->zerocopy) {
            if (ks_ktls_set_zerocopy(c->fd) == 0)
                ks_count(KS_C_KTLS_TX_ZEROCOPY, 1);
            else
                ks_log_debug("TLS_TX_ZEROCOPY_RO refused on fd %d: %s", c->fd, strerror(errno));
        }
    }
    int log_fd = c->fd >= 0 ? c->fd : api.get_wfd(s);
    if (ks_connlog_enabled()) {
        struct ks_connlog_dir tx = {path_name(c->tx), c->tx_reason, c->tx_nic, c->offload_est};
        struct ks_connlog_dir rx = {path_name(c->rx), c->rx_reason, c->rx_nic, c->offload_est};
        c->log = ks_connlog_begin(server_name(s), log_fd, version, cipher, resumed, &tx, &rx);
    }
    /* The calls on this connection need its state (connwatch.h). */
    if (c->tx != KS_PATH_USER || c->rx != KS_PATH_USER || c->tx_own_due || c->rx_own_due ||
        c->log) {
        c->watched = true;
        ks_conns_watch(1);
    }
    ks_log_debug("handshake done on fd %d: %s %s%s, tx %s, rx %s", log_fd, version_name(version),
                 cipher ? cipher : "?", resumed ? " (resumed)" : "",
                 c->tx_own_due               ? "own switch due"
                 : c->tx == KS_PATH_KTLS_BIO ? "kTLS-bio"
                 : c->tx                     ? "kTLS"
                                             : ks_fallback_name(c->tx_reason),
                 c->rx_own_due ? "own switch due"
                 : c->rx       ? "kTLS"
                               : ks_fallback_name(c->rx_reason));
    return c;
}

/* Right after the receive side's own switch (rx_on: it switched; else
 * rx_why says why not): the send side's. */
static void own_tx_due(SSL *s, struct ks_conn *c, bool rx_on, int version, const char *cipher,
                       enum ks_fallback rx_why)
{
    c->tx_own_due = false;
    enum ks_fallback why = rx_why;
    bool on = rx_on && ks_switch_tx(s, version, cipher, &why);
    ks_own_tx_counting_over(s);
    if (!on) {
        count_fallback(s, c, true, version, cipher, why);
        return;
    }
    bool est;
    int fd = api.get_wfd(s);
    enum ks_offload kind = ks_ktls_offload(fd, true, &est);
    c->tx = KS_PATH_KTLS_OWN;
    c->tx_nic = kind == KS_OFFLOAD_NIC;
    c->offload_est |= est;
    ks_count(KS_C_KTLS_TX, 1);
    ks_count(KS_C_KTLS_TX_OWN, 1);
    ks_count(kind == KS_OFFLOAD_NIC ? KS_C_KTLS_TX_NIC : KS_C_KTLS_TX_SW, 1);
    if (est)
        ks_count(KS_C_KTLS_OFFLOAD_ESTIMATED, 1);
    c->fd = fd;
    ks_ktls_fd_mark(fd, true);
    if (ks_config()->zerocopy) {
        if (ks_ktls_set_zerocopy(fd) == 0)
            ks_count(KS_C_KTLS_TX_ZEROCOPY, 1);
        else
            ks_log_debug("TLS_TX_ZEROCOPY_RO refused on fd %d: %s", fd, strerror(errno));
    }
}

/* The program's SSL_accept / SSL_do_handshake (called from caller) has
 * returned 1 with the own switch due (the handshake completed while such a
 * call ran: completed_here if in this one): the own switch takes the
 * receive side libssl left, or the reason is counted. */
static void own_rx_due(SSL *s, struct ks_conn *c, const void *caller, bool completed_here)
{
    c->rx_own_due = false;
    int version = api.version(s);
    const SSL_CIPHER *ciph = api.get_current_cipher(s);
    const char *cipher = ciph ? api.CIPHER_get_name(ciph) : NULL;
    enum ks_fallback why = KS_FB_UNREAD;
    KS_SAVE_ERRNO;
    /* Only a handshake that completed in this very call proves that libssl
     * read nothing past the Finished; and libssl calling its own
     * SSL_do_handshake (BIO_f_ssl) will read past the hooks afterwards: then
     * receive stays libssl's. */
    bool on = completed_here && !ks_ossl_called_from_libssl(caller) &&
              ks_switch_rx(s, version, cipher, &why);
    if (on) {
        bool est;
        enum ks_offload kind = ks_ktls_offload(api.get_rfd(s), false, &est);
        c->rx = KS_PATH_KTLS_OWN;
        c->rx_nic = kind == KS_OFFLOAD_NIC;
        c->offload_est |= est;
        ks_count(KS_C_KTLS_RX, 1);
        ks_count(KS_C_KTLS_RX_OWN, 1);
        ks_count(kind == KS_OFFLOAD_NIC ? KS_C_KTLS_RX_NIC : KS_C_KTLS_RX_SW, 1);
        if (est)
            ks_count(KS_C_KTLS_OFFLOAD_ESTIMATED, 1);
    } else {
        /* The client side is libssl's by design: the reason stays libssl's
         * own limit where there is one. */
        if (why == KS_FB_CLIENT && ks_config()->ktls != KS_KTLS_OWN)
            why = KS_FB_LIBSSL;
        count_fallback(s, c, false, version, cipher, why);
    }
    if (c->tx_own_due)
        own_tx_due(s, c, on, version, cipher, why);
    else
        ks_own_tx_counting_over(s);
    ks_switch_settled(s);      /* only a KeyUpdate's secrets stay (tls/kswitch/rekey.c) */
    if (KS_UNLIKELY(c->log)) { /* the log's entry was made at handshake done */
        c->log->tx.path = path_name(c->tx);
        c->log->tx.reason = c->tx_reason;
        c->log->tx.nic = c->tx_nic;
        c->log->rx.path = path_name(c->rx);
        c->log->rx.reason = c->rx_reason;
        c->log->rx.nic = c->rx_nic;
        c->log->rx.estimated = c->offload_est;
    }
    ks_log_debug("fd %d: rx %s%s", api.get_rfd(s), on ? "kTLS (own switch)" : ks_fallback_name(why),
                 on                ? ""
                 : !completed_here ? " (handshake completed before this call)"
                 : caller && ks_ossl_called_from_libssl(caller) ? " (called by libssl itself)"
                                                                : "");
    KS_RESTORE_ERRNO;
}

/* The connection's state, recording it first if its handshake has just
 * completed (done: the caller knows it has). NULL while the handshake is
 * still going (or if untracked). */
static inline struct ks_conn *conn_state(SSL *s, bool done)
{
    if (!api_ok || !s)
        return NULL;
    struct ks_conn *c = api.get_ex_data(s, conn_idx);
    if (KS_UNLIKELY(!c) && (done || api.is_init_finished(s))) {
        KS_SAVE_ERRNO;
        c = handshake_done(s);
        KS_RESTORE_ERRNO;
    }
    return c;
}

static inline struct ks_conn *conn_of(SSL *s)
{
    return conn_state(s, false);
}

void ks_conn_in_use(SSL *s)
{
    struct ks_conn *c = ks_conns_unwatched() || ks_hook_depth ? NULL : conn_of(s);
    if (c) {
        c->io = true;
        c->user = ks_self_pid;
    }
}

/* ---- info callbacks ---- */

/* Function pointers travel through ex_data (void *) in this small box. */
struct cb_box {
    ks_info_cb_t cb;
};

/* The context's state, made (and listed) on first sight. Without it the
 * context may go without our info callback: lookups for good (connwatch.h). */
static struct ks_ctx *ctx_state(SSL_CTX *ctx)
{
    struct ks_ctx *k = api.CTX_get_ex_data(ctx, ctx_idx);
    if (k)
        return k;
    if ((k = calloc(1, sizeof *k)) && (k->ctx = ctx, !api.CTX_set_ex_data(ctx, ctx_idx, k))) {
        free(k);
        k = NULL;
    }
    if (!k) {
        ks_conns_watch_for_good();
        return NULL;
    }
    pthread_mutex_lock(&ctx_list_lock);
    k->next = ctx_list;
    if (ctx_list)
        ctx_list->prev = k;
    ctx_list = k;
    pthread_mutex_unlock(&ctx_list_lock);
    return k;
}

static ks_info_cb_t program_cb(const SSL *s)
{
    struct cb_box *b = api.get_ex_data(s, ssl_cb_idx);
    if (b && b->cb)
        return b->cb;
    SSL_CTX *ctx = api.get_SSL_CTX(s);
    struct ks_ctx *k = ctx ? api.CTX_get_ex_data(ctx, ctx_idx) : NULL;
    return k ? k->cb : NULL;
}

static void info_cb(const SSL *s, int where, int ret)
{
    /* libssl calls this before it marks the handshake finished. */
    if (where & SSL_CB_HANDSHAKE_DONE)
        conn_state((SSL *)s, true);
    ks_info_cb_t cb = program_cb(s);
    if (cb)
        cb(s, where, ret);
}

/* A box per SSL whose program sets its own callback, reused when it sets
 * another, freed with the SSL. False if it cannot be kept (no memory). */
static bool store_ssl_cb(SSL *s, ks_info_cb_t cb)
{
    struct cb_box *b = api.get_ex_data(s, ssl_cb_idx);
    if (!b) {
        if (!cb)
            return true;
        if (!(b = calloc(1, sizeof *b)))
            return false;
        if (!api.set_ex_data(s, ssl_cb_idx, b)) {
            free(b);
            return false;
        }
    }
    b->cb = cb;
    return true;
}

KS_EXPORT void SSL_CTX_set_info_callback(SSL_CTX *ctx, ks_info_cb_t cb)
{
    need_api();
    if (!api_ok) {
        void (*real)(SSL_CTX *, ks_info_cb_t) = ks_ossl_sym("SSL_CTX_set_info_callback");
        if (!real) {
            missing("SSL_CTX_set_info_callback");
            return;
        }
        real(ctx, cb);
        return;
    }
    struct ks_ctx *k = ctx_state(ctx);
    if (!k) { /* no memory to chain: the program's callback, unchained */
        api.CTX_set_info_callback(ctx, cb);
        return;
    }
    k->cb = cb;
    api.CTX_set_info_callback(ctx, info_cb);
}

KS_EXPORT ks_info_cb_t SSL_CTX_get_info_callback(SSL_CTX *ctx)
{
    need_api();
    if (!api_ok) {
        ks_info_cb_t (*real)(SSL_CTX *) = ks_ossl_sym("SSL_CTX_get_info_callback");
        if (!real) {
            missing("SSL_CTX_get_info_callback");
            return NULL;
        }
        return real(ctx);
    }
    struct ks_ctx *k = api.CTX_get_ex_data(ctx, ctx_idx);
    return k ? k->cb : NULL;
}

KS_EXPORT void SSL_set_info_callback(SSL *s, ks_info_cb_t cb)
{
    need_api();
    if (!api_ok) {
        void (*real)(SSL *, ks_info_cb_t) = ks_ossl_sym("SSL_set_info_callback");
        if (!real) {
            missing("SSL_set_info_callback");
            return;
        }
        real(s, cb);
        return;
    }
    /* NULL lets libssl fall back to the context's callback: ours. Without
     * memory to chain, the program's own callback goes in unchained. */
    if (store_ssl_cb(s, cb)) {
        api.set_info_callback(s, cb ? info_cb : NULL);
    } else {
        ks_conns_watch_for_good(); /* s's handshake may go unseen */
        api.set_info_callback(s, cb);
    }
}

KS_EXPORT ks_info_cb_t SSL_get_info_callback(const SSL *s)
{
    need_api();
    if (!api_ok) {
        ks_info_cb_t (*real)(const SSL *) = ks_ossl_sym("SSL_get_info_callback");
        if (!real) {
            missing("SSL_get_info_callback");
            return NULL;
        }
        return real(s);
    }
    struct cb_box *b = api.get_ex_data(s, ssl_cb_idx);
    return b ? b->cb : NULL;
}

/* ---- hooks ---- */

static bool (*in_worker)(void); /* set at load (init.c): sharding's answer */
/* A new context: kTLS on, our info callback, and in a worker the shared
 * session resumption. Idempotent (SSL_CTX_new calls SSL_CTX_new_ex). */
static SSL_CTX *ctx_created(SSL_CTX *ctx)
{
    struct ks_ctx *k;
    if (!ctx || !api_ok || api.CTX_get_ex_data(ctx, ctx_idx) || !(k = ctx_state(ctx)))
        return ctx;
    /* OpenSSL 1.1 has no such option (bit 3 is not ours to set there). */
    if (ks_config()->ktls != KS_KTLS_OFF && ks_config()->ktls != KS_KTLS_OWN &&
        ks_ossl_flavour() != KS_OSSL_111)
        api.CTX_set_options(ctx, SSL_OP_ENABLE_KTLS);
    ks_switch_ctx_created(ctx);
    api.CTX_set_info_callback(ctx, info_cb);
    if (in_worker && in_worker())
        k->shared_tickets = ks_resume_install(ctx, false);
    return ctx;
}

void ks_tls_set_in_worker(bool (*query)(void))
{
    in_worker = query;
}

void ks_tls_worker_started(void)
{
    if (!api_ok)
        return;
    pthread_mutex_lock(&ctx_list_lock);
    for (struct ks_ctx *k = ctx_list; k; k = k->next)
        k->shared_tickets = ks_resume_install(k->ctx, k->own_tickets);
    pthread_mutex_unlock(&ctx_list_lock);
}

/* The program chose its own ticket keys or callback for ctx: from now on
 * ctx is the program's to manage (our callback comes off if it was on). */
static void own_tickets(SSL_CTX *ctx)
{
    struct ks_ctx *k = ctx && api_ok ? ctx_state(ctx) : NULL;
    if (!k)
        return;
    k->own_tickets = true;
    if (k->shared_tickets) {
        ks_resume_drop_tickets(ctx);
        k->shared_tickets = false;
    }
}

/* The real function behind a hook that needs nothing else from libssl,
 * looked up once (racing threads store the same value); when there is none
 * the hook returns `fail` (libssl's error return for that call). */
#define LAZY_REAL(var, name, fail)                                                                 \
    do {                                                                                           \
        if (!__atomic_load_n((void **)&var, __ATOMIC_ACQUIRE)) {                                   \
            void *p_ = ks_ossl_sym(name);                                                          \
            if (!p_) {                                                                             \
                missing(name);                                                                     \
                return fail;                                                                       \
            }                                                                                      \
            __atomic_store_n((void **)&var, p_, __ATOMIC_RELEASE);                                 \
        }                                                                                          \
    } while (0)

KS_EXPORT int SSL_CTX_set_tlsext_ticket_key_evp_cb(SSL_CTX *ctx,
                                                   int (*cb)(SSL *, unsigned char *,
                                                             unsigned char *, EVP_CIPHER_CTX *,
                                                             EVP_MAC_CTX *, int))
{
    need_api();
    static int (*real)(SSL_CTX *, int (*)(SSL *, unsigned char *, unsigned char *, EVP_CIPHER_CTX *,
                                          EVP_MAC_CTX *, int));
    LAZY_REAL(real, "SSL_CTX_set_tlsext_ticket_key_evp_cb", 0);
    int r = real(ctx, cb); /* the program's callback replaces ours */
    struct ks_ctx *k = ctx && api_ok ? ctx_state(ctx) : NULL;
    if (k) {
        k->own_tickets = true;
        k->shared_tickets = false;
    }
    return r;
}

KS_EXPORT long SSL_CTX_ctrl(SSL_CTX *ctx, int cmd, long larg, void *parg)
{
    static long (*real)(SSL_CTX *, int, long, void *);
    LAZY_REAL(real, "SSL_CTX_ctrl", 0);
    if (cmd == SSL_CTRL_SET_TLSEXT_TICKET_KEYS) {
        need_api();
        own_tickets(ctx);
    }
    return real(ctx, cmd, larg, parg);
}

KS_EXPORT long SSL_CTX_callback_ctrl(SSL_CTX *ctx, int cmd, void (*fp)(void))
{
    static long (*real)(SSL_CTX *, int, void (*)(void));
    LAZY_REAL(real, "SSL_CTX_callback_ctrl", 0);
    if (cmd == SSL_CTRL_SET_TLSEXT_TICKET_KEY_CB) {
        need_api();
        own_tickets(ctx);
    }
    return real(ctx, cmd, fp);
}

/* SSL_CTX_new's hook is running on this thread (its context is set up when
 * libssl's returns, whatever SSL_CTX_new_ex's hook did inside). */
static __thread bool ctx_new_call;

KS_EXPORT SSL_CTX *SSL_CTX_new(const SSL_METHOD *meth)
{
    need_api();
    if (!api.CTX_new) {
        missing("SSL_CTX_new");
        return NULL;
    }
    bool outer = ctx_new_call;
    ctx_new_call = true;
    SSL_CTX *ctx = api.CTX_new(meth);
    ctx_new_call = outer;
    return ctx_created(ctx);
}

KS_EXPORT SSL_CTX *SSL_CTX_new_ex(OSSL_LIB_CTX *libctx, const char *propq, const SSL_METHOD *meth)
{
    need_api();
    if (!api.CTX_new_ex) {
        missing("SSL_CTX_new_ex");
        return NULL;
    }
    /* SSL_CTX_new calls SSL_CTX_new_ex inside libssl: set the option once.
     * A context made inside another hook (a program's callback during a
     * handshake call) gets no info callback: its handshakes are found by
     * the lookup (connwatch.h). */
    if (ks_hook_depth) {
        SSL_CTX *made = api.CTX_new_ex(libctx, propq, meth);
        if (made && api_ok && !ctx_new_call && !api.CTX_get_ex_data(made, ctx_idx))
            ks_conns_watch_for_good();
        return made;
    }
    ks_hook_depth++;
    SSL_CTX *ctx = ctx_created(api.CTX_new_ex(libctx, propq, meth));
    ks_hook_depth--;
    return ctx;
}

/* A reused SSL (SSL_clear, then a new handshake on it) is a new connection:
 * the old one's record ends here (its connection-log line is written), and
 * the next handshake completing on s makes a fresh one, with the own
 * switch's turn (tls/kswitch/switch.c forgets its state of the old connection). */
KS_EXPORT int SSL_clear(SSL *s)
{
    need_api();
    if (!api.clear) {
        missing("SSL_clear");
        return 0;
    }
    if (api_ok && s) {
        KS_SAVE_ERRNO;
        struct ks_conn *c = api.get_ex_data(s, conn_idx);
        if (c) {
            api.set_ex_data(s, conn_idx, NULL);
            conn_free(s, c, NULL, conn_idx, 0, NULL);
        }
        ks_switch_clear(s);
        KS_RESTORE_ERRNO;
    }
    return api.clear(s);
}

/* A handshake call by the program. If the handshake completes in it, the
 * connection is recorded, and the own switch gets its turn (only here: see
 * handshake_call). */
#define HANDSHAKE_HOOK(fn, field)                                                                  \
    KS_EXPORT int fn(SSL *s)                                                                       \
    {                                                                                              \
        need_api();                                                                                \
        if (!api.field) {                                                                          \
            missing(#fn);                                                                          \
            return -1;                                                                             \
        }                                                                                          \
        bool top = !ks_hook_depth;                                                                 \
        if (top)                                                                                   \
            handshake_call = s;                                                                    \
        const void *caller_ = __builtin_return_address(0);                                         \
        bool seen_ = top && api_ok && api.get_ex_data(s, conn_idx);                                \
        ks_hook_depth++;                                                                           \
        ks_biosock_handshake_enter();                                                              \
        if (api_ok)                                                                                \
            ks_biosock_handshake_bios(api.get_rbio(s), api.get_wbio(s));                           \
        int r = api.field(s);                                                                      \
        ks_biosock_handshake_leave();                                                              \
        ks_hook_depth--;                                                                           \
        struct ks_conn *c_ = NULL;                                                                 \
        if (r == 1 && top)                                                                         \
            c_ = conn_of(s);                                                                       \
        if (top)                                                                                   \
            handshake_call = NULL;                                                                 \
        if (c_ && c_->rx_own_due)                                                                  \
            own_rx_due(s, c_, caller_, !seen_);                                                    \
        return r;                                                                                  \
    }

HANDSHAKE_HOOK(SSL_accept, accept)
HANDSHAKE_HOOK(SSL_connect, connect)
HANDSHAKE_HOOK(SSL_do_handshake, do_handshake)

/* Counts n bytes moved on connection c in direction tx. */
static inline void count_bytes(const struct ks_conn *c, bool tx, size_t n)
{
    if (tx)
        ks_count(c && c->tx ? KS_C_B_KTLS_TX : KS_C_B_USER_TX, n);
    else
        ks_count(c && c->rx ? KS_C_B_KTLS_RX : KS_C_B_USER_RX, n);
    if (c && KS_UNLIKELY(c->log))
        ks_connlog_bytes(c->log, tx, tx ? c->tx : c->rx, n);
}

/* After a read or write call on s (ok: it moved n bytes): a handshake it
 * completed is recorded, the own switch's receive decision if it is still
 * due, and the bytes are counted on their path. */
static void call_done(SSL *s, bool tx, bool ok, size_t n)
{
    struct ks_conn *c = conn_of(s);
    if (c) {
        c->io = true;
        c->user = ks_self_pid;
    }
    if (KS_UNLIKELY(c && c->rx_own_due)) /* completed, but not by a handshake call */
        own_rx_due(s, c, NULL, false);
    if (ok)
        count_bytes(c, tx, n);
}

/* The hooks below (the calls made for every record) first try the fast
 * path: no connection of the process needs a lookup (connwatch.h) and the
 * call is the program's own (not libssl's from inside a hook). Then libssl
 * serves the call and its bytes are user bytes, unless the call itself made
 * a connection watched (a handshake completed in it): then call_done().
 * The rare ends are functions of their own that return the call's result,
 * so that the fast path keeps almost nothing across libssl's call. */
__attribute__((noinline)) static int fast_watched(SSL *s, int r, bool tx, bool ok, size_t n)
{
    call_done(s, tx, ok, n);
    return r;
}

__attribute__((noinline)) static int fast_count(int r, bool tx, size_t n)
{
    ks_count(tx ? KS_C_B_USER_TX : KS_C_B_USER_RX, n);
    return r;
}

#define FAST_CALL(call, ok, n, tx)                                                                 \
    do {                                                                                           \
        ks_hook_depth++;                                                                           \
        int r = call;                                                                              \
        ks_hook_depth--;                                                                           \
        if (KS_UNLIKELY(!ks_conns_unwatched()))                                                    \
            return fast_watched(s, r, tx, ok, (ok) ? (size_t)(n) : 0);                             \
        if ((ok) &&                                                                                \
            KS_UNLIKELY(!ks_count_quick(tx ? KS_C_B_USER_TX : KS_C_B_USER_RX, (uint64_t)(n))))     \
            return fast_count(r, tx, (size_t)(n));                                                 \
        return r;                                                                                  \
    } while (0)

__attribute__((noinline)) static int read_slow(SSL *s, void *buf, int num)
{
    need_api();
    if (!api.read) {
        missing("SSL_read");
        return -1;
    }
    if (ks_hook_depth)
        return api.read(s, buf, num);
    struct ks_own *o = ks_own_of(s);
    int r;
    if (o) { /* receive is the own switch's */
        size_t got;
        r = ks_own_read(s, o, buf, num < 0 ? 0 : (size_t)num, &got, false);
    } else {
        ks_hook_depth++;
        r = api.read(s, buf, num);
        ks_hook_depth--;
    }
    call_done(s, false, r > 0, r > 0 ? (size_t)r : 0);
    return r;
}

KS_EXPORT int SSL_read(SSL *s, void *buf, int num)
{
    if (KS_UNLIKELY(!ks_conns_unwatched() || ks_hook_depth))
        return read_slow(s, buf, num);
    FAST_CALL(api.read(s, buf, num), r > 0, r, false);
}

__attribute__((noinline)) static int read_ex_slow(SSL *s, void *buf, size_t num, size_t *readbytes)
{
    need_api();
    if (!api.read_ex) {
        missing("SSL_read_ex");
        return 0;
    }
    if (ks_hook_depth)
        return api.read_ex(s, buf, num, readbytes);
    struct ks_own *o = ks_own_of(s);
    int r;
    if (o) { /* receive is the own switch's */
        size_t got;
        r = ks_own_read(s, o, buf, num, &got, false) > 0;
        if (readbytes)
            *readbytes = r ? got : 0;
    } else {
        ks_hook_depth++;
        r = api.read_ex(s, buf, num, readbytes);
        ks_hook_depth--;
    }
    call_done(s, false, r == 1 && readbytes, r == 1 && readbytes ? *readbytes : 0);
    return r;
}

KS_EXPORT int SSL_read_ex(SSL *s, void *buf, size_t num, size_t *readbytes)
{
    if (KS_UNLIKELY(!ks_conns_unwatched() || ks_hook_depth))
        return read_ex_slow(s, buf, num, readbytes);
    FAST_CALL(api.read_ex(s, buf, num, readbytes), r == 1 && readbytes,
              r == 1 && readbytes ? *readbytes : 0, false);
}

__attribute__((noinline)) static int write_slow(SSL *s, const void *buf, int num)
{
    need_api();
    if (!api.write) {
        missing("SSL_write");
        return -1;
    }
    if (ks_hook_depth)
        return api.write(s, buf, num);
    struct ks_own *o = ks_own_of(s);
    int r;
    if (KS_UNLIKELY(o != NULL) && num > 0 && ks_own_tx_on(o)) { /* send is the own switch's */
        size_t w = 0;
        r = ks_own_write(s, o, buf, (size_t)num, &w);
        if (r > 0)
            r = (int)w;
    } else {
        if (KS_UNLIKELY(o != NULL))
            ks_own_forget_error(o);
        ks_hook_depth++;
        r = api.write(s, buf, num);
        ks_hook_depth--;
    }
    call_done(s, true, r > 0, r > 0 ? (size_t)r : 0);
    return r;
}

KS_EXPORT int SSL_write(SSL *s, const void *buf, int num)
{
    if (KS_UNLIKELY(!ks_conns_unwatched() || ks_hook_depth))
        return write_slow(s, buf, num);
    FAST_CALL(api.write(s, buf, num), r > 0, r, true);
}

__attribute__((noinline)) static int write_ex_slow(SSL *s, const void *buf, size_t num,
                                                   size_t *written)
{
    need_api();
    if (!api.write_ex) {
        missing("SSL_write_ex");
        return 0;
    }
    if (ks_hook_depth)
        return api.write_ex(s, buf, num, written);
    struct ks_own *o = ks_own_of(s);
    int r;
    if (KS_UNLIKELY(o != NULL) && num > 0 && ks_own_tx_on(o)) { /* send is the own switch's */
        size_t w = 0;
        r = ks_own_write(s, o, buf, num, &w) > 0;
        if (r && written)
            *written = w;
    } else {
        if (KS_UNLIKELY(o != NULL))
            ks_own_forget_error(o);
        ks_hook_depth++;
        r = api.write_ex(s, buf, num, written);
        ks_hook_depth--;
    }
    call_done(s, true, r == 1 && written, r == 1 && written ? *written : 0);
    return r;
}

KS_EXPORT int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written)
{
    if (KS_UNLIKELY(!ks_conns_unwatched() || ks_hook_depth))
        return write_ex_slow(s, buf, num, written);
    FAST_CALL(api.write_ex(s, buf, num, written), r == 1 && written,
              r == 1 && written ? *written : 0, true);
}

KS_EXPORT ossl_ssize_t SSL_sendfile(SSL *s, int fd, off_t offset, size_t size, int flags)
{
    need_api();
    if (!api.sendfile) {
        missing("SSL_sendfile");
        return -1;
    }
    if (ks_hook_depth)
        return api.sendfile(s, fd, offset, size, flags);
    struct ks_own *o = ks_own_of(s);
    ossl_ssize_t r;
    if (KS_UNLIKELY(o != NULL) && ks_own_tx_on(o)) { /* send is the own switch's */
        r = ks_own_sendfile(s, o, fd, offset, size);
    } else {
        if (KS_UNLIKELY(o != NULL))
            ks_own_forget_error(o);
        ks_hook_depth++;
        r = api.sendfile(s, fd, offset, size, flags);
        ks_hook_depth--;
    }
    struct ks_conn *c = conn_of(s);
    if (c) {
        c->io = true;
        c->user = ks_self_pid;
    }
    if (r > 0) {
        if (c && KS_UNLIKELY(c->log))
            ks_connlog_sendfile(c->log, (uint64_t)r);
        ks_count(KS_C_B_KTLS_TX, (uint64_t)r);
        ks_count(KS_C_B_SENDFILE, (uint64_t)r);
    }
    return r;
}

/* Plain sendfile(2) on a socket whose TX is kTLS: encrypted by the kernel
 * with no copy through user space. Counted, never altered; not when libssl
 * itself calls it inside SSL_sendfile (that hook counts). */
static inline void count_sendfile(int out_fd, ssize_t r)
{
    if (r > 0 && !ks_hook_depth && ks_ktls_fd_marked(out_fd)) {
        ks_count(KS_C_B_KTLS_TX, (uint64_t)r);
        ks_count(KS_C_B_SENDFILE, (uint64_t)r);
    }
}

KS_EXPORT ssize_t sendfile(int out_fd, int in_fd, off_t *offset, size_t count)
{
    ssize_t r = ks_libc()->sendfile(out_fd, in_fd, offset, count);
    count_sendfile(out_fd, r);
    return r;
}

KS_EXPORT ssize_t sendfile64(int out_fd, int in_fd, off_t *offset, size_t count)
{
    ssize_t r = ks_libc()->sendfile64(out_fd, in_fd, offset, count);
    count_sendfile(out_fd, r);
    return r;
}
