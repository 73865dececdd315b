/*
 * bench: walraft against plain SQLite on the same machine, in one run (make bench). Prints one
 * markdown table on stdout; progress goes to stderr.
 *
 *   bench [--dir D] [--runs N] [--secs S] [--failover-runs N] [--catchup-mb MB]
 *         [--catchup-small-mb MB] [--catchup-runs N] [--smoke]
 *
 * Workloads (each: a warm-up, then N measured runs; the table shows median and min-max):
 *   1. commit: single-row INSERT OR REPLACE (16-byte key, 32-byte value), 1 and 4 writers, on
 *      plain SQLite WAL synchronous=FULL and NORMAL, walraft 1 node and 3 nodes (with the default
 *      raft_leader_sync=eager, and again with lazy); 1 and 4 writers back to back in each round,
 *      and their ratio per round
 *   2. bulk: 1,000-row transactions of 200-byte rows, MB/s of table data
 *   3. follower apply lag at 70 % of the 3-node 1-writer rate
 *   4. failover: kill -9 of the leader under write load, time to the first write on the new one
 *   5. catch-up: a node joining a 3-node cluster holding a database of 40 MB, then of 200 MB (log
 *      replay while the leader's log still starts at entry 1, else a snapshot streamed while
 *      writes go on; the log keeps at most raft_trailing_bytes, 16 MiB by default, so both sizes
 *      come by snapshot unless BENCH_URI_EXTRA raises it)
 *   6. the data disk's raw fdatasync rate and the loopback TCP round trip
 *
 * The program re-executes itself for every process it needs: "--setup KIND" runs one setup's
 * leader (and spawns its followers), "--node ..." runs one walraft node. Every child is killed
 * by pid when the parent exits.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ext/walraft.h"
#include "tests/bench/common.h"

/* Row ids of the lag workload (a few thousand a run): small, so that the peak RSS of the nodes
 * is not the harness's. */
#define LAG_IDS_MAX (1u << 18)

static const char *dir = NULL;
static int runs = 7;
static double secs = 3.0;

/* --- SQL helpers ----------------------------------------------------------------------------- */

static sqlite3 *open_db(const char *uri)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI,
                             NULL);
    if (rc != SQLITE_OK) {
        bench_die("cannot open %s: %s", uri, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    }
    sqlite3_busy_timeout(db, 10000);
    return db;
}

static int exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) {
        fprintf(stderr, "bench[%d]: %s: %s\n", (int)getpid(), sql, err ? err : "?");
        sqlite3_free(err);
    }
    return rc;
}

/* The first column of the first row as an integer (or text into txt); SQLITE_ROW on success. */
static int query(sqlite3 *db, const char *sql, int64_t *v, char *txt, size_t cap)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) {
        return rc;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        if (v != NULL) {
            *v = sqlite3_column_int64(st, 0);
        }
        if (txt != NULL) {
            const char *s = (const char *)sqlite3_column_text(st, 0);
            snprintf(txt, cap, "%s", s ? s : "");
        }
    } else if (txt != NULL) {
        snprintf(txt, cap, "%s", sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
    return rc;
}

static void sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static void walraft_load(void)
{
    char *err = NULL;
    int rc = sqlite3_walraft_init(NULL, &err, NULL);
    if (rc != SQLITE_OK && rc != SQLITE_OK_LOAD_PERMANENTLY) {
        bench_die("walraft init: %s", err ? err : sqlite3_errstr(rc));
    }
}

/* A new one-node cluster takes writes once its node has elected itself: waits (bounded). */
static void wait_writable(sqlite3 *db)
{
    uint64_t t0 = bench_now_ns();
    while (sqlite3_exec(db, "BEGIN IMMEDIATE; COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        if (bench_now_ns() - t0 > 30000000000ull) {
            bench_die("the bootstrapped node never took a write: %s", sqlite3_errmsg(db));
        }
        sleep_us(2000);
    }
    fprintf(stderr, "bench[%d]: bootstrapped node writable after %.3f s\n", (int)getpid(),
            (double)(bench_now_ns() - t0) / 1e9);
}

/* Database URIs: default settings, but the catch-up cluster's nodes keep a long trailing log
 * (large raft_trailing_entries; it is still capped by raft_trailing_bytes): a joiner replays what
 * is kept, and gets a snapshot once the log is compacted. */
static void node_uri(char *out, size_t cap, const char *name)
{
    const char *extra = getenv("BENCH_URI_EXTRA"); /* diagnostics: e.g. "&raft_heartbeat_ms=50" */
    const char *sync = getenv("BENCH_LEADER_SYNC"); /* set by the RAFT3_LAZY setup for its nodes */
    bool keep = strstr(dir, "/catchup") != NULL;    /* only the catch-up cluster keeps its log */
    snprintf(out, cap, "file:%s/%s.db?vfs=walraft%s%s%s%s", dir, name,
             keep ? "&raft_trailing_entries=100000000" : "", sync ? "&raft_leader_sync=" : "",
             sync ? sync : "", extra ? extra : "");
}

static void setup_schema(sqlite3 *db)
{
    exec(db, "CREATE TABLE IF NOT EXISTS model(key TEXT, value BLOB, UNIQUE(key));"
             "CREATE TABLE IF NOT EXISTS bulk(id INTEGER PRIMARY KEY, v BLOB);"
             "CREATE TABLE IF NOT EXISTS lag(id INTEGER PRIMARY KEY, v BLOB);"
             "CREATE TABLE IF NOT EXISTS fo(id INTEGER PRIMARY KEY, t INTEGER);");
}

/* Empties the lag table (ids start again at 1). */
static void exec_quiet_reset_lag(const char *uri)
{
    sqlite3 *db = open_db(uri);
    exec(db, "PRAGMA synchronous=NORMAL; DELETE FROM lag");
    sqlite3_close(db);
}

/* --- workloads in the leader's process ------------------------------------------------------- */

/* RAFT3_LAZY: the 3-node cluster with raft_leader_sync=lazy on every node. */
enum setup_kind { PLAIN_FULL, PLAIN_NORMAL, RAFT1, RAFT3, RAFT3_LAZY, N_KINDS };
static const char *kind_names[] = {"full", "normal", "raft1", "raft3", "raft3lazy"};

enum wl { WL_COMMIT, WL_BULK, WL_LAG };

struct writer {
    const char *uri;
    enum setup_kind kind;
    enum wl wl;
    pthread_barrier_t *start;
    uint64_t *t0; /* set by thread 0 after the barrier */
    double run_secs;
    uint64_t seed;
    /* lag: ids from first_id, one every interval_ns */
    int64_t first_id;
    double interval_ns;
    uint64_t *commit_ns; /* by id - first_id */
    /* results */
    struct bench_vec lat_us;
    long tx, errs;
    uint64_t elapsed_ns;
};

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Diagnostic (BENCH_BUSY=spin): a busy handler that retries every 50 us for up to 10 s instead
 * of SQLite's default one (sqlite3_busy_timeout: sleeps of 1, 2, 5, ... up to 100 ms). */
static int busy_spin(void *arg, int count)
{
    (void)arg;
    sleep_us(50);
    return count < 200000;
}

static void conn_pragmas(sqlite3 *db, enum setup_kind kind)
{
    const char *busy = getenv("BENCH_BUSY");
    if (busy != NULL && strcmp(busy, "spin") == 0) {
        sqlite3_busy_handler(db, busy_spin, NULL);
    }
    if (kind == PLAIN_FULL) {
        exec(db, "PRAGMA synchronous=FULL");
    } else {
        /* walraft: the Raft log carries durability, the WAL needs no fsync (DESIGN §3). */
        exec(db, "PRAGMA synchronous=NORMAL");
    }
}

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    sqlite3 *db = open_db(w->uri);
    conn_pragmas(db, w->kind);
    const char *sql = w->wl == WL_COMMIT ? "INSERT OR REPLACE INTO model(key, value) VALUES(?, ?)"
                      : w->wl == WL_BULK ? "INSERT INTO bulk(v) VALUES(?)"
                                         : "INSERT INTO lag(id, v) VALUES(?, ?)";
    sqlite3_stmt *st, *begin, *commit;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "BEGIN", -1, &begin, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "COMMIT", -1, &commit, NULL) != SQLITE_OK) {
        bench_die("prepare: %s", sqlite3_errmsg(db));
    }
    unsigned char row[200];
    char key[17];
    pthread_barrier_wait(w->start);
    if (w->t0[0] == 0) {
        w->t0[0] = bench_now_ns();
    }
    pthread_barrier_wait(w->start);
    uint64_t start = w->t0[0], end = start + (uint64_t)(w->run_secs * 1e9);
    int64_t i = 0;
    uint64_t now = start;
    while (now < end) {
        if (w->wl == WL_LAG) {
            uint64_t due = start + (uint64_t)((double)i * w->interval_ns);
            if (due >= end || w->first_id + i >= (int64_t)LAG_IDS_MAX) {
                break;
            }
            if (now < due) {
                sleep_us((long)((due - now) / 1000));
            }
        }
        uint64_t t0 = bench_now_ns();
        int rc;
        if (w->wl == WL_BULK) {
            rc = sqlite3_step(begin);
            sqlite3_reset(begin);
            for (int r = 0; r < 1000 && rc == SQLITE_DONE; r++) {
                for (size_t k = 0; k < sizeof row; k += 8) {
                    uint64_t x = rnd(&w->seed);
                    memcpy(row + k, &x, 8);
                }
                sqlite3_bind_blob(st, 1, row, sizeof row, SQLITE_STATIC);
                rc = sqlite3_step(st);
                sqlite3_reset(st);
            }
            if (rc == SQLITE_DONE) {
                rc = sqlite3_step(commit);
                sqlite3_reset(commit);
            }
            if (rc != SQLITE_DONE) {
                sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            }
        } else {
            for (size_t k = 0; k < 32; k += 8) {
                uint64_t x = rnd(&w->seed);
                memcpy(row + k, &x, 8);
            }
            if (w->wl == WL_COMMIT) {
                snprintf(key, sizeof key, "%016" PRIx64, rnd(&w->seed) % 1000000);
                sqlite3_bind_text(st, 1, key, 16, SQLITE_STATIC);
            } else {
                sqlite3_bind_int64(st, 1, w->first_id + i);
            }
            sqlite3_bind_blob(st, 2, row, 32, SQLITE_STATIC);
            rc = sqlite3_step(st);
            sqlite3_reset(st);
        }
        now = bench_now_ns();
        if (rc == SQLITE_DONE) {
            w->tx++;
            bench_vec_push(&w->lat_us, (double)(now - t0) / 1e3);
            if (w->wl == WL_LAG) {
                w->commit_ns[i] = now;
            }
        } else {
            if (w->errs++ < 3) {
                fprintf(stderr, "bench[%d]: %s: %s\n", (int)getpid(), kind_names[w->kind],
                        sqlite3_errmsg(db));
            }
            sleep_us(1000);
            now = bench_now_ns();
        }
        i++;
    }
    w->elapsed_ns = now - start;
    sqlite3_finalize(st);
    sqlite3_finalize(begin);
    sqlite3_finalize(commit);
    sqlite3_close(db);
    return NULL;
}

