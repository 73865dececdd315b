/* The WAL codec against WAL files the system SQLite writes: frame counts, commit boundaries, the
 * committed prefix and page images; both checksum byte orders; corrupt and truncated images. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tests/unit/helpers/wal_testutil.h"
#include "wal/wal.h"

/* The current test's temporary directory; the teardown removes it even when the test fails. */
static char g_dir[64];

static int remove_tmpdir(void **state)
{
    (void)state;
    if (g_dir[0] != 0) {
        wt_rmrf(g_dir);
        g_dir[0] = 0;
    }
    return 0;
}

/* Frames collected by a scan. */
struct frames {
    uint32_t n;
    uint32_t cap;
    uint32_t *pgno;
    uint32_t *commit;
    const uint8_t **page;
};

static int collect(void *arg, uint32_t frame, const struct wal_frame_hdr *fh, const uint8_t *page)
{
    struct frames *f = arg;
    assert_int_equal(frame, f->n + 1);
    if (f->n == f->cap) {
        f->cap = f->cap ? 2 * f->cap : 64;
        f->pgno = realloc(f->pgno, f->cap * sizeof *f->pgno);
        f->commit = realloc(f->commit, f->cap * sizeof *f->commit);
        f->page = realloc(f->page, f->cap * sizeof *f->page);
    }
    f->pgno[f->n] = fh->pgno;
    f->commit[f->n] = fh->commit;
    f->page[f->n] = page;
    f->n++;
    return 0;
}

static void frames_free(struct frames *f)
{
    free(f->pgno);
    free(f->commit);
    free(f->page);
    memset(f, 0, sizeof *f);
}

/* Writes a WAL database with SQLite: `ntx` small transactions, one big transaction that spills
 * (cache_size is tiny) and commits, then a big one that spills and rolls back. The connection
 * stays open (so the -wal stays) and is returned in *dbp. */
static void write_sqlite_wal(const char *path, int page_size, sqlite3 **dbp, int *n_commits)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char sql[256];
    snprintf(sql, sizeof sql, "PRAGMA page_size=%d", page_size);
    wt_exec(db, sql);
    wt_exec(db, "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; PRAGMA cache_size=10;"
                "PRAGMA synchronous=NORMAL;");
    assert_int_equal(wt_query_int(db, "PRAGMA page_size"), page_size);
    int commits = 0;
    wt_exec(db, "CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB)");
    commits++;
    for (int i = 0; i < 5; i++) {
        wt_exec(db, "INSERT INTO t(b) VALUES(randomblob(100))");
        commits++;
    }
    /* Enough pages to spill a 10-page cache at every page size. */
    int big = page_size >= 65536 ? 40 : 400;
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<%d) "
             "INSERT INTO t(b) SELECT randomblob(%d) FROM c",
             big, page_size / 2);
    wt_exec(db, "BEGIN");
    wt_exec(db, sql);
    wt_exec(db, "UPDATE t SET b = randomblob(50) WHERE a <= 6");
    wt_exec(db, "COMMIT");
    commits++;
    wt_exec(db, "DELETE FROM t WHERE a % 3 = 0");
    commits++;
    /* Spills frames past the last commit, then rolls back: a valid but uncommitted tail. */
    wt_exec(db, "BEGIN");
    wt_exec(db, sql);
    wt_exec(db, "ROLLBACK");
    *dbp = db;
    *n_commits = commits;
}

