/* tls/ossl/api.h — the one table of OpenSSL functions the library calls
 * (libssl.so.3 and libcrypto.so.3, or libssl.so.1.1 and libcrypto.so.1.1:
 * the process's flavour, sym.h; resolved at run time: the library does
 * not link OpenSSL). Hooks that need the real function behind themselves
 * and the kTLS switch (tls/kswitch/switch.c, kdf.c) take them from here; new callers
 * add a field and a line in tls/ossl/api.c. */
#ifndef KTLSSHIM_OSSL_API_H
#define KTLSSHIM_OSSL_API_H

#include "core/common.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

typedef void (*ks_info_cb_t)(const SSL *, int, int);
typedef void (*ks_keylog_cb_t)(const SSL *, const char *);
typedef void (*ks_msg_cb_t)(int, int, int, const void *, size_t, SSL *, void *);

struct ks_ossl_api {
    /* The real functions behind hooks (NULL if absent: the hook then fails
     * safely, see tls/hooks.c). */
    SSL_CTX *(*CTX_new)(const SSL_METHOD *);
    SSL_CTX *(*CTX_new_ex)(OSSL_LIB_CTX *, const char *, const SSL_METHOD *);
    int (*accept)(SSL *);
    int (*connect)(SSL *);
    int (*do_handshake)(SSL *);
    int (*read)(SSL *, void *, int);
    int (*read_ex)(SSL *, void *, size_t, size_t *);
    int (*peek)(SSL *, void *, int);
    int (*peek_ex)(SSL *, void *, size_t, size_t *);
    int (*write)(SSL *, const void *, int);
    int (*write_ex)(SSL *, const void *, size_t, size_t *);
    ossl_ssize_t (*sendfile)(SSL *, int, off_t, size_t, int);
    int (*pending)(const SSL *);
    int (*has_pending)(const SSL *);
    int (*get_error)(const SSL *, int);
    int (*shutdown)(SSL *);
    int (*clear)(SSL *);
    void (*CTX_set_keylog_callback)(SSL_CTX *, ks_keylog_cb_t);
    ks_keylog_cb_t (*CTX_get_keylog_callback)(const SSL_CTX *);

    /* Helpers every hook needs (all found, or ks_ossl_api_load() fails). */
    uint64_t (*CTX_set_options)(SSL_CTX *, uint64_t);
    uint64_t (*get_options)(const SSL *);
    int (*is_init_finished)(const SSL *);
    int (*version)(const SSL *);
    const SSL_CIPHER *(*get_current_cipher)(const SSL *);
    const char *(*CIPHER_get_name)(const SSL_CIPHER *);
    BIO *(*get_wbio)(const SSL *);
    BIO *(*get_rbio)(const SSL *);
    int (*get_wfd)(const SSL *);
    int (*get_rfd)(const SSL *);
    long (*BIO_ctrl)(BIO *, int, long, void *);
    int (*BIO_method_type)(const BIO *);
    int (*get_ex_new_index)(int, long, void *, CRYPTO_EX_new *, CRYPTO_EX_dup *, CRYPTO_EX_free *);
    void *(*get_ex_data)(const SSL *, int);
    int (*set_ex_data)(SSL *, int, void *);
    unsigned long (*version_num)(void);
    int (*session_reused)(const SSL *);
    void (*CTX_set_info_callback)(SSL_CTX *, ks_info_cb_t);
    void (*set_info_callback)(SSL *, ks_info_cb_t);
    SSL_CTX *(*get_SSL_CTX)(const SSL *);
    void *(*CTX_get_ex_data)(const SSL_CTX *, int);
    int (*CTX_set_ex_data)(SSL_CTX *, int, void *);
    /* tls/withhold.c (either absent: nothing is withheld). */
    uint64_t (*set_options)(SSL *, uint64_t);
    uint64_t (*clear_options)(SSL *, uint64_t);
    /* tls/ctx.c (absent: every HANDSHAKE_DONE is a completed handshake). */
    OSSL_HANDSHAKE_STATE (*get_state)(const SSL *);

