/* The walraft VFS end to end in one process, with a fake node: a "leader" database whose propose()
 * applies each captured frame set synchronously to one or two "follower" databases and reports it
 * committed. Other processes (sqlite3 CLI children) check the lock model across processes. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>
#include <sqlite3.h>

#include "vfs/vfs.h"
#include "wal/frameset.h"

#define WALCHECK "../shared/tools/walcheck.py"
#define TEST_SECONDS 180

/* --- the fake node -----------------------------------------------------------------------------
 */

struct fake_node {
    struct vfs_db *db;
    int leader;
    struct fake_node *followers[2];
    int n_followers;
    uint64_t next_index;
    int fail_next;    /* 0, or the vfs_propose_result the next proposal returns */
    int proposals;    /* committed proposals */
    int catching_up;  /* the gate answers SQLITE_BUSY this many more times */
    int lose_outcome; /* commit, then report VFS_PROPOSE_UNKNOWN (the writer lost it) */
    int record;       /* keep every committed payload in rec[] */
    struct rec_entry {
        void *payload;
        size_t len;
        uint64_t index;
    } rec[16];
    int n_rec;
    struct rec_entry last; /* the last committed payload, always kept */
};

static int fake_gate(void *ctx, char *why, size_t why_len)
{
    struct fake_node *n = ctx;
    if (n->catching_up > 0) {
        n->catching_up--;
        snprintf(why, why_len, "the new leader is catching up");
        return SQLITE_BUSY;
    }
    if (n->leader) {
        return SQLITE_OK;
    }
    snprintf(why, why_len, "not the leader; the leader is n1 at 127.0.0.1:7001");
    return SQLITE_READONLY;
}

static int fake_propose(void *ctx, const void *payload, size_t len, uint64_t *index_out, char *why,
                        size_t why_len)
{
    struct fake_node *n = ctx;
    if (n->fail_next) {
        int r = n->fail_next;
        n->fail_next = 0;
        snprintf(why, why_len, "fake node told to fail");
        return r;
    }
    uint64_t index = ++n->next_index;
    for (int i = 0; i < n->n_followers; i++) {
        int rc = vfs_db_apply(n->followers[i]->db, payload, len, index);
        if (rc != SQLITE_OK) {
            fprintf(stderr, "apply on follower %d failed: %d\n", i, rc);
            abort();
        }
    }
    n->proposals++;
    free(n->last.payload);
    n->last.payload = malloc(len);
    memcpy(n->last.payload, payload, len);
    n->last.len = len;
    n->last.index = index;
    if (n->record && n->n_rec < 16) {
        n->rec[n->n_rec].payload = malloc(len);
        memcpy(n->rec[n->n_rec].payload, payload, len);
        n->rec[n->n_rec].len = len;
        n->rec[n->n_rec].index = index;
        n->n_rec++;
    }
    *index_out = index;
    if (n->lose_outcome) {
        n->lose_outcome = 0;
        snprintf(why, why_len, "fake node lost the outcome");
        return VFS_PROPOSE_UNKNOWN;
    }
    return VFS_PROPOSE_OK;
}

/* --- fixture -----------------------------------------------------------------------------------
 */

struct cluster {
    char dir[64];
    char path[3][128];
    struct fake_node node[3]; /* 0 = leader, 1, 2 = followers */
    int n;
};

static void exec_ok(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) {
        fprintf(stderr, "%s: %s\n", sql, err ? err : "?");
    }
    sqlite3_free(err);
    assert_int_equal(rc, SQLITE_OK);
}

static sqlite3 *open_conn(const char *path)
{
    sqlite3 *db = NULL;
    assert_int_equal(
        sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, "walraft"),
        SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    return db;
}

static int64_t query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* The running test's directory, removed by teardown even when the test failed half-way. */
static char current_dir[64];

static int teardown_dir(void **state)
{
    (void)state;
    if (current_dir[0] != '\0') {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", current_dir);
        if (system(cmd) != 0) {
            return -1;
        }
        current_dir[0] = '\0';
    }
    alarm(0);
    return 0;
}

static void cluster_start(struct cluster *c, int n, const struct vfs_db_config *fcfg,
                          const struct vfs_db_config *lcfg)
{
    teardown_dir(NULL); /* a failed test's directory, should cmocka skip its teardown */
    memset(c, 0, sizeof *c);
    alarm(TEST_SECONDS);
    snprintf(c->dir, sizeof c->dir, "/tmp/walraft-vfs-XXXXXX");
    assert_non_null(mkdtemp(c->dir));
    memcpy(current_dir, c->dir, sizeof current_dir);
    c->n = n;
    char dir[64];
    memcpy(dir, c->dir, sizeof dir);
    for (int i = 0; i < n; i++) {
        snprintf(c->path[i], sizeof c->path[i], "%s/n%d.db", dir, i);
        sqlite3 *db = open_conn(c->path[i]);
        exec_ok(db, "PRAGMA journal_mode=WAL");
        sqlite3_close(db);
    }
    for (int i = n - 1; i >= 0; i--) {
        struct fake_node *fn = &c->node[i];
        fn->leader = i == 0;
        struct vfs_node_ops ops = {.ctx = fn, .write_gate = fake_gate, .propose = fake_propose};
        assert_int_equal(vfs_db_attach(c->path[i], &ops, i == 0 ? lcfg : fcfg, 0, &fn->db),
                         SQLITE_OK);
    }
    for (int i = 1; i < n; i++) {
        c->node[0].followers[c->node[0].n_followers++] = &c->node[i];
    }
}

static void cluster_stop(struct cluster *c)
{
    for (int i = 0; i < c->n; i++) {
        for (int k = 0; k < c->node[i].n_rec; k++) {
            free(c->node[i].rec[k].payload);
        }
        free(c->node[i].last.payload);
        assert_int_equal(vfs_db_detach(c->node[i].db), SQLITE_OK);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", c->dir);
    assert_int_equal(system(cmd), 0);
    current_dir[0] = '\0';
    alarm(0);
}

/* Runs argv in a child process (bounded by timeout(1)), output to /dev/null or `out`. Returns
 * its exit status. The child is always reaped. */
static int run_child(const char *out, char *const argv[])
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        FILE *f = freopen(out ? out : "/dev/null", "w", stdout);
        (void)f;
        f = freopen(out ? out : "/dev/null", "a", stderr);
        (void)f;
        execvp(argv[0], argv);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        assert_int_equal(errno, EINTR);
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* Checkpoints both databases fully and compares the database files with cmp(1) in a child: this
 * process must not open and close the files itself (that would drop its POSIX locks). */
static void assert_files_identical(struct cluster *c)
{
    uint64_t floor = 0;
    for (int i = 0; i < c->n; i++) {
        assert_int_equal(vfs_db_checkpoint(c->node[i].db, &floor), SQLITE_OK);
    }
    for (int i = 1; i < c->n; i++) {
        char *argv[] = {"cmp", c->path[0], c->path[i], NULL};
        assert_int_equal(run_child(NULL, argv), 0);
    }
}

static int have_walcheck(void)
{
    static int warned;
    if (access(WALCHECK, R_OK) == 0 && access("/usr/bin/python3", X_OK) == 0) {
        return 1;
    }
    if (!warned) {
        printf("notice: %s or /usr/bin/python3 absent: walcheck second opinion skipped\n",
               WALCHECK);
        warned = 1;
    }
    return 0;
}

static void walcheck(const char *path)
{
    if (!have_walcheck()) {
        return;
    }
    char shm[160], wal[160];
    snprintf(shm, sizeof shm, "%s-shm", path);
    snprintf(wal, sizeof wal, "%s-wal", path);
    char *argv[] = {"/usr/bin/python3", WALCHECK, "shm", shm, wal, NULL};
    int rc = run_child("/tmp/walraft-vfs-walcheck.out", argv);
    if (rc != 0) {
        char *cat[] = {"cat", "/tmp/walraft-vfs-walcheck.out", NULL};
        run_child(NULL, cat);
        system("cat /tmp/walraft-vfs-walcheck.out >&2");
    }
    unlink("/tmp/walraft-vfs-walcheck.out");
    assert_int_equal(rc, 0);
}

/* What SQLite would recover after a crash now: the database file and WAL copied (by a child
 * process) and opened without the wal-index. */
static int64_t count_after_crash(struct cluster *c, int i, const char *sql)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp %s %s/crash.db && cp %s-wal %s/crash.db-wal", c->path[i], c->dir,
             c->path[i], c->dir);
    char *argv[] = {"sh", "-c", cmd, NULL};
    assert_int_equal(run_child(NULL, argv), 0);
    char path[160];
    snprintf(path, sizeof path, "%s/crash.db", c->dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    int64_t v = query_int(db, sql);
    sqlite3_close(db);
    snprintf(cmd, sizeof cmd, "rm -f %s/crash.db*", c->dir);
    assert_int_equal(run_child(NULL, argv), 0);
    return v;
}

static int64_t count_on(const char *path, const char *sql)
{
    sqlite3 *db = open_conn(path);
    int64_t v = query_int(db, sql);
    sqlite3_close(db);
    return v;
}

/* --- tests -------------------------------------------------------------------------------------
 */

