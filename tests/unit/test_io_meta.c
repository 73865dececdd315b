/*
 * Metadata in two alternating slots: round trip, torn or corrupt newer slot falls back to the
 * older one, both slots bad is an error (never a silent reset), failed writes keep the old copy.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "consensus/io/meta.h"
#include "consensus/io/sys.h"

struct fx {
    char dir[256];
    char path[300];
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    const char *tmp = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
    snprintf(f->dir, sizeof f->dir, "%s/walraft-meta-XXXXXX", tmp);
    if (mkdtemp(f->dir) == NULL) {
        return -1;
    }
    snprintf(f->path, sizeof f->path, "%s/metadata", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    char tmp[320];
    io_sys_restore();
    snprintf(tmp, sizeof tmp, "%s.tmp", f->path);
    unlink(tmp);
    unlink(f->path);
    rmdir(f->dir);
    free(f);
    return 0;
}

static struct io_meta meta_for(uint64_t term)
{
    return (struct io_meta){.term = term,
                            .voted_for = term % 3,
                            .node_id = 2,
                            .cluster_id = 0xc0ffee,
                            .applied_floor = term * 10,
                            .snapshot_index = term * 5,
                            .snapshot_term = term - 1};
}

static void assert_meta_equal(const struct io_meta *a, const struct io_meta *b)
{
    assert_int_equal(a->term, b->term);
    assert_int_equal(a->voted_for, b->voted_for);
    assert_int_equal(a->node_id, b->node_id);
    assert_int_equal(a->cluster_id, b->cluster_id);
    assert_int_equal(a->applied_floor, b->applied_floor);
    assert_int_equal(a->snapshot_index, b->snapshot_index);
    assert_int_equal(a->snapshot_term, b->snapshot_term);
}

static void open_ok(struct io_meta_file *mf, const char *path, struct io_meta *m, int *created)
{
    int rc = io_meta_open(mf, path, m, created);
    if (rc != 0) {
        fail_msg("open: %s: %s", io_log_strerror(rc), io_meta_errmsg(mf));
    }
}

/* Writes terms 1..n and closes. Term n sits in slot (n % 2 == 0 ? 1 : 0) after creation wrote
 * slot 0 with sequence 1: writes alternate 1, 0, 1, ... */
static void write_terms(const char *path, uint64_t n)
{
    struct io_meta_file mf;
    struct io_meta m;
    open_ok(&mf, path, &m, NULL);
    for (uint64_t t = 1; t <= n; t++) {
        struct io_meta w = meta_for(t);
        assert_int_equal(io_meta_store(&mf, &w), 0);
    }
    io_meta_close(&mf);
}

static int newest_slot(uint64_t n)
{
    return n % 2 == 1 ? 1 : 0;
}

