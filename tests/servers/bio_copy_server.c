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
 * sends that file, then shuts TLS down with close_notify both ways. Or, for
 * an upload (tests/helpers/tls_put.py): "PUT PATH HTTP/1.1", headers with
 * Content-Length, the body (read with SSL_read calls of 1, 7, 100, 4096,
 * 16384 and 65536 bytes in turn), answered with the body's SHA-256. Prints
 * "ok NAME LENGTH" (uploads: "ok PUT LENGTH") or "error ..." per
 * connection, then "done", and exits 0 if every connection was served.
 * BCS_READ (copy mode) names the call its BIO reads the socket with: recv
 * (the default), read, readv, recvmsg, recvfrom, read_chk (__read_chk),
 * small (recv of at most 7 bytes), hidden (reads of fewer than 16 bytes,
 * such as libssl's record headers, through syscall(), which no hook sees;
 * the others with recv). BCS_EDGE=1 (copy mode): the socket non-blocking
 * under edge-triggered epoll, and the BIO as event loops make theirs: a
 * read shorter than asked means the socket is empty, so the BIO reads
 * nothing more until the next edge (a connection left with bytes in the
 * kernel then stalls: "error ... stalled" after 10 s). BCS_BUFFER=1 (copy
 * mode): the BIO reads the socket 32 KiB at a time into a buffer of its
 * own and serves libssl from it, as Apache's and h2o's do. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "upload.h"

extern ssize_t __read_chk(int fd, void *buf, size_t n, size_t cap);

static const char *read_call = "recv";
static int edge, epfd = -1, drained; /* BCS_EDGE */
static int buffered;                 /* BCS_BUFFER */
static char ibuf[32768];
static size_t ioff, ilen;

/* One read of the socket, with the call BCS_READ names. */
static ssize_t sock_read(int fd, char *buf, size_t n)
{
    struct iovec iov[2] = {{buf, n / 2}, {buf + n / 2, n - n / 2}};
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
    if (strcmp(read_call, "read") == 0)
        return read(fd, buf, n);
    if (strcmp(read_call, "readv") == 0)
        return readv(fd, iov, 2);
    if (strcmp(read_call, "recvmsg") == 0)
        return recvmsg(fd, &m, 0);
    if (strcmp(read_call, "recvfrom") == 0)
        return recvfrom(fd, buf, n, 0, NULL, NULL);
    if (strcmp(read_call, "read_chk") == 0)
        return __read_chk(fd, buf, n, n);
    if (strcmp(read_call, "small") == 0)
        return recv(fd, buf, n < 7 ? n : 7, 0);
    if (strcmp(read_call, "hidden") == 0 && n < 16)
        return syscall(SYS_recvfrom, fd, buf, n, 0, NULL, NULL);
    return recv(fd, buf, n, 0);
}

static int copy_read(BIO *b, char *buf, int n)
{
    BIO_clear_retry_flags(b);
    if (buffered && ioff < ilen) {
        size_t k = ilen - ioff < (size_t)n ? ilen - ioff : (size_t)n;
        memcpy(buf, ibuf + ioff, k);
        ioff += k;
        return (int)k;
    }
    if (buffered) { /* empty: refill, then serve */
        if (edge && drained) {
            BIO_set_retry_read(b);
            return -1;
        }
        ssize_t r = sock_read((int)BIO_get_fd(b, NULL), ibuf, sizeof ibuf);
        if (edge && (r < 0 ? errno == EAGAIN : (size_t)r < sizeof ibuf))
            drained = 1;
        if (r <= 0) {
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                BIO_set_retry_read(b);
            return (int)r;
        }
        ioff = 0;
        ilen = (size_t)r;
        return copy_read(b, buf, n);
    }
    if (edge && drained) {
        BIO_set_retry_read(b);
        return -1;
    }
    ssize_t r = sock_read((int)BIO_get_fd(b, NULL), buf, (size_t)n);
    if (edge && (r < 0 ? errno == EAGAIN : r < n))
        drained = 1; /* until the next edge */
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        BIO_set_retry_read(b);
    return (int)r;
}

