/* fork_lock.c — a threaded program that forks while another of its threads
 * is inside one of the library's locks (held there by gdb, see
 * tests/host/42-fork-locks.bats), then checks that the child can make and
 * free an SSL_CTX, and fork a grandchild that can too (the child's own fork
 * handlers work).
 *
 *   fork_lock FIFO [WHAT]
 * Thread T: reads a byte from FIFO, then enters the lock WHAT names:
 *   ctx_free   (default) frees an SSL_CTX made at start: the SSL_CTX list's
 *              lock (tls/hooks.c);
 *   sigaction  reads SIGTERM's disposition: the signal catcher's lock word
 *              (stats/sigcatch.c);
 *   first_ssl  makes and frees the process's first SSL_CTX: the hooks'
 *              one-time set-up (pthread_once, tls/hooks.c); main calls
 *              nothing of OpenSSL before it forks.
 * Main: waits for SIGUSR1 (sigwait), forks; the child does the above and
 * exits 0. Prints "child ok", or "child stuck" if the child has not exited
 * within 10 s (then kills it; 5 s for the grandchild), and exits 0. */
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

static SSL_CTX *victim;
static const char *fifo, *what = "ctx_free";

static void *enter_lock(void *arg)
{
    (void)arg;
    char c;
    int fd = open(fifo, O_RDONLY);
    if (fd < 0 || read(fd, &c, 1) != 1)
        _exit(3);
    if (strcmp(what, "sigaction") == 0) {
        struct sigaction old;
        sigaction(SIGTERM, NULL, &old);
    } else if (strcmp(what, "first_ssl") == 0) {
        SSL_CTX_free(SSL_CTX_new(TLS_server_method()));
    } else {
        SSL_CTX_free(victim);
    }
    return NULL;
}

/* Waits up to `seconds` for kid: 0 if it exited 0, 1 if it failed, 2 if it
 * is stuck (then killed). */
static int wait_kid(pid_t kid, int seconds)
{
    int st = -1;
    for (int i = 0; i < seconds * 100 && waitpid(kid, &st, WNOHANG) == 0; i++) {
        struct timespec ms10 = {0, 10000000};
        nanosleep(&ms10, NULL);
    }
    if (st == -1) {
        kill(kid, SIGKILL);
        waitpid(kid, NULL, 0);
        return 2;
    }
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}

static int make_and_free(void)
{
    SSL_CTX *c = SSL_CTX_new(TLS_server_method());
    SSL_CTX_free(c);
    return c ? 0 : 5;
}

int main(int argc, char **argv)
{
    if (argc != 2 && argc != 3)
        return 2;
    fifo = argv[1];
    if (argc == 3)
        what = argv[2];
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, NULL);
    if (strcmp(what, "ctx_free") == 0 && !(victim = SSL_CTX_new(TLS_server_method())))
        return 4;
    pthread_t t;
    if (pthread_create(&t, NULL, enter_lock, NULL))
        return 4;
    printf("ready\n");
    fflush(stdout);
    int sig;
    sigwait(&usr1, &sig);
    pid_t kid = fork();
    if (kid == 0) {
        if (make_and_free())
            _exit(5);
        pid_t grandkid = fork();
        if (grandkid == 0)
            _exit(make_and_free());
        _exit(grandkid < 0 ? 6 : wait_kid(grandkid, 5) ? 7 : 0);
    }
    int r = wait_kid(kid, 10);
    printf("child %s\n", r == 0 ? "ok" : r == 1 ? "failed" : "stuck");
    fflush(stdout);
    _exit(0); /* not waiting for T: a debugger may be holding it */
}
