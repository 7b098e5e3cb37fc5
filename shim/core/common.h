/* common.h — definitions every part of the library shares: export marker,
 * small helpers, and the include set. Nothing here has state. */
#ifndef KTLSSHIM_COMMON_H
#define KTLSSHIM_COMMON_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Symbols the program's calls must land on. Everything else is hidden
 * (the library is built with -fvisibility=hidden). */
#define KS_EXPORT __attribute__((visibility("default")))

#define KS_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define KS_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define KS_LIKELY(x) __builtin_expect(!!(x), 1)

/* Keeps the caller's errno across code the caller must not notice. */
#define KS_SAVE_ERRNO int ks_saved_errno_ = errno
#define KS_RESTORE_ERRNO errno = ks_saved_errno_

/* Per-thread hook depth: a hook called from inside another hook (OpenSSL
 * calling its own exported functions, say) passes straight through. */
extern __thread int ks_hook_depth __attribute__((tls_model("initial-exec")));

#endif
