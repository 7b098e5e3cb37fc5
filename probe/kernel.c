/* Kernel side: the tls ULP, the ciphers it takes, its options, its
 * counters, SO_REUSEPORT, CPUs and tcp_migrate_req. Everything that says
 * "yes" was tried on a loopback connection of the probe's own. */
#include "probe.h"

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

/* The ciphers the probe tries, in the report's order; their sizes are the
 * kernel's ABI (ks_cipher_shape). */
const struct cipher_desc cipher_table[N_CIPHERS] = {
    {"AES-GCM-128", TLS_CIPHER_AES_GCM_128},   {"AES-GCM-256", TLS_CIPHER_AES_GCM_256},
    {"AES-CCM-128", TLS_CIPHER_AES_CCM_128},   {"CHACHA20-POLY1305", TLS_CIPHER_CHACHA20_POLY1305},
    {"SM4-GCM", TLS_CIPHER_SM4_GCM},           {"SM4-CCM", TLS_CIPHER_SM4_CCM},
    {"ARIA-GCM-128", TLS_CIPHER_ARIA_GCM_128}, {"ARIA-GCM-256", TLS_CIPHER_ARIA_GCM_256},
};

static void set_no(struct try_result *r, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_no(struct try_result *r, int err, const char *fmt, ...)
{
    va_list ap;

    r->ok = TRI_NO;
    r->err = err;
    va_start(ap, fmt);
    vsnprintf(r->why, sizeof(r->why), fmt, ap);
    va_end(ap);
}

static void set_unknown(struct try_result *r, const char *why)
{
    r->ok = TRI_UNKNOWN;
    r->err = 0;
    strlcpy0(r->why, why, sizeof(r->why));
}

static void set_yes(struct try_result *r)
{
    r->ok = TRI_YES;
    r->err = 0;
    r->why[0] = '\0';
}

/* A fresh connected pair with the tls ULP set on the client end. Returns 0,
 * or the errno of whichever step failed (*step says which). */
static int ulp_pair(int lfd, unsigned port, int *c, int *s, const char **step)
{
    if (loopback_pair(lfd, port, c, s, CONNECT_TIMEOUT_MS) < 0) {
        *step = "loopback connection";
        return errno;
    }
    if (setsockopt(*c, IPPROTO_TCP, TCP_ULP, "tls", 3) < 0) {
        int e = errno;

        *step = "setsockopt TCP_ULP \"tls\"";
        close_abort(*c);
        close_abort(*s);
        *c = *s = -1;
        return e;
    }
    return 0;
}

/* Sets direction dir of fd to cipher c for version, with throwaway keys. */
static int set_crypto(int fd, int dir, const struct cipher_desc *c, unsigned short version)
{
    union ks_crypto_info ci;
    uint8_t key[32], iv[12];
    uint64_t seq;
    fill_random(key, sizeof(key));
    fill_random(iv, sizeof(iv));
    fill_random(&seq, sizeof(seq));
    socklen_t len = ks_crypto_info_build(&ci, version, c->id, key, iv, seq);
    int r = len ? setsockopt(fd, SOL_TLS, dir, &ci, len) : (errno = EINVAL, -1);
    int e = errno;

    explicit_bzero(&ci, sizeof(ci));
    explicit_bzero(key, sizeof(key));
    explicit_bzero(iv, sizeof(iv));
    errno = e;
    return r;
}

/* ---- why the ULP is missing -------------------------------------------- */

static void add_evidence(struct kernel_info *k, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void add_evidence(struct kernel_info *k, const char *fmt, ...)
{
    va_list ap;

    if (k->n_evidence >= MAX_EVIDENCE)
        return;
    va_start(ap, fmt);
    vsnprintf(k->evidence[k->n_evidence++], sizeof(k->evidence[0]), fmt, ap);
    va_end(ap);
}

static bool path_exists(const char *p)
{
    struct stat st;

    return stat(p, &st) == 0;
}

/* Looks at one kernel config line for CONFIG_TLS and CONFIG_MODULES. */
static void config_line(struct kernel_info *k, const char *line)
{
    if (!strncmp(line, "CONFIG_TLS=", 11)) {
        strlcpy0(k->config_tls, line + 11, sizeof(k->config_tls));
        trim(k->config_tls);
    } else if (!strncmp(line, "# CONFIG_TLS is not set", 23)) {
        strlcpy0(k->config_tls, "not set", sizeof(k->config_tls));
    }
}

/* The running kernel's config, when it publishes one: /proc/config.gz
 * (read through libz, loaded at run time) or /boot/config-<release>. It
 * only explains a failure; it never decides availability. */
static void read_kernel_config(struct kernel_info *k)
{
    char path[128];
    char line[256];

    if (path_exists("/proc/config.gz")) {
        void *z = dlopen("libz.so.1", RTLD_NOW | RTLD_LOCAL);

        if (z) {
            void *(*zopen)(const char *, const char *) =
                (void *(*)(const char *, const char *))dlsym(z, "gzopen");
            char *(*zgets)(void *, char *, int) =
                (char *(*)(void *, char *, int))dlsym(z, "gzgets");
            int (*zclose)(void *) = (int (*)(void *))dlsym(z, "gzclose");
            void *gz = (zopen && zgets && zclose) ? zopen("/proc/config.gz", "rb") : NULL;

            if (gz) {
                while (zgets(gz, line, sizeof(line)))
                    config_line(k, line);
                zclose(gz);
                strlcpy0(k->config_source, "/proc/config.gz", sizeof(k->config_source));
            }
            dlclose(z);
        }
        if (k->config_source[0])
            return;
    }
    bprintf(path, sizeof(path), "/boot/config-%s", k->release);
    FILE *f = fopen(path, "re");
    if (f) {
        while (fgets(line, sizeof(line), f))
            config_line(k, line);
        fclose(f);
        strlcpy0(k->config_source, path, sizeof(k->config_source));
    }
}

static bool is_tls_ko(const char *name, size_t len)
{
    /* basename is tls.ko, optionally compressed */
    static const char *const forms[] = {"tls.ko", "tls.ko.xz", "tls.ko.zst", "tls.ko.gz"};
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        size_t fl = strlen(forms[i]);

        if (len >= fl && !strncmp(name + len - fl, forms[i], fl) &&
            (len == fl || name[len - fl - 1] == '/'))
            return true;
    }
    return false;
}

static void find_tls_module(struct kernel_info *k)
{
    char dir[128], path[512], line[1024];

    bprintf(dir, sizeof(dir), "/lib/modules/%s", k->release);
    k->modules_dir = path_exists(dir);
    if (!k->modules_dir)
        return;

    /* modules.dep names every installed module, wherever it lives. */
    bprintf(path, sizeof(path), "%s/modules.dep", dir);
    FILE *f = fopen(path, "re");
    if (f) {
        while (fgets(line, sizeof(line), f)) {
            char *colon = strchr(line, ':');

            if (!colon || !is_tls_ko(line, (size_t)(colon - line)))
                continue;
            *colon = '\0';
            bprintf(path, sizeof(path), "%s/%s", dir, line);
            if (path_exists(path)) {
                strlcpy0(k->tls_module_path, path, sizeof(k->tls_module_path));
                break;
            }
        }
        fclose(f);
    }
    if (!k->tls_module_path[0]) {
        static const char *const ext[] = {"", ".xz", ".zst", ".gz"};

        for (size_t i = 0; i < 4 && !k->tls_module_path[0]; i++) {
            bprintf(path, sizeof(path), "%s/kernel/net/tls/tls.ko%s", dir, ext[i]);
            if (path_exists(path))
                strlcpy0(k->tls_module_path, path, sizeof(k->tls_module_path));
        }
    }

    bprintf(path, sizeof(path), "%s/modules.builtin", dir);
    f = fopen(path, "re");
    if (f) {
        while (fgets(line, sizeof(line), f)) {
            trim(line);
            if (is_tls_ko(line, strlen(line)))
                k->builtin_listed = true;
        }
        fclose(f);
    }
}

static enum tri have_cap_net_admin(void)
{
    char buf[4096];
    char *p;

    if (read_small("/proc/self/status", buf, sizeof(buf)) < 0)
        return TRI_UNKNOWN;
    p = strstr(buf, "\nCapEff:");
    if (!p)
        return TRI_UNKNOWN;
    unsigned long long caps = strtoull(p + 8, NULL, 16);
    return (caps >> 12) & 1 ? TRI_YES : TRI_NO; /* CAP_NET_ADMIN = 12 */
}

static void explain_ulp_failure(struct kernel_info *k)
{
    char buf[256];

    if (read_small("/proc/sys/net/ipv4/tcp_available_ulp", buf, sizeof(buf)) >= 0) {
        trim(buf);
        k->avail_ulp_read = true;
        strlcpy0(k->avail_ulp, buf, sizeof(k->avail_ulp));
        for (char *t = strtok(buf, " "); t; t = strtok(NULL, " "))
            if (!strcmp(t, "tls"))
                k->avail_ulp_has_tls = true;
        add_evidence(k, "tcp_available_ulp: \"%s\"", k->avail_ulp);
    }
    k->module_support = path_exists("/proc/modules");
    k->cap_net_admin = have_cap_net_admin();
    find_tls_module(k);
    read_kernel_config(k);

    if (!k->module_support)
        add_evidence(k, "no /proc/modules: kernel without loadable module support");
    if (k->tls_module_path[0])
        add_evidence(k, "module file %s", k->tls_module_path);
    else if (k->modules_dir)
        add_evidence(k, "no tls.ko under /lib/modules/%s", k->release);
    else if (k->module_support)
        add_evidence(k, "no /lib/modules/%s to look for tls.ko", k->release);
    if (k->builtin_listed)
        add_evidence(k, "modules.builtin lists tls.ko");
    if (k->config_source[0]) {
        if (k->config_tls[0] && strcmp(k->config_tls, "not set"))
            add_evidence(k, "%s: CONFIG_TLS=%s", k->config_source, k->config_tls);
        else
            add_evidence(k, "%s: CONFIG_TLS is not set", k->config_source);
        if (!k->config_tls[0])
            strlcpy0(k->config_tls, "not set", sizeof(k->config_tls));
    }

    if (k->ulp_errno != ENOENT) {
        k->cause = CAUSE_OTHER;
        if (k->ulp_errno == ENOPROTOOPT)
            bprintf(k->cause_text, sizeof(k->cause_text),
                    "kernel does not know TCP_ULP (older than 4.13)");
        else
            bprintf(k->cause_text, sizeof(k->cause_text), "setsockopt TCP_ULP failed with %s (%s)",
                    errname(k->ulp_errno), strerror(k->ulp_errno));
        return;
    }
    bool has_module = k->tls_module_path[0] || !strcmp(k->config_tls, "m");

    if (k->avail_ulp_has_tls) {
        k->cause = CAUSE_OTHER;
        bprintf(k->cause_text, sizeof(k->cause_text),
                "tls is registered (tcp_available_ulp) yet TCP_ULP was refused");
    } else if (!strcmp(k->config_tls, "not set")) {
        k->cause = CAUSE_NO_CONFIG_TLS;
        bprintf(k->cause_text, sizeof(k->cause_text), "kernel built without CONFIG_TLS");
    } else if (has_module && k->cap_net_admin == TRI_YES) {
        k->cause = CAUSE_MODULE_LOAD_FAILED;
        bprintf(k->cause_text, sizeof(k->cause_text),
                "tls module not loaded and the kernel's on-demand load failed"
                " (run `modprobe tls` to see why)");
    } else if (has_module) {
        k->cause = CAUSE_MODULE_NOT_LOADED;
        bprintf(k->cause_text, sizeof(k->cause_text),
                "tls module not loaded (run `modprobe tls`; the kernel loads"
                " it on demand only for a process with CAP_NET_ADMIN)");
    } else if (!strcmp(k->config_tls, "y") || k->builtin_listed) {
        k->cause = CAUSE_OTHER;
        bprintf(k->cause_text, sizeof(k->cause_text),
                "tls said to be built in, yet not registered");
    } else if (!k->module_support || k->modules_dir) {
        k->cause = CAUSE_NO_CONFIG_TLS;
        bprintf(k->cause_text, sizeof(k->cause_text), "kernel built without CONFIG_TLS");
    } else {
        k->cause = CAUSE_NO_CONFIG_OR_NO_MODULES;
        bprintf(k->cause_text, sizeof(k->cause_text),
                "kernel built without CONFIG_TLS, or tls is a module not"
                " loaded (try `modprobe tls`) that cannot be seen here:"
                " no /lib/modules/%s",
                k->release);
    }
}

/* ---- the tries ---------------------------------------------------------- */

static void try_ulp(struct kernel_info *k, int lfd, unsigned port)
{
    int c, s;
    const char *step = NULL;
    int e = ulp_pair(lfd, port, &c, &s, &step);

    if (e == 0) {
        k->ulp_available = true;
        close_abort(c);
        close_abort(s);
        return;
    }
    k->ulp_errno = e;
    if (strcmp(step, "loopback connection")) {
        explain_ulp_failure(k);
    } else {
        k->cause = CAUSE_OTHER;
        bprintf(k->cause_text, sizeof(k->cause_text), "could not open a loopback connection: %s",
                errname(e));
    }
}

/* What a refused TLS_TX/TLS_RX most often means. */
static const char *refusal_hint(int err)
{
    switch (err) {
    case ENOENT:
        return "the kernel crypto API has no such AEAD (not built, or module not loaded)";
    case EINVAL:
        return "this kernel's tls does not take this cipher for this TLS version";
    case ENOPROTOOPT:
        return "the kernel does not know this option";
    case EBUSY:
        return "already set on this socket";
    case ENOMEM:
        return "out of kernel memory";
    default:
        return strerror(err);
    }
}

static void try_ciphers(struct kernel_info *k, int lfd, unsigned port)
{
    static const unsigned short versions[2] = {TLS_1_2_VERSION, TLS_1_3_VERSION};
    static const int dirs[2] = {TLS_TX, TLS_RX};

    for (int i = 0; i < N_CIPHERS; i++)
        for (int v = 0; v < 2; v++)
            for (int d = 0; d < 2; d++) {
                struct try_result *r = &k->cipher[i][v][d];
                const char *step = NULL;
                int c, s, e;

                if (!k->ulp_available) {
                    set_unknown(r, "kernel has no tls ULP");
                    continue;
                }
                e = ulp_pair(lfd, port, &c, &s, &step);
                if (e) {
                    set_unknown(r, step);
                    continue;
                }
                if (set_crypto(c, dirs[d], &cipher_table[i], versions[v]) == 0)
                    set_yes(r);
                else
                    set_no(r, errno, "%s: %s", errname(errno), refusal_hint(errno));
                close_abort(c);
                close_abort(s);
            }
    k->ciphers_tried = k->ulp_available;
}

/* Tries one SOL_TLS option on a connection that has `dir` set up with
 * AES-GCM-128 for `version`. */
static void try_option(struct kernel_info *k, struct try_result *r, int lfd, unsigned port, int dir,
                       unsigned short version, int opt, const char *since)
{
    const char *step = NULL;
    const char *dirname = dir == TLS_TX ? "TX" : "RX";
    unsigned int one = 1;
    int c, s, e;

    if (!k->ulp_available) {
        set_unknown(r, "kernel has no tls ULP");
        return;
    }
    if (k->cipher[0][version == TLS_1_3_VERSION][dir == TLS_RX].ok != TRI_YES) {
        char why[96];

        bprintf(why, sizeof(why), "AES-GCM-128 %s refused", dirname);
        set_unknown(r, why);
        return;
    }
    e = ulp_pair(lfd, port, &c, &s, &step);
    if (e) {
        set_unknown(r, step);
        return;
    }
    if (set_crypto(c, dir, &cipher_table[0], version) < 0) {
        set_unknown(r, "AES-GCM-128 setup refused");
    } else if (setsockopt(c, SOL_TLS, opt, &one, sizeof(one)) == 0) {
        set_yes(r);
    } else if (errno == ENOPROTOOPT) {
        set_no(r, errno, "ENOPROTOOPT: option unknown to this kernel (added in %s)", since);
    } else {
        set_no(r, errno, "%s", errname(errno));
    }
    close_abort(c);
    close_abort(s);
}

static void read_tls_stat(struct kernel_info *k)
{
    FILE *f = fopen("/proc/net/tls_stat", "re");
    char line[256];
    size_t cap = 0;

    if (!f) {
        k->tls_stat_errno = errno;
        return;
    }
    k->tls_stat_present = true;
    while (fgets(line, sizeof(line), f)) {
        char name[48];
        unsigned long long val;

        if (sscanf(line, "%47s %llu", name, &val) != 2)
            continue;
        if (k->n_tls_stat == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            struct stat_counter *nv = realloc(k->tls_stat, ncap * sizeof(*nv));

            if (!nv)
                break;
            k->tls_stat = nv;
            cap = ncap;
        }
        strlcpy0(k->tls_stat[k->n_tls_stat].name, name, sizeof(name));
        k->tls_stat[k->n_tls_stat].value = val;
        k->n_tls_stat++;
    }
    fclose(f);
}

static int reuse_socket(void)
{
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* Two listeners on the same 127.0.0.1 port, as the shim's shards will be. */
static void try_reuseport(struct kernel_info *k)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t al = sizeof(a);
    int f1 = reuse_socket(), f2 = -1;
    const char *step = "socket+SO_REUSEPORT";

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (f1 < 0)
        goto fail;
    step = "first bind";
    if (bind(f1, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        getsockname(f1, (struct sockaddr *)&a, &al) < 0 || listen(f1, 1) < 0)
        goto fail;
    step = "socket+SO_REUSEPORT";
    f2 = reuse_socket();
    if (f2 < 0)
        goto fail;
    step = "second bind to the same port";
    if (bind(f2, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(f2, 1) < 0)
        goto fail;
    k->reuseport_port = ntohs(a.sin_port);
    set_yes(&k->reuseport);
    close(f1);
    close(f2);
    return;
fail:
    set_no(&k->reuseport, errno, "%s: %s", step, errname(errno));
    if (f1 >= 0)
        close(f1);
    if (f2 >= 0)
        close(f2);
}

static void count_cpus(struct kernel_info *k)
{
    cpu_set_t *set = CPU_ALLOC(4096);
    size_t sz = CPU_ALLOC_SIZE(4096);

    k->cpus_online = sysconf(_SC_NPROCESSORS_ONLN);
    k->cpus_configured = sysconf(_SC_NPROCESSORS_CONF);
    k->cpus_usable = -1;
    if (set) {
        CPU_ZERO_S(sz, set);
        if (sched_getaffinity(0, sz, set) == 0)
            k->cpus_usable = CPU_COUNT_S(sz, set);
        CPU_FREE(set);
    }
}

static void read_migrate_req(struct kernel_info *k)
{
    char buf[32];

    k->migrate_req = -1;
    if (read_small("/proc/sys/net/ipv4/tcp_migrate_req", buf, sizeof(buf)) < 0) {
        k->migrate_req_errno = errno;
        return;
    }
    if (isdigit((unsigned char)buf[0]))
        k->migrate_req = atoi(buf);
}

void kernel_probe(struct kernel_info *k)
{
    struct utsname u;
    unsigned port = 0;
    int lfd;

    memset(k, 0, sizeof(*k));
    k->cap_net_admin = TRI_UNKNOWN;
    if (uname(&u) == 0) {
        strlcpy0(k->release, u.release, sizeof(k->release));
        strlcpy0(k->version, u.version, sizeof(k->version));
        strlcpy0(k->machine, u.machine, sizeof(k->machine));
    }

    lfd = loopback_listener(&port);
    if (lfd < 0) {
        k->ulp_errno = errno;
        k->cause = CAUSE_OTHER;
        bprintf(k->cause_text, sizeof(k->cause_text), "could not listen on 127.0.0.1: %s",
                errname(errno));
        for (int i = 0; i < N_CIPHERS; i++)
            for (int v = 0; v < 2; v++)
                for (int d = 0; d < 2; d++)
                    set_unknown(&k->cipher[i][v][d], "no loopback listener");
        set_unknown(&k->zerocopy_ro, "no loopback listener");
        set_unknown(&k->rx_no_pad, "no loopback listener");
    } else {
        try_ulp(k, lfd, port);
        try_ciphers(k, lfd, port);
        try_option(k, &k->zerocopy_ro, lfd, port, TLS_TX, TLS_1_2_VERSION, TLS_TX_ZEROCOPY_RO,
                   "Linux 5.19");
        try_option(k, &k->rx_no_pad, lfd, port, TLS_RX, TLS_1_3_VERSION, TLS_RX_EXPECT_NO_PAD,
                   "Linux 6.0");
        close(lfd);
    }
    if (k->ulp_available)
        k->cap_net_admin = have_cap_net_admin();
    read_tls_stat(k);
    try_reuseport(k);
    count_cpus(k);
    read_migrate_req(k);
}

void kernel_free(struct kernel_info *k)
{
    free(k->tls_stat);
    k->tls_stat = NULL;
    k->n_tls_stat = 0;
}
