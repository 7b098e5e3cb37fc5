/* fds.c — walks /proc/self/fd with getdents64 into a stack buffer: no
 * malloc, so it is safe in the supervisor between fork and exec and in a
 * process whose allocator the library must not disturb. And tells whether
 * two descriptors are one socket. */
#include "core/fds.h"
#include "core/common.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

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
