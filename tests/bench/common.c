/*
 * Helpers shared by the benchmark programs; see common.h.
 */
#include "tests/bench/common.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void bench_vec_push(struct bench_vec *a, double x)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 1024;
        a->v = realloc(a->v, a->cap * sizeof *a->v);
        if (a->v == NULL) {
            bench_die("out of memory");
        }
    }
    a->v[a->n++] = x;
}

void bench_vec_free(struct bench_vec *a)
{
    free(a->v);
    a->v = NULL;
    a->n = a->cap = 0;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

void bench_vec_sort(struct bench_vec *a)
{
    if (a->n > 0) {
        qsort(a->v, a->n, sizeof *a->v, cmp_double);
    }
}

double bench_quantile(const struct bench_vec *s, double p)
{
    if (s->n == 0) {
        return 0;
    }
    size_t i = (size_t)(p * (double)(s->n - 1) + 0.5);
    return s->v[i < s->n ? i : s->n - 1];
}

struct bench_stat bench_stat_of(const double *runs, int n)
{
    struct bench_stat st = {0, 0, 0, n};
    if (n <= 0) {
        return st;
    }
    double *v = malloc((size_t)n * sizeof *v);
    memcpy(v, runs, (size_t)n * sizeof *v);
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    st.min = v[0];
    st.max = v[n - 1];
    st.med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    free(v);
    return st;
}

/* --- children -------------------------------------------------------------------------------- */

#define CHILDREN_MAX 64
static pid_t children[CHILDREN_MAX];

static void child_register(pid_t pid)
{
    for (int i = 0; i < CHILDREN_MAX; i++) {
        if (children[i] == 0) {
            children[i] = pid;
            return;
        }
    }
}

static void child_unregister(pid_t pid)
{
    for (int i = 0; i < CHILDREN_MAX; i++) {
        if (children[i] == pid) {
            children[i] = 0;
        }
    }
}

void bench_children_kill_all(void)
{
    for (int i = 0; i < CHILDREN_MAX; i++) {
        if (children[i] > 0) {
            kill(children[i], SIGKILL);
            waitpid(children[i], NULL, 0);
            children[i] = 0;
        }
    }
}

static void on_signal(int sig)
{
    bench_children_kill_all();
    signal(sig, SIG_DFL);
    raise(sig);
}

void bench_install_cleanup(void)
{
    atexit(bench_children_kill_all);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
}

int bench_child_spawn(struct bench_child *c, char *const argv[])
{
    int pin[2], pout[2];
    if (pipe2(pin, O_CLOEXEC) != 0 || pipe2(pout, O_CLOEXEC) != 0) {
        return -1;
    }
    pid_t parent = getpid();
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(1);
        }
        dup2(pin[0], 0);
        dup2(pout[1], 1);
        /* Diagnostics: BENCH_WRAP="valgrind --tool=callgrind" runs the children whose arguments
         * contain BENCH_WRAP_MATCH (all when unset) under that command. */
        const char *wrap = getenv("BENCH_WRAP"), *match = getenv("BENCH_WRAP_MATCH");
        bool matched = match == NULL;
        for (int i = 0; argv[i] != NULL && !matched; i++) {
            matched = strcmp(argv[i], match) == 0;
        }
        if (wrap != NULL && matched) {
            char *w = strdup(wrap), *args[64], exe[4096];
            int n = 0;
            ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
            exe[k > 0 ? k : 0] = '\0';
            for (char *t = strtok(w, " "); t != NULL && n < 40; t = strtok(NULL, " ")) {
                args[n++] = t;
            }
            args[n++] = exe;
            for (int i = 1; argv[i] != NULL && n < 63; i++) {
                args[n++] = argv[i];
            }
            args[n] = NULL;
            execvp(args[0], args);
            _exit(127);
        }
        /* BENCH_EXE: this program's path when /proc/self/exe is a profiler's. */
        const char *self = getenv("BENCH_EXE");
        execv(self != NULL ? self : "/proc/self/exe", argv);
        _exit(127);
    }
    close(pin[0]);
    close(pout[1]);
    c->pid = pid;
    c->in = pin[1];
    c->out = pout[0];
    c->len = 0;
    child_register(pid);
    return 0;
}

int bench_child_line(struct bench_child *c, char *line, size_t cap, int timeout_ms)
{
    uint64_t deadline = bench_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->len);
        if (nl != NULL) {
            size_t k = (size_t)(nl - c->buf);
            size_t m = k < cap - 1 ? k : cap - 1;
            memcpy(line, c->buf, m);
            line[m] = '\0';
            memmove(c->buf, nl + 1, c->len - k - 1);
            c->len -= k + 1;
            return 0;
        }
        uint64_t now = bench_now_ns();
        if (now >= deadline || c->len == sizeof c->buf) {
            return -1;
        }
        struct pollfd p = {.fd = c->out, .events = POLLIN};
        int r = poll(&p, 1, (int)((deadline - now) / 1000000ull) + 1);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return -1;
        }
        ssize_t n = read(c->out, c->buf + c->len, sizeof c->buf - c->len);
        if (n <= 0) {
            return -1;
        }
        c->len += (size_t)n;
    }
}

int bench_child_expect(struct bench_child *c, const char *prefix, char *line, size_t cap,
                       int timeout_ms)
{
    uint64_t deadline = bench_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    for (;;) {
        uint64_t now = bench_now_ns();
        if (now >= deadline) {
            return -1;
        }
        if (bench_child_line(c, line, cap, (int)((deadline - now) / 1000000ull) + 1) != 0) {
            return -1;
        }
        if (strncmp(line, prefix, strlen(prefix)) == 0) {
            return 0;
        }
        fprintf(stderr, "  [child %d] %s\n", (int)c->pid, line);
    }
}

