/* test_copies.c — tls/ossl/copies.c: telling two copies of OpenSSL 3 apart,
 * against real libraries. This program links the system's libssl.so.3 (the
 * served copy: it is in the global scope) and opens a byte-for-byte copy of
 * it from another path with dlopen(RTLD_LOCAL), as a ctypes user or a
 * wheel does: a second image with the same symbol versions. Its methods,
 * code addresses and functions are the real ones. Also the object table on
 * its own: remembering, correcting, a full neighbourhood, threads. */
#define TEST_MAIN
#include "harness.h"

#include "core/config.h"
static struct ks_config stub_config = {.shards = 1, .ktls = 1, .log_level = 1};
const struct ks_config *ks_config(void)
{
    return &stub_config;
}

#include "stats/sigcatch.h"
void ks_signals_catch(void)
{
}
void ks_signals_release(void)
{
}

#include "../../shim/core/log.c"
#include "../../shim/core/libc.c"
#include "../../shim/core/fds.c"
#include "../../shim/tls/ossl/sym.c"
#include "../../shim/stats/stats.c"
#include "../../shim/stats/pool.c"
#include "../../shim/stats/emit.c"
#include "promfile_stub.h"
#include "../../shim/tls/ossl/copies.c"

#include <fcntl.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/wait.h>

__thread int ks_hook_depth __attribute__((tls_model("initial-exec")));
int ks_ossl_gate_now;
int (*const keep_libssl)(const SSL *) = SSL_version;

/* A copy of the loaded libssl.so.3 at another path, opened RTLD_LOCAL. */
static void *open_copy(void)
{
    Dl_info i;
    if (!dladdr((void *)SSL_version, &i))
        return NULL;
    char dir[] = "/tmp/test_copies.XXXXXX";
    if (!mkdtemp(dir))
        return NULL;
    char path[256];
    snprintf(path, sizeof path, "%s/libssl.so.3", dir);
    int in = open(i.dli_fname, O_RDONLY), out = open(path, O_WRONLY | O_CREAT, 0755);
    char buf[65536];
    ssize_t n;
    while (in >= 0 && out >= 0 && (n = read(in, buf, sizeof buf)) > 0)
        if (write(out, buf, (size_t)n) != n)
            break;
    close(in);
    close(out);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    unlink(path);
    rmdir(dir);
    return h;
}

static const void *here(void)
{
    return __builtin_return_address(0);
}

TEST(one_copy_routes_everything_to_the_served_one)
{
    const SSL_METHOD *m = TLS_server_method();
    ks_copies_probe_method(m);
    ks_copies_probe_loaded();
    EXPECT_EQ(ks_ossl_copies_many, 0);
    EXPECT_EQ(ks_ossl_gate_now, 0);
    EXPECT_EQ(ks_copies_route(KS_COPY_METHOD, m, here()), KS_COPY_SERVED);
    SSL_CTX *c = SSL_CTX_new(m);
    EXPECT_EQ(ks_copies_route(KS_COPY_SSL, c, here()), KS_COPY_SERVED);
    SSL_CTX_free(c);
}

