/* tls/kswitch/switch.c — the library's own kTLS switch, receive direction.
 *
 * Why: libssl moves keys into the kernel only where it can (OpenSSL 3.0
 * and 3.1 never do for TLS 1.3 receive, the most common case). Where it
 * leaves receive in user space, the library does it itself: at the end of
 * a server handshake completed by SSL_accept / SSL_do_handshake it derives
 * the client's write keys (kdf.c) — TLS 1.3 from the client application
 * traffic secret, which the keylog callback hands over (chained to the
 * program's own; the setter and getter are hooked so the program sees what
 * it set), TLS 1.2 from the master secret and the hello randoms — and
 * installs them with setsockopt(TLS_RX). Secrets are wiped as soon as the
 * kernel has the keys, except a TLS 1.3 connection's where the kernel can
 * rekey (tls/kswitch/rekey.c: KeyUpdate).
 *
 * Sequence numbers: a server handshake completed by SSL_accept or
 * SSL_do_handshake has read nothing past the client's Finished (libssl
 * reads record by record; the switch refuses when SSL_has_pending says
 * libssl holds bytes, e.g. with read-ahead). So the next record is the
 * client's first under its application keys: sequence 0 in TLS 1.3 (the
 * Finished went under the handshake keys), 1 in TLS 1.2 (the Finished was
 * record 0 under the new keys). A handshake that completes anywhere else
 * (inside SSL_read, or in a read on an SSL BIO) is not switched here: libssl
 * may have read past it (tls/kswitch/defer.c's deferred switch may take it).
 *
 * After the switch, tls/kswitch/rx.c serves the connection's receiving
 * calls. The sending side stays libssl's (its kTLS TX or user space)
 * unless tls/kswitch/tx.c takes it. */
#include "tls/ossl/hooks.h" /* first: the hook bodies' names */
#include "tls/kswitch/kswitch.h"
#include "tls/kswitch/own.h"
#include "tls/bioproof.h"
#include "core/config.h"
#include "core/fds.h"
#include "tls/kswitch/kdf.h"
#include "kernel/cryptoinfo.h"
#include "kernel/ktls.h"
#include "core/log.h"
#include "tls/ossl/api.h"
#include "core/libc.h"

#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define api ks_ossl_api

static int own_idx = -1;    /* SSL: struct ks_own */
static int keylog_idx = -1; /* SSL_CTX: the program's keylog callback */
static bool ready;          /* the switch can run in this process */
int ks_switch_live;         /* connections switched now (atomic): the fast
                               no on every hook while there is none */

struct keylog_box {
    ks_keylog_cb_t cb;
};

static void own_wipe(struct ks_own *o)
{
    ks_cleanse(o->secret, sizeof o->secret);
    ks_cleanse(o->stash, sizeof o->stash);
    o->secret_len = o->stash_len = o->stash_off = 0;
}

/* The record SSL_peek took: wiped and given back. */
static void held_free(struct ks_own *o)
{
    if (o->held)
        ks_cleanse(o->held, KS_OWN_HELD);
    free(o->held);
    o->held = NULL;
    o->held_off = o->held_len = 0;
}

/* The end of o's connection (SSL_free, SSL_clear): its live count given
 * back, its secrets wiped, what it held freed. */
static void own_forget(struct ks_own *o)
{
    if (o->rx_on)
        __atomic_sub_fetch(&ks_switch_live, 1, __ATOMIC_RELEASE);
    if (o->rx_on && o->rx_bio)
        ks_biosock_rx_end(o->fd, o->rx_sock); /* its reads are not framed any more */
    o->rx_bio = NULL;
    ks_biosock_rx_release(&o->rx_in);
    own_wipe(o);
    ks_own_tx_wipe(o);
    held_free(o);
}

static void own_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    struct ks_own *o = ptr;
    if (!o)
        return;
    own_forget(o);
    free(o);
}

static void box_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    free(ptr);
}

bool ks_switch_setup(void)
{
    if (!ks_ossl_api_switch_ok() || ks_config()->ktls == KS_KTLS_OFF)
        return false;
    own_idx =
        api.get_ex_new_index(CRYPTO_EX_INDEX_SSL, 0, NULL, NULL, ks_ex_dup_keep_own, own_free);
    keylog_idx = api.get_ex_new_index(CRYPTO_EX_INDEX_SSL_CTX, 0, NULL, NULL, NULL, box_free);
    ready = own_idx >= 0 && keylog_idx >= 0;
    if (ready) {
        ks_switch_tx_setup();
        ks_biosock_rx_allow();
    }
    return ready;
}

bool ks_switch_ready(void)
{
    return ready;
}

