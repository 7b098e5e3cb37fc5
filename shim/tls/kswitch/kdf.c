/* kdf.c — the key schedule pieces the kTLS switch needs, on top of one
 * primitive: HMAC from the program's own libcrypto (tls/ossl/api.h). Every
 * intermediate buffer is wiped before return; callers wipe what they get. */
#include "tls/kswitch/kdf.h"
#include "tls/ossl/api.h"

#include <string.h>

enum ks_aead ks_kdf_aead_of(const char *name, enum ks_hash *hash)
{
    if (!name)
        return KS_AEAD_NONE;
    *hash = strstr(name, "SHA384") ? KS_HASH_SHA384 : KS_HASH_SHA256;
    if (strstr(name, "AES_128_GCM") || strstr(name, "AES128-GCM"))
        return KS_AEAD_AES_128_GCM;
    if (strstr(name, "AES_256_GCM") || strstr(name, "AES256-GCM"))
        return KS_AEAD_AES_256_GCM;
    if (strstr(name, "CHACHA20") && strstr(name, "POLY1305"))
        return KS_AEAD_CHACHA20;
    return KS_AEAD_NONE;
}

size_t ks_kdf_key_len(enum ks_aead aead)
{
    return aead == KS_AEAD_AES_128_GCM ? 16 : aead == KS_AEAD_NONE ? 0 : 32;
}

size_t ks_kdf_hash_len(enum ks_hash hash)
{
    return hash == KS_HASH_SHA384 ? 48 : 32;
}

static const EVP_MD *md_of(enum ks_hash hash)
{
    if (!ks_ossl_api.HMAC || !ks_ossl_api.sha256 || !ks_ossl_api.sha384)
        return NULL;
    return hash == KS_HASH_SHA384 ? ks_ossl_api.sha384() : ks_ossl_api.sha256();
}

static bool hmac(const EVP_MD *md, const uint8_t *key, size_t key_len, const uint8_t *data,
                 size_t len, uint8_t *out)
{
    unsigned int n = 0;
    return ks_ossl_api.HMAC(md, key, (int)key_len, data, len, out, &n) != NULL;
}

int ks_kdf_expand_label(enum ks_hash hash, const uint8_t *secret, size_t secret_len,
                        const char *label, uint8_t *out, size_t out_len)
{
    const EVP_MD *md = md_of(hash);
    size_t hlen = ks_kdf_hash_len(hash), label_len = strlen(label);
    if (!md || out_len > 255 * hlen || out_len > 0xffff || label_len > 255 - 6)
        return -1;
    /* HkdfLabel: uint16 length, opaque label<7..255> ("tls13 " + label),
     * opaque context<0..255> (empty), then HKDF-Expand's counter byte. */
    uint8_t info[2 + 1 + 255 + 1];
    size_t n = 0;
    info[n++] = (uint8_t)(out_len >> 8);
    info[n++] = (uint8_t)out_len;
    info[n++] = (uint8_t)(6 + label_len);
    memcpy(info + n, "tls13 ", 6);
    n += 6;
    memcpy(info + n, label, label_len);
    n += label_len;
    info[n++] = 0;
    /* T(i) = HMAC(secret, T(i-1) | info | i) */
    uint8_t block[KS_MAX_SECRET + sizeof info + 1], t[KS_MAX_SECRET];
    size_t t_len = 0, done = 0;
    int rc = 0;
    for (uint8_t i = 1; done < out_len; i++) {
        memcpy(block, t, t_len);
        memcpy(block + t_len, info, n);
        block[t_len + n] = i;
        if (!hmac(md, secret, secret_len, block, t_len + n + 1, t)) {
            rc = -1;
            break;
        }
        t_len = hlen;
        size_t take = out_len - done < hlen ? out_len - done : hlen;
        memcpy(out + done, t, take);
        done += take;
    }
    ks_cleanse(block, sizeof block);
    ks_cleanse(t, sizeof t);
    return rc;
}

