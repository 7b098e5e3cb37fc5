/* ktls.c — the kernel side of kTLS, read-only except for one option:
 * - whether the tls ULP exists (/proc/sys/net/ipv4/tcp_available_ulp, or
 *   /proc/net/tls_stat in a network namespace that lacks the first), and
 *   whether its absence is proven (a probe socket's TCP_ULP: ENOENT);
 * - software or NIC crypto per connection. Without a NIC that does TLS in
 *   the network namespace every kTLS connection is software, exactly: the
 *   interfaces' ethtool features (tls-hw-tx-offload, tls-hw-rx-offload, as
 *   ktls-probe reads them) are checked once and again at most once a second
 *   while connections come (an offload switched on in the last second is the
 *   only thing that can be missed), with no syscall per connection. Only
 *   where some interface has TLS offload is /proc/net/tls_stat read per
 *   connection: with no device-offloaded connection in the namespace
 *   (TlsCurrTxDevice = 0) the connection is certainly software, with no
 *   software one certainly NIC; otherwise the answer is a guess and says so.
 *   (inet_diag's TLS_INFO_TXCONF would be exact but needs CAP_NET_ADMIN on
 *   the kernels this runs on.)
 * - whether the kernel can rekey a TLS 1.3 connection (KeyUpdate): the
 *   rekey series (6.14, and its backports) added TlsRxRekeyOk to
 *   /proc/net/tls_stat with the feature, so that line is the exact test;
 *   without the file (a sandbox), the kernel release (6.14+) decides;
 * - TLS_TX_ZEROCOPY_RO;
 * - a bitmap of fds with kTLS TX, for counting plain sendfile();
 * - the TLS_SET_RECORD_TYPE control message, for the three places that
 *   send a record other than data (the own switch's alerts and KeyUpdate,
 *   biosock's control records through a program's own writes). */
#include "kernel/ktls.h"
#include "kernel/uapi.h"
#include "core/fds.h"
#include "core/libc.h"

#include <fcntl.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <linux/tls.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

bool ks_ktls_kernel_has_tls(void)
{
    static int known_yes;       /* once there, the ULP stays there */
    static int64_t no_until_ms; /* a "no" is trusted for a second: the
                                   module may be loaded meanwhile */
    if (__atomic_load_n(&known_yes, __ATOMIC_RELAXED))
        return true;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (now < __atomic_load_n(&no_until_ms, __ATOMIC_RELAXED))
        return false;
    KS_SAVE_ERRNO;
    char buf[256];
    bool yes = false;
    if (ks_read_text("/proc/sys/net/ipv4/tcp_available_ulp", buf, sizeof buf) > 0) {
        for (char *save, *tok = strtok_r(buf, " \n", &save); tok;
             tok = strtok_r(NULL, " \n", &save))
            if (strcmp(tok, "tls") == 0)
                yes = true;
    } else {
        /* A network namespace other than the first has no
         * tcp_available_ulp; the tls module's /proc/net/tls_stat is there
         * in every namespace once the module is loaded. */
        yes = ks_read_text("/proc/net/tls_stat", buf, sizeof buf) > 0;
    }
    if (yes)
        __atomic_store_n(&known_yes, 1, __ATOMIC_RELAXED);
    else
        __atomic_store_n(&no_until_ms, now + 1000, __ATOMIC_RELAXED);
    KS_RESTORE_ERRNO;
    return yes;
}

/* Proven absent: a setsockopt(TCP_ULP, "tls") of this process failed with
 * ENOENT. The list in /proc is no proof: the kernel loads the module on
 * demand for a process with CAP_NET_ADMIN. The probe is a fresh TCP socket
 * of the library's own, never a connection's (an unconnected socket: where
 * the ULP exists the kernel answers ENOTCONN and attaches nothing), and
 * none under a seccomp filter (no proof then: libssl is asked); asked
 * only when the list lacks tls, and again at most once a second either way,
 * so a module loaded meanwhile counts within a second, as above. */
bool ks_ktls_absent_proven(void)
{
    static int64_t proven_until_ms, unproven_until_ms;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (now < __atomic_load_n(&proven_until_ms, __ATOMIC_RELAXED))
        return true;
    if (now < __atomic_load_n(&unproven_until_ms, __ATOMIC_RELAXED) || ks_ktls_kernel_has_tls())
        return false;
    KS_SAVE_ERRNO;
    bool absent = false;
    int fd = ks_seccomp_filtered() ? -1 : socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd >= 0) {
        absent = setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", 3) != 0 && errno == ENOENT;
        close(fd);
    }
    __atomic_store_n(absent ? &proven_until_ms : &unproven_until_ms, now + 1000, __ATOMIC_RELAXED);
    KS_RESTORE_ERRNO;
    return absent;
}

