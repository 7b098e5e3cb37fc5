/* test_ticketkeys.c — the workers' shared session-ticket keys (resume.c,
 * compiled in, with the real libcrypto): a ticket sealed under the current
 * key opens under it (no renewal for TLS 1.2), still opens after one
 * rotation (renewed: the previous key), and no longer after two; rotation
 * waits for its period; a key file is never rotated. Sealing and opening go
 * through ticket_cb exactly as libssl calls it, with real AES-256-CBC and
 * HMAC-SHA256 contexts. */
#define OPENSSL_SUPPRESS_DEPRECATED /* TLSv1_2_server_method: a TLS 1.2 SSL_version() */
#define TEST_MAIN
#include "harness.h"

#include "../../shim/core/config.c"
#include "../../shim/core/log.c"
#include "../../shim/tls/ossl/api.c"
#include "../../shim/core/libc.c"
#include "../../shim/tls/ossl/sym.c"
#include "../../shim/tls/resume.c"

#include <openssl/core_names.h>

__thread int ks_hook_depth;

static SSL *ssl12; /* not TLS 1.3: the current key does not renew */

static int setup(void)
{
    if (!ks_resume_prepare() || !resolve())
        return 0;
    SSL_CTX *ctx = SSL_CTX_new(TLSv1_2_server_method());
    ssl12 = ctx ? SSL_new(ctx) : NULL;
    return ssl12 != NULL;
}

struct ticket {
    unsigned char name[16], iv[16], body[64], mac[32];
    int len;
};

static const char plain[] = "a session, as libssl would serialise it";

/* Seals `plain` as libssl does with the callback's keys: 1 on success. */
static int seal(struct ticket *t)
{
    EVP_CIPHER_CTX *e = EVP_CIPHER_CTX_new();
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *h = EVP_MAC_CTX_new(mac);
    int ok = ticket_cb(ssl12, t->name, t->iv, e, h, 1) == 1;
    int n = 0, m = 0;
    ok = ok && EVP_EncryptUpdate(e, t->body, &n, (const unsigned char *)plain, sizeof plain) &&
         EVP_EncryptFinal_ex(e, t->body + n, &m);
    t->len = n + m;
    size_t ml = 0;
    ok = ok && EVP_MAC_init(h, NULL, 0, NULL) && EVP_MAC_update(h, t->body, (size_t)t->len) &&
         EVP_MAC_final(h, t->mac, &ml, sizeof t->mac) && ml == 32;
    EVP_MAC_CTX_free(h);
    EVP_MAC_free(mac);
    EVP_CIPHER_CTX_free(e);
    return ok;
}

/* Opens t: the callback's answer (0 unknown key, 1 found, 2 found and
 * renew), and -9 if the key was found but the MAC or the text differ. */
static int open_ticket(const struct ticket *t)
{
    EVP_CIPHER_CTX *e = EVP_CIPHER_CTX_new();
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *h = EVP_MAC_CTX_new(mac);
    unsigned char name[16], iv[16], out[80], tag[32];
    memcpy(name, t->name, 16);
    memcpy(iv, t->iv, 16);
    int r = ticket_cb(ssl12, name, iv, e, h, 0);
    if (r == 1 || r == 2) {
        int n = 0, m = 0;
        size_t ml = 0;
        bool good =
            EVP_MAC_init(h, NULL, 0, NULL) && EVP_MAC_update(h, t->body, (size_t)t->len) &&
            EVP_MAC_final(h, tag, &ml, sizeof tag) && ml == 32 && memcmp(tag, t->mac, 32) == 0 &&
            EVP_DecryptUpdate(e, out, &n, t->body, t->len) && EVP_DecryptFinal_ex(e, out + n, &m) &&
            n + m == (int)sizeof plain && memcmp(out, plain, sizeof plain) == 0;
        if (!good)
            r = -9;
    }
    EVP_MAC_CTX_free(h);
    EVP_MAC_free(mac);
    EVP_CIPHER_CTX_free(e);
    return r;
}

TEST(a_ticket_opens_under_the_current_key_without_renewal)
{
    ASSERT_TRUE(setup());
    struct ticket t;
    ASSERT_TRUE(seal(&t));
    EXPECT_EQ(open_ticket(&t), 1);
}

TEST(after_one_rotation_the_previous_key_still_opens_and_renews_after_two_not)
{
    ASSERT_TRUE(setup());
    struct ticket t;
    ASSERT_TRUE(seal(&t));
    int64_t due = ks_resume_next_rotation_ms();
    ASSERT_TRUE(due > 0);
    ks_resume_rotate_if_due(due);
    EXPECT_EQ(open_ticket(&t), 2); /* the previous key: renew */
    struct ticket t2;
    ASSERT_TRUE(seal(&t2));
    EXPECT_TRUE(memcmp(t2.name, t.name, 16) != 0); /* sealed under the new key */
    EXPECT_EQ(open_ticket(&t2), 1);
    ks_resume_rotate_if_due(ks_resume_next_rotation_ms());
    EXPECT_EQ(open_ticket(&t), 0);  /* two periods old: a full handshake */
    EXPECT_EQ(open_ticket(&t2), 2); /* now the previous one */
}

TEST(rotation_waits_for_its_period)
{
    ASSERT_TRUE(setup());
    struct ticket t;
    ASSERT_TRUE(seal(&t));
    int64_t due = ks_resume_next_rotation_ms();
    EXPECT_EQ(due - sh->keys[0].made_ms, 3600 * 1000); /* the default period */
    ks_resume_rotate_if_due(due - 1);
    struct ticket t2;
    ASSERT_TRUE(seal(&t2));
    EXPECT_MEMEQ(t2.name, t.name, 16);
    EXPECT_EQ(open_ticket(&t), 1);
}

TEST(a_period_from_the_environment)
{
    setenv("KTLSSHIM_TICKET_ROTATE", "60", 1);
    ASSERT_TRUE(setup());
    EXPECT_EQ(ks_resume_next_rotation_ms() - sh->keys[0].made_ms, 60 * 1000);
}

TEST(a_key_file_is_used_and_never_rotated)
{
    char path[] = "/tmp/ktlsshim-unit-key.XXXXXX";
    int fd = mkstemp(path);
    ASSERT_TRUE(fd >= 0);
    unsigned char key[80];
    for (int i = 0; i < 80; i++)
        key[i] = (unsigned char)(i * 7 + 1);
    ASSERT_EQ(write(fd, key, sizeof key), 80);
    close(fd);
    setenv("KTLSSHIM_TICKET_KEY_FILE", path, 1);
    int ok = setup();
    unlink(path);
    ASSERT_TRUE(ok);
    struct ticket t;
    ASSERT_TRUE(seal(&t));
    EXPECT_MEMEQ(t.name, key, 16); /* nginx's layout: name first */
    EXPECT_EQ(ks_resume_next_rotation_ms(), -1);
    ks_resume_rotate_if_due(INT64_MAX);
    EXPECT_EQ(open_ticket(&t), 1);
}
