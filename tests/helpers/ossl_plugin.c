/* ossl_plugin.c — a plugin that brings its own OpenSSL 3, as a Python wheel
 * does (tests/host/28-openssl-copies.bats builds it against a renamed copy
 * of libssl.so.3 / libcrypto.so.3: libssx.so.3 / libcryptx.so.3, the same
 * symbol versions). plugin_serve accepts one connection on a listening
 * socket, reads a line and answers with a file's bytes over TLS. */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* 0, or the negative step that failed. */
int plugin_serve(int listen_fd, const char *cert, const char *key, const char *path)
{
    int rc = 0, fd = -1;
    SSL *s = NULL;
    FILE *f = NULL;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return -1;
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        rc = -2;
        goto out;
    }
    if ((fd = accept(listen_fd, NULL, NULL)) < 0) {
        rc = -3;
        goto out;
    }
    if (!(s = SSL_new(ctx)) || SSL_set_fd(s, fd) != 1 || SSL_accept(s) != 1) {
        rc = -4;
        goto out;
    }
    char buf[4096];
    int got = 0;
    while (got == 0 || !memchr(buf, '\n', (size_t)got)) {
        int n = SSL_read(s, buf + got, (int)sizeof buf - got);
        if (n <= 0) {
            rc = -5;
            goto out;
        }
        got += n;
    }
    if (!(f = fopen(path, "rb"))) {
        rc = -6;
        goto out;
    }
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        if (SSL_write(s, buf, (int)n) != (int)n) {
            rc = -7;
            goto out;
        }
    SSL_shutdown(s);
out:
    if (rc)
        ERR_print_errors_fp(stderr);
    if (f)
        fclose(f);
    SSL_free(s);
    if (fd >= 0)
        close(fd);
    SSL_CTX_free(ctx);
    return rc;
}