static void test_vfs_rows_written_on_leader_appear_on_followers(void **state)
{
    (void)state;
    struct cluster c;
    cluster_start(&c, 3, NULL, NULL);
    sqlite3 *l = open_conn(c.path[0]);
    exec_ok(l, "PRAGMA synchronous=FULL"); /* commits sync the WAL: no padding frames either */
    exec_ok(l, "CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT)");
    for (int i = 0; i < 20; i++) {
        exec_ok(l, "INSERT INTO t(b) VALUES(hex(randomblob(100)))");
    }
    exec_ok(l, "BEGIN; INSERT INTO t(b) SELECT b FROM t; UPDATE t SET b = b || 'x'; COMMIT");
    assert_int_equal(c.node[0].proposals, 22);
    assert_int_equal(vfs_db_applied(c.node[0].db), 22);
    for (int i = 1; i < 3; i++) {
        assert_int_equal(vfs_db_applied(c.node[i].db), 22);
        assert_int_equal(count_on(c.path[i], "SELECT count(*) FROM t"), 40);
        assert_int_equal(count_on(c.path[i], "SELECT count(*) FROM t WHERE b LIKE '%x'"), 40);
        sqlite3 *f = open_conn(c.path[i]);
        exec_ok(f, "PRAGMA integrity_check");
        sqlite3_close(f);
        walcheck(c.path[i]);
    }
    sqlite3_close(l);
    assert_files_identical(&c);
    cluster_stop(&c);
}

static void test_vfs_rollback_replicates_nothing(void **state)
{
    (void)state;
    struct cluster c;
    cluster_start(&c, 2, NULL, NULL);
    sqlite3 *l = open_conn(c.path[0]);
    exec_ok(l, "CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB)");
    int before = c.node[0].proposals;
    exec_ok(l, "BEGIN; INSERT INTO t(b) VALUES(randomblob(1000)); ROLLBACK");
    assert_int_equal(c.node[0].proposals, before);
    /* A transaction that spills frames to the WAL, then rolls back. */
    exec_ok(l, "PRAGMA cache_size=2");
    exec_ok(l, "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<300)"
               " INSERT INTO t(b) SELECT randomblob(3000) FROM n; ROLLBACK");
    assert_int_equal(c.node[0].proposals, before);
    assert_int_equal(count_on(c.path[1], "SELECT count(*) FROM t"), 0);
    assert_int_equal(query_int(l, "SELECT count(*) FROM t"), 0);
    /* The next transaction (over the rolled-back frames) works and replicates. */
    exec_ok(l, "INSERT INTO t(b) VALUES(randomblob(10))");
    assert_int_equal(c.node[0].proposals, before + 1);
    assert_int_equal(count_on(c.path[1], "SELECT count(*) FROM t"), 1);
    walcheck(c.path[1]);
    walcheck(c.path[0]);
    sqlite3_close(l);
    assert_files_identical(&c);
    cluster_stop(&c);
}

static void test_vfs_page_rewritten_in_txn_replicates_latest_image(void **state)
{
    (void)state;
    struct cluster c;
    cluster_start(&c, 2, NULL, NULL);
    sqlite3 *l = open_conn(c.path[0]);
    exec_ok(l, "CREATE TABLE t(a INTEGER PRIMARY KEY, b INTEGER, c BLOB)");
    exec_ok(l, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<200)"
               " INSERT INTO t(b, c) SELECT i, randomblob(500) FROM n");
    exec_ok(l, "PRAGMA cache_size=3");
    exec_ok(l, "BEGIN");
    for (int i = 0; i < 10; i++) {
        /* Every round dirties every page again, after the small cache spilled them. */
        exec_ok(l, "UPDATE t SET b = b + 1, c = randomblob(500)");
    }
    exec_ok(l, "SAVEPOINT s; UPDATE t SET b = b + 1000; ROLLBACK TO s; RELEASE s; COMMIT");
    int64_t sum = query_int(l, "SELECT sum(b) FROM t");
    assert_int_equal(sum, 200 * 201 / 2 + 10 * 200);
    assert_int_equal(count_on(c.path[1], "SELECT sum(b) FROM t"), sum);
    sqlite3 *f = open_conn(c.path[1]);
    assert_int_equal(query_int(f, "SELECT sum(length(c)) FROM t"), 200 * 500);
    exec_ok(f, "PRAGMA integrity_check");
    sqlite3_close(f);
    walcheck(c.path[1]);
    sqlite3_close(l);
    assert_files_identical(&c);
    cluster_stop(&c);
}

static void test_vfs_vacuum_replicates_and_files_identical(void **state)
{
    (void)state;
    struct cluster c;
    cluster_start(&c, 2, NULL, NULL);
    sqlite3 *l = open_conn(c.path[0]);
    exec_ok(l, "CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB)");
    exec_ok(l, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<500)"
               " INSERT INTO t(b) SELECT randomblob(1000) FROM n");
    exec_ok(l, "DELETE FROM t WHERE a % 3 != 0");
    int64_t pages_before = query_int(l, "PRAGMA page_count");
    exec_ok(l, "VACUUM");
    int64_t pages_after = query_int(l, "PRAGMA page_count");
    assert_true(pages_after < pages_before);
    assert_int_equal(count_on(c.path[1], "PRAGMA page_count"), pages_after);
    assert_int_equal(count_on(c.path[1], "SELECT count(*) FROM t"), 166);
    walcheck(c.path[1]);
    sqlite3_close(l);
    assert_files_identical(&c);
    cluster_stop(&c);
}

