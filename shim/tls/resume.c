/* resume.c — session resumption that works whichever worker a client
 * reaches next.
 *
 * Tickets (TLS 1.2 and 1.3): every worker encrypts and decrypts tickets with
 * the same keys, through SSL_CTX_set_tlsext_ticket_key_evp_cb. The keys live
 * in shared memory, made at random by the supervisor before it forks (or
 * read from KTLSSHIM_TICKET_KEY_FILE, 80 bytes: name 16, HMAC 32, AES 32, as
 * nginx's ssl_session_ticket_key), never written anywhere. Every
 * KTLSSHIM_TICKET_ROTATE seconds the supervisor makes a new key; the
 * previous one still decrypts (and the ticket is renewed), so a ticket lives
 * at most two periods. Readers copy keys under a sequence lock and wipe
 * their copy after use.
 *
 * Session IDs (TLS 1.2): a fixed-size table in shared memory, keyed by
 * session ID, holding each session's DER (which holds its master secret:
 * wiped when replaced or removed). An ID may sit in any of SESS_PROBE slots
 * from its hash; a new one takes a free slot there, else the one that
 * expires first (the oldest on a tie). The table is behind a robust
 * process-shared mutex, so that a worker dying while it holds the lock
 * cannot wedge the others (the table is wiped then, since an entry may be
 * half written), and the lock fails open: a worker that cannot have it
 * within LOCK_WAIT_NS (its holder stopped, SIGSTOP or a debugger) resumes
 * nothing from the table and stores nothing in it, and, until the lock is
 * free again, only tries it without waiting. A full handshake is the cost,
 * never a stall.
 *
 * The program's choices win: a context whose program set its own ticket
 * keys or callback, or its own session-cache callbacks, is left alone, and
 * a cache mode without SSL_SESS_CACHE_SERVER turns our cache off for it. */
#include "tls/resume.h"
#include "core/libc.h"
#include "core/config.h"
#include "core/log.h"
#include "tls/ossl/api.h"

#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SESS_SLOTS 4096
#define SESS_DER_MAX 2000
#define SESS_PROBE 8
#define LOCK_WAIT_NS 2000000 /* 2 ms: the critical sections copy 2 KB at most */

struct tkey {
    uint8_t name[16], hmac[32], aes[32];
    int64_t made_ms; /* 0: no key */
};

struct sess_slot {
    uint8_t id_len;
    uint8_t id[SSL_MAX_SSL_SESSION_ID_LENGTH];
    uint16_t der_len;
    int64_t expires; /* wall-clock seconds */
    uint64_t stored; /* insertion order (shared->stores), for ties */
    uint8_t der[SESS_DER_MAX];
};

struct shared {
    /* Fork: both locks below live in this mapping, which a fork child
     * shares, so no fork handler: a holder in another thread of the parent
     * lets go here, where the child sees it; one that dies leaves the
     * mutex EOWNERDEAD (robust); one that stops is waited for LOCK_WAIT_NS
     * at most (lock() fails open). Keys are written by the supervisor
     * alone, from the thread that forks. */
    uint32_t seq;         /* sequence lock over keys[] (odd: being written) */
    struct tkey keys[2];  /* [0] current, [1] previous */
    int fixed;            /* keys from a file: no rotation */
    pthread_mutex_t lock; /* robust, process-shared: guards slots[] and stores */
    int lock_stuck;       /* atomic: a wait for the lock timed out; try only */
    uint64_t stores;
    struct sess_slot slots[SESS_SLOTS];
};

static struct shared *sh;

/* resume.c's block of the one table of OpenSSL functions (tls/ossl/api.c). */
#define res_api ks_ossl_api.resume

static bool resolve(void)
{
    return ks_ossl_resume_load();
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool random_bytes(void *p, size_t n)
{
    uint8_t *b = p;
    while (n > 0) {
        ssize_t r = getrandom(b, n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        b += r;
        n -= (size_t)r;
    }
    return true;
}

/* ---- ticket keys ---- */

static void write_keys(const struct tkey *cur, const struct tkey *prev)
{
    __atomic_fetch_add(&sh->seq, 1, __ATOMIC_ACQ_REL);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    sh->keys[0] = *cur;
    if (prev)
        sh->keys[1] = *prev;
    __atomic_thread_fence(__ATOMIC_RELEASE);
    __atomic_fetch_add(&sh->seq, 1, __ATOMIC_ACQ_REL);
}

static void read_keys(struct tkey out[2])
{
    for (;;) {
        uint32_t a = __atomic_load_n(&sh->seq, __ATOMIC_ACQUIRE);
        if (a & 1)
            continue;
        memcpy(out, (const void *)sh->keys, sizeof sh->keys);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&sh->seq, __ATOMIC_ACQUIRE) == a)
            return;
    }
}