struct run_result {
    double tps, mbps, p50_ms, p99_ms, p999_ms;
    long errs;
};

/* One run of `threads` writers for run_secs. */
static struct run_result run_writers(const char *uri, enum setup_kind kind, enum wl wl, int threads,
                                     double run_secs, int64_t first_id, double interval_ns,
                                     uint64_t *commit_ns)
{
    static uint64_t seed = 88172645463325252ull;
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)threads);
    uint64_t t0 = 0;
    struct writer w[16];
    pthread_t th[16];
    for (int i = 0; i < threads; i++) {
        w[i] = (struct writer){.uri = uri, .kind = kind, .wl = wl, .start = &start, .t0 = &t0,
                               .run_secs = run_secs, .seed = seed += 0x9e3779b97f4a7c15ull,
                               .first_id = first_id, .interval_ns = interval_ns,
                               .commit_ns = commit_ns};
        pthread_create(&th[i], NULL, writer_main, &w[i]);
    }
    struct bench_vec all = {0};
    long tx = 0, errs = 0;
    double elapsed = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        for (size_t k = 0; k < w[i].lat_us.n; k++) {
            bench_vec_push(&all, w[i].lat_us.v[k]);
        }
        bench_vec_free(&w[i].lat_us);
        tx += w[i].tx;
        errs += w[i].errs;
        if ((double)w[i].elapsed_ns / 1e9 > elapsed) {
            elapsed = (double)w[i].elapsed_ns / 1e9;
        }
    }
    pthread_barrier_destroy(&start);
    bench_vec_sort(&all);
    struct run_result r = {0};
    r.tps = elapsed > 0 ? (double)tx / elapsed : 0;
    r.mbps = wl == WL_BULK ? r.tps * 1000.0 * 200.0 / 1e6 : 0;
    r.p50_ms = bench_quantile(&all, 0.5) / 1e3;
    r.p99_ms = bench_quantile(&all, 0.99) / 1e3;
    r.p999_ms = bench_quantile(&all, 0.999) / 1e3;
    r.errs = errs;
    bench_vec_free(&all);
    return r;
}

/* --- node processes -------------------------------------------------------------------------- */

static void spawn_node(struct bench_child *c, const char *name, int port, const char *mode,
                       int peer_port, int64_t arg)
{
    char sport[16], speer[16], sarg[32];
    snprintf(sport, sizeof sport, "%d", port);
    snprintf(speer, sizeof speer, "%d", peer_port);
    snprintf(sarg, sizeof sarg, "%" PRId64, arg);
    char *argv[] = {"bench", "--node", (char *)dir, (char *)name, sport, (char *)mode, speer, sarg,
                    NULL};
    if (bench_child_spawn(c, argv) != 0) {
        bench_die("cannot spawn a node");
    }
}

static void node_ready(struct bench_child *c, const char *name)
{
    char line[512];
    if (bench_child_expect(c, "ready", line, sizeof line, 60000) != 0) {
        bench_die("node %s did not start", name);
    }
}

/* Waits until the node of `db` counts `voters` voters (joiners are promoted once caught up). */
static void wait_voters(sqlite3 *db, int voters)
{
    uint64_t deadline = bench_now_ns() + 60000000000ull;
    int64_t n = 0;
    while (bench_now_ns() < deadline) {
        if (query(db, "SELECT count(*) FROM raft_nodes WHERE role='voter'", &n, NULL, 0) ==
                SQLITE_ROW &&
            n >= voters) {
            return;
        }
        sleep_us(20000);
    }
    bench_die("the cluster did not reach %d voters (has %" PRId64 ")", voters, n);
}

struct node_state {
    sqlite3 *db;
    char uri[4300];
    pthread_t th;
    volatile int stop;
    bool running;
    char lag_path[4200];
    uint64_t *vis; /* lag: visible time by id */
    pthread_mutex_t out_mu;
};
static struct node_state ns;

static void node_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void node_say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&ns.out_mu);
    vprintf(fmt, ap);
    fflush(stdout);
    pthread_mutex_unlock(&ns.out_mu);
    va_end(ap);
}

/* Follower: the visible time of every lag row, polling max(id). */
static void *lag_main(void *arg)
{
    (void)arg;
    sqlite3 *db = open_db(ns.uri);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT coalesce(max(id), 0) FROM lag", -1, &st, NULL) !=
        SQLITE_OK) {
        bench_die("lag: %s", sqlite3_errmsg(db));
    }
    int64_t last = -1;
    while (!ns.stop) {
        if (sqlite3_step(st) == SQLITE_ROW) {
            int64_t m = sqlite3_column_int64(st, 0);
            uint64_t now = bench_now_ns();
            if (last >= 0) {
                for (int64_t id = last + 1; id <= m && id < (int64_t)LAG_IDS_MAX; id++) {
                    ns.vis[id] = now;
                }
            }
            last = m;
        }
        sqlite3_reset(st);
        sleep_us(200);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return NULL;
}

