/* tls/ossl/copies.c — which copy of OpenSSL 3 a hooked call belongs to.
 *
 * Why: a process can hold two copies of OpenSSL 3 with the same symbol
 * versions: Python's ssl on the system's libssl.so.3 next to a wheel that
 * brings its own (renamed libssl-<hash>.so.3, loaded RTLD_LOCAL), or a copy
 * opened by path through ctypes. This library is preloaded, so it comes
 * first in the global scope: every call either copy's users make to a
 * hooked name (and every call a copy makes to its own exported functions)
 * lands on the same gate. The bodies work with one copy ("the served one",
 * tls/ossl/api.c's table); handing them the other copy's objects would make
 * one OpenSSL work on another's memory. So once a second copy is seen the
 * gates ask here whose call it is, and the other copy's calls go to its own
 * real function, untouched (hooks.other_copy).
 *
 * How a call is told apart, strongest first:
 *  1. by the code that made it: a return address inside an OpenSSL image
 *     (a copy calling its own exported function through its PLT);
 *  2. by the object: a method is static data inside its libssl; an SSL or
 *     SSL_CTX is remembered when a gate saw it made, or first saw it passed
 *     by a copy's own code (1.);
 *  3. by what the calling object would have found without this library:
 *     the global scope after us, then its own dependencies (the loader's
 *     rule), e.g. a wheel's extension module finds its own libssl.
 * When none of these tells, the call goes to the served copy, as before.
 *
 * Until a second copy is seen this costs nothing on the hot path: the
 * gates test one word (tls/ossl/gates.c). A copy is looked for where one can
 * first show itself: the method given to SSL_CTX_new/_ex (its object), and
 * the list of loaded objects after a dlopen (at SSL_new and SSL_clear).
 *
 * Limits: two copies of OpenSSL 1.1 are not told apart; a copy's images
 * are held open (dlopen RTLD_NOLOAD) once seen, so they are never unloaded. */
#include "tls/ossl/copies.h"
#include "core/common.h"
#include "core/log.h"
#include "tls/ossl/gates.h"
#include "core/libc.h"
#include "stats/stats.h"
#include "tls/ossl/sym.h"

#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define OSSL3_VERSION "OPENSSL_3.0.0"

int ks_ossl_copies_many;

/* ---- images: the loaded objects calls and objects are found in ---- */

/* self: KS_COPY_SERVED, its copy number (index + 1) for another OpenSSL
 * image, or -1. scope[lib]: for an image that is not OpenSSL's, the copy
 * its own lookups of libssl's (lib 0) or libcrypto's (lib 1) names find. */
struct image {
    const void *base; /* written last (release): the entry is whole */
    void *handle;     /* held: a copy's functions are looked up in it */
    signed char self;
    signed char scope[2];
};
static struct image images[KS_COPIES_MAX];
static unsigned images_used; /* atomic; may pass KS_COPIES_MAX (then full) */

static const char *const probe_name[2] = {"SSL_CTX_new_ex", "BIO_ctrl"};

/* The served copy's libssl and libcrypto images, once known. */
static const void *served_base[2];

/* The loaded object p is inside: its lowest mapped address (dladdr's
 * dli_fbase) and, if fname, its file name (dli_fname). glibc 2.35's
 * _dl_find_object answers without the lock and without dladdr's search of
 * the object's symbol table for the nearest name (tens of thousands of
 * instructions in libcrypto); dladdr otherwise. */
typedef int (*find_object_fn)(void *, struct dl_find_object *);
static find_object_fn find_object(void)
{
#ifdef DLFO_STRUCT_HAS_EH_DBASE
    static find_object_fn fn;
    static int looked; /* atomic */
    if (!__atomic_load_n(&looked, __ATOMIC_ACQUIRE)) {
        __atomic_store_n(&fn, (find_object_fn)dlsym(RTLD_DEFAULT, "_dl_find_object"),
                         __ATOMIC_RELAXED);
        __atomic_store_n(&looked, 1, __ATOMIC_RELEASE);
    }
    return __atomic_load_n(&fn, __ATOMIC_RELAXED);
#else
    return NULL;
#endif
}

