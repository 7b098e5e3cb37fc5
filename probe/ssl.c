/* libssl side: load a libssl (and its libcrypto) with dlopen, run a real
 * TLS 1.2 and a TLS 1.3 handshake between two SSL objects over a loopback
 * TCP connection with SSL_OP_ENABLE_KTLS, and ask each end's BIO whether
 * kTLS was engaged. The OpenSSL headers are used for constants and types
 * only: every function is looked up at run time. */
#include "probe.h"

#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

/* Values from the OpenSSL 3 headers; spelled out so a build against other
 * headers still asks the right thing of the library it loads. */
#define P_BIO_CTRL_GET_KTLS_SEND 73
#define P_BIO_CTRL_GET_KTLS_RECV 76
#define P_SSL_OP_ENABLE_KTLS (1ULL << 3)
_Static_assert(BIO_CTRL_GET_KTLS_SEND == P_BIO_CTRL_GET_KTLS_SEND, "BIO ctrl");
_Static_assert(BIO_CTRL_GET_KTLS_RECV == P_BIO_CTRL_GET_KTLS_RECV, "BIO ctrl");

/* ---- watching what libssl asks of the kernel ----------------------------
 * The probe defines setsockopt. The executable comes first in the global
 * lookup scope, so libssl's calls land here; they are forwarded to the next
 * definition (libc) unchanged and, while a handshake runs, counted. This is
 * how the probe knows a libssl was built with kTLS even on a kernel
 * without tls: such a libssl asks for the tls ULP and is refused. */
static struct {
    bool armed;
    int fd[2];
    struct hs_result *hs;
} spy = {.fd = {-1, -1}};

static int (*next_setsockopt)(int, int, int, const void *, socklen_t);

int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
    int r, e;

    if (!next_setsockopt)
        next_setsockopt =
            (int (*)(int, int, int, const void *, socklen_t))dlsym(RTLD_NEXT, "setsockopt");
    if (next_setsockopt)
        r = next_setsockopt(fd, level, name, val, len);
    else
        r = (int)syscall(SYS_setsockopt, fd, level, name, val, len);
    e = errno;
    if (spy.armed && spy.hs && (fd == spy.fd[0] || fd == spy.fd[1])) {
        struct hs_result *h = spy.hs;

        if (level == IPPROTO_TCP && name == TCP_ULP && val && len >= 3 && !memcmp(val, "tls", 3)) {
            h->ulp_calls++;
            if (r == 0)
                h->ulp_ok++;
            else
                h->ulp_errno = e;
        } else if (level == SOL_TLS && name == TLS_TX) {
            h->tx_calls++;
            if (r == 0)
                h->tx_ok++;
            else
                h->tx_errno = e;
        } else if (level == SOL_TLS && name == TLS_RX) {
            h->rx_calls++;
            if (r == 0)
                h->rx_ok++;
            else
                h->rx_errno = e;
        }
    }
    errno = e;
    return r;
}

/* ---- the functions used, looked up at run time --------------------------- */
static struct {
    const char *(*OpenSSL_version)(int);
    unsigned long (*OpenSSL_version_num)(void);
    unsigned long (*ERR_get_error)(void);
    void (*ERR_error_string_n)(unsigned long, char *, size_t);
    void (*ERR_clear_error)(void);
    EVP_PKEY_CTX *(*EVP_PKEY_CTX_new_id)(int, ENGINE *);
    int (*EVP_PKEY_keygen_init)(EVP_PKEY_CTX *);
    int (*EVP_PKEY_CTX_ctrl)(EVP_PKEY_CTX *, int, int, int, int, void *);
    int (*EVP_PKEY_keygen)(EVP_PKEY_CTX *, EVP_PKEY **);
    void (*EVP_PKEY_CTX_free)(EVP_PKEY_CTX *);
    void (*EVP_PKEY_free)(EVP_PKEY *);
    const EVP_MD *(*EVP_sha256)(void);
    X509 *(*X509_new)(void);
    void (*X509_free)(X509 *);
    int (*X509_set_version)(X509 *, long);
    ASN1_INTEGER *(*X509_get_serialNumber)(X509 *);
    int (*ASN1_INTEGER_set)(ASN1_INTEGER *, long);
    ASN1_TIME *(*X509_gmtime_adj)(ASN1_TIME *, long);
    ASN1_TIME *(*X509_getm_notBefore)(const X509 *);
    ASN1_TIME *(*X509_getm_notAfter)(const X509 *);
    int (*X509_set_pubkey)(X509 *, EVP_PKEY *);
    X509_NAME *(*X509_get_subject_name)(const X509 *);
    int (*X509_NAME_add_entry_by_txt)(X509_NAME *, const char *, int, const unsigned char *, int,
                                      int, int);
    int (*X509_set_issuer_name)(X509 *, const X509_NAME *);
    int (*X509_sign)(X509 *, EVP_PKEY *, const EVP_MD *);
    long (*BIO_ctrl)(BIO *, int, long, void *);