/* Failover: writes all the time; says "W <ns>" whenever a write succeeds after failures. */
static void *fo_main(void *arg)
{
    (void)arg;
    sqlite3 *db = open_db(ns.uri);
    sqlite3_busy_timeout(db, 100);
    exec(db, "PRAGMA synchronous=NORMAL");
    bool failing = true;
    while (!ns.stop) {
        int rc = sqlite3_exec(db, "INSERT INTO fo(t) VALUES(1)", NULL, NULL, NULL);
        if (rc == SQLITE_OK) {
            if (failing) {
                node_say("W %" PRIu64 "\n", bench_now_ns());
            }
            failing = false;
        } else {
            failing = true;
            sleep_us(1000);
        }
    }
    sqlite3_close(db);
    return NULL;
}

/* Leader: `mb` MB of 200-byte random rows into bulk in 1,000-row transactions. */
static int64_t bulk_load(double mb)
{
    sqlite3_stmt *st;
    unsigned char row[200];
    uint64_t seed = 0x1234567;
    int64_t rows = (int64_t)(mb * 1e6 / 200), done = 0;
    exec(ns.db, "PRAGMA synchronous=NORMAL");
    if (sqlite3_prepare_v2(ns.db, "INSERT INTO bulk(v) VALUES(?)", -1, &st, NULL) != SQLITE_OK) {
        return -1;
    }
    while (done < rows) {
        if (exec(ns.db, "BEGIN") != SQLITE_OK) {
            return -1;
        }
        for (int r = 0; r < 1000; r++, done++) {
            for (size_t k = 0; k < sizeof row; k += 8) {
                uint64_t x = rnd(&seed);
                memcpy(row + k, &x, 8);
            }
            sqlite3_bind_blob(st, 1, row, sizeof row, SQLITE_STATIC);
            sqlite3_step(st);
            sqlite3_reset(st);
        }
        if (exec(ns.db, "COMMIT") != SQLITE_OK) {
            exec(ns.db, "ROLLBACK");
            return -1;
        }
    }
    sqlite3_finalize(st);
    int64_t max = 0;
    query(ns.db, "SELECT max(id) FROM bulk", &max, NULL, 0);
    return max;
}

/*
 * --node DIR NAME PORT MODE PEER_PORT ARG: one walraft node. MODE: bootstrap | join | restart |
 * catchup (join, then wait until bulk holds row ARG and say "caught SECONDS"). Then commands on
 * stdin: lag PATH | stop | writer | bulk MB | remove NAME | role | hwm | quit.
 */
static int node_main(int argc, char **argv)
{
    if (argc < 8) {
        bench_die("--node: arguments");
    }
    dir = argv[2];
    const char *name = argv[3], *mode = argv[5];
    int port = atoi(argv[4]), peer = atoi(argv[6]);
    int64_t arg = atoll(argv[7]);
    char addr[64], paddr[64], sql[512], txt[512];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    snprintf(paddr, sizeof paddr, "127.0.0.1:%d", peer);
    pthread_mutex_init(&ns.out_mu, NULL);
    walraft_load();
    node_uri(ns.uri, sizeof ns.uri, name);
    ns.db = open_db(ns.uri);
    uint64_t t0 = bench_now_ns();
    if (strcmp(mode, "bootstrap") == 0) {
        snprintf(sql, sizeof sql, "SELECT raft_bootstrap('%s', '%s')", name, addr);
        if (query(ns.db, sql, NULL, txt, sizeof txt) != SQLITE_ROW) {
            bench_die("%s: %s", name, txt);
        }
        wait_writable(ns.db);
        setup_schema(ns.db);
    } else if (strcmp(mode, "join") == 0 || strcmp(mode, "catchup") == 0) {
        snprintf(sql, sizeof sql, "SELECT raft_join('%s', '%s', '%s')", name, addr, paddr);
        int rc = SQLITE_ERROR;
        for (int i = 0; i < 20 && (rc = query(ns.db, sql, NULL, txt, sizeof txt)) != SQLITE_ROW;
             i++) {
            fprintf(stderr, "bench node %s: join: %s (retrying)\n", name, txt);
            sleep_us(500000);
        }
        if (rc != SQLITE_ROW) {
            bench_die("%s: %s", name, txt);
        }
    } else {
        /* restart: opening the database restarted its node */
        int64_t t = 0;
        if (query(ns.db, "SELECT raft_term()", &t, txt, sizeof txt) != SQLITE_ROW) {
            bench_die("%s: restart: %s", name, txt);
        }
    }
    uint64_t t_joined = bench_now_ns();
    if (strcmp(mode, "catchup") == 0) {
        int64_t m = 0;
        uint64_t deadline = t0 + 600000000000ull;
        int64_t seen = -1;
        uint64_t progress = bench_now_ns();
        while (bench_now_ns() < deadline) {
            if (query(ns.db, "SELECT coalesce(max(id), 0) FROM bulk", &m, NULL, 0) == SQLITE_ROW &&
                m >= arg) {
                break;
            }
            if (m != seen) {
                seen = m;
                progress = bench_now_ns();
            } else if (bench_now_ns() - progress > 30000000000ull) {
                break; /* no progress for 30 s: stuck */
            }
            sleep_us(5000);
        }
        uint64_t t1 = bench_now_ns();
        node_say("caught %.3f %.3f %" PRId64 "\n", (double)(t1 - t0) / 1e9,
                 (double)(t_joined - t0) / 1e9, m);
    }
    node_say("ready\n");
    char line[4300];
    while (fgets(line, sizeof line, stdin) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "lag ", 4) == 0) {
            snprintf(ns.lag_path, sizeof ns.lag_path, "%s", line + 4);
            if (ns.vis == NULL) {
                ns.vis = calloc(LAG_IDS_MAX, sizeof *ns.vis);
            }
            memset(ns.vis, 0, LAG_IDS_MAX * sizeof *ns.vis);
            ns.stop = 0;
            pthread_create(&ns.th, NULL, lag_main, NULL);
            ns.running = true;
            node_say("ok\n");
        } else if (strcmp(line, "stop") == 0) {
            ns.stop = 1;
            if (ns.running) {
                pthread_join(ns.th, NULL);
                ns.running = false;
            }
            if (ns.lag_path[0] != '\0') {
                FILE *f = fopen(ns.lag_path, "wb");
                if (f == NULL || fwrite(ns.vis, sizeof *ns.vis, LAG_IDS_MAX, f) != LAG_IDS_MAX) {
                    bench_die("cannot write %s", ns.lag_path);
                }
                fclose(f);
                ns.lag_path[0] = '\0';
            }
            node_say("done\n");
        } else if (strcmp(line, "writer") == 0) {
            ns.stop = 0;
            pthread_create(&ns.th, NULL, fo_main, NULL);
            ns.running = true;
        } else if (strncmp(line, "bulk ", 5) == 0) {
            uint64_t b0 = bench_now_ns();
            int64_t max = bulk_load(atof(line + 5));
            node_say("bulk %" PRId64 " %.3f\n", max, (double)(bench_now_ns() - b0) / 1e9);
        } else if (strncmp(line, "remove ", 7) == 0) {
            snprintf(sql, sizeof sql, "SELECT raft_remove('%s')", line + 7);
            int rc = query(ns.db, sql, NULL, txt, sizeof txt);
            node_say("removed %d %s\n", rc == SQLITE_ROW, txt);
        } else if (strcmp(line, "logspan") == 0) {
            int64_t first = 0, last = 0;
            query(ns.db, "SELECT value FROM raft_stats WHERE name='first_index'", &first, NULL, 0);
            query(ns.db, "SELECT value FROM raft_stats WHERE name='last_index'", &last, NULL, 0);
            node_say("span %" PRId64 " %" PRId64 "\n", first, last);
        } else if (strcmp(line, "role") == 0) {
            query(ns.db, "SELECT raft_role()", NULL, txt, sizeof txt);
            node_say("role %s\n", txt);
        } else if (strcmp(line, "hwm") == 0) {
            node_say("hwm %ld\n", bench_vmhwm_kb(getpid()));
        } else if (strcmp(line, "hwmreset") == 0) {
            /* VmHWM starts again from the current RSS (Linux: clear_refs 5). */
            FILE *f = fopen("/proc/self/clear_refs", "w");
            int ok = f != NULL && fputs("5", f) >= 0;
            if (f != NULL && fclose(f) != 0) {
                ok = 0;
            }
            node_say("hwmreset %d %ld\n", ok, bench_vmhwm_kb(getpid()));
        } else if (strcmp(line, "quit") == 0) {
            break;
        }
    }
    _exit(0);
}

