/* The wal-index over non-contiguous regions: header read/publish, hash append and lookup across
 * blocks, cleanup above a rolled-back mxFrame, restart; checked against a reference model, against
 * walcheck.py, and against wal-index files the system SQLite writes. */
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

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

/* A fresh index, as SQLite's recovery leaves it for an empty WAL. */
static void init_index(struct wt_mem_shm *m, struct wal_shm *shm)
{
    memset(m, 0, sizeof *m);
    shm->ctx = m;
    shm->map = wt_mem_map;
    struct wal_index_hdr h;
    memset(&h, 0, sizeof h);
    assert_int_equal(wal_index_hdr_publish(shm, &h), WAL_OK);
    uint32_t *ck = (uint32_t *)(m->region[0] + 96);
    for (uint32_t i = 0; i < WAL_NREADER; i++) {
        ck[1 + i] = i == 0 ? 0 : WAL_READMARK_UNUSED;
    }
}

/* Reference lookup: newest frame in [lo, mx] holding pgno, from the frame->page array. */
static uint32_t ref_lookup(const uint32_t *pg, uint32_t pgno, uint32_t lo, uint32_t mx)
{
    for (uint32_t f = mx; f >= lo && f >= 1; f--) {
        if (pg[f] == pgno) {
            return f;
        }
    }
    return 0;
}

static void check_all_lookups(const struct wal_shm *shm, const uint32_t *pg, uint32_t max_pgno,
                              uint32_t lo, uint32_t mx)
{
    /* newest[p] for frames <= mx, computed in one pass. */
    uint32_t *newest = calloc(max_pgno + 2, sizeof *newest);
    for (uint32_t f = lo ? lo : 1; f <= mx; f++) {
        newest[pg[f]] = f;
    }
    for (uint32_t p = 1; p <= max_pgno + 1; p++) {
        uint32_t got;
        assert_int_equal(wal_index_lookup(shm, p, lo, mx, &got), WAL_OK);
        if (got != newest[p]) {
            fail_msg("page %u, frames %u..%u: index says %u, newest is %u", p, lo, mx, got,
                     newest[p]);
        }
    }
    free(newest);
}

static void test_wal_index_hdr_publish_and_read(void **state)
{
    (void)state;
    struct wt_mem_shm m;
    struct wal_shm shm;
    init_index(&m, &shm);
    struct wal_index_hdr h, r;
    assert_int_equal(wal_index_hdr_read(&shm, &h), WAL_OK);
    uint32_t change = h.change;
    h.mx_frame = 12;
    h.n_page = 7;
    h.page_size = 1; /* 65536 */
    assert_int_equal(wal_index_page_size(&h), 65536);
    assert_int_equal(wal_index_hdr_publish(&shm, &h), WAL_OK);
    assert_int_equal(h.change, change + 1);
    assert_int_equal(wal_index_hdr_read(&shm, &r), WAL_OK);
    assert_memory_equal(&r, &h, sizeof h);
    assert_memory_equal(m.region[0], m.region[0] + 48, 48);

    /* Copies that differ (a writer in the middle of publishing). */
    m.region[0][48 + 16] ^= 1;
    assert_int_equal(wal_index_hdr_read(&shm, &r), WAL_EINDEX_HDR);
    m.region[0][48 + 16] ^= 1;
    /* Both copies equal, checksum wrong. */
    m.region[0][20] ^= 4;
    m.region[0][48 + 20] ^= 4;
    assert_int_equal(wal_index_hdr_read(&shm, &r), WAL_EINDEX_HDR);
    m.region[0][20] ^= 4;
    m.region[0][48 + 20] ^= 4;
    assert_int_equal(wal_index_hdr_read(&shm, &r), WAL_OK);
    /* Never initialised (all zeros: the checksum of zeros is zero, isInit tells). */
    memset(m.region[0], 0, 96);
    assert_int_equal(wal_index_hdr_read(&shm, &r), WAL_EINDEX_HDR);
    /* No region 0 at all. */
    struct wt_mem_shm empty;
    memset(&empty, 0, sizeof empty);
    struct wal_shm eshm = {&empty, wt_mem_map};
    assert_int_equal(wal_index_hdr_read(&eshm, &r), WAL_EMAP);
    wt_mem_free(&m);
}