static const void *base_of(const void *p, const char **fname)
{
    if (!p)
        return NULL;
    find_object_fn find = find_object();
    if (find) {
#ifdef DLFO_STRUCT_HAS_EH_DBASE
        struct dl_find_object o;
        if (find((void *)p, &o) != 0)
            return NULL;
        const char *name = o.dlfo_link_map ? o.dlfo_link_map->l_name : NULL;
        /* The program's own image has no name there; dladdr's is its path. */
        if (!fname || (name && *name)) {
            if (fname)
                *fname = name;
            return o.dlfo_map_start;
        }
#endif
    }
    Dl_info i;
    if (!dladdr(p, &i))
        return NULL;
    if (fname)
        *fname = i.dli_fname;
    return i.dli_fbase;
}

static const void *own_base(void)
{
    static const void *mine;
    const void *b = __atomic_load_n(&mine, __ATOMIC_RELAXED);
    if (!b && (b = base_of((const void *)own_base, NULL)))
        __atomic_store_n(&mine, b, __ATOMIC_RELAXED);
    return b;
}

/* What the served lookups (core/libc.c) find: the copy the bodies work with.
 * Not known while no libssl.so.3 can be found (a process whose only
 * OpenSSL 3 is a renamed copy); asked again until it is. */
static bool is_served(const void *base)
{
    for (int lib = 0; lib < 2; lib++) {
        const void *s = __atomic_load_n(&served_base[lib], __ATOMIC_ACQUIRE);
        if (!s) {
            s = base_of(ks_ossl_sym_of(KS_OSSL_30, probe_name[lib]), NULL);
            if (s)
                __atomic_store_n(&served_base[lib], s, __ATOMIC_RELEASE);
        }
        if (s && s == base)
            return true;
    }
    return false;
}

/* The definition of `name` that handle h's lookup finds, or NULL (never
 * one of ours: this library's gates are not OpenSSL). */
static void *lookup(void *h, const char *name)
{
    void *p = dlvsym(h, name, OSSL3_VERSION);
    return p && base_of(p, NULL) == own_base() ? NULL : p;
}

/* Is the image at base (file fname, handle h) an OpenSSL 3 libssl or
 * libcrypto itself (it defines the probe names, rather than a dependency)? */
static bool defines_openssl(void *h, const void *base)
{
    for (int lib = 0; lib < 2; lib++)
        if (base_of(lookup(h, probe_name[lib]), NULL) == base)
            return true;
    return false;
}

static void set_many(const char *file);
static int image_self(const void *base, const char *fname);

/* The copy a function found by a lookup belongs to (served when none). */
static int copy_of_fn(void *p)
{
    const char *fname = NULL;
    const void *base = base_of(p, &fname);
    if (!base)
        return KS_COPY_SERVED;
    int c = image_self(base, fname);
    return c < 0 ? KS_COPY_SERVED : c;
}

static struct image *image_find(const void *base)
{
    unsigned n = __atomic_load_n(&images_used, __ATOMIC_ACQUIRE);
    if (n > KS_COPIES_MAX)
        n = KS_COPIES_MAX;
    for (unsigned i = 0; i < n; i++)
        if (__atomic_load_n(&images[i].base, __ATOMIC_ACQUIRE) == base)
            return &images[i];
    return NULL;
}

/* Finds or enters the image at base. Returns NULL only when the table is
 * full (the caller then works without it). Two threads may enter the same
 * image twice: both entries are right, the first one is found. */
