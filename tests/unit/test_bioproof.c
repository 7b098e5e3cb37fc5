/* test_bioproof.c — bioproof.c: which BIO chains kTLS may be switched under,
 * against the real libcrypto this program links: libcrypto's own BIOs and
 * chains, a copy of BIO_s_socket's method that keeps its type and name (and
 * its ctrl) with a read and write of its own, PostgreSQL's shape of that
 * copy, a filter of the program's over libcrypto's socket BIO. The OpenSSL
 * functions are found in the global scope (this program links them), as
 * the library finds them in a program. */
#define TEST_MAIN
#include "harness.h"

#include <dlfcn.h>
#include <openssl/bio.h>
#include <sys/socket.h>

void *ks_ossl_sym(const char *name)
{
    return dlsym(RTLD_DEFAULT, name);
}

#include "../../shim/tls/bioproof.c"

static int own_read(BIO *b, char *buf, int n)
{
    return (int)recv((int)BIO_get_fd(b, NULL), buf, (size_t)n, 0);
}

static int own_write(BIO *b, const char *buf, int n)
{
    return (int)send((int)BIO_get_fd(b, NULL), buf, (size_t)n, 0);
}

/* BIO_s_socket's method with its own read and write, everything else
 * libcrypto's: type and name as given. */
static BIO_METHOD *socket_copy(int type, const char *name)
{
    const BIO_METHOD *s = BIO_s_socket();
    BIO_METHOD *m = BIO_meth_new(type, name);
    BIO_meth_set_read(m, own_read);
    BIO_meth_set_write(m, own_write);
    BIO_meth_set_ctrl(m, BIO_meth_get_ctrl(s));
    BIO_meth_set_create(m, BIO_meth_get_create(s));
    BIO_meth_set_destroy(m, BIO_meth_get_destroy(s));
    BIO_meth_set_gets(m, BIO_meth_get_gets(s));
    BIO_meth_set_puts(m, BIO_meth_get_puts(s));
    return m;
}

static long pass_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    return BIO_ctrl(BIO_next(b), cmd, num, ptr);
}

static int fds[2];

static BIO *sock(void)
{
    if (!fds[0] && socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0)
        return NULL;
    return BIO_new_socket(fds[0], BIO_NOCLOSE);
}

TEST(libcrypto_socket_bio_alone_is_proven_both_ways)
{
    BIO *b = sock();
    ASSERT_TRUE(b != NULL);
    EXPECT_EQ(ks_bio_shape(b, true), KS_BIO_SOCKET);
    EXPECT_EQ(ks_bio_shape(b, false), KS_BIO_SOCKET);
    EXPECT_TRUE(!ks_bio_end_is_programs(b));
    BIO_free(b);
    BIO *c = BIO_new(BIO_s_connect());
    EXPECT_EQ(ks_bio_shape(c, true), KS_BIO_SOCKET);
    BIO_free(c);
}

TEST(libssl_handshake_buffer_is_allowed_on_the_send_side_only)
{
    BIO *b = BIO_push(BIO_new(BIO_f_buffer()), sock());
    EXPECT_EQ(ks_bio_shape(b, true), KS_BIO_SOCKET);
    EXPECT_EQ(ks_bio_shape(b, false), KS_BIO_UNPROVEN);
    /* The program's own buffer under libssl's: two, not libssl's shape. */
    BIO *two = BIO_push(BIO_new(BIO_f_buffer()), b);
    EXPECT_EQ(ks_bio_shape(two, true), KS_BIO_UNPROVEN);
    BIO_free_all(two);
}