static void test_wal_index_lookup_across_blocks(void **state)
{
    (void)state;
    struct wt_mem_shm m;
    struct wal_shm shm;
    init_index(&m, &shm);
    const uint32_t n = 4062 + 4096 + 1500; /* into the third block */
    const uint32_t max_pgno = 3000;
    uint32_t *pg = calloc(n + 1, sizeof *pg);
    for (uint32_t f = 1; f <= n; f++) {
        pg[f] = 1 + rnd() % max_pgno;
        unsigned before = m.maps;
        assert_int_equal(wal_index_append(&shm, f, pg[f]), WAL_OK);
        assert_true(m.maps - before <= 2); /* O(1) per frame */
    }
    assert_non_null(m.region[2]);
    assert_null(m.region[3]);
    uint32_t mxs[] = {1, 2, 100, 4061, 4062, 4063, 4064, 5000, 8157, 8158, 8159, n};
    for (size_t i = 0; i < sizeof mxs / sizeof mxs[0]; i++) {
        check_all_lookups(&shm, pg, max_pgno, 1, mxs[i]);
    }
    /* A lower bound (a reader that skips checkpointed frames). */
    check_all_lookups(&shm, pg, max_pgno, 5000, n);
    check_all_lookups(&shm, pg, max_pgno, 4063, 8000);
    uint32_t got;
    assert_int_equal(wal_index_lookup(&shm, 5, 10, 9, &got), WAL_OK);
    assert_int_equal(got, 0);
    assert_int_equal(wal_index_append(&shm, 0, 1), WAL_EINVAL);
    assert_int_equal(wal_index_append(&shm, 1, 0), WAL_EINVAL);
    free(pg);
    wt_mem_free(&m);
}

static void test_wal_index_cleanup_then_reappend(void **state)
{
    (void)state;
    struct wt_mem_shm m;
    struct wal_shm shm;
    init_index(&m, &shm);
    const uint32_t n = 6000, max_pgno = 700;
    uint32_t *pg = calloc(n + 1, sizeof *pg);
    for (uint32_t f = 1; f <= n; f++) {
        pg[f] = 1 + rnd() % max_pgno;
        assert_int_equal(wal_index_append(&shm, f, pg[f]), WAL_OK);
    }
    /* Roll back to 4500 (block 1), then to 3000 (block 0; block 1 keeps stale entries that the
     * first frame of block 1 zeroes again). */
    uint32_t cuts[] = {4500, 3000, 1};
    for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
        uint32_t cut = cuts[c];
        assert_int_equal(wal_index_cleanup(&shm, cut), WAL_OK);
        check_all_lookups(&shm, pg, max_pgno, 1, cut);
        /* Nothing above the cut is found even by a reader with a larger mxFrame in the block. */
        uint32_t block_end = cut <= 4062 ? 4062 : 8158;
        for (uint32_t p = 1; p <= max_pgno; p++) {
            uint32_t got;
            assert_int_equal(wal_index_lookup(&shm, p, 1, block_end, &got), WAL_OK);
            assert_int_equal(got, ref_lookup(pg, p, 1, cut));
        }
        for (uint32_t f = cut + 1; f <= n; f++) {
            pg[f] = 1 + rnd() % (max_pgno + 50);
            assert_int_equal(wal_index_append(&shm, f, pg[f]), WAL_OK);
        }
        check_all_lookups(&shm, pg, max_pgno + 50, 1, n);
        check_all_lookups(&shm, pg, max_pgno + 50, 1, cut + 1);
    }
    /* Without an explicit cleanup: re-appending frame 51 over stale entries 51..100 clears them. */
    struct wt_mem_shm m2;
    struct wal_shm shm2;
    init_index(&m2, &shm2);
    for (uint32_t f = 1; f <= 100; f++) {
        pg[f] = f; /* distinct pages */
        assert_int_equal(wal_index_append(&shm2, f, pg[f]), WAL_OK);
    }
    for (uint32_t f = 51; f <= 60; f++) {
        pg[f] = 1000 + f;
        assert_int_equal(wal_index_append(&shm2, f, pg[f]), WAL_OK);
    }
    uint32_t got;
    assert_int_equal(wal_index_lookup(&shm2, 70, 1, 4062, &got), WAL_OK);
    assert_int_equal(got, 0); /* stale frame 70 is gone */
    check_all_lookups(&shm2, pg, 1100, 1, 60);
    free(pg);
    wt_mem_free(&m);
    wt_mem_free(&m2);
}