static bool key_from_file(const char *path, struct tkey *k)
{
    uint8_t buf[81];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ks_log_error("KTLSSHIM_TICKET_KEY_FILE=\"%s\" cannot be read: %s; using random keys "
                     "rotated every %d s",
                     path, strerror(errno), ks_config()->ticket_rotate);
        return false;
    }
    ssize_t n = ks_libc()->read(fd, buf, sizeof buf);
    close(fd);
    bool ok = n == 80;
    if (ok) {
        memcpy(k->name, buf, 16);
        memcpy(k->hmac, buf + 16, 32);
        memcpy(k->aes, buf + 48, 32);
        k->made_ms = mono_ms();
    } else {
        ks_log_error("KTLSSHIM_TICKET_KEY_FILE=\"%s\" holds %zd bytes: expected exactly 80 "
                     "(name 16, HMAC key 32, AES key 32, as nginx's ssl_session_ticket_key); "
                     "using random keys rotated every %d s",
                     path, n, ks_config()->ticket_rotate);
    }
    explicit_bzero(buf, sizeof buf);
    return ok;
}

static bool new_random_key(struct tkey *k)
{
    if (!random_bytes(k, offsetof(struct tkey, made_ms)))
        return false;
    k->made_ms = mono_ms();
    return true;
}

/* Sets up the shared state in p (sizeof *sh bytes, shared, zeroed) and
 * makes sh point at it; false if no first key could be made. */
static bool init_shared(void *p)
{
    struct shared *s = p;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&s->lock, &a);
    pthread_mutexattr_destroy(&a);
    sh = s;
    struct tkey k;
    const char *file = ks_config()->ticket_key_file;
    if (file[0] && key_from_file(file, &k)) {
        sh->fixed = 1;
    } else if (!new_random_key(&k)) {
        sh = NULL;
        return false;
    }
    write_keys(&k, NULL);
    explicit_bzero(&k, sizeof k);
    return true;
}

bool ks_resume_prepare(void)
{
    if (sh)
        return true;
    void *p = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return false;
    if (!init_shared(p)) {
        munmap(p, sizeof *sh);
        return false;
    }
    return true;
}

int ks_resume_prepare_for_exec(void)
{
    if (sh)
        return -1;
    int fd = memfd_create("ktlsshim-sessions", MFD_CLOEXEC);
    if (fd < 0)
        return -1;
    void *p = MAP_FAILED;
    if (ftruncate(fd, (off_t)sizeof *sh) == 0)
        p = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    if (p == MAP_FAILED || !init_shared(p)) {
        if (p != MAP_FAILED)
            munmap(p, sizeof *sh);
        close(fd);
        return -1;
    }
    return fd;
}

bool ks_resume_attach(int fd)
{
    struct stat st;
    void *p = MAP_FAILED;
    if (!sh && fstat(fd, &st) == 0 && st.st_size == (off_t)sizeof *sh)
        p = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    close(fd);
    if (p == MAP_FAILED)
        return false;
    sh = p;
    return true;
}

int64_t ks_resume_next_rotation_ms(void)
{
    if (!sh || sh->fixed)
        return -1;
    return sh->keys[0].made_ms + (int64_t)ks_config()->ticket_rotate * 1000;
}

void ks_resume_rotate_if_due(int64_t now_ms)
{
    int64_t due = ks_resume_next_rotation_ms();
    if (due < 0 || now_ms < due)
        return;
    struct tkey k, prev = sh->keys[0]; /* the supervisor is the only writer */
    if (new_random_key(&k)) {
        write_keys(&k, &prev);
        ks_log_debug("session ticket key rotated");
    }
    explicit_bzero(&k, sizeof k);
    explicit_bzero(&prev, sizeof prev);
}

static int mac_init(EVP_MAC_CTX *hctx, uint8_t *hmac)
{
    OSSL_PARAM params[3] = {
        {OSSL_MAC_PARAM_KEY, OSSL_PARAM_OCTET_STRING, hmac, 32, OSSL_PARAM_UNMODIFIED},
        {OSSL_MAC_PARAM_DIGEST, OSSL_PARAM_UTF8_STRING, (char *)"SHA256", 6, OSSL_PARAM_UNMODIFIED},
        {NULL, 0, NULL, 0, 0},
    };
    return res_api.mac_set_params(hctx, params);
}

