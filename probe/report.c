/* Output: aligned "name: value" text in sections, or one JSON object
 * (schema in docs/probe.md). */
#include "probe.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>

#define NAME_WIDTH 24

static const char *const ver_name[2] = {"TLS 1.2", "TLS 1.3"};
static const char *const ver_key[2] = {"tls12", "tls13"};

static const char *cause_code(enum ulp_cause c)
{
    switch (c) {
    case CAUSE_NONE:
        return NULL;
    case CAUSE_NO_CONFIG_TLS:
        return "no_config_tls";
    case CAUSE_MODULE_NOT_LOADED:
        return "module_not_loaded";
    case CAUSE_MODULE_LOAD_FAILED:
        return "module_load_failed";
    case CAUSE_NO_CONFIG_OR_NO_MODULES:
        return "no_config_tls_or_modules_missing";
    case CAUSE_OTHER:
        return "other";
    }
    return "other";
}

/* Why kTLS was or was not engaged for one direction of one handshake. */
static bool hs_dir(const struct ssl_info *si, const struct kernel_info *k, int v, bool tx,
                   char *why, size_t size)
{
    const struct hs_result *h = &si->hs[v];
    bool c = tx ? h->client_tx : h->client_rx;
    bool s = tx ? h->server_tx : h->server_rx;
    int calls = tx ? h->tx_calls : h->rx_calls;
    int ok = tx ? h->tx_ok : h->rx_ok;
    int err = tx ? h->tx_errno : h->rx_errno;

    if (c || s) {
        bprintf(why, size, "%s", c && s ? "client and server" : c ? "client only" : "server only");
        return true;
    }
    if (!h->ok)
        bprintf(why, size, "handshake failed");
    else if (!k->ulp_available)
        bprintf(why, size, "kernel has no tls");
    else if (si->interposer_ok && h->ulp_calls > h->ulp_ok && h->ulp_errno)
        bprintf(why, size, "kernel refused the tls ULP: %s", errname(h->ulp_errno));
    else if (si->interposer_ok && calls > ok && err)
        bprintf(why, size, "kernel refused %s: %s", tx ? "TLS_TX" : "TLS_RX", errname(err));
    else if (si->interposer_ok && calls == 0)
        bprintf(why, size, "libssl did not ask the kernel for it%s",
                (!tx && v == 1 && (si->version_num >> 20) == 0x300)
                    ? "; OpenSSL 3.0 does no kTLS RX for TLS 1.3"
                    : "");
    else
        bprintf(why, size, "not engaged");
    return false;
}

/* ---- text ---------------------------------------------------------------- */