/* --- appender over a file WAL and a memory index, checked by walcheck.py ---------------------- */

struct failing_io {
    int fd;
    int fail_at; /* fail the write call with this number (1-based), 0 = never */
    int calls;
    int reads;
};

static int failing_write(void *ctx, const void *buf, size_t n, uint64_t off)
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
    f->reads++;
    return wt_fd_read(&f->fd, buf, n, off);
}

/* A transaction of n random pages among 1..max_pgno, page images derived from (txn, pgno). */
static struct wal_page *make_txn(uint32_t page_size, uint32_t n, uint32_t max_pgno, uint32_t tag,
                                 uint8_t **store)
{
    struct wal_page *p = calloc(n, sizeof *p);
    *store = malloc((size_t)n * page_size);
    uint8_t *seen = calloc(max_pgno + 1, 1);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t pgno;
        do {
            pgno = 1 + rnd() % max_pgno;
        } while (seen[pgno]);
        seen[pgno] = 1;
        p[i].pgno = pgno;
        uint8_t *d = *store + (size_t)i * page_size;
        for (uint32_t k = 0; k < page_size; k++) {
            d[k] = (uint8_t)(pgno * 13 + tag * 7 + k);
        }
        p[i].data = d;
    }
    free(seen);
    return p;
}

static int check_frame(void *arg, uint32_t frame, const struct wal_frame_hdr *fh,
                       const uint8_t *page)
{
    uint32_t *pg = arg;
    (void)page;
    return pg[frame] == fh->pgno ? 0 : 1;
}

/* A caller's write() may only gather the bytes; its flush() completes them before the index
 * header is published. A flush that fails publishes nothing, as a failed write does. */
static int flush_calls, flush_fails;

static int counting_flush(void *ctx)
{
    (void)ctx;
    flush_calls++;
    return flush_fails;
}

static void test_wal_index_appender_flushes_before_publishing(void **state)
{
    (void)state;
    wt_tmpdir(g_dir, sizeof g_dir);
    char walp[128];
    snprintf(walp, sizeof walp, "%s/x.db-wal", g_dir);
    struct failing_io fio = {open(walp, O_RDWR | O_CREAT | O_TRUNC, 0644), 0, 0, 0};
    assert_true(fio.fd >= 0);
    struct wal_io io = {&fio, failing_write, fio_read, counting_flush};
    struct wt_mem_shm m;
    struct wal_shm shm;
    init_index(&m, &shm);
    uint8_t *store;
    struct wal_page *pages = make_txn(512, 5, 50, 1, &store);
    struct wal_txn txn = {512, 50, pages, 5, 0, {0x1234, 0x5678}};
    struct wal_index_hdr before, after;
    assert_int_equal(wal_index_hdr_read(&shm, &before), WAL_OK);
    flush_calls = 0;
    flush_fails = 1;
    assert_int_equal(wal_append_txn(&shm, &io, &txn, NULL), WAL_EIO);
    assert_int_equal(flush_calls, 1);
    assert_int_equal(wal_index_hdr_read(&shm, &after), WAL_OK);
    assert_memory_equal(&before, &after, sizeof before);
    flush_fails = 0;
    struct wal_append_result res;
    assert_int_equal(wal_append_txn(&shm, &io, &txn, &res), WAL_OK);
    assert_int_equal(flush_calls, 2);
    assert_int_equal(res.mx_frame, 5);
    assert_int_equal(wal_index_hdr_read(&shm, &after), WAL_OK);
    assert_int_equal(after.mx_frame, 5);
    close(fio.fd);
    free(pages);
    free(store);
    wt_mem_free(&m);
}

