/* withhold.h — libssl's kTLS not asked where the kernel has none
 * (withhold.c). */
#ifndef KTLSSHIM_WITHHOLD_H
#define KTLSSHIM_WITHHOLD_H

#include "core/common.h"

#include <openssl/ssl.h>

/* Set-up, once the OpenSSL table is loaded: false if withholding is off for
 * the process (nothing is then ever withheld). */
bool ks_withhold_setup(void);

/* A handshake starts on s (its info callback, SSL_CB_HANDSHAKE_START). */
void ks_withhold_at_start(SSL *s);

/* The library took SSL_OP_ENABLE_KTLS off s: the kernel has no tls ULP. */
bool ks_withheld(const SSL *s);

#endif