static struct image *image_get(const void *base, const char *fname)
{
    struct image *im = image_find(base);
    if (im)
        return im;
    void *h =
        fname && *fname ? ks_libc()->dlopen(fname, RTLD_LAZY | RTLD_LOCAL | RTLD_NOLOAD) : NULL;
    signed char self = -1;
    if (base == own_base())
        self = -1;
    else if (is_served(base))
        self = KS_COPY_SERVED;
    else if (h && defines_openssl(h, base))
        self = 1; /* numbered below */
    signed char scope[2] = {self, self};
    if (self < 0)
        for (int lib = 0; lib < 2; lib++) {
            /* The loader's rule for this object's own calls: the global
             * scope after this library, then its own dependencies. */
            void *p = lookup(RTLD_NEXT, probe_name[lib]);
            if (!p && h)
                p = lookup(h, probe_name[lib]);
            scope[lib] = (signed char)copy_of_fn(p);
        }
    unsigned i = __atomic_fetch_add(&images_used, 1, __ATOMIC_ACQ_REL);
    if (i >= KS_COPIES_MAX) {
        static int said;
        if (!__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
            ks_log_error("more than %d objects take part in OpenSSL calls of two copies; "
                         "the others' calls go to the served copy",
                         KS_COPIES_MAX);
        if (h)
            dlclose(h);
        return NULL;
    }
    im = &images[i];
    if (self > 0) {
        self = (signed char)(i + 1);
        scope[0] = scope[1] = self;
        im->handle = h; /* held: the copy's functions are looked up in it */
    } else if (h) {
        dlclose(h);
    }
    im->self = self;
    im->scope[0] = scope[0];
    im->scope[1] = scope[1];
    __atomic_store_n(&im->base, base, __ATOMIC_RELEASE);
    if (self > 0)
        set_many(fname);
    return im;
}

/* KS_COPY_SERVED, a copy number, or -1 (not an OpenSSL image). */
static int image_self(const void *base, const char *fname)
{
    struct image *im = image_get(base, fname);
    return im ? im->self : (is_served(base) ? KS_COPY_SERVED : -1);
}

static void set_many(const char *file)
{
    if (__atomic_exchange_n(&ks_ossl_copies_many, 1, __ATOMIC_ACQ_REL))
        return;
    __atomic_or_fetch(&ks_ossl_gate_now, KS_GATE_COPIES, __ATOMIC_ACQ_REL);
    ks_log_info("this process holds a second copy of OpenSSL 3 (%s): from now on each OpenSSL "
                "call goes to the copy it belongs to; the other copy's calls pass through "
                "untouched (hooks.other_copy)",
                file ? file : "?");
}

/* ---- looking for a second copy ---- */

void ks_copies_probe_method(const void *method)
{
    if (!method || __atomic_load_n(&ks_ossl_copies_many, __ATOMIC_RELAXED))
        return;
    KS_SAVE_ERRNO;
    const char *fname = NULL;
    const void *base = base_of(method, &fname);
    if (base && base != __atomic_load_n(&served_base[0], __ATOMIC_RELAXED))
        (void)image_self(base, fname); /* enters it; a copy sets many */
    KS_RESTORE_ERRNO;
}

/* ---- knowing when objects were loaded ----
 *
 * The list of loaded objects is looked at once (the first SSL_new or
 * SSL_clear: what the program started with) and then only after a dlopen or
 * dlmopen, which this library hooks: an SSL_new otherwise costs a thread-local
 * read and two atomic loads, never the loader's lock.
 *
 * The hooks hand over to the real function by a tail call: dlopen finds the
 * namespace, DT_RPATH/DT_RUNPATH and $ORIGIN of its caller from its return
 * address, which must stay the program's. So they cannot say when the load
 * is over, only that one began: they move the generation (dl_gen) and mark
 * their thread as possibly loading (counted in dl_loading) until the thread
 * is seen again outside the load (its next SSL_new/SSL_clear, its next
 * dlopen, its exit, or a fork it made). A look at the list settles a
 * generation only if no thread was marked when the generation was read:
 * otherwise a load begun before the look could finish after it. While some
 * thread stays marked, each SSL_new asks the loader's adds counter (one
 * callback of dl_iterate_phdr), as it did before the hooks.
 *
 * Objects libc loads itself (NSS modules, iconv's gconv) do not go through
 * dlopen: they are seen at the next look the hooks cause. */
static unsigned long dl_gen = 1;  /* atomic: moved by each dlopen/dlmopen */
static unsigned long dl_gen_seen; /* atomic: looked at with no load under way */
static int dl_loading;            /* atomic: threads marked as possibly loading */
static __thread char dl_mine __attribute__((tls_model("initial-exec")));
static pthread_key_t dl_key;
static pthread_once_t dl_key_once = PTHREAD_ONCE_INIT;

static void dl_settle(void)
{
    if (dl_mine) {
        dl_mine = 0;
        __atomic_sub_fetch(&dl_loading, 1, __ATOMIC_SEQ_CST);
    }
}

static void dl_thread_exit(void *v)
{
    (void)v;
    dl_settle();
}

static void dl_key_make(void)
{
    if (pthread_key_create(&dl_key, dl_thread_exit) != 0)
        dl_key = (pthread_key_t)-1;
}

static void dl_begin(void)
{
    if (!dl_mine) {
        KS_SAVE_ERRNO;
        pthread_once(&dl_key_once, dl_key_make);
        if (dl_key != (pthread_key_t)-1 && pthread_setspecific(dl_key, &dl_mine) == 0) {
            /* Counted first, then the generation moved: a look that reads
             * the new generation also sees this thread counted. */
            dl_mine = 1;
            __atomic_add_fetch(&dl_loading, 1, __ATOMIC_SEQ_CST);
        } else {
            /* No way to be told of this thread's exit: never settle. */
            __atomic_store_n(&dl_gen_seen, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&dl_loading, 1 << 30, __ATOMIC_SEQ_CST);
        }
        KS_RESTORE_ERRNO;
    }
    __atomic_add_fetch(&dl_gen, 1, __ATOMIC_SEQ_CST);
}

void ks_copies_after_fork_child(void)
{
    /* The one thread left is the one that forked: not inside a load. */
    dl_mine = 0;
    if (__atomic_load_n(&dl_loading, __ATOMIC_RELAXED) < (1 << 30))
        __atomic_store_n(&dl_loading, 0, __ATOMIC_RELAXED);
}

/* Tail calls (see above: the compiler makes `return f(...)` one at -O2,
 * which the library is always built with); errno and dlerror() are the
 * real call's. An unoptimised build would make them calls, and a program's
 * dlopen would search this library's paths instead of its own: refused. */
#ifndef __OPTIMIZE__
#error "dlopen's hook must be a tail call: build with -O1 or more"
#endif
KS_EXPORT void *dlopen(const char *file, int mode)
{
    dl_begin();
    return ks_libc()->dlopen(file, mode);
}

KS_EXPORT void *dlmopen(Lmid_t lmid, const char *file, int mode)
{
    dl_begin();
    return ks_libc()->dlmopen(lmid, file, mode);
}

static int adds_of(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    *(unsigned long long *)data = info->dlpi_adds;
    return 1;
}
/* The loaded objects' names and bases, copied while the loader's list is
 * held (no allocation in there: an allocator may itself walk the list). */
#define LOADED_MAX 256
struct loaded {
    const void *base[LOADED_MAX];
    char name[LOADED_MAX][256];
    int n;
};

/* Is [p, p + n) inside one readable segment of the object? */
static bool mapped(const struct dl_phdr_info *info, uintptr_t p, size_t n)
{
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_R) && p >= lo && n <= ph->p_memsz &&
            p - lo <= ph->p_memsz - n)
            return true;
    }
    return false;
}

