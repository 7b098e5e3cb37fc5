/* startstate.c — what the program was started with, read when the library
 * loads in a process that may shard, before the program changes it: the
 * fds it inherited, its command line (before a program such as nginx
 * rewrites its argv for ps), and for exec mode its environment, working
 * directory, signal mask and ignored signals, process name and ids. Exec
 * mode starts the supervisor and each worker from it (execmode.c), and a
 * fallback starts the program again unsharded from it (daemonize.c), so
 * that each new image starts as the user's command did. */
#include "shard/startstate.h"
#include "core/config.h"
#include "core/fds.h"
#include "core/libc.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#define START_ENV_MAX (1 << 20)
#define ENV_SUPERVISOR "KTLSSHIM_EXEC_SUPERVISOR"

/* ---- the fallback's: inherited fds, command line ---- */

#define INHERITED_BITS 4096
static uint64_t inherited[INHERITED_BITS / 64];
static bool inherited_known;
static char *start_cmdline; /* NUL-separated, mmap'd */
static size_t start_cmdline_len;

bool ks_fd_was_inherited(int fd)
{
    if (!inherited_known)
        return true; /* unknown: leave it as it is */
    if (fd < 0)
        return false;
    if (fd >= INHERITED_BITS)
        return false;
    return inherited[fd / 64] & (1ULL << (fd % 64));
}

static void note_inherited(int fd, void *arg)
{
    (void)arg;
    if (fd < INHERITED_BITS)
        inherited[fd / 64] |= 1ULL << (fd % 64);
}

static void snapshot_fds(void)
{
    ks_for_each_fd(note_inherited, NULL);
    inherited_known = true;
}

static void snapshot_cmdline(void)
{
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    size_t cap = 1 << 16;
    char *buf = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    size_t len = 0;
    if (buf != MAP_FAILED) {
        ssize_t r;
        while (len < cap && (r = ks_libc()->read(fd, buf + len, cap - len)) > 0)
            len += (size_t)r;
        if (len == 0 || len >= cap) { /* empty, or too long to keep whole */
            munmap(buf, cap);
            buf = NULL;
        }
    } else {
        buf = NULL;
    }
    close(fd);
    start_cmdline = buf;
    start_cmdline_len = buf ? len : 0;
}

bool ks_start_cmdline_kept(void)
{
    return start_cmdline != NULL;
}

char **ks_start_argv(void)
{
    if (!start_cmdline)
        return NULL;
    /* argv: the NUL-separated command line. */
    size_t argc = 0;
    for (size_t i = 0; i < start_cmdline_len; i++)
        argc += start_cmdline[i] == '\0';
    if (start_cmdline[start_cmdline_len - 1] != '\0')
        argc++;
    char **argv = calloc(argc + 1, sizeof *argv);
    if (!argv)
        return NULL;
    size_t a = 0;
    for (size_t i = 0; i < start_cmdline_len && a < argc; a++) {
        argv[a] = start_cmdline + i;
        i += strnlen(start_cmdline + i, start_cmdline_len - i) + 1;
    }
    return argv;
}

/* ---- exec mode's: environment, directory, signals, name, ids ---- */

struct ks_start ks_start;
static char *start_env; /* NUL-separated, mmap'd; NULL if not kept */
static size_t start_env_len;

static void snapshot_env(void)
{
    int fd = open("/proc/self/environ", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    char *buf = mmap(NULL, START_ENV_MAX, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    size_t len = 0;
    if (buf != MAP_FAILED) {
        ssize_t r;
        while (len < START_ENV_MAX && (r = ks_libc()->read(fd, buf + len, START_ENV_MAX - len)) > 0)
            len += (size_t)r;
        if (len >= START_ENV_MAX) {
            munmap(buf, START_ENV_MAX);
            buf = NULL;
            len = 0;
        }
    } else {
        buf = NULL;
    }
    close(fd);
    start_env = buf;
    start_env_len = len;
}

static void snapshot_signals(void)
{
    sigprocmask(SIG_SETMASK, NULL, &ks_start.mask);
    for (int sig = 1; sig < 64 && sig < NSIG; sig++) {
        struct sigaction sa;
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        if (ks_libc()->sigaction(sig, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN)
            ks_start.ignored |= 1ULL << sig;
    }
}

void ks_start_take_comm(const char *v)
{
    const char *c = strchr(v, ':');
    if (c && c[1]) {
        snprintf(ks_start.comm, sizeof ks_start.comm, "%s", c + 1);
        prctl(PR_SET_NAME, ks_start.comm, 0, 0, 0);
    }
}

/* The start environment as a vector, with room for `extra` more entries. */
static char **start_envp(size_t extra, size_t *n_out)
{
    size_t envc = 0;
    for (size_t i = 0; i < start_env_len; i++)
        envc += start_env[i] == '\0';
    char **envp = calloc(envc + extra + 1, sizeof *envp);
    if (!envp)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < start_env_len && k < envc;) {
        char *e = start_env + i;
        i += strnlen(e, start_env_len - i) + 1;
        if (strncmp(e, "KTLSSHIM_EXEC_", 14) != 0)
            envp[k++] = e;
    }
    *n_out = k;
    return envp;
}

char **ks_start_env(size_t extra, size_t *n_out)
{
    return start_env ? start_envp(extra, n_out) : NULL;
}

void ks_start_snapshot(void)
{
    KS_SAVE_ERRNO;
    const struct ks_config *cfg = ks_config();
    if (cfg->shards > 1 && !cfg->in_worker) {
        snapshot_fds();
        snapshot_cmdline();
    }
    if (cfg->shards > 1 && !cfg->in_worker && !getenv(ENV_SUPERVISOR)) {
        snapshot_env();
        if (!getcwd(ks_start.cwd, sizeof ks_start.cwd))
            ks_start.cwd[0] = '\0';
        snapshot_signals();
        ks_start.euid = geteuid();
        ks_start.egid = getegid();
        if (prctl(PR_GET_NAME, ks_start.comm, 0, 0, 0) != 0)
            ks_start.comm[0] = '\0';
    }
    KS_RESTORE_ERRNO;
}
