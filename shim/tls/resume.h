/* resume.h — TLS session resumption across the workers of one supervisor:
 * shared session-ticket keys (rotated by the supervisor) and a shared
 * TLS 1.2 session-ID cache, both in shared memory. Unsharded, none of this
 * exists. */
#ifndef KTLSSHIM_RESUME_H
#define KTLSSHIM_RESUME_H

#include "core/common.h"
#include <openssl/ssl.h>

/* Supervisor, before forking: maps the shared state and makes the first
 * ticket key (or reads KTLSSHIM_TICKET_KEY_FILE). False if it could not:
 * then workers resume only what each issued itself. */
bool ks_resume_prepare(void);

/* The same for exec mode, whose workers are not forks: the state lives in a
 * memfd, returned (close-on-exec; the supervisor keeps it) for the workers
 * to map with ks_resume_attach(fd), which closes fd. -1 / false if not. */
int ks_resume_prepare_for_exec(void);
bool ks_resume_attach(int fd);

/* Supervisor: the next key rotation (CLOCK_MONOTONIC ms), or -1; and the
 * rotation itself when due. */
int64_t ks_resume_next_rotation_ms(void);
void ks_resume_rotate_if_due(int64_t now_ms);

/* Worker: make ctx use the shared ticket keys (unless own_tickets: the
 * program chose its own keys or callback) and the shared session cache
 * (unless the program set session-cache callbacks of its own). Returns
 * whether the shared ticket keys were installed. */
bool ks_resume_install(SSL_CTX *ctx, bool own_tickets);

/* The program has just chosen its own ticket keys or callback for a ctx we
 * had given the shared keys: take our callback off (libssl would prefer it
 * to the program's keys or legacy callback). */
void ks_resume_drop_tickets(SSL_CTX *ctx);

#endif