static void test_wal_index_appender_walcheck(void **state)
{
    (void)state;
    const char *dir = g_dir;
    wt_tmpdir(g_dir, sizeof g_dir);
    char walp[128], shmp[128];
    snprintf(walp, sizeof walp, "%s/x.db-wal", dir);
    snprintf(shmp, sizeof shmp, "%s/x.db-shm", dir);
    struct failing_io fio = {open(walp, O_RDWR | O_CREAT | O_TRUNC, 0644), 0, 0, 0};
    assert_true(fio.fd >= 0);
    struct wal_io io = {&fio, failing_write, fio_read, NULL};
    struct wt_mem_shm m;
    struct wal_shm shm;
    init_index(&m, &shm);

    const uint32_t page_size = 512, max_pgno = 6000;
    uint32_t *pg = calloc(20000, sizeof *pg);
    uint32_t mx = 0;
    uint32_t sizes[] = {1, 3000, 1500, 17, 4200, 2}; /* crosses into blocks 1 and 2 */
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        uint8_t *store;
        struct wal_page *pages = make_txn(page_size, sizes[t], max_pgno, (uint32_t)t, &store);
        struct wal_txn txn = {page_size, max_pgno, pages, sizes[t], 0, {0x1234, 0x5678}};
        if (t == 2 || t == 4) {
            /* A doomed writer first: fails on the commit frame's page, after leaving index
             * entries and frames past mxFrame. */
            fio.calls = 0;
            fio.fail_at = (int)(2 * sizes[t] + (mx == 0 ? 1 : 0));
            struct wal_index_hdr before, after;
            assert_int_equal(wal_index_hdr_read(&shm, &before), WAL_OK);
            assert_int_equal(wal_append_txn(&shm, &io, &txn, NULL), WAL_EIO);
            assert_int_equal(wal_index_hdr_read(&shm, &after), WAL_OK);
            assert_memory_equal(&before, &after, sizeof before);
            fio.fail_at = 0;
            free(pages);
            free(store);
            pages = make_txn(page_size, sizes[t], max_pgno, 100 + (uint32_t)t, &store);
            txn.pages = pages;
        }
        struct wal_append_result res;
        assert_int_equal(wal_append_txn(&shm, &io, &txn, &res), WAL_OK);
        assert_int_equal(res.first_frame, mx + 1);
        for (uint32_t i = 0; i < sizes[t]; i++) {
            pg[mx + 1 + i] = pages[i].pgno;
        }
        mx += sizes[t];
        assert_int_equal(res.mx_frame, mx);
        free(pages);
        free(store);
    }
    check_all_lookups(&shm, pg, max_pgno, 1, mx);

    /* A small transaction on a WAL of thousands of frames costs O(its pages): a handful of
     * region maps, two writes per page, no reads. */
    {
        uint8_t *st2;
        struct wal_page *p2 = make_txn(page_size, 2, max_pgno, 55, &st2);
        struct wal_txn t2 = {page_size, max_pgno, p2, 2, 0, {0, 0}};
        unsigned maps = m.maps;
        fio.calls = 0;
        fio.reads = 0;
        assert_int_equal(wal_append_txn(&shm, &io, &t2, NULL), WAL_OK);
        assert_true(m.maps - maps <= 8);
        assert_int_equal(fio.calls, 4);
        assert_int_equal(fio.reads, 0);
        pg[mx + 1] = p2[0].pgno;
        pg[mx + 2] = p2[1].pgno;
        mx += 2;
        free(p2);
        free(st2);
    }
    check_all_lookups(&shm, pg, max_pgno, 1, mx);

    /* The WAL decodes to exactly what the index says. */
    size_t len;
    uint8_t *wal = wt_read_file(walp, &len);
    struct wal_scan s;
    assert_int_equal(wal_scan_image(wal, len, &s, check_frame, pg), WAL_OK);
    struct wal_index_hdr h;
    assert_int_equal(wal_index_hdr_read(&shm, &h), WAL_OK);
    assert_int_equal(s.mx_frame, mx);
    assert_int_equal(h.mx_frame, mx);
    assert_int_equal(s.n_commits, (uint32_t)(sizeof sizes / sizeof sizes[0]) + 1);
    assert_int_equal(h.n_page, max_pgno);
    assert_int_equal(h.frame_cksum[0], s.chain.cksum[0]);
    assert_int_equal(h.frame_cksum[1], s.chain.cksum[1]);
    assert_int_equal(wal_index_salt(&h, 0), 0x1234);
    assert_int_equal(wal_index_salt(&h, 1), 0x5678);
    assert_int_equal(s.hdr.salt1, 0x1234);
    free(wal);
    wt_mem_dump(&m, shmp);
    assert_int_equal(wt_walcheck(shmp, walp), 0);

    /* Restart: refused until the log is fully checkpointed. */
    uint8_t *store;
    struct wal_page *pages = make_txn(page_size, 10, max_pgno, 77, &store);
    struct wal_txn txn = {page_size, max_pgno, pages, 10, 1, {0, 0xabcdef01u}};
    assert_int_equal(wal_append_txn(&shm, &io, &txn, NULL), WAL_ENOT_CHECKPOINTED);
    uint32_t *ck = (uint32_t *)(m.region[0] + 96);
    ck[0] = mx; /* nBackfill: everything checkpointed */
    ck[2] = mx; /* a reader's old mark */
    ck[3] = 17;
    ck[8] = mx; /* nBackfillAttempted */
    struct wal_append_result res;
    assert_int_equal(wal_append_txn(&shm, &io, &txn, &res), WAL_OK);
    assert_int_equal(res.restarted, 1);
    assert_int_equal(res.first_frame, 1);
    assert_int_equal(res.mx_frame, 10);
    assert_int_equal(wal_index_hdr_read(&shm, &h), WAL_OK);
    assert_int_equal(wal_index_salt(&h, 0), 0x1235);
    assert_int_equal(wal_index_salt(&h, 1), 0xabcdef01u);
    struct wal_ckpt_info ci;
    assert_int_equal(wal_ckpt_info_read(&shm, &ci), WAL_OK);
    assert_int_equal(ci.n_backfill, 0);
    assert_int_equal(ci.n_backfill_attempted, 0);
    uint32_t marks[WAL_NREADER] = {0, 0, WAL_READMARK_UNUSED, WAL_READMARK_UNUSED,
                                   WAL_READMARK_UNUSED};
    for (uint32_t i = 0; i < WAL_NREADER; i++) {
        uint32_t v;
        assert_int_equal(wal_ckpt_read_mark(&shm, i, &v), WAL_OK);
        assert_int_equal(v, marks[i]);
        assert_int_equal(ci.read_mark[i], marks[i]);
    }
    assert_int_equal(wal_ckpt_read_mark(&shm, WAL_NREADER, &marks[0]), WAL_EINVAL);
    wal = wt_read_file(walp, &len);
    assert_int_equal(wal_scan_image(wal, len, &s, NULL, NULL), WAL_OK);
    assert_int_equal(s.hdr.ckpt_seq, 1);
    assert_int_equal(s.hdr.salt1, 0x1235);
    assert_int_equal(s.hdr.salt2, 0xabcdef01u);
    assert_int_equal(s.mx_frame, 10); /* old frames past 10 fail the salt test */
    assert_int_equal(s.n_valid, 10);
    free(wal);
    for (uint32_t i = 0; i < 10; i++) {
        pg[1 + i] = pages[i].pgno;
    }
    check_all_lookups(&shm, pg, max_pgno, 1, 10);
    /* Block 0 was zeroed when frame 1 was written again: exactly 10 hash slots and 10 map
     * entries remain, none of the old generation's. */
    const uint16_t *hash = (const uint16_t *)(m.region[0] + 16384);
    const uint32_t *map = (const uint32_t *)(m.region[0] + WAL_INDEX_HDR_BYTES);
    uint32_t slots = 0, entries = 0;
    for (uint32_t i = 0; i < WAL_INDEX_NSLOT; i++) {
        slots += hash[i] != 0;
    }
    for (uint32_t j = 0; j < WAL_INDEX_NPAGE_ONE; j++) {
        entries += map[j] != 0;
    }
    assert_int_equal(slots, 10);
    assert_int_equal(entries, 10);
    wt_mem_dump(&m, shmp);
    assert_int_equal(wt_walcheck(shmp, walp), 0);

    /* Wrong page size, empty transaction. */
    txn.restart = 0;
    txn.page_size = 1024;
    assert_int_equal(wal_append_txn(&shm, &io, &txn, NULL), WAL_EPAGESIZE);
    txn.page_size = 512;
    txn.n_pages = 0;
    assert_int_equal(wal_append_txn(&shm, &io, &txn, NULL), WAL_EINVAL);
    free(pages);
    free(store);
    free(pg);
    close(fio.fd);
    wt_mem_free(&m);
    wt_rmrf(dir);
    g_dir[0] = 0;
}

