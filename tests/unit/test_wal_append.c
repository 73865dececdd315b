/* The transaction appender on live databases: a follower copy of a database receives a leader's
 * transactions through wal/ (its WAL file and its -shm, under SQLite's real WRITE lock) while a
 * SQLite connection in another process has it open. SQLite must then read the new content, keep
 * an open reader's snapshot, pass integrity_check and checkpoint it into a database file
 * byte-identical to the leader's; walcheck.py must find the WAL and index consistent. */
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tests/unit/helpers/wal_testutil.h"
#include "wal/wal.h"

#define REPLY_TIMEOUT_MS 30000
#define LOCK_TIMEOUT_MS 5000

/* --- the reader process ----------------------------------------------------------------------- */

/* Line protocol, one reply line per command:
 *   open PATH   -> ok | ERR msg
 *   x SQL       -> ok | ERR msg            (sqlite3_exec)
 *   q SQL       -> first column as text of the first row | NULL | ERR msg
 *   ckpt MODE   -> rc log ckpt             (sqlite3_wal_checkpoint_v2; MODE 0..3)
 *   close       -> ok
 *   quit        -> (exits) */
static void reader_main(int in_fd, int out_fd)
{
    alarm(120); /* never outlive a test that lost track of us */
    FILE *in = fdopen(in_fd, "r");
    FILE *out = fdopen(out_fd, "w");
    sqlite3 *db = NULL;
    char line[4096];
    while (fgets(line, sizeof line, in) != NULL) {
        line[strcspn(line, "\n")] = 0;
        if (strncmp(line, "open ", 5) == 0) {
            int rc = sqlite3_open_v2(line + 5, &db, SQLITE_OPEN_READWRITE, NULL);
            if (rc == SQLITE_OK) {
                sqlite3_busy_timeout(db, 5000);
                rc = sqlite3_exec(db, "PRAGMA wal_autocheckpoint=0", NULL, NULL, NULL);
            }
            fprintf(out, rc == SQLITE_OK ? "ok\n" : "ERR open %d\n", rc);
        } else if (strncmp(line, "x ", 2) == 0) {
            char *err = NULL;
            if (sqlite3_exec(db, line + 2, NULL, NULL, &err) == SQLITE_OK) {
                fprintf(out, "ok\n");
            } else {
                fprintf(out, "ERR %s\n", err ? err : "?");
            }
            sqlite3_free(err);
        } else if (strncmp(line, "q ", 2) == 0) {
            sqlite3_stmt *st;
            if (sqlite3_prepare_v2(db, line + 2, -1, &st, NULL) != SQLITE_OK) {
                fprintf(out, "ERR %s\n", sqlite3_errmsg(db));
                continue;
            }
            int rc = sqlite3_step(st);
            if (rc == SQLITE_ROW) {
                const unsigned char *t = sqlite3_column_text(st, 0);
                fprintf(out, "%s\n", t ? (const char *)t : "NULL");
            } else if (rc == SQLITE_DONE) {
                fprintf(out, "NULL\n");
            } else {
                fprintf(out, "ERR %s\n", sqlite3_errmsg(db));
            }
            sqlite3_finalize(st);
        } else if (strncmp(line, "ckpt ", 5) == 0) {
            int log_frames = -1, ckpt = -1;
            int rc = sqlite3_wal_checkpoint_v2(db, NULL, atoi(line + 5), &log_frames, &ckpt);
            fprintf(out, "%d %d %d\n", rc, log_frames, ckpt);
        } else if (strcmp(line, "close") == 0) {
            sqlite3_close(db);
            db = NULL;
            fprintf(out, "ok\n");
        } else if (strcmp(line, "quit") == 0) {
            break;
        } else {
            fprintf(out, "ERR unknown command\n");
        }
        fflush(out);
    }
    _exit(0);
}

struct reader {
    pid_t pid;
    FILE *to;
    int from;
};

/* One per test, so that the teardown can kill and reap it whatever happened. */
static struct reader g_reader = {-1, NULL, -1};
static char g_dir[64];