/* The object's GNU hash table header, or NULL. The loader relocates most
 * .dynamic entries in place; a read-only .dynamic (the vDSO's) keeps them
 * as offsets. Either way, only an address inside the object is used. */
static const uint32_t *gnu_hash_of(const struct dl_phdr_info *info)
{
    for (int i = 0; i < info->dlpi_phnum; i++) {
        if (info->dlpi_phdr[i].p_type != PT_DYNAMIC)
            continue;
        const ElfW(Dyn) *d = (const ElfW(Dyn) *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
        size_t max = info->dlpi_phdr[i].p_memsz / sizeof *d;
        if (!mapped(info, (uintptr_t)d, max * sizeof *d))
            return NULL;
        for (size_t k = 0; k < max && d[k].d_tag != DT_NULL; k++) {
            if (d[k].d_tag != DT_GNU_HASH)
                continue;
            uintptr_t p = d[k].d_un.d_ptr;
            if (!mapped(info, p, 16))
                p += info->dlpi_addr;
            if (!mapped(info, p, 16))
                return NULL;
            const uint32_t *h = (const uint32_t *)p;
            if (h[2] == 0 || !mapped(info, p + 16, (size_t)h[2] * sizeof(ElfW(Addr))))
                return NULL;
            return h;
        }
    }
    return NULL;
}

/* Can the object define `name` itself? False only when its GNU hash
 * table's Bloom filter says it does not (which is never wrong); true when
 * there is no such table to ask. */
static bool may_define(const uint32_t *gh, const char *name)
{
    if (!gh)
        return true;
    uint32_t h = 5381;
    for (const unsigned char *c = (const unsigned char *)name; *c; c++)
        h = h * 33 + *c;
    const unsigned bits = sizeof(ElfW(Addr)) * 8;
    const ElfW(Addr) *bloom = (const ElfW(Addr) *)(gh + 4);
    ElfW(Addr) word = bloom[(h / bits) % gh[2]];
    ElfW(Addr) mask = ((ElfW(Addr))1 << (h % bits)) | ((ElfW(Addr))1 << ((h >> gh[3]) % bits));
    return (word & mask) == mask;
}

static int collect(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    struct loaded *l = data;
    if (l->n >= LOADED_MAX)
        return 1;
    const char *name = info->dlpi_name;
    size_t len = name ? strlen(name) : 0;
    if (len == 0 || len >= sizeof l->name[0])
        return 0;
    /* An object that cannot define either name is not OpenSSL's: not
     * asked further (a symbol lookup of its own per object, otherwise). */
    const uint32_t *gh = gnu_hash_of(info);
    if (!may_define(gh, probe_name[0]) && !may_define(gh, probe_name[1]))
        return 0;
    /* dlpi_addr is the load bias; dladdr's dli_fbase is the lowest mapped
     * address: the first PT_LOAD's, as the loader maps it. */
    const void *base = (const void *)info->dlpi_addr;
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_LOAD) {
            base = (const void *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
            break;
        }
    l->base[l->n] = base;
    memcpy(l->name[l->n++], name, len + 1);
    return 0;
}

void ks_copies_probe_loaded(void)
{
    static unsigned long long adds_seen;
    if (__atomic_load_n(&ks_ossl_copies_many, __ATOMIC_RELAXED))
        return;
    dl_settle(); /* this thread is past any load it began */
    unsigned long gen = __atomic_load_n(&dl_gen, __ATOMIC_SEQ_CST);
    if (gen == __atomic_load_n(&dl_gen_seen, __ATOMIC_RELAXED))
        return;
    bool settles = __atomic_load_n(&dl_loading, __ATOMIC_SEQ_CST) == 0;
    unsigned long long adds = 0;
    dl_iterate_phdr(adds_of, &adds);
    if (adds != __atomic_load_n(&adds_seen, __ATOMIC_RELAXED)) {
        __atomic_store_n(&adds_seen, adds, __ATOMIC_RELAXED);
        KS_SAVE_ERRNO;
        struct loaded *l = calloc(1, sizeof *l);
        if (l) {
            dl_iterate_phdr(collect, l);
            for (int i = 0; i < l->n; i++) {
                /* Only OpenSSL images are entered; the rest are not kept. */
                void *h = ks_libc()->dlopen(l->name[i], RTLD_LAZY | RTLD_LOCAL | RTLD_NOLOAD);
                if (h) {
                    bool ossl = l->base[i] != own_base() && defines_openssl(h, l->base[i]);
                    dlclose(h);
                    if (ossl)
                        (void)image_self(l->base[i], l->name[i]);
                }
            }
            free(l);
        }
        KS_RESTORE_ERRNO;
    }
    if (settles)
        __atomic_store_n(&dl_gen_seen, gen, __ATOMIC_RELAXED);
}

/* ---- the objects: what copy made them ---- */

/* Open addressing, never shrinking: a key is an object's address, the value
 * its copy + 1 (0: being written). An address freed by one copy and reused
 * by another is corrected when a gate sees it made again. */
#define OBJ_SLOTS 16384
#define OBJ_PROBES 32
static uintptr_t obj_key[OBJ_SLOTS];
static signed char obj_copy[OBJ_SLOTS];

static unsigned obj_slot(uintptr_t k)
{
    return (unsigned)(((k >> 4) * 0x9E3779B97F4A7C15ull) >> 50) % OBJ_SLOTS;
}

static void remember(const void *obj, int copy, bool insert)
{
    uintptr_t k = (uintptr_t)obj;
    if (!k || copy < 0)
        return;
    unsigned s = obj_slot(k);
    for (int i = 0; i < OBJ_PROBES; i++, s = (s + 1) % OBJ_SLOTS) {
        uintptr_t cur = __atomic_load_n(&obj_key[s], __ATOMIC_ACQUIRE);
        if (cur == 0) {
            if (!insert)
                return;
            if (!__atomic_compare_exchange_n(&obj_key[s], &cur, k, false, __ATOMIC_ACQ_REL,
                                             __ATOMIC_ACQUIRE) &&
                cur != k)
                continue;
            cur = k;
        }
        if (cur == k) {
            __atomic_store_n(&obj_copy[s], (signed char)(copy + 1), __ATOMIC_RELEASE);
            return;
        }
    }
}

static int remembered(const void *obj)
{
    uintptr_t k = (uintptr_t)obj;
    if (!k)
        return -1;
    unsigned s = obj_slot(k);
    for (int i = 0; i < OBJ_PROBES; i++, s = (s + 1) % OBJ_SLOTS) {
        uintptr_t cur = __atomic_load_n(&obj_key[s], __ATOMIC_ACQUIRE);
        if (cur == 0)
            return -1;
        if (cur == k) {
            int v = __atomic_load_n(&obj_copy[s], __ATOMIC_ACQUIRE);
            return v > 0 ? v - 1 : -1;
        }
    }
    return -1;
}

void ks_copies_made(const void *obj, int copy)
{
    remember(obj, copy, true);
}

/* ---- routing ---- */

/* A return address's answer, cached: the address (47 bits), the library
 * asked (bit 47) and the answer (bits 56-63: copy + 1, bit 63 "strong":
 * the caller's code is an OpenSSL image). */
#define RA_SLOTS 1024
static uint64_t ra_cache[RA_SLOTS];

static int by_caller(const void *ra, int lib, bool *strong)
{
    uint64_t key = ((uint64_t)(uintptr_t)ra & ((1ull << 47) - 1)) | ((uint64_t)lib << 47);
    unsigned s = (unsigned)((key * 0x9E3779B97F4A7C15ull) >> 54) % RA_SLOTS;
    uint64_t e = __atomic_load_n(&ra_cache[s], __ATOMIC_RELAXED);
    if (e && (e & ((1ull << 56) - 1)) == key) {
        unsigned v = (unsigned)(e >> 56);
        *strong = v & 0x80;
        return (int)(v & 0x7f) - 1;
    }
    const char *fname = NULL;
    const void *base = base_of(ra, &fname);
    struct image *im = base ? image_get(base, fname) : NULL;
    int c = KS_COPY_SERVED;
    *strong = false;
    if (im && im->self >= 0) {
        c = im->self;
        *strong = true;
    } else if (im) {
        c = im->scope[lib];
    }
    if (im) { /* a full table answers "served", uncached */
        uint64_t v = (uint64_t)(c + 1) | (*strong ? 0x80u : 0u);
        __atomic_store_n(&ra_cache[s], key | (v << 56), __ATOMIC_RELAXED);
    }
    return c;
}

int ks_copies_route(enum ks_copy_kind kind, const void *obj, const void *ra)
{
    KS_SAVE_ERRNO;
    bool strong = false;
    int c = by_caller(ra, kind == KS_COPY_BIO, &strong);
    if (strong) {
        /* A copy's own code: its objects are its own. Remember them for its
         * tail calls (e.g. SSL_accept -> SSL_do_handshake), whose return
         * address is its caller's. */
        if (kind != KS_COPY_METHOD)
            remember(obj, c, c != KS_COPY_SERVED);
    } else if (kind == KS_COPY_METHOD) {
        const char *fname = NULL;
        const void *base = base_of(obj, &fname);
        int m = base ? image_self(base, fname) : -1;
        if (m >= 0)
            c = m;
    } else {
        int r = remembered(obj);
        if (r >= 0)
            c = r;
    }
    KS_RESTORE_ERRNO;
    return c;
}

void *ks_copies_fn(void **slot, int copy, const char *name)
{
    ks_count(KS_C_HOOKS_OTHER_COPY, 1);
    void *p = __atomic_load_n(&slot[copy], __ATOMIC_ACQUIRE);
    if (p)
        return p;
    KS_SAVE_ERRNO;
    struct image *im = copy >= 1 && copy <= KS_COPIES_MAX ? &images[copy - 1] : NULL;
    if (im && im->handle)
        p = lookup(im->handle, name);
    if (p) {
        __atomic_store_n(&slot[copy], p, __ATOMIC_RELEASE);
    } else {
        static int said;
        if (!__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
            ks_log_error("cannot find %s in the other copy of OpenSSL 3; failing the call", name);
    }
    KS_RESTORE_ERRNO;
    return p;
}