TEST(a_copy_of_the_socket_method_with_its_type_and_name_is_the_programs)
{
    BIO_METHOD *m = socket_copy(BIO_TYPE_SOCKET, "socket");
    BIO *b = BIO_new(m);
    ASSERT_TRUE(b != NULL);
    BIO_set_fd(b, 0, BIO_NOCLOSE);
    /* Everything a BIO shows is libcrypto's socket BIO's ... */
    EXPECT_EQ(BIO_method_type(b), BIO_TYPE_SOCKET);
    EXPECT_STREQ(BIO_method_name(b), "socket");
    EXPECT_EQ(BIO_get_fd(b, NULL), 0);
    /* ... but its method: BIO_meth_new keeps a copy of the name. */
    BIO *real = sock();
    EXPECT_TRUE(BIO_method_name(b) != BIO_method_name(real));
    EXPECT_EQ(ks_bio_shape(b, true), KS_BIO_PROGRAM);
    EXPECT_EQ(ks_bio_shape(b, false), KS_BIO_PROGRAM);
    EXPECT_TRUE(ks_bio_end_is_programs(b));
    /* With libssl's buffer on top: still the program's chain. */
    BIO *chain = BIO_push(BIO_new(BIO_f_buffer()), b);
    EXPECT_EQ(ks_bio_shape(chain, true), KS_BIO_PROGRAM);
    BIO_free_all(chain);
    BIO_free(real);
    BIO_meth_free(m);
}

TEST(postgresql_shape_is_the_programs)
{
    int type = BIO_get_new_index() | BIO_TYPE_DESCRIPTOR | BIO_TYPE_SOURCE_SINK;
    BIO_METHOD *m = socket_copy(type, "PostgreSQL backend socket");
    BIO *b = BIO_new(m);
    EXPECT_EQ(ks_bio_shape(b, true), KS_BIO_PROGRAM);
    EXPECT_EQ(ks_bio_shape(b, false), KS_BIO_PROGRAM);
    BIO_free(b);
    BIO_meth_free(m);
}

TEST(a_filter_of_the_programs_over_the_socket_bio_is_unproven)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_FILTER, "buffer");
    BIO_meth_set_ctrl(m, pass_ctrl);
    BIO *f = BIO_new(m);
    BIO_set_init(f, 1);
    BIO *b = BIO_push(f, sock());
    EXPECT_EQ(ks_bio_shape(b, true), KS_BIO_UNPROVEN);
    EXPECT_EQ(ks_bio_shape(b, false), KS_BIO_UNPROVEN);
    /* Under libssl's buffer too. */
    BIO *top = BIO_push(BIO_new(BIO_f_buffer()), b);
    EXPECT_EQ(ks_bio_shape(top, true), KS_BIO_UNPROVEN);
    BIO_free_all(top);
    BIO_meth_free(m);
}

TEST(no_socket_bios_have_none)
{
    EXPECT_EQ(ks_bio_shape(NULL, true), KS_BIO_OTHER);
    BIO *mem = BIO_new(BIO_s_mem());
    EXPECT_EQ(ks_bio_shape(mem, true), KS_BIO_OTHER);
    EXPECT_TRUE(!ks_bio_end_is_programs(mem));
    BIO *fd = BIO_new_fd(1, BIO_NOCLOSE);
    EXPECT_EQ(ks_bio_shape(fd, true), KS_BIO_OTHER);
    BIO *b1 = NULL, *b2 = NULL;
    ASSERT_TRUE(BIO_new_bio_pair(&b1, 0, &b2, 0) == 1);
    EXPECT_EQ(ks_bio_shape(b1, false), KS_BIO_OTHER);
    BIO_free(b1);
    BIO_free(b2);
    BIO_free(fd);
    BIO_free(mem);
}

TEST(a_chain_deeper_than_any_programs_is_unproven)
{
    BIO *b = sock();
    for (int i = 0; i < 20; i++)
        b = BIO_push(BIO_new(BIO_f_buffer()), b);
    EXPECT_EQ(ks_bio_shape(b, true), KS_BIO_UNPROVEN);
    BIO_free_all(b);
}

TEST(errno_is_kept)
{
    errno = 1234;
    BIO *b = sock();
    errno = 1234;
    (void)ks_bio_shape(b, true);
    EXPECT_EQ(errno, 1234);
    BIO_free(b);
}
