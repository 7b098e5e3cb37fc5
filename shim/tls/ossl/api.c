/* tls/ossl/api.c — fills the one table of OpenSSL functions (tls/ossl/api.h) from
 * the libssl the program uses (tls/ossl/sym.c's ks_ossl_sym: libssl.so.3 /
 * libcrypto.so.3 by version OPENSSL_3.0.0, the global scope first, then a
 * privately loaded copy; or libssl.so.1.1 / libcrypto.so.1.1, by their own
 * handle). Resolved once per process, on the first hook. */
#include "tls/ossl/api.h"
#include "core/log.h"
#include "core/libc.h"
#include "tls/ossl/sym.h"

#include <dlfcn.h>
#include <pthread.h>
#include <string.h>

struct ks_ossl_api ks_ossl_api;

static bool helpers_ok, switch_ok, switch_tx_ok;
/* Fork (this and the two below): pthread_once is no lock a fork can leave held: a child forked
 * while another thread runs the initialiser runs it again (glibc keeps the fork generation in the
 * control word). */
static pthread_once_t load_once = PTHREAD_ONCE_INIT;

#define RESOLVE(field, name) (*(void **)&ks_ossl_api.field = ks_ossl_sym(name))

static void load_table(void)
{
    /* The real functions behind hooks: each may be absent on its own. */
    RESOLVE(CTX_new, "SSL_CTX_new");
    RESOLVE(CTX_new_ex, "SSL_CTX_new_ex");
    RESOLVE(accept, "SSL_accept");
    RESOLVE(connect, "SSL_connect");
    RESOLVE(do_handshake, "SSL_do_handshake");
    RESOLVE(read, "SSL_read");
    RESOLVE(read_ex, "SSL_read_ex");
    RESOLVE(peek, "SSL_peek");
    RESOLVE(peek_ex, "SSL_peek_ex");
    RESOLVE(write, "SSL_write");
    RESOLVE(write_ex, "SSL_write_ex");
    RESOLVE(sendfile, "SSL_sendfile");
    RESOLVE(pending, "SSL_pending");
    RESOLVE(has_pending, "SSL_has_pending");
    RESOLVE(get_error, "SSL_get_error");
    RESOLVE(shutdown, "SSL_shutdown");
    RESOLVE(clear, "SSL_clear");
    RESOLVE(CTX_set_keylog_callback, "SSL_CTX_set_keylog_callback");
    RESOLVE(CTX_get_keylog_callback, "SSL_CTX_get_keylog_callback");

    bool ok = true;
    ok &= !!RESOLVE(CTX_set_options, "SSL_CTX_set_options");
    ok &= !!RESOLVE(get_options, "SSL_get_options");
    ok &= !!RESOLVE(is_init_finished, "SSL_is_init_finished");
    ok &= !!RESOLVE(version, "SSL_version");
    ok &= !!RESOLVE(get_current_cipher, "SSL_get_current_cipher");
    ok &= !!RESOLVE(CIPHER_get_name, "SSL_CIPHER_get_name");
    ok &= !!RESOLVE(get_wbio, "SSL_get_wbio");
    ok &= !!RESOLVE(get_rbio, "SSL_get_rbio");
    ok &= !!RESOLVE(get_wfd, "SSL_get_wfd");
    ok &= !!RESOLVE(get_rfd, "SSL_get_rfd");
    ok &= !!RESOLVE(BIO_ctrl, "BIO_ctrl");
    ok &= !!RESOLVE(BIO_method_type, "BIO_method_type");
    ok &= !!RESOLVE(get_ex_new_index, "CRYPTO_get_ex_new_index");
    ok &= !!RESOLVE(get_ex_data, "SSL_get_ex_data");
    ok &= !!RESOLVE(set_ex_data, "SSL_set_ex_data");
    ok &= !!RESOLVE(version_num, "OpenSSL_version_num");
    ok &= !!RESOLVE(session_reused, "SSL_session_reused");
    ok &= !!RESOLVE(CTX_set_info_callback, "SSL_CTX_set_info_callback");
    ok &= !!RESOLVE(set_info_callback, "SSL_set_info_callback");
    ok &= !!RESOLVE(get_SSL_CTX, "SSL_get_SSL_CTX");
    ok &= !!RESOLVE(CTX_get_ex_data, "SSL_CTX_get_ex_data");
    ok &= !!RESOLVE(CTX_set_ex_data, "SSL_CTX_set_ex_data");
    helpers_ok = ok;
    RESOLVE(set_options, "SSL_set_options");
    RESOLVE(clear_options, "SSL_clear_options");
    RESOLVE(get_state, "SSL_get_state"); /* tls/ctx.c: the early-data pause */

    bool sw = true;
    sw &= !!RESOLVE(is_server, "SSL_is_server");
    sw &= !!RESOLVE(get_verify_mode, "SSL_get_verify_mode");
    sw &= !!RESOLVE(get_shutdown, "SSL_get_shutdown");
    sw &= !!RESOLVE(set_shutdown, "SSL_set_shutdown");
    sw &= !!RESOLVE(get_session, "SSL_get_session");
    sw &= !!RESOLVE(SESSION_get_master_key, "SSL_SESSION_get_master_key");
    sw &= !!RESOLVE(get_client_random, "SSL_get_client_random");
    sw &= !!RESOLVE(get_server_random, "SSL_get_server_random");
    /* Raising an SSL error: OpenSSL 3's three calls, or 1.1's one. */
    bool err3 = RESOLVE(ERR_new, "ERR_new") && RESOLVE(ERR_set_debug, "ERR_set_debug") &&
                RESOLVE(ERR_set_error, "ERR_set_error");
    sw &= err3 || RESOLVE(put_error, "ERR_put_error");
    sw &= !!RESOLVE(sha256, "EVP_sha256");
    sw &= !!RESOLVE(sha384, "EVP_sha384");
    sw &= !!RESOLVE(HMAC, "HMAC");
    sw &= !!RESOLVE(cleanse, "OPENSSL_cleanse");
    /* The switch also serves these calls itself, so their real functions
     * must be there to fall back on. */
    sw &= ks_ossl_api.read && ks_ossl_api.read_ex && ks_ossl_api.peek && ks_ossl_api.peek_ex &&
          ks_ossl_api.pending && ks_ossl_api.has_pending && ks_ossl_api.get_error &&
          ks_ossl_api.shutdown && ks_ossl_api.clear && ks_ossl_api.CTX_set_keylog_callback &&
          ks_ossl_api.CTX_get_keylog_callback;
    switch_ok = ok && sw;

    bool tx = true;
    tx &= !!RESOLVE(CTX_set_msg_callback, "SSL_CTX_set_msg_callback");
    tx &= !!RESOLVE(set_msg_callback, "SSL_set_msg_callback");
    tx &= !!RESOLVE(want, "SSL_want");
    tx &= !!RESOLVE(get_key_update_type, "SSL_get_key_update_type");
    tx &= !!RESOLVE(get_quiet_shutdown, "SSL_get_quiet_shutdown");
    tx &= !!RESOLVE(in_init, "SSL_in_init");
    tx &= !!RESOLVE(ctrl, "SSL_ctrl");
    /* OpenSSL 1.1 has no SSL_sendfile (nor a program calling it). */
    tx &= ks_ossl_api.write && ks_ossl_api.write_ex &&
          (ks_ossl_api.sendfile || ks_ossl_flavour() == KS_OSSL_111);
    switch_tx_ok = switch_ok && tx;
    if (ok && !sw)
        ks_log_debug("%s lacks functions the library's own kTLS switch needs; it stays off",
                     ks_ossl_flavour() == KS_OSSL_111 ? "libssl.so.1.1" : "libssl.so.3");
}