    /* The kTLS switch of the library's own (ks_ossl_api_switch_ok()). */
    int (*is_server)(const SSL *);
    int (*get_verify_mode)(const SSL *);
    int (*get_shutdown)(const SSL *);
    void (*set_shutdown)(SSL *, int);
    SSL_SESSION *(*get_session)(const SSL *);
    size_t (*SESSION_get_master_key)(const SSL_SESSION *, unsigned char *, size_t);
    size_t (*get_client_random)(const SSL *, unsigned char *, size_t);
    size_t (*get_server_random)(const SSL *, unsigned char *, size_t);
    void (*ERR_new)(void); /* OpenSSL 3: these three; */
    void (*ERR_set_debug)(const char *, int, const char *);
    void (*ERR_set_error)(int, int, const char *, ...);
    void (*put_error)(int, int, int, const char *, int); /* 1.1: ERR_put_error */
    const EVP_MD *(*sha256)(void);
    const EVP_MD *(*sha384)(void);
    unsigned char *(*HMAC)(const EVP_MD *, const void *, int, const unsigned char *, size_t,
                           unsigned char *, unsigned int *);
    void (*cleanse)(void *, size_t);

    /* The own switch's send side (tls/kswitch/tx.c): ks_ossl_api_switch_tx_ok(). */
    void (*CTX_set_msg_callback)(SSL_CTX *, ks_msg_cb_t);
    void (*set_msg_callback)(SSL *, ks_msg_cb_t);
    int (*want)(const SSL *);
    int (*get_key_update_type)(const SSL *);
    int (*get_quiet_shutdown)(const SSL *);
    int (*in_init)(const SSL *);
    long (*ctrl)(SSL *, int, long, void *);

    /* ---- biosock/, optreset.c, resume.c: each block loaded on its own
     * (ks_ossl_bio_ready, ks_ossl_optreset_load, ks_ossl_resume_load), so
     * that what each needs, and when it is looked up, stays what it was when
     * they resolved their own. */

    /* biosock/: libcrypto only. Loaded without a lock and without any
     * OpenSSL call (a BIO_ctrl made while libcrypto initialises itself must
     * not come back into this), and never by the libssl blocks: a program
     * may use BIO_ctrl long before it loads libssl (Python's _ssl). */
    struct {
        long (*ctrl)(BIO *, int, long, void *);
        int (*write)(BIO *, const void *, int);
        int (*read)(BIO *, void *, int);
        BIO *(*next)(BIO *);
        int (*method_type)(const BIO *);
        const char *(*method_name)(const BIO *);
        void *(*get_ex_data)(const BIO *, int);
        int (*set_ex_data)(BIO *, int, void *);
        int (*get_ex_new_index)(int, long, void *, CRYPTO_EX_new *, CRYPTO_EX_dup *,
                                CRYPTO_EX_free *);
        int (*test_flags)(const BIO *, int); /* a read's retry flag (biosock/rxframe.c) */
    } bio;

    /* optreset.c: the real functions behind its hooks (each may be absent),
     * then its helpers (all or none: ks_ossl_optreset_load). */
    struct {
        uint64_t (*CTX_clear_options)(SSL_CTX *, uint64_t);
        SSL *(*new_ssl)(SSL_CTX *);
        uint64_t (*CTX_get_options)(const SSL_CTX *);
        uint64_t (*set_options)(SSL *, uint64_t);
        uint64_t (*get_options)(const SSL *);
        void *(*CTX_get_ex_data)(const SSL_CTX *, int);
        int (*CTX_set_ex_data)(SSL_CTX *, int, void *);
        int (*get_ex_new_index)(int, long, void *, CRYPTO_EX_new *, CRYPTO_EX_dup *,
                                CRYPTO_EX_free *);
    } optreset;

