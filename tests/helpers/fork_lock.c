/* fork_lock.c — a threaded program that forks while another of its threads
 * is inside the library's SSL_CTX bookkeeping (held there by gdb, see
 * tests/host/40-interpose.bats), then checks that the child can make and
 * free an SSL_CTX.
 *
 *   fork_lock FIFO
 * Thread T: reads a byte from FIFO, then frees an SSL_CTX made at start.
 * Main: waits for SIGUSR1 (sigwait), forks; the child makes and frees an
 * SSL_CTX and exits 0. Prints "child ok", or "child stuck" if the child has
 * not exited within 10 s (then kills it), and exits 0. */
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

static SSL_CTX *victim;
static const char *fifo;

static void *freer(void *arg)
{
    (void)arg;
    char c;
    int fd = open(fifo, O_RDONLY);
    if (fd < 0 || read(fd, &c, 1) != 1)
        _exit(3);
    SSL_CTX_free(victim);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    fifo = argv[1];
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, NULL);
    victim = SSL_CTX_new(TLS_server_method());
    pthread_t t;
    if (!victim || pthread_create(&t, NULL, freer, NULL))
        return 4;
    printf("ready\n");
    fflush(stdout);
    int sig;
    sigwait(&usr1, &sig);
    pid_t kid = fork();
    if (kid == 0) {
        SSL_CTX *c = SSL_CTX_new(TLS_server_method());
        SSL_CTX_free(c);
        _exit(c ? 0 : 5);
    }
    int st = -1;
    for (int i = 0; i < 1000 && waitpid(kid, &st, WNOHANG) == 0; i++) {
        struct timespec ms10 = {0, 10000000};
        nanosleep(&ms10, NULL);
    }
    if (st == -1) {
        kill(kid, SIGKILL);
        waitpid(kid, NULL, 0);
        printf("child stuck\n");
    } else {
        printf("child %s\n", WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "ok" : "failed");
    }
    fflush(stdout);
    _exit(0); /* not waiting for T: a debugger may be holding it */
}
