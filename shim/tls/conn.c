/* tls/conn.c — a TLS connection's record. Why a file of its own: the hooks
 * (tls/hooks.c, and the info callback in tls/ctx.c) only say when a
 * handshake has completed; what the connection got is decided and counted
 * here, once: its TLS version, and for each direction kTLS (by libssl, by
 * the library's own switch, or through the program's own BIO) or the
 * reason it stays in user space. The record hangs off the SSL (ex_data),
 * is one process's (the ownership rule below), and ends with SSL_free or
 * SSL_clear (its connection-log line written by its user). */
#include "tls/ossl/hooks.h" /* first: the hook bodies' names */
#include "tls/conn.h"
#include "tls/biosock/biosock.h"
#include "tls/bioproof.h"
#include "core/common.h"
#include "core/config.h"
#include "stats/connlog.h"
#include "tls/connwatch.h"
#include "tls/kswitch/kswitch.h"
#include "kernel/ktls.h"
#include "core/log.h"
#include "tls/ossl/api.h"
#include "stats/stats.h"
#include "tls/ossl/sym.h"
#include "tls/withhold.h"

#include <openssl/bio.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>

/* The libssl/libcrypto functions we call: the one table (tls/ossl/api.h). */
#define api ks_ossl_api

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

void ks_conn_forked(void)
{
    __atomic_add_fetch(&fork_gen, 1, __ATOMIC_RELAXED);
}

/* This process merely holds its copy of c (the rule above). */
static bool conn_held_only(const struct ks_conn *c)
{
    return c->user != ks_self_pid ||
           (!c->io && c->fork_gen != __atomic_load_n(&fork_gen, __ATOMIC_RELAXED));
}

static int conn_idx = -1; /* SSL: struct ks_conn */

static const char *reason_text(enum ks_fallback r);

static void conn_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    struct ks_conn *c = ptr;
    if (!c)
        return;
    if (c->fd >= 0)
        ks_ktls_fd_mark(c->fd, false);
    if (c->rx_defer && !conn_held_only(c)) { /* the deferred switch never came */
        ks_count(KS_C_FB_RX_UNREAD, 1);
        if (c->tx_own_due) { /* nor the send side's turn, which waited for it */
            ks_count(KS_C_FB_TX_UNREAD, 1);
            c->tx_reason = KS_FB_UNREAD;
            if (c->log)
                c->log->tx.reason = c->tx_reason;
        }
        if (ks_config()->ktls == KS_KTLS_STRICT)
            ks_log_error("strict: a connection ended with no kTLS RX: %s (no record boundary "
                         "came that the deferred switch could prove)",
                         reason_text(KS_FB_UNREAD));
    }
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

bool ks_conn_setup(void)
{
    conn_idx =
        api.get_ex_new_index(CRYPTO_EX_INDEX_SSL, 0, NULL, NULL, ks_ex_dup_keep_own, conn_free);
    return conn_idx >= 0;
}

