/* libc.c — libc's functions behind every hook, resolved in one place: the
 * definition after this library (dlsym(RTLD_NEXT)). Every call the library
 * makes to a function it also hooks goes through this table, never the bare
 * name (which would bind to the library's own hook). */
#include "core/libc.h"
#include "core/log.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

struct ks_libc ks_libc_table;
static int libc_ready; /* atomic */

/* ---- what stands in for a function libc does not have ----
 *
 * glibc has had every function of the table since 2.2.5 (execveat since
 * 2.34, which is optional), so on glibc none of this runs. Elsewhere the
 * library must still never abort inside the program: a missing function is
 * reported once, and the hook calls the system call itself where there is
 * one, or fails with ENOSYS (the signal()-like calls: SIG_ERR). */

static int no_int(void)
{
    errno = ENOSYS;
    return -1;
}

static void *no_ptr(void)
{
    return NULL;
}

static ks_sighandler_t no_signal(int sig, ks_sighandler_t h)
{
    (void)sig, (void)h;
    errno = ENOSYS;
    return SIG_ERR;
}

static long sys_bind(int fd, const struct sockaddr *a, socklen_t n)
{
    return syscall(SYS_bind, fd, a, n);
}
static long sys_listen(int fd, int b)
{
    return syscall(SYS_listen, fd, b);
}
static long sys_accept(int fd, struct sockaddr *a, socklen_t *n)
{
    return syscall(SYS_accept4, fd, a, n, 0);
}
static long sys_accept4(int fd, struct sockaddr *a, socklen_t *n, int f)
{
    return syscall(SYS_accept4, fd, a, n, f);
}
static long sys_sendfile(int o, int i, off_t *off, size_t n)
{
    return syscall(SYS_sendfile, o, i, off, n);
}
static long sys_write(int fd, const void *b, size_t n)
{
    return syscall(SYS_write, fd, b, n);
}
static long sys_writev(int fd, const struct iovec *v, int c)
{
    return syscall(SYS_writev, fd, v, c);
}
static long sys_send(int fd, const void *b, size_t n, int f)
{
    return syscall(SYS_sendto, fd, b, n, f, NULL, 0);
}
static long sys_sendto(int fd, const void *b, size_t n, int f, const struct sockaddr *a,
                       socklen_t l)
{
    return syscall(SYS_sendto, fd, b, n, f, a, l);
}
static long sys_sendmsg(int fd, const struct msghdr *m, int f)
{
    return syscall(SYS_sendmsg, fd, m, f);
}
static long sys_read(int fd, void *b, size_t n)
{
    return syscall(SYS_read, fd, b, n);
}
static long sys_readv(int fd, const struct iovec *v, int c)
{
    return syscall(SYS_readv, fd, v, c);
}
static long sys_recv(int fd, void *b, size_t n, int f)
{
    return syscall(SYS_recvfrom, fd, b, n, f, NULL, NULL);
}
static long sys_recvfrom(int fd, void *b, size_t n, int f, struct sockaddr *a, socklen_t *l)
{
    return syscall(SYS_recvfrom, fd, b, n, f, a, l);
}
static long sys_recvmsg(int fd, struct msghdr *m, int f)
{
    return syscall(SYS_recvmsg, fd, m, f);
}
/* The _chk variants' check (n within the buffer) is glibc's; without them
 * the call is made unchecked. */
static long sys_read_chk(int fd, void *b, size_t n, size_t cap)
{
    (void)cap;
    return syscall(SYS_read, fd, b, n);
}
static long sys_recv_chk(int fd, void *b, size_t n, size_t cap, int f)
{
    (void)cap;
    return syscall(SYS_recvfrom, fd, b, n, f, NULL, NULL);
}
static long sys_recvfrom_chk(int fd, void *b, size_t n, size_t cap, int f, struct sockaddr *a,
                             socklen_t *l)
{
    (void)cap;
    return syscall(SYS_recvfrom, fd, b, n, f, a, l);
}
static long sys_execve(const char *p, char *const a[], char *const e[])
{
    return syscall(SYS_execve, p, a, e);
}
static long sys_execv(const char *p, char *const a[])
{
    return syscall(SYS_execve, p, a, environ);
}
static long sys_chroot(const char *p)
{
    return syscall(SYS_chroot, p);
}
static long sys_getppid(void)
{
    return syscall(SYS_getppid);
}
static void sys_exit(int status)
{
    for (;;)
        syscall(SYS_exit_group, status);
}

