/*
 * raftbench: the node runtime of consensus/io/ alone, without SQLite (make bench-raft). Three
 * nodes, one per process, on 127.0.0.1; the leader's process runs 1 and then 16 concurrent
 * proposers of 1 KiB entries (io_node_propose waits for the commit); the state machine only
 * counts. Prints one markdown table next to this machine's raw fdatasync rate and loopback round
 * trip, measured in the same run.
 *
 *   raftbench [--dir D] [--runs N] [--secs S] [--smoke]
 *
 * Internally: "raftbench --node DIR NAME PORT bootstrap|join PEER_PORT" runs one node; its
 * commands on stdin: "load THREADS SECONDS" (answers "R commits/s p50_us p99_us errors"),
 * "voters" (answers "V n"), "hwm".
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "consensus/io/node.h"
#include "tests/bench/common.h"

#define ENTRY_BYTES 1024

static struct io_node *node;
static atomic_uint_fast64_t applied;

static int fsm_apply(void *ctx, uint64_t index, const void *buf, size_t len)
{
    (void)ctx;
    (void)index;
    (void)buf;
    (void)len;
    atomic_fetch_add(&applied, 1);
    return 0;
}

struct proposer {
    double run_secs;
    uint64_t start;
    uint64_t seed;
    struct bench_vec lat_us;
    long ok, errs;
};

static void *proposer_main(void *arg)
{
    struct proposer *p = arg;
    unsigned char buf[ENTRY_BYTES];
    uint64_t end = p->start + (uint64_t)(p->run_secs * 1e9);
    for (uint64_t now = bench_now_ns(); now < end;) {
        for (size_t k = 0; k < sizeof buf; k += 8) {
            p->seed ^= p->seed << 13;
            p->seed ^= p->seed >> 7;
            p->seed ^= p->seed << 17;
            memcpy(buf + k, &p->seed, 8);
        }
        uint64_t t0 = bench_now_ns();
        int rc = io_node_propose(node, buf, sizeof buf, 10000, NULL);
        now = bench_now_ns();
        if (rc == 0) {
            p->ok++;
            bench_vec_push(&p->lat_us, (double)(now - t0) / 1e3);
        } else if (p->errs++ < 3) {
            fprintf(stderr, "raftbench: propose: %s\n", io_node_strerror(rc));
        }
    }
    return NULL;
}

static void load(int threads, double run_secs)
{
    struct proposer p[64];
    pthread_t th[64];
    uint64_t start = bench_now_ns();
    for (int i = 0; i < threads; i++) {
        p[i] = (struct proposer){.run_secs = run_secs, .start = start,
                                 .seed = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1)};
        pthread_create(&th[i], NULL, proposer_main, &p[i]);
    }
    struct bench_vec all = {0};
    long ok = 0, errs = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        for (size_t k = 0; k < p[i].lat_us.n; k++) {
            bench_vec_push(&all, p[i].lat_us.v[k]);
        }
        bench_vec_free(&p[i].lat_us);
        ok += p[i].ok;
        errs += p[i].errs;
    }
    double elapsed = (double)(bench_now_ns() - start) / 1e9;
    bench_vec_sort(&all);
    printf("R %.1f %.1f %.1f %.1f %ld\n", (double)ok / elapsed, bench_quantile(&all, 0.5),
           bench_quantile(&all, 0.99), bench_quantile(&all, 0.999), errs);
    fflush(stdout);
    bench_vec_free(&all);
}

static int node_main(int argc, char **argv)
{
    if (argc < 7) {
        bench_die("--node: arguments");
    }
    char dir[4200], addr[64], peer[64], err[512] = "";
    snprintf(dir, sizeof dir, "%s/%s", argv[2], argv[3]);
    snprintf(addr, sizeof addr, "127.0.0.1:%s", argv[4]);
    snprintf(peer, sizeof peer, "127.0.0.1:%s", argv[6]);
    bool boot = strcmp(argv[5], "bootstrap") == 0;
    struct io_node_config cfg = {.dir = dir,
                                 .name = argv[3],
                                 .listen_addr = addr,
                                 .fsm = {.ctx = NULL, .apply = fsm_apply}};
    /* diagnostics: RAFTBENCH_HEARTBEAT_MS / RAFTBENCH_ELECTION_MS override the defaults */
    const char *v = getenv("RAFTBENCH_HEARTBEAT_MS");
    cfg.heartbeat_ms = v ? (uint32_t)atoi(v) : 0;
    v = getenv("RAFTBENCH_ELECTION_MS");
    cfg.election_timeout_ms = v ? (uint32_t)atoi(v) : 0;
    int rc = io_node_start(&cfg, boot ? IO_NODE_BOOTSTRAP : IO_NODE_JOIN, boot ? NULL : peer,
                           RAFT_VOTER, 30000, &node, err, sizeof err);
    if (rc != 0) {
        bench_die("node %s: %s (%s)", argv[3], err, io_node_strerror(rc));
    }
    /* The leader can take writes once it has elected itself: a first proposal tells. */
    for (int i = 0; boot && i < 300 && io_node_propose(node, "x", 1, 1000, NULL) != 0; i++) {
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    printf("ready\n");
    fflush(stdout);
    char line[256];
    while (fgets(line, sizeof line, stdin) != NULL) {
        int threads;
        double s;
        if (sscanf(line, "load %d %lf", &threads, &s) == 2 && threads >= 1 && threads <= 64) {
            load(threads, s);
        } else if (strncmp(line, "voters", 6) == 0) {
            struct io_node_status *st = malloc(sizeof *st);
            int n = 0;
            if (io_node_status(node, st) == 0) {
                n = st->role == RAFT_VOTER;
                for (uint32_t i = 0; i < st->n_peers; i++) {
                    n += st->peers[i].server.role == RAFT_VOTER &&
                         st->peers[i].server.id != st->id;
                }
            }
            free(st);
            printf("V %d\n", n);
            fflush(stdout);
        } else if (strncmp(line, "hwm", 3) == 0) {
            printf("H %ld\n", bench_vmhwm_kb(getpid()));
            fflush(stdout);
        }
    }
    _exit(0);
}

