/* ktls-probe: tells, before ktlsshim is deployed, what this machine and a
 * program's libssl can do for kernel TLS, with the reason for every "no".
 * See docs/probe.md. */
#include "probe.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: ktls-probe [--json] [--program PATH]\n"
    "       ktls-probe --stats PID [--prometheus]\n"
    "\n"
    "Tells what this machine and a libssl can do for kernel TLS (kTLS),\n"
    "trying everything for real on loopback connections of its own.\n"
    "\n"
    "  --program PATH  probe the libssl that PATH would load (a name without\n"
    "                  a slash is looked up in $PATH); default: libssl.so.3\n"
    "  --json          print one JSON object instead of text\n"
    "  --stats PID     the live counters of a process under ktlsshim (root);\n"
    "                  a supervisor's: every worker and their sum\n"
    "  --prometheus    with --stats: Prometheus text format (node_exporter's\n"
    "                  textfile collector), the kernel's tls_stat included\n"
    "  -h, --help      print this help and exit\n"
    "\n"
    "Exit status: 0 kTLS usable (tls ULP available and AES-GCM-128 TX\n"
    "accepted; with --program, the program also links libssl), 1 not usable,\n"
    "2 bad usage.\n";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "ktls-probe: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n%s", usage_text);
    return EXIT_USAGE;
}

/* A name without a slash is searched in $PATH, like a shell would. */
static bool find_in_path(const char *name, char *out, size_t size)
{
    const char *path = getenv("PATH");
    char *copy, *save = NULL;
    bool found = false;

    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";
    copy = strdup(path);
    if (!copy)
        return false;
    for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        struct stat st;

        bprintf(out, size, "%s/%s", *d ? d : ".", name);
        if (stat(out, &st) == 0 && S_ISREG(st.st_mode) && access(out, X_OK) == 0) {
            found = true;
            break;
        }
    }
    free(copy);
    return found;
}

static void decide(struct verdict *v, const struct kernel_info *k, const struct ssl_info *si)
{
    const struct try_result *tx12 = &k->cipher[0][0][0], *tx13 = &k->cipher[0][1][0];
    bool kernel_ok = k->ulp_available && (tx12->ok == TRI_YES || tx13->ok == TRI_YES);

    memset(v, 0, sizeof(*v));
    if (!k->ulp_available) {
        bprintf(v->reason, sizeof(v->reason), "kernel has no tls ULP (likely cause: %s)",
                k->cause_text);
    } else if (tx12->ok != TRI_YES && tx13->ok != TRI_YES) {
        bprintf(v->reason, sizeof(v->reason),
                "kernel refused AES-GCM-128 TX (TLS 1.2: %s, TLS 1.3: %s)", tx12->why, tx13->why);
    } else if (si->from_program && !si->program_links_libssl) {
        bprintf(v->reason, sizeof(v->reason), "%s %s: nothing for ktlsshim to switch to kTLS",
                si->program, si->program_note);
    } else {
        v->usable = true;
        bprintf(v->reason, sizeof(v->reason), "tls ULP available, AES-GCM-128 TX accepted");
    }

    /* What libssl found adds a note, not a different verdict: the kernel
     * side is what the shim needs. */
    if (si->from_program && !si->program_links_libssl) {
        if (!kernel_ok)
            bprintf(v->note, sizeof(v->note), "also, %s %s", si->program, si->program_note);
        return;
    }
    if (!si->loaded)
        bprintf(v->note, sizeof(v->note), "libssl not loaded: %s",
                si->load_error[0] ? si->load_error : "?");
    else if (si->setup_error[0])
        bprintf(v->note, sizeof(v->note), "libssl not tested: %s", si->setup_error);
    else if (si->ktls_built == TRI_NO)
        bprintf(v->note, sizeof(v->note), "%s was built without kTLS", si->path);
    else if (si->ktls_built == TRI_YES && k->ulp_available &&
             !(si->hs[0].client_tx || si->hs[1].client_tx))
        bprintf(v->note, sizeof(v->note), "libssl is built with kTLS but did not engage TX here");
}

int main(int argc, char **argv)
{
    bool json = false, prometheus = false;
    const char *program = NULL;
    long stats_pid = 0;
    struct kernel_info *k;
    struct netif_list nl;
    struct ssl_info *si;
    struct verdict v;
    int status;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];

        if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage_text, stdout);
            return 0;
        } else if (!strcmp(a, "--program")) {
            if (i + 1 >= argc)
                return usage_error("%s needs an argument", a);
            program = argv[++i];
        } else if (!strncmp(a, "--program=", 10)) {
            program = a + 10;
        } else if (!strcmp(a, "--stats")) {
            char *end;
            if (i + 1 >= argc)
                return usage_error("%s needs a process id", a);
            errno = 0;
            stats_pid = strtol(argv[++i], &end, 10);
            if (errno || *end || end == argv[i] || stats_pid <= 0 || stats_pid > 4194304)
                return usage_error("--stats %s: not a process id", argv[i]);
        } else if (!strcmp(a, "--prometheus")) {
            prometheus = true;
        } else {
            return usage_error("unknown argument: %s", a);
        }
    }
    if (program && !*program)
        return usage_error("%s", "--program needs a non-empty path");
    if (prometheus && !stats_pid)
        return usage_error("%s", "--prometheus goes with --stats PID");
    if (stats_pid)
        return live_stats_main((pid_t)stats_pid, prometheus);

    si = calloc(1, sizeof(*si));
    k = calloc(1, sizeof(*k));
    if (!si || !k) {
        fprintf(stderr, "ktls-probe: out of memory\n");
        free(si);
        free(k);
        return EXIT_UNUSABLE;
    }
    if (program) {
        struct stat st;

        si->from_program = true;
        if (!strchr(program, '/')) {
            if (!find_in_path(program, si->program, sizeof(si->program))) {
                free(si);
                free(k);
                return usage_error("--program %s: not found in $PATH", program);
            }
        } else {
            strlcpy0(si->program, program, sizeof(si->program));
        }
        if (stat(si->program, &st) < 0) {
            int e = errno;
            char msg[300];

            bprintf(msg, sizeof(msg), "--program %.200s: %s", si->program, strerror(e));
            free(si);
            free(k);
            return usage_error("%s", msg);
        }
        if (!S_ISREG(st.st_mode)) {
            char msg[300];

            bprintf(msg, sizeof(msg), "--program %.200s: not a regular file", si->program);
            free(si);
            free(k);
            return usage_error("%s", msg);
        }
        program_resolve(si);
    }

    kernel_probe(k);
    netif_probe(&nl);
    ssl_probe(si, k);
    decide(&v, k, si);
    status = v.usable ? EXIT_USABLE : EXIT_UNUSABLE;

    if (json)
        report_json(stdout, k, &nl, si, &v, status);
    else
        report_human(stdout, k, &nl, si, &v);
    if (fflush(stdout) != 0)
        status = EXIT_UNUSABLE;

    netif_free(&nl);
    kernel_free(k);
    free(k);
    free(si);
    return status;
}