struct ks_own *ks_own_make(SSL *s)
{
    struct ks_own *o = api.get_ex_data(s, own_idx);
    if (o)
        return o;
    if (!(o = calloc(1, sizeof *o)))
        return NULL;
    o->fd = -1;
    o->last_err = -1;
    if (!api.set_ex_data(s, own_idx, o)) {
        free(o);
        return NULL;
    }
    return o;
}

struct ks_own *ks_own_peek(const SSL *s)
{
    return s && own_idx >= 0 ? api.get_ex_data(s, own_idx) : NULL;
}

int ks_own_rx_bio_fd(const SSL *s)
{
    struct ks_own *o = ks_own_peek(s);
    return o && o->rx_on && o->rx_bio ? o->fd : -1;
}

struct ks_own *ks_own_of_switched(const SSL *s)
{
    if (!s)
        return NULL;
    struct ks_own *o = api.get_ex_data(s, own_idx);
    return o && o->rx_on ? o : NULL;
}

void ks_own_forget_error(struct ks_own *o)
{
    o->last_err = -1;
}

/* ---- the keylog callback: the TLS 1.3 client traffic secret ---- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* "<label> <client random hex> <secret hex>": the secret into out (at
 * most cap bytes); its length, 0 if the line is not well formed (then out
 * is wiped). */
static size_t parse_secret(const char *line, size_t label_len, uint8_t *out, size_t cap)
{
    const char *p = strchr(line + label_len, ' ');
    if (!p)
        return 0;
    size_t n = 0;
    for (p++; n < cap && hexval(p[0]) >= 0 && hexval(p[1]) >= 0; p += 2)
        out[n++] = (uint8_t)(hexval(p[0]) << 4 | hexval(p[1]));
    if (*p == '\0' || *p == '\n')
        return n;
    ks_cleanse(out, cap);
    return 0;
}

static void keylog_cb(const SSL *cs, const char *line)
{
    static const char rx_label[] = "CLIENT_TRAFFIC_SECRET_0 ";
    static const char tx_label[] = "SERVER_TRAFFIC_SECRET_0 ";
    SSL *s = (SSL *)cs; /* ex_data wants a mutable SSL: the same object */
    if (line && strncmp(line, rx_label, sizeof rx_label - 1) == 0 && api.is_server(s)) {
        struct ks_own *o = ks_own_make(s);
        if (o)
            o->secret_len = parse_secret(line, sizeof rx_label - 1, o->secret, sizeof o->secret);
    } else if (line && strncmp(line, tx_label, sizeof tx_label - 1) == 0 && api.is_server(s) &&
               ks_switch_tx_ready()) {
        /* libssl has just switched its sending to the application keys:
         * the records it writes from here on count (tls/kswitch/tx.c). */
        struct ks_own *o = ks_own_make(s);
        if (o) {
            o->tx_secret_len =
                parse_secret(line, sizeof tx_label - 1, o->tx_secret, sizeof o->tx_secret);
            ks_own_tx_keys_changed(o);
        }
    }
    SSL_CTX *ctx = api.get_SSL_CTX(s);
    struct keylog_box *b = ctx ? api.CTX_get_ex_data(ctx, keylog_idx) : NULL;
    if (b && b->cb)
        b->cb(cs, line);
}

static struct keylog_box *keylog_box_of(SSL_CTX *ctx, bool make)
{
    struct keylog_box *b = api.CTX_get_ex_data(ctx, keylog_idx);
    if (b || !make || !(b = calloc(1, sizeof *b)))
        return b;
    if (!api.CTX_set_ex_data(ctx, keylog_idx, b)) {
        free(b);
        return NULL;
    }
    return b;
}

void ks_switch_ctx_created(SSL_CTX *ctx)
{
    if (!ready || !ctx || !ks_ktls_kernel_has_tls())
        return;
    struct keylog_box *b = keylog_box_of(ctx, true);
    if (!b)
        return;
    b->cb = api.CTX_get_keylog_callback(ctx);
    api.CTX_set_keylog_callback(ctx, keylog_cb);
    ks_switch_tx_ctx_created(ctx);
}

KS_EXPORT void SSL_CTX_set_keylog_callback(SSL_CTX *ctx, ks_keylog_cb_t cb)
{
    struct keylog_box *b = NULL;
    if (ks_ossl_ready() && ready && ctx)
        b = keylog_box_of(ctx, false);
    if (b) { /* ours stays installed and calls the program's */
        b->cb = cb;
        return;
    }
    if (api.CTX_set_keylog_callback)
        api.CTX_set_keylog_callback(ctx, cb);
}