static void check_sqlite_wal(int page_size)
{
    const char *dir = g_dir;
    wt_tmpdir(g_dir, sizeof g_dir);
    char path[128], walp[140], copy[128], copywal[140];
    snprintf(path, sizeof path, "%s/a.db", dir);
    snprintf(walp, sizeof walp, "%s/a.db-wal", dir);
    snprintf(copy, sizeof copy, "%s/copy.db", dir);
    snprintf(copywal, sizeof copywal, "%s/copy.db-wal", dir);

    sqlite3 *db;
    int commits;
    write_sqlite_wal(path, page_size, &db, &commits);
    int64_t page_count = wt_query_int(db, "PRAGMA page_count");

    size_t len;
    uint8_t *wal = wt_read_file(walp, &len);
    assert_non_null(wal);
    struct wal_scan scan;
    struct frames f = {0};
    assert_int_equal(wal_scan_image(wal, len, &scan, collect, &f), WAL_OK);
    assert_int_equal(scan.hdr.page_size, (uint32_t)page_size);
    assert_int_equal(scan.hdr.magic, WAL_MAGIC_LE); /* SQLite writes native order; x86 is LE */
    assert_int_equal(scan.n_commits, (uint32_t)commits);
    assert_int_equal(scan.n_page, (uint32_t)page_count);
    assert_true(scan.n_valid > scan.mx_frame); /* the rolled-back spill */
    assert_int_equal(f.n, scan.n_valid);
    assert_int_not_equal(f.commit[scan.mx_frame - 1], 0);
    for (uint32_t i = scan.mx_frame; i < scan.n_valid; i++) {
        assert_int_equal(f.commit[i], 0);
    }
    uint32_t counted = 0;
    for (uint32_t i = 0; i < scan.mx_frame; i++) {
        counted += f.commit[i] != 0;
    }
    assert_int_equal(counted, (uint32_t)commits);

    /* SQLite's own count of frames in the log (mxFrame) agrees. */
    int log_frames = -1, ckpt_frames = -1;
    assert_int_equal(
        sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log_frames, &ckpt_frames),
        SQLITE_OK);
    assert_int_equal((uint32_t)log_frames, scan.mx_frame);

    /* The newest image of each page up to mxFrame equals the page SQLite checkpoints into a copy.
     */
    wt_copy_file(path, copy);
    wt_write_file(copywal, wal, len);
    sqlite3 *cdb;
    assert_int_equal(sqlite3_open(copy, &cdb), SQLITE_OK);
    assert_int_equal(sqlite3_wal_checkpoint_v2(cdb, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(wt_query_int(cdb, "SELECT count(*) FROM t") > 0, 1);
    sqlite3_close(cdb);
    size_t dblen;
    uint8_t *dbfile = wt_read_file(copy, &dblen);
    assert_non_null(dbfile);
    assert_int_equal(dblen, (size_t)scan.n_page * (size_t)page_size);
    uint32_t checked = 0;
    for (uint32_t i = 0; i < scan.mx_frame; i++) {
        int newest = 1;
        for (uint32_t j = i + 1; j < scan.mx_frame; j++) {
            if (f.pgno[j] == f.pgno[i]) {
                newest = 0;
                break;
            }
        }
        if (!newest || f.pgno[i] > scan.n_page) {
            continue;
        }
        assert_memory_equal(f.page[i], dbfile + (size_t)(f.pgno[i] - 1) * (size_t)page_size,
                            (size_t)page_size);
        checked++;
    }
    assert_true(checked > 3);
    printf("page size %d: %u valid frames, mxFrame %u, %u commits, %u pages compared\n", page_size,
           scan.n_valid, scan.mx_frame, scan.n_commits, checked);

    free(dbfile);
    frames_free(&f);
    free(wal);
    sqlite3_close(db);
    wt_rmrf(dir);
    g_dir[0] = 0;
}

static void test_wal_decode_sqlite_512(void **state)
{
    (void)state;
    check_sqlite_wal(512);
}

static void test_wal_decode_sqlite_4096(void **state)
{
    (void)state;
    check_sqlite_wal(4096);
}

static void test_wal_decode_sqlite_65536(void **state)
{
    (void)state;
    check_sqlite_wal(65536);
}

/* Builds a WAL image of n frames in the given checksum order; commit on frames listed. */
static uint8_t *build_wal(int big_endian, uint32_t page_size, uint32_t n, size_t *len)
{
    *len = wal_frame_offset(page_size, n + 1);
    uint8_t *w = calloc(1, *len);
    struct wal_hdr h;
    wal_hdr_build(&h, big_endian, page_size, 7, 0x11223344u, 0xdeadbeefu, w);
    struct wal_chain c;
    wal_chain_init(&c, &h);
    for (uint32_t i = 1; i <= n; i++) {
        uint8_t *fr = w + wal_frame_offset(page_size, i);
        for (uint32_t k = 0; k < page_size; k++) {
            fr[WAL_FRAME_HDR_SIZE + k] = (uint8_t)(i * 31 + k * 7);
        }
        wal_frame_encode(&c, i, i % 3 == 0 ? i : 0, fr + WAL_FRAME_HDR_SIZE, fr);
    }
    return w;
}

static void test_wal_both_checksum_orders(void **state)
{
    (void)state;
    for (int be = 0; be <= 1; be++) {
        size_t len;
        uint8_t *w = build_wal(be, 1024, 10, &len);
        struct wal_scan s;
        assert_int_equal(wal_scan_image(w, len, &s, NULL, NULL), WAL_OK);
        assert_int_equal(s.hdr.magic, be ? WAL_MAGIC_BE : WAL_MAGIC_LE);
        assert_int_equal(s.hdr.ckpt_seq, 7);
        assert_int_equal(s.n_valid, 10);
        assert_int_equal(s.mx_frame, 9);
        assert_int_equal(s.n_commits, 3);
        assert_int_equal(s.n_page, 9);
        /* The same bytes read in the other order: the header checksum fails. */
        w[3] ^= 1;
        assert_int_equal(wal_scan_image(w, len, &s, NULL, NULL), WAL_ECHECKSUM);
        /* Recompute the header checksum in the other order: now the frames fail. */
        struct wal_hdr h;
        wal_hdr_build(&h, !be, 1024, 7, 0x11223344u, 0xdeadbeefu, w);
        assert_int_equal(wal_scan_image(w, len, &s, NULL, NULL), WAL_OK);
        assert_int_equal(s.n_valid, 0);
        assert_int_equal(s.mx_frame, 0);
        free(w);
    }
    /* Known words: little-endian checksum of {1, 2} from zero is s0 = 1, s1 = 2 + 1. */
    uint8_t le[8] = {1, 0, 0, 0, 2, 0, 0, 0};
    uint32_t s[2] = {0, 0};
    wal_cksum(0, le, 8, s);
    assert_int_equal(s[0], 1);
    assert_int_equal(s[1], 3);
    s[0] = s[1] = 0;
    wal_cksum(1, le, 8, s);
    assert_int_equal(s[0], 0x01000000u);
    assert_int_equal(s[1], 0x02000000u + 0x01000000u);
}

static void test_wal_decode_rejects_salt_mismatch(void **state)
{
    (void)state;
    size_t len;
    uint8_t *w = build_wal(0, 512, 6, &len);
    uint8_t *f4 = w + wal_frame_offset(512, 4);
    f4[11] ^= 0x40; /* salt-1 of frame 4 */
    struct wal_scan s;
    assert_int_equal(wal_scan_image(w, len, &s, NULL, NULL), WAL_OK);
    assert_int_equal(s.n_valid, 3);
    assert_int_equal(s.mx_frame, 3);
    struct wal_hdr h;
    assert_int_equal(wal_hdr_decode(w, &h), WAL_OK);
    struct wal_chain c;
    wal_chain_init(&c, &h);
    struct wal_frame_hdr fh;
    for (uint32_t i = 1; i <= 3; i++) {
        uint8_t *fr = w + wal_frame_offset(512, i);
        assert_int_equal(wal_frame_decode(&c, fr, fr + 24, &fh), WAL_OK);
        assert_int_equal(fh.pgno, i);
    }
    assert_int_equal(wal_frame_decode(&c, f4, f4 + 24, &fh), WAL_ESALT);
    f4[11] ^= 0x40;
    f4[30] ^= 1; /* page byte */
    assert_int_equal(wal_frame_decode(&c, f4, f4 + 24, &fh), WAL_ECHECKSUM);
    free(w);
}

static void test_wal_decode_rejects_bad_headers(void **state)
{
    (void)state;
    uint8_t b[WAL_HDR_SIZE];
    struct wal_hdr h;
    wal_hdr_build(&h, 0, 4096, 0, 1, 2, b);
    assert_int_equal(wal_hdr_decode(b, &h), WAL_OK);
    uint32_t sizes[] = {0, 1, 256, 513, 1000, 131072, 0x80000000u, 0xffffffffu};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uint8_t c[WAL_HDR_SIZE];
        memcpy(c, b, sizeof c);
        c[8] = (uint8_t)(sizes[i] >> 24);
        c[9] = (uint8_t)(sizes[i] >> 16);
        c[10] = (uint8_t)(sizes[i] >> 8);
        c[11] = (uint8_t)sizes[i];
        assert_int_equal(wal_hdr_decode(c, &h), WAL_EPAGESIZE);
    }
    b[0] ^= 0x80;
    assert_int_equal(wal_hdr_decode(b, &h), WAL_EMAGIC);
    b[0] ^= 0x80;
    b[6] ^= 1;
    assert_int_equal(wal_hdr_decode(b, &h), WAL_EVERSION);
    b[6] ^= 1;
    b[13] ^= 1;
    assert_int_equal(wal_hdr_decode(b, &h), WAL_ECHECKSUM);
    struct wal_scan s;
    for (size_t n = 0; n < WAL_HDR_SIZE; n++) {
        assert_int_equal(wal_scan_image(b, n, &s, NULL, NULL), WAL_ETRUNCATED);
    }
    assert_int_equal(wal_scan_image(NULL, 100, &s, NULL, NULL), WAL_ETRUNCATED);
}