static void reader_start(struct reader *r)
{
    int down[2], up[2];
    assert_int_equal(pipe(down), 0);
    assert_int_equal(pipe(up), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(down[1]);
        close(up[0]);
        reader_main(down[0], up[1]);
    }
    close(down[0]);
    close(up[1]);
    r->pid = pid;
    r->to = fdopen(down[1], "w");
    r->from = up[0];
}

/* Sends one command, returns its reply (static buffer); fails the test on timeout. */
static const char *reader_cmd(struct reader *r, const char *fmt, ...)
{
    static char reply[4096];
    va_list ap;
    va_start(ap, fmt);
    vfprintf(r->to, fmt, ap);
    va_end(ap);
    fputc('\n', r->to);
    fflush(r->to);
    size_t n = 0;
    for (;;) {
        struct pollfd p = {r->from, POLLIN, 0};
        int pr = poll(&p, 1, REPLY_TIMEOUT_MS);
        if (pr <= 0) {
            fail_msg("reader did not answer '%s'", fmt);
        }
        ssize_t got = read(r->from, reply + n, 1);
        if (got <= 0) {
            fail_msg("reader died during '%s'", fmt);
        }
        if (reply[n] == '\n' || n + 2 >= sizeof reply) {
            reply[n] = 0;
            return reply;
        }
        n++;
    }
}

static long reader_int(struct reader *r, const char *sql)
{
    const char *rep = reader_cmd(r, "q %s", sql);
    if (strncmp(rep, "ERR", 3) == 0) {
        fail_msg("reader: %s: %s", sql, rep);
    }
    return atol(rep);
}

static void reader_ok(struct reader *r, const char *cmd)
{
    const char *rep = reader_cmd(r, "%s", cmd);
    if (strcmp(rep, "ok") != 0) {
        fail_msg("reader: %s: %s", cmd, rep);
    }
}

static void reader_stop(struct reader *r)
{
    if (r->pid <= 0) {
        return;
    }
    if (r->to != NULL) {
        fprintf(r->to, "quit\n");
        fflush(r->to);
        fclose(r->to);
        r->to = NULL;
    }
    /* Wait up to 10 s for a clean exit, then kill it by its pid. */
    int st;
    for (int i = 0; i < 1000; i++) {
        if (waitpid(r->pid, &st, WNOHANG) == r->pid) {
            r->pid = -1;
            break;
        }
        usleep(10000);
    }
    if (r->pid > 0) {
        kill(r->pid, SIGKILL);
        waitpid(r->pid, &st, 0);
        r->pid = -1;
    }
    if (r->from >= 0) {
        close(r->from);
        r->from = -1;
    }
}

static int setup(void **state)
{
    (void)state;
    wt_tmpdir(g_dir, sizeof g_dir);
    reader_start(&g_reader);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    reader_stop(&g_reader);
    wt_rmrf(g_dir);
    return 0;
}

/* --- the leader ------------------------------------------------------------------------------- */

struct leader {
    sqlite3 *db;
    char path[128];
    char wal[140];
    uint32_t done; /* leader WAL frames already shipped */
};

static void leader_create(struct leader *l, int page_size, int rows)
{
    snprintf(l->path, sizeof l->path, "%s/leader.db", g_dir);
    snprintf(l->wal, sizeof l->wal, "%s/leader.db-wal", g_dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(l->path, &db), SQLITE_OK);
    char sql[512];
    snprintf(sql, sizeof sql,
             "PRAGMA page_size=%d; PRAGMA journal_mode=WAL;"
             "CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB, c TEXT);"
             "CREATE INDEX tc ON t(c);"
             "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM s WHERE x<%d)"
             " INSERT INTO t(b, c) SELECT randomblob(200), hex(randomblob(8)) FROM s;",
             page_size, rows);
    wt_exec(db, sql);
    assert_int_equal(sqlite3_close(db), SQLITE_OK); /* checkpoints and removes the WAL */
    l->db = NULL;
    l->done = 0;
}

static void leader_open(struct leader *l)
{
    assert_int_equal(sqlite3_open(l->path, &l->db), SQLITE_OK);
    wt_exec(l->db, "PRAGMA wal_autocheckpoint=0; PRAGMA cache_size=20");
}

/* A transaction shipped from the leader: the newest image of each page it wrote. */
struct shipped {
    struct wal_page *pages;
    uint32_t n;
    uint32_t commit;
    uint8_t *wal; /* owns the page images */
    uint32_t from, upto;
    uint32_t *last; /* frame index into pages by pgno, scratch */
};