static long stat_value(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = text; (p = strstr(p, name)); p += n)
        if ((p == text || p[-1] == '\n') && (p[n] == ' ' || p[n] == '\t'))
            return strtol(p + n, NULL, 10);
    return -1;
}

static int64_t coarse_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int ethtool(int sock, const char *ifname, void *data)
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    size_t n = strnlen(ifname, sizeof ifr.ifr_name - 1);
    memcpy(ifr.ifr_name, ifname, n);
    ifr.ifr_data = data;
    return ioctl(sock, SIOCETHTOOL, &ifr);
}

#define MAX_FEATURES 256 /* the kernel has about 70 feature names */

/* The bit numbers of tls-hw-tx-offload and tls-hw-rx-offload in the
 * ETH_SS_FEATURES string set (the same for every device). */
static bool tls_feature_bits(int sock, const char *ifname, int bit[2], uint32_t *count)
{
    struct {
        struct ethtool_sset_info hdr;
        uint32_t data[1];
    } ss;
    memset(&ss, 0, sizeof ss);
    ss.hdr.cmd = ETHTOOL_GSSET_INFO;
    ss.hdr.sset_mask = 1ULL << ETH_SS_FEATURES;
    if (ethtool(sock, ifname, &ss) != 0 || !(ss.hdr.sset_mask & (1ULL << ETH_SS_FEATURES)))
        return false;
    uint32_t n = ss.data[0];
    if (n == 0 || n > MAX_FEATURES)
        return false;
    struct ethtool_gstrings *gs = calloc(1, sizeof *gs + (size_t)n * ETH_GSTRING_LEN);
    if (!gs)
        return false;
    gs->cmd = ETHTOOL_GSTRINGS;
    gs->string_set = ETH_SS_FEATURES;
    gs->len = n;
    bool ok = ethtool(sock, ifname, gs) == 0;
    bit[0] = bit[1] = -1;
    for (uint32_t i = 0; ok && i < gs->len && i < n; i++) {
        const char *name = (const char *)gs->data + (size_t)i * ETH_GSTRING_LEN;
        if (strncmp(name, "tls-hw-tx-offload", ETH_GSTRING_LEN) == 0)
            bit[0] = (int)i;
        else if (strncmp(name, "tls-hw-rx-offload", ETH_GSTRING_LEN) == 0)
            bit[1] = (int)i;
    }
    free(gs);
    *count = n;
    return ok;
}

/* Does any interface of this network namespace do TLS in hardware (either
 * direction active)? Unknown (an interface whose features cannot be read,
 * or no interface list) counts as yes: the caller then falls back to
 * /proc/net/tls_stat, as before. */
static bool any_interface_offloads_tls(void)
{
    struct if_nameindex *ifs = if_nameindex();
    if (!ifs)
        return true;
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    bool any = sock < 0;
    int bit[2] = {-1, -1};
    uint32_t nfeat = 0;
    bool have_bits = false;
    for (struct if_nameindex *i = ifs; !any && i->if_index; i++) {
        if (!have_bits) {
            if (!tls_feature_bits(sock, i->if_name, bit, &nfeat)) {
                any = true; /* cannot tell */
                break;
            }
            have_bits = true;
            if (bit[0] < 0 && bit[1] < 0)
                break; /* a kernel without TLS offload features at all */
        }
        struct {
            struct ethtool_gfeatures hdr;
            struct ethtool_get_features_block blk[MAX_FEATURES / 32];
        } gf;
        memset(&gf, 0, sizeof gf);
        gf.hdr.cmd = ETHTOOL_GFEATURES;
        gf.hdr.size = (nfeat + 31) / 32;
        if (ethtool(sock, i->if_name, &gf) != 0) {
            any = true;
            break;
        }
        for (int d = 0; d < 2; d++)
            if (bit[d] >= 0 && (uint32_t)bit[d] / 32 < gf.hdr.size &&
                (gf.blk[bit[d] / 32].active & (1U << (bit[d] % 32))))
                any = true;
    }
    if (sock >= 0)
        close(sock);
    if_freenameindex(ifs);
    return any;
}

#define NIC_RECHECK_MS 1000