#undef RESOLVE

bool ks_ossl_api_load(void)
{
    pthread_once(&load_once, load_table);
    return helpers_ok;
}

bool ks_ossl_api_switch_ok(void)
{
    return switch_ok;
}

bool ks_ossl_api_switch_tx_ok(void)
{
    return switch_tx_ok;
}

bool ks_ossl_called_from_libssl(const void *pc)
{
    Dl_info self, caller;
    void *probe = *(void **)&ks_ossl_api.get_ex_data;
    if (!probe || !pc || !dladdr(probe, &self) || !dladdr(pc, &caller))
        return false;
    return self.dli_fbase == caller.dli_fbase;
}

void ks_cleanse(void *p, size_t n)
{
    if (ks_ossl_api.cleanse)
        ks_ossl_api.cleanse(p, n);
    else
        explicit_bzero(p, n);
}

int ks_ex_dup_keep_own(CRYPTO_EX_DATA *to, const CRYPTO_EX_DATA *from, void **from_d, int idx,
                       long argl, void *argp)
{
    (void)from, (void)argl, (void)argp;
    static void *(*get)(const CRYPTO_EX_DATA *, int);
    void *(*fn)(const CRYPTO_EX_DATA *, int) = __atomic_load_n(&get, __ATOMIC_ACQUIRE);
    if (!fn) {
        *(void **)&fn = ks_ossl_sym("CRYPTO_get_ex_data");
        __atomic_store_n(&get, fn, __ATOMIC_RELEASE);
    }
    *from_d = fn ? fn(to, idx) : NULL;
    return 1;
}

/* ---- the blocks of biosock/, optreset.c and resume.c ---- */

#define RESOLVE_IN(block, field, name) (*(void **)&ks_ossl_api.block.field = ks_ossl_sym(name))

int ks_ossl_bio_state;