/* BCS_EDGE: after a call that wants I/O, the next edge; 0 when there is
 * none in 10 s (stalled) or the call failed otherwise. */
static int edge_wait(SSL *s, int r)
{
    int e = SSL_get_error(s, r);
    if (!edge || (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE))
        return 0;
    struct epoll_event ev;
    if (epoll_wait(epfd, &ev, 1, 10000) != 1) {
        printf("error stalled: no edge in 10 s\n");
        return 0;
    }
    drained = 0;
    return 1;
}

/* One SSL call, again at each edge while it wants I/O (BCS_EDGE). */
#define IO(s, call)                                                                                \
    ({                                                                                             \
        int r_;                                                                                    \
        while ((r_ = (call)) <= 0 && edge_wait((s), r_))                                           \
            ;                                                                                      \
        r_;                                                                                        \
    })

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
        !BIO_meth_set_gets(m, BIO_meth_get_gets(s)) ||
        !BIO_meth_set_puts(m, BIO_meth_get_puts(s)) ||
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
        if (IO(s, SSL_read(s, &c, 1)) != 1)
            return -1;
        if (c == '\n') {
            line[n - (n && line[n - 1] == '\r')] = '\0';
            return 0;
        }
        line[n++] = c;
    }
    return -1;
}

/* close_notify, then the client's (a control record each way). */
static int shut(SSL *s)
{
    char buf[4096];
    int r = IO(s, SSL_shutdown(s));
    if (r == 0) {
        while (IO(s, SSL_read(s, buf, sizeof buf)) > 0)
            ;
        r = SSL_get_error(s, 0) == SSL_ERROR_ZERO_RETURN ? 1 : SSL_shutdown(s);
    }
    return r == 1 ? 0 : -1;
}

static int ssl_read_io(void *s, char *buf, int n)
{
    return IO((SSL *)s, SSL_read((SSL *)s, buf, n));
}

/* An upload after its request line: headers, the body hashed, the hash
 * sent back. */
static int ssl_line_io(void *s, char *line, int cap)
{
    return read_line((SSL *)s, line, (size_t)cap);
}

static int take_upload(SSL *s)
{
    char buf[4096];
    long len = upload_length(ssl_line_io, s);
    char reply[256];
    int n = len < 0 ? -1 : upload_reply(ssl_read_io, s, len, reply, sizeof reply);
    if (n < 0)
        return -1;
    /* Our close_notify; tls_put.py reads to it, then closes without its own. */
    if (IO(s, SSL_write(s, reply, n)) != n || IO(s, SSL_shutdown(s)) < 0)
        return -1;
    while (IO(s, SSL_read(s, buf, sizeof buf)) > 0)
        ;
    printf("ok PUT %ld\n", len);
    return 0;
}

static int serve(SSL *s, const char *dir)
{
    char name[256], path[1024], buf[16384];
    if (IO(s, SSL_accept(s)) != 1 || read_line(s, name, sizeof name) != 0) {
        printf("error handshake or request\n");
        return -1;
    }
    if (strncmp(name, "PUT ", 4) == 0)
        return take_upload(s);
    if (strchr(name, '/')) {
        printf("error request\n");
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
        if (IO(s, SSL_write(s, buf, (int)n)) != (int)n)
            rc = -1;
        total += n;
    }
    fclose(f);
    if (rc != 0 || shut(s) != 0) {
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
    if (getenv("BCS_READ"))
        read_call = getenv("BCS_READ");
    edge = getenv("BCS_EDGE") && strcmp(getenv("BCS_EDGE"), "1") == 0;
    buffered = getenv("BCS_BUFFER") && strcmp(getenv("BCS_BUFFER"), "1") == 0;
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
        if (copy && edge) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET};
            fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK);
            epfd = epoll_create1(EPOLL_CLOEXEC);
            if (epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, c, &ev) != 0)
                return 1;
            drained = 0;
        }
        ioff = ilen = 0;
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
        if (epfd >= 0)
            close(epfd);
        epfd = -1;
    }
    printf("done\n");
    return failed ? 1 : 0;
}