/* Cached answer of any_interface_offloads_tls(): 0 unknown, 1 no, 2 yes. */
static int nic_tls_state;
static int64_t nic_checked_ms;

static bool namespace_has_tls_nic(void)
{
    int64_t now = coarse_now_ms();
    int st = __atomic_load_n(&nic_tls_state, __ATOMIC_ACQUIRE);
    if (st && now - __atomic_load_n(&nic_checked_ms, __ATOMIC_RELAXED) < NIC_RECHECK_MS)
        return st == 2;
    KS_SAVE_ERRNO;
    bool yes = any_interface_offloads_tls();
    KS_RESTORE_ERRNO;
    __atomic_store_n(&nic_checked_ms, now, __ATOMIC_RELAXED);
    __atomic_store_n(&nic_tls_state, yes ? 2 : 1, __ATOMIC_RELEASE);
    return yes;
}

enum ks_offload ks_ktls_offload(int fd, bool tx, bool *estimated)
{
    (void)fd;
    *estimated = false;
    if (!namespace_has_tls_nic())
        return KS_OFFLOAD_SW; /* no NIC can have it: certain */
    KS_SAVE_ERRNO;
    char buf[2048];
    *estimated = true;
    enum ks_offload kind = KS_OFFLOAD_SW;
    if (ks_read_text("/proc/net/tls_stat", buf, sizeof buf) > 0) {
        long dev = stat_value(buf, tx ? "TlsCurrTxDevice" : "TlsCurrRxDevice");
        long sw = stat_value(buf, tx ? "TlsCurrTxSw" : "TlsCurrRxSw");
        if (dev == 0) {
            *estimated = false;
        } else if (sw == 0 && dev > 0) {
            kind = KS_OFFLOAD_NIC;
            *estimated = false;
        }
    }
    KS_RESTORE_ERRNO;
    return kind;
}

/* 0 unknown, 1 no, 2 yes: a kernel does not change under a process. */
static int rekey_state;

static bool release_can_rekey(void)
{
    struct utsname u;
    unsigned major = 0, minor = 0;
    if (uname(&u) != 0 || sscanf(u.release, "%u.%u", &major, &minor) != 2)
        return false;
    return major > 6 || (major == 6 && minor >= 14);
}

bool ks_ktls_kernel_can_rekey(void)
{
    int st = __atomic_load_n(&rekey_state, __ATOMIC_ACQUIRE);
    if (st)
        return st == 2;
    KS_SAVE_ERRNO;
    char buf[2048];
    bool yes = ks_read_text("/proc/net/tls_stat", buf, sizeof buf) > 0
                   ? stat_value(buf, "TlsRxRekeyOk") >= 0
                   : release_can_rekey();
    KS_RESTORE_ERRNO;
    __atomic_store_n(&rekey_state, yes ? 2 : 1, __ATOMIC_RELEASE);
    return yes;
}

int ks_ktls_set_zerocopy(int fd)
{
    int one = 1;
    return setsockopt(fd, SOL_TLS, TLS_TX_ZEROCOPY_RO, &one, sizeof one);
}

#define FD_BITS 65536
static uint64_t fd_bits[FD_BITS / 64];

void ks_ktls_fd_mark(int fd, bool on)
{
    if (fd < 0 || fd >= FD_BITS)
        return;
    uint64_t bit = 1ULL << (fd % 64);
    if (on)
        __atomic_fetch_or(&fd_bits[fd / 64], bit, __ATOMIC_RELAXED);
    else
        __atomic_fetch_and(&fd_bits[fd / 64], ~bit, __ATOMIC_RELAXED);
}

bool ks_ktls_fd_marked(int fd)
{
    if (fd < 0 || fd >= FD_BITS)
        return false;
    return __atomic_load_n(&fd_bits[fd / 64], __ATOMIC_RELAXED) & (1ULL << (fd % 64));
}

void ks_ktls_set_record_type(struct msghdr *m, union ks_record_type_cmsg *room, uint8_t type)
{
    memset(room, 0, sizeof *room);
    m->msg_control = room->buf;
    m->msg_controllen = sizeof room->buf;
    struct cmsghdr *c = CMSG_FIRSTHDR(m);
    c->cmsg_level = SOL_TLS;
    c->cmsg_type = TLS_SET_RECORD_TYPE;
    c->cmsg_len = CMSG_LEN(sizeof(uint8_t));
    *CMSG_DATA(c) = type;
}
