/* exitpath.c — the ways a process ends or replaces itself that skip the
 * library's destructor, hooked so that an active process still writes its
 * record:
 * - return from main: __libc_start_main is given a main that notes the
 *   value main returns (glibc then calls exit internally), for the same
 *   "exit N" in the destructor's record;
 * - exit(status): nothing written here; the status is noted so that the
 *   destructor's record says "exit N" (after the program's atexit handlers,
 *   which may still count);
 * - _exit/_Exit: the usual end of a fork child, and how h2o ends (from a
 *   worker thread, so no destructor runs): the record, then the real call;
 * - quick_exit(status): the status is noted; the record is written by the
 *   library's own at_quick_exit handler, registered at load and so run
 *   after every handler the program registered (which may still count),
 *   just before glibc's internal _exit;
 * - the exec family: the record ("exec") before the image is replaced; if
 *   the exec fails, the process carries on with a fresh record (stats.c).
 * And chroot(), after which the stats file's path means nothing: the file
 * is opened again first if the program had closed it (proftpd closes every
 * fd at start, then chroots its anonymous sessions).
 * glibc's own calls between these (execl -> execve, exit -> _exit) are
 * internal and never come back through here. A vfork() child, which shares
 * our memory, writes nothing (stats.c checks the pid). */
#include "shard/daemonize.h"
#include "shard/execmode.h"
#include "core/libc.h"
#include "stats/stats.h"

#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

extern char **environ;

typedef int (*ks_main_fn)(int, char **, char **);
static ks_main_fn program_main;

static int noting_main(int argc, char **argv, char **envp)
{
    int r = program_main(argc, argv, envp);
    ks_stats_note_exit_status(r);
    return r;
}

/* Both symbol versions of glibc's __libc_start_main (2.2.5, 2.34) are one
 * function, so forwarding to the default one is right for either. */
KS_EXPORT int __libc_start_main(ks_main_fn main_fn, int argc, char **argv, void (*init)(void),
                                void (*fini)(void), void (*rtld_fini)(void), void *stack_end)
{
    program_main = main_fn;
    ks_exec_supervisor_if_asked(); /* exec mode's supervisor never reaches main */
    return ks_libc()->libc_start_main(main_fn ? noting_main : main_fn, argc, argv, init, fini,
                                      rtld_fini, stack_end);
}

KS_EXPORT void exit(int status)
{
    ks_stats_note_exit_status(status);
    ks_daemon_at_exit();
    ks_libc()->exit(status);
    __builtin_unreachable();
}

void ks_exit_as_program(int status)
{
    ks_daemon_at_exit();
    ks_stats_at_exit(status);
    ks_libc()->_exit(status);
    __builtin_unreachable();
}

KS_EXPORT void _exit(int status)
{
    ks_exit_as_program(status);
}

KS_EXPORT void quick_exit(int status)
{
    ks_stats_note_exit_status(status);
    ks_libc()->quick_exit(status);
    __builtin_unreachable();
}

static void record_at_quick_exit(void)
{
    ks_stats_at_destructor();
}

void ks_exitpath_setup(void)
{
    /* Registered before the program's own handlers: run after them. A
     * failure (no memory at load) only loses quick_exit's record. */
    (void)at_quick_exit(record_at_quick_exit);
}

KS_EXPORT int chroot(const char *path)
{
    ks_stats_keep_file();
    return ks_libc()->chroot(path);
}

KS_EXPORT void _Exit(int status)
{
    ks_stats_at_exit(status);
    ks_libc()->_exit(status);
    __builtin_unreachable();
}

KS_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
    ks_stats_at_exec();
    return ks_libc()->execve(path, argv, envp);
}

KS_EXPORT int execv(const char *path, char *const argv[])
{
    ks_stats_at_exec();
    return ks_libc()->execv(path, argv);
}

KS_EXPORT int execvp(const char *file, char *const argv[])
{
    ks_stats_at_exec();
    return ks_libc()->execvp(file, argv);
}

KS_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
    ks_stats_at_exec();
    return ks_libc()->execvpe(file, argv, envp);
}

KS_EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
    ks_stats_at_exec();
    return ks_libc()->fexecve(fd, argv, envp);
}

KS_EXPORT int execveat(int dirfd, const char *path, char *const argv[], char *const envp[],
                       int flags)
{
    if (!ks_libc()->execveat) {
        errno = ENOSYS;
        return -1;
    }
    ks_stats_at_exec();
    return ks_libc()->execveat(dirfd, path, argv, envp, flags);
}

/* execl, execlp, execle: the arguments into an array on the stack, then
 * the vector call; the list is read up to its NULL, as glibc reads it. */
static size_t count_args(va_list ap)
{
    size_t n = 1; /* arg0 */
    while (va_arg(ap, const char *))
        n++;
    return n + 1; /* and the NULL */
}

#define COLLECT_ARGS(argv, n, arg0)                                                                \
    do {                                                                                           \
        va_list ap_;                                                                               \
        va_start(ap_, arg0);                                                                       \
        (argv)[0] = (char *)(arg0);                                                                \
        for (size_t i_ = 1; i_ < (n); i_++)                                                        \
            (argv)[i_] = va_arg(ap_, char *);                                                      \
        va_end(ap_);                                                                               \
    } while (0)

KS_EXPORT int execl(const char *path, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    size_t n = count_args(ap);
    va_end(ap);
    char *argv[n];
    COLLECT_ARGS(argv, n, arg);
    ks_stats_at_exec();
    return ks_libc()->execve(path, argv, environ);
}

KS_EXPORT int execlp(const char *file, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    size_t n = count_args(ap);
    va_end(ap);
    char *argv[n];
    COLLECT_ARGS(argv, n, arg);
    ks_stats_at_exec();
    return ks_libc()->execvp(file, argv);
}

KS_EXPORT int execle(const char *path, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    size_t n = count_args(ap);
    va_end(ap);
    char *argv[n];
    COLLECT_ARGS(argv, n, arg);
    va_start(ap, arg);
    for (size_t i = 1; i < n; i++)
        (void)va_arg(ap, char *); /* the arguments and their NULL */
    char *const *envp = va_arg(ap, char *const *);
    va_end(ap);
    ks_stats_at_exec();
    return ks_libc()->execve(path, argv, envp);
}