static int ship_frame(void *arg, uint32_t frame, const struct wal_frame_hdr *fh,
                      const uint8_t *page)
{
    struct shipped *s = arg;
    if (frame <= s->from || frame > s->upto) {
        return 0;
    }
    for (uint32_t i = 0; i < s->n; i++) {
        if (s->pages[i].pgno == fh->pgno) {
            s->pages[i].data = page; /* a newer image of the same page */
            return 0;
        }
    }
    s->pages[s->n].pgno = fh->pgno;
    s->pages[s->n].data = page;
    s->n++;
    return 0;
}

/* Runs sql as one transaction on the leader and collects the frames it committed. */
static void leader_txn(struct leader *l, const char *sql, struct shipped *s)
{
    wt_exec(l->db, sql);
    size_t len;
    memset(s, 0, sizeof *s);
    s->wal = wt_read_file(l->wal, &len);
    assert_non_null(s->wal);
    struct wal_scan scan;
    assert_int_equal(wal_scan_image(s->wal, len, &scan, NULL, NULL), WAL_OK);
    assert_true(scan.mx_frame > l->done);
    s->from = l->done;
    s->upto = scan.mx_frame;
    s->pages = calloc(scan.mx_frame - l->done, sizeof *s->pages);
    assert_int_equal(wal_scan_image(s->wal, len, &scan, ship_frame, s), WAL_OK);
    s->commit = scan.n_page;
    l->done = scan.mx_frame;
}

static void shipped_free(struct shipped *s)
{
    free(s->pages);
    free(s->wal);
    memset(s, 0, sizeof *s);
}

/* --- the follower's apply, from this process (no SQLite connection here on that database) ----- */

static int lock_range(int fd, short type, off_t start, off_t len)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = start;
    fl.l_len = len;
    for (int waited = 0; waited < LOCK_TIMEOUT_MS; waited += 5) {
        if (fcntl(fd, F_SETLK, &fl) == 0) {
            return 0;
        }
        if (errno != EAGAIN && errno != EACCES) {
            return -1;
        }
        usleep(5000);
    }
    return -1;
}

struct failing_io {
    int fd;
    int fail_at; /* the write call number that fails, 0 = none */
    int calls;
};

static int fio_write(void *ctx, const void *buf, size_t n, uint64_t off)
{
    struct failing_io *f = ctx;
    if (++f->calls == f->fail_at) {
        return 1;
    }
    return wt_fd_write(&f->fd, buf, n, off);
}

static int fio_read(void *ctx, void *buf, size_t n, uint64_t off)
{
    struct failing_io *f = ctx;
    return wt_fd_read(&f->fd, buf, n, off);
}

/* Appends s to the follower under SQLite's WRITE lock (byte 120 of -shm), plus READ(1..4)
 * (bytes 124..127) for a restart, the way another SQLite process would exclude us. */
static int follower_apply(const struct shipped *s, int page_size, int restart, int fail_at,
                          struct wal_append_result *res)
{
    char shmp[128], walp[128];
    snprintf(shmp, sizeof shmp, "%s/follower.db-shm", g_dir);
    snprintf(walp, sizeof walp, "%s/follower.db-wal", g_dir);
    struct wt_file_shm f;
    assert_int_equal(wt_file_shm_open(&f, shmp), 0);
    assert_int_equal(lock_range(f.fd, F_WRLCK, 120, 1), 0);
    if (restart) {
        assert_int_equal(lock_range(f.fd, F_WRLCK, 124, 4), 0);
    }
    struct failing_io fio = {open(walp, O_RDWR | O_CREAT, 0644), fail_at, 0};
    assert_true(fio.fd >= 0);
    struct wal_io io = {&fio, fio_write, fio_read, NULL};
    struct wal_shm shm = {&f, wt_file_map};
    struct wal_txn txn = {(uint32_t)page_size,
                          s->commit,
                          s->pages,
                          s->n,
                          restart,
                          {(uint32_t)random(), (uint32_t)random()}};
    int rc = wal_append_txn(&shm, &io, &txn, res);
    close(fio.fd);
    lock_range(f.fd, F_UNLCK, 120, 8);
    wt_file_shm_close(&f);
    return rc;
}

