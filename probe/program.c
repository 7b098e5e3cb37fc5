/* --program: which libssl would that program load? The system's ldd (the
 * dynamic loader in trace mode) answers exactly as the loader would:
 * RPATH/RUNPATH, LD_LIBRARY_PATH, ld.so.cache and indirect dependencies. */
#include "probe.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define LDD_OUT_MAX 65536

static const char *find_ldd(void)
{
    static const char *const cand[] = {"/usr/bin/ldd", "/bin/ldd"};

    for (size_t i = 0; i < sizeof(cand) / sizeof(cand[0]); i++)
        if (access(cand[i], X_OK) == 0)
            return cand[i];
    return NULL;
}

/* Runs ldd on the program; its output (stdout and stderr) goes to out.
 * Returns the exit status, or -1 with errno set. Never waits past the
 * timeout: ldd is killed then. */
static int run_ldd(const char *ldd, const char *program, char *out, size_t size)
{
    int pfd[2];
    size_t got = 0;
    int64_t deadline = now_ms() + LDD_TIMEOUT_MS;
    int status = 0, e;
    bool timed_out = false;
    pid_t pid;

    out[0] = '\0';
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -1;
    pid = fork();
    if (pid < 0) {
        e = errno;
        close(pfd[0]);
        close(pfd[1]);
        errno = e;
        return -1;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);

        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(pfd[1], 1);
        dup2(pfd[1], 2);
        execl(ldd, "ldd", "--", program, (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    for (;;) {
        struct pollfd p = {.fd = pfd[0], .events = POLLIN};
        int left = (int)(deadline - now_ms());
        char sink[512];
        ssize_t r;

        if (left <= 0) {
            kill(pid, SIGKILL);
            timed_out = true;
            break;
        }
        if (poll(&p, 1, left) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (!p.revents)
            continue;
        if (got + 1 < size)
            r = read(pfd[0], out + got, size - 1 - got);
        else
            r = read(pfd[0], sink, sizeof(sink)); /* drain, keep the head */
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (got + 1 < size) {
            got += (size_t)r;
            out[got] = '\0';
        }
    }
    close(pfd[0]);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (timed_out) {
        errno = ETIMEDOUT;
        return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Finds "<prefix>... => PATH (0x...)" in ldd output. Returns 1 with the
 * soname and path, 0 when not listed, -1 when listed as "not found". */
static int ldd_lookup(const char *out, const char *prefix, char *soname, size_t sosz, char *path,
                      size_t psz)
{
    const char *line = out;
    size_t pl = strlen(prefix);

    while (line && *line) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        const char *p = line;

        while (p < line + len && (*p == ' ' || *p == '\t'))
            p++;
        if ((size_t)(line + len - p) > pl && !strncmp(p, prefix, pl)) {
            const char *arrow = strstr(p, " => ");
            size_t sl;

            if (arrow && arrow < line + len) {
                sl = (size_t)(arrow - p);
                bprintf(soname, sosz, "%.*s", (int)sl, p);
                const char *q = arrow + 4;
                const char *qe = q;

                while (qe < line + len && *qe != ' ')
                    qe++;
                if ((size_t)(qe - q) == 3 && !strncmp(q, "not", 3))
                    return -1;
                bprintf(path, psz, "%.*s", (int)(qe - q), q);
                return 1;
            }
        }
        line = end ? end + 1 : NULL;
    }
    return 0;
}

void program_resolve(struct ssl_info *si)
{
    unsigned char magic[4] = {0};
    char soname[128], path[4096];
    char *out;
    const char *ldd;
    int fd, rc;

    si->program_links_libssl = false;
    fd = open(si->program, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, magic, 4) != 4 || memcmp(magic, "\177ELF", 4)) {
        int e = errno;

        if (fd >= 0)
            close(fd);
        if (fd < 0)
            bprintf(si->program_note, sizeof(si->program_note), "cannot read it: %s", errname(e));
        else
            bprintf(si->program_note, sizeof(si->program_note),
                    "not an ELF executable (a script?): no libssl to look at");
        return;
    }
    close(fd);

    ldd = find_ldd();
    if (!ldd) {
        bprintf(si->program_note, sizeof(si->program_note),
                "cannot resolve its libraries: no ldd found");
        return;
    }
    out = malloc(LDD_OUT_MAX);
    if (!out) {
        bprintf(si->program_note, sizeof(si->program_note), "out of memory");
        return;
    }
    rc = run_ldd(ldd, si->program, out, LDD_OUT_MAX);
    if (rc < 0) {
        bprintf(si->program_note, sizeof(si->program_note), "%s failed: %s", ldd, errname(errno));
        goto out;
    }
    if (strstr(out, "not a dynamic executable") || strstr(out, "statically linked")) {
        bprintf(si->program_note, sizeof(si->program_note),
                "statically linked: does not load a libssl (an OpenSSL built"
                " into it cannot be probed)");
        goto out;
    }
    int found = ldd_lookup(out, "libssl.so", soname, sizeof(soname), path, sizeof(path));
    if (found == 0) {
        if (rc != 0) {
            char *nl = strchr(out, '\n');

            if (nl)
                *nl = '\0';
            bprintf(si->program_note, sizeof(si->program_note), "ldd failed (status %d): %.200s",
                    rc, out);
        } else {
            bprintf(si->program_note, sizeof(si->program_note),
                    "does not link libssl (ldd lists no libssl.so)");
        }
        goto out;
    }
    si->program_links_libssl = true;
    if (found < 0) {
        bprintf(si->program_note, sizeof(si->program_note),
                "needs %s, which the loader does not find", soname);
        bprintf(si->load_error, sizeof(si->load_error), "%s: not found by the dynamic loader",
                soname);
        goto out;
    }
    bprintf(si->program_note, sizeof(si->program_note), "%s => %s (ldd)", soname, path);
    strlcpy0(si->requested, path, sizeof(si->requested));
    if (ldd_lookup(out, "libcrypto.so", soname, sizeof(soname), path, sizeof(path)) > 0)
        strlcpy0(si->crypto_requested, path, sizeof(si->crypto_requested));
out:
    free(out);
}