static void test_vfs_follower_write_is_readonly(void **state)
{
    (void)state;
    struct cluster c;
    cluster_start(&c, 2, NULL, NULL);
    sqlite3 *l = open_conn(c.path[0]);
    exec_ok(l, "CREATE TABLE t(a)");
    exec_ok(l, "INSERT INTO t VALUES(1)");
    sqlite3 *f = open_conn(c.path[1]);
    assert_int_equal(sqlite3_exec(f, "INSERT INTO t VALUES(2)", NULL, NULL, NULL), SQLITE_READONLY);
    assert_int_equal(sqlite3_exec(f, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_READONLY);
    assert_int_equal(query_int(f, "SELECT count(*) FROM t"), 1);
    char err[256];
    vfs_db_last_error(c.node[1].db, err, sizeof err);
    assert_non_null(strstr(err, "the leader is n1"));
    /* A local checkpoint on the follower does nothing (checkpoints belong to the node). */
    int nlog = -1, nckpt = -1;
    sqlite3_wal_checkpoint_v2(f, NULL, SQLITE_CHECKPOINT_PASSIVE, &nlog, &nckpt);
    assert_true(nckpt <= 0);
    sqlite3_close(f);
    sqlite3_close(l);
    assert_int_equal(count_on(c.path[1], "SELECT count(*) FROM t"), 1);
    assert_files_identical(&c);
    cluster_stop(&c);
}

static void test_vfs_other_process_cannot_write(void **state)
{
    (void)state;
    struct cluster c;
    cluster_start(&c, 2, NULL, NULL);
    sqlite3 *l = open_conn(c.path[0]);
    exec_ok(l, "CREATE TABLE t(a)");
    exec_ok(l, "INSERT INTO t VALUES(1)");
    const char *out = "/tmp/walraft-vfs-child.out";
    for (int i = 0; i < 2; i++) {
        char *w[] = {"timeout",
                     "20",
                     "sqlite3",
                     "-cmd",
                     ".timeout 200",
                     c.path[i],
                     "INSERT INTO t VALUES(99)",
                     NULL};
        assert_int_not_equal(run_child(out, w), 0);
        char *g[] = {"grep", "-q", "locked", (char *)out, NULL};
        assert_int_equal(run_child(NULL, g), 0);
        char *r[] = {"timeout", "20", "sqlite3", c.path[i], "SELECT count(*) FROM t", NULL};
        assert_int_equal(run_child(out, r), 0);
        char *g1[] = {"grep", "-qx", "1", (char *)out, NULL};
        assert_int_equal(run_child(NULL, g1), 0);
        char *ck[] = {"timeout", "20", "sqlite3", c.path[i], "PRAGMA wal_checkpoint(TRUNCATE)",
                      NULL};
        run_child(out, ck);
        /* A second process that loads walraft itself is refused the same way. */
        char so[256], load[300], open[300];
        snprintf(so, sizeof so, "%s/walraft.so", getenv("BUILD") ? getenv("BUILD") : "build");
        if (access(so, R_OK) != 0) {
            printf("notice: %s absent: walraft in another process not tried\n", so);
            continue;
        }
        snprintf(load, sizeof load, ".load %s", so);
        snprintf(open, sizeof open, ".open file:%s?vfs=walraft", c.path[i]);
        char *ww[] = {"timeout",
                      "20",
                      "sqlite3",
                      "-cmd",
                      load,
                      "-cmd",
                      open,
                      "-cmd",
                      ".timeout 200",
                      ":memory:",
                      "INSERT INTO t VALUES(98)",
                      NULL};
        assert_int_not_equal(run_child(out, ww), 0);
        assert_int_equal(run_child(NULL, g), 0);
    }
    unlink(out);
    /* The other process changed nothing, and the leader still writes. */
    exec_ok(l, "INSERT INTO t VALUES(2)");
    assert_int_equal(count_on(c.path[1], "SELECT count(*) FROM t"), 2);
    assert_int_equal(count_on(c.path[1], "SELECT count(*) FROM t WHERE a >= 98"), 0);
    sqlite3_close(l);
    walcheck(c.path[1]);
    assert_files_identical(&c);
    cluster_stop(&c);
}

static void test_vfs_follower_reader_keeps_snapshot(void **state)
{
    (void)state;
    struct vfs_db_config fcfg = {.checkpoint_frames = 20};
    struct cluster c;
    cluster_start(&c, 2, &fcfg, NULL);
    sqlite3 *l = open_conn(c.path[0]);
    exec_ok(l, "CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB)");
    exec_ok(l, "INSERT INTO t(b) VALUES(randomblob(100))");
    sqlite3 *r = open_conn(c.path[1]);
    exec_ok(r, "BEGIN");
    assert_int_equal(query_int(r, "SELECT count(*) FROM t"), 1);
    for (int i = 0; i < 200; i++) {
        exec_ok(l, "INSERT INTO t(b) VALUES(randomblob(2000))");
        if (i % 50 == 0) {
            assert_int_equal(query_int(r, "SELECT count(*) FROM t"), 1);
        }
    }
    assert_int_equal(query_int(r, "SELECT count(*) FROM t"), 1);
    exec_ok(r, "COMMIT");
    assert_int_equal(query_int(r, "SELECT count(*) FROM t"), 201);
    exec_ok(r, "PRAGMA integrity_check");
    sqlite3_close(r);
    walcheck(c.path[1]);
    sqlite3_close(l);
    assert_files_identical(&c);
    cluster_stop(&c);
}

/* A content-dependent digest of t, read page by page (the caller sets a tiny cache). */
static double digest(sqlite3 *db)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT total(unicode(substr(b, 7, 1)) * a"
                                        " + unicode(substr(b, 201, 1))) FROM t",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    double v = sqlite3_column_double(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void test_vfs_log_restart_waits_for_readers_of_backfilled_frames(void **state)
{
    (void)state;
    struct vfs_db_config fcfg = {.checkpoint_frames = 100000};
    struct cluster c;
    cluster_start(&c, 2, &fcfg, NULL);
    sqlite3 *l = open_conn(c.path[0]);
    exec_ok(l, "CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT)");
    exec_ok(l, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<300)"
               " INSERT INTO t(b) SELECT hex(randomblob(400)) FROM n");
    /* A reader whose snapshot is the whole WAL, then a checkpoint that backfills all of it. */
    sqlite3 *r = open_conn(c.path[1]);
    exec_ok(r, "PRAGMA cache_size=1");
    exec_ok(r, "BEGIN");
    double d0 = digest(r);
    uint64_t floor = 0;
    assert_int_equal(vfs_db_checkpoint(c.node[1].db, &floor), SQLITE_OK);
    assert_int_equal(floor, 2);
    /* New transactions rewrite every page: the log must not restart under the reader. */
    for (int i = 0; i < 3; i++) {
        exec_ok(l, "UPDATE t SET b = hex(randomblob(400))");
    }
    assert_true(digest(r) == d0);
    exec_ok(r, "COMMIT");
    double d1 = digest(r);
    assert_true(d1 != d0);
    assert_true(digest(l) == d1);
    exec_ok(r, "PRAGMA integrity_check");
    sqlite3_close(r);
    walcheck(c.path[1]);
    sqlite3_close(l);
    assert_files_identical(&c);
    cluster_stop(&c);
}

static void test_vfs_propose_failure_returns_error_and_changes_nothing(void **state)
{
    (void)state;
    struct cluster c;
    cluster_start(&c, 2, NULL, NULL);
    sqlite3 *l = open_conn(c.path[0]);
    exec_ok(l, "CREATE TABLE t(a)");
    exec_ok(l, "INSERT INTO t VALUES(1)");
    int results[2] = {VFS_PROPOSE_NOT_COMMITTED, VFS_PROPOSE_UNKNOWN};
    for (int k = 0; k < 2; k++) {
        int rows = 1 + k;
        c.node[0].fail_next = results[k];
        int rc = sqlite3_exec(l, "INSERT INTO t VALUES(2)", NULL, NULL, NULL);
        assert_int_equal(rc & 0xff, SQLITE_IOERR);
        char err[256];
        vfs_db_last_error(c.node[0].db, err, sizeof err);
        assert_non_null(strstr(err, k == 0 ? "not committed" : "outcome unknown"));
        assert_int_equal(query_int(l, "SELECT count(*) FROM t"), rows);
        assert_int_equal(count_on(c.path[0], "SELECT count(*) FROM t"), rows);
        assert_int_equal(count_on(c.path[1], "SELECT count(*) FROM t"), rows);
        assert_int_equal(count_on(c.path[1], "SELECT count(*) FROM t WHERE a = 2"), 0);
        /* No valid commit frame for it reached the WAL: a crash now must not resurrect it. */
        assert_int_equal(count_after_crash(&c, 0, "SELECT count(*) FROM t"), rows);
        /* The next transaction works. */
        exec_ok(l, "INSERT INTO t VALUES(3)");
        assert_int_equal(count_on(c.path[1], "SELECT count(*) FROM t"), rows + 1);
    }
    /* A failure in the middle of a large transaction that spilled. */
    exec_ok(l, "PRAGMA cache_size=2");
    c.node[0].fail_next = VFS_PROPOSE_NOT_COMMITTED;
    int rc = sqlite3_exec(l,
                          "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE"
                          " i<300) INSERT INTO t SELECT randomblob(3000) FROM n",
                          NULL, NULL, NULL);
    assert_int_equal(rc & 0xff, SQLITE_IOERR);
    assert_int_equal(query_int(l, "SELECT count(*) FROM t"), 3);
    exec_ok(l, "INSERT INTO t VALUES(4)");
    assert_int_equal(count_on(c.path[1], "SELECT count(*) FROM t"), 4);
    exec_ok(l, "PRAGMA integrity_check");
    walcheck(c.path[0]);
    walcheck(c.path[1]);
    sqlite3_close(l);
    assert_files_identical(&c);
    cluster_stop(&c);
}

static void test_vfs_transaction_over_max_size_fails_cleanly(void **state)
{
    (void)state;
    struct vfs_db_config lcfg = {.max_txn_bytes = 64 * 1024};
    struct cluster c;
    cluster_start(&c, 2, NULL, &lcfg);
    sqlite3 *l = open_conn(c.path[0]);
    exec_ok(l, "CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB)");
    int rc = sqlite3_exec(l, "INSERT INTO t(b) VALUES(randomblob(1000000))", NULL, NULL, NULL);
    assert_int_equal(rc, SQLITE_FULL);
    char err[256];
    vfs_db_last_error(c.node[0].db, err, sizeof err);
    assert_non_null(strstr(err, "max_txn_bytes (65536 bytes)"));
    assert_int_equal(query_int(l, "SELECT count(*) FROM t"), 0);
    exec_ok(l, "INSERT INTO t(b) VALUES(randomblob(1000))");
    assert_int_equal(count_on(c.path[1], "SELECT count(*) FROM t"), 1);
    sqlite3_close(l);
    assert_files_identical(&c);
    cluster_stop(&c);
}

struct writer_arg {
    const char *path;
    int id;
    int failures;
};

#define WRITES_PER_THREAD 150

static void *writer_main(void *p)
{
    struct writer_arg *a = p;
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(a->path, &db, SQLITE_OPEN_READWRITE, "walraft") != SQLITE_OK) {
        a->failures = -1;
        return NULL;
    }
    sqlite3_busy_timeout(db, 20000);
    for (int i = 0; i < WRITES_PER_THREAD; i++) {
        char sql[128];
        snprintf(sql, sizeof sql, "INSERT INTO t(w, i, b) VALUES(%d, %d, randomblob(200))", a->id,
                 i);
        int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
            fprintf(stderr, "writer %d: %s\n", a->id, sqlite3_errmsg(db));
            a->failures++;
        }
        if (i % 10 == 0) {
            rc = sqlite3_exec(db,
                              "BEGIN IMMEDIATE; UPDATE t SET b = randomblob(10) WHERE rowid = 1;"
                              " COMMIT",
                              NULL, NULL, NULL);
            if (rc != SQLITE_OK) {
                fprintf(stderr, "writer %d: %s\n", a->id, sqlite3_errmsg(db));
                sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
                a->failures++;
            }
        }
    }
    sqlite3_close(db);
    return NULL;
}

static void test_vfs_four_writer_threads_all_succeed(void **state)
{
    (void)state;
    struct cluster c;
    cluster_start(&c, 2, NULL, NULL);
    sqlite3 *l = open_conn(c.path[0]);
    exec_ok(l, "CREATE TABLE t(w, i, b)");
    exec_ok(l, "INSERT INTO t VALUES(-1, -1, NULL)");
    pthread_t th[4];
    struct writer_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (struct writer_arg){.path = c.path[0], .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, writer_main, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(a[i].failures, 0);
    }
    assert_int_equal(query_int(l, "SELECT count(*) FROM t"), 4 * WRITES_PER_THREAD + 1);
    assert_int_equal(count_on(c.path[1], "SELECT count(*) FROM t"), 4 * WRITES_PER_THREAD + 1);
    sqlite3_close(l);
    walcheck(c.path[1]);
    assert_files_identical(&c);
    cluster_stop(&c);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void test_vfs_queued_writer_wait_is_bounded_by_busy_timeout(void **state)
{
    (void)state;
    struct cluster c;
    cluster_start(&c, 2, NULL, NULL);
    sqlite3 *a = open_conn(c.path[0]);
    exec_ok(a, "CREATE TABLE t(a)");
    exec_ok(a, "BEGIN IMMEDIATE; INSERT INTO t VALUES(1)");
    sqlite3 *b = open_conn(c.path[0]);
    sqlite3_busy_timeout(b, 0);
    uint64_t t0 = now_ms();
    assert_int_equal(sqlite3_exec(b, "INSERT INTO t VALUES(2)", NULL, NULL, NULL), SQLITE_BUSY);
    assert_true(now_ms() - t0 < 200);
    sqlite3_busy_timeout(b, 300);
    t0 = now_ms();
    assert_int_equal(sqlite3_exec(b, "INSERT INTO t VALUES(2)", NULL, NULL, NULL), SQLITE_BUSY);
    uint64_t waited = now_ms() - t0;
    assert_true(waited >= 250);
    assert_true(waited < 3000);
    exec_ok(a, "COMMIT");
    exec_ok(b, "INSERT INTO t VALUES(2)");
    assert_int_equal(count_on(c.path[1], "SELECT count(*) FROM t"), 2);
    /* A new leader catching up answers BUSY; the busy handler retries until it is ready. */
    c.node[0].catching_up = 3;
    sqlite3_busy_timeout(b, 5000);
    exec_ok(b, "INSERT INTO t VALUES(3)");
    assert_int_equal(c.node[0].catching_up, 0);
    c.node[0].catching_up = 1000000;
    sqlite3_busy_timeout(b, 0);
    assert_int_equal(sqlite3_exec(b, "INSERT INTO t VALUES(4)", NULL, NULL, NULL), SQLITE_BUSY);
    c.node[0].catching_up = 0;
    assert_int_equal(count_on(c.path[1], "SELECT count(*) FROM t"), 3);
    sqlite3_close(b);
    sqlite3_close(a);
    assert_files_identical(&c);
    cluster_stop(&c);
}

/* A writer that commits back to back is offered the lock again while others queue (vfs.c,
 * vwrite_release), but a queued writer still goes after at most a bounded number of its
 * transactions, and an offer its writer does not take lapses within a moment. */
struct patient_arg {
    const char *path;
    int *started; /* set by the busy writer after its first commit */
    int64_t rows_before;   /* rows when this writer asked */
    int64_t rowid;         /* its row's rowid */
    uint64_t done_ms;
    int rc;
};

static void *patient_writer(void *p)
{
    struct patient_arg *a = p;
    sqlite3 *db = open_conn(a->path);
    while (a->started != NULL && !__atomic_load_n(a->started, __ATOMIC_ACQUIRE)) {
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, NULL);
    }
    a->rows_before = query_int(db, "SELECT count(*) FROM t");
    a->rc = sqlite3_exec(db, "INSERT INTO t(w) VALUES(1)", NULL, NULL, NULL);
    a->rowid = sqlite3_last_insert_rowid(db);
    __atomic_store_n(&a->done_ms, now_ms(), __ATOMIC_RELEASE);
    sqlite3_close(db);
    return NULL;
}

