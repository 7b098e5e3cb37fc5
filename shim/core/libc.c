/* libc.c — libc's functions behind every hook, resolved in one place: the
 * definition after this library (dlsym(RTLD_NEXT)). Every call the library
 * makes to a function it also hooks goes through this table, never the bare
 * name (which would bind to the library's own hook). */
#include "core/libc.h"
#include "core/log.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct ks_libc ks_libc_table;
static int libc_ready; /* atomic */

static void *need(const char *name)
{
    void *p = dlsym(RTLD_NEXT, name);
    if (!p) {
        static const char msg[] = "ktlsshim: fatal: libc symbol not found\n";
        ks_log_raw(msg, sizeof msg - 1);
        abort();
    }
    return p;
}

const struct ks_libc *ks_libc(void)
{
    if (__atomic_load_n(&libc_ready, __ATOMIC_ACQUIRE))
        return &ks_libc_table;
    KS_SAVE_ERRNO;
    struct ks_libc l;
    l.bind = need("bind");
    l.listen = need("listen");
    l.accept = need("accept");
    l.accept4 = need("accept4");
    l.sendfile = need("sendfile");
    l.sendfile64 = need("sendfile64");
    l.sigaction = need("sigaction");
    l.signal = need("signal");
    l.bsd_signal = need("bsd_signal");
    l.ssignal = need("ssignal");
    l.sysv_signal = need("sysv_signal");
    l.sigset = need("sigset");
    l.siginterrupt = need("siginterrupt");
    l.libc_start_main = need("__libc_start_main");
    l.exit = need("exit");
    l._exit = need("_exit");
    l.quick_exit = need("quick_exit");
    l.execve = need("execve");
    l.execv = need("execv");
    l.execvp = need("execvp");
    l.execvpe = need("execvpe");
    l.fexecve = need("fexecve");
    l.execveat = dlsym(RTLD_NEXT, "execveat"); /* glibc 2.34+ */
    l.write = need("write");
    l.writev = need("writev");
    l.send = need("send");
    l.sendto = need("sendto");
    l.sendmsg = need("sendmsg");
    l.read = need("read");
    l.daemon = need("daemon");
    l.chroot = need("chroot");
    l.getppid = need("getppid");
    ks_libc_table = l;
    __atomic_store_n(&libc_ready, 1, __ATOMIC_RELEASE);
    KS_RESTORE_ERRNO;
    return &ks_libc_table;
}
