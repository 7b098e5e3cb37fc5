/* kdf.h — record-protection keys from TLS secrets, for the kTLS switch:
 * TLS 1.3 HKDF-Expand-Label (RFC 8446 7.1, 7.3) and the TLS 1.2 PRF key
 * block (RFC 5246 5, 6.3), with HMAC from the program's libcrypto. */
#ifndef KTLSSHIM_KDF_H
#define KTLSSHIM_KDF_H

#include "core/common.h"

enum ks_aead { KS_AEAD_NONE = 0, KS_AEAD_AES_128_GCM, KS_AEAD_AES_256_GCM, KS_AEAD_CHACHA20 };
enum ks_hash { KS_HASH_SHA256 = 0, KS_HASH_SHA384 };

#define KS_MAX_SECRET 48 /* SHA-384 */
#define KS_MAX_KEY 32
#define KS_IV_LEN 12 /* the AEAD nonce length for all three ciphers */

/* One direction's record protection. For TLS 1.2 AES-GCM only the first 4
 * bytes of iv (the implicit salt) come from the key block. */
struct ks_keys {
    enum ks_aead aead;
    uint8_t key[KS_MAX_KEY];
    uint8_t iv[KS_IV_LEN];
    size_t key_len;
};

/* Cipher from an OpenSSL cipher name (IANA or OpenSSL style). NONE if kTLS
 * cannot carry it. *hash: the suite's hash (PRF / HKDF). */
enum ks_aead ks_kdf_aead_of(const char *cipher_name, enum ks_hash *hash);
size_t ks_kdf_key_len(enum ks_aead aead);
size_t ks_kdf_hash_len(enum ks_hash hash);

/* HKDF-Expand-Label(secret, label, "" , out_len). 0, or -1 (libcrypto
 * missing, or out_len too long). */
int ks_kdf_expand_label(enum ks_hash hash, const uint8_t *secret, size_t secret_len,
                        const char *label, uint8_t *out, size_t out_len);

/* TLS 1.3: key and iv from a traffic secret. */
int ks_kdf_tls13_keys(enum ks_hash hash, enum ks_aead aead, const uint8_t *secret,
                      size_t secret_len, struct ks_keys *out);
/* TLS 1.3: the next traffic secret after a KeyUpdate ("traffic upd"), in
 * place. */
int ks_kdf_tls13_next_secret(enum ks_hash hash, uint8_t *secret, size_t secret_len);

/* TLS 1.2 PRF (P_hash): out = PRF(secret, label, seed). */
int ks_kdf_tls12_prf(enum ks_hash hash, const uint8_t *secret, size_t secret_len, const char *label,
                     const uint8_t *seed, size_t seed_len, uint8_t *out, size_t out_len);

/* TLS 1.2: the client's (client_write: true) or the server's keys from
 * the master secret and the two hello randoms (32 bytes each). */
int ks_kdf_tls12_keys(enum ks_hash hash, enum ks_aead aead, const uint8_t *master,
                      size_t master_len, const uint8_t client_random[32],
                      const uint8_t server_random[32], bool client_write, struct ks_keys *out);

#endif