TEST(a_second_copy_is_seen_by_its_method_and_routed_to)
{
    void *h = open_copy();
    ASSERT_TRUE(h != NULL);
    const SSL_METHOD *(*copy_method)(void) =
        (const SSL_METHOD *(*)(void))dlsym(h, "TLS_server_method");
    ASSERT_TRUE(copy_method != NULL && copy_method != TLS_server_method);
    const SSL_METHOD *mine = TLS_server_method(), *theirs = copy_method();
    ks_copies_probe_method(mine);
    EXPECT_EQ(ks_ossl_copies_many, 0);
    ks_copies_probe_method(theirs);
    ASSERT_EQ(ks_ossl_copies_many, 1);
    EXPECT_EQ(ks_ossl_gate_now, KS_GATE_COPIES);
    int c = ks_copies_route(KS_COPY_METHOD, theirs, here());
    EXPECT_TRUE(c >= 1 && c <= KS_COPIES_MAX);
    EXPECT_EQ(ks_copies_route(KS_COPY_METHOD, mine, here()), KS_COPY_SERVED);
    /* Its functions are its own, looked up in it. */
    static void *slot[KS_COPIES_MAX + 1];
    EXPECT_TRUE(ks_copies_fn(slot, c, "SSL_CTX_new") == dlsym(h, "SSL_CTX_new"));
    EXPECT_TRUE(ks_copies_fn(slot, c, "SSL_CTX_new") != (void *)SSL_CTX_new);
    /* A context it made works with its functions. */
    SSL_CTX *(*ctx_new)(const SSL_METHOD *) =
        (SSL_CTX * (*)(const SSL_METHOD *)) dlsym(h, "SSL_CTX_new");
    void (*ctx_free)(SSL_CTX *) = (void (*)(SSL_CTX *))dlsym(h, "SSL_CTX_free");
    SSL_CTX *ctx = ctx_new(theirs);
    ASSERT_TRUE(ctx != NULL);
    ks_copies_made(ctx, c);
    EXPECT_EQ(ks_copies_route(KS_COPY_SSL, ctx, here()), c);
    ctx_free(ctx);
}

TEST(a_copy_dlopened_after_a_look_is_seen_at_the_next_one_and_only_a_dlopen_reopens_the_list)
{
    ks_copies_probe_loaded(); /* the objects the program started with */
    EXPECT_EQ(ks_ossl_copies_many, 0);
    EXPECT_TRUE(dl_gen_seen == dl_gen); /* settled: the next SSL_new looks at nothing */
    void *h = open_copy();              /* through the dlopen hook */
    ASSERT_TRUE(h != NULL);
    EXPECT_TRUE(dl_gen_seen != dl_gen);
    ks_copies_probe_loaded();
    ASSERT_EQ(ks_ossl_copies_many, 1);
}

static void *begins_a_load_and_waits(void *arg)
{
    dl_begin(); /* what the hook does before the real dlopen */
    int *go = arg;
    while (!__atomic_load_n(go, __ATOMIC_ACQUIRE))
        sched_yield();
    return NULL; /* its exit settles it */
}

TEST(a_load_under_way_in_another_thread_keeps_the_list_open_until_that_thread_is_seen_again)
{
    ks_copies_probe_loaded();
    ASSERT_TRUE(dl_gen_seen == dl_gen);
    int go = 0;
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, begins_a_load_and_waits, &go), 0);
    while (__atomic_load_n(&dl_loading, __ATOMIC_ACQUIRE) != 1)
        sched_yield();
    ks_copies_probe_loaded();
    EXPECT_TRUE(dl_gen_seen != dl_gen); /* that load may end after this look */
    __atomic_store_n(&go, 1, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    EXPECT_EQ(dl_loading, 0);
    ks_copies_probe_loaded();
    EXPECT_TRUE(dl_gen_seen == dl_gen);
    /* The same in this thread, settled by its own next SSL_new; and a fork
     * leaves a child with no load under way. */
    dl_begin();
    EXPECT_EQ(dl_loading, 1);
    pid_t pid = fork();
    if (pid == 0) {
        ks_copies_after_fork_child();
        _exit(dl_loading == 0 && !dl_mine ? 0 : 1);
    }
    int st = -1;
    waitpid(pid, &st, 0);
    EXPECT_EQ(st, 0);
    ks_copies_probe_loaded();
    EXPECT_EQ(dl_loading, 0);
    EXPECT_TRUE(dl_gen_seen == dl_gen);
}

