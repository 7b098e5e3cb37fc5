/* test_lifetime.c — tls/kswitch/lifetime.h's counting, with a clock and
 * sizes of the test's choosing: the KeyUpdate window (the limit+1st within
 * a second is over, a new second starts a new window, 0 is no limit), and
 * the send budget (when the kernel's record count must be read: never
 * later than the records a send could have made allow). What the kernel
 * does at the threshold is tests/vm/27-keyupdate.bats's. */
#define TEST_MAIN
#include "harness.h"

#include "../../shim/tls/kswitch/lifetime.h"

#define SEC KS_NS_PER_SEC

TEST(the_limit_plus_first_keyupdate_within_a_second_is_over)
{
    struct ks_ku_rate r = {0};
    uint64_t t = 5 * SEC;
    for (int i = 0; i < 100; i++)
        EXPECT_TRUE(!ks_ku_rate_over(&r, t + (uint64_t)i * 9000000, 100)); /* 100 in 0.9 s */
    EXPECT_TRUE(ks_ku_rate_over(&r, t + 990000000, 100));
    EXPECT_TRUE(ks_ku_rate_over(&r, t + 999999999, 100)); /* still the same second */
}

TEST(a_new_second_starts_a_new_window)
{
    struct ks_ku_rate r = {0};
    for (int i = 0; i < 100; i++)
        EXPECT_TRUE(!ks_ku_rate_over(&r, SEC, 100));
    EXPECT_TRUE(!ks_ku_rate_over(&r, 2 * SEC, 100)); /* exactly a second later */
    for (int i = 0; i < 99; i++)
        EXPECT_TRUE(!ks_ku_rate_over(&r, 2 * SEC + 1, 100));
    EXPECT_TRUE(ks_ku_rate_over(&r, 2 * SEC + 2, 100));
    /* A window starts at the first KeyUpdate, even at time 0. */
    struct ks_ku_rate z = {0};
    EXPECT_TRUE(!ks_ku_rate_over(&z, 0, 1));
    EXPECT_TRUE(ks_ku_rate_over(&z, 1, 1));
}

TEST(limit_0_is_no_limit_and_1_allows_one_a_second)
{
    struct ks_ku_rate r = {0};
    for (int i = 0; i < 100000; i++)
        EXPECT_TRUE(!ks_ku_rate_over(&r, 7, 0));
    struct ks_ku_rate one = {0};
    EXPECT_TRUE(!ks_ku_rate_over(&one, 10 * SEC, 1));
    EXPECT_TRUE(ks_ku_rate_over(&one, 10 * SEC + SEC - 1, 1));
    EXPECT_TRUE(!ks_ku_rate_over(&one, 12 * SEC, 1));
}

TEST(a_send_counts_its_size_over_512_plus_one_records)
{
    EXPECT_EQ(ks_tx_records_most(0), 1);
    EXPECT_EQ(ks_tx_records_most(1), 1);
    EXPECT_EQ(ks_tx_records_most(511), 1);
    EXPECT_EQ(ks_tx_records_most(512), 2);
    EXPECT_EQ(ks_tx_records_most(16384), 33);
}

TEST(the_budget_asks_the_kernel_first_then_only_when_spent)
{
    uint64_t b = 0;
    EXPECT_TRUE(ks_tx_budget_spend(&b, 100)); /* nothing known: read the count */
    b = ks_tx_budget_after(60, 64);
    EXPECT_EQ(b, 4);
    EXPECT_TRUE(!ks_tx_budget_spend(&b, 1000)); /* 2 records at most */
    EXPECT_EQ(b, 2);
    EXPECT_TRUE(!ks_tx_budget_spend(&b, 1024)); /* 3 at most: down to 0 */
    EXPECT_EQ(b, 0);
    EXPECT_TRUE(ks_tx_budget_spend(&b, 1)); /* read again before this one */
    EXPECT_EQ(ks_tx_budget_after(64, 64), 0);
    EXPECT_EQ(ks_tx_budget_after(65, 64), 0);
    EXPECT_EQ(ks_tx_budget_after(0, 1ULL << 23), 1ULL << 23);
}

TEST(a_budget_never_lets_more_records_out_than_it_holds)
{
    /* Whatever the sizes, the kernel is asked before the sends' most
     * records pass what was left. */
    static const size_t sizes[] = {1, 511, 512, 16384, 70000, 3, 1 << 20};
    for (uint64_t start = 1; start < 200; start += 7) {
        uint64_t b = start, most = 0;
        for (size_t i = 0;; i++) {
            size_t n = sizes[i % (sizeof sizes / sizeof *sizes)];
            if (ks_tx_budget_spend(&b, n))
                break;
            EXPECT_TRUE(most < start); /* this send began within the budget */
            most += ks_tx_records_most(n);
        }
    }
}