static void follower_index(struct wal_index_hdr *h, struct wal_ckpt_info *ci)
{
    char shmp[128];
    snprintf(shmp, sizeof shmp, "%s/follower.db-shm", g_dir);
    struct wt_file_shm f;
    assert_int_equal(wt_file_shm_open(&f, shmp), 0);
    struct wal_shm shm = {&f, wt_file_map};
    assert_int_equal(wal_index_hdr_read(&shm, h), WAL_OK);
    assert_int_equal(wal_ckpt_info_read(&shm, ci), WAL_OK);
    wt_file_shm_close(&f);
}

static void follower_walcheck(void)
{
    char shmp[128], walp[128];
    snprintf(shmp, sizeof shmp, "%s/follower.db-shm", g_dir);
    snprintf(walp, sizeof walp, "%s/follower.db-wal", g_dir);
    assert_int_equal(wt_walcheck(shmp, walp), 0);
}

static void expect_same_content(struct leader *l, struct reader *r)
{
    long count = (long)wt_query_int(l->db, "SELECT count(*) FROM t");
    long sum = (long)wt_query_int(l->db, "SELECT sum(length(b)) + sum(a) FROM t");
    assert_int_equal(reader_int(r, "SELECT count(*) FROM t"), count);
    assert_int_equal(reader_int(r, "SELECT sum(length(b)) + sum(a) FROM t"), sum);
    assert_string_equal(reader_cmd(r, "q PRAGMA integrity_check"), "ok");
}

/* Checkpoints the follower (TRUNCATE) and closes both; the database files must be identical. */
static void expect_identical_files(struct leader *l, struct reader *r)
{
    assert_string_equal(reader_cmd(r, "ckpt %d", SQLITE_CHECKPOINT_TRUNCATE), "0 0 0");
    char walp[128];
    snprintf(walp, sizeof walp, "%s/follower.db-wal", g_dir);
    size_t wlen;
    free(wt_read_file(walp, &wlen));
    assert_int_equal(wlen, 0);
    reader_ok(r, "close");
    assert_int_equal(sqlite3_close(l->db), SQLITE_OK);
    l->db = NULL;
    char fpath[128];
    snprintf(fpath, sizeof fpath, "%s/follower.db", g_dir);
    size_t a, b;
    uint8_t *x = wt_read_file(l->path, &a);
    uint8_t *y = wt_read_file(fpath, &b);
    assert_int_equal(a, b);
    assert_memory_equal(x, y, a);
    free(x);
    free(y);
}

static void start_follower(struct leader *l, struct reader *r)
{
    char fpath[128];
    snprintf(fpath, sizeof fpath, "%s/follower.db", g_dir);
    wt_copy_file(l->path, fpath);
    const char *rep = reader_cmd(r, "open %s", fpath);
    assert_string_equal(rep, "ok");
    assert_true(reader_int(r, "SELECT count(*) FROM t") > 0); /* creates and recovers -shm */
}

/* Copies the follower's database file and its WAL cut to `frames` frames to crash.db, then lets
 * SQLite recover it from the WAL alone (no -shm) and returns its row count. */
static long recover_copy(uint32_t frames, int page_size)
{
    char fpath[128], walp[128], cpath[128], cwal[128], cshm[128];
    snprintf(fpath, sizeof fpath, "%s/follower.db", g_dir);
    snprintf(walp, sizeof walp, "%s/follower.db-wal", g_dir);
    snprintf(cpath, sizeof cpath, "%s/crash.db", g_dir);
    snprintf(cwal, sizeof cwal, "%s/crash.db-wal", g_dir);
    snprintf(cshm, sizeof cshm, "%s/crash.db-shm", g_dir);
    unlink(cshm);
    wt_copy_file(fpath, cpath);
    size_t len;
    uint8_t *wal = wt_read_file(walp, &len);
    size_t cut = (size_t)wal_frame_offset((uint32_t)page_size, frames + 1);
    assert_true(cut <= len);
    wt_write_file(cwal, wal, cut);
    free(wal);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(cpath, &db), SQLITE_OK);
    long n = (long)wt_query_int(db, "SELECT count(*) FROM t");
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    unlink(cwal);
    unlink(cshm);
    return n;
}