static void kv(FILE *f, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void kv(FILE *f, const char *name, const char *fmt, ...)
{
    va_list ap;
    int n = fprintf(f, "  %s:", name);

    fprintf(f, "%*s", n < NAME_WIDTH + 3 ? NAME_WIDTH + 3 - n : 1, "");
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
}

static const char *tri_text(const struct try_result *r, char *buf, size_t size)
{
    if (r->ok == TRI_YES)
        bprintf(buf, size, "yes");
    else if (r->ok == TRI_NO)
        bprintf(buf, size, "no (%s)", r->why);
    else
        bprintf(buf, size, "not tried (%s)", r->why);
    return buf;
}

/* A cipher try in a table cell: the errno alone, explained once below. */
static const char *cipher_text(const struct try_result *r, char *buf, size_t size)
{
    if (r->ok == TRI_NO && r->err)
        bprintf(buf, size, "no (%s)", errname(r->err));
    else
        tri_text(r, buf, size);
    return buf;
}

static const char *feature_text(const struct feature_state *st, const char *name,
                                const char *ifname, char *buf, size_t size)
{
    if (!st->known)
        bprintf(buf, size, "unknown to this kernel");
    else if (st->active)
        bprintf(buf, size, "on%s", st->fixed ? " [fixed]" : "");
    else if (st->fixed)
        bprintf(buf, size, "off [fixed]");
    else
        bprintf(buf, size, "off (can be turned on: ethtool -K %s %s on)", ifname, name);
    return buf;
}

void report_human(FILE *f, const struct kernel_info *k, const struct netif_list *nl,
                  const struct ssl_info *si, const struct verdict *v)
{
    char a[200], b[200], c[200], d[200];
    bool any_fixed_off = false;

    fprintf(f, "Kernel\n");
    kv(f, "release", "%s", k->release);
    kv(f, "version", "%s", k->version);
    if (k->ulp_available) {
        kv(f, "tls ULP", "yes");
    } else {
        kv(f, "tls ULP", "no (setsockopt TCP_ULP \"tls\" on a loopback socket: %s)",
           errname(k->ulp_errno));
        kv(f, "likely cause", "%s", k->cause_text);
        for (int i = 0; i < k->n_evidence; i++)
            kv(f, "evidence", "%s", k->evidence[i]);
    }
    if (!k->ulp_available && k->cap_net_admin != TRI_UNKNOWN)
        kv(f, "CAP_NET_ADMIN", "%s",
           k->cap_net_admin == TRI_YES ? "yes"
                                       : "no (the kernel will not load the tls module on demand)");

    fprintf(f, "\nkTLS ciphers (TLS_TX/TLS_RX set with throwaway keys)\n");
    if (!k->ciphers_tried) {
        kv(f, "all", "not tried (%s)",
           k->ulp_available ? "no loopback connection" : "kernel has no tls ULP");
    } else {
        int seen[2] = {0, 0}; /* ENOENT, EINVAL */

        for (int i = 0; i < N_CIPHERS; i++) {
            const struct try_result(*r)[2] = k->cipher[i];
            char line[600];

            bprintf(line, sizeof(line), "1.2 TX %s, RX %s; 1.3 TX %s, RX %s",
                    cipher_text(&r[0][0], a, sizeof(a)), cipher_text(&r[0][1], b, sizeof(b)),
                    cipher_text(&r[1][0], c, sizeof(c)), cipher_text(&r[1][1], d, sizeof(d)));
            kv(f, cipher_table[i].name, "%s", line);
            for (int ver = 0; ver < 2; ver++)
                for (int t = 0; t < 2; t++) {
                    seen[0] |= r[ver][t].ok == TRI_NO && r[ver][t].err == ENOENT;
                    seen[1] |= r[ver][t].ok == TRI_NO && r[ver][t].err == EINVAL;
                }
        }
        if (seen[0])
            kv(f, "ENOENT",
               "the kernel crypto API has no such AEAD (not built, or module not loaded)");
        if (seen[1])
            kv(f, "EINVAL", "this kernel's tls does not take that cipher for that TLS version");
    }

    fprintf(f, "\nkTLS options\n");
    kv(f, "TLS_TX_ZEROCOPY_RO", "%s", tri_text(&k->zerocopy_ro, a, sizeof(a)));
    kv(f, "TLS_RX_EXPECT_NO_PAD", "%s", tri_text(&k->rx_no_pad, a, sizeof(a)));
    if (k->tls_stat_present) {
        kv(f, "/proc/net/tls_stat", "present");
        for (size_t i = 0; i < k->n_tls_stat; i++)
            kv(f, k->tls_stat[i].name, "%llu", k->tls_stat[i].value);
    } else {
        kv(f, "/proc/net/tls_stat", "absent (%s)",
           k->ulp_available ? errname(k->tls_stat_errno) : "tls not in the kernel");
    }

    fprintf(f, "\nTLS offload (ethtool features via SIOCETHTOOL)\n");
    if (nl->err)
        kv(f, "interfaces", "unknown (if_nameindex: %s)", errname(nl->err));
    for (size_t i = 0; i < nl->n; i++) {
        const struct netif_info *ni = &nl->v[i];
        char line[700];

        if (ni->err) {
            kv(f, ni->name, "unknown (%s: %s)", ni->err_step, errname(ni->err));
            continue;
        }
        size_t off = 0;
        for (int j = 0; j < N_TLS_FEATURES; j++) {
            const struct feature_state *st = &ni->feat[j];

            any_fixed_off |= st->known && st->fixed && !st->active;
            off += (size_t)bprintf(line + off, sizeof(line) - off, "%s%s %s", j ? ", " : "",
                                   tls_feature_names[j],
                                   feature_text(st, tls_feature_names[j], ni->name, a, sizeof(a)));
            if (off >= sizeof(line))
                break;
        }
        kv(f, ni->name, "%s", line);
    }
    if (any_fixed_off)
        kv(f, "note", "off [fixed]: the driver cannot offload TLS (kTLS runs in software)");

    fprintf(f, "\nSharding\n");
    if (k->reuseport.ok == TRI_YES)
        kv(f, "SO_REUSEPORT", "yes (two listeners bound to 127.0.0.1:%u)", k->reuseport_port);
    else
        kv(f, "SO_REUSEPORT", "%s", tri_text(&k->reuseport, a, sizeof(a)));
    kv(f, "online CPUs", "%ld (%ld usable by this process, %ld configured)", k->cpus_online,
       k->cpus_usable, k->cpus_configured);
    if (k->migrate_req < 0)
        kv(f, "tcp_migrate_req",
           "absent (%s: kernel older than 5.14; a closing"
           " listener's queued connections are reset)",
           errname(k->migrate_req_errno));
    else if (k->migrate_req == 0)
        kv(f, "tcp_migrate_req",
           "0 (off: a closing listener's queued connections"
           " are reset)");
    else
        kv(f, "tcp_migrate_req",
           "%d (on: a closing listener's queued connections"
           " move to another listener)",
           k->migrate_req);

    fprintf(f, "\nlibssl\n");
    if (si->from_program) {
        kv(f, "program", "%s", si->program);
        if (si->program_links_libssl)
            kv(f, "links", "%s", si->program_note);
    }
    if (si->from_program && !si->program_links_libssl) {
        kv(f, "libssl", "none: %s", si->program_note);
    } else if (!si->loaded) {
        kv(f, "libssl", "not loaded (%s)", si->load_error);
    } else {
        kv(f, "path", "%s", si->path);
        kv(f, "version", "%s", si->version[0] ? si->version : "unknown");
        if (si->setup_error[0]) {
            kv(f, "built with kTLS", "unknown (%s)", si->setup_error);
        } else {
            kv(f, "built with kTLS", "%s%s%s%s",
               si->ktls_built == TRI_YES  ? "yes"
               : si->ktls_built == TRI_NO ? "no"
                                          : "",
               si->ktls_built == TRI_UNKNOWN ? "" : " (", si->ktls_built_how,
               si->ktls_built == TRI_UNKNOWN ? "" : ")");
            for (int i = 0; i < 2; i++) {
                const struct hs_result *h = &si->hs[i];
                char name[40];

                bprintf(name, sizeof(name), "%s handshake", ver_name[i]);
                if (!h->ok) {
                    kv(f, name, "failed (%s)", h->error);
                } else {
                    bprintf(a, sizeof(a), "%s", h->data_ok ? "data exchanged" : h->data_error);
                    kv(f, name, "ok (%s, %s)", h->cipher, a);
                }
                for (int t = 0; t < 2; t++) {
                    bool yes = hs_dir(si, k, i, t == 0, b, sizeof(b));

                    bprintf(name, sizeof(name), "%s kTLS %s", ver_name[i], t == 0 ? "TX" : "RX");
                    kv(f, name, "%s (%s)", yes ? "yes" : "no", b);
                }
            }
        }
    }

    fprintf(f, "\n");
    kv(f, "verdict", "kTLS %s: %s", v->usable ? "usable" : "not usable", v->reason);
    if (v->note[0])
        kv(f, "note", "%s", v->note);
}

/* ---- JSON ---------------------------------------------------------------- */

struct jw {
    FILE *f;
    int depth;
    bool comma[32];
};

static void jw_raw_str(struct jw *w, const char *s)
{
    fputc('"', w->f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':
            fputs("\\\"", w->f);
            break;
        case '\\':
            fputs("\\\\", w->f);
            break;
        case '\n':
            fputs("\\n", w->f);
            break;
        case '\t':
            fputs("\\t", w->f);
            break;
        case '\r':
            fputs("\\r", w->f);
            break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                fprintf(w->f, "\\u%04x", *p);
            else
                fputc(*p, w->f);
        }
    }
    fputc('"', w->f);
}