TEST(a_copy_found_in_the_loaded_objects_and_its_own_code_routes_its_objects)
{
    void *h = open_copy();
    ASSERT_TRUE(h != NULL);
    ks_copies_probe_loaded(); /* SSL_new / SSL_clear: the list changed */
    ASSERT_EQ(ks_ossl_copies_many, 1);
    /* A call from inside the copy (its PLT: SSL_new -> SSL_clear) with an
     * object never seen: the copy's, and remembered, so that a later call
     * from elsewhere (a tail call: the return address is the copy's
     * caller's) finds it. */
    const char *inside = (const char *)dlsym(h, "SSL_clear") + 16;
    int obj;
    int c = ks_copies_route(KS_COPY_SSL, &obj, inside);
    EXPECT_TRUE(c >= 1);
    EXPECT_EQ(ks_copies_route(KS_COPY_SSL, &obj, here()), c);
    /* The served libssl's own code: served, and it corrects a stale entry
     * (the address freed by the copy, reused by the served one). */
    const char *served_inside = (const char *)(void *)SSL_clear + 16;
    EXPECT_EQ(ks_copies_route(KS_COPY_SSL, &obj, served_inside), KS_COPY_SERVED);
    EXPECT_EQ(ks_copies_route(KS_COPY_SSL, &obj, here()), KS_COPY_SERVED);
    /* A BIO from inside the copy's libssl goes to the copy (its libcrypto
     * through its own handle). */
    int bio;
    c = ks_copies_route(KS_COPY_BIO, &bio, inside);
    EXPECT_TRUE(c >= 1);
    static void *slot[KS_COPIES_MAX + 1];
    void *fn = ks_copies_fn(slot, c, "BIO_ctrl");
    EXPECT_TRUE(fn != NULL);
    /* This program's own calls with objects nobody saw made: its lookups
     * find the served copy (global scope). */
    int other;
    EXPECT_EQ(ks_copies_route(KS_COPY_SSL, &other, here()), KS_COPY_SERVED);
    EXPECT_EQ(ks_copies_route(KS_COPY_BIO, &other, here()), KS_COPY_SERVED);
}

TEST(objects_are_remembered_corrected_and_only_inserted_when_asked)
{
    int a, b, c;
    EXPECT_EQ(remembered(&a), -1);
    remember(&a, 3, true);
    EXPECT_EQ(remembered(&a), 3);
    remember(&a, 0, true); /* made again by the served copy */
    EXPECT_EQ(remembered(&a), 0);
    remember(&b, 2, false); /* update only: not there, not added */
    EXPECT_EQ(remembered(&b), -1);
    remember(&a, 5, false);
    EXPECT_EQ(remembered(&a), 5);
    remember(NULL, 1, true);
    EXPECT_EQ(remembered(NULL), -1);
    remember(&c, -1, true);
    EXPECT_EQ(remembered(&c), -1);
}

TEST(a_full_neighbourhood_drops_the_newcomer_and_keeps_the_others)
{
    static uintptr_t keys[OBJ_PROBES + 1];
    unsigned want = 0;
    int n = 0;
    for (uintptr_t k = 0x10000; n < OBJ_PROBES + 1; k += 16) {
        if (n == 0)
            want = obj_slot(k);
        if (obj_slot(k) == want)
            keys[n++] = k;
    }
    for (int i = 0; i <= OBJ_PROBES; i++)
        remember((const void *)keys[i], i % 7, true);
    for (int i = 0; i < OBJ_PROBES; i++)
        EXPECT_EQ(remembered((const void *)keys[i]), i % 7);
    EXPECT_EQ(remembered((const void *)keys[OBJ_PROBES]), -1);
}

#define THREADS 4
#define PER_THREAD 1500
static char objects[THREADS][PER_THREAD][64];

static void *insert_some(void *arg)
{
    int t = (int)(intptr_t)arg;
    for (int i = 0; i < PER_THREAD; i++)
        remember(objects[t][i], t + 1, true);
    return NULL;
}

TEST(threads_inserting_at_once_each_find_their_own)
{
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++)
        pthread_create(&th[t], NULL, insert_some, (void *)(intptr_t)t);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    int wrong = 0, missing = 0;
    for (int t = 0; t < THREADS; t++)
        for (int i = 0; i < PER_THREAD; i++) {
            int v = remembered(objects[t][i]);
            missing += v < 0;
            wrong += v >= 0 && v != t + 1;
        }
    EXPECT_EQ(wrong, 0);
    EXPECT_EQ(missing, 0);
}