/* --- one setup (a process of its own: its own peak RSS, no state left from another) ---------- */

/* Workload 3 again at this rate, 2 s per run: commits far apart. */
#define QUIET_RATE 50

/* Workload 3, one run on a 3-node setup: paced writes at `rate`/s; the follower reports when
 * each row became visible. Prints "R achieved_tx/s p50_ms p99_ms unseen". */
static void lag_run(const char *uri, struct bench_child *follower, double rate, double run_secs)
{
    static uint64_t *commit_ns, *vis;
    static int64_t next_id = 1;
    char path[4200], line[256];
    if (commit_ns == NULL) {
        commit_ns = calloc(LAG_IDS_MAX, sizeof *commit_ns);
        vis = malloc(LAG_IDS_MAX * sizeof *vis);
    }
    snprintf(path, sizeof path, "%s/lag.bin", dir);
    bench_child_send(follower, "lag %s\n", path);
    if (bench_child_expect(follower, "ok", line, sizeof line, 10000) != 0) {
        bench_die("lag: follower did not start");
    }
    memset(commit_ns, 0, LAG_IDS_MAX * sizeof *commit_ns);
    struct run_result x =
        run_writers(uri, RAFT3, WL_LAG, 1, run_secs, next_id, 1e9 / rate, commit_ns);
    sleep_us(300000);
    bench_child_send(follower, "stop\n");
    if (bench_child_expect(follower, "done", line, sizeof line, 10000) != 0) {
        bench_die("lag: follower did not stop");
    }
    FILE *f = fopen(path, "rb");
    if (f == NULL || fread(vis, sizeof *vis, LAG_IDS_MAX, f) != LAG_IDS_MAX) {
        bench_die("lag: cannot read %s", path);
    }
    fclose(f);
    struct bench_vec lag = {0};
    long missing = 0;
    for (int64_t i = 0; i < (int64_t)LAG_IDS_MAX - next_id; i++) {
        if (commit_ns[i] == 0) {
            continue;
        }
        if (vis[next_id + i] == 0) {
            missing++;
            continue;
        }
        bench_vec_push(&lag, ((double)vis[next_id + i] - (double)commit_ns[i]) / 1e6);
    }
    bench_vec_sort(&lag);
    printf("R %.3f %.4f %.4f %ld\n", x.tps, bench_quantile(&lag, 0.5), bench_quantile(&lag, 0.99),
           missing);
    fflush(stdout);
    bench_vec_free(&lag);
    next_id += (int64_t)(rate * run_secs * 1.2) + 1000;
    if (next_id >= (int64_t)LAG_IDS_MAX / 2) {
        next_id = 1; /* the table keeps its rows: restart above them */
        exec_quiet_reset_lag(uri);
    }
}

static int setup_main(int argc, char **argv)
{
    if (argc < 6) {
        bench_die("--setup: arguments");
    }
    enum setup_kind kind = PLAIN_FULL;
    for (int k = 0; k < N_KINDS; k++) {
        if (strcmp(argv[2], kind_names[k]) == 0) {
            kind = (enum setup_kind)k;
        }
    }
    dir = argv[3];
    runs = atoi(argv[4]);
    secs = atof(argv[5]);
    int port = atoi(argv[6]);
    char uri[4300], txt[512];
    struct bench_child f[2] = {{0}, {0}};
    sqlite3 *db;
    if (kind == PLAIN_FULL || kind == PLAIN_NORMAL) {
        snprintf(uri, sizeof uri, "file:%s/plain-%s.db", dir, kind_names[kind]);
        db = open_db(uri);
        exec(db, "PRAGMA journal_mode=WAL");
    } else {
        walraft_load();
        if (kind == RAFT3_LAZY) {
            setenv("BENCH_LEADER_SYNC", "lazy", 1); /* this node and the followers it spawns */
        }
        node_uri(uri, sizeof uri, "n1");
        db = open_db(uri);
        char sql[256];
        snprintf(sql, sizeof sql, "SELECT raft_bootstrap('n1', '127.0.0.1:%d')", port);
        if (query(db, sql, NULL, txt, sizeof txt) != SQLITE_ROW) {
            bench_die("bootstrap: %s", txt);
        }
        wait_writable(db);
        if (kind == RAFT3 || kind == RAFT3_LAZY) {
            spawn_node(&f[0], "n2", port + 1, "join", port, 0);
            spawn_node(&f[1], "n3", port + 2, "join", port, 0);
            node_ready(&f[0], "n2");
            node_ready(&f[1], "n3");
            wait_voters(db, 3);
        }
    }
    conn_pragmas(db, kind);
    setup_schema(db);
    /* Commands, one run each, so that the coordinator can interleave the setups' runs (the
     * machine's disk and CPUs are shared and drift): "c1|c4|bulk SECS" -> "R tx/s MB/s p50 p99
     * p99.9 errors" (ms); "lag RATE SECS" -> "R tx/s p50 p99 unseen"; "hwm"; "quit". */
    printf("ready\n");
    fflush(stdout);
    char line[256];
    while (fgets(line, sizeof line, stdin) != NULL) {
        char w[16];
        double a = 0, b = 0;
        int k = sscanf(line, "%15s %lf %lf", w, &a, &b);
        if (k >= 2 && (strcmp(w, "c1") == 0 || strcmp(w, "c4") == 0 || strcmp(w, "bulk") == 0)) {
            enum wl wl = strcmp(w, "bulk") == 0 ? WL_BULK : WL_COMMIT;
            int threads = strcmp(w, "c4") == 0 ? 4 : 1;
            struct run_result x = run_writers(uri, kind, wl, threads, a, 0, 0, NULL);
            printf("R %.3f %.3f %.4f %.4f %.4f %ld\n", x.tps, x.mbps, x.p50_ms, x.p99_ms,
                   x.p999_ms, x.errs);
            fflush(stdout);
        } else if (k == 3 && strcmp(w, "lag") == 0 && kind == RAFT3) {
            lag_run(uri, &f[0], a, b);
        } else if (k >= 1 && strcmp(w, "hwm") == 0) {
            printf("H n1 %ld\n", bench_vmhwm_kb(getpid()));
            for (int i = 0; i < 2; i++) {
                if (f[i].pid > 0) {
                    printf("H n%d %ld\n", i + 2, bench_vmhwm_kb(f[i].pid));
                }
            }
            printf("end\n");
            fflush(stdout);
        } else if (k >= 1 && strcmp(w, "quit") == 0) {
            break;
        }
    }
    for (int i = 0; i < 2; i++) {
        bench_child_kill(&f[i]);
    }
    fflush(stdout);
    _exit(0); /* the nodes' threads need no orderly stop: the database files are scratch */
}

/* --- the coordinator ------------------------------------------------------------------------- */

#define RESULTS_MAX 256
struct result {
    char key[96];
    struct bench_stat s;
    char text[128];
};
static struct result results[RESULTS_MAX];
static int n_results;

