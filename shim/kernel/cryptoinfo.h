/* cryptoinfo.h — the kernel's crypto_info for setsockopt(SOL_TLS, TLS_TX /
 * TLS_RX), built in one place for the own switch, biosock and ktls-probe.
 * No OpenSSL here: the kernel's version and cipher numbers, bytes in. */
#ifndef KTLSSHIM_CRYPTOINFO_H
#define KTLSSHIM_CRYPTOINFO_H

#include "kernel/uapi.h"

#include <stdbool.h>
#include <stdint.h>

/* The largest crypto_info of any cipher below (AES-GCM-256, ChaCha20). */
#define KS_CRYPTO_INFO_MAX 56

/* Room for any of them. Secret once built: wipe it after the setsockopt. */
union ks_crypto_info {
    struct tls_crypto_info info;
    uint8_t bytes[KS_CRYPTO_INFO_MAX];
};

/* A cipher's crypto_info: the 4-byte header, then iv, key, salt and rec_seq,
 * unpadded (the kernel's ABI). */
struct ks_cipher_shape {
    uint16_t id; /* TLS_CIPHER_* */
    uint8_t iv, key, salt, seq;
    bool used; /* the library's switches pass it on; the others only the
                  probe tries (SM4, ARIA: no OpenSSL build gives them) */
};

/* The shape of cipher (TLS_CIPHER_*), or NULL for one the kernel's ABI
 * here does not know. */
const struct ks_cipher_shape *ks_cipher_shape(uint16_t cipher);

/* Fills *ci for version (TLS_1_2_VERSION, TLS_1_3_VERSION) and cipher:
 * key (the cipher's key length), iv (12 bytes, the connection's AEAD
 * nonce: the kernel's salt is its first bytes where the cipher has one,
 * its iv the rest), seq (the next record's sequence number). The size to
 * pass to setsockopt, or 0 for an unknown cipher (*ci untouched). */
socklen_t ks_crypto_info_build(union ks_crypto_info *ci, uint16_t version, uint16_t cipher,
                               const uint8_t *key, const uint8_t iv[12], uint64_t seq);

/* The size of a crypto_info someone else built (libssl), by its header:
 * 0 unless TLS 1.2 or 1.3 and a cipher the library passes on. */
socklen_t ks_crypto_info_len(const void *ci);

#endif