    const SSL_METHOD *(*TLS_server_method)(void);
    const SSL_METHOD *(*TLS_client_method)(void);
    SSL_CTX *(*SSL_CTX_new)(const SSL_METHOD *);
    void (*SSL_CTX_free)(SSL_CTX *);
    int (*SSL_CTX_use_certificate)(SSL_CTX *, X509 *);
    int (*SSL_CTX_use_PrivateKey)(SSL_CTX *, EVP_PKEY *);
    uint64_t (*SSL_CTX_set_options)(SSL_CTX *, uint64_t);
    SSL *(*SSL_new)(SSL_CTX *);
    void (*SSL_free)(SSL *);
    int (*SSL_set_fd)(SSL *, int);
    long (*SSL_ctrl)(SSL *, int, long, void *);
    int (*SSL_set_cipher_list)(SSL *, const char *);
    int (*SSL_set_ciphersuites)(SSL *, const char *);
    void (*SSL_set_connect_state)(SSL *);
    void (*SSL_set_accept_state)(SSL *);
    int (*SSL_do_handshake)(SSL *);
    int (*SSL_get_error)(const SSL *, int);
    BIO *(*SSL_get_rbio)(const SSL *);
    BIO *(*SSL_get_wbio)(const SSL *);
    int (*SSL_read)(SSL *, void *, int);
    int (*SSL_write)(SSL *, const void *, int);
    const SSL_CIPHER *(*SSL_get_current_cipher)(const SSL *);
    const char *(*SSL_CIPHER_get_name)(const SSL_CIPHER *);
    const char *(*SSL_get_version)(const SSL *);
} o;