static void test_vfs_back_to_back_writer_cannot_starve_a_queued_one(void **state)
{
    (void)state;
    struct cluster c;
    cluster_start(&c, 2, NULL, NULL);
    sqlite3 *l = open_conn(c.path[0]);
    exec_ok(l, "CREATE TABLE t(w)");
    sqlite3_stmt *ins;
    assert_int_equal(sqlite3_prepare_v2(l, "INSERT INTO t(w) VALUES(0)", -1, &ins, NULL),
                     SQLITE_OK);
    for (int round = 0; round < 3; round++) {
        int started = 0;
        struct patient_arg q = {.path = c.path[0], .started = &started, .rc = -1};
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, patient_writer, &q), 0);
        /* Commit as fast as possible until the queued writer is through (or 5,000 commits:
         * with no bound on the offers, it would get the lock only once this loop stops). */
        int n = 0;
        while (n < 5000 && __atomic_load_n(&q.done_ms, __ATOMIC_ACQUIRE) == 0) {
            assert_int_equal(sqlite3_step(ins), SQLITE_DONE); /* prepared: asks again at once */
            assert_int_equal(sqlite3_reset(ins), SQLITE_OK);
            __atomic_store_n(&started, 1, __ATOMIC_RELEASE);
            n++;
        }
        pthread_join(th, NULL);
        assert_int_equal(q.rc, SQLITE_OK);
        /* Rows the busy writer committed between the queued one's count and its own row. */
        int64_t ahead = q.rowid - 1 - q.rows_before;
        if (ahead > 60) {
            fprintf(stderr, "round %d: %lld commits went ahead of the queued writer\n", round,
                    (long long)ahead);
        }
        assert_true(ahead >= 0);
        assert_true(ahead <= 60);
        assert_true(n < 5000);
    }
    sqlite3_finalize(ins);
    sqlite3_close(l);
    assert_files_identical(&c);
    cluster_stop(&c);
}

static void test_vfs_offer_not_taken_lapses(void **state)
{
    (void)state;
    struct cluster c;
    cluster_start(&c, 2, NULL, NULL);
    sqlite3 *l = open_conn(c.path[0]);
    exec_ok(l, "CREATE TABLE t(w)");
    for (int round = 0; round < 5; round++) {
        exec_ok(l, "BEGIN IMMEDIATE; INSERT INTO t(w) VALUES(0)");
        struct patient_arg q = {.path = c.path[0], .rc = -1};
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, patient_writer, &q), 0);
        /* Long enough that the queued writer's busy handler sleeps 100 ms at a time. */
        struct timespec ts = {0, 500 * 1000000L};
        nanosleep(&ts, NULL);
        exec_ok(l, "COMMIT");
        uint64_t committed = now_ms();
        pthread_join(th, NULL); /* this writer asks for nothing meanwhile */
        assert_int_equal(q.rc, SQLITE_OK);
        uint64_t waited = q.done_ms - committed;
        if (waited >= 30) {
            fprintf(stderr, "round %d: the queued writer went %llu ms after the commit\n", round,
                    (unsigned long long)waited);
        }
        assert_true(waited < 30);
    }
    assert_int_equal(query_int(l, "SELECT count(*) FROM t"), 10);
    assert_int_equal(count_on(c.path[1], "SELECT count(*) FROM t"), 10);
    sqlite3_close(l);
    assert_files_identical(&c);
    cluster_stop(&c);
}

struct queued_arg {
    const char *path;
    int rc;
};

static void *queued_writer(void *p)
{
    struct queued_arg *a = p;
    sqlite3 *db = NULL;
    a->rc = sqlite3_open_v2(a->path, &db, SQLITE_OPEN_READWRITE, "walraft");
    if (a->rc == SQLITE_OK) {
        sqlite3_busy_timeout(db, 10000);
        a->rc = sqlite3_exec(db, "INSERT INTO t VALUES(2)", NULL, NULL, NULL);
    }
    sqlite3_close(db);
    return NULL;
}

static void test_vfs_queued_writer_rechecks_gate_when_granted(void **state)
{
    (void)state;
    struct cluster c;
    cluster_start(&c, 2, NULL, NULL);
    sqlite3 *a = open_conn(c.path[0]);
    exec_ok(a, "CREATE TABLE t(a)");
    exec_ok(a, "BEGIN IMMEDIATE; INSERT INTO t VALUES(1)");
    struct queued_arg q = {.path = c.path[0], .rc = -1};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, queued_writer, &q), 0);
    struct timespec ts = {0, 200 * 1000000L};
    nanosleep(&ts, NULL);
    /* Leadership moves while the second writer queues; the first one rolls back, so the second
     * is granted the lock directly (no commit made its snapshot stale). */
    c.node[0].leader = 0;
    exec_ok(a, "ROLLBACK");
    pthread_join(th, NULL);
    assert_int_equal(q.rc, SQLITE_READONLY);
    assert_int_equal(count_on(c.path[0], "SELECT count(*) FROM t"), 0);
    assert_int_equal(count_on(c.path[1], "SELECT count(*) FROM t"), 0);
    sqlite3_close(a);
    assert_files_identical(&c);
    cluster_stop(&c);
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static void test_vfs_follower_wal_checkpoints_and_restarts(void **state)
{
    (void)state;
    struct vfs_db_config fcfg = {.checkpoint_frames = 30};
    struct cluster c;
    cluster_start(&c, 3, &fcfg, NULL);
    sqlite3 *l = open_conn(c.path[0]);
    exec_ok(l, "CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB)");
    char wal[160];
    snprintf(wal, sizeof wal, "%s-wal", c.path[1]);
    long max_wal = 0;
    for (int i = 0; i < 600; i++) {
        exec_ok(l, "INSERT INTO t(b) VALUES(randomblob(300))");
        if (i % 100 == 99) {
            uint64_t floor = 0;
            assert_int_equal(vfs_db_checkpoint(c.node[0].db, &floor), SQLITE_OK);
            assert_true(floor > 0);
        }
        long sz = file_size(wal);
        if (sz > max_wal) {
            max_wal = sz;
        }
    }
    /* The follower's WAL restarted instead of growing: 600 transactions of 2+ frames each. */
    assert_true(max_wal < 80L * (4096 + 24));
    uint64_t floor = vfs_db_floor(c.node[1].db);
    assert_true(floor > 500);
    assert_true(floor <= 601);
    assert_int_equal(count_on(c.path[1], "SELECT count(*) FROM t"), 600);
    assert_int_equal(count_on(c.path[2], "SELECT count(*) FROM t"), 600);
    walcheck(c.path[1]);
    walcheck(c.path[2]);
    sqlite3_close(l);
    assert_files_identical(&c);
    assert_int_equal(vfs_db_floor(c.node[1].db), 601);
    cluster_stop(&c);
}

static void test_vfs_wal_crosses_first_index_block(void **state)
{
    (void)state;
    struct vfs_db_config fcfg = {.checkpoint_frames = 100000};
    struct cluster c;
    cluster_start(&c, 2, &fcfg, NULL);
    sqlite3 *l = open_conn(c.path[0]);
    exec_ok(l, "CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB)");
    sqlite3 *r = open_conn(c.path[1]);
    for (int i = 0; i < 45; i++) {
        exec_ok(l, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<100)"
                   " INSERT INTO t(b) SELECT randomblob(3500) FROM n");
        assert_int_equal(query_int(r, "SELECT count(*) FROM t"), (i + 1) * 100);
    }
    char wal[160];
    snprintf(wal, sizeof wal, "%s-wal", c.path[1]);
    assert_true(file_size(wal) > 4100L * (4096 + 24));
    exec_ok(r, "PRAGMA integrity_check");
    assert_int_equal(query_int(r, "SELECT count(DISTINCT b) FROM t"), 4500);
    sqlite3_close(r);
    walcheck(c.path[1]);
    sqlite3_close(l);
    assert_files_identical(&c);
    cluster_stop(&c);
}