int bench_child_send(struct bench_child *c, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf) {
        return -1;
    }
    return write(c->in, buf, (size_t)n) == n ? 0 : -1;
}

void bench_child_kill(struct bench_child *c)
{
    if (c->pid > 0) {
        kill(c->pid, SIGKILL);
        waitpid(c->pid, NULL, 0);
        child_unregister(c->pid);
        c->pid = 0;
    }
    if (c->in > 0) {
        close(c->in);
    }
    if (c->out > 0) {
        close(c->out);
    }
    c->in = c->out = -1;
}

void bench_child_quit(struct bench_child *c, int timeout_ms)
{
    if (c->pid > 0 && bench_child_send(c, "quit\n") == 0) {
        uint64_t deadline = bench_now_ns() + (uint64_t)timeout_ms * 1000000ull;
        while (bench_now_ns() < deadline) {
            if (waitpid(c->pid, NULL, WNOHANG) == c->pid) {
                child_unregister(c->pid);
                c->pid = 0;
                break;
            }
            struct timespec ts = {0, 10000000};
            nanosleep(&ts, NULL);
        }
    }
    bench_child_kill(c);
}

long bench_vmhwm_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    if (f == NULL) {
        return -1;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "VmHWM:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
        }
    }
    fclose(f);
    return kb;
}

/* --- the machine ----------------------------------------------------------------------------- */

double bench_fdatasync_rate(const char *dir, double secs, bool append, double *p99_ms,
                            double *p999_ms)
{
    struct bench_vec lat = {0};
    char path[4200];
    snprintf(path, sizeof path, "%s/fdatasync.probe", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return 0;
    }
    char block[4096];
    memset(block, 'x', sizeof block);
    if (!append) {
        for (int i = 0; i < 256; i++) {
            if (write(fd, block, sizeof block) != (ssize_t)sizeof block) {
                break;
            }
        }
        fsync(fd);
    }
    uint64_t start = bench_now_ns(), end = start + (uint64_t)(secs * 1e9);
    long ops = 0;
    off_t off = 0;
    uint64_t now = start;
    do {
        uint64_t t0 = bench_now_ns();
        block[0] = (char)ops;
        if (pwrite(fd, block, sizeof block, off) != (ssize_t)sizeof block || fdatasync(fd) != 0) {
            break;
        }
        ops++;
        off = append ? off + (off_t)sizeof block : (off + (off_t)sizeof block) % (256 * 4096);
        now = bench_now_ns();
        bench_vec_push(&lat, (double)(now - t0) / 1e6);
    } while (now < end);
    close(fd);
    unlink(path);
    bench_vec_sort(&lat);
    if (p99_ms != NULL) {
        *p99_ms = bench_quantile(&lat, 0.99);
    }
    if (p999_ms != NULL) {
        *p999_ms = bench_quantile(&lat, 0.999);
    }
    bench_vec_free(&lat);
    return (double)ops / ((double)(now - start) / 1e9);
}

struct echo_arg {
    int fd;
};

static void *echo_main(void *arg)
{
    struct echo_arg *e = arg;
    char buf[64];
    for (;;) {
        size_t got = 0;
        while (got < sizeof buf) {
            ssize_t n = read(e->fd, buf + got, sizeof buf - got);
            if (n <= 0) {
                return NULL;
            }
            got += (size_t)n;
        }
        if (write(e->fd, buf, sizeof buf) != (ssize_t)sizeof buf) {
            return NULL;
        }
    }
}

int bench_loopback_rtt(double secs, double *p50_us, double *p99_us)
{
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    int one = 1;
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 1) != 0 ||
        getsockname(ls, (struct sockaddr *)&a, &alen) != 0) {
        return -1;
    }
    int cs = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(cs, (struct sockaddr *)&a, sizeof a) != 0) {
        return -1;
    }
    int ss = accept(ls, NULL, NULL);
    close(ls);
    setsockopt(cs, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(ss, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct echo_arg e = {ss};
    pthread_t th;
    pthread_create(&th, NULL, echo_main, &e);
    struct bench_vec rtt = {0};
    char buf[64];
    memset(buf, 'p', sizeof buf);
    uint64_t end = bench_now_ns() + (uint64_t)(secs * 1e9);
    while (bench_now_ns() < end) {
        uint64_t t0 = bench_now_ns();
        if (write(cs, buf, sizeof buf) != (ssize_t)sizeof buf) {
            break;
        }
        size_t got = 0;
        while (got < sizeof buf) {
            ssize_t n = read(cs, buf + got, sizeof buf - got);
            if (n <= 0) {
                break;
            }
            got += (size_t)n;
        }
        bench_vec_push(&rtt, (double)(bench_now_ns() - t0) / 1e3);
    }
    shutdown(cs, SHUT_RDWR);
    close(cs);
    pthread_join(th, NULL);
    close(ss);
    bench_vec_sort(&rtt);
    *p50_us = bench_quantile(&rtt, 0.5);
    *p99_us = bench_quantile(&rtt, 0.99);
    bench_vec_free(&rtt);
    return 0;
}

static bool port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    bool ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0) {
        close(fd);
    }
    return ok;
}

int bench_base_port(int count)
{
    /* Below Linux's ephemeral range (32768-60999), so outgoing connections never hold them. */
    for (int attempt = 0; attempt < 200; attempt++) {
        int base = 10000 + (int)((getpid() + attempt * 7919) % 1100) * 20;
        bool ok = true;
        for (int p = base; p < base + count && ok; p++) {
            ok = port_free(p);
        }
        if (ok) {
            return base;
        }
    }
    return 10000 + (int)(getpid() % 1100) * 20;
}

void bench_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}