/* Flips bits all over a real SQLite WAL and truncates it at many lengths: the scan never fails
 * outside the header, never reads out of bounds (ASan), and the committed prefix only shrinks,
 * to before the first damaged frame. */
static void test_wal_decode_corrupt_sqlite_wal(void **state)
{
    (void)state;
    const char *dir = g_dir;
    wt_tmpdir(g_dir, sizeof g_dir);
    char path[128], walp[140];
    snprintf(path, sizeof path, "%s/a.db", dir);
    snprintf(walp, sizeof walp, "%s/a.db-wal", dir);
    sqlite3 *db;
    int commits;
    write_sqlite_wal(path, 512, &db, &commits);
    size_t len;
    uint8_t *orig = wt_read_file(walp, &len);
    sqlite3_close(db);
    struct wal_scan good;
    assert_int_equal(wal_scan_image(orig, len, &good, NULL, NULL), WAL_OK);
    const size_t fsz = 512 + WAL_FRAME_HDR_SIZE;
    size_t committed_end = WAL_HDR_SIZE + (size_t)good.mx_frame * fsz;

    uint8_t *w = malloc(len);
    unsigned flips = 0;
    for (size_t off = 0; off < committed_end; off += (off < 64 ? 1 : 53)) {
        for (int bit = 0; bit < 8; bit += (off < WAL_HDR_SIZE ? 1 : 3)) {
            memcpy(w, orig, len);
            w[off] ^= (uint8_t)(1u << bit);
            struct wal_scan s;
            int rc = wal_scan_image(w, len, &s, NULL, NULL);
            flips++;
            if (off < WAL_HDR_SIZE) {
                /* Bytes 0..23 are under the header checksum, 24..31 are the checksum. */
                assert_int_not_equal(rc, WAL_OK);
                continue;
            }
            assert_int_equal(rc, WAL_OK);
            uint32_t frame = (uint32_t)((off - WAL_HDR_SIZE) / fsz) + 1;
            /* Every byte of a frame is under its salts or its running checksum. */
            assert_true(s.n_valid < frame);
            assert_true(s.mx_frame < frame);
            assert_true(s.mx_frame <= good.mx_frame);
        }
    }
    for (size_t n = 0; n <= len; n += (n < 2000 ? 1 : 101)) {
        struct wal_scan s;
        int rc = wal_scan_image(orig, n, &s, NULL, NULL);
        if (n < WAL_HDR_SIZE) {
            assert_int_equal(rc, WAL_ETRUNCATED);
            continue;
        }
        assert_int_equal(rc, WAL_OK);
        assert_int_equal(s.n_valid, (uint32_t)((n - WAL_HDR_SIZE) / fsz < good.n_valid
                                                   ? (n - WAL_HDR_SIZE) / fsz
                                                   : good.n_valid));
        assert_true(s.mx_frame <= good.mx_frame);
        assert_true(WAL_HDR_SIZE + (size_t)s.mx_frame * fsz <= n);
    }
    printf("%u bit flips, WAL of %zu bytes, mxFrame %u\n", flips, len, good.mx_frame);
    free(w);
    free(orig);
    wt_rmrf(dir);
    g_dir[0] = 0;
}

static void test_wal_strerror_covers_every_code(void **state)
{
    (void)state;
#define CHECK_MSG(name, value, msg)                                                                \
    assert_string_equal(wal_strerror(value), msg);                                                 \
    assert_true(strlen(msg) > 0);
    WAL_ERRORS(CHECK_MSG)
#undef CHECK_MSG
    assert_string_equal(wal_strerror(12345), "unknown wal error");
    assert_string_equal(wal_strerror(WAL_OK), "success");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_wal_decode_sqlite_512, remove_tmpdir),
        cmocka_unit_test_teardown(test_wal_decode_sqlite_4096, remove_tmpdir),
        cmocka_unit_test_teardown(test_wal_decode_sqlite_65536, remove_tmpdir),
        cmocka_unit_test_teardown(test_wal_both_checksum_orders, remove_tmpdir),
        cmocka_unit_test_teardown(test_wal_decode_rejects_salt_mismatch, remove_tmpdir),
        cmocka_unit_test_teardown(test_wal_decode_rejects_bad_headers, remove_tmpdir),
        cmocka_unit_test_teardown(test_wal_decode_corrupt_sqlite_wal, remove_tmpdir),
        cmocka_unit_test_teardown(test_wal_strerror_covers_every_code, remove_tmpdir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