static void test_vfs_apply_batch_is_one_transaction(void **state)
{
    (void)state;
    /* Five transactions captured on a leader whose follower is not connected; the follower then
     * replays them from its floor as one WAL transaction, as a restarting node does. */
    struct cluster c;
    cluster_start(&c, 2, NULL, NULL);
    c.node[0].n_followers = 0;
    c.node[0].record = 1;
    sqlite3 *l = open_conn(c.path[0]);
    exec_ok(l, "CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB)");
    for (int i = 0; i < 4; i++) {
        exec_ok(l, "INSERT INTO t(b) VALUES(randomblob(1500))");
    }
    assert_int_equal(c.node[0].n_rec, 5);
    struct vfs_entry e[5];
    uint32_t later_pages = 0; /* pages carried by entries 2..5 */
    for (int i = 0; i < 5; i++) {
        e[i] = (struct vfs_entry){c.node[0].rec[i].payload, c.node[0].rec[i].len,
                                  c.node[0].rec[i].index};
        struct wal_frameset fs;
        assert_int_equal(wal_frameset_decode(e[i].payload, e[i].len, 1 << 24, &fs), WAL_OK);
        later_pages += i > 0 ? fs.n_pages : 0;
        wal_frameset_free(&fs);
    }
    sqlite3 *r = open_conn(c.path[1]);
    assert_int_equal(query_int(r, "SELECT count(*) FROM sqlite_master"), 0);
    /* Entry 1 alone first, then 1..5 (1 is skipped as applied): one WAL transaction. */
    assert_int_equal(vfs_db_apply_batch(c.node[1].db, e, 1), SQLITE_OK);
    assert_int_equal(query_int(r, "SELECT count(*) FROM t"), 0);
    char wal[160];
    snprintf(wal, sizeof wal, "%s-wal", c.path[1]);
    long before = file_size(wal);
    assert_int_equal(vfs_db_apply_batch(c.node[1].db, e, 5), SQLITE_OK);
    assert_int_equal(vfs_db_applied(c.node[1].db), 5);
    assert_int_equal(query_int(r, "SELECT count(*) FROM t"), 4);
    /* Fewer frames than the four entries carried: pages merged, one commit. */
    long grown = file_size(wal) - before;
    assert_true(grown > 0);
    assert_true(grown / (4096 + 24) < (long)later_pages);
    /* Re-applying is a no-op. */
    assert_int_equal(vfs_db_apply_batch(c.node[1].db, e, 5), SQLITE_OK);
    assert_int_equal(file_size(wal) - before, grown);
    exec_ok(r, "PRAGMA integrity_check");
    sqlite3_close(r);
    walcheck(c.path[1]);
    /* A payload that does not decode is refused. */
    char junk[64] = "not a frame set";
    assert_int_equal(vfs_db_apply(c.node[1].db, junk, sizeof junk, 6), SQLITE_CORRUPT);
    assert_int_equal(vfs_db_applied(c.node[1].db), 5);
    sqlite3_close(l);
    assert_files_identical(&c);
    cluster_stop(&c);
}

static void test_vfs_leader_applies_entry_its_writer_lost(void **state)
{
    (void)state;
    struct cluster c;
    cluster_start(&c, 2, NULL, NULL);
    c.node[0].record = 1;
    sqlite3 *l = open_conn(c.path[0]);
    exec_ok(l, "CREATE TABLE t(a)");
    /* The entry commits (the follower has it) but the writer is told the outcome is unknown. */
    c.node[0].lose_outcome = 1;
    int rc = sqlite3_exec(l, "INSERT INTO t VALUES(1)", NULL, NULL, NULL);
    assert_int_equal(rc & 0xff, SQLITE_IOERR);
    assert_int_equal(query_int(l, "SELECT count(*) FROM t"), 0);
    assert_int_equal(count_on(c.path[1], "SELECT count(*) FROM t"), 1);
    assert_int_equal(vfs_db_applied(c.node[0].db), 1);
    /* The runtime hands every committed entry to apply, on the leader too: entry 1 was written
     * by the leader's writer (skipped), entry 2 was not (applied now). */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(vfs_db_apply(c.node[0].db, c.node[0].rec[i].payload, c.node[0].rec[i].len,
                                      c.node[0].rec[i].index),
                         SQLITE_OK);
    }
    assert_int_equal(vfs_db_applied(c.node[0].db), 2);
    assert_int_equal(query_int(l, "SELECT count(*) FROM t"), 1);
    exec_ok(l, "INSERT INTO t VALUES(2)");
    assert_int_equal(count_on(c.path[1], "SELECT count(*) FROM t"), 2);
    walcheck(c.path[0]);
    sqlite3_close(l);
    assert_files_identical(&c);
    cluster_stop(&c);
}

static void test_vfs_leader_apply_checkpoints_without_waiting_for_writers(void **state)
{
    (void)state;
    struct vfs_db_config lcfg = {.checkpoint_frames = 10};
    struct cluster c;
    cluster_start(&c, 1, NULL, &lcfg);
    c.node[0].record = 1;
    sqlite3 *l = open_conn(c.path[0]);
    exec_ok(l, "CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB)");
    for (int i = 0; i < 12; i++) {
        exec_ok(l, "INSERT INTO t(b) VALUES(randomblob(100))");
    }
    assert_int_equal(c.node[0].n_rec, 13);
    /* A local writer holds the write lock, idle: handing the leader its own (already written)
     * entry returns at once, without a checkpoint. */
    sqlite3 *w = open_conn(c.path[0]);
    exec_ok(w, "BEGIN IMMEDIATE");
    uint64_t floor0 = vfs_db_floor(c.node[0].db);
    uint64_t t0 = now_ms();
    assert_int_equal(vfs_db_apply(c.node[0].db, c.node[0].rec[12].payload, c.node[0].rec[12].len,
                                  c.node[0].rec[12].index),
                     SQLITE_OK);
    assert_true(now_ms() - t0 < 1000);
    /* It did checkpoint, beside the writer: a passive checkpoint copies under a writer, and
     * only the short rest and the log restart need the lock. Every entry is in the database
     * file: the writer's snapshot is the whole log. */
    assert_int_equal(floor0, 0);
    assert_int_equal(vfs_db_floor(c.node[0].db), 13);
    exec_ok(w, "COMMIT");
    /* With the lock free, a checkpoint has run (the end of a read transaction, or this call):
     * the floor has moved. Frames already copied are not copied again until another
     * checkpoint_frames of them wait, so the floor need not reach the last entry. */
    assert_int_equal(vfs_db_apply(c.node[0].db, c.node[0].rec[12].payload, c.node[0].rec[12].len,
                                  c.node[0].rec[12].index),
                     SQLITE_OK);
    assert_true(vfs_db_floor(c.node[0].db) >= 9);
    exec_ok(l, "INSERT INTO t(b) VALUES(randomblob(100))"); /* restarts the log */
    assert_int_equal(query_int(l, "SELECT count(*) FROM t"), 13);
    walcheck(c.path[0]);
    sqlite3_close(w);
    sqlite3_close(l);
    cluster_stop(&c);
}

/* One connection writing back to back on a leader: nothing but its own read mark is ever on
 * the WAL, so the log must restart, not grow. Each entry is then handed to the leader's apply,
 * as the runtime does: the leader's checkpoints run there (copying beside local writers), and
 * at the end of each read transaction for the short rest. */
static void test_vfs_leader_log_restarts_under_back_to_back_writes(void **state)
{
    (void)state;
    struct vfs_db_config lcfg = {.checkpoint_frames = 10};
    struct cluster c;
    cluster_start(&c, 1, NULL, &lcfg);
    sqlite3 *l = open_conn(c.path[0]);
    exec_ok(l, "CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB)");
    for (int i = 0; i < 200; i++) {
        exec_ok(l, "INSERT INTO t(b) VALUES(randomblob(100))");
        struct rec_entry *e = &c.node[0].last;
        assert_int_equal(vfs_db_apply(c.node[0].db, e->payload, e->len, e->index), SQLITE_OK);
    }
    assert_int_equal(query_int(l, "SELECT count(*) FROM t"), 200);
    char wal[600];
    snprintf(wal, sizeof wal, "%s-wal", c.path[0]);
    /* 200 transactions of one or two frames: without restarts the log holds 200+ frames. */
    assert_true(file_size(wal) < 32 + 20L * (24 + 4096));
    assert_true(vfs_db_floor(c.node[0].db) > 150);
    walcheck(c.path[0]);
    sqlite3_close(l);
    cluster_stop(&c);
}

static void test_vfs_step_down_dooms_open_write_transaction(void **state)
{
    (void)state;
    struct cluster c;
    cluster_start(&c, 2, NULL, NULL);
    sqlite3 *l = open_conn(c.path[0]);
    exec_ok(l, "CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB)");
    exec_ok(l, "INSERT INTO t(b) VALUES(randomblob(100))");
    /* A write transaction that has spilled frames into the WAL, still open. */
    exec_ok(l, "PRAGMA cache_size=2");
    exec_ok(l, "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<200)"
               " INSERT INTO t(b) SELECT randomblob(3000) FROM n");
    /* Leadership moves to node 1, which replicates to node 0: the apply on node 0 does not wait
     * for the doomed transaction and writes over its frames. */
    vfs_db_step_down(c.node[0].db);
    c.node[0].leader = 0;
    c.node[0].n_followers = 0;
    c.node[1].leader = 1;
    c.node[1].next_index = c.node[0].next_index;
    c.node[1].followers[0] = &c.node[0];
    c.node[1].n_followers = 1;
    sqlite3 *n1 = open_conn(c.path[1]);
    exec_ok(n1, "INSERT INTO t(b) VALUES(randomblob(5000))");
    exec_ok(n1, "INSERT INTO t(b) VALUES(randomblob(5000))");
    assert_int_equal(vfs_db_applied(c.node[0].db), 4);
    /* The doomed transaction cannot write any more, nor commit. */
    int rc = sqlite3_exec(l, "INSERT INTO t(b) SELECT b FROM t LIMIT 50; COMMIT", NULL, NULL, NULL);
    assert_int_not_equal(rc, SQLITE_OK);
    sqlite3_exec(l, "ROLLBACK", NULL, NULL, NULL);
    assert_int_equal(query_int(l, "SELECT count(*) FROM t"), 3);
    exec_ok(l, "PRAGMA integrity_check");
    assert_int_equal(sqlite3_exec(l, "INSERT INTO t(b) VALUES(1)", NULL, NULL, NULL),
                     SQLITE_READONLY);
    walcheck(c.path[0]);
    sqlite3_close(n1);
    sqlite3_close(l);
    assert_files_identical(&c);
    cluster_stop(&c);
}

