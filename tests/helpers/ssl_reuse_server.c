/* ssl_reuse_server.c — a TLS server that does not make a fresh SSL for each
 * connection, in one of two older patterns:
 * - dup: each connection's SSL is SSL_dup of a template SSL that carries an
 *   info callback (configure once, duplicate per connection). SSL_dup
 *   copies ex_data pointers unless their index has a dup callback, so state
 *   the library keeps on the template must not end up shared (freed twice).
 * - clear: one SSL serves every connection, SSL_clear between them. Each
 *   handshake on it is a new connection to the library.
 * tests/host/40-interpose.bats and tests/vm/20-ktls.bats run it under the
 * library.
 *
 *   ssl_reuse_server dup|clear PORT CERT KEY FILE N
 * Serves N connections on 127.0.0.1:PORT: reads a line, answers with FILE's
 * bytes. REUSE_READ_AHEAD=1: with libssl's read-ahead on (a request that
 * comes with the client's Finished is then read in SSL_accept). Then prints "callbacks N" (the program's info callback calls seen
 * on the connections' handshakes) and "ok", and exits 0. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int handshake_starts;

static void info(const SSL *s, int where, int ret)
{
    (void)s, (void)ret;
    if (where & SSL_CB_HANDSHAKE_START)
        handshake_starts++;
}

int main(int argc, char **argv)
{
    if (argc != 7)
        return 2;
    int clear = !strcmp(argv[1], "clear");
    argv++;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx && getenv("REUSE_READ_AHEAD") && !strcmp(getenv("REUSE_READ_AHEAD"), "1"))
        SSL_CTX_set_read_ahead(ctx, 1);
    if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, argv[2]) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, argv[3], SSL_FILETYPE_PEM) != 1)
        return 3;
    SSL *tmpl = SSL_new(ctx);
    SSL_set_info_callback(tmpl, info);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 8))
        return 4;
    for (int n = atoi(argv[5]); n > 0; n--) {
        int fd = accept(l, NULL, NULL);
        SSL *s = clear ? tmpl : SSL_dup(tmpl);
        if (fd < 0 || !s || (s == tmpl) != clear || SSL_get_info_callback(s) != info)
            return 5;
        SSL_set_fd(s, fd);
        if (SSL_accept(s) != 1)
            return 6;
        char buf[16384];
        int got = 0, r;
        while ((got == 0 || !memchr(buf, '\n', (size_t)got)) &&
               (r = SSL_read(s, buf + got, (int)sizeof buf - got)) > 0)
            got += r;
        FILE *f = fopen(argv[4], "rb");
        size_t k;
        while (f && (k = fread(buf, 1, sizeof buf, f)) > 0)
            if (SSL_write(s, buf, (int)k) != (int)k)
                return 7;
        if (f)
            fclose(f);
        SSL_shutdown(s);
        if (clear && SSL_clear(s) != 1)
            return 8;
        if (!clear)
            SSL_free(s);
        close(fd);
    }
    SSL_free(tmpl);
    SSL_CTX_free(ctx);
    printf("callbacks %d\nok\n", handshake_starts);
    return 0;
}
