/* sym.c — OpenSSL's functions behind the OpenSSL hooks, resolved in one place.
 *
 * Our hooks carry the versions of libssl.so.3 (OPENSSL_3.0.0) and of
 * libssl.so.1.1 (OPENSSL_1_1_0, OPENSSL_1_1_1: see libktlsshim.map and
 * gates.c), so they only ever stand in for those. For OpenSSL 3 the real
 * function is looked up with dlvsym(RTLD_NEXT); when libssl was loaded
 * privately (dlopen with RTLD_LOCAL, e.g. by Python's _ssl module) it is not
 * in the global scope and RTLD_NEXT finds nothing, so we find the loaded
 * libssl.so.3 by walking the link map (dl_iterate_phdr) and ask that object
 * (and its dependencies, i.e. libcrypto) directly. A handle obtained with
 * RTLD_NOLOAD never loads anything new. Lookups are idempotent, so racing
 * threads are harmless. For OpenSSL 1.1, the same walk finds libssl.so.1.1
 * wherever it is. */
#include "tls/ossl/sym.h"
#include "core/libc.h"
#include "core/log.h"

#include <dlfcn.h>
#include <link.h>
#include <stdint.h>
#include <string.h>

#define OSSL_VERSION "OPENSSL_3.0.0"

struct find_ctx {
    const char *base; /* the file name looked for */
    char path[4096];
};

static int find_lib(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    struct find_ctx *ctx = data;
    const char *name = info->dlpi_name;
    if (!name || !*name)
        return 0;
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    /* The file name, or a longer one of the same library (a distribution's
     * libssl.so.1.1.1k loaded by that path rather than by its soname). */
    size_t n = strlen(ctx->base);
    if (strncmp(base, ctx->base, n) != 0 || (base[n] != '\0' && base[n] != '.'))
        return 0;
    size_t len = strlen(name);
    if (len >= sizeof ctx->path)
        return 0;
    memcpy(ctx->path, name, len + 1);
    return 1;
}

/* A handle on the loaded library whose file name is `base` (never loads
 * anything: RTLD_NOLOAD), cached in *slot once found. */
static void *private_lib(void **slot, const char *base)
{
    void *h = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (h)
        return h;
    struct find_ctx ctx = {.base = base};
    if (!dl_iterate_phdr(find_lib, &ctx))
        return NULL;
    h = ks_libc()->dlopen(ctx.path, RTLD_LAZY | RTLD_LOCAL | RTLD_NOLOAD);
    if (!h)
        return NULL;
    void *expected = NULL;
    if (!__atomic_compare_exchange_n(slot, &expected, h, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        dlclose(h); /* another thread won; drop our extra reference */
    else
        ks_log_debug("%s is not in the global scope (loaded with RTLD_LOCAL); using %s directly",
                     base, ctx.path);
    return __atomic_load_n(slot, __ATOMIC_ACQUIRE);
}

int ks_ossl_flavour_now;

/* OpenSSL 1.1: every symbol has its own version (OPENSSL_1_1_0,
 * OPENSSL_1_1_1, ...), so it is asked for by name, of libssl.so.1.1's own
 * handle: that handle's scope is libssl.so.1.1 and its dependencies
 * (libcrypto.so.1.1, libc), never this library nor a libssl.so.3. */
static void *ossl111_sym(const char *name)
{
    static void *libssl_handle, *libcrypto_handle; /* held references */
    void *p = NULL;
    void *h = private_lib(&libssl_handle, "libssl.so.1.1");
    if (h)
        p = dlsym(h, name);
    if (!p && (h = private_lib(&libcrypto_handle, "libcrypto.so.1.1")))
        p = dlsym(h, name);
    return p;
}

static void *ossl3_sym(const char *name)
{
    /* libssl's handle also finds libcrypto's symbols (its dependency); a
     * libcrypto loaded alone (Python's _hashlib before any _ssl) is asked
     * directly, for the libcrypto hooks (BIO_ctrl, BIO_write). */
    static void *libssl_handle, *libcrypto_handle; /* held references */
    void *p = dlvsym(RTLD_NEXT, name, OSSL_VERSION);
    if (!p) {
        void *h = private_lib(&libssl_handle, "libssl.so.3");
        if (h)
            p = dlvsym(h, name, OSSL_VERSION);
    }
    if (!p) {
        void *h = private_lib(&libcrypto_handle, "libcrypto.so.3");
        if (h)
            p = dlvsym(h, name, OSSL_VERSION);
    }
    return p;
}

/* ---- each name looked up once ----
 *
 * The table (api.c), the gates and the few callers that look a function up
 * on first use all come here; a name found is kept, per flavour, so that no
 * name is looked up twice however many callers ask for it. A name not found
 * is not kept (its library may be loaded later). Lock-free: a slot's name is
 * claimed with one compare-and-swap and never changes; racing threads store
 * the same value. When the table is full, names are looked up every time. */

#define MEMO_SLOTS 512 /* a power of two, well above the ~150 names asked for */

static struct memo {
    const char *name; /* atomic: NULL, then for good */
    void *fn[2];      /* atomic: [0] OpenSSL 3, [1] OpenSSL 1.1 */
} memo[MEMO_SLOTS];

static uint32_t name_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

/* The slot of name, claimed if it has none yet; NULL when the table is full. */
static struct memo *memo_slot(const char *name)
{
    uint32_t h = name_hash(name);
    for (uint32_t i = 0; i < MEMO_SLOTS; i++) {
        struct memo *m = &memo[(h + i) & (MEMO_SLOTS - 1)];
        const char *have = __atomic_load_n(&m->name, __ATOMIC_ACQUIRE);
        if (!have && (__atomic_compare_exchange_n(&m->name, &have, name, false, __ATOMIC_ACQ_REL,
                                                  __ATOMIC_ACQUIRE) ||
                      !have))
            return m;
        if (strcmp(have, name) == 0)
            return m;
    }
    return NULL;
}

void *ks_ossl_sym_of(int flavour, const char *name)
{
    struct memo *m = memo_slot(name);
    int f = flavour == KS_OSSL_111;
    void *p = m ? __atomic_load_n(&m->fn[f], __ATOMIC_ACQUIRE) : NULL;
    if (p)
        return p;
    KS_SAVE_ERRNO;
    p = f ? ossl111_sym(name) : ossl3_sym(name);
    KS_RESTORE_ERRNO;
    if (p && m)
        __atomic_store_n(&m->fn[f], p, __ATOMIC_RELEASE);
    return p;
}

void *ks_ossl_sym(const char *name)
{
    return ks_ossl_sym_of(ks_ossl_flavour(), name);
}