static void spawn(struct bench_child *c, const char *dir, const char *name, int port,
                  const char *mode, int peer)
{
    char sport[16], speer[16];
    snprintf(sport, sizeof sport, "%d", port);
    snprintf(speer, sizeof speer, "%d", peer);
    char *argv[] = {"raftbench", "--node", (char *)dir, (char *)name, sport, (char *)mode, speer,
                    NULL};
    char line[512];
    if (bench_child_spawn(c, argv) != 0 || bench_child_expect(c, "ready", line, sizeof line,
                                                              60000) != 0) {
        bench_die("node %s did not start", name);
    }
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--node") == 0) {
        return node_main(argc, argv);
    }
    bench_install_cleanup();
    char defdir[256];
    snprintf(defdir, sizeof defdir, "/tmp/walraft-raftbench.%d", (int)getpid());
    const char *dir = defdir;
    int runs = 5;
    double secs = 3;
    bool own_dir = true;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--dir") == 0 && v) {
            dir = v, i++, own_dir = false;
        } else if (strcmp(argv[i], "--runs") == 0 && v) {
            runs = atoi(v), i++;
        } else if (strcmp(argv[i], "--secs") == 0 && v) {
            secs = atof(v), i++;
        } else if (strcmp(argv[i], "--smoke") == 0) {
            runs = 1, secs = 1;
        } else {
            fprintf(stderr, "usage: raftbench [--dir D] [--runs N] [--secs S] [--smoke]\n");
            return 2;
        }
    }
    if (runs < 1 || runs > 64) {
        bench_die("runs: 1..64");
    }
    mkdir(dir, 0755);
    uint64_t t_start = bench_now_ns();
    int port = bench_base_port(3);
    double fd99 = 0, fd999 = 0;
    double fd_append = bench_fdatasync_rate(dir, 2, true, &fd99, &fd999);
    double fd_over = bench_fdatasync_rate(dir, 2, false, NULL, NULL);
    double rtt50 = 0, rtt99 = 0;
    bench_loopback_rtt(1, &rtt50, &rtt99);
    fprintf(stderr, "raftbench: fdatasync %.0f/s append, %.0f/s overwrite; loopback %.1f us\n",
            fd_append, fd_over, rtt50);

    struct bench_child c[3] = {{0}, {0}, {0}};
    spawn(&c[0], dir, "n1", port, "bootstrap", 0);
    spawn(&c[1], dir, "n2", port + 1, "join", port);
    spawn(&c[2], dir, "n3", port + 2, "join", port);
    char line[512];
    for (int i = 0; i < 300; i++) {
        int v = 0;
        bench_child_send(&c[0], "voters\n");
        if (bench_child_expect(&c[0], "V", line, sizeof line, 5000) == 0 &&
            sscanf(line, "V %d", &v) == 1 && v >= 3) {
            break;
        }
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
    }
    const int writers[2] = {1, 16};
    struct bench_stat st[2][4];
    long errs[2] = {0, 0};
    for (int w = 0; w < 2; w++) {
        double tps[64], p50[64], p99[64], p999[64];
        for (int r = -1; r < runs; r++) {
            double x[4];
            long e = 0;
            bench_child_send(&c[0], "load %d %g\n", writers[w], r < 0 ? secs / 2 : secs);
            if (bench_child_expect(&c[0], "R", line, sizeof line, (int)(secs * 1000) + 30000) !=
                    0 ||
                sscanf(line, "R %lf %lf %lf %lf %ld", &x[0], &x[1], &x[2], &x[3], &e) != 5) {
                bench_die("the leader did not answer a load");
            }
            fprintf(stderr, "  %d proposers run %d: %.0f commits/s p50 %.0f p99 %.0f us\n",
                    writers[w], r, x[0], x[1], x[2]);
            if (r >= 0) {
                tps[r] = x[0], p50[r] = x[1] / 1e3, p99[r] = x[2] / 1e3, p999[r] = x[3] / 1e3;
                errs[w] += e;
            }
        }
        st[w][0] = bench_stat_of(tps, runs);
        st[w][1] = bench_stat_of(p50, runs);
        st[w][2] = bench_stat_of(p99, runs);
        st[w][3] = bench_stat_of(p999, runs);
    }
    long hwm[3];
    for (int i = 0; i < 3; i++) {
        hwm[i] = bench_vmhwm_kb(c[i].pid);
        bench_child_kill(&c[i]);
    }
    double load[3] = {0};
    if (getloadavg(load, 3) < 0) {
        load[0] = -1;
    }
    printf("\nraftbench: 3 nodes (one per process) on 127.0.0.1, 1 KiB entries, %ld CPUs, load "
           "average %.2f at the end, %d runs of %g s per figure after a warm-up; took %.0f s\n\n",
           sysconf(_SC_NPROCESSORS_ONLN), load[0], runs, secs,
           (double)(bench_now_ns() - t_start) / 1e9);
    printf("| proposers | figure | median | min – max |\n|---|---|---|---|\n");
    const char *figs[4] = {"commits/s", "commit latency p50", "commit latency p99",
                           "commit latency p99.9"};
    for (int w = 0; w < 2; w++) {
        for (int f = 0; f < 4; f++) {
            const char *unit = f == 0 ? "/s" : "ms";
            int prec = f == 0 ? 0 : 3;
            printf("| %d | %s | %.*f %s | %.*f – %.*f |\n", writers[w], figs[f], prec,
                   st[w][f].med, unit, prec, st[w][f].min, prec, st[w][f].max);
        }
        if (errs[w] > 0) {
            printf("| %d | failed proposals (all runs) | %ld | |\n", writers[w], errs[w]);
        }
    }
    printf("| – | peak RSS (VmHWM) n1 / n2 / n3 | %.1f / %.1f / %.1f MiB | |\n", hwm[0] / 1024.0,
           hwm[1] / 1024.0, hwm[2] / 1024.0);
    printf("| – | disk: 4 KiB append + fdatasync | %.0f /s (p99 %.2f ms, p99.9 %.2f ms) | |\n",
           fd_append, fd99, fd999);
    printf("| – | disk: 4 KiB overwrite + fdatasync | %.0f /s | |\n", fd_over);
    printf("| – | loopback TCP round trip p50 / p99 | %.1f / %.1f µs | |\n", rtt50, rtt99);
    fflush(stdout);
    if (own_dir) {
        char cmd[4400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "raftbench: cannot remove %s\n", dir);
        }
    }
    return 0;
}
