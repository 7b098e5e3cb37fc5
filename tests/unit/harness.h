/* harness.h — a small unit-test harness in the manner of the kernel's
 * kselftest_harness.h: TEST(name) { ... } defines a case, ASSERT_* ends the
 * case on failure, EXPECT_* records the failure and goes on. Each case runs
 * in a child process of its own (a crash or an abort is that case's failure,
 * and once-only state such as the parsed configuration starts fresh), and
 * the results are printed as TAP ("ok N name" / "not ok N name"), which
 * scripts/test-all counts with the bats suites.
 *
 * Include it once, from the test file that defines main (TEST_MAIN). */
#ifndef KTLSSHIM_UNIT_HARNESS_H
#define KTLSSHIM_UNIT_HARNESS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct ut_case {
    const char *name;
    void (*fn)(int *failed);
};

#define UT_MAX_CASES 256
static struct ut_case ut_cases[UT_MAX_CASES];
static int ut_ncases;

#define TEST(name)                                                                                 \
    static void ut_##name(int *ut_failed);                                                         \
    __attribute__((constructor)) static void ut_reg_##name(void)                                   \
    {                                                                                              \
        if (ut_ncases < UT_MAX_CASES)                                                              \
            ut_cases[ut_ncases++] = (struct ut_case){#name, ut_##name};                            \
    }                                                                                              \
    static void ut_##name(int *ut_failed)

#define UT_REPORT(kind, fmt, ...)                                                                  \
    fprintf(stderr, "# %s:%d: %s: " fmt "\n", __FILE__, __LINE__, kind, __VA_ARGS__)

/* EXPECT_*: note the failure, carry on. ASSERT_*: note it, end the case. */
#define UT_CHECK(cond, fatal, fmt, ...)                                                            \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            UT_REPORT(fatal ? "ASSERT" : "EXPECT", fmt, __VA_ARGS__);                              \
            *ut_failed = 1;                                                                        \
            if (fatal)                                                                             \
                return;                                                                            \
        }                                                                                          \
    } while (0)

#define EXPECT_TRUE(c) UT_CHECK((c), 0, "%s", #c)
#define ASSERT_TRUE(c) UT_CHECK((c), 1, "%s", #c)
#define EXPECT_EQ(a, b)                                                                            \
    UT_CHECK((long long)(a) == (long long)(b), 0, "%s == %s (%lld vs %lld)", #a, #b,               \
             (long long)(a), (long long)(b))
#define ASSERT_EQ(a, b)                                                                            \
    UT_CHECK((long long)(a) == (long long)(b), 1, "%s == %s (%lld vs %lld)", #a, #b,               \
             (long long)(a), (long long)(b))
#define EXPECT_STREQ(a, b)                                                                         \
    UT_CHECK(strcmp((a), (b)) == 0, 0, "%s == %s (\"%s\" vs \"%s\")", #a, #b, (a), (b))
#define ASSERT_STREQ(a, b)                                                                         \
    UT_CHECK(strcmp((a), (b)) == 0, 1, "%s == %s (\"%s\" vs \"%s\")", #a, #b, (a), (b))
#define EXPECT_MEMEQ(a, b, n)                                                                      \
    UT_CHECK(memcmp((a), (b), (n)) == 0, 0, "%s == %s (%zu bytes)", #a, #b, (size_t)(n))
#define ASSERT_MEMEQ(a, b, n)                                                                      \
    UT_CHECK(memcmp((a), (b), (n)) == 0, 1, "%s == %s (%zu bytes)", #a, #b, (size_t)(n))

#ifdef TEST_MAIN
int main(int argc, char **argv)
{
    const char *prog = strrchr(argv[0], '/');
    prog = prog ? prog + 1 : argv[0];
    const char *only = argc > 1 ? argv[1] : NULL;
    int failures = 0, n = 0;
    printf("1..%d\n", only ? 1 : ut_ncases);
    fflush(stdout);
    for (int i = 0; i < ut_ncases; i++) {
        if (only && strcmp(only, ut_cases[i].name) != 0)
            continue;
        n++;
        pid_t pid = fork();
        if (pid == 0) {
            int failed = 0;
            ut_cases[i].fn(&failed);
            fflush(NULL);
            _exit(failed ? 1 : 0);
        }
        int st = 0;
        if (pid < 0 || waitpid(pid, &st, 0) != pid)
            st = -1;
        int ok = pid > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
        if (pid > 0 && WIFSIGNALED(st))
            fprintf(stderr, "# %s: killed by signal %d\n", ut_cases[i].name, WTERMSIG(st));
        printf("%sok %d %s: %s\n", ok ? "" : "not ", n, prog, ut_cases[i].name);
        fflush(stdout);
        failures += !ok;
    }
    return failures ? 1 : 0;
}
#endif

#endif