/* dlsym on the libssl handle also searches its dependencies (libcrypto). */
static const char *load_symbols(void *h)
{
#define L(name)                                                                                    \
    do {                                                                                           \
        o.name = (__typeof__(o.name))dlsym(h, #name);                                              \
        if (!o.name)                                                                               \
            return #name;                                                                          \
    } while (0)
    L(OpenSSL_version);
    L(OpenSSL_version_num);
    L(ERR_get_error);
    L(ERR_error_string_n);
    L(ERR_clear_error);
    L(EVP_PKEY_CTX_new_id);
    L(EVP_PKEY_keygen_init);
    L(EVP_PKEY_CTX_ctrl);
    L(EVP_PKEY_keygen);
    L(EVP_PKEY_CTX_free);
    L(EVP_PKEY_free);
    L(EVP_sha256);
    L(X509_new);
    L(X509_free);
    L(X509_set_version);
    L(X509_get_serialNumber);
    L(ASN1_INTEGER_set);
    L(X509_gmtime_adj);
    L(X509_getm_notBefore);
    L(X509_getm_notAfter);
    L(X509_set_pubkey);
    L(X509_get_subject_name);
    L(X509_NAME_add_entry_by_txt);
    L(X509_set_issuer_name);
    L(X509_sign);
    L(BIO_ctrl);
    L(TLS_server_method);
    L(TLS_client_method);
    L(SSL_CTX_new);
    L(SSL_CTX_free);
    L(SSL_CTX_use_certificate);
    L(SSL_CTX_use_PrivateKey);
    L(SSL_CTX_set_options);
    L(SSL_new);
    L(SSL_free);
    L(SSL_set_fd);
    L(SSL_ctrl);
    L(SSL_set_cipher_list);
    L(SSL_set_ciphersuites);
    L(SSL_set_connect_state);
    L(SSL_set_accept_state);
    L(SSL_do_handshake);
    L(SSL_get_error);
    L(SSL_get_rbio);
    L(SSL_get_wbio);
    L(SSL_read);
    L(SSL_write);
    L(SSL_get_current_cipher);
    L(SSL_CIPHER_get_name);
    L(SSL_get_version);
#undef L
    return NULL;
}

/* The first queued OpenSSL error, or `fallback`; clears the queue. */
static void ossl_error(char *buf, size_t size, const char *what)
{
    unsigned long e = o.ERR_get_error();
    char msg[256];

    if (e) {
        o.ERR_error_string_n(e, msg, sizeof(msg));
        bprintf(buf, size, "%s: %s", what, msg);
    } else {
        bprintf(buf, size, "%s failed", what);
    }
    o.ERR_clear_error();
}

/* ---- a throwaway identity: P-256 key and a self-signed certificate ------- */
static bool make_identity(EVP_PKEY **pkey, X509 **cert, char *err, size_t errsz)
{
    EVP_PKEY_CTX *kctx = o.EVP_PKEY_CTX_new_id(EVP_PKEY_EC, NULL);
    X509 *x = NULL;

    *pkey = NULL;
    *cert = NULL;
    if (!kctx || o.EVP_PKEY_keygen_init(kctx) <= 0 ||
        o.EVP_PKEY_CTX_ctrl(kctx, EVP_PKEY_EC, EVP_PKEY_OP_PARAMGEN | EVP_PKEY_OP_KEYGEN,
                            EVP_PKEY_CTRL_EC_PARAMGEN_CURVE_NID, NID_X9_62_prime256v1, NULL) <= 0 ||
        o.EVP_PKEY_keygen(kctx, pkey) <= 0) {
        ossl_error(err, errsz, "P-256 key generation");
        goto fail;
    }
    x = o.X509_new();
    if (!x || !o.X509_set_version(x, 2) || !o.ASN1_INTEGER_set(o.X509_get_serialNumber(x), 1) ||
        !o.X509_gmtime_adj(o.X509_getm_notBefore(x), -60) ||
        !o.X509_gmtime_adj(o.X509_getm_notAfter(x), 3600) || !o.X509_set_pubkey(x, *pkey) ||
        !o.X509_NAME_add_entry_by_txt(o.X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                      (const unsigned char *)"ktls-probe", -1, -1, 0) ||
        !o.X509_set_issuer_name(x, o.X509_get_subject_name(x)) ||
        !o.X509_sign(x, *pkey, o.EVP_sha256())) {
        ossl_error(err, errsz, "self-signed certificate");
        goto fail;
    }
    *cert = x;
    o.EVP_PKEY_CTX_free(kctx);
    return true;
fail:
    if (x)
        o.X509_free(x);
    if (*pkey)
        o.EVP_PKEY_free(*pkey);
    *pkey = NULL;
    if (kctx)
        o.EVP_PKEY_CTX_free(kctx);
    return false;
}

/* ---- one handshake ------------------------------------------------------- */

/* Drives one side; returns 1 done, 0 wants I/O (events set), -1 failed. */
static int step(SSL *s, int (*fn)(SSL *), short *events)
{
    int r = fn(s);

    if (r == 1)
        return 1;
    switch (o.SSL_get_error(s, r)) {
    case SSL_ERROR_WANT_READ:
        *events = POLLIN;
        return 0;
    case SSL_ERROR_WANT_WRITE:
        *events = POLLOUT;
        return 0;
    default:
        return -1;
    }
}

static bool wait_io(int cfd, short cev, int sfd, short sev, int64_t deadline)
{
    struct pollfd p[2] = {{.fd = cfd, .events = cev}, {.fd = sfd, .events = sev}};
    int left = (int)(deadline - now_ms());

    if (left <= 0)
        return false;
    if (left > 200)
        left = 200; /* both ends are ours: re-drive them often */
    if (poll(p, 2, left) < 0 && errno != EINTR)
        return false;
    return true;
}

static const char msg_c2s[] = "ktls-probe: client to server";
static const char msg_s2c[] = "ktls-probe: server to client";

/* Sends `msg` from one SSL and reads it on the other, within the deadline. */
static bool exchange(SSL *from, int ffd, SSL *to, int tfd, const char *msg, int64_t deadline,
                     char *err, size_t errsz)
{
    int len = (int)strlen(msg);
    char buf[64];
    int got = 0;
    bool sent = false;

    while (now_ms() < deadline) {
        short fev = 0, tev = 0;

        if (!sent) {
            int r = o.SSL_write(from, msg, len);

            if (r == len) {
                sent = true;
            } else if (r > 0) {
                bprintf(err, errsz, "short SSL_write");
                return false;
            } else {
                int e = o.SSL_get_error(from, r);

                if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                    ossl_error(err, errsz, "SSL_write");
                    return false;
                }
                fev = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
            }
        }
        if (sent) {
            int r = o.SSL_read(to, buf + got, (int)sizeof(buf) - got);

            if (r > 0) {
                got += r;
                if (got >= len)
                    break;
                continue;
            }
            int e = o.SSL_get_error(to, r);

            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
                ossl_error(err, errsz, "SSL_read");
                return false;
            }
            tev = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
        }
        if (!wait_io(ffd, fev, tfd, tev, deadline))
            break;
    }
    if (got < len || memcmp(buf, msg, (size_t)len)) {
        bprintf(err, errsz, got < len ? "timed out" : "data corrupted");
        return false;
    }
    return true;
}