static void jw_key(struct jw *w, const char *key)
{
    if (w->comma[w->depth])
        fputc(',', w->f);
    w->comma[w->depth] = true;
    fprintf(w->f, "\n%*s", w->depth * 2, "");
    if (key) {
        jw_raw_str(w, key);
        fputs(": ", w->f);
    }
}

static void jw_open(struct jw *w, const char *key, char c)
{
    if (w->depth > 0)
        jw_key(w, key);
    fputc(c, w->f);
    w->depth++;
    w->comma[w->depth] = false;
}

static void jw_close(struct jw *w, char c)
{
    bool had = w->comma[w->depth];

    w->depth--;
    if (had)
        fprintf(w->f, "\n%*s", w->depth * 2, "");
    fputc(c, w->f);
}

static void jw_str(struct jw *w, const char *key, const char *v)
{
    jw_key(w, key);
    if (v)
        jw_raw_str(w, v);
    else
        fputs("null", w->f);
}

/* empty string as null */
static void jw_stre(struct jw *w, const char *key, const char *v)
{
    jw_str(w, key, v && *v ? v : NULL);
}

static void jw_int(struct jw *w, const char *key, long long v)
{
    jw_key(w, key);
    fprintf(w->f, "%lld", v);
}

static void jw_bool(struct jw *w, const char *key, bool v)
{
    jw_key(w, key);
    fputs(v ? "true" : "false", w->f);
}

