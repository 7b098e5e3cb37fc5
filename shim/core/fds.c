/* fds.c — walks /proc/self/fd with getdents64 into a stack buffer: no
 * malloc, so it is safe in the supervisor between fork and exec and in a
 * process whose allocator the library must not disturb. Reads small /proc
 * files the same way (the caller's buffer). And tells whether two
 * descriptors are one socket. */
#include "core/fds.h"
#include "core/common.h"
#include "core/libc.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

long ks_read_text(const char *path, char *buf, unsigned long size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || size == 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    size_t got = 0;
    ssize_t r = 0;
    while (got < size - 1 && (r = ks_libc()->read(fd, buf + got, size - 1 - got)) > 0)
        got += (size_t)r;
    close(fd);
    buf[got] = '\0';
    return got == 0 && r < 0 ? -1 : (long)got;
}

const char *ks_proc_stat_fields(int pid, char *buf, unsigned long size)
{
    char path[64];
    if (pid > 0)
        snprintf(path, sizeof path, "/proc/%d/stat", pid);
    else
        snprintf(path, sizeof path, "/proc/self/stat");
    if (ks_read_text(path, buf, size) <= 0)
        return NULL;
    const char *p = strrchr(buf, ')');
    return p ? p + 1 : NULL;
}

bool ks_seccomp_filtered(void)
{
    static int filtered; /* a filter, once there, stays */
    if (__atomic_load_n(&filtered, __ATOMIC_RELAXED))
        return true;
    char buf[4096];
    if (ks_read_text("/proc/self/status", buf, sizeof buf) < 0)
        return true;
    const char *p = strstr(buf, "\nSeccomp:");
    if (!p)
        return false; /* a kernel without seccomp */
    p += strlen("\nSeccomp:");
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '0')
        return false;
    __atomic_store_n(&filtered, 1, __ATOMIC_RELAXED);
    return true;
}

int ks_fd_move_high(int fd, int room)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return fd;
    rlim_t top = rl.rlim_cur < 1024 ? rl.rlim_cur : 1024;
    if (top <= 2 * (rlim_t)room || (rlim_t)fd >= top - (rlim_t)room)
        return fd;
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, (int)(top - (rlim_t)room));
    if (nfd < 0)
        return fd;
    close(fd);
    return nfd;
}

bool ks_same_socket(int a, int b)
{
    if (a < 0 || b < 0)
        return false;
    if (a == b)
        return true;
    KS_SAVE_ERRNO;
    struct stat sa, sb;
    bool same = fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && S_ISSOCK(sa.st_mode) &&
                sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    KS_RESTORE_ERRNO;
    return same;
}

struct ks_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

void ks_for_each_fd(void (*fn)(int fd, void *arg), void *arg)
{
    int dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return;
    char buf[4096];
    long n;
    while ((n = syscall(SYS_getdents64, dfd, buf, sizeof buf)) > 0) {
        for (long off = 0; off < n;) {
            struct ks_dirent64 *d = (void *)(buf + off);
            off += d->d_reclen;
            if (d->d_name[0] < '0' || d->d_name[0] > '9')
                continue;
            int fd = atoi(d->d_name);
            if (fd != dfd)
                fn(fd, arg);
        }
    }
    close(dfd);
}
