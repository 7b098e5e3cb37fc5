/* fds.h — the process's open file descriptors, listed without allocating
 * (sharding copies the bound sockets; a daemonizing program's restart
 * closes what it made). */
#ifndef KTLSSHIM_FDS_H
#define KTLSSHIM_FDS_H

#include <stdbool.h>

/* Calls fn for every open fd of the process, as /proc/self/fd lists them
 * (the directory's own fd excluded). Nothing is called if /proc is not
 * there. */
void ks_for_each_fd(void (*fn)(int fd, void *arg), void *arg);

/* a and b are the same open socket: the same number, or two descriptors of
 * one socket (dup: proftpd reads on fd 0 and writes on fd 1). errno kept. */
bool ks_same_socket(int a, int b);

#endif