static bool ktls_flag(SSL *s, bool send)
{
    BIO *b = send ? o.SSL_get_wbio(s) : o.SSL_get_rbio(s);

    return b &&
           o.BIO_ctrl(b, send ? P_BIO_CTRL_GET_KTLS_SEND : P_BIO_CTRL_GET_KTLS_RECV, 0, NULL) > 0;
}

static void handshake(struct hs_result *h, int version, SSL_CTX *sctx, SSL_CTX *cctx, int lfd,
                      unsigned port)
{
    SSL *cs = NULL, *ss = NULL;
    int cfd = -1, sfd = -1;
    int64_t deadline;
    bool cdone = false, sdone = false;

    h->tried = true;
    if (loopback_pair(lfd, port, &cfd, &sfd, CONNECT_TIMEOUT_MS) < 0) {
        bprintf(h->error, sizeof(h->error), "loopback connection: %s", errname(errno));
        return;
    }
    cs = o.SSL_new(cctx);
    ss = o.SSL_new(sctx);
    if (!cs || !ss) {
        ossl_error(h->error, sizeof(h->error), "SSL_new");
        goto out;
    }
    /* pin the version, and an AES-128-GCM suite the kernel surely knows */
    if (o.SSL_ctrl(cs, SSL_CTRL_SET_MIN_PROTO_VERSION, version, NULL) <= 0 ||
        o.SSL_ctrl(cs, SSL_CTRL_SET_MAX_PROTO_VERSION, version, NULL) <= 0 ||
        o.SSL_ctrl(ss, SSL_CTRL_SET_MIN_PROTO_VERSION, version, NULL) <= 0 ||
        o.SSL_ctrl(ss, SSL_CTRL_SET_MAX_PROTO_VERSION, version, NULL) <= 0) {
        ossl_error(h->error, sizeof(h->error), "setting the protocol version");
        goto out;
    }
    if (version == TLS1_2_VERSION ? !o.SSL_set_cipher_list(cs, "ECDHE-ECDSA-AES128-GCM-SHA256")
                                  : !o.SSL_set_ciphersuites(cs, "TLS_AES_128_GCM_SHA256")) {
        ossl_error(h->error, sizeof(h->error), "choosing AES-128-GCM");
        goto out;
    }

    spy.fd[0] = cfd;
    spy.fd[1] = sfd;
    spy.hs = h;
    spy.armed = true;
    if (!o.SSL_set_fd(cs, cfd) || !o.SSL_set_fd(ss, sfd)) {
        ossl_error(h->error, sizeof(h->error), "SSL_set_fd");
        goto out;
    }
    o.SSL_set_connect_state(cs);
    o.SSL_set_accept_state(ss);

    deadline = now_ms() + HANDSHAKE_TIMEOUT_MS;
    for (;;) {
        short cev = 0, sev = 0;
        int r;

        if (!cdone) {
            r = step(cs, o.SSL_do_handshake, &cev);
            if (r < 0) {
                ossl_error(h->error, sizeof(h->error), "client handshake");
                goto out;
            }
            cdone = r == 1;
        }
        if (!sdone) {
            r = step(ss, o.SSL_do_handshake, &sev);
            if (r < 0) {
                ossl_error(h->error, sizeof(h->error), "server handshake");
                goto out;
            }
            sdone = r == 1;
        }
        if (cdone && sdone)
            break;
        if (!wait_io(cfd, cev, sfd, sev, deadline)) {
            bprintf(h->error, sizeof(h->error), "handshake timed out after %d ms",
                    HANDSHAKE_TIMEOUT_MS);
            goto out;
        }
    }
    h->ok = true;
    strlcpy0(h->protocol, o.SSL_get_version(cs), sizeof(h->protocol));
    const SSL_CIPHER *c = o.SSL_get_current_cipher(cs);
    strlcpy0(h->cipher, c ? o.SSL_CIPHER_get_name(c) : "?", sizeof(h->cipher));

    /* one record each way: through the kernel where kTLS is engaged */
    h->data_ok =
        exchange(cs, cfd, ss, sfd, msg_c2s, deadline, h->data_error, sizeof(h->data_error)) &&
        exchange(ss, sfd, cs, cfd, msg_s2c, deadline, h->data_error, sizeof(h->data_error));

    h->client_tx = ktls_flag(cs, true);
    h->client_rx = ktls_flag(cs, false);
    h->server_tx = ktls_flag(ss, true);
    h->server_rx = ktls_flag(ss, false);
out:
    spy.armed = false;
    spy.hs = NULL;
    spy.fd[0] = spy.fd[1] = -1;
    if (cs)
        o.SSL_free(cs);
    if (ss)
        o.SSL_free(ss);
    close_abort(cfd);
    close_abort(sfd);
    o.ERR_clear_error();
}