static void corrupt(const char *path, off_t off)
{
    int fd = open(path, O_RDWR);
    unsigned char b;
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &b, 1, off), 1);
    b ^= 0x04;
    assert_int_equal(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

static void test_io_meta_round_trip_and_created_flag(void **state)
{
    struct fx *f = *state;
    struct io_meta_file mf;
    struct io_meta m, zero = {0};
    int created = -1;

    open_ok(&mf, f->path, &m, &created);
    assert_int_equal(created, 1);
    assert_meta_equal(&m, &zero);
    io_meta_close(&mf);
    open_ok(&mf, f->path, &m, &created);
    assert_int_equal(created, 0);
    assert_meta_equal(&m, &zero);
    io_meta_close(&mf);

    write_terms(f->path, 9);
    open_ok(&mf, f->path, &m, &created);
    struct io_meta want = meta_for(9);
    assert_meta_equal(&m, &want);
    /* Writing after a reopen continues the alternation from the newest slot. */
    want = meta_for(10);
    assert_int_equal(io_meta_store(&mf, &want), 0);
    io_meta_close(&mf);
    open_ok(&mf, f->path, &m, NULL);
    assert_meta_equal(&m, &want);
    io_meta_close(&mf);
    struct stat st;
    assert_int_equal(stat(f->path, &st), 0);
    assert_int_equal(st.st_size, 2 * IO_SLOT_BYTES);
}

static void test_io_meta_corrupt_newer_slot_falls_back_to_older(void **state)
{
    struct fx *f = *state;
    for (uint64_t n = 4; n <= 5; n++) { /* newest in slot 0, then in slot 1 */
        struct io_meta_file mf;
        struct io_meta m;
        unlink(f->path);
        write_terms(f->path, n);
        int slot = newest_slot(n);
        off_t spots[] = {0, 8, 30, IO_SLOT_BYTES - 1};
        for (size_t k = 0; k < sizeof spots / sizeof spots[0]; k++) {
            corrupt(f->path, slot * IO_SLOT_BYTES + spots[k]);
            open_ok(&mf, f->path, &m, NULL);
            struct io_meta want = meta_for(n - 1);
            assert_meta_equal(&m, &want);
            io_meta_close(&mf);
            corrupt(f->path, slot * IO_SLOT_BYTES + spots[k]); /* repair */
            open_ok(&mf, f->path, &m, NULL);
            want = meta_for(n);
            assert_meta_equal(&m, &want);
            io_meta_close(&mf);
        }
    }
}

static void test_io_meta_torn_write_of_either_slot_keeps_older(void **state)
{
    struct fx *f = *state;
    struct io_meta_file mf;
    struct io_meta m;

    /* Newest in slot 1: cut it short anywhere. */
    write_terms(f->path, 5);
    for (off_t cut = IO_SLOT_BYTES; cut < 2 * IO_SLOT_BYTES; cut += 37) {
        assert_int_equal(truncate(f->path, cut), 0);
        open_ok(&mf, f->path, &m, NULL);
        struct io_meta want = meta_for(4);
        assert_meta_equal(&m, &want);
        /* The next write goes to the torn slot, never over the surviving one. */
        want = meta_for(6);
        assert_int_equal(io_meta_store(&mf, &want), 0);
        io_meta_close(&mf);
        open_ok(&mf, f->path, &m, NULL);
        assert_meta_equal(&m, &want);
        io_meta_close(&mf);
        unlink(f->path);
        write_terms(f->path, 5);
    }
    /* Newest in slot 0: a torn write there (zeros half way, as a lost sector). */
    unlink(f->path);
    write_terms(f->path, 6);
    int fd = open(f->path, O_RDWR);
    unsigned char zeros[256] = {0};
    assert_int_equal(pwrite(fd, zeros, sizeof zeros, 256), (ssize_t)sizeof zeros);
    close(fd);
    open_ok(&mf, f->path, &m, NULL);
    struct io_meta want = meta_for(5);
    assert_meta_equal(&m, &want);
    io_meta_close(&mf);
}

static void test_io_meta_both_slots_bad_is_an_error(void **state)
{
    struct fx *f = *state;
    struct io_meta_file mf;
    struct io_meta m;

    write_terms(f->path, 3);
    corrupt(f->path, 20);
    corrupt(f->path, IO_SLOT_BYTES + 20);
    assert_int_equal(io_meta_open(&mf, f->path, &m, NULL), IO_LOG_ECORRUPT);
    assert_non_null(strstr(io_meta_errmsg(&mf), f->path));
    assert_non_null(strstr(io_meta_errmsg(&mf), "offset 512"));
    /* A short non-empty file is no fresh start either. */
    assert_int_equal(truncate(f->path, 100), 0);
    assert_int_equal(io_meta_open(&mf, f->path, &m, NULL), IO_LOG_ECORRUPT);
    /* Nor is an empty one that exists. */
    assert_int_equal(truncate(f->path, 0), 0);
    assert_int_equal(io_meta_open(&mf, f->path, &m, NULL), IO_LOG_ECORRUPT);
}

static int fail_writes;

static ssize_t enospc_pwrite(int fd, const void *buf, size_t len, off_t off)
{
    if (fail_writes) {
        /* Half the slot lands, then the disk is full. */
        if (len > 100) {
            return pwrite(fd, buf, 100, off);
        }
        errno = ENOSPC;
        return -1;
    }
    return pwrite(fd, buf, len, off);
}

static int fail_syncs;

static int eio_fdatasync(int fd)
{
    if (fail_syncs) {
        errno = EIO;
        return -1;
    }
    return fdatasync(fd);
}

static void test_io_meta_failed_write_keeps_previous_copy(void **state)
{
    struct fx *f = *state;
    struct io_meta_file mf;
    struct io_meta m;

    write_terms(f->path, 2);
    open_ok(&mf, f->path, &m, NULL);
    io_sys.pwrite = enospc_pwrite;
    io_sys.fdatasync = eio_fdatasync;
    for (int k = 0; k < 3; k++) {
        struct io_meta w = meta_for(3 + (uint64_t)k);
        fail_writes = 1;
        assert_int_equal(io_meta_store(&mf, &w), IO_LOG_ENOSPC);
        fail_writes = 0;
        fail_syncs = 1;
        assert_int_equal(io_meta_store(&mf, &w), IO_LOG_EIO);
        fail_syncs = 0;
    }
    io_meta_close(&mf);
    /* The torn slot is the one that was being written; term 2 survives. */
    open_ok(&mf, f->path, &m, NULL);
    assert_true(m.term == 2 || m.term == 5);
    struct io_meta w = meta_for(7);
    assert_int_equal(io_meta_store(&mf, &w), 0);
    io_meta_close(&mf);
    open_ok(&mf, f->path, &m, NULL);
    assert_meta_equal(&m, &w);
    io_meta_close(&mf);

    /* Loading syncs what it read: a copy whose fdatasync failed may still be in the page cache,
     * and a node acting on it must find it on disk after a power cut. */
    fail_syncs = 1;
    assert_int_equal(io_meta_open(&mf, f->path, &m, NULL), IO_LOG_EIO);
    fail_syncs = 0;

    /* A create that cannot write leaves no file behind. */
    unlink(f->path);
    fail_writes = 1;
    assert_int_equal(io_meta_open(&mf, f->path, &m, NULL), IO_LOG_ENOSPC);
    fail_writes = 0;
    assert_int_equal(access(f->path, F_OK), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_io_meta_round_trip_and_created_flag, setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_meta_corrupt_newer_slot_falls_back_to_older, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_io_meta_torn_write_of_either_slot_keeps_older, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_io_meta_both_slots_bad_is_an_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_meta_failed_write_keeps_previous_copy, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
