/* ktls-probe: what this machine and a libssl can do for kernel TLS.
 *
 * Every check is tried for real on loopback connections of the probe's own
 * (127.0.0.1, kernel-chosen ports); nothing is read from a config file to
 * decide whether something works, only to explain why it does not. */
#ifndef KTLS_PROBE_H
#define KTLS_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define PROBE_VERSION "1"

/* Kernel ABI values (SOL_TLS, TCP_ULP, TLS_TX, ...) and the crypto_info
 * builder, shared with the library (shim/kernel/). */
#include "kernel/cryptoinfo.h"
#include "kernel/uapi.h"

/* Exit statuses (documented in docs/probe.md). */
#define EXIT_USABLE 0
#define EXIT_UNUSABLE 1
#define EXIT_USAGE 2

/* Timeouts in milliseconds. The VM runs under an emulator: be generous, but
 * bounded, so the probe never hangs. */
#define CONNECT_TIMEOUT_MS 5000
#define HANDSHAKE_TIMEOUT_MS 10000
#define LDD_TIMEOUT_MS 20000

/* ---- tri-state result of one real try ---------------------------------- */
enum tri { TRI_UNKNOWN = -1, TRI_NO = 0, TRI_YES = 1 };

struct try_result {
    enum tri ok;   /* TRI_UNKNOWN: not tried (see why) */
    int err;       /* errno when refused, 0 otherwise */
    char why[160]; /* reason when not TRI_YES */
};

/* ---- kernel ------------------------------------------------------------ */
enum ulp_cause {
    CAUSE_NONE = 0,                /* ULP available */
    CAUSE_NO_CONFIG_TLS,           /* kernel built without CONFIG_TLS */
    CAUSE_MODULE_NOT_LOADED,       /* tls.ko exists, not loaded, no autoload */
    CAUSE_MODULE_LOAD_FAILED,      /* tls.ko exists, autoload was allowed, failed */
    CAUSE_NO_CONFIG_OR_NO_MODULES, /* no tls.ko to be found, no module tree */
    CAUSE_OTHER,                   /* some other errno or contradictory evidence */
};

#define N_CIPHERS 8
#define MAX_EVIDENCE 8

struct cipher_desc {
    const char *name;
    unsigned short id; /* TLS_CIPHER_* */
};
extern const struct cipher_desc cipher_table[N_CIPHERS];

struct stat_counter {
    char name[48];
    unsigned long long value;
};

struct kernel_info {
    char release[65];
    char version[65];
    char machine[65];

    /* tls ULP */
    bool ulp_available;
    int ulp_errno;
    enum ulp_cause cause;
    char cause_text[200];
    char evidence[MAX_EVIDENCE][200];
    int n_evidence;
    bool avail_ulp_read; /* /proc/sys/net/ipv4/tcp_available_ulp */
    char avail_ulp[128];
    bool avail_ulp_has_tls;
    bool module_support;       /* /proc/modules exists */
    char tls_module_path[256]; /* "" when not found */
    bool modules_dir;          /* /lib/modules/<release> exists */
    bool builtin_listed;       /* modules.builtin lists tls.ko */
    char config_tls[16];       /* "y", "m", "not set" or "" (unknown) */
    char config_source[64];
    enum tri cap_net_admin;

    /* ciphers: [cipher][0=TLS1.2,1=TLS1.3][0=TX,1=RX] */
    bool ciphers_tried;
    struct try_result cipher[N_CIPHERS][2][2];

    struct try_result zerocopy_ro;
    struct try_result rx_no_pad;

    bool tls_stat_present;
    int tls_stat_errno;
    struct stat_counter *tls_stat;
    size_t n_tls_stat;

    struct try_result reuseport;
    unsigned reuseport_port;
    long cpus_online;
    long cpus_configured;
    long cpus_usable; /* sched_getaffinity */
    int migrate_req;  /* -1 when unreadable */
    int migrate_req_errno;
};

void kernel_probe(struct kernel_info *k);
void kernel_free(struct kernel_info *k);

/* ---- interfaces -------------------------------------------------------- */
#define N_TLS_FEATURES 3
extern const char *const tls_feature_names[N_TLS_FEATURES];

struct feature_state {
    bool known; /* the kernel has a feature of that name */
    bool active;
    bool requested;
    bool fixed; /* not changeable (or never changed by the driver) */
};

struct netif_info {
    char name[32];
    unsigned index;
    int err; /* errno of a failed SIOCETHTOOL, 0 when read */
    const char *err_step;
    struct feature_state feat[N_TLS_FEATURES];
};

struct netif_list {
    struct netif_info *v;
    size_t n;
    int err; /* if_nameindex failure */
};

void netif_probe(struct netif_list *l);
void netif_free(struct netif_list *l);

/* ---- libssl ------------------------------------------------------------ */
struct hs_result {
    bool tried;
    bool ok;
    char error[200];
    char protocol[16];
    char cipher[64];
    /* kTLS engaged per end, as reported by BIO_get_ktls_send/recv */
    bool client_tx, client_rx, server_tx, server_rx;
    bool data_ok; /* one record each way after the handshake */
    char data_error[160];
    /* what libssl asked of the kernel (seen by the probe's setsockopt) */
    int ulp_calls, ulp_ok, ulp_errno;
    int tx_calls, tx_ok, tx_errno;
    int rx_calls, rx_ok, rx_errno;
};

struct ssl_info {
    /* where it came from */
    bool from_program;
    char program[4096];
    bool program_links_libssl; /* meaningful when from_program */
    char program_note[300];    /* why no libssl / how resolved */
    char requested[4096];      /* path or soname given to dlopen */
    char crypto_requested[4096];

    bool loaded;
    char load_error[300];
    char path[4096];
    char version[128];
    unsigned long version_num;

    bool interposer_ok; /* libssl's setsockopt calls reach the probe */
    enum tri ktls_built;
    char ktls_built_how[200];

    struct hs_result hs[2]; /* 0: TLS 1.2, 1: TLS 1.3 */
    char setup_error[200];  /* key/cert/context failure */
};

/* Resolves --program to a libssl (and libcrypto) path; false on failure
 * with si->program_note set. */
void program_resolve(struct ssl_info *si);
void ssl_probe(struct ssl_info *si, const struct kernel_info *k);

/* ---- report ------------------------------------------------------------ */
struct verdict {
    bool usable;
    char reason[300];
    char note[300];
};

void report_human(FILE *f, const struct kernel_info *k, const struct netif_list *nl,
                  const struct ssl_info *si, const struct verdict *v);
void report_json(FILE *f, const struct kernel_info *k, const struct netif_list *nl,
                 const struct ssl_info *si, const struct verdict *v, int status);

/* ---- util -------------------------------------------------------------- */
const char *errname(int err);
int64_t now_ms(void);
int loopback_listener(unsigned *port);
int loopback_pair(int lfd, unsigned port, int *client, int *server, int timeout_ms);
void close_abort(int fd);
/* Reads a small file into buf (NUL-terminated, trailing newline kept).
 * Returns bytes read or -1 with errno set. */
ssize_t read_small(const char *path, char *buf, size_t size);
void strlcpy0(char *dst, const char *src, size_t size);
/* snprintf into a fixed buffer where cutting a long message is intended. */
int bprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void trim(char *s);
void fill_random(void *buf, size_t len);

/* livestats.c: `--stats PID [--prometheus]`; returns the exit status. */
int live_stats_main(pid_t pid, bool prometheus);

#endif