struct ks_conn *ks_conn_peek(SSL *s)
{
    return api.get_ex_data(s, conn_idx);
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
    /* The library itself may have taken the option off, where the kernel
     * proved to have no tls ULP (tls/withhold.c): asked, for the reasons. */
    bool withheld = false;
    if (mode == KS_KTLS_OFF || (mode == KS_KTLS_OWN && tx && !ks_switch_tx_ready()) ||
        (mode != KS_KTLS_OWN && !v111 && !(api.get_options(s) & SSL_OP_ENABLE_KTLS) &&
         !(withheld = ks_withheld(s))))
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
    if (withheld || !ks_ktls_kernel_has_tls())
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
    int bio_fd = on || !tx || v111 ? -1 : ks_biosock_tx_fd(b); /* biosock.c's switch */
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
        } else {
            /* With the receive side: at the program's handshake call's end,
             * or with the deferred switch (a handshake completed elsewhere). */
            c->tx_own_due = true;
            return;
        }
    }
    /* What libssl leaves of the receive side, the own switch may take:
     * decided (and counted) when the program's handshake call returns.
     * Under a program's own BIO too, where its socket is watched. */
    bool bio_rx =
        !tx && r == KS_FB_BIO_RX && api.is_server(s) && ks_biosock_rx_fd(b, api.get_wbio(s)) >= 0;
    if (!tx && (r == KS_FB_LIBSSL || r == KS_FB_OTHER || bio_rx) && ks_switch_ready()) {
        if (ks_handshake_call == s) {
            c->rx_own_due = true;
            return;
        }
        if (api.is_server(s) && ks_switch_rx_defer_begin(s, version, cipher)) {
            c->rx_defer = true; /* counted when it is decided */
            c->rx_reason = KS_FB_UNREAD;
            return;
        }
        if (bio_rx)
            ; /* stays bio_rx */
        else if (api.is_server(s))
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
    if (c->tx_own_due && !c->rx_own_due && !c->rx_defer) {
        /* The own send side follows the own receive side, which is not
         * coming: sending stays with libssl, for receive's reason. */
        c->tx_own_due = false;
        count_fallback(s, c, true, version, cipher,
                       c->rx == KS_PATH_USER ? (enum ks_fallback)c->rx_reason : KS_FB_OTHER);
    }
    /* Decided: libssl's records need no more counting (with the own receive
     * switch due, when it is decided: the deferred switch may count on). */
    if (!c->tx_own_due && !c->rx_own_due)
        ks_own_tx_counting_over(s);
    if (!c->rx_own_due && !c->rx_defer) /* the own switch will not run: no secret of its stays */
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
        c->rx_defer || c->log) {
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
                 : c->rx_defer ? "own switch deferred"
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

/* The own switch has taken c's receive side: counted. */
static void count_rx_own(SSL *s, struct ks_conn *c)
{
    bool est;
    int bio_fd = ks_own_rx_bio_fd(s); /* under the program's own BIO */
    enum ks_offload kind = ks_ktls_offload(bio_fd >= 0 ? bio_fd : api.get_rfd(s), false, &est);
    c->rx = bio_fd >= 0 ? KS_PATH_KTLS_BIO : KS_PATH_KTLS_OWN;
    c->rx_nic = kind == KS_OFFLOAD_NIC;
    c->offload_est |= est;
    ks_count(KS_C_KTLS_RX, 1);
    ks_count(KS_C_KTLS_RX_OWN, 1);
    if (bio_fd >= 0)
        ks_count(KS_C_KTLS_RX_BIO, 1);
    ks_count(kind == KS_OFFLOAD_NIC ? KS_C_KTLS_RX_NIC : KS_C_KTLS_RX_SW, 1);
    if (est)
        ks_count(KS_C_KTLS_OFFLOAD_ESTIMATED, 1);
}

/* The connection log's entry (made at handshake done) gets the paths as
 * they are now. */
static void log_paths(struct ks_conn *c)
{
    if (KS_LIKELY(!c->log))
        return;
    c->log->tx.path = path_name(c->tx);
    c->log->tx.reason = c->tx_reason;
    c->log->tx.nic = c->tx_nic;
    c->log->rx.path = path_name(c->rx);
    c->log->rx.reason = c->rx_reason;
    c->log->rx.nic = c->rx_nic;
    c->log->rx.estimated = c->offload_est;
}

/* The program's SSL_accept / SSL_do_handshake (called from caller) has
 * returned 1 with the own switch due (the handshake completed while such a
 * call ran: completed_here if in this one): the own switch takes the
 * receive side libssl left, or the reason is counted. */
void ks_conn_own_rx_due(SSL *s, struct ks_conn *c, const void *caller, bool completed_here)
{
    c->rx_own_due = false;
    int version = api.version(s);
    const SSL_CIPHER *ciph = api.get_current_cipher(s);
    const char *cipher = ciph ? api.CIPHER_get_name(ciph) : NULL;
    enum ks_fallback why = KS_FB_UNREAD;
    KS_SAVE_ERRNO;
    /* Only a handshake that completed in this very call proves that libssl
     * read nothing past the Finished; and libssl calling its own
     * SSL_do_handshake (an SSL BIO's BIO_do_handshake) may read past the
     * hooks afterwards: then receive waits for the deferred switch, which
     * only reads that pass the hooks can bring (tls/sslbio.c). */
    bool on = completed_here && !ks_ossl_called_from_libssl(caller) &&
              ks_switch_rx(s, version, cipher, &why);
    if (on) {
        count_rx_own(s, c);
    } else if (why == KS_FB_UNREAD && api.is_server(s) &&
               ks_switch_rx_defer_begin(s, version, cipher)) {
        c->rx_defer = true; /* counted when it is decided (tls/kswitch/defer.c) */
        c->rx_reason = KS_FB_UNREAD;
    } else {
        /* The client side is libssl's by design: the reason stays libssl's
         * own limit where there is one. */
        if (why == KS_FB_CLIENT && ks_config()->ktls != KS_KTLS_OWN)
            why = KS_FB_LIBSSL;
        count_fallback(s, c, false, version, cipher, why);
    }
    /* The send side follows the receive side: now, or (KTLSSHIM_KTLS=own,
     * receive deferred) when the deferred switch decides, libssl's records
     * counted until then (ks_conn_rx_defer_try). */
    if (c->tx_own_due && !c->rx_defer)
        own_tx_due(s, c, on, version, cipher, why);
    else if (!c->tx_own_due)
        ks_own_tx_counting_over(s);
    if (!c->rx_defer)
        ks_switch_settled(s); /* only a KeyUpdate's secrets stay (tls/kswitch/rekey.c) */
    log_paths(c);
    int bio_fd = on ? ks_own_rx_bio_fd(s) : -1;
    ks_log_debug("fd %d: rx %s%s", bio_fd >= 0 ? bio_fd : api.get_rfd(s),
                 !on           ? ks_fallback_name(why)
                 : bio_fd >= 0 ? "kTLS (own switch, under the program's BIO)"
                               : "kTLS (own switch)",
                 on                ? ""
                 : !completed_here ? " (handshake completed before this call)"
                 : caller && ks_ossl_called_from_libssl(caller) ? " (called by libssl itself)"
                                                                : "");
    KS_RESTORE_ERRNO;
}

void ks_conn_rx_defer_try(SSL *s, struct ks_conn *c, bool got_data, const void *caller)
{
    KS_SAVE_ERRNO;
    enum ks_fallback why;
    enum ks_defer d = ks_switch_rx_deferred(s, got_data, caller, &why);
    if (d != KS_DEFER_WAIT) {
        c->rx_defer = false;
        int version = api.version(s);
        const SSL_CIPHER *ciph = api.get_current_cipher(s);
        const char *cipher = ciph ? api.CIPHER_get_name(ciph) : NULL;
        if (d == KS_DEFER_SWITCHED) {
            count_rx_own(s, c);
            ks_count(KS_C_KTLS_RX_DEFERRED, 1);
        } else {
            count_fallback(s, c, false, version, cipher, why);
            ks_log_debug("fd %d: rx %s (the deferred switch will not happen)", api.get_rfd(s),
                         ks_fallback_name(why));
        }
        if (c->tx_own_due) /* KTLSSHIM_KTLS=own: the send side's turn */
            own_tx_due(s, c, d == KS_DEFER_SWITCHED, version, cipher, why);
        ks_switch_rx_defer_end(s);
        log_paths(c);
    }
    KS_RESTORE_ERRNO;
}

/* The connection's state, recording it first if its handshake has just
 * completed (done: the caller knows it has). NULL while the handshake is
 * still going (or if untracked). */
struct ks_conn *ks_conn_state(SSL *s, bool done)
{
    if (!ks_tls_api_ok || !s)
        return NULL;
    struct ks_conn *c = api.get_ex_data(s, conn_idx);
    if (KS_UNLIKELY(!c) && (done || api.is_init_finished(s))) {
        KS_SAVE_ERRNO;
        c = handshake_done(s);
        KS_RESTORE_ERRNO;
    }
    return c;
}

void ks_conn_in_use(SSL *s)
{
    struct ks_conn *c = ks_conns_unwatched() || ks_hook_depth ? NULL : ks_conn_of(s);
    if (c) {
        c->io = true;
        c->user = ks_self_pid;
    }
}

/* A reused SSL (SSL_clear, then a new handshake on it) is a new connection:
 * the old one's record ends here (its connection-log line is written), and
 * the next handshake completing on s makes a fresh one, with the own
 * switch's turn (tls/kswitch/switch.c forgets its state of the old connection). */
KS_EXPORT int SSL_clear(SSL *s)
{
    ks_tls_need_api();
    if (!api.clear) {
        ks_tls_missing("SSL_clear");
        return 0;
    }
    if (ks_tls_api_ok && s) {
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