/* Big-endian checksums: an index whose WAL uses the other byte order is continued in that order. */
static void test_wal_index_appender_continues_big_endian_log(void **state)
{
    (void)state;
    const char *dir = g_dir;
    wt_tmpdir(g_dir, sizeof g_dir);
    char walp[128], shmp[128];
    snprintf(walp, sizeof walp, "%s/x.db-wal", dir);
    snprintf(shmp, sizeof shmp, "%s/x.db-shm", dir);
    int fd = open(walp, O_RDWR | O_CREAT | O_TRUNC, 0644);
    struct wal_io io = {&fd, wt_fd_write, wt_fd_read, NULL};
    struct wt_mem_shm m;
    struct wal_shm shm;
    init_index(&m, &shm);
    /* A one-frame big-endian log, written by hand, and its index. */
    uint8_t hdr[WAL_HDR_SIZE], fh[WAL_FRAME_HDR_SIZE], page[1024];
    memset(page, 0x5a, sizeof page);
    struct wal_hdr wh;
    wal_hdr_build(&wh, 1, 1024, 3, 99, 100, hdr);
    struct wal_chain c;
    wal_chain_init(&c, &wh);
    wal_frame_encode(&c, 1, 1, page, fh);
    assert_int_equal(pwrite(fd, hdr, sizeof hdr, 0), (ssize_t)sizeof hdr);
    assert_int_equal(pwrite(fd, fh, sizeof fh, 32), (ssize_t)sizeof fh);
    assert_int_equal(pwrite(fd, page, sizeof page, 56), (ssize_t)sizeof page);
    assert_int_equal(wal_index_append(&shm, 1, 1), WAL_OK);
    struct wal_index_hdr h;
    assert_int_equal(wal_index_hdr_read(&shm, &h), WAL_OK);
    h.big_end_cksum = 1;
    h.page_size = 1024;
    h.mx_frame = 1;
    h.n_page = 1;
    h.frame_cksum[0] = c.cksum[0];
    h.frame_cksum[1] = c.cksum[1];
    uint8_t salts[8] = {0, 0, 0, 99, 0, 0, 0, 100};
    memcpy(h.salt, salts, 8);
    assert_int_equal(wal_index_hdr_publish(&shm, &h), WAL_OK);

    uint8_t p2[1024];
    memset(p2, 0x33, sizeof p2);
    struct wal_page pages[] = {{2, p2}, {1, page}};
    struct wal_txn txn = {1024, 2, pages, 2, 0, {0, 0}};
    assert_int_equal(wal_append_txn(&shm, &io, &txn, NULL), WAL_OK);
    size_t len;
    uint8_t *wal = wt_read_file(walp, &len);
    struct wal_scan s;
    assert_int_equal(wal_scan_image(wal, len, &s, NULL, NULL), WAL_OK);
    assert_int_equal(s.hdr.magic, WAL_MAGIC_BE);
    assert_int_equal(s.mx_frame, 3);
    assert_int_equal(s.n_page, 2);
    free(wal);
    wt_mem_dump(&m, shmp);
    assert_int_equal(wt_walcheck(shmp, walp), 0);
    close(fd);
    wt_mem_free(&m);
    wt_rmrf(dir);
    g_dir[0] = 0;
}

