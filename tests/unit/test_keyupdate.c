/* test_keyupdate.c — tls/kswitch/rekey.c's checks on a received TLS 1.3
 * KeyUpdate and its answer, without a kTLS kernel: malformed messages end
 * the connection with libssl's reasons and wipe the secrets before any key
 * is touched; a kernel that cannot rekey refuses; a valid one renews the
 * receive secret ("traffic upd", checked in test_kdf.c) and, when asked,
 * writes our KeyUpdate (5 bytes, update_not_requested) on the socket before
 * renewing the send secret, and keeps the answer due while the socket
 * cannot take it. ks_own_install (setsockopt TLS_RX/TLS_TX) is replaced
 * here by a recorder: what the kernel does with the keys is the VM's test
 * (tests/vm/27-keyupdate.bats); the answer goes over a socketpair, where
 * the record-type cmsg is ignored and the bytes arrive as written. */
#define TEST_MAIN
#include "harness.h"

#include "core/config.h"
static struct ks_config stub_config = {.shards = 1, .ktls = 1, .log_level = 1};
const struct ks_config *ks_config(void)
{
    return &stub_config;
}

#include "stats/sigcatch.h"
void ks_signals_catch(void)
{
}
void ks_signals_release(void)
{
}

#include "../../shim/tls/kswitch/kdf.c"
#include "../../shim/kernel/ktls.c"
#include "../../shim/core/log.c"
#include "../../shim/tls/ossl/api.c"
#include "../../shim/core/libc.c"
#include "../../shim/core/fds.c"
#include "../../shim/tls/ossl/sym.c"
#include "../../shim/stats/stats.c"
#include "../../shim/stats/pool.c"
#include "../../shim/stats/emit.c"
#include "promfile_stub.h"
#include "../../shim/tls/kswitch/rekey.c"
#include "../../shim/kernel/cryptoinfo.c"
#include "../../shim/tls/kswitch/lifetime.c"

#include <fcntl.h>
#include <unistd.h>

__thread int ks_hook_depth __attribute__((tls_model("initial-exec")));
int (*const keep_libssl)(const SSL *) = SSL_version;

/* The recorder standing for setsockopt(TLS_RX / TLS_TX). */
static int installs_rx, installs_tx;
static struct ks_keys last_keys;
static uint64_t last_seq = 99;
int ks_own_install(int fd, int version, const struct ks_keys *k, uint64_t seq, bool tx)
{
    (void)fd, (void)version;
    *(tx ? &installs_tx : &installs_rx) += 1;
    last_keys = *k;
    last_seq = seq;
    return 0;
}
/* biosock's send path: no program BIO here, so the socket itself. */
ssize_t ks_io_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    return sendmsg(fd, msg, flags);
}
void ks_own_tx_wipe(struct ks_own *o)
{
    ks_cleanse(o->tx_secret, sizeof o->tx_secret);
    o->tx_secret_len = 0;
}
void ks_own_push_error(int reason)
{
    (void)reason;
}
struct ks_own *ks_own_peek(const SSL *s)
{
    (void)s;
    return NULL;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* A switched TLS 1.3 connection (AES-128-GCM, SHA-256) on fd. */
static void conn(struct ks_own *o, int fd)
{
    (void)ks_ossl_api_load(); /* HMAC from this program's libcrypto */
    memset(o, 0, sizeof *o);
    o->rx_on = true;
    o->version = TLS1_3_VERSION;
    o->fd = fd;
    o->hash = KS_HASH_SHA256;
    o->aead = KS_AEAD_AES_128_GCM;
    o->secret_len = o->tx_secret_len = 32;
    memset(o->secret, 0x11, 32);
    memset(o->tx_secret, 0x22, 32);
    installs_rx = installs_tx = 0;
}

static uint64_t counter(enum ks_counter c)
{
    return ks_cur->c[c];
}

TEST(malformed_keyupdates_end_the_connection_with_libssl_reasons_and_wipe_the_secrets)
{
    static const struct {
        uint8_t msg[12];
        size_t len;
        int reason;
    } cases[] = {
        {{24, 0, 0, 1}, 4, SSL_R_BAD_KEY_UPDATE},                             /* no body */
        {{24, 0, 0, 2, 0, 0}, 6, SSL_R_BAD_KEY_UPDATE},                       /* length 2 */
        {{24, 1, 0, 1, 0}, 5, SSL_R_BAD_KEY_UPDATE},                          /* length 65537 */
        {{24, 0, 0, 1, 2}, 5, SSL_R_BAD_KEY_UPDATE},                          /* value 2 */
        {{24, 0, 0, 1, 0, 24, 0, 0, 1, 0}, 10, SSL_R_NOT_ON_RECORD_BOUNDARY}, /* two */
        {{24, 0, 0, 1, 1, 23}, 6, SSL_R_NOT_ON_RECORD_BOUNDARY},              /* trailing */
    };
    __atomic_store_n(&rekey_state, 2, __ATOMIC_RELEASE); /* a kernel that could */
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct ks_own o;
        conn(&o, -1);
        EXPECT_EQ(ks_own_key_update(NULL, &o, cases[i].msg, cases[i].len), cases[i].reason);
        EXPECT_EQ(installs_rx + installs_tx, 0);
        EXPECT_EQ(o.secret_len + o.tx_secret_len, 0);
        EXPECT_TRUE(all_zero(o.secret, sizeof o.secret) && all_zero(o.tx_secret, 32));
    }
}

