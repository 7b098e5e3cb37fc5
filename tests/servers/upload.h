/* upload.h — the body half of an upload in the test servers' protocol
 * (tests/helpers/tls_put.py), shared by bio_copy_server.c (SSL_read) and
 * sslbio_server.c (BIO_read through an SSL BIO): LEN bytes read in pieces of
 * 1, 7, 100, 4096, 16384 and 65536 bytes in turn, hashed, and the HTTP reply
 * carrying the SHA-256. Each server passes its own read call. */
#ifndef KTLSSHIM_TEST_UPLOAD_H
#define KTLSSHIM_TEST_UPLOAD_H

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

/* One read of at most n bytes into buf: bytes read, or <= 0. */
typedef int (*upload_read_fn)(void *io, char *buf, int n);
/* One line into line (cap bytes), without its line end: 0, or -1. */
typedef int (*upload_line_fn)(void *io, char *line, int cap);

/* The headers after the request line, to the empty line, read with rl:
 * Content-Length's value, or -1 (none, or a read failed). */
static long upload_length(upload_line_fn rl, void *io)
{
    char line[512];
    long len = -1;
    for (;;) {
        if (rl(io, line, (int)sizeof line) != 0)
            return -1;
        if (!line[0])
            return len;
        if (strncasecmp(line, "Content-Length:", 15) == 0)
            len = atol(line + 15);
    }
}

/* The reply for a body of len bytes read with rd from io, in reply (cap
 * bytes: 160 are enough); its length, or -1 if a read failed. */
static int upload_reply(upload_read_fn rd, void *io, long len, char *reply, size_t cap)
{
    static const int sizes[] = {1, 7, 100, 4096, 16384, 65536};
    static char buf[65536];
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    EVP_DigestInit_ex(h, EVP_sha256(), NULL);
    long got = 0;
    for (int i = 0; got < len; i++) {
        int want = sizes[i % 6] < len - got ? sizes[i % 6] : (int)(len - got);
        int r = rd(io, buf, want);
        if (r <= 0) {
            EVP_MD_CTX_free(h);
            return -1;
        }
        EVP_DigestUpdate(h, buf, (size_t)r);
        got += r;
    }
    EVP_DigestFinal_ex(h, md, &mdlen);
    EVP_MD_CTX_free(h);
    int n =
        snprintf(reply, cap, "HTTP/1.1 200 OK\r\nContent-Length: 65\r\nConnection: close\r\n\r\n");
    for (unsigned i = 0; i < mdlen; i++)
        n += snprintf(reply + n, cap - (size_t)n, "%02x", md[i]);
    reply[n++] = '\n';
    return n;
}

#endif
