/* test_config.c — KTLSSHIM_* parsing: each case sets the environment, then
 * asks config.c (compiled in, with the real log.c) for the settings. Cases
 * run in separate processes, so each parses afresh. */
#define TEST_MAIN
#include "harness.h"

#include "../../shim/core/config.c"
#include "../../shim/core/libc.c"
#include "../../shim/core/log.c"

TEST(defaults_with_nothing_set)
{
    const struct ks_config *c = ks_config();
    EXPECT_EQ(c->shards, 1);
    EXPECT_EQ(c->ktls, KS_KTLS_AUTO);
    EXPECT_EQ(c->log_level, KS_LOG_INFO);
    EXPECT_EQ(c->ticket_rotate, 3600);
    EXPECT_EQ(c->stats_path[0], '\0');
}

TEST(shards_accepts_range_and_auto)
{
    setenv("KTLSSHIM_SHARDS", "1024", 1);
    EXPECT_EQ(ks_config()->shards, 1024);
}

TEST(shards_rejects_bad_values)
{
    /* Each value in its own process: the configuration is read once. */
    static const char *const bad_values[] = {"0",  "1025", "-2", "2x",
                                             " 2", "",     "+3", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad_values / sizeof *bad_values; i++) {
        pid_t p = fork();
        if (p == 0) {
            setenv("KTLSSHIM_SHARDS", bad_values[i], 1);
            _exit(ks_config()->shards == 1 ? 0 : 1);
        }
        int st;
        waitpid(p, &st, 0);
        EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
}

TEST(ktls_modes)
{
    setenv("KTLSSHIM_KTLS", "strict", 1);
    EXPECT_EQ(ks_config()->ktls, KS_KTLS_STRICT);
}

TEST(ktls_own_mode)
{
    setenv("KTLSSHIM_KTLS", "own", 1);
    EXPECT_EQ(ks_config()->ktls, KS_KTLS_OWN);
}

TEST(stop_timeout_default_range_and_bad_values)
{
    static const struct {
        const char *v;
        int want;
    } cases[] = {
        {NULL, 90}, {"1", 1}, {"86400", 86400}, {"0", 90}, {"86401", 90}, {"5s", 90}, {"", 90},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        pid_t p = fork();
        if (p == 0) {
            if (cases[i].v)
                setenv("KTLSSHIM_STOP_TIMEOUT", cases[i].v, 1);
            _exit(ks_config()->stop_timeout == cases[i].want ? 0 : 1);
        }
        int st;
        waitpid(p, &st, 0);
        EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
}

/* ---- every variable, every bad value: one line, the safe default ---- */

struct parsed {
    struct ks_config cfg;
    char err[4096]; /* what the library wrote on stderr */
    int lines;
};

static size_t read_all(int fd, void *buf, size_t cap)
{
    size_t got = 0;
    ssize_t n;
    while (got < cap && (n = read(fd, (char *)buf + got, cap - got)) > 0)
        got += (size_t)n;
    return got;
}

/* Parses NAME=VALUE (VALUE NULL: unset) in a child process, so that each
 * case parses afresh; returns the settings and the stderr text. */
static void parse_one(const char *name, const char *value, struct parsed *out)
{
    int cfgp[2], errp[2];
    memset(out, 0, sizeof *out);
    if (pipe(cfgp) || pipe(errp))
        abort();
    pid_t p = fork();
    if (p == 0) {
        close(cfgp[0]);
        close(errp[0]);
        dup2(errp[1], 2);
        if (value)
            setenv(name, value, 1);
        const struct ks_config *c = ks_config();
        if (write(cfgp[1], c, sizeof *c) != (ssize_t)sizeof *c)
            _exit(1);
        _exit(0);
    }
    close(cfgp[1]);
    close(errp[1]);
    read_all(cfgp[0], &out->cfg, sizeof out->cfg);
    read_all(errp[0], out->err, sizeof out->err - 1);
    close(cfgp[0]);
    close(errp[0]);
    waitpid(p, NULL, 0);
    for (const char *s = out->err; *s; s++)
        out->lines += *s == '\n';
}

/* A bad value: exactly one line, naming the variable and the value. */
static int one_clear_line(const struct parsed *r, const char *name, const char *value)
{
    char want[512];
    snprintf(want, sizeof want, "%s=\"%s\" ", name, value);
    return r->lines == 1 && strstr(r->err, want) != NULL;
}

TEST(every_good_value_is_taken_silently)
{
    struct parsed r;
    static const struct {
        const char *name, *value;
        size_t off;
        int want;
    } cases[] = {
        {"KTLSSHIM_SHARDS", "2", offsetof(struct ks_config, shards), 2},
        {"KTLSSHIM_SHARDS", "1", offsetof(struct ks_config, shards), 1},
        {"KTLSSHIM_KTLS", "off", offsetof(struct ks_config, ktls), KS_KTLS_OFF},
        {"KTLSSHIM_KTLS", "auto", offsetof(struct ks_config, ktls), KS_KTLS_AUTO},
        {"KTLSSHIM_KTLS", "strict", offsetof(struct ks_config, ktls), KS_KTLS_STRICT},
        {"KTLSSHIM_LOG", "quiet", offsetof(struct ks_config, log_level), KS_LOG_QUIET},
        {"KTLSSHIM_LOG", "info", offsetof(struct ks_config, log_level), KS_LOG_INFO},
        {"KTLSSHIM_LOG", "debug", offsetof(struct ks_config, log_level), KS_LOG_DEBUG},
        {"KTLSSHIM_TICKET_ROTATE", "60", offsetof(struct ks_config, ticket_rotate), 60},
        {"KTLSSHIM_TICKET_ROTATE", "604800", offsetof(struct ks_config, ticket_rotate), 604800},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        parse_one(cases[i].name, cases[i].value, &r);
        int got;
        memcpy(&got, (const char *)&r.cfg + cases[i].off, sizeof got);
        EXPECT_EQ(got, cases[i].want);
        EXPECT_EQ(r.lines, 0);
    }
    parse_one("KTLSSHIM_ZEROCOPY", "on", &r);
    EXPECT_TRUE(r.cfg.zerocopy && r.lines == 0);
    parse_one("KTLSSHIM_ZEROCOPY", "off", &r);
    EXPECT_TRUE(!r.cfg.zerocopy && r.lines == 0);
    parse_one("KTLSSHIM_PIN", "on", &r);
    EXPECT_TRUE(r.cfg.pin && r.lines == 0);
    parse_one("KTLSSHIM_PIN", "off", &r);
    EXPECT_TRUE(!r.cfg.pin && r.lines == 0);
    parse_one("KTLSSHIM_SHARDS", "auto", &r);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    EXPECT_TRUE(r.cfg.shards_auto && r.cfg.shards == (cpus > 1024 ? 1024 : cpus));
    EXPECT_EQ(r.lines, 0);
    parse_one("KTLSSHIM_STATS", "/tmp/ktlsshim-unit-stats.jsonl", &r);
    EXPECT_STREQ(r.cfg.stats_path, "/tmp/ktlsshim-unit-stats.jsonl");
    EXPECT_EQ(r.lines, 0);
    unlink("/tmp/ktlsshim-unit-stats.jsonl");
    parse_one("KTLSSHIM_TICKET_KEY_FILE", "/etc/hostname", &r);
    EXPECT_STREQ(r.cfg.ticket_key_file, "/etc/hostname");
    EXPECT_EQ(r.lines, 0);
    parse_one("KTLSSHIM_WORKER", "1/2", &r);
    EXPECT_TRUE(r.cfg.in_worker && r.lines == 0);
}

TEST(every_bad_value_gets_one_line_and_the_safe_default)
{
    struct parsed r;
    static const char *const shards[] = {"0", "1025", "-1", "abc", "2.0", "", " 2", "0x2"};
    for (size_t i = 0; i < sizeof shards / sizeof *shards; i++) {
        parse_one("KTLSSHIM_SHARDS", shards[i], &r);
        EXPECT_EQ(r.cfg.shards, 1);
        EXPECT_TRUE(one_clear_line(&r, "KTLSSHIM_SHARDS", shards[i]));
        EXPECT_TRUE(strstr(r.err, "using 1 (unsharded)") != NULL);
    }
    static const char *const ktls[] = {"yes", "AUTO", "", "on"};
    for (size_t i = 0; i < sizeof ktls / sizeof *ktls; i++) {
        parse_one("KTLSSHIM_KTLS", ktls[i], &r);
        EXPECT_EQ(r.cfg.ktls, KS_KTLS_AUTO);
        EXPECT_TRUE(one_clear_line(&r, "KTLSSHIM_KTLS", ktls[i]));
    }
    static const char *const logs[] = {"loud", "", "QUIET", "2"};
    for (size_t i = 0; i < sizeof logs / sizeof *logs; i++) {
        parse_one("KTLSSHIM_LOG", logs[i], &r);
        EXPECT_EQ(r.cfg.log_level, KS_LOG_INFO);
        EXPECT_TRUE(one_clear_line(&r, "KTLSSHIM_LOG", logs[i]));
    }
    static const char *const onoff[] = {"1", "yes", "", "ON"};
    for (size_t i = 0; i < sizeof onoff / sizeof *onoff; i++) {
        parse_one("KTLSSHIM_ZEROCOPY", onoff[i], &r);
        EXPECT_TRUE(!r.cfg.zerocopy && one_clear_line(&r, "KTLSSHIM_ZEROCOPY", onoff[i]));
        parse_one("KTLSSHIM_PIN", onoff[i], &r);
        EXPECT_TRUE(!r.cfg.pin && one_clear_line(&r, "KTLSSHIM_PIN", onoff[i]));
    }
    static const char *const rotate[] = {"59", "604801", "abc", "", "60s", "-60"};
    for (size_t i = 0; i < sizeof rotate / sizeof *rotate; i++) {
        parse_one("KTLSSHIM_TICKET_ROTATE", rotate[i], &r);
        EXPECT_EQ(r.cfg.ticket_rotate, 3600);
        EXPECT_TRUE(one_clear_line(&r, "KTLSSHIM_TICKET_ROTATE", rotate[i]));
    }
    static const char *const stats[] = {"rel.jsonl", "/nonexistent-dir/s.jsonl", ""};
    for (size_t i = 0; i < sizeof stats / sizeof *stats; i++) {
        parse_one("KTLSSHIM_STATS", stats[i], &r);
        EXPECT_EQ(r.cfg.stats_path[0], '\0');
        EXPECT_TRUE(one_clear_line(&r, "KTLSSHIM_STATS", stats[i]));
        EXPECT_TRUE(strstr(r.err, "using no stats file") != NULL);
    }
    static const char *const keys[] = {"rel.key", "/nonexistent-dir/k", ""};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        parse_one("KTLSSHIM_TICKET_KEY_FILE", keys[i], &r);
        EXPECT_EQ(r.cfg.ticket_key_file[0], '\0');
        EXPECT_TRUE(one_clear_line(&r, "KTLSSHIM_TICKET_KEY_FILE", keys[i]));
        EXPECT_TRUE(strstr(r.err, "using random keys") != NULL);
    }
    static const char *const proms[] = {"rel.prom", "/var/lib/node-exporter/", ""};
    for (size_t i = 0; i < sizeof proms / sizeof *proms; i++) {
        parse_one("KTLSSHIM_PROM_FILE", proms[i], &r);
        EXPECT_EQ(r.cfg.prom_file[0], '\0');
        EXPECT_TRUE(one_clear_line(&r, "KTLSSHIM_PROM_FILE", proms[i]));
        EXPECT_TRUE(strstr(r.err, "using no Prometheus textfile") != NULL);
    }
    static const char *const intervals[] = {"0", "3601", "5s", "", "-5"};
    for (size_t i = 0; i < sizeof intervals / sizeof *intervals; i++) {
        parse_one("KTLSSHIM_PROM_INTERVAL", intervals[i], &r);
        EXPECT_EQ(r.cfg.prom_interval, 5);
        EXPECT_TRUE(one_clear_line(&r, "KTLSSHIM_PROM_INTERVAL", intervals[i]));
    }
    /* not checked at start: the directory may appear later */
    parse_one("KTLSSHIM_PROM_FILE", "/nonexistent-dir/k.prom", &r);
    EXPECT_STREQ(r.cfg.prom_file, "/nonexistent-dir/k.prom");
    EXPECT_EQ(r.lines, 0);
    /* the temp file's name (FILE.PID.tmp) must fit too: 4063 bytes at most */
    static char long_path[4100];
    memset(long_path, 'a', sizeof long_path - 1);
    long_path[0] = '/';
    long_path[4064] = '\0';
    parse_one("KTLSSHIM_PROM_FILE", long_path, &r);
    EXPECT_EQ(r.cfg.prom_file[0], '\0');
    EXPECT_EQ(r.lines, 1);
    long_path[4063] = '\0';
    parse_one("KTLSSHIM_PROM_FILE", long_path, &r);
    EXPECT_EQ(strlen(r.cfg.prom_file), 4063u);
    EXPECT_EQ(r.lines, 0);
    parse_one("KTLSSHIM_PROM_INTERVAL", "3600", &r);
    EXPECT_EQ(r.cfg.prom_interval, 3600);
    EXPECT_EQ(r.lines, 0);
}

TEST(unknown_names_are_reported_reserved_ones_are_not)
{
    struct parsed r;
    parse_one("KTLSSHIM_SHARD", "4", &r);
    EXPECT_EQ(r.lines, 1);
    EXPECT_TRUE(strstr(r.err, "unknown variable KTLSSHIM_SHARD (ignored)") != NULL);
    EXPECT_EQ(r.cfg.shards, 1);
    static const char *const reserved[] = {"KTLSSHIM_TEST_ASAN", "KTLSSHIM_VM_INSIDE",
                                           "KTLSSHIM_BUILD"};
    for (size_t i = 0; i < sizeof reserved / sizeof *reserved; i++) {
        parse_one(reserved[i], "1", &r);
        EXPECT_EQ(r.lines, 0);
    }
}

TEST(quiet_still_reports_bad_values)
{
    /* KTLSSHIM_LOG is read first: a bad value elsewhere is an error, and
     * errors are printed even when quiet. */
    struct parsed r;
    setenv("KTLSSHIM_LOG", "quiet", 1);
    parse_one("KTLSSHIM_PIN", "maybe", &r);
    unsetenv("KTLSSHIM_LOG");
    EXPECT_EQ(r.cfg.log_level, KS_LOG_QUIET);
    EXPECT_TRUE(one_clear_line(&r, "KTLSSHIM_PIN", "maybe"));
}

TEST(long_life_limits_defaults_ranges_and_bad_values)
{
    struct parsed r;
    parse_one("KTLSSHIM_KEYUPDATE_LIMIT", NULL, &r);
    EXPECT_TRUE(r.cfg.keyupdate_limit == 100 && r.cfg.rekey_records == 1L << 23 &&
                !r.cfg.rx_no_pad && r.lines == 0);
    static const struct {
        const char *v;
        int want;
    } ku[] = {{"0", 0}, {"1", 1}, {"1000000", 1000000}};
    for (size_t i = 0; i < sizeof ku / sizeof *ku; i++) {
        parse_one("KTLSSHIM_KEYUPDATE_LIMIT", ku[i].v, &r);
        EXPECT_TRUE(r.cfg.keyupdate_limit == ku[i].want && r.lines == 0);
    }
    static const char *const ku_bad[] = {"1000001", "-1", "", "100/s", "off"};
    for (size_t i = 0; i < sizeof ku_bad / sizeof *ku_bad; i++) {
        parse_one("KTLSSHIM_KEYUPDATE_LIMIT", ku_bad[i], &r);
        EXPECT_EQ(r.cfg.keyupdate_limit, 100);
        EXPECT_TRUE(one_clear_line(&r, "KTLSSHIM_KEYUPDATE_LIMIT", ku_bad[i]));
    }
    static const struct {
        const char *v;
        long want;
    } rk[] = {{"16", 16}, {"16777216", 16777216}, {"1000", 1000}};
    for (size_t i = 0; i < sizeof rk / sizeof *rk; i++) {
        parse_one("KTLSSHIM_REKEY_RECORDS", rk[i].v, &r);
        EXPECT_TRUE(r.cfg.rekey_records == rk[i].want && r.lines == 0);
    }
    static const char *const rk_bad[] = {"15", "0", "16777217", "", "1e6"};
    for (size_t i = 0; i < sizeof rk_bad / sizeof *rk_bad; i++) {
        parse_one("KTLSSHIM_REKEY_RECORDS", rk_bad[i], &r);
        EXPECT_EQ(r.cfg.rekey_records, 1L << 23);
        EXPECT_TRUE(one_clear_line(&r, "KTLSSHIM_REKEY_RECORDS", rk_bad[i]));
    }
    parse_one("KTLSSHIM_RX_NO_PAD", "on", &r);
    EXPECT_TRUE(r.cfg.rx_no_pad && r.lines == 0);
    parse_one("KTLSSHIM_RX_NO_PAD", "yes", &r);
    EXPECT_TRUE(!r.cfg.rx_no_pad && one_clear_line(&r, "KTLSSHIM_RX_NO_PAD", "yes"));
}
