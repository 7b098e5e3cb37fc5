/* test_kdf.c — kdf.c against published vectors: RFC 8448's simple 1-RTT
 * handshake (application traffic secrets -> key and iv), the TLS 1.2 PRF
 * (SHA-256) vector published for the IETF TLS WG, and the TLS 1.2 key
 * block against libcrypto's own TLS1-PRF (SHA-256 and SHA-384). kdf.c
 * takes HMAC from the libcrypto this program links, through tls/ossl/api.c, as
 * it does inside a server. */
#define TEST_MAIN
#include "harness.h"

#include "../../shim/core/config.c"
#include "../../shim/tls/kswitch/kdf.c"
#include "../../shim/core/log.c"
#include "../../shim/tls/ossl/api.c"
#include "../../shim/core/libc.c"
#include "../../shim/tls/ossl/sym.c"

#include <openssl/core_names.h>
#include <openssl/kdf.h>

__thread int ks_hook_depth __attribute__((tls_model("initial-exec")));

/* libssl must be loaded, as in a server (the table wants its helpers too):
 * a reference keeps the linker from dropping it. */
int (*const keep_libssl)(const SSL *) = SSL_version;

/* "9e 40 ..." -> bytes; returns the count. */
static size_t unhex(const char *s, uint8_t *out, size_t max)
{
    size_t n = 0;
    while (*s && n < max) {
        if (*s == ' ' || *s == '\n') {
            s++;
            continue;
        }
        unsigned v;
        if (sscanf(s, "%2x", &v) != 1)
            break;
        out[n++] = (uint8_t)v;
        s += 2;
    }
    return n;
}

#define HEX(name, text)                                                                            \
    uint8_t name[256];                                                                             \
    size_t name##_len = unhex(text, name, sizeof name)

/* RFC 8448 section 3: application traffic secrets and their write keys. */
static const char client_ap_secret[] = "9e 40 64 6c e7 9a 7f 9d c0 5a f8 88 9b ce 65 52 87 5a fa "
                                       "0b 06 df 00 87 f7 92 eb b7 c1 75 04 a5";
static const char server_ap_secret[] = "a1 1a f9 f0 55 31 f8 56 ad 47 11 6b 45 a9 50 32 82 04 b4 "
                                       "f4 4b fb 6b 3a 4b 4f 1f 3f cb 63 16 43";

TEST(api_resolves_hmac)
{
    ASSERT_TRUE(ks_ossl_api_load());
    EXPECT_TRUE(ks_ossl_api_switch_ok());
    EXPECT_TRUE(ks_ossl_api.HMAC != NULL);
}

TEST(rfc8448_server_application_key_iv)
{
    ASSERT_TRUE(ks_ossl_api_load());
    HEX(secret, server_ap_secret);
    HEX(key, "9f 02 28 3b 6c 9c 07 ef c2 6b b9 f2 ac 92 e3 56");
    HEX(iv, "cf 78 2b 88 dd 83 54 9a ad f1 e9 84");
    struct ks_keys k;
    ASSERT_EQ(ks_kdf_tls13_keys(KS_HASH_SHA256, KS_AEAD_AES_128_GCM, secret, secret_len, &k), 0);
    EXPECT_EQ(k.key_len, 16);
    EXPECT_EQ(key_len, 16);
    EXPECT_MEMEQ(k.key, key, 16);
    EXPECT_MEMEQ(k.iv, iv, iv_len);
}

TEST(rfc8448_client_application_key_iv)
{
    ASSERT_TRUE(ks_ossl_api_load());
    HEX(secret, client_ap_secret);
    HEX(key, "17 42 2d da 59 6e d5 d9 ac d8 90 e3 c6 3f 50 51");
    HEX(iv, "5b 78 92 3d ee 08 57 90 33 e5 23 d9");
    struct ks_keys k;
    ASSERT_EQ(ks_kdf_tls13_keys(KS_HASH_SHA256, KS_AEAD_AES_128_GCM, secret, secret_len, &k), 0);
    EXPECT_MEMEQ(k.key, key, key_len);
    EXPECT_MEMEQ(k.iv, iv, iv_len);
}