/* PRAGMA integrity_check on db answers "ok". */
static void assert_integrity_ok(sqlite3 *db)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
}

/* Reads a whole snapshot stream into memory (*len: its length). */
static uint8_t *snapshot_bytes(struct vfs_snapshot *s, size_t *len)
{
    size_t cap = 1 << 16, n = 0, k;
    uint8_t *buf = malloc(cap);
    assert_non_null(buf);
    do {
        if (cap - n < 4096) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        assert_int_equal(vfs_snapshot_read(s, buf + n, cap - n, &k), SQLITE_OK);
        n += k;
    } while (k > 0);
    *len = n;
    return buf;
}

/* The leader's (node 0's) image as it stands now, whole (*len: its length). */
static uint8_t *leader_image(struct cluster *c, size_t *len)
{
    struct vfs_snapshot *s;
    uint64_t size = 0;
    assert_int_equal(vfs_db_snapshot_open(c->node[0].db, &s, &size), SQLITE_OK);
    uint8_t *image = snapshot_bytes(s, len);
    vfs_snapshot_close(s);
    assert_int_equal(*len, size);
    return image;
}

/* Installs a whole image on node i as the runtime would, labelled `label`. */
static int install_image(struct cluster *c, int i, uint64_t label, const uint8_t *image, size_t len)
{
    assert_int_equal(vfs_db_install_begin(c->node[i].db, label), SQLITE_OK);
    assert_int_equal(vfs_db_install_chunk(c->node[i].db, image, len), SQLITE_OK);
    return vfs_db_install_end(c->node[i].db, label, 1);
}

/* A snapshot pinned on a fully checkpointed WAL (SQLite's reader then reads the database file
 * alone, holding no mark on the log) must not pick up the frames of the next generation when
 * writers restart the log and change pages while it is being sent. Installed on a follower, a
 * mixed image gives a database whose header counts pages it lacks. The receiver takes the
 * image's own index as applied, whatever the label. */
static void test_vfs_snapshot_survives_log_restart_and_skips_entries_it_holds(void **state)
{
    (void)state;
    struct vfs_db_config cfg = {.checkpoint_frames = 100000}; /* the node restarts nothing */
    struct cluster c;
    cluster_start(&c, 2, &cfg, &cfg);
    c.node[0].n_followers = 0; /* the follower gets the image only */
    sqlite3 *l = open_conn(c.path[0]);
    exec_ok(l, "CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB)");
    for (int i = 0; i < 40; i++) {
        exec_ok(l, "INSERT INTO t(b) VALUES(randomblob(500))");
    }
    uint64_t floor = 0;
    assert_int_equal(vfs_db_checkpoint(c.node[0].db, &floor), SQLITE_OK);

    struct vfs_snapshot *before, *pinned;
    uint64_t size = 0;
    assert_int_equal(vfs_db_snapshot_open(c.node[0].db, &before, &size), SQLITE_OK);
    size_t want_len;
    uint8_t *want = snapshot_bytes(before, &want_len);
    vfs_snapshot_close(before);
    assert_int_equal(want_len, size);
    assert_int_equal(vfs_db_snapshot_open(c.node[0].db, &pinned, &size), SQLITE_OK);

    /* The log restarts at frame 1; the new frames change page 1 (the database grows) and
     * rewrite leaves of the table. Entries 42 and 43, kept to be applied later. */
    c.node[0].record = 1;
    exec_ok(l, "UPDATE t SET b = randomblob(500)");
    exec_ok(l, "INSERT INTO t(b) SELECT randomblob(500) FROM t");
    assert_int_equal(c.node[0].n_rec, 2);
    size_t got_len;
    uint8_t *got = snapshot_bytes(pinned, &got_len);
    vfs_snapshot_close(pinned);
    assert_int_equal(got_len, want_len);
    assert_memory_equal(got, want, want_len);

    /* Installed on the follower under an earlier label (Raft labels images with the applied
     * floor), the image is the leader's database as it was, and its own index (41, the
     * leader's applied index when pinned) becomes the follower's applied index: entries up to
     * it are not written again. */
    assert_int_equal(vfs_db_applied(c.node[0].db), 43);
    assert_int_equal(vfs_db_install_begin(c.node[1].db, 30), SQLITE_OK);
    assert_int_equal(vfs_db_install_chunk(c.node[1].db, got, got_len), SQLITE_OK);
    assert_int_equal(vfs_db_install_end(c.node[1].db, 30, 1), SQLITE_OK);
    assert_int_equal(vfs_db_applied(c.node[1].db), 41);
    assert_int_equal(count_on(c.path[1], "SELECT count(*) FROM t"), 40);
    sqlite3 *f = open_conn(c.path[1]);
    assert_integrity_ok(f);
    for (int i = 0; i < 2; i++) {
        struct rec_entry *e = &c.node[0].rec[i];
        assert_int_equal(vfs_db_apply(c.node[1].db, e->payload, e->len, e->index), SQLITE_OK);
    }
    assert_int_equal(query_int(f, "SELECT count(*) FROM t"), 80);
    assert_files_identical(&c);

    /* Refused, the follower keeping its database: an image holding fewer entries than its
     * label (those between would never be applied) ... */
    uint8_t held[8];
    memcpy(held, got + 16, 8);
    memset(got + 16, 0, 8);
    got[16] = 10;
    assert_int_equal(vfs_db_install_begin(c.node[1].db, 41), SQLITE_OK);
    assert_int_equal(vfs_db_install_chunk(c.node[1].db, got, got_len), SQLITE_OK);
    assert_int_equal(vfs_db_install_end(c.node[1].db, 41, 1), SQLITE_CORRUPT);
    memcpy(got + 16, held, 8);
    /* ... and one whose header counts more pages than it holds (what the mixed image above
     * was). */
    uint32_t np = (uint32_t)((got_len - 24) / 4096);
    uint8_t *count = got + 24 + 28;
    count[0] = (uint8_t)((np + 2) >> 24);
    count[1] = (uint8_t)((np + 2) >> 16);
    count[2] = (uint8_t)((np + 2) >> 8);
    count[3] = (uint8_t)(np + 2);
    assert_int_equal(vfs_db_install_begin(c.node[1].db, 41), SQLITE_OK);
    assert_int_equal(vfs_db_install_chunk(c.node[1].db, got, got_len), SQLITE_OK);
    assert_int_equal(vfs_db_install_end(c.node[1].db, 41, 1), SQLITE_CORRUPT);
    assert_int_equal(vfs_db_applied(c.node[1].db), 43);
    assert_int_equal(query_int(f, "SELECT count(*) FROM t"), 80);
    sqlite3_close(f);
    free(got);
    free(want);
    sqlite3_close(l);
    cluster_stop(&c);
}

/* A snapshot stream can arrive after the database has moved past it: overtaken by a newer
 * stream, or by entries applied from the log while it travelled. Installed, it would take the
 * follower back to an older state, past entries its log may no longer hold. It is not installed:
 * the follower keeps its state and its applied index, and still reports success (the node then
 * takes the label as its log's base, which its state contains). */
static void test_vfs_older_snapshot_leaves_a_newer_database(void **state)
{
    (void)state;
    struct cluster c;
    cluster_start(&c, 2, NULL, NULL);
    sqlite3 *l = open_conn(c.path[0]);
    exec_ok(l, "CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB)");
    for (int i = 0; i < 10; i++) {
        exec_ok(l, "INSERT INTO t(b) VALUES(randomblob(300))");
    }
    size_t len;
    uint8_t *image = leader_image(&c, &len);
    exec_ok(l, "UPDATE t SET b = randomblob(300) WHERE a <= 5");
    for (int i = 0; i < 10; i++) {
        exec_ok(l, "INSERT INTO t(b) VALUES(randomblob(300))");
    }
    assert_int_equal(vfs_db_applied(c.node[1].db), 22);

    /* The image holds entries up to 11; labelled 9 or 11, it is older than the follower. */
    for (uint64_t label = 9; label <= 11; label += 2) {
        assert_int_equal(install_image(&c, 1, label, image, len), SQLITE_OK);
        assert_int_equal(vfs_db_applied(c.node[1].db), 22);
        assert_int_equal(count_on(c.path[1], "SELECT count(*) FROM t"), 20);
    }
    sqlite3 *f = open_conn(c.path[1]);
    assert_integrity_ok(f);
    sqlite3_close(f);
    /* Replication goes on from there. */
    exec_ok(l, "INSERT INTO t(b) VALUES(randomblob(300))");
    assert_int_equal(vfs_db_applied(c.node[1].db), 23);
    assert_int_equal(count_on(c.path[1], "SELECT count(*) FROM t"), 21);
    assert_files_identical(&c);
    free(image);
    sqlite3_close(l);
    cluster_stop(&c);
}

/* A database that holds no entry yet (a node that has just joined) takes an image straight into
 * its database file, with no WAL frames: the WAL path writes every page twice. With a reader in a
 * read transaction it uses the WAL path; the reader keeps its view either way. A copy into the
 * file cut short (the marker "<db>-installing" left behind) is undone at the next attach: the
 * database held nothing, and is empty again, not a mix. */