/* libssl's ticket callback contract: on encrypt fill name and iv and return
 * 1; on decrypt return 1 (key found), 2 (found, renew the ticket) or 0
 * (unknown key: full handshake). -1 is an error.
 *
 * TLS 1.3 always renews: libssl 3.0 sends a resumed TLS 1.3 client new
 * tickets only if the callback asks for it, and clients that use each
 * ticket once (wrk, browsers) would otherwise fall back to a full handshake
 * every other connection. TLS 1.2 renews when the previous key was used. */
static int ticket_cb(SSL *s, unsigned char *name, unsigned char *iv, EVP_CIPHER_CTX *ectx,
                     EVP_MAC_CTX *hctx, int enc)
{
    struct tkey k[2];
    int ret = 0;
    read_keys(k);
    if (enc) {
        memcpy(name, k[0].name, 16);
        if (res_api.rand_bytes(iv, 16) > 0 &&
            res_api.enc_init(ectx, res_api.aes_256_cbc(), NULL, k[0].aes, iv) &&
            mac_init(hctx, k[0].hmac))
            ret = 1;
        else
            ret = -1;
    } else {
        for (int i = 0; i < 2; i++) {
            if (!k[i].made_ms || memcmp(name, k[i].name, 16) != 0)
                continue;
            if (res_api.dec_init(ectx, res_api.aes_256_cbc(), NULL, k[i].aes, iv) &&
                mac_init(hctx, k[i].hmac))
                ret = i == 0 && res_api.version(s) != TLS1_3_VERSION ? 1 : 2;
            else
                ret = -1;
            break;
        }
    }
    res_api.cleanse(k, sizeof k);
    return ret;
}

/* ---- the shared session-ID cache ---- */

/* True if we hold the lock. Fails open (see the top of the file). */
static bool lock(void)
{
    int r;
    if (__atomic_load_n(&sh->lock_stuck, __ATOMIC_RELAXED)) {
        r = pthread_mutex_trylock(&sh->lock);
    } else {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += LOCK_WAIT_NS;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        r = pthread_mutex_clocklock(&sh->lock, CLOCK_MONOTONIC, &until);
    }
    if (r == EOWNERDEAD) {
        /* A worker died holding the lock: an entry may be half written. */
        explicit_bzero(sh->slots, sizeof sh->slots);
        pthread_mutex_consistent(&sh->lock);
        r = 0;
    }
    if (r == 0) {
        if (__atomic_load_n(&sh->lock_stuck, __ATOMIC_RELAXED))
            __atomic_store_n(&sh->lock_stuck, 0, __ATOMIC_RELAXED);
        return true;
    }
    if (r == ETIMEDOUT || r == EBUSY) {
        static int said; /* once per process */
        if (!__atomic_load_n(&sh->lock_stuck, __ATOMIC_RELAXED))
            __atomic_store_n(&sh->lock_stuck, 1, __ATOMIC_RELAXED);
        if (!__atomic_exchange_n(&said, 1, __ATOMIC_RELAXED))
            ks_log_info("the shared TLS session cache is locked by a worker that does not "
                        "release it (stopped?): this worker resumes nothing from it until it "
                        "is free (full handshakes instead)");
    } else {
        ks_log_error("the shared TLS session cache lock: %s; not using it for this "
                     "connection",
                     strerror(r));
    }
    return false;
}

static void unlock(void)
{
    pthread_mutex_unlock(&sh->lock);
}

static uint32_t hash_id(const uint8_t *id, unsigned len)
{
    uint32_t h = 2166136261u;
    for (unsigned i = 0; i < len; i++)
        h = (h ^ id[i]) * 16777619u;
    return h;
}

/* The program's cache mode decides, read at each use: off, or "pretend"
 * (SERVER with NO_INTERNAL_STORE and no callbacks, nginx's default "none"),
 * keeps our cache out too. */
static bool cache_on(SSL_CTX *ctx)
{
    if (!ctx)
        return false;
    long mode = res_api.CTX_ctrl(ctx, SSL_CTRL_GET_SESS_CACHE_MODE, 0, NULL);
    return (mode & SSL_SESS_CACHE_SERVER) && !(mode & SSL_SESS_CACHE_NO_INTERNAL_STORE);
}

