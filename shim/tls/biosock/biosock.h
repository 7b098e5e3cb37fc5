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

/* ---- receive under a program's own BIO (biosock/rxframe.c) ----
 * The own switch (tls/kswitch/) takes receive under one BIO of the
 * program's once everything the program read from the socket has reached
 * libssl; from then on the program's reads of the socket get the kernel's
 * records framed, and the switch reads them back through its BIO. */

/* The own switch can take receive in this process: sockets found under
 * programs' BIOs are watched from now on (tls/kswitch/switch.c). */
void ks_biosock_rx_allow(void);

/* The watched socket under rbio (one BIO, not a chain; the socket found
 * under it or under wbio), or -1. */
int ks_biosock_rx_fd(BIO *rbio, BIO *wbio);

/* Everything the program read from fd has gone to libssl through rbio
 * (rxframe.c says how that is proven). */
bool ks_biosock_rx_caught_up(BIO *rbio, int fd);

/* fd's receive goes to the kernel now: its reads are framed from here on;
 * *id is the socket's identity. False if fd is not watched (then nothing
 * may be installed). */
bool ks_biosock_rx_frame(int fd, uint64_t *id);

/* The connection on fd (socket id) ended: neither watched nor framed any
 * more (nothing done if fd is another socket's by now). */
void ks_biosock_rx_end(int fd, uint64_t id);

/* The reader of a framed stream (one per connection). */
struct ks_bio_rx {
    uint16_t left;   /* bytes of the current piece not read yet */
    uint8_t hdr_got; /* bytes of its header read (5: the header is whole) */
    uint8_t ctl_got; /* a control record's bytes gathered */
    uint8_t hdr[5];
    uint8_t ctl[64];
};

/* The reader wiped (what a control record left in it); p is empty again. */
void ks_biosock_rx_release(struct ks_bio_rx *p);

/* The next bytes of the record stream through rbio: up to n of one record's
 * plaintext into buf (a control record whole, n >= 64), *type its content
 * type. -1 with errno (EAGAIN: the BIO asks to be retried; EPROTO: not a
 * framed stream); 0 with *type 0 at the end of the stream. */
ssize_t ks_biosock_rx_read(BIO *rbio, struct ks_bio_rx *p, void *buf, size_t n, uint8_t *type);

#endif
