/* tiny_server — a small blocking TCP server for the sharding tests, for the
 * cases no off-the-shelf server exercises. It knows nothing of ktlsshim.
 *
 * Options (before it listens):
 *   --port P          bind 127.0.0.1:P (0: the kernel picks; "PORT n" is
 *                     printed on stdout after listen())
 *   --six             bind [::1] instead
 *   --second P        also bind a second socket to P before listening on
 *                     the first, and listen on it after
 *   --threads         start a thread before listen()
 *   --epoll           create an epoll instance before listen()
 *   --options         set SO_RCVBUF=65536, TCP_NODELAY, TCP_DEFER_ACCEPT=5,
 *                     O_NONBLOCK and FD_CLOEXEC on the listener
 *   --exit-at-start N exit(N) right after listen() returns
 *   --ignore-chld     set SIGCHLD to SIG_IGN before listen()
 *   --reuseport       set SO_REUSEPORT itself before bind()
 *   --count-signals   count SIGINT, SIGQUIT, SIGUSR1 and SIGUSR2 (shown by
 *                     "info") instead of dying of them
 *   --exit-on-term    exit(0) on SIGTERM (as servers with a handler do)
 * Each connection gets one request line:
 *   info    -> "pid=.. port=.. rcvbuf=.. nodelay=.. defer=.. nonblock=..
 *              cloexec=.. reuseport=.. waitpid=.. hups=.. fd=..
 *              int=.. quit=.. usr1=.. usr2=..\n"
 *   exit N  -> the process exits with N
 *   race N  -> three threads call _exit(N) and this one exit(N), all at
 *              once (as h2o's threads each call _exit at shutdown)
 *   crash   -> abort()
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t hups, ints, quits, usr1s, usr2s, term_seen;
static void on_hup(int sig)
{
    (void)sig;
    hups++;
}
static void on_counted(int sig)
{
    if (sig == SIGINT)
        ints++;
    else if (sig == SIGQUIT)
        quits++;
    else if (sig == SIGUSR1)
        usr1s++;
    else if (sig == SIGUSR2)
        usr2s++;
}
static void on_term(int sig)
{
    (void)sig;
    term_seen = 1;
}
static void *idle(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

static int reuseport;

static pthread_barrier_t race_start;
static int race_status;
static void *race_to_exit(void *arg)
{
    (void)arg;
    pthread_barrier_wait(&race_start);
    _exit(race_status);
}

static void race(int status)
{
    pthread_t t;
    race_status = status;
    pthread_barrier_init(&race_start, NULL, 4);
    for (int i = 0; i < 3; i++)
        pthread_create(&t, NULL, race_to_exit, NULL);
    pthread_barrier_wait(&race_start);
    exit(status);
}

static int make_socket(int six, int port)
{
    int s = socket(six ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
    int one = 1;
    if (s < 0) {
        perror("socket");
        exit(2);
    }
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport)
        setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (six) {
        struct sockaddr_in6 a = {
            .sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = IN6ADDR_LOOPBACK_INIT};
        if (bind(s, (void *)&a, sizeof a)) {
            perror("bind");
            exit(2);
        }
    } else {
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons(port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (bind(s, (void *)&a, sizeof a)) {
            perror("bind");
            exit(2);
        }
    }
    return s;
}

static int getint(int fd, int level, int name)
{
    int v = -1;
    socklen_t l = sizeof v;
    getsockopt(fd, level, name, &v, &l);
    return v;
}

static int local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t l = sizeof ss;
    getsockname(fd, (void *)&ss, &l);
    return ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                         : ((struct sockaddr_in6 *)&ss)->sin6_port);
}

static void serve(int c, int lfd)
{
    char line[128] = {0};
    ssize_t n = read(c, line, sizeof line - 1);
    if (n <= 0) {
        close(c);
        return;
    }
    if (strncmp(line, "info", 4) == 0) {
        char out[512];
        int st;
        pid_t w = waitpid(-1, &st, WNOHANG);
        int fl = fcntl(lfd, F_GETFL), fdf = fcntl(lfd, F_GETFD);
        int len = snprintf(
            out, sizeof out,
            "pid=%d port=%d rcvbuf=%d nodelay=%d defer=%d nonblock=%d cloexec=%d reuseport=%d "
            "waitpid=%s hups=%d fd=%d int=%d quit=%d usr1=%d usr2=%d\n",
            (int)getpid(), local_port(lfd), getint(lfd, SOL_SOCKET, SO_RCVBUF),
            getint(lfd, IPPROTO_TCP, TCP_NODELAY), getint(lfd, IPPROTO_TCP, TCP_DEFER_ACCEPT),
            !!(fl & O_NONBLOCK), !!(fdf & FD_CLOEXEC), getint(lfd, SOL_SOCKET, SO_REUSEPORT),
            w < 0 && errno == ECHILD ? "ECHILD" : "other", (int)hups, lfd, (int)ints, (int)quits,
            (int)usr1s, (int)usr2s);
        if (write(c, out, (size_t)len) < 0) {
        }
    } else if (strncmp(line, "exit", 4) == 0) {
        exit(atoi(line + 5));
    } else if (strncmp(line, "race", 4) == 0) {
        race(atoi(line + 5));
    } else if (strncmp(line, "crash", 5) == 0) {
        abort();
    }
    close(c);
}

int main(int argc, char **argv)
{
    int port = 0, second = -1, six = 0, threads = 0, ep = 0, opts = 0, exit_at = -1, ign = 0;
    int count_signals = 0, exit_on_term = 0;
    sigset_t poll_mask;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--port") && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--second") && i + 1 < argc)
            second = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--six"))
            six = 1;
        else if (!strcmp(argv[i], "--threads"))
            threads = 1;
        else if (!strcmp(argv[i], "--epoll"))
            ep = 1;
        else if (!strcmp(argv[i], "--options"))
            opts = 1;
        else if (!strcmp(argv[i], "--exit-at-start") && i + 1 < argc)
            exit_at = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ignore-chld"))
            ign = 1;
        else if (!strcmp(argv[i], "--reuseport"))
            reuseport = 1;
        else if (!strcmp(argv[i], "--count-signals"))
            count_signals = 1;
        else if (!strcmp(argv[i], "--exit-on-term"))
            exit_on_term = 1;
        else {
            fprintf(stderr, "tiny_server: bad argument %s\n", argv[i]);
            return 2;
        }
    }
    signal(SIGHUP, on_hup);
    if (count_signals) {
        /* sigaction without SA_RESTART: poll() returns EINTR, harmlessly. */
        struct sigaction sa = {.sa_handler = on_counted};
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGQUIT, &sa, NULL);
        sigaction(SIGUSR1, &sa, NULL);
        sigaction(SIGUSR2, &sa, NULL);
    }
    if (exit_on_term) {
        struct sigaction sa = {.sa_handler = on_term};
        sigaction(SIGTERM, &sa, NULL);
        /* Blocked but while in ppoll(): no TERM is lost between the check
         * of term_seen and the wait. */
        sigset_t term;
        sigemptyset(&term);
        sigaddset(&term, SIGTERM);
        sigprocmask(SIG_BLOCK, &term, &poll_mask);
    } else {
        sigprocmask(SIG_BLOCK, NULL, &poll_mask);
    }
    if (ign)
        signal(SIGCHLD, SIG_IGN);
    if (threads) {
        pthread_t t;
        pthread_create(&t, NULL, idle, NULL);
    }
    if (ep && epoll_create1(0) < 0) {
        perror("epoll");
        return 2;
    }
    int s = make_socket(six, port);
    int s2 = second >= 0 ? make_socket(six, second) : -1;
    if (opts) {
        int v = 65536, one = 1, defer = 5;
        setsockopt(s, SOL_SOCKET, SO_RCVBUF, &v, sizeof v);
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(s, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer, sizeof defer);
        fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK);
        fcntl(s, F_SETFD, FD_CLOEXEC);
    }
    if (listen(s, 128)) {
        perror("listen");
        return 2;
    }
    if (exit_at >= 0)
        return exit_at;
    if (s2 >= 0 && listen(s2, 128)) {
        perror("listen second");
        return 2;
    }
    printf("PORT %d\n", local_port(s));
    fflush(stdout);
    for (;;) {
        struct pollfd p[2] = {{s, POLLIN, 0}, {s2, POLLIN, 0}};
        if (term_seen)
            exit(0);
        if (ppoll(p, s2 >= 0 ? 2 : 1, NULL, &poll_mask) < 0)
            continue;
        for (int i = 0; i < 2; i++) {
            if (!(p[i].revents & POLLIN))
                continue;
            int c = accept(p[i].fd, NULL, NULL);
            if (c >= 0)
                serve(c, p[i].fd);
        }
    }
}
