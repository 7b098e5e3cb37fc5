/* sslbio_server.c — a TLS file server that never calls SSL_read or
 * SSL_write: all its I/O goes through libssl's SSL BIO (BIO_f_ssl) under
 * libcrypto's buffering BIO, as openssl s_server -WWW does
 * (shim/tls/sslbio.c is what the library does about it).
 *
 *   sslbio_server MODE PORT CERT KEY DIR N
 * MODE says how the SSL BIO is made and where the handshake runs:
 *   inside   BIO_new(BIO_f_ssl()) over an SSL in accept state: the
 *            handshake completes inside the first read (s_server -WWW);
 *   accept   SSL_accept by the program first, then the same SSL BIO;
 *   new_ssl  BIO_new_ssl(ctx, 0) pushed onto a socket BIO: libssl makes
 *            the SSL BIO (through its own call of BIO_f_ssl).
 * Serves N connections on 127.0.0.1:PORT, one after the other, in the
 * protocol of tests/helpers/tls_fetch.py: a line naming a file in DIR, the
 * file, then close_notify both ways. Or an upload (tests/helpers/
 * tls_put.py): "PUT PATH HTTP/1.1", headers with Content-Length, the body
 * (BIO_read calls of 1, 7, 100, 4096, 16384 and 65536 bytes in turn),
 * answered with the body's SHA-256. Prints "ok NAME LENGTH" (uploads: "ok
 * PUT LENGTH") or "error ..." per connection, then "done", and exits 0 if
 * every connection was served. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "upload.h"

/* One line (without its line end) from io; 0 on success. */
static int read_line(BIO *io, char *line, int cap)
{
    int n = BIO_gets(io, line, cap);
    if (n <= 0 || line[n - 1] != '\n')
        return -1;
    line[--n] = '\0';
    if (n && line[n - 1] == '\r')
        line[n - 1] = '\0';
    return 0;
}

static int write_all(BIO *io, const char *buf, int n)
{
    return BIO_write(io, buf, n) == n ? 0 : -1;
}

/* Our close_notify, then the client's: reads through the BIOs until end. */
static int shut(SSL *s, BIO *io)
{
    char buf[4096];
    if (BIO_flush(io) != 1 || SSL_shutdown(s) < 0)
        return -1;
    int r;
    while ((r = BIO_read(io, buf, sizeof buf)) > 0)
        ;
    return r == 0 ? 0 : -1;
}

static int bio_read_io(void *io, char *buf, int n)
{
    return BIO_read((BIO *)io, buf, n);
}

static int bio_line_io(void *io, char *line, int cap)
{
    return read_line((BIO *)io, line, cap);
}

static int take_upload(SSL *s, BIO *io)
{
    char buf[4096];
    long len = upload_length(bio_line_io, io);
    char reply[256];
    int n = len < 0 ? -1 : upload_reply(bio_read_io, io, len, reply, sizeof reply);
    if (n < 0)
        return -1;
    /* Our close_notify; tls_put.py reads to it, then closes without its own. */
    if (write_all(io, reply, n) != 0 || BIO_flush(io) != 1 || SSL_shutdown(s) < 0)
        return -1;
    while (BIO_read(io, buf, sizeof buf) > 0)
        ;
    printf("ok PUT %ld\n", len);
    return 0;
}

static int serve(SSL *s, BIO *io, const char *dir)
{
    char name[256], path[1024], buf[16384];
    if (read_line(io, name, sizeof name) != 0) {
        printf("error handshake or request\n");
        return -1;
    }
    if (strncmp(name, "PUT ", 4) == 0)
        return take_upload(s, io);
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
        rc = write_all(io, buf, (int)n);
        total += n;
    }
    fclose(f);
    if (rc != 0 || shut(s, io) != 0) {
        printf("error %s: write or shutdown\n", name);
        return -1;
    }
    printf("ok %s %zu\n", name, total);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: %s inside|accept|new_ssl PORT CERT KEY DIR N\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1], *dir = argv[5];
    if (strcmp(mode, "inside") && strcmp(mode, "accept") && strcmp(mode, "new_ssl"))
        return 2;
    int n = atoi(argv[6]);
    setvbuf(stdout, NULL, _IOLBF, 0);
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, argv[3]) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, argv[4], SSL_FILETYPE_PEM) != 1)
        return 1;
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
        SSL *s = NULL;
        BIO *sb;
        int ok = 1;
        if (strcmp(mode, "new_ssl") == 0) {
            sb = BIO_new_ssl(ctx, 0);
            ok = sb && BIO_push(sb, BIO_new_socket(c, BIO_NOCLOSE)) && BIO_get_ssl(sb, &s) == 1;
        } else {
            s = SSL_new(ctx);
            SSL_set_fd(s, c);
            SSL_set_accept_state(s);
            if (strcmp(mode, "accept") == 0)
                ok = SSL_accept(s) == 1;
            sb = BIO_new(BIO_f_ssl());
            BIO_set_ssl(sb, s, BIO_CLOSE);
        }
        BIO *io = BIO_push(BIO_new(BIO_f_buffer()), sb);
        if (!ok || serve(s, io, dir) != 0) {
            if (!ok)
                printf("error handshake\n");
            ERR_print_errors_fp(stdout);
            failed++;
        }
        BIO_free_all(io); /* the SSL BIO frees the SSL */
        close(c);
    }
    printf("done\n");
    return failed ? 1 : 0;
}