TEST(a_kernel_that_cannot_rekey_refuses_before_any_key_changes)
{
    static const uint8_t ku[5] = {24, 0, 0, 1, 0};
    struct ks_own o;
    conn(&o, -1);
    __atomic_store_n(&rekey_state, 1, __ATOMIC_RELEASE);
    uint64_t before = counter(KS_C_KTLS_RX_KEYUPDATE_REFUSED);
    EXPECT_EQ(ks_own_key_update(NULL, &o, ku, sizeof ku), SSL_R_BAD_KEY_UPDATE);
    EXPECT_EQ(counter(KS_C_KTLS_RX_KEYUPDATE_REFUSED), before + 1);
    EXPECT_EQ(installs_rx + installs_tx, 0);
    EXPECT_TRUE(all_zero(o.secret, sizeof o.secret));
}

TEST(update_not_requested_renews_the_receive_keys_at_sequence_0_only)
{
    static const uint8_t ku[5] = {24, 0, 0, 1, 0};
    struct ks_own o;
    conn(&o, -1);
    ASSERT_TRUE(ks_ossl_api.HMAC != NULL);
    __atomic_store_n(&rekey_state, 2, __ATOMIC_RELEASE);
    uint8_t next[32];
    memset(next, 0x11, sizeof next);
    ASSERT_EQ(ks_kdf_tls13_next_secret(KS_HASH_SHA256, next, sizeof next), 0);
    struct ks_keys want;
    ASSERT_EQ(ks_kdf_tls13_keys(KS_HASH_SHA256, KS_AEAD_AES_128_GCM, next, 32, &want), 0);
    uint64_t before = counter(KS_C_KTLS_RX_KEYUPDATE);
    EXPECT_EQ(ks_own_key_update(NULL, &o, ku, sizeof ku), 0);
    EXPECT_EQ(installs_rx, 1);
    EXPECT_EQ(installs_tx, 0);
    EXPECT_EQ(last_seq, 0);
    EXPECT_MEMEQ(last_keys.key, want.key, 16);
    EXPECT_MEMEQ(last_keys.iv, want.iv, KS_IV_LEN);
    EXPECT_MEMEQ(o.secret, next, 32); /* kept, advanced: the next update's base */
    EXPECT_EQ(counter(KS_C_KTLS_RX_KEYUPDATE), before + 1);
    EXPECT_TRUE(!o.ku_answer_due);
}

TEST(update_requested_without_send_keys_in_the_kernel_is_refused_before_anything_changes)
{
    static const uint8_t ku[5] = {24, 0, 0, 1, 1};
    struct ks_own o;
    conn(&o, -1); /* no socket: getsockopt(TLS_TX) fails, as on a user-space send side */
    __atomic_store_n(&rekey_state, 2, __ATOMIC_RELEASE);
    EXPECT_EQ(ks_own_key_update(NULL, &o, ku, sizeof ku), SSL_R_BAD_KEY_UPDATE);
    EXPECT_EQ(installs_rx + installs_tx, 0);
}