TEST(rfc8448_expand_label_info_layout)
{
    /* RFC 8448 prints the HkdfLabel for "key": 00 10 09 "tls13 key" 00. The
     * same output must come from a plain HKDF-Expand with that info. */
    ASSERT_TRUE(ks_ossl_api_load());
    HEX(secret, server_ap_secret);
    uint8_t ours[16], theirs[16];
    ASSERT_EQ(ks_kdf_expand_label(KS_HASH_SHA256, secret, secret_len, "key", ours, 16), 0);
    static const uint8_t info[] = {0x00, 0x10, 0x09, 't', 'l', 's', '1',
                                   '3',  ' ',  'k',  'e', 'y', 0x00};
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    ASSERT_TRUE(kdf != NULL);
    EVP_KDF_CTX *kctx = EVP_KDF_CTX_new(kdf);
    int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
    OSSL_PARAM p[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0),
        OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, secret, secret_len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, sizeof info),
        OSSL_PARAM_construct_end(),
    };
    ASSERT_EQ(EVP_KDF_derive(kctx, theirs, sizeof theirs, p), 1);
    EVP_KDF_CTX_free(kctx);
    EVP_KDF_free(kdf);
    EXPECT_MEMEQ(ours, theirs, 16);
}

TEST(tls13_next_secret_after_keyupdate)
{
    /* application_traffic_secret_1 for RFC 8448's client, as published
     * with Botan's RFC 8448 tests (the RFC itself has no KeyUpdate). */
    ASSERT_TRUE(ks_ossl_api_load());
    HEX(secret, client_ap_secret);
    HEX(next, "fc df cc 72 72 5a ae e4 8b f6 4e 4f d8 b7 49 cd bd ba b3 9d 90 da 0b 26 e2 24 5c "
              "a6 ea 16 72 07");
    ASSERT_EQ(ks_kdf_tls13_next_secret(KS_HASH_SHA256, secret, secret_len), 0);
    EXPECT_MEMEQ(secret, next, next_len);
}

TEST(tls13_chacha_and_aes256_key_lengths)
{
    ASSERT_TRUE(ks_ossl_api_load());
    uint8_t secret[48] = {1, 2, 3};
    struct ks_keys k;
    ASSERT_EQ(ks_kdf_tls13_keys(KS_HASH_SHA256, KS_AEAD_CHACHA20, secret, 32, &k), 0);
    EXPECT_EQ(k.key_len, 32);
    ASSERT_EQ(ks_kdf_tls13_keys(KS_HASH_SHA384, KS_AEAD_AES_256_GCM, secret, 48, &k), 0);
    EXPECT_EQ(k.key_len, 32);
    /* The 32-byte AES-256 key's prefix is not the 16-byte key's: the length
     * is part of the label. */
    uint8_t k16[16];
    ASSERT_EQ(ks_kdf_expand_label(KS_HASH_SHA384, secret, 48, "key", k16, 16), 0);
    EXPECT_TRUE(memcmp(k16, k.key, 16) != 0);
}

TEST(tls12_prf_sha256_published_vector)
{
    ASSERT_TRUE(ks_ossl_api_load());
    HEX(secret, "9b be 43 6b a9 40 f0 17 b1 76 52 84 9a 71 db 35");
    HEX(seed, "a0 ba 9f 93 6c da 31 18 27 a6 f7 96 ff d5 19 8c");
    HEX(want, "e3 f2 29 ba 72 7b e1 7b 8d 12 26 20 55 7c d4 53 c2 aa b2 1d 07 c3 d4 95 32 9b 52 "
              "d4 e6 1e db 5a 6b 30 17 91 e9 0d 35 c9 c9 a4 6b 4e 14 ba f9 af 0f a0 22 f7 07 7d "
              "ef 17 ab fd 37 97 c0 56 4b ab 4f bc 91 66 6e 9d ef 9b 97 fc e3 4f 79 67 89 ba a4 "
              "80 82 d1 22 ee 42 c5 a7 2e 5a 51 10 ff f7 01 87 34 7b 66");
    ASSERT_EQ(want_len, 100);
    uint8_t out[100];
    ASSERT_EQ(ks_kdf_tls12_prf(KS_HASH_SHA256, secret, secret_len, "test label", seed, seed_len,
                               out, sizeof out),
              0);
    EXPECT_MEMEQ(out, want, 100);
}

