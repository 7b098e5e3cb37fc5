/* biosock.h — kTLS TX for programs whose TLS I/O goes through a BIO of their
 * own over a TCP socket (Apache mod_ssl, HAProxy, h2o): the library answers
 * libssl's kTLS controls for their BIO, on the socket found under it. */
#ifndef KTLSSHIM_BIOSOCK_H
#define KTLSSHIM_BIOSOCK_H

#include "core/common.h"
#include "stats/stats.h"

#include <openssl/bio.h>
#include <sys/socket.h>

/* While a thread runs a handshake call (SSL_accept, SSL_connect,
 * SSL_do_handshake), the descriptors their BIO writes to are noted. */
extern __thread int ks_biosock_handshaking __attribute__((tls_model("initial-exec")));
/* Set when a thread's outermost handshake call begins: what libssl reads
 * through a program's BIO is looked at afresh (biosock/find.c, the ClientHello). */
extern __thread bool ks_biosock_rx_fresh __attribute__((tls_model("initial-exec")));
static inline void ks_biosock_handshake_enter(void)
{
    if (!ks_biosock_handshaking++)
        ks_biosock_rx_fresh = true;
}
static inline void ks_biosock_handshake_leave(void)
{
    ks_biosock_handshaking--;
}

/* A handshake call on an SSL with these BIOs begins: a program's own BIO
 * among them makes biosock's hooks watch, for good. Until then each is
 * one jump to libcrypto's or libc's function (bio.c, io.c). */
void ks_biosock_handshake_bios(BIO *rbio, BIO *wbio);

/* The socket whose kTLS TX the library installed under the BIO chain b (the
 * program's own BIO), or -1. */
int ks_biosock_tx_fd(BIO *b);

/* For a BIO chain that does not end in a socket BIO: kTLS could be tried
 * under it. TX: one TCP socket was seen under it during the handshake. RX:
 * it is not a memory BIO (RX is never done under the program's BIO, but the
 * general reasons come first). */
bool ks_biosock_found(BIO *b, bool tx);

/* Why the program's BIO b got no kTLS in direction tx. found: what
 * ks_biosock_found said. When found, the general reasons (kernel, version,
 * cipher) come first and this answers what is left. */
enum ks_fallback ks_biosock_reason(BIO *b, bool tx, bool found);

/* send() and sendmsg() as the program's own would be: through biosock's
 * write hooks, so that what they hold for the socket goes out first. */
ssize_t ks_io_send(int fd, const void *buf, size_t n, int flags);
ssize_t ks_io_sendmsg(int fd, const struct msghdr *msg, int flags);

#endif
