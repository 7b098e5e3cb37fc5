/* cryptoinfo.c — the one builder of the kernel's crypto_info (the own
 * switch's keys, the probe's tries) and the one table of its sizes (what
 * biosock copies of libssl's). Every cipher's struct has the same order of
 * fields, so one table of sizes builds them all. No OpenSSL, no state:
 * probe/ links this file as it is. */
#include "kernel/cryptoinfo.h"

#include <string.h>

static const struct ks_cipher_shape shapes[] = {
    {TLS_CIPHER_AES_GCM_128, 8, 16, 4, 8, true},
    {TLS_CIPHER_AES_GCM_256, 8, 32, 4, 8, true},
    {TLS_CIPHER_AES_CCM_128, 8, 16, 4, 8, true},
    {TLS_CIPHER_CHACHA20_POLY1305, 12, 32, 0, 8, true},
    {TLS_CIPHER_SM4_GCM, 8, 16, 4, 8, false},
    {TLS_CIPHER_SM4_CCM, 8, 16, 4, 8, false},
    {TLS_CIPHER_ARIA_GCM_128, 8, 16, 4, 8, false},
    {TLS_CIPHER_ARIA_GCM_256, 8, 32, 4, 8, false},
};

_Static_assert(sizeof(struct tls_crypto_info) == 4, "crypto_info header");
_Static_assert(sizeof(struct tls12_crypto_info_aes_gcm_128) == 4 + 8 + 16 + 4 + 8,
               "crypto_info layout");
_Static_assert(sizeof(struct tls12_crypto_info_aes_gcm_256) == KS_CRYPTO_INFO_MAX,
               "crypto_info layout");
_Static_assert(sizeof(struct tls12_crypto_info_chacha20_poly1305) == 4 + 12 + 32 + 0 + 8,
               "crypto_info layout");

const struct ks_cipher_shape *ks_cipher_shape(uint16_t cipher)
{
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        if (shapes[i].id == cipher)
            return &shapes[i];
    return NULL;
}

static socklen_t shape_len(const struct ks_cipher_shape *c)
{
    return (socklen_t)(sizeof(struct tls_crypto_info) + c->iv + c->key + c->salt + c->seq);
}

socklen_t ks_crypto_info_build(union ks_crypto_info *ci, uint16_t version, uint16_t cipher,
                               const uint8_t *key, const uint8_t iv[12], uint64_t seq)
{
    const struct ks_cipher_shape *c = ks_cipher_shape(cipher);
    if (!c || c->salt + c->iv != 12)
        return 0;
    memset(ci, 0, sizeof *ci);
    ci->info.version = version;
    ci->info.cipher_type = cipher;
    uint8_t *p = ci->bytes + sizeof(struct tls_crypto_info);
    memcpy(p, iv + c->salt, c->iv); /* the explicit part of the nonce */
    p += c->iv;
    memcpy(p, key, c->key);
    p += c->key;
    memcpy(p, iv, c->salt); /* the implicit part */
    p += c->salt;
    for (int i = 0; i < c->seq; i++) /* big-endian */
        p[i] = (uint8_t)(seq >> (8 * (c->seq - 1 - i)));
    return shape_len(c);
}

socklen_t ks_crypto_info_len(const void *p)
{
    const struct tls_crypto_info *ci = p;
    if (ci->version != TLS_1_2_VERSION && ci->version != TLS_1_3_VERSION)
        return 0;
    const struct ks_cipher_shape *c = ks_cipher_shape(ci->cipher_type);
    return c && c->used ? shape_len(c) : 0;
}
