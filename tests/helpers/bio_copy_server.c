/* bio_copy_server.c — a TLS file server whose connections go through BIO
 * shapes that are not libcrypto's socket BIO, the way real programs build
 * them (shim/tls/bioproof.c decides what kTLS they may get):
 *
 *   copy    a copy of BIO_s_socket()'s method, as PostgreSQL's backend makes
 *           one (BIO_meth_new, then BIO_s_socket's ctrl, create, destroy,
 *           gets, puts, callback_ctrl), with its own read and write: plain
 *           recv() and send() on the descriptor. Unlike PostgreSQL it keeps
 *           libcrypto's type (BIO_TYPE_SOCKET) and name ("socket"): nothing
 *           a BIO shows tells it from the real one but its method.
 *   filter  libcrypto's own socket BIO under a filter BIO of the program's,
 *           which passes reads, writes and every control down.
 *   plain   libcrypto's socket BIO (SSL_set_fd), for comparison.
 *
 *   bio_copy_server MODE PORT CERT KEY DIR N
 * Serves N connections on 127.0.0.1:PORT, one after the other, in the
 * protocol of tests/helpers/tls_fetch.py: reads a line, a file name in DIR,
 * sends that file, then shuts TLS down with close_notify both ways. Prints
 * "ok NAME LENGTH" or "error ..." per connection, then "done", and exits 0
 * if every connection was served. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int copy_read(BIO *b, char *buf, int n)
{
    BIO_clear_retry_flags(b);
    ssize_t r = recv((int)BIO_get_fd(b, NULL), buf, (size_t)n, 0);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        BIO_set_retry_read(b);
    return (int)r;
}

static int copy_write(BIO *b, const char *buf, int n)
{
    BIO_clear_retry_flags(b);
    ssize_t r = send((int)BIO_get_fd(b, NULL), buf, (size_t)n, MSG_NOSIGNAL);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        BIO_set_retry_write(b);
    return (int)r;
}

static BIO_METHOD *copy_method(void)
{
    const BIO_METHOD *s = BIO_s_socket();
    BIO_METHOD *m = BIO_meth_new(BIO_TYPE_SOCKET, "socket");
    if (!m || !BIO_meth_set_read(m, copy_read) || !BIO_meth_set_write(m, copy_write) ||
        !BIO_meth_set_gets(m, BIO_meth_get_gets(s)) || !BIO_meth_set_puts(m, BIO_meth_get_puts(s)) ||
        !BIO_meth_set_ctrl(m, BIO_meth_get_ctrl(s)) ||
        !BIO_meth_set_create(m, BIO_meth_get_create(s)) ||
        !BIO_meth_set_destroy(m, BIO_meth_get_destroy(s)) ||
        !BIO_meth_set_callback_ctrl(m, BIO_meth_get_callback_ctrl(s)))
        return NULL;
    return m;
}

static int filter_read(BIO *b, char *buf, int n)
{
    BIO_clear_retry_flags(b);
    int r = BIO_read(BIO_next(b), buf, n);
    BIO_copy_next_retry(b);
    return r;
}

static int filter_write(BIO *b, const char *buf, int n)
{
    BIO_clear_retry_flags(b);
    int r = BIO_write(BIO_next(b), buf, n);
    BIO_copy_next_retry(b);
    return r;
}

static long filter_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    return BIO_next(b) ? BIO_ctrl(BIO_next(b), cmd, num, ptr) : 0;
}

static int filter_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static BIO_METHOD *filter_method(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_FILTER, "pass-through filter");
    if (!m || !BIO_meth_set_read(m, filter_read) || !BIO_meth_set_write(m, filter_write) ||
        !BIO_meth_set_ctrl(m, filter_ctrl) || !BIO_meth_set_create(m, filter_create))
        return NULL;
    return m;
}

/* Reads one line (without its newline) into line; 0 on success. */
static int read_line(SSL *s, char *line, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        char c;
        if (SSL_read(s, &c, 1) != 1)
            return -1;
        if (c == '\n') {
            line[n] = '\0';
            return 0;
        }
        line[n++] = c;
    }
    return -1;
}

static int serve(SSL *s, const char *dir)
{
    char name[256], path[1024], buf[16384];
    if (SSL_accept(s) != 1 || read_line(s, name, sizeof name) != 0 || strchr(name, '/')) {
        printf("error handshake or request\n");
        return -1;
    }
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("error %s: no such file\n", name);
        return -1;
    }
    size_t n, total = 0;
    int rc = 0;
    while (rc == 0 && (n = fread(buf, 1, sizeof buf, f)) > 0) {
        if (SSL_write(s, buf, (int)n) != (int)n)
            rc = -1;
        total += n;
    }
    fclose(f);
    /* close_notify, then the client's (a control record each way). */
    int r = rc == 0 ? SSL_shutdown(s) : -1;
    if (r == 0) {
        while (SSL_read(s, buf, sizeof buf) > 0)
            ;
        r = SSL_get_error(s, 0) == SSL_ERROR_ZERO_RETURN ? 1 : SSL_shutdown(s);
    }
    if (r != 1) {
        printf("error %s: write or shutdown\n", name);
        return -1;
    }
    printf("ok %s %zu\n", name, total);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: %s copy|filter|plain PORT CERT KEY DIR N\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1], *dir = argv[5];
    int n = atoi(argv[6]);
    setvbuf(stdout, NULL, _IOLBF, 0);
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, argv[3]) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, argv[4], SSL_FILETYPE_PEM) != 1)
        return 1;
    BIO_METHOD *copy = strcmp(mode, "copy") == 0 ? copy_method() : NULL;
    BIO_METHOD *filter = strcmp(mode, "filter") == 0 ? filter_method() : NULL;
    if (!copy && !filter && strcmp(mode, "plain") != 0)
        return 2;
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 16) != 0)
        return 1;
    int failed = 0;
    for (int i = 0; i < n; i++) {
        int c = accept(ls, NULL, NULL);
        if (c < 0)
            return 1;
        SSL *s = SSL_new(ctx);
        if (copy) {
            BIO *b = BIO_new(copy);
            BIO_set_fd(b, c, BIO_NOCLOSE);
            SSL_set_bio(s, b, b);
        } else if (filter) {
            BIO *b = BIO_push(BIO_new(filter), BIO_new_socket(c, BIO_NOCLOSE));
            SSL_set_bio(s, b, b);
        } else {
            SSL_set_fd(s, c);
        }
        if (serve(s, dir) != 0) {
            ERR_print_errors_fp(stdout);
            failed++;
        }
        SSL_free(s);
        close(c);
    }
    printf("done\n");
    return failed ? 1 : 0;
}