/* --- tests ------------------------------------------------------------------------------------ */

static void test_wal_append_live_reader_keeps_snapshot(void **state)
{
    (void)state;
    struct leader l;
    leader_create(&l, 4096, 300);
    start_follower(&l, &g_reader);
    leader_open(&l);

    /* A reader inside a read transaction from before the append. */
    reader_ok(&g_reader, "x BEGIN");
    assert_int_equal(reader_int(&g_reader, "SELECT count(*) FROM t"), 300);

    struct shipped s;
    leader_txn(&l,
               "BEGIN; WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM s WHERE x<200)"
               " INSERT INTO t(b, c) SELECT randomblob(700), hex(randomblob(8)) FROM s;"
               " UPDATE t SET c = 'changed' WHERE a % 10 = 0; COMMIT;",
               &s);
    struct wal_append_result res;
    assert_int_equal(follower_apply(&s, 4096, 0, 0, &res), WAL_OK);
    assert_int_equal(res.first_frame, 1);
    assert_int_equal(res.mx_frame, s.n);
    printf("txn 1: %u pages, commit size %u\n", s.n, s.commit);
    shipped_free(&s);

    /* The old snapshot holds until the reader's transaction ends. */
    assert_int_equal(reader_int(&g_reader, "SELECT count(*) FROM t"), 300);
    assert_int_equal(reader_int(&g_reader, "SELECT count(*) FROM t WHERE c = 'changed'"), 0);
    reader_ok(&g_reader, "x COMMIT");
    assert_int_equal(reader_int(&g_reader, "SELECT count(*) FROM t"), 500);
    expect_same_content(&l, &g_reader);
    follower_walcheck();

    /* A second transaction continues the chain; a doomed attempt at it comes first, failing on
     * the write of its commit frame: nothing may become visible, and its index entries above
     * mxFrame must not confuse the real append that reuses those frame numbers. */
    leader_txn(&l, "DELETE FROM t WHERE a % 3 = 0; INSERT INTO t(b, c) VALUES(zeroblob(5000), 'z')",
               &s);
    struct wal_index_hdr before, after;
    struct wal_ckpt_info ci;
    follower_index(&before, &ci);
    assert_int_equal(follower_apply(&s, 4096, 0, (int)(2 * s.n - 1), &res), WAL_EIO);
    follower_index(&after, &ci);
    assert_memory_equal(&before, &after, sizeof before);
    assert_int_equal(reader_int(&g_reader, "SELECT count(*) FROM t"), 500);
    /* Reverse the page order so the real append puts different pages at those frames. */
    for (uint32_t i = 0; i < s.n / 2; i++) {
        struct wal_page t = s.pages[i];
        s.pages[i] = s.pages[s.n - 1 - i];
        s.pages[s.n - 1 - i] = t;
    }
    assert_int_equal(follower_apply(&s, 4096, 0, 0, &res), WAL_OK);
    assert_int_equal(res.first_frame, before.mx_frame + 1);
    shipped_free(&s);
    expect_same_content(&l, &g_reader);
    follower_walcheck();

    /* The WAL stands on its own: one commit frame per transaction, and SQLite's recovery of a
     * copy cut inside the second transaction finds exactly the first. */
    char walp[128];
    snprintf(walp, sizeof walp, "%s/follower.db-wal", g_dir);
    size_t len;
    uint8_t *wal = wt_read_file(walp, &len);
    struct wal_scan scan;
    assert_int_equal(wal_scan_image(wal, len, &scan, NULL, NULL), WAL_OK);
    free(wal);
    assert_int_equal(scan.n_commits, 2);
    assert_int_equal(scan.mx_frame, res.mx_frame);
    long final_count = reader_int(&g_reader, "SELECT count(*) FROM t");
    assert_int_equal(recover_copy(res.mx_frame, 4096), final_count);
    assert_int_equal(recover_copy(res.mx_frame - 1, 4096), 500);
    assert_int_equal(recover_copy(res.first_frame, 4096), 500);
    assert_int_equal(recover_copy(res.first_frame - 1, 4096), 500);
    expect_identical_files(&l, &g_reader);
}