static struct sess_slot *find(const uint8_t *id, unsigned len)
{
    uint32_t h = hash_id(id, len);
    for (unsigned i = 0; i < SESS_PROBE; i++) {
        struct sess_slot *sl = &sh->slots[(h + i) % SESS_SLOTS];
        if (sl->id_len == len && memcmp(sl->id, id, len) == 0)
            return sl;
    }
    return NULL;
}

static int new_cb(SSL *s, SSL_SESSION *sess)
{
    unsigned len = 0;
    const unsigned char *id = res_api.sess_get_id(sess, &len);
    if (!cache_on(res_api.get_SSL_CTX(s)) || len == 0 || len > SSL_MAX_SSL_SESSION_ID_LENGTH)
        return 0;
    int der_len = res_api.i2d(sess, NULL);
    if (der_len <= 0 || der_len > SESS_DER_MAX)
        return 0;
    uint8_t der[SESS_DER_MAX];
    unsigned char *p = der;
    if (res_api.i2d(sess, &p) != der_len) {
        res_api.cleanse(der, sizeof der);
        return 0;
    }
    int64_t expires = (int64_t)res_api.sess_get_time(sess) + res_api.sess_get_timeout(sess);
    uint32_t h = hash_id(id, len);
    if (!lock()) {
        res_api.cleanse(der, sizeof der);
        return 0;
    }
    struct sess_slot *victim = find(id, len);
    if (!victim) {
        /* A free slot, else the one that expires first, else the oldest. */
        for (unsigned i = 0; i < SESS_PROBE; i++) {
            struct sess_slot *sl = &sh->slots[(h + i) % SESS_SLOTS];
            if (sl->id_len == 0) {
                victim = sl;
                break;
            }
            if (!victim || sl->expires < victim->expires ||
                (sl->expires == victim->expires && sl->stored < victim->stored))
                victim = sl;
        }
    }
    explicit_bzero(victim, sizeof *victim);
    victim->id_len = (uint8_t)len;
    memcpy(victim->id, id, len);
    victim->der_len = (uint16_t)der_len;
    victim->expires = expires;
    victim->stored = ++sh->stores;
    memcpy(victim->der, der, (size_t)der_len);
    unlock();
    res_api.cleanse(der, sizeof der);
    return 0; /* we keep no reference to sess */
}

static SSL_SESSION *get_cb(SSL *s, const unsigned char *id, int len, int *copy)
{
    *copy = 0;
    if (len <= 0 || len > SSL_MAX_SSL_SESSION_ID_LENGTH || !cache_on(res_api.get_SSL_CTX(s)))
        return NULL;
    uint8_t der[SESS_DER_MAX];
    int der_len = 0;
    if (!lock())
        return NULL; /* resume nothing rather than wait */
    struct sess_slot *sl = find(id, (unsigned)len);
    if (sl && sl->expires > (int64_t)time(NULL)) {
        der_len = sl->der_len;
        memcpy(der, sl->der, (size_t)der_len);
    }
    unlock();
    SSL_SESSION *sess = NULL;
    if (der_len > 0) {
        const unsigned char *p = der;
        sess = res_api.d2i(NULL, &p, der_len); /* our reference goes to libssl */
        res_api.cleanse(der, (size_t)der_len);
    }
    return sess;
}

static void remove_cb(SSL_CTX *ctx, SSL_SESSION *sess)
{
    (void)ctx;
    unsigned len = 0;
    const unsigned char *id = res_api.sess_get_id(sess, &len);
    if (len == 0 || len > SSL_MAX_SSL_SESSION_ID_LENGTH || !lock())
        return;
    struct sess_slot *sl = find(id, len);
    if (sl)
        explicit_bzero(sl, sizeof *sl);
    unlock();
}

bool ks_resume_install(SSL_CTX *ctx, bool own_tickets)
{
    if (!sh || !ctx || !resolve())
        return false;
    if (!res_api.get_new_cb(ctx) && !res_api.get_get_cb(ctx)) {
        res_api.set_new_cb(ctx, new_cb);
        res_api.set_get_cb(ctx, get_cb);
        res_api.set_remove_cb(ctx, remove_cb);
    }
    return !own_tickets && res_api.set_ticket_cb(ctx, ticket_cb);
}

void ks_resume_drop_tickets(SSL_CTX *ctx)
{
    if (resolve())
        res_api.set_ticket_cb(ctx, NULL);
}