/* The key block from libcrypto's own TLS1-PRF, for comparison. */
static int openssl_key_block(const char *digest, const uint8_t *master, const uint8_t *seed,
                             uint8_t *out, size_t n)
{
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "TLS1-PRF", NULL);
    EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    OSSL_PARAM p[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)digest, 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SECRET, (void *)master, 48),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, "key expansion", 13),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, (void *)seed, 64),
        OSSL_PARAM_construct_end(),
    };
    int ok = kctx && EVP_KDF_derive(kctx, out, n, p) == 1;
    EVP_KDF_CTX_free(kctx);
    EVP_KDF_free(kdf);
    return ok ? 0 : -1;
}

static void check_tls12_block(int *ut_failed, enum ks_hash hash, const char *digest,
                              enum ks_aead aead, size_t key_len, size_t iv_len)
{
    uint8_t master[48], cr[32], sr[32], seed[64], block[128];
    for (int i = 0; i < 48; i++)
        master[i] = (uint8_t)(i * 7 + 1);
    for (int i = 0; i < 32; i++)
        cr[i] = (uint8_t)(0xc0 + i), sr[i] = (uint8_t)(0x50 + i);
    memcpy(seed, sr, 32);
    memcpy(seed + 32, cr, 32);
    ASSERT_EQ(openssl_key_block(digest, master, seed, block, 2 * (key_len + iv_len)), 0);
    struct ks_keys c, s;
    ASSERT_EQ(ks_kdf_tls12_keys(hash, aead, master, 48, cr, sr, true, &c), 0);
    ASSERT_EQ(ks_kdf_tls12_keys(hash, aead, master, 48, cr, sr, false, &s), 0);
    EXPECT_EQ(c.key_len, key_len);
    EXPECT_MEMEQ(c.key, block, key_len);
    EXPECT_MEMEQ(s.key, block + key_len, key_len);
    EXPECT_MEMEQ(c.iv, block + 2 * key_len, iv_len);
    EXPECT_MEMEQ(s.iv, block + 2 * key_len + iv_len, iv_len);
}

TEST(tls12_key_block_matches_libcrypto)
{
    ASSERT_TRUE(ks_ossl_api_load());
    check_tls12_block(ut_failed, KS_HASH_SHA256, "SHA256", KS_AEAD_AES_128_GCM, 16, 4);
    check_tls12_block(ut_failed, KS_HASH_SHA384, "SHA384", KS_AEAD_AES_256_GCM, 32, 4);
    check_tls12_block(ut_failed, KS_HASH_SHA256, "SHA256", KS_AEAD_CHACHA20, 32, 12);
}

TEST(cipher_names)
{
    enum ks_hash h;
    EXPECT_EQ(ks_kdf_aead_of("TLS_AES_128_GCM_SHA256", &h), KS_AEAD_AES_128_GCM);
    EXPECT_EQ(h, KS_HASH_SHA256);
    EXPECT_EQ(ks_kdf_aead_of("TLS_AES_256_GCM_SHA384", &h), KS_AEAD_AES_256_GCM);
    EXPECT_EQ(h, KS_HASH_SHA384);
    EXPECT_EQ(ks_kdf_aead_of("TLS_CHACHA20_POLY1305_SHA256", &h), KS_AEAD_CHACHA20);
    EXPECT_EQ(ks_kdf_aead_of("ECDHE-RSA-AES256-GCM-SHA384", &h), KS_AEAD_AES_256_GCM);
    EXPECT_EQ(h, KS_HASH_SHA384);
    EXPECT_EQ(ks_kdf_aead_of("ECDHE-ECDSA-CHACHA20-POLY1305", &h), KS_AEAD_CHACHA20);
    EXPECT_EQ(ks_kdf_aead_of("ECDHE-RSA-AES128-SHA256", &h), KS_AEAD_NONE);
    EXPECT_EQ(ks_kdf_aead_of("TLS_AES_128_CCM_SHA256", &h), KS_AEAD_NONE);
    EXPECT_EQ(ks_kdf_aead_of(NULL, &h), KS_AEAD_NONE);
}
