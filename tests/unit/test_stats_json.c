/* test_stats_json.c — the exit record's formatting (stats/emit.c): the JSON line
 * has every documented field, every counter under its group, the
 * supervisor-only fields only in the supervisor's, and balanced braces; the
 * stderr line says who ended how. The stats sources are compiled in, with the real
 * log.c; the configuration is a stub (defaults: log info, no stats file). */
#define TEST_MAIN
#include "harness.h"

#include "core/config.h"

static struct ks_config stub_config = {.shards = 1, .ktls = 1, .log_level = 1};
const struct ks_config *ks_config(void)
{
    return &stub_config;
}

/* stats.c arms the signal catcher when a process becomes active and
 * releases it at exec (sigcatch.c): nothing of that here. */
#include "stats/sigcatch.h"
void ks_signals_catch(void)
{
}
void ks_signals_release(void)
{
}

#include "../../shim/core/libc.c"
#include "../../shim/core/fds.c"
#include "../../shim/core/log.c"
#include "../../shim/stats/stats.c"
#include "../../shim/stats/pool.c"
#include "../../shim/stats/emit.c"
#include "promfile_stub.h"

static void record(struct ks_record *r, int role, int shard, uint64_t *c)
{
    memset(r, 0, sizeof *r);
    r->pid = 4242;
    r->role = role;
    r->shard = shard;
    r->shards = 2;
    for (int i = 0; i < KS_C_COUNT; i++)
        c[i] = 1000 + (uint64_t)i; /* distinct: a swapped field shows */
}

/* The text of group G (from its '{' to the matching '}'). */
static int group_text(const char *json, const char *g, char *out, size_t n)
{
    char key[64];
    snprintf(key, sizeof key, "\"%s\":{", g);
    const char *s = strstr(json, key);
    if (!s)
        return 0;
    s += strlen(key);
    const char *e = strchr(s, '}');
    if (!e || (size_t)(e - s) >= n)
        return 0;
    memcpy(out, s, (size_t)(e - s));
    out[e - s] = '\0';
    return 1;
}

static int balanced(const char *s)
{
    int depth = 0;
    for (; *s; s++) {
        depth += *s == '{';
        depth -= *s == '}';
        if (depth < 0)
            return 0;
    }
    return depth == 0;
}

TEST(worker_record_has_every_field_once_and_no_supervisor_fields)
{
    struct ks_record r;
    uint64_t c[KS_C_COUNT];
    char mem[4096];
    struct buf b = {mem, 0, sizeof mem - 1};
    record(&r, KS_ROLE_WORKER, 1, c);
    format_json(&b, &r, c, 0, "signal 9");
    mem[b.len] = '\0';
    ASSERT_TRUE(b.len > 0 && mem[b.len - 1] == '\n');
    EXPECT_TRUE(strchr(mem, '\n') == mem + b.len - 1); /* one line */
    EXPECT_TRUE(balanced(mem));
    EXPECT_TRUE(strncmp(mem, "{\"ktlsshim\":1,\"time\":", 21) == 0);
    EXPECT_TRUE(strstr(mem, "\"pid\":4242,\"program\":\"") != NULL);
    EXPECT_TRUE(strstr(mem, "\"role\":\"worker\",\"shard\":1,\"shards\":2,\"end\":\"signal 9\"") !=
                NULL);
    EXPECT_TRUE(strstr(mem, "summed_records") == NULL);
    EXPECT_TRUE(strstr(mem, "\"workers\"") == NULL);
    for (int i = 0; i < KS_C_COUNT; i++) {
        char g[1024], want[96];
        if (strcmp(ks_counter_names[i].group, "workers") == 0)
            continue;
        ASSERT_TRUE(group_text(mem, ks_counter_names[i].group, g, sizeof g));
        snprintf(want, sizeof want, "\"%s\":%llu", ks_counter_names[i].key,
                 (unsigned long long)c[i]);
        EXPECT_TRUE(strstr(g, want) != NULL);
    }
}

TEST(shard_fallback_only_in_the_record_of_the_pid_it_names)
{
    struct ks_record r;
    uint64_t c[KS_C_COUNT];
    char mem[4096];
    struct buf b = {mem, 0, sizeof mem - 1};
    record(&r, KS_ROLE_PROCESS, -1, c);
    ks_stats_set_fallback("workers_failed", 4242);
    format_json(&b, &r, c, 0, "exit 0");
    mem[b.len] = '\0';
    EXPECT_TRUE(balanced(mem));
    EXPECT_TRUE(strstr(mem, "\"end\":\"exit 0\",\"shard_fallback\":\"workers_failed\",") != NULL);
    ks_stats_set_fallback("workers_failed", 4243); /* a child of it */
    b.len = 0;
    format_json(&b, &r, c, 0, "exit 0");
    mem[b.len] = '\0';
    EXPECT_TRUE(strstr(mem, "shard_fallback") == NULL);
    ks_stats_set_fallback(NULL, 0);
}

TEST(supervisor_record_has_summed_records_and_workers)
{
    struct ks_record r;
    uint64_t c[KS_C_COUNT];
    char mem[4096], g[512];
    struct buf b = {mem, 0, sizeof mem - 1};
    record(&r, KS_ROLE_SUPERVISOR, -1, c);
    format_json(&b, &r, c, 3, "exit 143");
    mem[b.len] = '\0';
    EXPECT_TRUE(balanced(mem));
    EXPECT_TRUE(strstr(mem, "\"role\":\"supervisor\",\"shard\":-1,\"shards\":2,\"end\":\"exit "
                            "143\",\"summed_records\":3,") != NULL);
    ASSERT_TRUE(group_text(mem, "workers", g, sizeof g));
    char want[160];
    snprintf(want, sizeof want,
             "\"started\":%llu,\"respawned\":%llu,\"gave_up\":%llu,\"reloaded\":%llu",
             (unsigned long long)c[KS_C_W_STARTED], (unsigned long long)c[KS_C_W_RESPAWNED],
             (unsigned long long)c[KS_C_W_GAVE_UP], (unsigned long long)c[KS_C_W_RELOADED]);
    EXPECT_STREQ(g, want);
}