static struct result *put(const char *key)
{
    for (int i = 0; i < n_results; i++) {
        if (strcmp(results[i].key, key) == 0) {
            return &results[i];
        }
    }
    if (n_results == RESULTS_MAX) {
        bench_die("too many results");
    }
    struct result *r = &results[n_results++];
    snprintf(r->key, sizeof r->key, "%s", key);
    return r;
}

static struct result *get(const char *key)
{
    for (int i = 0; i < n_results; i++) {
        if (strcmp(results[i].key, key) == 0) {
            return &results[i];
        }
    }
    return NULL;
}

static void rm_rf(const char *path)
{
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) {
        fprintf(stderr, "bench: %s failed\n", cmd);
    }
}

static struct bench_child setups[N_KINDS];

static void setup_start(enum setup_kind kind, int port)
{
    char sub[4200], sport[16], line[512];
    snprintf(sub, sizeof sub, "%s/%s", dir, kind_names[kind]);
    rm_rf(sub);
    mkdir(sub, 0755);
    snprintf(sport, sizeof sport, "%d", port);
    char *argv[] = {"bench", "--setup", (char *)kind_names[kind], sub, "0", "0", sport, NULL};
    fprintf(stderr, "bench: setup %s\n", kind_names[kind]);
    if (bench_child_spawn(&setups[kind], argv) != 0 ||
        bench_child_expect(&setups[kind], "ready", line, sizeof line, 120000) != 0) {
        bench_die("setup %s did not start", kind_names[kind]);
    }
}

/* One run of `what` on a setup; x[] receives the numbers of its "R" line. */
static int setup_run(enum setup_kind kind, const char *what, double a, double b, double x[6])
{
    char line[512];
    struct bench_child *c = &setups[kind];
    if (b > 0) {
        bench_child_send(c, "%s %g %g\n", what, a, b);
    } else {
        bench_child_send(c, "%s %g\n", what, a);
    }
    memset(x, 0, 6 * sizeof *x);
    if (bench_child_expect(c, "R", line, sizeof line, 300000) != 0 ||
        sscanf(line, "R %lf %lf %lf %lf %lf %lf", &x[0], &x[1], &x[2], &x[3], &x[4], &x[5]) < 4) {
        fprintf(stderr, "bench: setup %s: no answer to %s\n", kind_names[kind], what);
        return -1;
    }
    return 0;
}

static void store(const char *kind, const char *w, const char *m, const double *v, int n)
{
    char key[96];
    snprintf(key, sizeof key, "%s.%s.%s", kind, w, m);
    put(key)->s = bench_stat_of(v, n);
}

/* Workloads 1-3: every setup runs at once (idle ones only heartbeat) and their runs are
 * interleaved, round-robin, so that a drifting shared disk hits every setup alike. The 1-writer and
 * 4-writer runs of a round go back to back on each setup, and the ratio of the two is kept per
 * round ("4 writers / 1 writer"): the drift between two rounds does not enter it. */
static void run_setups(int port)
{
    static const char *groups[2][2] = {{"c1", "c4"}, {"bulk", NULL}};
    for (int k = 0; k < N_KINDS; k++) {
        setup_start((enum setup_kind)k, port + 10 * k);
    }
    static double v[2][N_KINDS][5][64], ratio[N_KINDS][64];
    for (int g = 0; g < 2; g++) {
        double errs[2][N_KINDS] = {{0}};
        int nw = groups[g][1] != NULL ? 2 : 1;
        for (int r = -1; r < runs; r++) {
            for (int k = 0; k < N_KINDS; k++) {
                for (int w = 0; w < nw; w++) {
                    double x[6];
                    if (setup_run((enum setup_kind)k, groups[g][w], r < 0 ? secs / 2 : secs, 0,
                                  x) != 0) {
                        bench_die("a setup stopped answering");
                    }
                    fprintf(stderr, "  %s %s run %d: %.0f tx/s p50 %.3f p99 %.3f p99.9 %.3f ms\n",
                            kind_names[k], groups[g][w], r, x[0], x[2], x[3], x[4]);
                    if (r >= 0) {
                        for (int m = 0; m < 5; m++) {
                            v[w][k][m][r] = x[m];
                        }
                        errs[w][k] += x[5];
                    }
                }
                if (r >= 0 && nw == 2) {
                    ratio[k][r] = v[0][k][0][r] > 0 ? v[1][k][0][r] / v[0][k][0][r] : 0;
                }
            }
        }
        const char *ms[5] = {"tps", "mbps", "p50", "p99", "p999"};
        for (int w = 0; w < nw; w++) {
            for (int k = 0; k < N_KINDS; k++) {
                for (int m = 0; m < 5; m++) {
                    store(kind_names[k], groups[g][w], ms[m], v[w][k][m], runs);
                }
                char key[96];
                snprintf(key, sizeof key, "%s.%s.errs", kind_names[k], groups[g][w]);
                put(key)->s = (struct bench_stat){errs[w][k], 0, 0, 1};
            }
        }
        if (nw == 2) {
            for (int k = 0; k < N_KINDS; k++) {
                store(kind_names[k], "c4", "ratio", ratio[k], runs);
            }
        }
    }
    /* Workload 3 on the 3-node setup. */
    struct result *c1 = get("raft3.c1.tps");
    double rate = c1 != NULL ? 0.7 * c1->s.med : 0;
    if (rate > 1) {
        double p50[64], p99[64], tps[64];
        for (int r = -1; r < runs; r++) {
            double x[6];
            if (setup_run(RAFT3, "lag", rate, r < 0 ? secs / 2 : secs, x) != 0) {
                break;
            }
            fprintf(stderr, "  lag run %d: %.0f tx/s, lag p50 %.3f p99 %.3f ms, %.0f unseen\n", r,
                    x[0], x[1], x[2], x[3]);
            if (r >= 0) {
                tps[r] = x[0], p50[r] = x[1], p99[r] = x[2];
            }
        }
        store("raft3", "lag", "p50", p50, runs);
        store("raft3", "lag", "p99", p99, runs);
        store("raft3", "lag", "tps", tps, runs);
        put("raft3.lag.rate")->s = (struct bench_stat){rate, 0, 0, 1};
    }
    /* The same at a quiet leader's rate, where no next entry follows a commit soon: a follower
     * learns of it from the leader's commit heartbeat (RAFT_EVENT_TELL_COMMIT). */
    {
        double p50[64], p99[64];
        int n = 0;
        for (; n < runs; n++) {
            double x[6];
            if (setup_run(RAFT3, "lag", QUIET_RATE, 2, x) != 0) {
                break;
            }
            fprintf(stderr, "  quiet lag run %d: lag p50 %.3f p99 %.3f ms\n", n, x[1], x[2]);
            p50[n] = x[1], p99[n] = x[2];
        }
        if (n > 0) {
            store("raft3", "qlag", "p50", p50, n);
            store("raft3", "qlag", "p99", p99, n);
        }
    }
    for (int k = 0; k < N_KINDS; k++) {
        char line[512], sub[4200], name[64], key[96];
        long kb;
        bench_child_send(&setups[k], "hwm\n");
        while (bench_child_line(&setups[k], line, sizeof line, 10000) == 0 &&
               strcmp(line, "end") != 0) {
            if (k >= RAFT1 && sscanf(line, "H %63s %ld", name, &kb) == 2) {
                snprintf(key, sizeof key, "%s.hwm.%s", kind_names[k], name);
                put(key)->s = (struct bench_stat){(double)kb / 1024.0, 0, 0, 1};
            }
        }
        bench_child_quit(&setups[k], 10000);
        snprintf(sub, sizeof sub, "%s/%s", dir, kind_names[k]);
        rm_rf(sub);
    }
}

/* Workload 4: kill -9 of the leader of a 3-node cluster under write load; then (n_frozen runs)
 * a leader stopped with SIGSTOP, which closes no connection, as a host that vanishes would: the
 * followers wait for the election timeout. The stopped process is killed once measured. */
