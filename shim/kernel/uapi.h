/* uapi.h — the kernel's TLS ABI numbers, in one place: headers older than
 * the kernel the library runs on may lack some of them, and the values are
 * fixed by the kernel's ABI (include/uapi/linux/tls.h, linux/tcp.h). Shared
 * with probe/. No OpenSSL here. */
#ifndef KTLSSHIM_UAPI_H
#define KTLSSHIM_UAPI_H

#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

/* struct tcp_info (linux/tcp.h, which clashes with netinet/tcp.h): where
 * tcpi_bytes_received sits (Linux 4.1+), and the size that holds it. */
#define KS_TCPI_BYTES_RECEIVED 128
#define KS_TCPI_SIZE_MIN 136

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif
#ifndef TLS_TX
#define TLS_TX 1
#endif
#ifndef TLS_RX
#define TLS_RX 2
#endif
#ifndef TLS_TX_ZEROCOPY_RO
#define TLS_TX_ZEROCOPY_RO 3
#endif
#ifndef TLS_RX_EXPECT_NO_PAD
#define TLS_RX_EXPECT_NO_PAD 4
#endif
#ifndef TLS_1_2_VERSION
#define TLS_1_2_VERSION 0x0303
#endif
#ifndef TLS_1_3_VERSION
#define TLS_1_3_VERSION 0x0304
#endif
#ifndef TLS_CIPHER_AES_GCM_128
#define TLS_CIPHER_AES_GCM_128 51
#endif
#ifndef TLS_CIPHER_AES_GCM_256
#define TLS_CIPHER_AES_GCM_256 52
#endif
#ifndef TLS_CIPHER_AES_CCM_128
#define TLS_CIPHER_AES_CCM_128 53
#endif
#ifndef TLS_CIPHER_CHACHA20_POLY1305
#define TLS_CIPHER_CHACHA20_POLY1305 54
#endif
#ifndef TLS_CIPHER_SM4_GCM
#define TLS_CIPHER_SM4_GCM 55
#endif
#ifndef TLS_CIPHER_SM4_CCM
#define TLS_CIPHER_SM4_CCM 56
#endif
#ifndef TLS_CIPHER_ARIA_GCM_128
#define TLS_CIPHER_ARIA_GCM_128 57
#endif
#ifndef TLS_CIPHER_ARIA_GCM_256
#define TLS_CIPHER_ARIA_GCM_256 58
#endif

#endif