int ks_kdf_tls13_keys(enum ks_hash hash, enum ks_aead aead, const uint8_t *secret,
                      size_t secret_len, struct ks_keys *out)
{
    memset(out, 0, sizeof *out);
    out->aead = aead;
    out->key_len = ks_kdf_key_len(aead);
    if (!out->key_len ||
        ks_kdf_expand_label(hash, secret, secret_len, "key", out->key, out->key_len) ||
        ks_kdf_expand_label(hash, secret, secret_len, "iv", out->iv, KS_IV_LEN)) {
        ks_cleanse(out, sizeof *out);
        return -1;
    }
    return 0;
}

int ks_kdf_tls13_next_secret(enum ks_hash hash, uint8_t *secret, size_t secret_len)
{
    uint8_t next[KS_MAX_SECRET];
    if (secret_len > sizeof next)
        return -1;
    int rc = ks_kdf_expand_label(hash, secret, secret_len, "traffic upd", next, secret_len);
    if (rc == 0)
        memcpy(secret, next, secret_len);
    ks_cleanse(next, sizeof next);
    return rc;
}

int ks_kdf_tls12_prf(enum ks_hash hash, const uint8_t *secret, size_t secret_len, const char *label,
                     const uint8_t *seed, size_t seed_len, uint8_t *out, size_t out_len)
{
    const EVP_MD *md = md_of(hash);
    size_t hlen = ks_kdf_hash_len(hash), label_len = strlen(label);
    uint8_t ls[128]; /* label + seed */
    if (!md || label_len + seed_len > sizeof ls)
        return -1;
    memcpy(ls, label, label_len);
    memcpy(ls + label_len, seed, seed_len);
    size_t ls_len = label_len + seed_len;
    /* P_hash: A(0) = label+seed, A(i) = HMAC(secret, A(i-1)),
     * out = HMAC(secret, A(1) + label+seed) | HMAC(secret, A(2) + label+seed) ... */
    uint8_t a[KS_MAX_SECRET], block[KS_MAX_SECRET + sizeof ls], t[KS_MAX_SECRET];
    int rc = hmac(md, secret, secret_len, ls, ls_len, a) ? 0 : -1;
    for (size_t done = 0; rc == 0 && done < out_len;) {
        memcpy(block, a, hlen);
        memcpy(block + hlen, ls, ls_len);
        if (!hmac(md, secret, secret_len, block, hlen + ls_len, t) ||
            !hmac(md, secret, secret_len, a, hlen, a)) {
            rc = -1;
            break;
        }
        size_t take = out_len - done < hlen ? out_len - done : hlen;
        memcpy(out + done, t, take);
        done += take;
    }
    ks_cleanse(a, sizeof a);
    ks_cleanse(block, sizeof block);
    ks_cleanse(t, sizeof t);
    ks_cleanse(ls, sizeof ls);
    return rc;
}

int ks_kdf_tls12_keys(enum ks_hash hash, enum ks_aead aead, const uint8_t *master,
                      size_t master_len, const uint8_t client_random[32],
                      const uint8_t server_random[32], bool client_write, struct ks_keys *out)
{
    memset(out, 0, sizeof *out);
    size_t key_len = ks_kdf_key_len(aead);
    /* AEAD suites: no MAC keys; the fixed IV is 4 bytes for AES-GCM (the
     * salt), 12 for ChaCha20-Poly1305 (RFC 7905). */
    size_t iv_len = aead == KS_AEAD_CHACHA20 ? 12 : 4;
    if (!key_len)
        return -1;
    uint8_t seed[64], block[2 * (KS_MAX_KEY + KS_IV_LEN)];
    memcpy(seed, server_random, 32);
    memcpy(seed + 32, client_random, 32);
    size_t need = 2 * (key_len + iv_len);
    int rc =
        ks_kdf_tls12_prf(hash, master, master_len, "key expansion", seed, sizeof seed, block, need);
    if (rc == 0) {
        /* client_write_key, server_write_key, client_write_IV, server_write_IV */
        out->aead = aead;
        out->key_len = key_len;
        memcpy(out->key, block + (client_write ? 0 : key_len), key_len);
        memcpy(out->iv, block + 2 * key_len + (client_write ? 0 : iv_len), iv_len);
    }
    ks_cleanse(block, sizeof block);
    ks_cleanse(seed, sizeof seed);
    return rc;
}
