/* tls/withhold.c — libssl's kTLS not asked where the kernel has none.
 *
 * Why: SSL_OP_ENABLE_KTLS (set by the library on every SSL_CTX, tls/ctx.c)
 * makes libssl try kTLS at every change of keys, and on a kernel without
 * the tls ULP that try fails only after its cipher checks (name lookups,
 * about 10,000 instructions a connection: half of what the library added
 * to a connection there). Once the absence is proven for this process (a
 * setsockopt(TCP_ULP, "tls") of the library's own failed with ENOENT:
 * kernel/ktls.c; the list in /proc is no proof, the module may load on
 * demand), a connection whose handshake starts gets the option taken off
 * its SSL (SSL_clear_options on the SSL only: the context keeps what it
 * has), and the SSL is marked (ex_data). Its stats are what libssl's
 * failed try gave: tls/conn.c reads the mark as "asked" and the reason is
 * no_kernel_tls, exactly as before.
 *
 * Only where both BIOs are proven libcrypto's socket BIO (tls/bioproof.c):
 * under a program's own BIO the library answers libssl's kTLS control
 * itself (tls/biosock/), and that answer makes its reason. A mark is
 * looked at again at each handshake start on the SSL (SSL_clear, a TLS 1.2
 * renegotiation): without a fresh proof (the module was loaded since) the
 * option goes back on. The program reads the SSL's options without
 * SSL_OP_ENABLE_KTLS from its handshake's start (the context's are
 * unchanged). Nothing happens with KTLSSHIM_KTLS=off or own, on OpenSSL
 * 1.1, or where the SSL lacks the option (the program's choice). */
#include "tls/withhold.h"
#include "tls/bioproof.h"
#include "core/config.h"
#include "kernel/ktls.h"
#include "tls/ossl/api.h"
#include "tls/ossl/sym.h"

#define api ks_ossl_api

static int mark_idx = -1; /* SSL ex_data: non-NULL while withheld (no memory) */

bool ks_withhold_setup(void)
{
    if (!api.set_options || !api.clear_options || ks_ossl_flavour() == KS_OSSL_111)
        return false;
    /* A child that runs the set-up again (config.c's cfg_once) keeps the
     * index its parent got. */
    if (__atomic_load_n(&mark_idx, __ATOMIC_RELAXED) >= 0)
        return true;
    int idx = api.get_ex_new_index(CRYPTO_EX_INDEX_SSL, 0, NULL, NULL, NULL, NULL);
    __atomic_store_n(&mark_idx, idx, __ATOMIC_RELAXED);
    return idx >= 0;
}

static bool libcrypto_socket(SSL *s)
{
    return ks_bio_shape(api.get_rbio(s), false) == KS_BIO_SOCKET &&
           ks_bio_shape(api.get_wbio(s), false) == KS_BIO_SOCKET;
}

void ks_withhold_at_start(SSL *s)
{
    int idx = __atomic_load_n(&mark_idx, __ATOMIC_RELAXED);
    int mode = ks_config()->ktls;
    if (idx < 0 || mode == KS_KTLS_OFF || mode == KS_KTLS_OWN)
        return;
    KS_SAVE_ERRNO;
    bool marked = api.get_ex_data(s, idx) != NULL;
    bool asked = (api.get_options(s) & SSL_OP_ENABLE_KTLS) != 0;
    if (marked) {
        if (asked || !ks_ktls_absent_proven()) { /* given back, or to be */
            api.set_ex_data(s, idx, NULL);
            if (!asked)
                api.set_options(s, SSL_OP_ENABLE_KTLS);
        }
    } else if (asked && ks_ktls_absent_proven() && libcrypto_socket(s) &&
               api.set_ex_data(s, idx, (void *)1)) {
        api.clear_options(s, SSL_OP_ENABLE_KTLS);
    }
    KS_RESTORE_ERRNO;
}

bool ks_withheld(const SSL *s)
{
    int idx = __atomic_load_n(&mark_idx, __ATOMIC_RELAXED);
    return idx >= 0 && api.get_ex_data(s, idx) != NULL;
}
