/* test_cryptoinfo.c — kernel/cryptoinfo.c against the kernel's own structs
 * (<linux/tls.h>): each field the own switch and ktls-probe fill lands
 * where the kernel reads it, the sizes are the kernel's, and the size of a
 * crypto_info libssl made (biosock) is known only for what the library
 * passes on. */
#define TEST_MAIN
#include "harness.h"

#include "../../shim/kernel/cryptoinfo.c"

static const uint8_t key[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
static const uint8_t iv[12] = {0xa0, 0xa1, 0xa2, 0xa3, 0xb0, 0xb1,
                               0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7};
static const uint8_t seq_be[8] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08};
#define SEQ 0x0102030405060708ULL

TEST(aes_gcm_128_fields_where_the_kernel_reads_them)
{
    union ks_crypto_info ci;
    socklen_t len =
        ks_crypto_info_build(&ci, TLS_1_3_VERSION, TLS_CIPHER_AES_GCM_128, key, iv, SEQ);
    const struct tls12_crypto_info_aes_gcm_128 *k = (const void *)&ci;
    ASSERT_EQ(len, sizeof *k);
    EXPECT_EQ(k->info.version, TLS_1_3_VERSION);
    EXPECT_EQ(k->info.cipher_type, TLS_CIPHER_AES_GCM_128);
    EXPECT_MEMEQ(k->key, key, 16);
    EXPECT_MEMEQ(k->salt, iv, 4);
    EXPECT_MEMEQ(k->iv, iv + 4, 8);
    EXPECT_MEMEQ(k->rec_seq, seq_be, 8);
}

TEST(aes_gcm_256_fields_where_the_kernel_reads_them)
{
    union ks_crypto_info ci;
    socklen_t len =
        ks_crypto_info_build(&ci, TLS_1_2_VERSION, TLS_CIPHER_AES_GCM_256, key, iv, SEQ);
    const struct tls12_crypto_info_aes_gcm_256 *k = (const void *)&ci;
    ASSERT_EQ(len, sizeof *k);
    EXPECT_EQ(k->info.version, TLS_1_2_VERSION);
    EXPECT_EQ(k->info.cipher_type, TLS_CIPHER_AES_GCM_256);
    EXPECT_MEMEQ(k->key, key, 32);
    EXPECT_MEMEQ(k->salt, iv, 4);
    EXPECT_MEMEQ(k->iv, iv + 4, 8);
    EXPECT_MEMEQ(k->rec_seq, seq_be, 8);
}

TEST(chacha20_takes_the_whole_nonce_as_its_iv)
{
    union ks_crypto_info ci;
    socklen_t len =
        ks_crypto_info_build(&ci, TLS_1_3_VERSION, TLS_CIPHER_CHACHA20_POLY1305, key, iv, SEQ);
    const struct tls12_crypto_info_chacha20_poly1305 *k = (const void *)&ci;
    ASSERT_EQ(len, sizeof *k);
    EXPECT_EQ(k->info.cipher_type, TLS_CIPHER_CHACHA20_POLY1305);
    EXPECT_MEMEQ(k->key, key, 32);
    EXPECT_MEMEQ(k->iv, iv, 12);
    EXPECT_MEMEQ(k->rec_seq, seq_be, 8);
}

TEST(every_cipher_the_probe_tries_has_the_kernels_size)
{
    static const struct {
        uint16_t id;
        size_t size;
    } want[] = {
        {TLS_CIPHER_AES_GCM_128, sizeof(struct tls12_crypto_info_aes_gcm_128)},
        {TLS_CIPHER_AES_GCM_256, sizeof(struct tls12_crypto_info_aes_gcm_256)},
        {TLS_CIPHER_AES_CCM_128, sizeof(struct tls12_crypto_info_aes_ccm_128)},
        {TLS_CIPHER_CHACHA20_POLY1305, sizeof(struct tls12_crypto_info_chacha20_poly1305)},
        {TLS_CIPHER_SM4_GCM, sizeof(struct tls12_crypto_info_sm4_gcm)},
        {TLS_CIPHER_SM4_CCM, sizeof(struct tls12_crypto_info_sm4_ccm)},
        {TLS_CIPHER_ARIA_GCM_128, sizeof(struct tls12_crypto_info_aria_gcm_128)},
        {TLS_CIPHER_ARIA_GCM_256, sizeof(struct tls12_crypto_info_aria_gcm_256)},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        union ks_crypto_info ci;
        EXPECT_EQ((size_t)ks_crypto_info_build(&ci, TLS_1_2_VERSION, want[i].id, key, iv, 0),
                  want[i].size);
        EXPECT_TRUE(want[i].size <= sizeof ci);
    }
    union ks_crypto_info ci;
    EXPECT_EQ(ks_crypto_info_build(&ci, TLS_1_2_VERSION, 0, key, iv, 0), 0);
}

TEST(a_crypto_info_libssl_made_is_sized_for_the_ciphers_the_library_passes_on)
{
    struct tls12_crypto_info_aes_ccm_128 ccm = {.info = {TLS_1_2_VERSION, TLS_CIPHER_AES_CCM_128}};
    EXPECT_EQ(ks_crypto_info_len(&ccm), sizeof ccm);
    struct tls12_crypto_info_chacha20_poly1305 cc = {
        .info = {TLS_1_3_VERSION, TLS_CIPHER_CHACHA20_POLY1305}};
    EXPECT_EQ(ks_crypto_info_len(&cc), sizeof cc);
    struct tls12_crypto_info_sm4_gcm sm4 = {.info = {TLS_1_3_VERSION, TLS_CIPHER_SM4_GCM}};
    EXPECT_EQ(ks_crypto_info_len(&sm4), 0); /* the probe's only */
    struct tls12_crypto_info_aes_gcm_128 old = {.info = {0x0302, TLS_CIPHER_AES_GCM_128}};
    EXPECT_EQ(ks_crypto_info_len(&old), 0); /* TLS 1.1 */
}