static void test_vfs_new_database_takes_the_image_into_its_file(void **state)
{
    (void)state;
    struct vfs_db_config cfg = {.checkpoint_frames = 100000};
    struct cluster c;
    cluster_start(&c, 3, &cfg, &cfg);
    c.node[0].n_followers = 0; /* the followers get the image only */
    sqlite3 *l = open_conn(c.path[0]);
    exec_ok(l, "CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB)");
    for (int i = 0; i < 30; i++) {
        exec_ok(l, "INSERT INTO t(b) VALUES(randomblob(800))");
    }
    size_t len;
    uint8_t *image = leader_image(&c, &len);
    uint32_t np = (uint32_t)((len - 24) / 4096);

    /* n1: nothing reads; the image goes into the file, the WAL stays empty. */
    char wal[160], marker[160];
    snprintf(wal, sizeof wal, "%s-wal", c.path[1]);
    snprintf(marker, sizeof marker, "%s-installing", c.path[1]);
    assert_int_equal(install_image(&c, 1, 31, image, len), SQLITE_OK);
    assert_int_equal(vfs_db_applied(c.node[1].db), 31);
    assert_int_equal(file_size(wal), 0);
    assert_int_equal(file_size(c.path[1]), (long)np * 4096);
    assert_int_not_equal(access(marker, F_OK), 0);
    assert_int_equal(count_on(c.path[1], "SELECT count(*) FROM t"), 30);
    sqlite3 *f1 = open_conn(c.path[1]);
    assert_integrity_ok(f1);
    sqlite3_close(f1);

    /* n2: a reader in a read transaction: the WAL path, and the reader's view does not move. */
    sqlite3 *r = open_conn(c.path[2]);
    exec_ok(r, "BEGIN; SELECT count(*) FROM sqlite_master;");
    assert_int_equal(install_image(&c, 2, 31, image, len), SQLITE_OK);
    char wal2[160];
    snprintf(wal2, sizeof wal2, "%s-wal", c.path[2]);
    assert_true(file_size(wal2) > (long)np * 4096);
    assert_int_equal(query_int(r, "SELECT count(*) FROM sqlite_master"), 0);
    exec_ok(r, "COMMIT");
    assert_int_equal(query_int(r, "SELECT count(*) FROM t"), 30);
    sqlite3_close(r);

    /* Replication goes on from the image on both. */
    c.node[0].n_followers = 2;
    exec_ok(l, "INSERT INTO t(b) VALUES(randomblob(800))");
    assert_int_equal(count_on(c.path[1], "SELECT count(*) FROM t"), 31);
    assert_int_equal(count_on(c.path[2], "SELECT count(*) FROM t"), 31);

    /* A copy cut short: n1 detached, half an image in its file, the marker present. */
    assert_int_equal(vfs_db_detach(c.node[1].db), SQLITE_OK);
    c.node[1].db = NULL;
    FILE *fp = fopen(c.path[1], "r+b");
    assert_non_null(fp);
    assert_int_equal(fwrite(image + 24, 4096, np / 2, fp), np / 2);
    fclose(fp);
    fp = fopen(marker, "wb");
    assert_non_null(fp);
    fclose(fp);
    struct vfs_node_ops ops = {.ctx = &c.node[1], .write_gate = fake_gate, .propose = fake_propose};
    assert_int_equal(vfs_db_attach(c.path[1], &ops, &cfg, 0, &c.node[1].db), SQLITE_OK);
    assert_int_not_equal(access(marker, F_OK), 0);
    assert_int_equal(vfs_db_applied(c.node[1].db), 0);
    assert_int_equal(count_on(c.path[1], "SELECT count(*) FROM sqlite_master"), 0);
    /* ... and it takes the next image whole. */
    c.node[0].n_followers = 0;
    free(image);
    image = leader_image(&c, &len);
    assert_int_equal(install_image(&c, 1, 32, image, len), SQLITE_OK);
    assert_int_equal(count_on(c.path[1], "SELECT count(*) FROM t"), 31);
    c.node[0].n_followers = 2;
    exec_ok(l, "INSERT INTO t(b) VALUES(randomblob(800))");
    assert_files_identical(&c);
    free(image);
    sqlite3_close(l);
    cluster_stop(&c);
}

/* Copies node i's files as a kill would leave them (database, WAL, no -shm) to DIR/copy.db, with
 * the state mark taken from `mark_from`. Returns the copy's path. */
static const char *copy_as_killed(struct cluster *c, int i, const char *mark_from)
{
    static char path[160];
    char cmd[800];
    snprintf(path, sizeof path, "%s/copy.db", c->dir);
    snprintf(cmd, sizeof cmd,
             "rm -f %s*; cp %s %s && cp %s-wal %s-wal && cp %s %s-applied", path, c->path[i],
             path, c->path[i], path, mark_from, path);
    char *argv[] = {"sh", "-c", cmd, NULL};
    assert_int_equal(run_child(NULL, argv), 0);
    return path;
}

/* After a kill the WAL holds entries past the durable applied floor. Written again one by one
 * over that newer state, they would show a mix of states (a header counting pages the file lacks
 * yet: malformed) until the last of them; the state mark names the entry the WAL ends with, and
 * those up to it are skipped. A mark that does not match the WAL is ignored. */
static void test_vfs_restart_skips_entries_the_wal_holds(void **state)
{
    (void)state;
    struct vfs_db_config fcfg = {.checkpoint_frames = 100000};
    struct cluster c;
    cluster_start(&c, 2, &fcfg, NULL);
    c.node[0].record = 1;
    sqlite3 *l = open_conn(c.path[0]);
    exec_ok(l, "CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB)");
    for (int i = 0; i < 6; i++) {
        exec_ok(l, "INSERT INTO t(b) SELECT randomblob(700) FROM (SELECT 1 UNION ALL SELECT 2)");
    }
    assert_int_equal(vfs_db_applied(c.node[1].db), 7);
    char mark_then[160], mark[160];
    snprintf(mark, sizeof mark, "%s-applied", c.path[1]);
    snprintf(mark_then, sizeof mark_then, "%s/mark-at-7", c.dir);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "cp %s %s", mark, mark_then);
    char *argv[] = {"sh", "-c", cmd, NULL};
    assert_int_equal(run_child(NULL, argv), 0);
    for (int i = 0; i < 3; i++) {
        exec_ok(l, "INSERT INTO t(b) SELECT randomblob(700) FROM t LIMIT 5");
    }
    assert_int_equal(vfs_db_applied(c.node[1].db), 10);

    struct fake_node fn = {0};
    struct vfs_node_ops ops = {.ctx = &fn, .write_gate = fake_gate, .propose = fake_propose};
    struct vfs_db *db = NULL;

    /* The mark matches: entries 3..10 are in the WAL already and are skipped. */
    const char *copy = copy_as_killed(&c, 1, mark);
    assert_int_equal(vfs_db_attach(copy, &ops, &fcfg, 2, &db), SQLITE_OK);
    assert_int_equal(vfs_db_applied(db), 10);
    assert_int_equal(vfs_db_floor(db), 2);
    char wal[200];
    snprintf(wal, sizeof wal, "%s-wal", copy);
    long wal_before = file_size(wal);
    for (int i = 2; i < c.node[0].n_rec; i++) {
        struct rec_entry *e = &c.node[0].rec[i];
        assert_int_equal(vfs_db_apply(db, e->payload, e->len, e->index), SQLITE_OK);
    }
    assert_int_equal(file_size(wal), wal_before);
    assert_int_equal(count_on(copy, "SELECT count(*) FROM t"), 27);
    assert_int_equal(vfs_db_detach(db), SQLITE_OK);

    /* A mark from before the last entries (another mxFrame) is ignored: the floor stands and
     * the entries after it are written again, as without a mark. */
    copy = copy_as_killed(&c, 1, mark_then);
    assert_int_equal(vfs_db_attach(copy, &ops, &fcfg, 2, &db), SQLITE_OK);
    assert_int_equal(vfs_db_applied(db), 2);
    for (int i = 2; i < c.node[0].n_rec; i++) {
        struct rec_entry *e = &c.node[0].rec[i];
        assert_int_equal(vfs_db_apply(db, e->payload, e->len, e->index), SQLITE_OK);
    }
    assert_int_equal(vfs_db_applied(db), 10);
    assert_int_equal(count_on(copy, "SELECT count(*) FROM t"), 27);
    assert_int_equal(vfs_db_detach(db), SQLITE_OK);

    /* Detached cleanly, the log copied to its end: the mark holds whether or not the last
     * connection deletes the WAL. */
    assert_int_equal(vfs_db_detach(c.node[1].db), SQLITE_OK);
    snprintf(cmd, sizeof cmd, "rm -f %s-wal %s-shm", c.path[1], c.path[1]);
    assert_int_equal(run_child(NULL, argv), 0);
    assert_int_equal(vfs_db_attach(c.path[1], &ops, &fcfg, 0, &c.node[1].db), SQLITE_OK);
    assert_int_equal(vfs_db_applied(c.node[1].db), 10);
    assert_int_equal(count_on(c.path[1], "SELECT count(*) FROM t"), 27);

    /* Another database at the same path (the files removed but the mark) is not taken for the
     * one the mark names. */
    assert_int_equal(vfs_db_detach(c.node[1].db), SQLITE_OK);
    snprintf(cmd, sizeof cmd, "rm -f %s %s-wal %s-shm", c.path[1], c.path[1], c.path[1]);
    assert_int_equal(run_child(NULL, argv), 0);
    sqlite3 *fresh = open_conn(c.path[1]);
    exec_ok(fresh, "PRAGMA journal_mode=WAL; CREATE TABLE u(x); INSERT INTO u VALUES(1)");
    sqlite3_close(fresh);
    assert_int_equal(vfs_db_attach(c.path[1], &ops, &fcfg, 0, &c.node[1].db), SQLITE_OK);
    assert_int_equal(vfs_db_applied(c.node[1].db), 0);
    sqlite3_close(l);
    cluster_stop(&c);
}

/* Without a matching mark (a power loss took it), a restart writes the entries after the floor
 * again over the newer state the WAL holds. Killed in that window, the database's header counts
 * more pages than its last commit holds; SQLite calls that malformed, but the node must still
 * open it to write the remaining entries, which make it whole. */
