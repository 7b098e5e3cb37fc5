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

/* Reads the small file at path (a /proc file) into buf, to its end or
 * size - 1 bytes, NUL-terminated, without allocating: the bytes read, -1 if
 * it cannot be opened or its first read fails. */
long ks_read_text(const char *path, char *buf, unsigned long size);

/* The fields of /proc/PID/stat after the command name (" state ppid pgrp
 * ..."), read into buf; pid 0: this process. NULL if it cannot be read.
 * The name may hold spaces and parentheses: the fields start after the
 * last ')'. */
const char *ks_proc_stat_fields(int pid, char *buf, unsigned long size);

/* The process runs under a seccomp filter (or it cannot be told: no /proc),
 * where a syscall the filter does not expect may kill it: the library then
 * makes no syscall the program itself might not (memfd_create, a probe
 * socket). */
bool ks_seccomp_filtered(void);

/* Moves fd, one of the library's own (close-on-exec), out of the way of the
 * fd numbers programs expect (0-2, systemd's 3.., the lowest free ones): to
 * room below the top of the first 1024 (select() users' range: the library
 * never selects on it), or below RLIMIT_NOFILE if that is lower. Left where
 * it is if it is there already, if the limit is at most 2 x room, or if it
 * cannot be moved. Returns the fd to use (the old one is closed if moved). */
int ks_fd_move_high(int fd, int room);

/* a and b are the same open socket: the same number, or two descriptors of
 * one socket (dup: proftpd reads on fd 0 and writes on fd 1). errno kept. */
bool ks_same_socket(int a, int b);

#endif