static void jw_null(struct jw *w, const char *key)
{
    jw_key(w, key);
    fputs("null", w->f);
}

static void jw_tri(struct jw *w, const char *key, enum tri v)
{
    if (v == TRI_UNKNOWN)
        jw_null(w, key);
    else
        jw_bool(w, key, v == TRI_YES);
}

static void jw_errno(struct jw *w, const char *key, int err)
{
    if (err)
        jw_str(w, key, errname(err));
    else
        jw_null(w, key);
}

static void jw_try(struct jw *w, const char *key, const char *okname, const struct try_result *r)
{
    jw_open(w, key, '{');
    jw_tri(w, okname, r->ok);
    jw_errno(w, "errno", r->ok == TRI_NO ? r->err : 0);
    jw_stre(w, "reason", r->ok == TRI_YES ? NULL : r->why);
    jw_close(w, '}');
}

static void jw_calls(struct jw *w, const char *key, int calls, int ok, int err)
{
    jw_open(w, key, '{');
    jw_int(w, "calls", calls);
    jw_int(w, "ok", ok);
    jw_errno(w, "errno", calls > ok ? err : 0);
    jw_close(w, '}');
}

void report_json(FILE *f, const struct kernel_info *k, const struct netif_list *nl,
                 const struct ssl_info *si, const struct verdict *v, int status)
{
    struct jw w = {.f = f, .depth = 0};
    bool diag = !k->ulp_available;
    char why[200];

    jw_open(&w, NULL, '{');
    jw_str(&w, "probe_version", PROBE_VERSION);

    jw_open(&w, "kernel", '{');
    jw_str(&w, "release", k->release);
    jw_str(&w, "version", k->version);
    jw_str(&w, "machine", k->machine);
    jw_close(&w, '}');

    jw_open(&w, "tls_ulp", '{');
    jw_bool(&w, "available", k->ulp_available);
    jw_errno(&w, "errno", k->ulp_available ? 0 : k->ulp_errno);
    jw_str(&w, "cause", cause_code(k->cause));
    jw_stre(&w, "cause_text", k->ulp_available ? NULL : k->cause_text);
    jw_open(&w, "evidence", '[');
    for (int i = 0; i < k->n_evidence; i++)
        jw_str(&w, NULL, k->evidence[i]);
    jw_close(&w, ']');
    if (diag && k->avail_ulp_read) {
        char tmp[sizeof(k->avail_ulp)];

        jw_open(&w, "tcp_available_ulp", '[');
        strlcpy0(tmp, k->avail_ulp, sizeof(tmp));
        for (char *save = NULL, *t = strtok_r(tmp, " ", &save); t; t = strtok_r(NULL, " ", &save))
            jw_str(&w, NULL, t);
        jw_close(&w, ']');
    } else {
        jw_null(&w, "tcp_available_ulp");
    }
    if (diag)
        jw_bool(&w, "module_support", k->module_support);
    else
        jw_null(&w, "module_support");
    jw_stre(&w, "tls_module", diag ? k->tls_module_path : NULL);
    if (diag)
        jw_bool(&w, "modules_builtin_lists_tls", k->builtin_listed);
    else
        jw_null(&w, "modules_builtin_lists_tls");
    jw_stre(&w, "kernel_config_tls", diag ? k->config_tls : NULL);
    jw_stre(&w, "kernel_config_source", diag ? k->config_source : NULL);
    jw_tri(&w, "cap_net_admin", k->cap_net_admin);
    jw_close(&w, '}');

    jw_bool(&w, "ciphers_tried", k->ciphers_tried);
    jw_open(&w, "ciphers", '[');
    for (int i = 0; i < N_CIPHERS; i++) {
        jw_open(&w, NULL, '{');
        jw_str(&w, "name", cipher_table[i].name);
        jw_int(&w, "id", cipher_table[i].id);
        for (int ver = 0; ver < 2; ver++) {
            jw_open(&w, ver_key[ver], '{');
            jw_try(&w, "tx", "accepted", &k->cipher[i][ver][0]);
            jw_try(&w, "rx", "accepted", &k->cipher[i][ver][1]);
            jw_close(&w, '}');
        }
        jw_close(&w, '}');
    }
    jw_close(&w, ']');

    jw_open(&w, "options", '{');
    jw_try(&w, "tx_zerocopy_ro", "supported", &k->zerocopy_ro);
    jw_try(&w, "rx_expect_no_pad", "supported", &k->rx_no_pad);
    jw_close(&w, '}');

    jw_open(&w, "tls_stat", '{');
    jw_bool(&w, "present", k->tls_stat_present);
    jw_open(&w, "counters", '{');
    for (size_t i = 0; i < k->n_tls_stat; i++)
        jw_int(&w, k->tls_stat[i].name, (long long)k->tls_stat[i].value);
    jw_close(&w, '}');
    jw_close(&w, '}');

    jw_open(&w, "interfaces", '[');
    for (size_t i = 0; i < nl->n; i++) {
        const struct netif_info *ni = &nl->v[i];

        jw_open(&w, NULL, '{');
        jw_str(&w, "name", ni->name);
        jw_int(&w, "index", ni->index);
        if (ni->err) {
            bprintf(why, sizeof(why), "%s: %s", ni->err_step, errname(ni->err));
            jw_str(&w, "error", why);
            jw_null(&w, "features");
        } else {
            jw_null(&w, "error");
            jw_open(&w, "features", '{');
            for (int j = 0; j < N_TLS_FEATURES; j++) {
                const struct feature_state *st = &ni->feat[j];

                if (!st->known) {
                    jw_null(&w, tls_feature_names[j]);
                    continue;
                }
                jw_open(&w, tls_feature_names[j], '{');
                jw_bool(&w, "active", st->active);
                jw_bool(&w, "fixed", st->fixed);
                jw_bool(&w, "requested", st->requested);
                jw_close(&w, '}');
            }
            jw_close(&w, '}');
        }
        jw_close(&w, '}');
    }
    jw_close(&w, ']');

    jw_try(&w, "reuseport", "supported", &k->reuseport);
    jw_int(&w, "cpus", k->cpus_online);
    jw_int(&w, "cpus_configured", k->cpus_configured);
    if (k->cpus_usable >= 0)
        jw_int(&w, "cpus_usable", k->cpus_usable);
    else
        jw_null(&w, "cpus_usable");
    if (k->migrate_req >= 0)
        jw_int(&w, "tcp_migrate_req", k->migrate_req);
    else
        jw_null(&w, "tcp_migrate_req");

    jw_open(&w, "libssl", '{');
    jw_stre(&w, "program", si->from_program ? si->program : NULL);
    if (si->from_program)
        jw_bool(&w, "program_links_libssl", si->program_links_libssl);
    else
        jw_null(&w, "program_links_libssl");
    jw_stre(&w, "program_note", si->from_program ? si->program_note : NULL);
    jw_bool(&w, "loaded", si->loaded);
    jw_stre(&w, "path", si->loaded ? si->path : NULL);
    jw_stre(&w, "version", si->version);
    if (si->version_num)
        jw_int(&w, "version_number", (long long)si->version_num);
    else
        jw_null(&w, "version_number");
    jw_stre(&w, "error", si->load_error[0] ? si->load_error : si->setup_error);
    bool tested = si->loaded && !si->setup_error[0];
    jw_tri(&w, "ktls_built", tested ? si->ktls_built : TRI_UNKNOWN);
    jw_stre(&w, "ktls_built_reason", tested ? si->ktls_built_how : NULL);
    if (!tested) {
        jw_null(&w, "handshakes");
    } else {
        jw_open(&w, "handshakes", '{');
        for (int i = 0; i < 2; i++) {
            const struct hs_result *h = &si->hs[i];

            jw_open(&w, ver_key[i], '{');
            jw_bool(&w, "ok", h->ok);
            jw_stre(&w, "error", h->error);
            jw_stre(&w, "protocol", h->protocol);
            jw_stre(&w, "cipher", h->cipher);
            jw_bool(&w, "data_exchanged", h->data_ok);
            for (int t = 0; t < 2; t++) {
                bool yes = hs_dir(si, k, i, t == 0, why, sizeof(why));

                jw_open(&w, t == 0 ? "tx" : "rx", '{');
                jw_bool(&w, "engaged", yes);
                jw_bool(&w, "client", t == 0 ? h->client_tx : h->client_rx);
                jw_bool(&w, "server", t == 0 ? h->server_tx : h->server_rx);
                jw_str(&w, "reason", why);
                jw_close(&w, '}');
            }
            if (si->interposer_ok) {
                jw_open(&w, "kernel_calls", '{');
                jw_calls(&w, "tcp_ulp", h->ulp_calls, h->ulp_ok, h->ulp_errno);
                jw_calls(&w, "tls_tx", h->tx_calls, h->tx_ok, h->tx_errno);
                jw_calls(&w, "tls_rx", h->rx_calls, h->rx_ok, h->rx_errno);
                jw_close(&w, '}');
            } else {
                jw_null(&w, "kernel_calls");
            }
            jw_close(&w, '}');
        }
        jw_close(&w, '}');
    }
    jw_close(&w, '}');

    jw_open(&w, "verdict", '{');
    jw_bool(&w, "ktls_usable", v->usable);
    jw_str(&w, "reason", v->reason);
    jw_stre(&w, "note", v->note);
    jw_close(&w, '}');
    jw_int(&w, "exit_status", status);
    jw_close(&w, '}');
    fputc('\n', f);
}