static void test_vfs_node_opens_a_database_killed_mid_replay(void **state)
{
    (void)state;
    struct vfs_db_config fcfg = {.checkpoint_frames = 100000};
    struct cluster c;
    cluster_start(&c, 2, &fcfg, NULL);
    c.node[0].record = 1;
    sqlite3 *l = open_conn(c.path[0]);
    exec_ok(l, "CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB)");                    /* 1 */
    for (int i = 0; i < 6; i++) {                                                    /* 2..7 */
        exec_ok(l, "INSERT INTO t(b) SELECT randomblob(700) FROM (SELECT 1 UNION ALL SELECT 2)");
    }
    exec_ok(l, "UPDATE t SET b = randomblob(700) WHERE a = 1");                   /* 8 */
    for (int i = 0; i < 2; i++) {                                                    /* 9, 10 */
        exec_ok(l, "INSERT INTO t(b) SELECT randomblob(700) FROM t LIMIT 6");
    }
    assert_int_equal(c.node[0].n_rec, 10);
    char nomark[160];
    snprintf(nomark, sizeof nomark, "%s/no-mark", c.dir);
    char *touch[] = {"touch", nomark, NULL};
    assert_int_equal(run_child(NULL, touch), 0);

    /* Killed with no mark; restarted from floor 7, entry 8 is written again over state 10 (it
     * leaves page 1 as state 10 has it, counting pages entry 8's commit does not), then killed
     * again. */
    struct fake_node fn = {0};
    struct vfs_node_ops ops = {.ctx = &fn, .write_gate = fake_gate, .propose = fake_propose};
    struct vfs_db *db = NULL;
    const char *copy = copy_as_killed(&c, 1, nomark);
    assert_int_equal(vfs_db_attach(copy, &ops, &fcfg, 7, &db), SQLITE_OK);
    assert_int_equal(vfs_db_applied(db), 7);
    struct rec_entry *e8 = &c.node[0].rec[7];
    assert_int_equal(e8->index, 8);
    assert_int_equal(vfs_db_apply(db, e8->payload, e8->len, e8->index), SQLITE_OK);
    assert_int_equal(vfs_db_detach(db), SQLITE_OK);
    char again[160], cmd[1400];
    snprintf(again, sizeof again, "%s/again.db", c.dir);
    /* (Closing the node's connection may have checkpointed and deleted the WAL.) */
    snprintf(cmd, sizeof cmd,
             "rm -f %s*; cp %s %s && cp %s %s/probe.db && if [ -f %s-wal ]; then cp %s-wal %s-wal "
             "&& cp %s-wal %s/probe.db-wal; fi",
             again, copy, again, copy, c.dir, copy, copy, again, copy, c.dir);
    char *argv[] = {"sh", "-c", cmd, NULL};
    assert_int_equal(run_child(NULL, argv), 0);
    char probe[200];
    snprintf(probe, sizeof probe, "%s/probe.db", c.dir);
    sqlite3 *plain = NULL;
    assert_int_equal(sqlite3_open(probe, &plain), SQLITE_OK);
    assert_int_equal(sqlite3_exec(plain, "SELECT count(*) FROM t", NULL, NULL, NULL),
                     SQLITE_CORRUPT);
    sqlite3_close(plain);

    /* The node opens it anyway and the entries after make it whole. */
    assert_int_equal(vfs_db_attach(again, &ops, &fcfg, 7, &db), SQLITE_OK);
    for (int i = 7; i < 10; i++) {
        struct rec_entry *e = &c.node[0].rec[i];
        assert_int_equal(vfs_db_apply(db, e->payload, e->len, e->index), SQLITE_OK);
    }
    assert_int_equal(count_on(again, "SELECT count(*) FROM t"), 24);
    sqlite3 *r = open_conn(again);
    assert_integrity_ok(r);
    sqlite3_close(r);
    assert_int_equal(vfs_db_detach(db), SQLITE_OK);
    sqlite3_close(l);
    cluster_stop(&c);
}

static void test_vfs_attach_takes_the_write_lock_once(void **state)
{
    (void)state;
    struct cluster c;
    cluster_start(&c, 1, NULL, NULL);
    struct vfs_node_ops ops = {.ctx = &c.node[0], .write_gate = fake_gate, .propose = fake_propose};
    struct vfs_db *again = NULL;
    assert_int_equal(vfs_db_attach(c.path[0], &ops, NULL, 0, &again), SQLITE_MISUSE);
    assert_null(again);
    sqlite3 *l = open_conn(c.path[0]);
    exec_ok(l, "CREATE TABLE t(a)");
    assert_int_equal(c.node[0].proposals, 1);
    /* Detached, the database is plain SQLite again: writes commit locally, unproposed. */
    assert_int_equal(vfs_db_detach(c.node[0].db), SQLITE_OK);
    exec_ok(l, "INSERT INTO t VALUES(1)");
    assert_int_equal(c.node[0].proposals, 1);
    /* Another process holds the write lock for a while: attach waits for it. */
    char cmd[300];
    snprintf(cmd, sizeof cmd,
             "(echo 'BEGIN IMMEDIATE; INSERT INTO t VALUES(2);'; sleep 1; echo 'COMMIT;') | "
             "timeout 20 sqlite3 %s",
             c.path[0]);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execlp("sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    struct timespec ts = {0, 300 * 1000000L};
    nanosleep(&ts, NULL);
    uint64_t t0 = now_ms();
    assert_int_equal(vfs_db_attach(c.path[0], &ops, NULL, 1, &c.node[0].db), SQLITE_OK);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_true(now_ms() - t0 >= 300);
    assert_int_equal(query_int(l, "SELECT count(*) FROM t"), 2);
    exec_ok(l, "INSERT INTO t VALUES(3)");
    assert_int_equal(c.node[0].proposals, 2);
    assert_int_equal(vfs_db_applied(c.node[0].db), 2);
    sqlite3_close(l);
    cluster_stop(&c);
}

static void dbg_log(void *a, int rc, const char *msg)
{
    (void)a;
    fprintf(stderr, "sqlite log %d: %s\n", rc, msg);
}

int main(void)
{
    sqlite3_config(SQLITE_CONFIG_LOG, getenv("VFS_TEST_LOG") ? dbg_log : NULL, NULL);
    if (getenv("VFS_TEST_FILTER") != NULL) {
        cmocka_set_test_filter(getenv("VFS_TEST_FILTER"));
    }
    assert_int_equal(vfs_register("walraft", 0), SQLITE_OK);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_vfs_rows_written_on_leader_appear_on_followers,
                                  teardown_dir),
        cmocka_unit_test_teardown(test_vfs_rollback_replicates_nothing, teardown_dir),
        cmocka_unit_test_teardown(test_vfs_page_rewritten_in_txn_replicates_latest_image,
                                  teardown_dir),
        cmocka_unit_test_teardown(test_vfs_vacuum_replicates_and_files_identical, teardown_dir),
        cmocka_unit_test_teardown(test_vfs_follower_write_is_readonly, teardown_dir),
        cmocka_unit_test_teardown(test_vfs_other_process_cannot_write, teardown_dir),
        cmocka_unit_test_teardown(test_vfs_follower_reader_keeps_snapshot, teardown_dir),
        cmocka_unit_test_teardown(test_vfs_log_restart_waits_for_readers_of_backfilled_frames,
                                  teardown_dir),
        cmocka_unit_test_teardown(test_vfs_propose_failure_returns_error_and_changes_nothing,
                                  teardown_dir),
        cmocka_unit_test_teardown(test_vfs_transaction_over_max_size_fails_cleanly, teardown_dir),
        cmocka_unit_test_teardown(test_vfs_four_writer_threads_all_succeed, teardown_dir),
        cmocka_unit_test_teardown(test_vfs_queued_writer_rechecks_gate_when_granted, teardown_dir),
        cmocka_unit_test_teardown(test_vfs_back_to_back_writer_cannot_starve_a_queued_one,
                                  teardown_dir),
        cmocka_unit_test_teardown(test_vfs_offer_not_taken_lapses, teardown_dir),
        cmocka_unit_test_teardown(test_vfs_queued_writer_wait_is_bounded_by_busy_timeout,
                                  teardown_dir),
        cmocka_unit_test_teardown(test_vfs_follower_wal_checkpoints_and_restarts, teardown_dir),
        cmocka_unit_test_teardown(test_vfs_wal_crosses_first_index_block, teardown_dir),
        cmocka_unit_test_teardown(test_vfs_apply_batch_is_one_transaction, teardown_dir),
        cmocka_unit_test_teardown(test_vfs_leader_applies_entry_its_writer_lost, teardown_dir),
        cmocka_unit_test_teardown(test_vfs_leader_apply_checkpoints_without_waiting_for_writers,
                                  teardown_dir),
        cmocka_unit_test_teardown(test_vfs_leader_log_restarts_under_back_to_back_writes,
                                  teardown_dir),
        cmocka_unit_test_teardown(test_vfs_step_down_dooms_open_write_transaction, teardown_dir),
        cmocka_unit_test_teardown(test_vfs_attach_takes_the_write_lock_once, teardown_dir),
        cmocka_unit_test_teardown(test_vfs_restart_skips_entries_the_wal_holds, teardown_dir),
        cmocka_unit_test_teardown(test_vfs_node_opens_a_database_killed_mid_replay, teardown_dir),
        cmocka_unit_test_teardown(test_vfs_snapshot_survives_log_restart_and_skips_entries_it_holds,
                                  teardown_dir),
        cmocka_unit_test_teardown(test_vfs_older_snapshot_leaves_a_newer_database, teardown_dir),
        cmocka_unit_test_teardown(test_vfs_new_database_takes_the_image_into_its_file,
                                  teardown_dir),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    teardown_dir(NULL);
    return rc;
}