static void run_failover(int n_runs, int n_frozen, int port)
{
    char sub[4200], line[512];
    snprintf(sub, sizeof sub, "%s/failover", dir);
    rm_rf(sub);
    mkdir(sub, 0755);
    const char *saved = dir;
    dir = sub;
    struct bench_child c[3] = {{0}, {0}, {0}};
    const char *names[3] = {"n1", "n2", "n3"};
    fprintf(stderr, "bench: failover\n");
    spawn_node(&c[0], "n1", port, "bootstrap", 0, 0);
    node_ready(&c[0], "n1");
    spawn_node(&c[1], "n2", port + 1, "join", port, 0);
    node_ready(&c[1], "n2");
    spawn_node(&c[2], "n3", port + 2, "join", port, 0);
    node_ready(&c[2], "n3");
    for (int i = 0; i < 3; i++) {
        bench_child_send(&c[i], "writer\n");
    }
    sleep_us(3000000); /* joiners promoted, writes flowing */
    double t[64], tf[64];
    int got = 0, got_frozen = 0;
    for (int r = 0; r < n_runs + n_frozen; r++) {
        bool frozen = r >= n_runs;
        int leader = -1;
        for (int i = 0; i < 3 && leader < 0; i++) {
            bench_child_send(&c[i], "role\n");
            if (bench_child_expect(&c[i], "role", line, sizeof line, 5000) == 0 &&
                strcmp(line, "role leader") == 0) {
                leader = i;
            }
        }
        if (leader < 0) {
            fprintf(stderr, "  failover run %d: no leader, skipped\n", r);
            sleep_us(1000000);
            continue;
        }
        /* drain what the survivors said so far */
        for (int i = 0; i < 3; i++) {
            while (i != leader && bench_child_line(&c[i], line, sizeof line, 0) == 0) {
            }
        }
        uint64_t t_kill = bench_now_ns();
        if (frozen) {
            kill(c[leader].pid, SIGSTOP);
        } else {
            bench_child_kill(&c[leader]);
        }
        double dt = -1;
        uint64_t deadline = t_kill + 20000000000ull;
        while (dt < 0 && bench_now_ns() < deadline) {
            for (int i = 0; i < 3 && dt < 0; i++) {
                uint64_t w;
                if (i != leader && bench_child_line(&c[i], line, sizeof line, 5) == 0 &&
                    sscanf(line, "W %" SCNu64, &w) == 1 && w > t_kill) {
                    dt = (double)(w - t_kill) / 1e9;
                }
            }
        }
        fprintf(stderr, "  failover run %d: %s %s, first write after %.3f s\n", r,
                frozen ? "stopped" : "killed", names[leader], dt);
        if (dt >= 0 && frozen) {
            tf[got_frozen++] = dt;
        } else if (dt >= 0) {
            t[got++] = dt;
        }
        if (frozen) {
            bench_child_kill(&c[leader]);
        }
        spawn_node(&c[leader], names[leader], port + leader, "restart", 0, 0);
        node_ready(&c[leader], names[leader]);
        bench_child_send(&c[leader], "writer\n");
        sleep_us(2500000); /* the restarted node catches up */
    }
    for (int i = 0; i < 3; i++) {
        bench_child_kill(&c[i]);
    }
    put("failover")->s = bench_stat_of(t, got);
    put("failover.frozen")->s = bench_stat_of(tf, got_frozen);
    dir = saved;
    rm_rf(sub);
}

/* Joins `n_runs` fresh nodes, one after another, to the cluster led by c[0], whose bulk table
 * ends at row `rows`; records seconds and MB/s under `key`. */
static void catchup_joins(struct bench_child *leader, const char *sub, int64_t rows, int n_runs,
                          int port, int *next_joiner, const char *key)
{
    char line[512], k[128];
    double s[64], rate[64], lrss[64], jrss[64], lbase[64];
    int got = 0, nl = 0, nj = 0, nb = 0;
    for (int r = 0; r < n_runs; r++) {
        char name[16];
        snprintf(name, sizeof name, "j%d", (*next_joiner)++);
        struct bench_child j = {0};
        /* The leader's peak RSS from here on: what sending the log or a snapshot costs it. */
        int reset_ok = 0;
        long kb = 0, base_kb = 0;
        bench_child_send(leader, "hwmreset\n");
        if (bench_child_expect(leader, "hwmreset", line, sizeof line, 10000) != 0 ||
            sscanf(line, "hwmreset %d %ld", &reset_ok, &base_kb) != 2) {
            reset_ok = 0;
        }
        if (reset_ok && base_kb > 0) {
            lbase[nb++] = (double)base_kb / 1024;
        }
        spawn_node(&j, name, port + 3 + *next_joiner, "catchup", port, rows);
        double total = 0, join = 0;
        int64_t m = 0;
        if (bench_child_expect(&j, "caught", line, sizeof line, 700000) == 0 &&
            sscanf(line, "caught %lf %lf %" SCNd64, &total, &join, &m) == 3 && m >= rows) {
            s[got] = total;
            rate[got] = (double)rows * 200 / 1e6 / total;
            fprintf(stderr, "  catch-up run %d: %.2f s (join %.2f s), %.1f MB/s\n", r, total, join,
                    rate[got]);
            got++;
            bench_child_send(&j, "hwm\n");
            if (bench_child_expect(&j, "hwm", line, sizeof line, 10000) == 0 &&
                sscanf(line, "hwm %ld", &kb) == 1 && kb > 0) {
                jrss[nj++] = (double)kb / 1024;
            }
            bench_child_send(leader, "hwm\n");
            if (reset_ok && bench_child_expect(leader, "hwm", line, sizeof line, 10000) == 0 &&
                sscanf(line, "hwm %ld", &kb) == 1 && kb > 0) {
                lrss[nl++] = (double)kb / 1024;
            }
            fprintf(stderr, "    peak RSS: leader %.1f MiB (%.1f MiB at the join), joiner %.1f MiB\n",
                    nl > 0 ? lrss[nl - 1] : 0.0, (double)base_kb / 1024,
                    nj > 0 ? jrss[nj - 1] : 0.0);
        } else {
            fprintf(stderr, "  catch-up run %d: not caught up (%s)\n", r, line);
        }
        if (getenv("BENCH_WRAP") != NULL) {
            bench_child_quit(&j, 60000);
        }
        bench_child_kill(&j);
        bench_child_send(leader, "remove %s\n", name);
        bench_child_expect(leader, "removed", line, sizeof line, 40000);
        const char *sfx[] = {".db", ".db-wal", ".db-shm"};
        for (int i = 0; i < 3; i++) {
            snprintf(line, sizeof line, "%s/%s%s", sub, name, sfx[i]);
            unlink(line);
        }
        snprintf(line, sizeof line, "%s/%s.db-raft", sub, name);
        rm_rf(line);
    }
    snprintf(k, sizeof k, "%s.s", key);
    put(k)->s = bench_stat_of(s, got);
    snprintf(k, sizeof k, "%s.mbps", key);
    put(k)->s = bench_stat_of(rate, got);
    snprintf(k, sizeof k, "%s.mb", key);
    put(k)->s = (struct bench_stat){(double)rows * 200 / 1e6, 0, 0, 1};
    snprintf(k, sizeof k, "%s.rss.leader", key);
    put(k)->s = bench_stat_of(lrss, nl);
    snprintf(k, sizeof k, "%s.rss.joiner", key);
    put(k)->s = bench_stat_of(jrss, nj);
    snprintf(k, sizeof k, "%s.rss.base", key);
    put(k)->s = bench_stat_of(lbase, nb);
    if (got == 0) {
        snprintf(k, sizeof k, "%s", key);
        snprintf(put(k)->text, sizeof results[0].text, "no joining node caught up");
    }
}

