/*
 * Helpers shared by the benchmark programs (bench.c, raftbench.c): clocks, percentiles, child
 * processes driven through pipes (every one killed by pid on exit, even on failure), and the two
 * machine figures every table is read against: the data disk's raw fdatasync rate and the
 * loopback TCP round trip.
 */
#ifndef WALRAFT_BENCH_COMMON_H
#define WALRAFT_BENCH_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* CLOCK_MONOTONIC in nanoseconds: one clock for every process of the machine. */
uint64_t bench_now_ns(void);

/* A growable array of doubles (latencies in microseconds, rates, ...). */
struct bench_vec {
    double *v;
    size_t n, cap;
};
void bench_vec_push(struct bench_vec *a, double x);
void bench_vec_free(struct bench_vec *a);
/* Sorts in place; then the p-quantile (0..1) of the values; 0 when empty. */
void bench_vec_sort(struct bench_vec *a);
double bench_quantile(const struct bench_vec *sorted, double p);

/* Median, minimum and maximum of a set of runs. */
struct bench_stat {
    double med, min, max;
    int n;
};
struct bench_stat bench_stat_of(const double *runs, int n);

/* A child process: this program re-executed with other arguments; its stdin and stdout are
 * pipes. Killed with SIGKILL when this process exits or dies (PR_SET_PDEATHSIG as well). */
struct bench_child {
    pid_t pid;
    int in;  /* we write its stdin */
    int out; /* we read its stdout */
    char buf[8192];
    size_t len;
};
int bench_child_spawn(struct bench_child *c, char *const argv[]);
/* One line without its newline; 0, or -1 on timeout or end of file. */
int bench_child_line(struct bench_child *c, char *line, size_t cap, int timeout_ms);
/* Reads lines until one starts with `prefix`; other lines are echoed to stderr. */
int bench_child_expect(struct bench_child *c, const char *prefix, char *line, size_t cap,
                       int timeout_ms);
int bench_child_send(struct bench_child *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* SIGKILL and reap (bounded). Safe on a child already gone. */
void bench_child_kill(struct bench_child *c);
/* Asks the child to quit ("quit" on its stdin) and waits up to timeout_ms for it to exit (a
 * profiler then writes its output), then kills it. */
void bench_child_quit(struct bench_child *c, int timeout_ms);
/* Kills every child still registered (called at exit and on SIGINT/SIGTERM). */
void bench_children_kill_all(void);
void bench_install_cleanup(void);

/* Peak resident set (VmHWM) of a process, in KiB; -1 when unknown. */
long bench_vmhwm_kb(pid_t pid);

/* 4 KiB writes + fdatasync in `dir` for `secs`: operations per second. append: each write
 * extends the file (like a log segment); else it overwrites a preallocated block. The p99 and
 * p99.9 latency of one write + fdatasync go to *p99_ms and *p999_ms (may be NULL). */
double bench_fdatasync_rate(const char *dir, double secs, bool append, double *p99_ms,
                            double *p999_ms);

/* Loopback TCP (TCP_NODELAY) ping-pong of 64-byte messages between two threads for `secs`:
 * the median and p99 round trip in microseconds. */
int bench_loopback_rtt(double secs, double *p50_us, double *p99_us);

/* A base port for this run: `count` consecutive ports on 127.0.0.1 that are free now, below the
 * ephemeral range, derived from the pid so that concurrent runs rarely collide. */
int bench_base_port(int count);

/* Dies with a message (children are killed by the exit handler). */
void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
