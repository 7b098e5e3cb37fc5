/* tls.h — what the kTLS tower offers the process's life (init.c), which
 * ties it to sharding without either tower including the other. */
#ifndef KTLSSHIM_TLS_H
#define KTLSSHIM_TLS_H

#include "core/common.h"

/* Is this process a sharding worker? (sharding answers; set at load). A
 * worker's SSL_CTXs use the session state the workers share. */
void ks_tls_set_in_worker(bool (*query)(void));

/* A fork-mode worker starts, its sockets in place: every SSL_CTX the
 * program made before the fork now uses the shared session state. */
void ks_tls_worker_started(void);

#endif
