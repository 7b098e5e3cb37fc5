/* test_sesscache.c — the shared TLS 1.2 session-ID cache (resume.c, compiled
 * in, with real OpenSSL sessions): probing (colliding IDs live side by side),
 * eviction when a neighbourhood is full (the soonest to expire, then the
 * oldest), expiry, and the lock failing open when its holder is stopped or
 * dead. Holders are real processes sharing the real table. */
#define TEST_MAIN
#include "harness.h"

#include "../../shim/core/config.c"
#include "../../shim/core/log.c"
#include "../../shim/tls/ossl/api.c"
#include "../../shim/core/libc.c"
#include "../../shim/tls/ossl/sym.c"
#include "../../shim/tls/resume.c"

#include <signal.h>

__thread int ks_hook_depth;

static SSL_CTX *ctx;
static SSL *ssl;

static int setup(void)
{
    if (!ks_resume_prepare() || !resolve())
        return 0;
    ctx = SSL_CTX_new(TLS_server_method());
    ssl = ctx ? SSL_new(ctx) : NULL;
    return ssl != NULL;
}

/* A TLS 1.2 session with this ID, made `age` s ago, valid `timeout` s. */
static SSL_SESSION *session(const uint8_t *id, unsigned len, long age, long timeout)
{
    SSL_SESSION *s = SSL_SESSION_new();
    static const uint8_t secret[48] = {1, 2, 3};
    SSL_SESSION_set1_id(s, id, len);
    SSL_SESSION_set1_master_key(s, secret, sizeof secret);
    SSL_SESSION_set_protocol_version(s, TLS1_2_VERSION);
    SSL_SESSION_set_cipher(s, SSL_CIPHER_find(ssl, (const unsigned char *)"\xc0\x2f"));
    SSL_SESSION_set_time(s, (long)time(NULL) - age);
    SSL_SESSION_set_timeout(s, timeout);
    return s;
}

static void store(const uint8_t *id, long age, long timeout)
{
    SSL_SESSION *s = session(id, 32, age, timeout);
    new_cb(ssl, s);
    SSL_SESSION_free(s);
}

static bool found(const uint8_t *id)
{
    int copy = 1;
    SSL_SESSION *s = get_cb(ssl, id, 32, &copy);
    if (!s)
        return false;
    unsigned len = 0;
    const unsigned char *got = SSL_SESSION_get_id(s, &len);
    bool same = len == 32 && memcmp(got, id, 32) == 0;
    SSL_SESSION_free(s);
    return same;
}

/* n IDs that all hash to the same slot. */
static void colliding_ids(uint8_t (*ids)[32], int n)
{
    uint32_t want = 0;
    int k = 0;
    for (uint32_t c = 0; k < n; c++) {
        uint8_t id[32] = {0};
        memcpy(id, &c, sizeof c);
        id[31] = 0x5a;
        uint32_t h = hash_id(id, 32) % SESS_SLOTS;
        if (k == 0)
            want = h;
        if (h == want)
            memcpy(ids[k++], id, 32);
    }
}

TEST(colliding_ids_all_stay_findable_up_to_the_probe_length)
{
    ASSERT_TRUE(setup());
    uint8_t ids[SESS_PROBE][32];
    colliding_ids(ids, SESS_PROBE);
    for (int i = 0; i < SESS_PROBE; i++)
        store(ids[i], 0, 300);
    for (int i = 0; i < SESS_PROBE; i++)
        EXPECT_TRUE(found(ids[i]));
}

TEST(a_full_neighbourhood_evicts_the_oldest_and_keeps_the_recent)
{
    ASSERT_TRUE(setup());
    enum { N = 3 * SESS_PROBE };
    uint8_t ids[N][32];
    colliding_ids(ids, N);
    for (int i = 0; i < N; i++)
        store(ids[i], 0, 300); /* same second: ties broken by age */
    for (int i = N - SESS_PROBE; i < N; i++)
        EXPECT_TRUE(found(ids[i]));
    for (int i = 0; i < N - SESS_PROBE; i++)
        EXPECT_TRUE(!found(ids[i]));
}