bool ks_ossl_bio_resolve(void)
{
    bool ok = true;
    ok &= !!RESOLVE_IN(bio, ctrl, "BIO_ctrl");
    ok &= !!RESOLVE_IN(bio, write, "BIO_write");
    ok &= !!RESOLVE_IN(bio, read, "BIO_read");
    ok &= !!RESOLVE_IN(bio, next, "BIO_next");
    ok &= !!RESOLVE_IN(bio, method_type, "BIO_method_type");
    ok &= !!RESOLVE_IN(bio, method_name, "BIO_method_name");
    ok &= !!RESOLVE_IN(bio, get_ex_data, "BIO_get_ex_data");
    ok &= !!RESOLVE_IN(bio, set_ex_data, "BIO_set_ex_data");
    ok &= !!RESOLVE_IN(bio, get_ex_new_index, "CRYPTO_get_ex_new_index");
    ok &= !!RESOLVE_IN(bio, test_flags, "BIO_test_flags");
    __atomic_store_n(&ks_ossl_bio_state, ok ? 1 : -1, __ATOMIC_RELEASE);
    return ok;
}

void *ks_ossl_bio_sym(void **field, const char *name)
{
    void *p = __atomic_load_n(field, __ATOMIC_RELAXED);
    if (!p && (p = ks_ossl_sym(name)))
        __atomic_store_n(field, p, __ATOMIC_RELAXED);
    return p;
}

static bool optreset_ok;
static pthread_once_t optreset_once = PTHREAD_ONCE_INIT;

static void load_optreset(void)
{
    RESOLVE_IN(optreset, CTX_clear_options, "SSL_CTX_clear_options");
    RESOLVE_IN(optreset, new_ssl, "SSL_new");
    bool ok = true;
    ok &= !!RESOLVE_IN(optreset, CTX_get_options, "SSL_CTX_get_options");
    ok &= !!RESOLVE_IN(optreset, set_options, "SSL_set_options");
    ok &= !!RESOLVE_IN(optreset, get_options, "SSL_get_options");
    ok &= !!RESOLVE_IN(optreset, CTX_get_ex_data, "SSL_CTX_get_ex_data");
    ok &= !!RESOLVE_IN(optreset, CTX_set_ex_data, "SSL_CTX_set_ex_data");
    ok &= !!RESOLVE_IN(optreset, get_ex_new_index, "CRYPTO_get_ex_new_index");
    optreset_ok = ok;
}

bool ks_ossl_optreset_load(void)
{
    pthread_once(&optreset_once, load_optreset);
    return optreset_ok;
}

static bool resume_ok;
static pthread_once_t resume_once = PTHREAD_ONCE_INIT;

static void load_resume(void)
{
    bool ok = true;
    ok &= !!RESOLVE_IN(resume, set_ticket_cb, "SSL_CTX_set_tlsext_ticket_key_evp_cb");
    ok &= !!RESOLVE_IN(resume, set_new_cb, "SSL_CTX_sess_set_new_cb");
    ok &= !!RESOLVE_IN(resume, set_get_cb, "SSL_CTX_sess_set_get_cb");
    ok &= !!RESOLVE_IN(resume, set_remove_cb, "SSL_CTX_sess_set_remove_cb");
    ok &= !!RESOLVE_IN(resume, get_new_cb, "SSL_CTX_sess_get_new_cb");
    ok &= !!RESOLVE_IN(resume, get_get_cb, "SSL_CTX_sess_get_get_cb");
    ok &= !!RESOLVE_IN(resume, CTX_ctrl, "SSL_CTX_ctrl");
    ok &= !!RESOLVE_IN(resume, get_SSL_CTX, "SSL_get_SSL_CTX");
    ok &= !!RESOLVE_IN(resume, sess_get_id, "SSL_SESSION_get_id");
    ok &= !!RESOLVE_IN(resume, i2d, "i2d_SSL_SESSION");
    ok &= !!RESOLVE_IN(resume, d2i, "d2i_SSL_SESSION");
    ok &= !!RESOLVE_IN(resume, sess_get_time, "SSL_SESSION_get_time");
    ok &= !!RESOLVE_IN(resume, sess_get_timeout, "SSL_SESSION_get_timeout");
    ok &= !!RESOLVE_IN(resume, rand_bytes, "RAND_bytes");
    ok &= !!RESOLVE_IN(resume, aes_256_cbc, "EVP_aes_256_cbc");
    ok &= !!RESOLVE_IN(resume, version, "SSL_version");
    ok &= !!RESOLVE_IN(resume, enc_init, "EVP_EncryptInit_ex");
    ok &= !!RESOLVE_IN(resume, dec_init, "EVP_DecryptInit_ex");
    ok &= !!RESOLVE_IN(resume, mac_set_params, "EVP_MAC_CTX_set_params");
    ok &= !!RESOLVE_IN(resume, cleanse, "OPENSSL_cleanse");
    resume_ok = ok;
}

bool ks_ossl_resume_load(void)
{
    pthread_once(&resume_once, load_resume);
    return resume_ok;
}

#undef RESOLVE_IN