KS_EXPORT ks_keylog_cb_t SSL_CTX_get_keylog_callback(const SSL_CTX *ctx)
{
    struct keylog_box *b = NULL;
    if (ks_ossl_ready() && ready && ctx)
        b = api.CTX_get_ex_data(ctx, keylog_idx);
    if (b)
        return b->cb;
    return api.CTX_get_keylog_callback ? api.CTX_get_keylog_callback(ctx) : NULL;
}

/* ---- the switch ---- */

/* Puts k into fd's receive (tx: send) direction at record sequence seq.
 * 0, or -1 with errno. The crypto_info copy of the keys is wiped here. */
int ks_own_tls12_keys(SSL *s, enum ks_hash hash, enum ks_aead aead, bool client_write,
                      struct ks_keys *k)
{
    uint8_t master[48], cr[32], sr[32];
    SSL_SESSION *sess = api.get_session(s);
    size_t mlen = sess ? api.SESSION_get_master_key(sess, master, sizeof master) : 0;
    int rc = mlen == sizeof master && api.get_client_random(s, cr, sizeof cr) == sizeof cr &&
                     api.get_server_random(s, sr, sizeof sr) == sizeof sr
                 ? ks_kdf_tls12_keys(hash, aead, master, mlen, cr, sr, client_write, k)
                 : -1;
    ks_cleanse(master, sizeof master);
    return rc;
}

int ks_own_install(int fd, int version, const struct ks_keys *k, uint64_t seq, bool tx)
{
    uint16_t cipher = k->aead == KS_AEAD_AES_128_GCM   ? TLS_CIPHER_AES_GCM_128
                      : k->aead == KS_AEAD_AES_256_GCM ? TLS_CIPHER_AES_GCM_256
                      : k->aead == KS_AEAD_CHACHA20    ? TLS_CIPHER_CHACHA20_POLY1305
                                                       : 0; /* unknown: len 0 */
    union ks_crypto_info ci;
    socklen_t len =
        ks_crypto_info_build(&ci, version == TLS1_3_VERSION ? TLS_1_3_VERSION : TLS_1_2_VERSION,
                             cipher, k->key, k->iv, seq);
    if (!len) {
        errno = EINVAL;
        return -1;
    }
    /* The tls ULP is there when libssl did TX; otherwise put it on. */
    char ulp[16] = "";
    socklen_t ulp_len = sizeof ulp - 1;
    int rc = 0;
    if (getsockopt(fd, IPPROTO_TCP, TCP_ULP, ulp, &ulp_len) != 0 || strcmp(ulp, "tls") != 0)
        rc = setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", 3);
    if (rc == 0)
        rc = setsockopt(fd, SOL_TLS, tx ? TLS_TX : TLS_RX, &ci, len);
    int saved = errno;
    ks_cleanse(&ci, sizeof ci);
    errno = saved;
    return rc;
}

/* The switch at the end of the handshake (at NULL), or at record *at of
 * the client's (the deferred switch, tls/kswitch/defer.c); check_only: every
 * check but libssl's holding, nothing installed. */