/* Decides, honestly, whether this libssl was built with kTLS. */
static void judge_build(struct ssl_info *si, const struct kernel_info *k)
{
    bool engaged = false, asked = false, all_ok = true;
    int ulp_errno = 0;

    for (int v = 0; v < 2; v++) {
        const struct hs_result *h = &si->hs[v];

        engaged |= h->client_tx || h->client_rx || h->server_tx || h->server_rx;
        asked |= h->ulp_calls > 0 || h->tx_calls > 0 || h->rx_calls > 0;
        all_ok &= h->ok;
        if (h->ulp_calls > h->ulp_ok && h->ulp_errno)
            ulp_errno = h->ulp_errno;
    }
    if (engaged) {
        si->ktls_built = TRI_YES;
        bprintf(si->ktls_built_how, sizeof(si->ktls_built_how),
                "kTLS engaged in the loopback handshake");
    } else if (asked && si->interposer_ok) {
        si->ktls_built = TRI_YES;
        if (ulp_errno)
            bprintf(si->ktls_built_how, sizeof(si->ktls_built_how),
                    "it asked the kernel for the tls ULP in the handshake;"
                    " refused: %s",
                    errname(ulp_errno));
        else
            bprintf(si->ktls_built_how, sizeof(si->ktls_built_how),
                    "it asked the kernel for kTLS in the handshake");
    } else if (!all_ok) {
        si->ktls_built = TRI_UNKNOWN;
        bprintf(si->ktls_built_how, sizeof(si->ktls_built_how),
                "unknown (the loopback handshake failed)");
    } else if (si->interposer_ok) {
        si->ktls_built = TRI_NO;
        bprintf(si->ktls_built_how, sizeof(si->ktls_built_how),
                "it never asked the kernel for the tls ULP in a handshake"
                " with SSL_OP_ENABLE_KTLS");
    } else if (!k->ulp_available) {
        si->ktls_built = TRI_UNKNOWN;
        bprintf(si->ktls_built_how, sizeof(si->ktls_built_how), "unknown (kernel has no tls)");
    } else {
        si->ktls_built = TRI_NO;
        bprintf(si->ktls_built_how, sizeof(si->ktls_built_how),
                "kTLS not engaged in a handshake with SSL_OP_ENABLE_KTLS"
                " on a kernel with tls");
    }
}