TEST(update_requested_our_keyupdate_goes_out_then_the_send_keys_and_waits_while_the_socket_is_full)
{
    static const uint8_t ku[5] = {24, 0, 0, 1, 1};
    static const uint8_t answer[5] = {24, 0, 0, 1, 0};
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    ASSERT_EQ(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
    ASSERT_EQ(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0); /* a failure must not hang the test */
    struct ks_own o;
    conn(&o, sv[0]);
    o.tx_on = true; /* the own switch's send side */
    __atomic_store_n(&rekey_state, 2, __ATOMIC_RELEASE);
    uint64_t before = counter(KS_C_KTLS_TX_KEYUPDATE);

    /* Room: answered at once. */
    EXPECT_EQ(ks_own_key_update(NULL, &o, ku, sizeof ku), 0);
    EXPECT_EQ(installs_rx, 1);
    EXPECT_EQ(installs_tx, 1);
    EXPECT_TRUE(!o.ku_answer_due);
    EXPECT_EQ(counter(KS_C_KTLS_TX_KEYUPDATE), before + 1);
    uint8_t got[16];
    EXPECT_EQ(read(sv[1], got, sizeof got), 5);
    EXPECT_MEMEQ(got, answer, 5);

    /* Full socket: the answer stays due, the send keys stay as they are. */
    uint8_t fill[4096];
    memset(fill, 'x', sizeof fill);
    size_t filled = 0;
    ssize_t w;
    while ((w = write(sv[0], fill, sizeof fill)) > 0)
        filled += (size_t)w;
    for (size_t n = 1; n < sizeof fill && write(sv[0], fill, n) > 0;)
        filled++;
    EXPECT_EQ(ks_own_key_update(NULL, &o, ku, sizeof ku), 0);
    EXPECT_EQ(installs_rx, 2);
    EXPECT_EQ(installs_tx, 1);
    EXPECT_TRUE(o.ku_answer_due);
    EXPECT_EQ(ks_own_key_update_answer(&o), -1);
    EXPECT_TRUE(errno == EAGAIN || errno == EWOULDBLOCK);
    EXPECT_EQ(installs_tx, 1);

    /* Drained: the next call sends it, then renews the send keys. */
    size_t drained = 0;
    while (drained < filled && (w = read(sv[1], fill, sizeof fill)) > 0)
        drained += (size_t)w;
    EXPECT_EQ(ks_own_key_update_answer(&o), 0);
    EXPECT_EQ(installs_tx, 2);
    EXPECT_TRUE(!o.ku_answer_due);
    EXPECT_EQ(read(sv[1], got, sizeof got), 5);
    EXPECT_MEMEQ(got, answer, 5);
    EXPECT_EQ(counter(KS_C_KTLS_TX_KEYUPDATE), before + 2);
    close(sv[0]);
    close(sv[1]);
}

TEST(beyond_the_keyupdate_limit_within_a_second_the_connection_ends_with_our_alert)
{
    static const uint8_t ku[5] = {24, 0, 0, 1, 0};
    static const uint8_t alert[2] = {2, 10}; /* fatal unexpected_message */
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    ASSERT_EQ(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
    struct ks_own o;
    conn(&o, sv[0]);
    o.tx_on = true;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    SSL *s = ctx ? SSL_new(ctx) : NULL;
    ASSERT_TRUE(s != NULL);
    __atomic_store_n(&rekey_state, 2, __ATOMIC_RELEASE);
    stub_config.keyupdate_limit = 3;
    uint64_t before = counter(KS_C_KTLS_RX_KEYUPDATE_FLOOD);
    for (int i = 0; i < 3; i++)
        EXPECT_EQ(ks_own_key_update(s, &o, ku, sizeof ku), 0);
    EXPECT_EQ(installs_rx, 3);
    EXPECT_EQ(counter(KS_C_KTLS_RX_KEYUPDATE_FLOOD), before);
    uint8_t got[8];
    EXPECT_EQ(read(sv[1], got, sizeof got), -1); /* nothing sent yet */
    EXPECT_EQ(ks_own_key_update(s, &o, ku, sizeof ku), SSL_R_TOO_MANY_KEY_UPDATES);
    EXPECT_EQ(installs_rx, 3); /* the fourth is not applied */
    EXPECT_EQ(counter(KS_C_KTLS_RX_KEYUPDATE_FLOOD), before + 1);
    EXPECT_EQ(read(sv[1], got, sizeof got), 2);
    EXPECT_MEMEQ(got, alert, 2);
    EXPECT_TRUE(SSL_get_shutdown(s) & SSL_SENT_SHUTDOWN);
    EXPECT_EQ(o.secret_len + o.tx_secret_len, 0);

    /* A second later the window starts again: three more are fine. */
    conn(&o, sv[0]);
    o.ku_rate.start_ns = 1;
    o.ku_rate.n = 3; /* a full window that began long ago */
    EXPECT_EQ(ks_own_key_update(s, &o, ku, sizeof ku), 0);
    stub_config.keyupdate_limit = 0;
    SSL_free(s);
    SSL_CTX_free(ctx);
    close(sv[0]);
    close(sv[1]);
}