TEST(deferred_receive_switches_have_their_own_field_after_rx_own)
{
    struct ks_record r;
    uint64_t c[KS_C_COUNT];
    char mem[4096], g[1024];
    struct buf b = {mem, 0, sizeof mem - 1};
    record(&r, KS_ROLE_PROCESS, -1, c);
    c[KS_C_KTLS_RX_OWN] = 5;
    c[KS_C_KTLS_RX_DEFERRED] = 3;
    format_json(&b, &r, c, 0, "exit 0");
    mem[b.len] = '\0';
    ASSERT_TRUE(group_text(mem, "ktls", g, sizeof g));
    EXPECT_TRUE(strstr(g, "\"rx_own\":5,\"rx_deferred\":3,") != NULL);
}

TEST(every_fallback_reason_is_a_field_in_both_directions)
{
    struct ks_record r;
    uint64_t c[KS_C_COUNT];
    char mem[4096], tx[512], rx[512];
    struct buf b = {mem, 0, sizeof mem - 1};
    record(&r, KS_ROLE_PROCESS, -1, c);
    format_json(&b, &r, c, 0, "exit");
    mem[b.len] = '\0';
    ASSERT_TRUE(group_text(mem, "fallback_tx", tx, sizeof tx));
    ASSERT_TRUE(group_text(mem, "fallback_rx", rx, sizeof rx));
    static const char *const documented[] = {
        "disabled", "no_kernel_tls", "not_socket",   "version", "cipher",
        "libssl",   "client",        "unread",       "refused", "bio_no_fd",
        "bio_busy", "bio_rx",        "bio_unproven", "unsent",  "other"};
    EXPECT_EQ(sizeof documented / sizeof *documented, KS_FB_COUNT);
    for (size_t i = 0; i < sizeof documented / sizeof *documented; i++) {
        char k[40];
        snprintf(k, sizeof k, "\"%s\":", documented[i]);
        EXPECT_TRUE(strstr(tx, k) != NULL);
        EXPECT_TRUE(strstr(rx, k) != NULL);
        EXPECT_STREQ(ks_fallback_name((enum ks_fallback)i), documented[i]);
    }
    EXPECT_STREQ(ks_fallback_name((enum ks_fallback)99), "?");
}

TEST(stderr_line_says_who_ended_how)
{
    struct ks_record r;
    uint64_t c[KS_C_COUNT] = {0};
    char mem[4096];
    struct buf b = {mem, 0, sizeof mem - 1};
    memset(&r, 0, sizeof r);
    r.pid = 7;
    r.role = KS_ROLE_SUPERVISOR;
    r.shard = -1;
    r.shards = 2;
    c[KS_C_ACCEPTED] = 5;
    c[KS_C_W_STARTED] = 3;
    c[KS_C_W_RESPAWNED] = 1;
    format_line(&b, &r, c, 3, "signal 15");
    mem[b.len] = '\0';
    EXPECT_STREQ(mem, "ktlsshim[7]: supervisor of 2 workers, signal 15, sum of 3 records: 5 "
                      "accepted, no TLS connections; workers started 3, respawned 1, given up 0\n");
    b.len = 0;
    r.role = KS_ROLE_WORKER;
    r.shard = 1;
    format_line(&b, &r, c, 0, "exit");
    mem[b.len] = '\0';
    EXPECT_STREQ(mem, "ktlsshim[7]: worker 1/2 exit: 5 accepted, no TLS connections\n");
}

/* The "openssl" field: OpenSSL_version_num() as OpenSSL writes the version,
 * only once an OpenSSL was hooked, never in the supervisor's record. */
TEST(openssl_field_says_the_version_hooked)
{
    static const struct {
        unsigned long num;
        const char *want;
    } cases[] = {
        {0x1010117fUL, ",\"openssl\":\"1.1.1w\","}, {0x1010100fUL, ",\"openssl\":\"1.1.1\","},
        {0x30000020UL, ",\"openssl\":\"3.0.2\","},  {0x30000130UL, ",\"openssl\":\"3.0.19\","},
        {0x30200000UL, ",\"openssl\":\"3.2.0\","},
    };
    struct ks_record r;
    uint64_t c[KS_C_COUNT];
    char mem[4096];
    struct buf b = {mem, 0, sizeof mem - 1};
    record(&r, KS_ROLE_PROCESS, -1, c);
    format_json(&b, &r, c, 0, "exit 0");
    mem[b.len] = '\0';
    EXPECT_TRUE(strstr(mem, "\"openssl\"") == NULL); /* nothing hooked yet */
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ks_stats_set_openssl(cases[i].num);
        b.len = 0;
        format_json(&b, &r, c, 0, "exit 0");
        mem[b.len] = '\0';
        EXPECT_TRUE(strstr(mem, cases[i].want) != NULL);
    }
    record(&r, KS_ROLE_SUPERVISOR, -1, c);
    b.len = 0;
    format_json(&b, &r, c, 0, "exit 0");
    mem[b.len] = '\0';
    EXPECT_TRUE(strstr(mem, "\"openssl\"") == NULL);
    ks_stats_set_openssl(0);
}