void ssl_probe(struct ssl_info *si, const struct kernel_info *k)
{
    void *hc = NULL, *hs = NULL;
    struct link_map *lm = NULL;
    EVP_PKEY *pkey = NULL;
    X509 *cert = NULL;
    SSL_CTX *sctx = NULL, *cctx = NULL;
    const char *missing;
    unsigned port = 0;
    int lfd = -1;

    si->ktls_built = TRI_UNKNOWN;
    if ((si->from_program && !si->program_links_libssl) || si->load_error[0])
        return;
    if (!si->requested[0])
        strlcpy0(si->requested, "libssl.so.3", sizeof(si->requested));

    /* The program's own libcrypto first, so libssl binds to it. */
    if (si->crypto_requested[0])
        hc = dlopen(si->crypto_requested, RTLD_NOW | RTLD_LOCAL);
    hs = dlopen(si->requested, RTLD_NOW | RTLD_LOCAL);
    if (!hs) {
        const char *e = dlerror();

        strlcpy0(si->load_error, e ? e : "dlopen failed", sizeof(si->load_error));
        goto out;
    }
    si->loaded = true;
    if (dlinfo(hs, RTLD_DI_LINKMAP, &lm) == 0 && lm && lm->l_name)
        strlcpy0(si->path, lm->l_name, sizeof(si->path));
    else
        strlcpy0(si->path, si->requested, sizeof(si->path));

    missing = load_symbols(hs);
    if (missing) {
        if (o.OpenSSL_version)
            strlcpy0(si->version, o.OpenSSL_version(OPENSSL_VERSION), sizeof(si->version));
        bprintf(si->setup_error, sizeof(si->setup_error),
                "symbol %s not found (OpenSSL 1.1.1 or 3.x needed)", missing);
        goto out;
    }
    strlcpy0(si->version, o.OpenSSL_version(OPENSSL_VERSION), sizeof(si->version));
    si->version_num = o.OpenSSL_version_num();
    si->interposer_ok = dlsym(RTLD_DEFAULT, "setsockopt") == (void *)setsockopt;

    if (!make_identity(&pkey, &cert, si->setup_error, sizeof(si->setup_error)))
        goto out;
    sctx = o.SSL_CTX_new(o.TLS_server_method());
    cctx = o.SSL_CTX_new(o.TLS_client_method());
    if (!sctx || !cctx || o.SSL_CTX_use_certificate(sctx, cert) <= 0 ||
        o.SSL_CTX_use_PrivateKey(sctx, pkey) <= 0) {
        ossl_error(si->setup_error, sizeof(si->setup_error), "SSL_CTX setup");
        goto out;
    }
    /* kTLS came with OpenSSL 3.0, engaged only when asked. Before 3.0 this
     * bit means something else: leave it alone (such a libssl never asks
     * the kernel, and is reported as built without kTLS). */
    if (si->version_num >= 0x30000000UL) {
        o.SSL_CTX_set_options(sctx, P_SSL_OP_ENABLE_KTLS);
        o.SSL_CTX_set_options(cctx, P_SSL_OP_ENABLE_KTLS);
    }

    lfd = loopback_listener(&port);
    if (lfd < 0) {
        bprintf(si->setup_error, sizeof(si->setup_error), "listen on 127.0.0.1: %s",
                errname(errno));
        goto out;
    }
    handshake(&si->hs[0], TLS1_2_VERSION, sctx, cctx, lfd, port);
    handshake(&si->hs[1], TLS1_3_VERSION, sctx, cctx, lfd, port);
    judge_build(si, k);
out:
    if (lfd >= 0)
        close(lfd);
    if (sctx)
        o.SSL_CTX_free(sctx);
    if (cctx)
        o.SSL_CTX_free(cctx);
    if (cert)
        o.X509_free(cert);
    if (pkey)
        o.EVP_PKEY_free(pkey);
    if (o.ERR_clear_error)
        o.ERR_clear_error();
    if (hs)
        dlclose(hs);
    if (hc)
        dlclose(hc);
}
