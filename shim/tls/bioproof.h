/* bioproof.h — which BIO chains kTLS may be switched under (bioproof.c). */
#ifndef KTLSSHIM_BIOPROOF_H
#define KTLSSHIM_BIOPROOF_H

#include "core/common.h"

#include <openssl/bio.h>

enum ks_bio_shape {
    /* libcrypto's own socket (or connect) BIO, proven by its method: libssl's
     * kTLS controls reach libcrypto's code, and its reads and writes are
     * libcrypto's, which carry kTLS records. On the send side libssl's
     * buffering BIO (one genuine BIO_f_buffer) may sit on top. */
    KS_BIO_SOCKET,
    /* A chain that ends in a BIO of the program's own (a method not
     * libcrypto's, a copy of its socket method included): biosock/'s. */
    KS_BIO_PROGRAM,
    /* Ends in one of libcrypto's descriptor BIOs, but through something not
     * proven (a filter of the program's, a buffer on the receive side, two
     * buffers), or the proof itself is not available: no kTLS under it. */
    KS_BIO_UNPROVEN,
    /* No socket for kTLS: NULL, libcrypto's memory or pair BIOs, or its
     * fd, datagram or accept BIO alone. */
    KS_BIO_OTHER,
};

/* The shape of the chain that starts at b, for kTLS in direction tx. Call
 * it only where libcrypto is initialised (handshake calls, libssl's kTLS
 * controls, after a handshake): the first call makes one BIO of each of
 * libcrypto's methods to learn them. Keeps errno. */
enum ks_bio_shape ks_bio_shape(BIO *b, bool tx);

/* end, the last BIO of a chain, is the program's own (not one of
 * libcrypto's methods): biosock/ may watch it. */
static inline bool ks_bio_end_is_programs(BIO *end)
{
    return ks_bio_shape(end, false) == KS_BIO_PROGRAM;
}

#endif
