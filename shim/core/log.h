/* log.h — the library's only voice: one line at a time on stderr. */
#ifndef KTLSSHIM_LOG_H
#define KTLSSHIM_LOG_H

enum ks_log_level { KS_LOG_QUIET = 0, KS_LOG_INFO = 1, KS_LOG_DEBUG = 2 };

/* Always printed, whatever KTLSSHIM_LOG says (configuration errors). */
void ks_log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Printed at KTLSSHIM_LOG=info (the default) and debug. */
void ks_log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Printed at KTLSSHIM_LOG=debug only. */
void ks_log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Writes a whole line (already formatted) to stderr in one write(2). */
void ks_log_raw(const char *line, size_t len);

#endif