/* Loads the bulk table of the leader up to `mb` MB in total; the last row id, or -1. */
static int64_t catchup_load(struct bench_child *leader, double mb)
{
    char line[512];
    int64_t rows = 0;
    double load_s = 0;
    bench_child_send(leader, "bulk %g\n", mb);
    if (bench_child_expect(leader, "bulk", line, sizeof line, 900000) != 0 ||
        sscanf(line, "bulk %" SCNd64 " %lf", &rows, &load_s) != 2 || rows <= 0) {
        return -1;
    }
    fprintf(stderr, "  loaded %.0f MB more (%" PRId64 " rows in all) in %.1f s\n", mb, rows,
            load_s);
    return rows;
}

/* Workload 5: a node joins a 3-node cluster holding a big database: first a smaller one, then
 * the requested size (log replay while the leader's log starts at entry 1, else a snapshot). */
static void run_catchup(double mb, double small_mb, int n_runs, int port)
{
    char sub[4200], line[512];
    snprintf(sub, sizeof sub, "%s/catchup", dir);
    rm_rf(sub);
    mkdir(sub, 0755);
    const char *saved = dir;
    dir = sub;
    struct bench_child c[3] = {{0}, {0}, {0}};
    fprintf(stderr, "bench: catch-up (%.0f MB, then %.0f MB)\n", small_mb, mb);
    spawn_node(&c[0], "n1", port, "bootstrap", 0, 0);
    node_ready(&c[0], "n1");
    spawn_node(&c[1], "n2", port + 1, "join", port, 0);
    node_ready(&c[1], "n2");
    spawn_node(&c[2], "n3", port + 2, "join", port, 0);
    node_ready(&c[2], "n3");
    sleep_us(2000000);
    int joiner = 0;
    double loaded = 0;
    for (int step = 0; step < 2; step++) {
        double want = step == 0 ? small_mb : mb;
        const char *key = step == 0 ? "catchup_small" : "catchup";
        if (want <= loaded) {
            continue;
        }
        int64_t rows = catchup_load(&c[0], want - loaded);
        if (rows < 0) {
            snprintf(put(key)->text, sizeof results[0].text, "loading the database failed");
            break;
        }
        loaded = want;
        int64_t first = 0, last = 0;
        bench_child_send(&c[0], "logspan\n");
        if (bench_child_expect(&c[0], "span", line, sizeof line, 10000) == 0) {
            sscanf(line, "span %" SCNd64 " %" SCNd64, &first, &last);
        }
        fprintf(stderr, "  the leader's log holds entries %" PRId64 "..%" PRId64 "\n", first,
                last);
        for (int i = 1; i <= 3; i++) {
            struct stat st;
            snprintf(line, sizeof line, "%s/n%d.db-wal", sub, i);
            if (stat(line, &st) == 0) {
                fprintf(stderr, "  n%d.db-wal: %.1f MB\n", i, (double)st.st_size / 1e6);
            }
        }
        if (first > 1) {
            fprintf(stderr, "  the log is compacted: the joiner catches up by snapshot\n");
        }
        catchup_joins(&c[0], sub, rows, n_runs, port, &joiner, key);
    }
    for (int i = 0; i < 3; i++) {
        bench_child_kill(&c[i]);
    }
    dir = saved;
    rm_rf(sub);
}

/* --- the table ------------------------------------------------------------------------------- */

static const char *setup_titles[] = {"SQLite WAL, synchronous=FULL", "SQLite WAL, synchronous=NORMAL",
                                     "walraft, 1 node", "walraft, 3 nodes",
                                     "walraft, 3 nodes, raft_leader_sync=lazy"};

static void row(const char *workload, const char *setup, const char *figure, const char *unit,
                const struct result *r, double scale, const struct result *base, int prec)
{
    if (r == NULL || r->s.n == 0) {
        printf("| %s | %s | %s | not measured | | |\n", workload, setup, figure);
        return;
    }
    char ratio[32] = "";
    if (base != NULL && base->s.n > 0 && base->s.med != 0) {
        snprintf(ratio, sizeof ratio, "%.2f×", r->s.med / base->s.med);
    }
    if (r->s.n > 1) {
        printf("| %s | %s | %s | %.*f %s | %.*f – %.*f | %s |\n", workload, setup, figure, prec,
               r->s.med * scale, unit, prec, r->s.min * scale, prec, r->s.max * scale, ratio);
    } else {
        printf("| %s | %s | %s | %.*f %s | | %s |\n", workload, setup, figure, prec,
               r->s.med * scale, unit, ratio);
    }
}

static double fd99, fd999; /* latency of one 4 KiB append + fdatasync, ms */

