/* Network interfaces and their TLS offload features, read through the
 * kernel's ethtool ioctl (SIOCETHTOOL): the feature names from the
 * ETH_SS_FEATURES string set, their state from ETHTOOL_GFEATURES. */
#include "probe.h"

#include <errno.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

const char *const tls_feature_names[N_TLS_FEATURES] = {
    "tls-hw-tx-offload",
    "tls-hw-rx-offload",
    "tls-hw-record",
};

static int ethtool(int fd, const char *ifname, void *data)
{
    struct ifreq ifr;

    memset(&ifr, 0, sizeof(ifr));
    strlcpy0(ifr.ifr_name, ifname, sizeof(ifr.ifr_name));
    ifr.ifr_data = data;
    return ioctl(fd, SIOCETHTOOL, &ifr);
}

static void read_features(int fd, struct netif_info *ni)
{
    struct ethtool_sset_info *ss = NULL;
    struct ethtool_gstrings *gs = NULL;
    struct ethtool_gfeatures *gf = NULL;
    int idx[N_TLS_FEATURES];
    __u32 n, blocks;

    ss = calloc(1, sizeof(*ss) + sizeof(__u32));
    if (!ss) {
        ni->err = ENOMEM;
        ni->err_step = "memory";
        return;
    }
    ss->cmd = ETHTOOL_GSSET_INFO;
    ss->sset_mask = 1ULL << ETH_SS_FEATURES;
    if (ethtool(fd, ni->name, ss) < 0) {
        ni->err = errno;
        ni->err_step = "ETHTOOL_GSSET_INFO";
        goto out;
    }
    if (!(ss->sset_mask & (1ULL << ETH_SS_FEATURES)) || ss->data[0] == 0) {
        ni->err = EOPNOTSUPP;
        ni->err_step = "ETHTOOL_GSSET_INFO (no feature names)";
        goto out;
    }
    n = ss->data[0];
    if (n > 4096) {
        ni->err = E2BIG;
        ni->err_step = "ETHTOOL_GSSET_INFO";
        goto out;
    }

    gs = calloc(1, sizeof(*gs) + (size_t)n * ETH_GSTRING_LEN);
    if (!gs) {
        ni->err = ENOMEM;
        ni->err_step = "memory";
        goto out;
    }
    gs->cmd = ETHTOOL_GSTRINGS;
    gs->string_set = ETH_SS_FEATURES;
    gs->len = n;
    if (ethtool(fd, ni->name, gs) < 0) {
        ni->err = errno;
        ni->err_step = "ETHTOOL_GSTRINGS";
        goto out;
    }
    if (gs->len < n)
        n = gs->len;

    for (int f = 0; f < N_TLS_FEATURES; f++) {
        idx[f] = -1;
        for (__u32 i = 0; i < n; i++) {
            const char *s = (const char *)gs->data + (size_t)i * ETH_GSTRING_LEN;

            if (!strncmp(s, tls_feature_names[f], ETH_GSTRING_LEN)) {
                idx[f] = (int)i;
                break;
            }
        }
    }

    blocks = (n + 31) / 32;
    gf = calloc(1, sizeof(*gf) + blocks * sizeof(gf->features[0]));
    if (!gf) {
        ni->err = ENOMEM;
        ni->err_step = "memory";
        goto out;
    }
    gf->cmd = ETHTOOL_GFEATURES;
    gf->size = blocks;
    if (ethtool(fd, ni->name, gf) < 0) {
        ni->err = errno;
        ni->err_step = "ETHTOOL_GFEATURES";
        goto out;
    }
    for (int f = 0; f < N_TLS_FEATURES; f++) {
        struct feature_state *st = &ni->feat[f];

        if (idx[f] < 0 || (__u32)idx[f] / 32 >= gf->size)
            continue;
        const struct ethtool_get_features_block *b = &gf->features[idx[f] / 32];
        __u32 bit = 1U << (idx[f] % 32);

        st->known = true;
        st->active = b->active & bit;
        st->requested = b->requested & bit;
        /* as ethtool -k: fixed when not changeable for this device */
        st->fixed = !(b->available & bit) || (b->never_changed & bit);
    }
out:
    free(ss);
    free(gs);
    free(gf);
}

void netif_probe(struct netif_list *l)
{
    struct if_nameindex *ifs, *p;
    size_t n = 0;
    int fd;

    memset(l, 0, sizeof(*l));
    ifs = if_nameindex();
    if (!ifs) {
        l->err = errno;
        return;
    }
    for (p = ifs; p->if_index; p++)
        n++;
    l->v = calloc(n ? n : 1, sizeof(*l->v));
    if (!l->v) {
        l->err = ENOMEM;
        if_freenameindex(ifs);
        return;
    }
    fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    for (p = ifs; p->if_index; p++) {
        struct netif_info *ni = &l->v[l->n++];

        strlcpy0(ni->name, p->if_name, sizeof(ni->name));
        ni->index = p->if_index;
        if (fd < 0) {
            ni->err = errno;
            ni->err_step = "socket";
            continue;
        }
        read_features(fd, ni);
    }
    if (fd >= 0)
        close(fd);
    if_freenameindex(ifs);
}

void netif_free(struct netif_list *l)
{
    free(l->v);
    l->v = NULL;
    l->n = 0;
}