static bool switch_rx(SSL *s, int version, const char *cipher, const uint64_t *at, bool check_only,
                      enum ks_fallback *why)
{
    *why = KS_FB_OTHER;
    if (!ready)
        return false;
    if (!api.is_server(s)) {
        /* A client receives NewSessionTickets under the application keys,
         * which this switch does not handle: left to libssl. */
        *why = KS_FB_CLIENT;
        return false;
    }
    if (version == TLS1_3_VERSION && (api.get_verify_mode(s) & SSL_VERIFY_POST_HANDSHAKE)) {
        /* The client's post-handshake Certificate would come as handshake
         * records under the application keys, which libssl must process. */
        ks_log_debug("fd %d: post-handshake authentication is on; receive stays with libssl",
                     api.get_rfd(s));
        return false;
    }
    /* Records are read from fd past the BIO: only under libcrypto's own
     * socket BIO are they what the program's reads would have been. Under
     * one BIO of the program's own, they are read through it, framed
     * (tls/biosock/rxframe.c), from a socket its reads are watched on. */
    BIO *rbio = api.get_rbio(s);
    enum ks_bio_shape shape = ks_bio_shape(rbio, false);
    int fd = -1;
    bool via_bio = false;
    if (shape == KS_BIO_SOCKET) {
        fd = api.get_rfd(s);
        if (!ks_same_socket(fd, api.get_wfd(s))) {
            *why = KS_FB_NOT_SOCKET;
            return false;
        }
    } else if (shape == KS_BIO_PROGRAM) {
        fd = ks_biosock_rx_fd(rbio, api.get_wbio(s));
        via_bio = true;
        if (fd < 0) {
            *why = KS_FB_BIO_RX;
            return false;
        }
    } else {
        *why = shape == KS_BIO_OTHER ? KS_FB_NOT_SOCKET : KS_FB_BIO_UNPROVEN;
        return false;
    }
    enum ks_hash hash = KS_HASH_SHA256;
    enum ks_aead aead = ks_kdf_aead_of(cipher, &hash);
    if (aead == KS_AEAD_NONE) {
        *why = KS_FB_CIPHER;
        return false;
    }
    /* Checked last: the deferred switch waits for these alone. */
    if (check_only || api.has_pending(s)) {
        if (!check_only)
            ks_log_debug("fd %d: libssl holds received bytes (SSL_has_pending)", fd);
        *why = KS_FB_UNREAD;
        return check_only;
    }
    if (via_bio && !ks_biosock_rx_caught_up(rbio, fd)) {
        *why = KS_FB_UNREAD; /* the program may hold bytes it read: not yet */
        return false;
    }
    struct ks_own *o = ks_own_make(s);
    if (!o)
        return false;
    struct ks_keys k;
    uint64_t seq;
    int rc;
    if (version == TLS1_3_VERSION) {
        if (o->secret_len != ks_kdf_hash_len(hash)) {
            ks_log_debug("fd %d: no client traffic secret from the keylog callback; receive "
                         "stays in user space",
                         fd);
            own_wipe(o);
            return false;
        }
        rc = ks_kdf_tls13_keys(hash, aead, o->secret, o->secret_len, &k);
        seq = at ? *at : 0;
    } else if (version == TLS1_2_VERSION) {
        rc = ks_own_tls12_keys(s, hash, aead, true, &k);
        seq = at ? *at : 1;
    } else {
        *why = KS_FB_VERSION;
        own_wipe(o);
        return false;
    }
    if (rc != 0) {
        own_wipe(o);
        ks_log_debug("fd %d: key derivation failed; receive stays in user space", fd);
        return false;
    }
    /* Framed from the install on: no read of the program's comes between. */
    uint64_t sock = 0;
    if (via_bio && !ks_biosock_rx_frame(fd, &sock)) {
        ks_cleanse(&k, sizeof k);
        own_wipe(o);
        return false;
    }
    rc = ks_own_install(fd, version, &k, seq, false);
    int err = errno;
    ks_cleanse(&k, sizeof k);
    if (rc != 0) {
        if (via_bio)
            ks_biosock_rx_end(fd, sock);
        own_wipe(o);
        *why = KS_FB_REFUSED;
        ks_log_info("fd %d: the kernel refused the receive keys (setsockopt TLS_RX: %s); the "
                    "connection carries on in user space",
                    fd, strerror(err));
        return false;
    }
    o->fd = fd;
    o->rx_bio = via_bio ? rbio : NULL;
    o->rx_sock = sock;
    o->version = version;
    o->hash = (uint8_t)hash;
    o->aead = (uint8_t)aead;
    o->state = OWN_OPEN;
    o->last_err = -1;
    o->rx_on = true;
    ks_own_rx_no_pad(o);
    if (!ks_own_rekey_possible(o))
        own_wipe(o); /* the secret is no longer needed: the kernel has the keys */
    __atomic_add_fetch(&ks_switch_live, 1, __ATOMIC_RELEASE);
    return true;
}

bool ks_switch_rx(SSL *s, int version, const char *cipher, enum ks_fallback *why)
{
    return switch_rx(s, version, cipher, NULL, false, why);
}

bool ks_switch_rx_check(SSL *s, int version, const char *cipher, enum ks_fallback *why)
{
    return switch_rx(s, version, cipher, NULL, true, why);
}

bool ks_switch_rx_at(SSL *s, int version, const char *cipher, uint64_t seq, enum ks_fallback *why)
{
    return switch_rx(s, version, cipher, &seq, false, why);
}

void ks_switch_clear(SSL *s)
{
    if (!ready || !s)
        return;
    struct ks_own *o = api.get_ex_data(s, own_idx);
    if (!o)
        return;
    own_forget(o);
    /* The next handshake on s is counted afresh (the deferred switch). */
    ks_own_msg_counting_again(s, o);
    o->rx_on = o->tx_on = false;
    o->tx_seq = 0;
    o->tx_seq_known = o->alert_pending = o->ku_answer_due = false;
    o->rx_wait = o->fatal = false;
    o->rxq = (struct ks_rxseq){0};
    o->wpend_buf = NULL;
    o->wpend_done = 0;
    o->state = OWN_OPEN;
    o->fd = -1;
    o->last_err = -1;
}