static void print_table(double fd_append, double fd_over, double rtt50, double rtt99)
{
    char key[128], base[128];
    printf("| workload | setup | figure | median | min – max | × SQLite FULL |\n");
    printf("|---|---|---|---|---|---|\n");
    const char *wls[] = {"c1", "c4", "bulk"};
    const char *wl_titles[] = {"1. commit, 1 writer", "1. commit, 4 writers",
                               "2. bulk, 1,000 × 200 B rows/tx"};
    for (int w = 0; w < 3; w++) {
        for (int k = 0; k < N_KINDS; k++) {
            struct {
                const char *m, *fig, *unit;
                double scale;
                int prec;
            } figs[] = {{"tps", "transactions/s", "tx/s", 1, 0},
                        {"mbps", "table data", "MB/s", 1, 1},
                        {"p50", "commit latency p50", "ms", 1, 3},
                        {"p99", "commit latency p99", "ms", 1, 3},
                        {"p999", "commit latency p99.9", "ms", 1, 3}};
            for (int f = 0; f < 5; f++) {
                if (strcmp(figs[f].m, "mbps") == 0 && w != 2) {
                    continue;
                }
                snprintf(key, sizeof key, "%s.%s.%s", kind_names[k], wls[w], figs[f].m);
                snprintf(base, sizeof base, "full.%s.%s", wls[w], figs[f].m);
                row(wl_titles[w], setup_titles[k], figs[f].fig, figs[f].unit, get(key),
                    figs[f].scale, get(base), figs[f].prec);
            }
            if (w == 1) {
                /* Against plain FULL's own ratio in the last column. */
                snprintf(key, sizeof key, "%s.c4.ratio", kind_names[k]);
                row(wl_titles[w], setup_titles[k],
                    "4 writers / 1 writer (transactions/s, per round)", "×", get(key), 1,
                    get("full.c4.ratio"), 2);
            }
            snprintf(key, sizeof key, "%s.%s.errs", kind_names[k], wls[w]);
            struct result *e = get(key);
            if (e != NULL && e->s.med > 0) {
                row(wl_titles[w], setup_titles[k], "failed transactions (all runs)", "", e, 1,
                    NULL, 0);
            }
        }
    }
    for (int k = RAFT1; k < N_KINDS; k++) {
        for (int i = 1; i <= 3; i++) {
            char fig[64];
            snprintf(key, sizeof key, "%s.hwm.n%d", kind_names[k], i);
            snprintf(fig, sizeof fig, "peak RSS (VmHWM) of n%d%s", i,
                     i == 1 ? " (leader; hosts the writers)" : "");
            if (get(key) != NULL) {
                row("1–3. all of the above", setup_titles[k], fig, "MiB", get(key), 1, NULL, 1);
            }
        }
    }
    struct result *rate = get("raft3.lag.rate");
    char fig[128];
    snprintf(fig, sizeof fig, "apply lag p50 (at %.0f tx/s = 70 %% of 3-node 1-writer)",
             rate ? rate->s.med : 0);
    row("3. follower apply lag", setup_titles[3], fig, "ms", get("raft3.lag.p50"), 1, NULL, 3);
    row("3. follower apply lag", setup_titles[3], "apply lag p99", "ms", get("raft3.lag.p99"), 1,
        NULL, 3);
    row("3. follower apply lag", setup_titles[3], "achieved rate", "tx/s", get("raft3.lag.tps"), 1,
        NULL, 0);
    snprintf(fig, sizeof fig, "apply lag p50 at %d tx/s (a quiet leader)", QUIET_RATE);
    row("3. follower apply lag", setup_titles[3], fig, "ms", get("raft3.qlag.p50"), 1, NULL, 3);
    snprintf(fig, sizeof fig, "apply lag p99 at %d tx/s", QUIET_RATE);
    row("3. follower apply lag", setup_titles[3], fig, "ms", get("raft3.qlag.p99"), 1, NULL, 3);
    row("4. failover (kill -9 leader)", setup_titles[3],
        "kill → first write on the new leader (default timeouts)", "s", get("failover"), 1, NULL,
        3);
    row("4. failover (leader stopped, SIGSTOP)", setup_titles[3],
        "stop → first write on the new leader: no connection closes, so the election timeout "
        "(1–2 s) runs out first",
        "s", get("failover.frozen"), 1, NULL, 3);
    const char *cks[2] = {"catchup_small", "catchup"};
    for (int i = 0; i < 2; i++) {
        char k1[64], k2[64], k3[64];
        snprintf(k1, sizeof k1, "%s.s", cks[i]);
        snprintf(k2, sizeof k2, "%s.mbps", cks[i]);
        snprintf(k3, sizeof k3, "%s.mb", cks[i]);
        struct result *cu = get(k1), *mb = get(k3), *why = get(cks[i]);
        char setup[96];
        snprintf(setup, sizeof setup, "walraft, 3 nodes + 1 joining, %.0f MB of table data",
                 mb ? mb->s.med : 0);
        if (cu == NULL || cu->s.n == 0) {
            printf("| 5. catch-up | %s | seconds to caught up | not available: %s | | |\n", setup,
                   why && why->text[0] ? why->text : "not run");
        } else {
            row("5. catch-up", setup, "seconds to caught up (log replay, or a snapshot once the log is compacted)", "s", cu, 1, NULL, 2);
            row("5. catch-up", setup, "catch-up rate (table data)", "MB/s", get(k2), 1, NULL, 1);
            char k4[64];
            snprintf(k4, sizeof k4, "%s.rss.base", cks[i]);
            row("5. catch-up", setup, "RSS of the leader when the node starts joining", "MiB", get(k4), 1, NULL, 1);
            snprintf(k4, sizeof k4, "%s.rss.leader", cks[i]);
            row("5. catch-up", setup, "peak RSS of the leader while the node joins (VmHWM reset at the join)", "MiB", get(k4), 1, NULL, 1);
            snprintf(k4, sizeof k4, "%s.rss.joiner", cks[i]);
            row("5. catch-up", setup, "peak RSS of the joining node", "MiB", get(k4), 1, NULL, 1);
        }
    }
    struct result m = {.s = {fd_append, 0, 0, 1}};
    row("6. machine", "data directory's disk", "4 KiB append + fdatasync", "/s", &m, 1, NULL, 0);
    m.s.med = fd99;
    row("6. machine", "data directory's disk", "4 KiB append + fdatasync, latency p99", "ms", &m, 1,
        NULL, 2);
    m.s.med = fd999;
    row("6. machine", "data directory's disk", "4 KiB append + fdatasync, latency p99.9", "ms", &m,
        1, NULL, 2);
    m.s.med = fd_over;
    row("6. machine", "data directory's disk", "4 KiB overwrite + fdatasync", "/s", &m, 1, NULL,
        0);
    m.s.med = rtt50;
    row("6. machine", "loopback TCP", "round trip p50 (64 B, TCP_NODELAY)", "µs", &m, 1, NULL, 1);
    m.s.med = rtt99;
    row("6. machine", "loopback TCP", "round trip p99", "µs", &m, 1, NULL, 1);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--node") == 0) {
        return node_main(argc, argv);
    }
    if (argc > 2 && strcmp(argv[1], "--status") == 0) {
        /* diagnostics: the status JSON of the node at ADDR */
        char *json = NULL, err[256] = "";
        if (walraft_remote_status(argv[2], 2000, &json, err, sizeof err) != 0) {
            bench_die("%s: %s", argv[2], err);
        }
        printf("%s\n", json);
        free(json);
        return 0;
    }
    bench_install_cleanup();
    if (argc > 1 && strcmp(argv[1], "--setup") == 0) {
        return setup_main(argc, argv);
    }
    char defdir[256];
    snprintf(defdir, sizeof defdir, "/tmp/walraft-bench.%d", (int)getpid());
    dir = defdir;
    int failover_runs = 10, catchup_runs = 5;
    double catchup_mb = 200, catchup_small_mb = 40;
    bool smoke = false;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--dir") == 0 && v) {
            dir = v, i++;
        } else if (strcmp(argv[i], "--runs") == 0 && v) {
            runs = atoi(v), i++;
        } else if (strcmp(argv[i], "--secs") == 0 && v) {
            secs = atof(v), i++;
        } else if (strcmp(argv[i], "--failover-runs") == 0 && v) {
            failover_runs = atoi(v), i++;
        } else if (strcmp(argv[i], "--catchup-mb") == 0 && v) {
            catchup_mb = atof(v), i++;
        } else if (strcmp(argv[i], "--catchup-small-mb") == 0 && v) {
            catchup_small_mb = atof(v), i++;
        } else if (strcmp(argv[i], "--catchup-runs") == 0 && v) {
            catchup_runs = atoi(v), i++;
        } else if (strcmp(argv[i], "--smoke") == 0) {
            smoke = true;
        } else if (strcmp(argv[i], "--only") == 0 && v) {
            only = v, i++;
        } else {
            fprintf(stderr, "usage: bench [--dir D] [--runs N] [--secs S] [--failover-runs N] "
                            "[--catchup-mb MB] [--catchup-small-mb MB] [--catchup-runs N] [--smoke] "
                            "[--only setups,failover,catchup]\n");
            return 2;
        }
    }
    if (smoke) {
        runs = 1, secs = 1, failover_runs = 1, catchup_mb = 5, catchup_small_mb = 2, catchup_runs = 1;
    }
    if (runs < 1 || runs > 64 || failover_runs > 64 || catchup_runs > 64) {
        bench_die("runs: 1..64");
    }
    mkdir(dir, 0755);
    char real[4096];
    if (realpath(dir, real) == NULL) {
        bench_die("cannot use %s: %s", dir, strerror(errno));
    }
    dir = strdup(real);
    uint64_t t_start = bench_now_ns();
    int port = bench_base_port(80);
    fprintf(stderr, "bench: data in %s, ports from %d, %d runs of %g s\n", dir, port, runs, secs);
    double fd_append = bench_fdatasync_rate(dir, smoke ? 0.5 : 2, true, &fd99, &fd999);
    double fd_over = bench_fdatasync_rate(dir, smoke ? 0.5 : 2, false, NULL, NULL);
    double rtt50 = 0, rtt99 = 0;
    bench_loopback_rtt(smoke ? 0.5 : 1, &rtt50, &rtt99);
    fprintf(stderr, "bench: fdatasync %.0f/s (append) %.0f/s (overwrite), loopback rtt %.1f us\n",
            fd_append, fd_over, rtt50);
    if (only == NULL || strstr(only, "setups") != NULL) {
        run_setups(port);
    }
    if (only == NULL || strstr(only, "failover") != NULL) {
        run_failover(failover_runs, (failover_runs + 1) / 2, port + 60);
    }
    if (only == NULL || strstr(only, "catchup") != NULL) {
        run_catchup(catchup_mb, catchup_small_mb, catchup_runs, port + 70);
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    double load[3] = {0};
    if (getloadavg(load, 3) < 0) {
        load[0] = -1;
    }
    printf("\nwalraft bench: %ld CPUs, load average %.2f at the end, %d runs of %g s per figure "
           "(after a warm-up), data in %s, %s; took %.0f s\n\n",
           cpus, load[0], runs, secs, dir, sqlite3_libversion(),
           (double)(bench_now_ns() - t_start) / 1e9);
    print_table(fd_append, fd_over, rtt50, rtt99);
    fflush(stdout);
    if (strcmp(dir, real) == 0 && strstr(dir, "/walraft-bench.") != NULL) {
        rm_rf(dir);
    }
    return 0;
}