/* A region that cannot be mapped (xShmMap failing: out of memory, disk full) stops the append
 * with WAL_EMAP before anything is published; the same transaction then goes through. */
struct flaky_shm {
    struct wt_mem_shm mem;
    uint32_t fail_region; /* map() of this region fails while set */
    int failing;
};

static int flaky_map(void *ctx, uint32_t region, int extend, volatile void **out)
{
    struct flaky_shm *f = ctx;
    if (f->failing && region == f->fail_region) {
        return 1;
    }
    return wt_mem_map(&f->mem, region, extend, out);
}

static void test_wal_index_appender_map_failure(void **state)
{
    (void)state;
    const char *dir = g_dir;
    wt_tmpdir(g_dir, sizeof g_dir);
    char walp[128], shmp[128];
    snprintf(walp, sizeof walp, "%s/x.db-wal", dir);
    snprintf(shmp, sizeof shmp, "%s/x.db-shm", dir);
    int fd = open(walp, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    struct wal_io io = {&fd, wt_fd_write, wt_fd_read, NULL};
    struct flaky_shm f;
    struct wal_shm shm;
    init_index(&f.mem, &shm);
    shm.ctx = &f;
    shm.map = flaky_map;
    f.fail_region = 1;
    f.failing = 1;

    uint8_t *store;
    struct wal_page *pages = make_txn(512, 4100, 5000, 1, &store); /* needs region 1 */
    struct wal_txn txn = {512, 5000, pages, 4100, 0, {7, 8}};
    struct wal_index_hdr before, after;
    assert_int_equal(wal_index_hdr_read(&shm, &before), WAL_OK);
    assert_int_equal(wal_append_txn(&shm, &io, &txn, NULL), WAL_EMAP);
    assert_int_equal(wal_index_hdr_read(&shm, &after), WAL_OK);
    assert_memory_equal(&before, &after, sizeof before);
    f.failing = 0;
    struct wal_append_result res;
    assert_int_equal(wal_append_txn(&shm, &io, &txn, &res), WAL_OK);
    assert_int_equal(res.first_frame, 1);
    assert_int_equal(res.mx_frame, 4100);
    wt_mem_dump(&f.mem, shmp);
    assert_int_equal(wt_walcheck(shmp, walp), 0);
    free(pages);
    free(store);
    close(fd);
    wt_mem_free(&f.mem);
    wt_rmrf(dir);
    g_dir[0] = 0;
}

/* --- against SQLite's own wal-index ----------------------------------------------------------- */

/* In a child process: write a WAL database with SQLite and exit without closing it, leaving the
 * -wal and -shm exactly as SQLite's writer left them (as after a crash). */
static void sqlite_writer_child(const char *path)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(60);
        sqlite3 *db;
        if (sqlite3_open(path, &db) != SQLITE_OK) {
            _exit(2);
        }
        wt_exec(db, "PRAGMA page_size=512; PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;"
                    "PRAGMA cache_size=20; CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB);");
        for (int i = 0; i < 30; i++) {
            wt_exec(db, "INSERT INTO t(b) VALUES(randomblob(300))");
        }
        wt_exec(db, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<3000)"
                    " INSERT INTO t(b) SELECT randomblob(400) FROM c");
        wt_exec(db, "UPDATE t SET b = randomblob(100) WHERE a % 7 = 0");
        wt_exec(db, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<2000)"
                    " INSERT INTO t(b) SELECT randomblob(400) FROM c");
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

