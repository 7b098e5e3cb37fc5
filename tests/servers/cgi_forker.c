/* cgi_forker — a test program in the manner of a CGI server: it listens on
 * a TCP port (which shards it under KTLSSHIM_SHARDS), then, in worker 0 only
 * (or when unsharded), forks and execs EXECS children (/bin/true), one at a
 * time, then forks COUNTERS children that each accept one connection on a
 * side listener and _exit(0); it then creates DONE_FILE and waits for a
 * signal. The exec'd program is PROGRAM ARGS... (the test passes a static
 * busybox: an exec that costs little, so 5000 of them stay quick).
 *
 * usage: cgi_forker PORT EXECS COUNTERS DONE_FILE PROGRAM [ARGS...] */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int tcp_listener(int port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 16) != 0) {
        perror("listener");
        exit(2);
    }
    return s;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: cgi_forker PORT EXECS COUNTERS DONE_FILE PROGRAM [ARGS...]\n");
        return 2;
    }
    char **exec_argv = argv + 5;
    tcp_listener(atoi(argv[1]));
    const char *w = getenv("KTLSSHIM_WORKER");
    if (!w || strncmp(w, "0/", 2) == 0) {
        int execs = atoi(argv[2]), counters = atoi(argv[3]);
        for (int i = 0; i < execs; i++) {
            pid_t pid = fork();
            if (pid == 0) {
                execv(exec_argv[0], exec_argv);
                _exit(127);
            }
            int st;
            if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st)) {
                fprintf(stderr, "exec child %d failed\n", i);
                return 1;
            }
        }
        int side = tcp_listener(0);
        struct sockaddr_in a;
        socklen_t l = sizeof a;
        getsockname(side, (struct sockaddr *)&a, &l);
        for (int i = 0; i < counters; i++) {
            int c = socket(AF_INET, SOCK_STREAM, 0);
            if (connect(c, (struct sockaddr *)&a, l) != 0) {
                perror("connect");
                return 1;
            }
            pid_t pid = fork();
            if (pid == 0) {
                int x = accept(side, NULL, NULL);
                close(x);
                _exit(x >= 0 ? 0 : 1);
            }
            int st;
            waitpid(pid, &st, 0);
            close(c);
        }
        int fd = open(argv[4], O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        close(fd);
    }
    for (;;)
        pause();
}