static void test_wal_append_restarts_checkpointed_log(void **state)
{
    (void)state;
    struct leader l;
    leader_create(&l, 4096, 100);
    start_follower(&l, &g_reader);
    leader_open(&l);
    struct shipped s;
    leader_txn(&l, "INSERT INTO t(b, c) SELECT b, c || 'x' FROM t", &s);
    struct wal_append_result res;
    assert_int_equal(follower_apply(&s, 4096, 0, 0, &res), WAL_OK);
    shipped_free(&s);
    expect_same_content(&l, &g_reader);

    /* Everything checkpointed: mxFrame == nBackfill. */
    char expect[64];
    snprintf(expect, sizeof expect, "0 %u %u", res.mx_frame, res.mx_frame);
    assert_string_equal(reader_cmd(&g_reader, "ckpt %d", SQLITE_CHECKPOINT_PASSIVE), expect);
    struct wal_index_hdr h0, h1;
    struct wal_ckpt_info ci;
    follower_index(&h0, &ci);
    assert_int_equal(ci.n_backfill, h0.mx_frame);
    char walp[128];
    snprintf(walp, sizeof walp, "%s/follower.db-wal", g_dir);
    size_t len;
    uint8_t *wal = wt_read_file(walp, &len);
    struct wal_scan old;
    assert_int_equal(wal_scan_image(wal, len, &old, NULL, NULL), WAL_OK);
    free(wal);

    /* A reader that starts now reads the database file only (read mark 0): a restart may go on
     * under it, and its snapshot stays. */
    reader_ok(&g_reader, "x BEGIN");
    assert_int_equal(reader_int(&g_reader, "SELECT count(*) FROM t"), 200);

    leader_txn(&l, "UPDATE t SET c = 'r' WHERE a <= 50; INSERT INTO t(b, c) VALUES(x'00', 'n')",
               &s);
    assert_int_equal(follower_apply(&s, 4096, 1, 0, &res), WAL_OK);
    assert_int_equal(res.restarted, 1);
    assert_int_equal(res.first_frame, 1);
    assert_int_equal(res.mx_frame, s.n);
    shipped_free(&s);

    follower_index(&h1, &ci);
    assert_int_equal(h1.mx_frame, res.mx_frame);
    assert_int_equal(wal_index_salt(&h1, 0), wal_index_salt(&h0, 0) + 1);
    assert_int_equal(ci.n_backfill, 0);
    assert_int_equal(ci.read_mark[0], 0);
    assert_int_equal(ci.read_mark[1], 0);
    wal = wt_read_file(walp, &len);
    struct wal_scan now;
    assert_int_equal(wal_scan_image(wal, len, &now, NULL, NULL), WAL_OK);
    free(wal);
    assert_int_equal(now.hdr.ckpt_seq, old.hdr.ckpt_seq + 1);
    assert_int_equal(now.hdr.salt1, old.hdr.salt1 + 1);
    assert_int_equal(now.mx_frame, res.mx_frame);
    assert_int_equal(now.n_valid, res.mx_frame); /* the old generation's frames no longer chain */

    assert_int_equal(reader_int(&g_reader, "SELECT count(*) FROM t"), 200);
    reader_ok(&g_reader, "x COMMIT");
    assert_int_equal(reader_int(&g_reader, "SELECT count(*) FROM t"), 201);
    assert_int_equal(reader_int(&g_reader, "SELECT count(*) FROM t WHERE c = 'r'"), 50);
    expect_same_content(&l, &g_reader);
    follower_walcheck();

    /* And the restarted log continues normally. */
    leader_txn(&l, "DELETE FROM t WHERE a > 150", &s);
    assert_int_equal(follower_apply(&s, 4096, 0, 0, &res), WAL_OK);
    shipped_free(&s);
    expect_same_content(&l, &g_reader);
    follower_walcheck();
    expect_identical_files(&l, &g_reader);
}

