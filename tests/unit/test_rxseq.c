/* test_rxseq.c — tls/kswitch/rxseq.h, the deferred receive switch's
 * bookkeeping: the client's Finished starts the count (0 in TLS 1.3, 1 in
 * TLS 1.2), each application_data header counts one record, anything the
 * count cannot follow (another record type, a handshake message after the
 * Finished) loses it for good, and only a read that returned data with
 * nothing left in libssl is a boundary. The real libssl and kernel are the
 * VM's test (tests/vm/29-rx-deferred.bats). */
#define TEST_MAIN
#include "harness.h"

#include "tls/kswitch/rxseq.h"

static const uint8_t finished[4] = {20, 0, 0, 32};
static const uint8_t key_update[5] = {24, 0, 0, 1, 0};
static const uint8_t client_hello[4] = {1, 0, 1, 0};
static const uint8_t data_hdr[5] = {23, 3, 3, 0x40, 0x11};
static const uint8_t alert_hdr[5] = {21, 3, 3, 0, 26};
static const uint8_t ccs_hdr[5] = {20, 3, 3, 0, 1};
static const uint8_t hs_hdr[5] = {22, 3, 1, 0, 200};

TEST(nothing_counts_before_the_finished)
{
    struct ks_rxseq q = {0};
    uint64_t seq = 77;
    ks_rxseq_header(&q, hs_hdr, 5);
    ks_rxseq_handshake(&q, client_hello, sizeof client_hello, true);
    ks_rxseq_header(&q, ccs_hdr, 5);
    ks_rxseq_header(&q, data_hdr, 5);
    EXPECT_EQ(q.state, KS_RXSEQ_NONE);
    EXPECT_TRUE(!ks_rxseq_boundary(&q, true, false, &seq));
    EXPECT_EQ(seq, 77);
}

TEST(tls13_counts_from_0_after_the_finished)
{
    struct ks_rxseq q = {0};
    uint64_t seq = 77;
    ks_rxseq_header(&q, data_hdr, 5); /* the Finished's own record */
    ks_rxseq_handshake(&q, finished, sizeof finished, true);
    ASSERT_EQ(q.state, KS_RXSEQ_COUNTING);
    ASSERT_TRUE(ks_rxseq_boundary(&q, true, false, &seq));
    EXPECT_EQ(seq, 0);
    for (int i = 0; i < 3; i++)
        ks_rxseq_header(&q, data_hdr, 5);
    ASSERT_TRUE(ks_rxseq_boundary(&q, true, false, &seq));
    EXPECT_EQ(seq, 3);
}

TEST(tls12_counts_from_1_after_the_finished)
{
    struct ks_rxseq q = {0};
    uint64_t seq = 77;
    ks_rxseq_handshake(&q, finished, sizeof finished, false);
    ks_rxseq_header(&q, data_hdr, 5);
    ASSERT_TRUE(ks_rxseq_boundary(&q, true, false, &seq));
    EXPECT_EQ(seq, 2);
}

TEST(no_boundary_while_libssl_holds_bytes_or_after_an_empty_read)
{
    struct ks_rxseq q = {0};
    uint64_t seq = 77;
    ks_rxseq_handshake(&q, finished, sizeof finished, true);
    ks_rxseq_header(&q, data_hdr, 5);
    EXPECT_TRUE(!ks_rxseq_boundary(&q, true, true, &seq));
    EXPECT_TRUE(!ks_rxseq_boundary(&q, false, false, &seq));
    EXPECT_EQ(seq, 77);
    EXPECT_TRUE(ks_rxseq_boundary(&q, true, false, &seq));
    EXPECT_EQ(seq, 1);
}

TEST(a_handshake_message_after_the_finished_loses_the_count)
{
    struct ks_rxseq q = {0};
    uint64_t seq = 77;
    ks_rxseq_handshake(&q, finished, sizeof finished, true);
    ks_rxseq_header(&q, data_hdr, 5);
    ks_rxseq_handshake(&q, key_update, sizeof key_update, true);
    EXPECT_EQ(q.state, KS_RXSEQ_LOST);
    ks_rxseq_handshake(&q, finished, sizeof finished, true); /* never again */
    ks_rxseq_header(&q, data_hdr, 5);
    EXPECT_TRUE(!ks_rxseq_boundary(&q, true, false, &seq));
    EXPECT_EQ(seq, 77);
}

TEST(a_record_of_another_type_loses_the_count)
{
    const uint8_t *others[] = {alert_hdr, ccs_hdr, hs_hdr};
    for (size_t i = 0; i < sizeof others / sizeof *others; i++) {
        struct ks_rxseq q = {0};
        uint64_t seq = 77;
        ks_rxseq_handshake(&q, finished, sizeof finished, false);
        ks_rxseq_header(&q, others[i], 5);
        EXPECT_EQ(q.state, KS_RXSEQ_LOST);
        ks_rxseq_header(&q, data_hdr, 5);
        EXPECT_TRUE(!ks_rxseq_boundary(&q, true, false, &seq));
    }
}

TEST(a_short_header_or_a_full_count_loses_the_count)
{
    struct ks_rxseq q = {0};
    ks_rxseq_handshake(&q, finished, sizeof finished, true);
    ks_rxseq_header(&q, data_hdr, 4);
    EXPECT_EQ(q.state, KS_RXSEQ_LOST);
    struct ks_rxseq full = {.seq = UINT64_MAX, .state = KS_RXSEQ_COUNTING};
    ks_rxseq_header(&full, data_hdr, 5);
    EXPECT_EQ(full.state, KS_RXSEQ_LOST);
}

TEST(an_empty_handshake_message_is_not_a_finished)
{
    struct ks_rxseq q = {0};
    ks_rxseq_handshake(&q, finished, 0, true);
    EXPECT_EQ(q.state, KS_RXSEQ_NONE);
}