TEST(the_table_filled_to_capacity_still_finds_recent_entries)
{
    ASSERT_TRUE(setup());
    /* Twice the table's size in random IDs: the last few hundred stored
     * must all be there (each evicts only older entries; with the old
     * direct-mapped insertion about 1 in 16 of them was lost to a later
     * colliding one). */
    enum { N = 2 * SESS_SLOTS, RECENT = 256 };
    static uint8_t ids[N][32];
    ASSERT_TRUE(random_bytes(ids, sizeof ids));
    for (int i = 0; i < N; i++)
        store(ids[i], 0, 300);
    int recent = 0, used = 0;
    for (int i = N - RECENT; i < N; i++)
        recent += found(ids[i]);
    for (int i = 0; i < SESS_SLOTS; i++)
        used += sh->slots[i].id_len != 0;
    EXPECT_EQ(recent, RECENT);
    /* Open addressing leaves a slot empty only where no ID's window of
     * SESS_PROBE overflowed into it: a handful at most. */
    EXPECT_TRUE(used >= SESS_SLOTS - SESS_SLOTS / 100);
}

TEST(an_expired_session_is_not_resumed_and_is_replaced_first)
{
    ASSERT_TRUE(setup());
    uint8_t ids[SESS_PROBE + 1][32];
    colliding_ids(ids, SESS_PROBE + 1);
    store(ids[0], 100, 10); /* expired 90 s ago */
    EXPECT_TRUE(!found(ids[0]));
    for (int i = 1; i < SESS_PROBE; i++)
        store(ids[i], 0, 300);
    /* The neighbourhood is full; the next one takes the expired slot. */
    store(ids[SESS_PROBE], 0, 300);
    for (int i = 1; i <= SESS_PROBE; i++)
        EXPECT_TRUE(found(ids[i]));
}

static pid_t holder_pid;

static void on_alarm(int sig)
{
    (void)sig;
    if (holder_pid > 0)
        kill(holder_pid, SIGKILL); /* or it stays stopped, holding our stdout */
    static const char m[] = "# the cache lock stalled the caller\n";
    write(2, m, sizeof m - 1);
    _exit(3);
}

/* A child process takes the lock, then `how`: stops itself, or dies. */
static pid_t holder(int how)
{
    pid_t p = fork();
    if (p == 0) {
        pthread_mutex_lock(&sh->lock);
        if (how == SIGSTOP)
            raise(SIGSTOP);
        _exit(0); /* dies holding it */
    }
    holder_pid = p;
    return p;
}

TEST(a_stopped_holder_makes_the_others_resume_nothing_never_wait)
{
    ASSERT_TRUE(setup());
    uint8_t id[32] = {7};
    store(id, 0, 300);
    ASSERT_TRUE(found(id));
    pid_t h = holder(SIGSTOP);
    int st;
    ASSERT_EQ(waitpid(h, &st, WUNTRACED), h);
    ASSERT_TRUE(WIFSTOPPED(st));
    signal(SIGALRM, on_alarm);
    alarm(10); /* a stall ends the case as a failure */
    /* 1000 lookups and stores return at once, with nothing. */
    int hits = 0;
    for (int i = 0; i < 1000; i++) {
        hits += found(id);
        store(id, 0, 300);
    }
    alarm(0);
    EXPECT_EQ(hits, 0);
    EXPECT_EQ(sh->lock_stuck, 1);
    /* The holder goes on and releases it (by exiting): the cache works again. */
    kill(h, SIGCONT);
    waitpid(h, &st, 0);
    store(id, 0, 300);
    EXPECT_TRUE(found(id));
    EXPECT_EQ(sh->lock_stuck, 0);
}

TEST(a_dead_holder_is_recovered_and_the_table_wiped)
{
    ASSERT_TRUE(setup());
    uint8_t id[32] = {9};
    store(id, 0, 300);
    pid_t h = holder(0);
    int st;
    waitpid(h, &st, 0);
    signal(SIGALRM, on_alarm);
    alarm(10);
    EXPECT_TRUE(!found(id)); /* the entry may have been half written: wiped */
    store(id, 0, 300);
    EXPECT_TRUE(found(id));
    alarm(0);
}
