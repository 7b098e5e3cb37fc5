/* ktls.h — what the kernel says about kernel TLS: is the tls ULP there, is
 * a connection's crypto done in software or by the NIC, zero-copy sendfile.
 * No OpenSSL here. */
#ifndef KTLSSHIM_KTLS_H
#define KTLSSHIM_KTLS_H

#include "core/common.h"

#include <stdint.h>
#include <sys/socket.h>

enum ks_offload { KS_OFFLOAD_SW, KS_OFFLOAD_NIC };

/* The tls ULP is registered (net.ipv4.tcp_available_ulp lists it). */
bool ks_ktls_kernel_has_tls(void);

/* The tls ULP is proven absent for this process: the list lacks it and a
 * setsockopt(TCP_ULP, "tls") of the library's own failed with ENOENT (the
 * module is not loaded and cannot be loaded on demand by this process).
 * A proof holds for a second; errno is kept. */
bool ks_ktls_absent_proven(void);

/* Software or NIC for a connection whose direction (tx: true) has kTLS.
 * *estimated is set when the kernel's counters cannot tell for sure. */
enum ks_offload ks_ktls_offload(int fd, bool tx, bool *estimated);

/* The kernel can take new keys on a kTLS socket after a TLS 1.3 KeyUpdate
 * (setsockopt TLS_RX / TLS_TX again; 6.14+). Cached for the process. */
bool ks_ktls_kernel_can_rekey(void);

/* Asks the kernel for TLS_TX_ZEROCOPY_RO on fd. 0 or -1 with errno. */
int ks_ktls_set_zerocopy(int fd);

/* Room for one TLS_SET_RECORD_TYPE control message, aligned. */
union ks_record_type_cmsg {
    char buf[CMSG_SPACE(sizeof(uint8_t))];
    struct cmsghdr align;
};

/* Makes m send its bytes as one record of `type` (an alert, a handshake
 * message: TLS_SET_RECORD_TYPE) on a kTLS socket: its control is set to
 * room, which must live until the sendmsg. The kernel takes no MSG_MORE
 * with a record type. */
void ks_ktls_set_record_type(struct msghdr *m, union ks_record_type_cmsg *room, uint8_t type);

/* fds whose TX is kTLS, so that a plain sendfile() on them is counted. */
void ks_ktls_fd_mark(int fd, bool on);
bool ks_ktls_fd_marked(int fd);

#endif
