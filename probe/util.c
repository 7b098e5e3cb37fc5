/* Small helpers: errno names, clocks, loopback sockets, files. */
#include "probe.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

const char *errname(int err)
{
    static char buf[24];
    const char *n = strerrorname_np(err);

    if (n)
        return n;
    snprintf(buf, sizeof(buf), "errno %d", err);
    return buf;
}

int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int bprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

void strlcpy0(char *dst, const char *src, size_t size)
{
    if (!size)
        return;
    snprintf(dst, size, "%s", src ? src : "");
}

void trim(char *s)
{
    size_t n = strlen(s);

    while (n && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
}

ssize_t read_small(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t got = 0;

    if (fd < 0)
        return -1;
    while (got + 1 < size) {
        ssize_t r = read(fd, buf + got, size - 1 - got);

        if (r < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    buf[got] = '\0';
    close(fd);
    return (ssize_t)got;
}

void fill_random(void *buf, size_t len)
{
    unsigned char *p = buf;

    while (len) {
        ssize_t r = getrandom(p, len, GRND_NONBLOCK);

        if (r <= 0) {
            /* Throwaway keys: zeros are as good when no entropy. */
            memset(p, 0, len);
            return;
        }
        p += r;
        len -= (size_t)r;
    }
}

/* A listener on 127.0.0.1, port chosen by the kernel. */
int loopback_listener(unsigned *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t al = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

    if (fd < 0)
        return -1;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 16) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

/* Connects a fresh client to the listener and accepts it. Both ends are
 * non-blocking and close-on-exec. Returns 0 or -1 with errno. */
int loopback_pair(int lfd, unsigned port, int *client, int *server, int timeout_ms)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    int64_t deadline = now_ms() + timeout_ms;
    int c, s = -1, e;

    *client = *server = -1;
    c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (c < 0)
        return -1;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((unsigned short)port);
    if (connect(c, (struct sockaddr *)&a, sizeof(a)) < 0) {
        if (errno != EINPROGRESS)
            goto fail;
        struct pollfd p = {.fd = c, .events = POLLOUT};
        int left = (int)(deadline - now_ms());
        int r = poll(&p, 1, left > 0 ? left : 0);
        int soerr = 0;
        socklen_t sl = sizeof(soerr);

        if (r == 0) {
            errno = ETIMEDOUT;
            goto fail;
        }
        if (r < 0)
            goto fail;
        if (getsockopt(c, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
            goto fail;
        if (soerr) {
            errno = soerr;
            goto fail;
        }
    }
    for (;;) {
        s = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (s >= 0)
            break;
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            goto fail;
        struct pollfd p = {.fd = lfd, .events = POLLIN};
        int left = (int)(deadline - now_ms());

        if (left <= 0) {
            errno = ETIMEDOUT;
            goto fail;
        }
        if (poll(&p, 1, left) < 0 && errno != EINTR)
            goto fail;
    }
    *client = c;
    *server = s;
    return 0;
fail:
    e = errno;
    close(c);
    errno = e;
    return -1;
}

/* Closes with an RST instead of a FIN: no TIME_WAIT left behind by the
 * many throwaway connections. */
void close_abort(int fd)
{
    struct linger l = {.l_onoff = 1, .l_linger = 0};

    if (fd < 0)
        return;
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    close(fd);
}