    /* resume.c: session caches and ticket keys (all or none). */
    struct {
        int (*set_ticket_cb)(SSL_CTX *, int (*)(SSL *, unsigned char *, unsigned char *,
                                                EVP_CIPHER_CTX *, EVP_MAC_CTX *, int));
        void (*set_new_cb)(SSL_CTX *, int (*)(SSL *, SSL_SESSION *));
        void (*set_get_cb)(SSL_CTX *, SSL_SESSION *(*)(SSL *, const unsigned char *, int, int *));
        void (*set_remove_cb)(SSL_CTX *, void (*)(SSL_CTX *, SSL_SESSION *));
        int (*(*get_new_cb)(SSL_CTX *))(SSL *, SSL_SESSION *);
        SSL_SESSION *(*(*get_get_cb)(SSL_CTX *))(SSL *, const unsigned char *, int, int *);
        long (*CTX_ctrl)(SSL_CTX *, int, long, void *);
        SSL_CTX *(*get_SSL_CTX)(const SSL *);
        const unsigned char *(*sess_get_id)(const SSL_SESSION *, unsigned int *);
        int (*i2d)(const SSL_SESSION *, unsigned char **);
        SSL_SESSION *(*d2i)(SSL_SESSION **, const unsigned char **, long);
        long (*sess_get_time)(const SSL_SESSION *);
        long (*sess_get_timeout)(const SSL_SESSION *);
        int (*rand_bytes)(unsigned char *, int);
        const EVP_CIPHER *(*aes_256_cbc)(void);
        int (*version)(const SSL *);
        int (*enc_init)(EVP_CIPHER_CTX *, const EVP_CIPHER *, ENGINE *, const unsigned char *,
                        const unsigned char *);
        int (*dec_init)(EVP_CIPHER_CTX *, const EVP_CIPHER *, ENGINE *, const unsigned char *,
                        const unsigned char *);
        int (*mac_set_params)(EVP_MAC_CTX *, const OSSL_PARAM *);
        void (*cleanse)(void *, size_t);
    } resume;
};

extern struct ks_ossl_api ks_ossl_api;

/* Resolves the table (once, thread-safe), from the libssl of the process's
 * flavour (decided by then: tls/ossl/gates.c). True when every helper was
 * found; the hooks' real functions may still be NULL. */
bool ks_ossl_api_load(void);

/* The switch's functions (and kdf.c's) were all found. After
 * ks_ossl_api_load(). */
bool ks_ossl_api_switch_ok(void);

/* The switch's send side may run too (its functions were all found). */
bool ks_ossl_api_switch_tx_ok(void);

/* tls/hooks.c: the table is loaded and the hooks' ex_data indexes exist (false:
 * the hooks pass everything through). */
bool ks_ossl_ready(void);

/* tls/conn.c: the program makes an I/O call on s (SSL_peek, SSL_shutdown): this
 * process uses the connection (tls/conn.c: a connection is one process's). */
void ks_conn_in_use(SSL *s);

/* The code at address pc is inside the libssl whose functions the table
 * holds (a call libssl made to one of its own exported functions, e.g.
 * an SSL BIO's SSL_do_handshake), rather than the program's. */
bool ks_ossl_called_from_libssl(const void *pc);

/* biosock's block: true when all of it was found (libcrypto.so.3 loaded).
 * Lock-free; the first callers may resolve it side by side (the same values).
 * Inline: it sits on the hot path of BIO_write and BIO_read. */
extern int ks_ossl_bio_state; /* atomic: 0 not yet, 1 all found, -1 incomplete */
bool ks_ossl_bio_resolve(void);
static inline bool ks_ossl_bio_ready(void)
{
    int st = __atomic_load_n(&ks_ossl_bio_state, __ATOMIC_ACQUIRE);
    if (KS_LIKELY(st))
        return st > 0;
    return ks_ossl_bio_resolve();
}
/* One function of biosock's block, when the block is incomplete: the real
 * BIO_ctrl / BIO_write may still be there on its own. NULL if not. */
void *ks_ossl_bio_sym(void **field, const char *name);

/* optreset.c's block (once, thread-safe): true when its helpers were all
 * found; its hooks' real functions may still be NULL. */
bool ks_ossl_optreset_load(void);

/* resume.c's block (once, thread-safe): true when all of it was found. */
bool ks_ossl_resume_load(void);

/* Wipes n bytes of secret: OPENSSL_cleanse when found, else explicit_bzero. */
void ks_cleanse(void *p, size_t n);

/* The dup callback of every ex_data index the library keeps on an SSL or a
 * BIO. SSL_dup and BIO_dup_chain copy ex_data pointers as they are unless
 * the index has one: both objects would then free the same state. The
 * duplicate keeps what it already has of its own (SSL_dup sets the info
 * callback, and so the library's box, before copying ex_data), else
 * nothing. */
int ks_ex_dup_keep_own(CRYPTO_EX_DATA *to, const CRYPTO_EX_DATA *from, void **from_d, int idx,
                       long argl, void *argp);

#endif