static void test_wal_append_second_hash_block(void **state)
{
    (void)state;
    struct leader l;
    leader_create(&l, 512, 50);
    start_follower(&l, &g_reader);
    leader_open(&l);
    struct shipped s;
    /* More than 4062 pages in one transaction: its frames cross into the second block. */
    leader_txn(&l,
               "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM s WHERE x<4500)"
               " INSERT INTO t(b, c) SELECT randomblob(400), hex(randomblob(8)) FROM s",
               &s);
    assert_true(s.n > 4062);
    struct wal_append_result res;
    assert_int_equal(follower_apply(&s, 512, 0, 0, &res), WAL_OK);
    printf("one transaction of %u frames\n", res.mx_frame);
    shipped_free(&s);
    expect_same_content(&l, &g_reader);
    follower_walcheck();
    leader_txn(&l, "UPDATE t SET c = 'u' WHERE a % 2 = 0", &s);
    assert_int_equal(follower_apply(&s, 512, 0, 0, &res), WAL_OK);
    shipped_free(&s);
    expect_same_content(&l, &g_reader);
    follower_walcheck();
    expect_identical_files(&l, &g_reader);
}

static void test_wal_append_page_size_65536(void **state)
{
    (void)state;
    struct leader l;
    leader_create(&l, 65536, 20);
    start_follower(&l, &g_reader);
    leader_open(&l);
    struct shipped s;
    leader_txn(&l, "INSERT INTO t(b, c) VALUES(randomblob(200000), 'big')", &s);
    struct wal_append_result res;
    assert_int_equal(follower_apply(&s, 65536, 0, 0, &res), WAL_OK);
    shipped_free(&s);
    expect_same_content(&l, &g_reader);
    follower_walcheck();
    expect_identical_files(&l, &g_reader);
}

/* The follower becomes a writer: SQLite's own writer continues the log wal/ wrote, both after a
 * fresh start and after a restart (it must take the chain from aFrameCksum and the salts). */
static void test_wal_append_sqlite_writes_after_us(void **state)
{
    (void)state;
    struct leader l;
    leader_create(&l, 4096, 100);
    start_follower(&l, &g_reader);
    leader_open(&l);
    struct shipped s;
    leader_txn(&l, "UPDATE t SET c = 'one' WHERE a <= 10", &s);
    struct wal_append_result res;
    assert_int_equal(follower_apply(&s, 4096, 0, 0, &res), WAL_OK);
    shipped_free(&s);
    expect_same_content(&l, &g_reader);
    char expect[64];
    snprintf(expect, sizeof expect, "0 %u %u", res.mx_frame, res.mx_frame);
    assert_string_equal(reader_cmd(&g_reader, "ckpt %d", SQLITE_CHECKPOINT_PASSIVE), expect);
    leader_txn(&l, "INSERT INTO t(b, c) VALUES(randomblob(3000), 'two')", &s);
    assert_int_equal(follower_apply(&s, 4096, 1, 0, &res), WAL_OK);
    assert_int_equal(res.restarted, 1);
    shipped_free(&s);
    expect_same_content(&l, &g_reader);

    reader_ok(&g_reader, "x INSERT INTO t(b, c) VALUES(randomblob(5000), 'local')");
    reader_ok(&g_reader, "x UPDATE t SET c = 'local2' WHERE a = 1");
    assert_int_equal(reader_int(&g_reader, "SELECT count(*) FROM t"), 102);
    assert_string_equal(reader_cmd(&g_reader, "q PRAGMA integrity_check"), "ok");
    follower_walcheck();
    struct wal_index_hdr h;
    struct wal_ckpt_info ci;
    follower_index(&h, &ci);
    assert_true(h.mx_frame > res.mx_frame);
    /* SQLite's recovery accepts the whole chain: our frames, then its own. */
    assert_int_equal(recover_copy(h.mx_frame, 4096), 102);
    assert_int_equal(recover_copy(res.mx_frame, 4096), 101);
    assert_string_equal(reader_cmd(&g_reader, "ckpt %d", SQLITE_CHECKPOINT_TRUNCATE), "0 0 0");
    assert_int_equal(reader_int(&g_reader, "SELECT count(*) FROM t WHERE c LIKE 'local%'"), 2);
    reader_ok(&g_reader, "close");
    assert_int_equal(sqlite3_close(l.db), SQLITE_OK);
}

int main(void)
{
    srandom(1234);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_wal_append_live_reader_keeps_snapshot, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_wal_append_restarts_checkpointed_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wal_append_second_hash_block, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wal_append_page_size_65536, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wal_append_sqlite_writes_after_us, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
