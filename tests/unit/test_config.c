/* test_config.c — KTLSSHIM_* parsing: each case sets the environment, then
 * asks config.c (compiled in, with the real log.c) for the settings. Cases
 * run in separate processes, so each parses afresh. */
#define TEST_MAIN
#include "harness.h"

#include "../../shim/config.c"
#include "../../shim/log.c"

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