/* __libc_start_main itself missing: main is run, as it would have been. */
static int run_main(int (*main_fn)(int, char **, char **), int argc, char **argv,
                    void (*init)(void), void (*fini)(void), void (*rtld_fini)(void),
                    void *stack_end)
{
    (void)init, (void)fini, (void)rtld_fini, (void)stack_end;
    sys_exit(main_fn(argc, argv, environ));
    return 0;
}

static void *need(const char *name, void *instead)
{
    void *p = dlsym(RTLD_NEXT, name);
    if (!p) {
        static const char msg[] = "ktlsshim: libc has no function the library hooks; "
                                  "that hook makes the system call itself or fails with ENOSYS\n";
        static int said;
        if (!__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
            ks_log_raw(msg, sizeof msg - 1);
        p = instead;
    }
    return p;
}

const struct ks_libc *ks_libc(void)
{
    if (__atomic_load_n(&libc_ready, __ATOMIC_ACQUIRE))
        return &ks_libc_table;
    KS_SAVE_ERRNO;
    struct ks_libc l;
    l.bind = need("bind", (void *)sys_bind);
    l.listen = need("listen", (void *)sys_listen);
    l.accept = need("accept", (void *)sys_accept);
    l.accept4 = need("accept4", (void *)sys_accept4);
    l.sendfile = need("sendfile", (void *)sys_sendfile);
    l.sendfile64 = need("sendfile64", (void *)sys_sendfile);
    l.sigaction = need("sigaction", (void *)no_int);
    l.signal = need("signal", (void *)no_signal);
    l.bsd_signal = need("bsd_signal", (void *)no_signal);
    l.ssignal = need("ssignal", (void *)no_signal);
    l.sysv_signal = need("sysv_signal", (void *)no_signal);
    l.sigset = need("sigset", (void *)no_signal);
    l.siginterrupt = need("siginterrupt", (void *)no_int);
    l.libc_start_main = need("__libc_start_main", (void *)run_main);
    l.exit = need("exit", (void *)sys_exit);
    l._exit = need("_exit", (void *)sys_exit);
    l.quick_exit = need("quick_exit", (void *)sys_exit);
    l.execve = need("execve", (void *)sys_execve);
    l.execv = need("execv", (void *)sys_execv);
    l.execvp = need("execvp", (void *)no_int);
    l.execvpe = need("execvpe", (void *)no_int);
    l.fexecve = need("fexecve", (void *)no_int);
    l.execveat = dlsym(RTLD_NEXT, "execveat"); /* glibc 2.34+ */
    l.write = need("write", (void *)sys_write);
    l.writev = need("writev", (void *)sys_writev);
    l.send = need("send", (void *)sys_send);
    l.sendto = need("sendto", (void *)sys_sendto);
    l.sendmsg = need("sendmsg", (void *)sys_sendmsg);
    l.read = need("read", (void *)sys_read);
    l.readv = need("readv", (void *)sys_readv);
    l.recv = need("recv", (void *)sys_recv);
    l.recvfrom = need("recvfrom", (void *)sys_recvfrom);
    l.recvmsg = need("recvmsg", (void *)sys_recvmsg);
    l.read_chk = need("__read_chk", (void *)sys_read_chk);
    l.recv_chk = need("__recv_chk", (void *)sys_recv_chk);
    l.recvfrom_chk = need("__recvfrom_chk", (void *)sys_recvfrom_chk);
    l.daemon = need("daemon", (void *)no_int);
    l.chroot = need("chroot", (void *)sys_chroot);
    l.getppid = need("getppid", (void *)sys_getppid);
    l.dlopen = need("dlopen", (void *)no_ptr);
    l.dlmopen = need("dlmopen", (void *)no_ptr);
    ks_libc_table = l;
    __atomic_store_n(&libc_ready, 1, __ATOMIC_RELEASE);
    KS_RESTORE_ERRNO;
    return &ks_libc_table;
}
