/* test_connlog.c — the connection log's line (shim/stats/connlog.c, compiled in):
 * every field as documented, the client-controlled SNI escaped into valid
 * JSON, the longest SNI still one whole line, and never a write into a
 * descriptor that no longer names the log. The libssl lookups are stubbed:
 * entries are built by hand, as tls/conn.c would fill them. */
#define TEST_MAIN
#include "harness.h"

#include "../../shim/core/config.c"
#include "../../shim/stats/connlog.c"
#include "../../shim/core/libc.c"
#include "../../shim/core/log.c"

#include <fcntl.h>
#include <stdlib.h>

const char *ks_fallback_name(enum ks_fallback r)
{
    static const char *const names[] = {
#define NAME(e, key) key,
        KS_FALLBACK_REASONS(NAME)
#undef NAME
    };
    return (unsigned)r < KS_FB_COUNT ? names[r] : "?";
}

void *ks_ossl_sym(const char *name)
{
    (void)name;
    return NULL;
}

/* Opens a fresh log file as connlog_open would; returns its path. */
static const char *open_log(void)
{
    static char path[] = "/tmp/ktlsshim-unit-connlog.XXXXXX";
    int fd = mkstemp(path);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0)
        return NULL;
    fcntl(fd, F_SETFL, O_APPEND);
    log_dev = st.st_dev;
    log_ino = st.st_ino;
    ks_connlog_fd = fd;
    return path;
}

static char *slurp(const char *path)
{
    static char buf[8192];
    int fd = open(path, O_RDONLY);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    if (fd >= 0)
        close(fd);
    buf[n < 0 ? 0 : n] = '\0';
    return buf;
}

static struct ks_connlog *entry(const char *sni)
{
    struct ks_connlog *l = calloc(1, sizeof *l);
    l->start_ns = now_ns();
    l->version = 0x0303;
    l->resumed = true;
    snprintf(l->peer, sizeof l->peer, "[::1]:4433");
    snprintf(l->cipher, sizeof l->cipher, "ECDHE-ECDSA-AES128-GCM-SHA256");
    snprintf(l->sni, sizeof l->sni, "%s", sni);
    l->tx = (struct ks_connlog_dir){"ktls_libssl", 0, true, false};
    l->rx = (struct ks_connlog_dir){"user", KS_FB_LIBSSL, false, false};
    return l;
}

TEST(line_has_every_field)
{
    const char *path = open_log();
    ASSERT_TRUE(path != NULL);
    struct ks_connlog *l = entry("example.org");
    ks_connlog_bytes(l, true, true, 100);
    ks_connlog_sendfile(l, 4000);
    ks_connlog_bytes(l, false, false, 77);
    ks_connlog_end(l);
    char *s = slurp(path);
    unlink(path);
    EXPECT_TRUE(strncmp(s, "{\"ktlsshim_conn\":1,\"time\":", 26) == 0);
    EXPECT_TRUE(strstr(s, ",\"peer\":\"[::1]:4433\",\"sni\":\"example.org\",\"tls\":\"1.2\","
                          "\"cipher\":\"ECDHE-ECDSA-AES128-GCM-SHA256\",\"resumed\":true,"
                          "\"duration_us\":") != NULL);
    EXPECT_TRUE(strstr(s, ",\"tx\":{\"path\":\"ktls_libssl\",\"offload\":\"nic\","
                          "\"offload_estimated\":false,\"bytes_ktls\":4100,\"bytes_user\":0,"
                          "\"bytes_sendfile\":4000},\"rx\":{\"path\":\"user\",\"reason\":"
                          "\"libssl\",\"bytes_ktls\":0,\"bytes_user\":77}}\n") != NULL);
    /* One line. */
    EXPECT_TRUE(strchr(s, '\n') == s + strlen(s) - 1);
}

TEST(sni_is_escaped_and_empty_fields_are_null)
{
    const char *path = open_log();
    ASSERT_TRUE(path != NULL);
    struct ks_connlog *l = entry("a\"b\\c\x01\x7f\xc3\xa9");
    l->peer[0] = '\0';
    ks_connlog_end(l);
    char *s = slurp(path);
    unlink(path);
    EXPECT_TRUE(strstr(s, "\"peer\":null,\"sni\":\"a\\\"b\\\\c\\u0001\\u007f\\u00c3\\u00a9\",") !=
                NULL);
}

TEST(longest_sni_is_one_whole_line)
{
    const char *path = open_log();
    ASSERT_TRUE(path != NULL);
    char sni[256];
    memset(sni, '\x01', 255);
    sni[255] = '\0';
    ks_connlog_end(entry(sni));
    char *s = slurp(path);
    unlink(path);
    size_t n = strlen(s);
    EXPECT_TRUE(n > 255 * 6);
    EXPECT_TRUE(n > 2 && strcmp(s + n - 2, "}\n") == 0);
}

TEST(a_descriptor_the_program_reused_is_never_written)
{
    const char *path = open_log();
    ASSERT_TRUE(path != NULL);
    int fd = ks_connlog_fd;
    /* The program closes the log and opens a file of its own on the number. */
    char mine[] = "/tmp/ktlsshim-unit-mine.XXXXXX";
    int m = mkstemp(mine);
    ASSERT_TRUE(m >= 0);
    ASSERT_TRUE(dup2(m, fd) == fd);
    close(m);
    ks_connlog_end(entry("x"));
    struct stat st;
    EXPECT_TRUE(stat(mine, &st) == 0 && st.st_size == 0);
    EXPECT_EQ(ks_connlog_fd, -1);
    EXPECT_TRUE(!ks_connlog_enabled());
    unlink(mine);
    unlink(path);
}