struct newest {
    uint32_t *frame_of; /* per page, newest frame seen so far */
    uint32_t *pg;       /* per frame */
    uint32_t n;
};

static int note_frame(void *arg, uint32_t frame, const struct wal_frame_hdr *fh,
                      const uint8_t *page)
{
    struct newest *nw = arg;
    (void)page;
    nw->pg[frame] = fh->pgno;
    nw->n = frame;
    return 0;
}

static void test_wal_index_reads_sqlite_index(void **state)
{
    (void)state;
    const char *dir = g_dir;
    wt_tmpdir(g_dir, sizeof g_dir);
    char path[128], walp[140], shmp[140];
    snprintf(path, sizeof path, "%s/a.db", dir);
    snprintf(walp, sizeof walp, "%s/a.db-wal", dir);
    snprintf(shmp, sizeof shmp, "%s/a.db-shm", dir);
    sqlite_writer_child(path);

    size_t len;
    uint8_t *wal = wt_read_file(walp, &len);
    assert_non_null(wal);
    struct wal_scan s;
    struct newest nw = {NULL, calloc(len / 536 + 2, sizeof(uint32_t)), 0};
    assert_int_equal(wal_scan_image(wal, len, &s, note_frame, &nw), WAL_OK);
    assert_true(s.mx_frame > 4062 + 100); /* SQLite's index is in its second block */

    struct wt_file_shm f;
    assert_int_equal(wt_file_shm_open(&f, shmp), 0);
    struct wal_shm shm = {&f, wt_file_map};
    struct wal_index_hdr h;
    assert_int_equal(wal_index_hdr_read(&shm, &h), WAL_OK);
    assert_int_equal(h.mx_frame, s.mx_frame);
    assert_int_equal(h.n_page, s.n_page);
    assert_int_equal(wal_index_page_size(&h), 512);
    assert_int_equal(h.big_end_cksum, 0);
    assert_int_equal(h.frame_cksum[0], s.chain.cksum[0]);
    assert_int_equal(h.frame_cksum[1], s.chain.cksum[1]);
    assert_int_equal(wal_index_salt(&h, 0), s.hdr.salt1);
    assert_int_equal(wal_index_salt(&h, 1), s.hdr.salt2);
    uint32_t backfill;
    assert_int_equal(wal_ckpt_backfill(&shm, &backfill), WAL_OK);
    assert_int_equal(backfill, 0);
    uint32_t mark0;
    assert_int_equal(wal_ckpt_read_mark(&shm, 0, &mark0), WAL_OK);
    assert_int_equal(mark0, 0);
    /* Every page found at its newest frame, for the final mxFrame and for earlier ones. */
    check_all_lookups(&shm, nw.pg, s.n_page, 1, h.mx_frame);
    check_all_lookups(&shm, nw.pg, s.n_page, 1, 4062);
    check_all_lookups(&shm, nw.pg, s.n_page, 1, 4063);
    check_all_lookups(&shm, nw.pg, s.n_page, 1000, h.mx_frame - 10);

    /* Our appender continues SQLite's chain: re-append the newest images of a few pages (the
     * content does not change), then SQLite opens the database and finds it intact. */
    struct wal_page pages[3];
    uint32_t want[3] = {1, 2, s.n_page};
    for (int i = 0; i < 3; i++) {
        uint32_t fr;
        assert_int_equal(wal_index_lookup(&shm, want[i], 1, h.mx_frame, &fr), WAL_OK);
        assert_true(fr > 0);
        pages[i].pgno = want[i];
        pages[i].data = wal + wal_frame_offset(512, fr) + WAL_FRAME_HDR_SIZE;
    }
    int fd = open(walp, O_RDWR);
    struct wal_io io = {&fd, wt_fd_write, wt_fd_read, NULL};
    struct wal_txn txn = {512, s.n_page, pages, 3, 0, {0, 0}};
    struct wal_append_result res;
    assert_int_equal(wal_append_txn(&shm, &io, &txn, &res), WAL_OK);
    assert_int_equal(res.first_frame, s.mx_frame + 1);
    close(fd);
    wt_file_shm_close(&f);
    free(wal);
    free(nw.pg);
    assert_int_equal(wt_walcheck(shmp, walp), 0);

    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(wt_query_int(db, "SELECT count(*) FROM t"), 5030);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    int log_frames = 0, ckpt = 0;
    assert_int_equal(
        sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log_frames, &ckpt),
        SQLITE_OK);
    assert_int_equal((uint32_t)log_frames, res.mx_frame);
    sqlite3_close(db);
    wt_rmrf(dir);
    g_dir[0] = 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_wal_index_hdr_publish_and_read, remove_tmpdir),
        cmocka_unit_test_teardown(test_wal_index_lookup_across_blocks, remove_tmpdir),
        cmocka_unit_test_teardown(test_wal_index_cleanup_then_reappend, remove_tmpdir),
        cmocka_unit_test_teardown(test_wal_index_appender_walcheck, remove_tmpdir),
        cmocka_unit_test_teardown(test_wal_index_appender_flushes_before_publishing,
                                  remove_tmpdir),
        cmocka_unit_test_teardown(test_wal_index_appender_continues_big_endian_log, remove_tmpdir),
        cmocka_unit_test_teardown(test_wal_index_appender_map_failure, remove_tmpdir),
        cmocka_unit_test_teardown(test_wal_index_reads_sqlite_index, remove_tmpdir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
