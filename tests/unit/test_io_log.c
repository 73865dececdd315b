/*
 * The durable log: round trips across segments, the start-up scan's tail and corruption rules
 * (every cut of the last record, flipped bits), truncation both ways, snapshot reset, full-disk
 * faults injected through io_sys, and a group-commit benchmark that only prints.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "consensus/io/log.h"
#include "consensus/io/sys.h"

/* --- fixtures -------------------------------------------------------------------------------- */

struct fx {
    char dir[256];
    struct io_log log;
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    const char *tmp = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
    snprintf(f->dir, sizeof f->dir, "%s/walraft-log-XXXXXX", tmp);
    if (mkdtemp(f->dir) == NULL) {
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    io_sys_restore();
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* Deterministic payloads: half compressible text, half noise; some big. */
static size_t payload_len(uint64_t index)
{
    return (size_t)((index * 37) % 700) + (index % 7 == 0 ? 3000 : 0);
}

static void payload_fill(uint64_t index, uint64_t term, unsigned char *buf, size_t len)
{
    uint64_t x = index * 0x9e3779b97f4a7c15ull ^ term * 0xbf58476d1ce4e5b9ull ^ 1;
    for (size_t i = 0; i < len; i++) {
        if (index % 2 == 0) {
            buf[i] = (unsigned char)("replicated page image "[i % 22] + (index % 3));
        } else {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf[i] = (unsigned char)x;
        }
    }
}

/* Appends entries from..to (inclusive) with `term`, in batches of `batch`, syncing each batch. */
static void append_range(struct io_log *log, uint64_t from, uint64_t to, uint64_t term,
                         size_t batch)
{
    struct io_entry es[64];
    unsigned char *bufs[64];
    assert_true(batch <= 64);
    for (uint64_t i = from; i <= to;) {
        size_t n = 0;
        for (; n < batch && i <= to; n++, i++) {
            size_t len = payload_len(i);
            bufs[n] = malloc(len + 1);
            payload_fill(i, term, bufs[n], len);
            es[n] = (struct io_entry){
                .term = term, .index = i, .type = (uint8_t)(i % 3), .buf = bufs[n], .len = len};
        }
        int rc = io_log_append(log, es, n);
        if (rc != 0) {
            fail_msg("append: %s: %s", io_log_strerror(rc), io_log_errmsg(log));
        }
        for (size_t k = 0; k < n; k++) {
            free(bufs[k]);
        }
        rc = io_log_sync(log);
        if (rc != 0) {
            fail_msg("sync: %s: %s", io_log_strerror(rc), io_log_errmsg(log));
        }
    }
}

static int entry_matches(const struct io_entry *e, uint64_t term)
{
    size_t len = payload_len(e->index);
    if (e->len != len || e->term != term || e->type != e->index % 3) {
        return 0;
    }
    unsigned char *want = malloc(len + 1);
    payload_fill(e->index, term, want, len);
    int ok = len == 0 || memcmp(want, e->buf, len) == 0;
    free(want);
    return ok;
}

/* What the load callback saw. */
struct seen {
    uint64_t first, last, count;
    uint64_t term_split; /* entries >= term_split have term2, others term1 */
    uint64_t term1, term2;
    int bad;
};

static int on_load(void *arg, const struct io_entry *e)
{
    struct seen *s = arg;
    if (s->count == 0) {
        s->first = e->index;
    } else if (e->index != s->last + 1) {
        s->bad++;
    }
    s->last = e->index;
    s->count++;
    uint64_t term = s->term_split != 0 && e->index >= s->term_split ? s->term2 : s->term1;
    if (!entry_matches(e, term)) {
        s->bad++;
    }
    return 0;
}

static void open_ok(struct fx *f, const struct io_log_config *cfg, struct seen *s)
{
    int rc = io_log_open(&f->log, f->dir, cfg, s != NULL ? on_load : NULL, s);
    if (rc != 0) {
        fail_msg("open: %s: %s", io_log_strerror(rc), io_log_errmsg(&f->log));
    }
}

static int count_files(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, prefix, strlen(prefix)) == 0) {
            n++;
        }
    }
    closedir(d);
    return n;
}

static int count_fds(void)
{
    return count_files("/proc/self/fd", "");
}

/* The name of the first file in dir starting with prefix (by sorted name). */
static void find_file(const char *dir, const char *prefix, char *out, size_t len)
{
    struct dirent **list;
    int n = scandir(dir, &list, NULL, alphasort);
    out[0] = 0;
    for (int i = 0; i < n; i++) {
        if (out[0] == 0 && strncmp(list[i]->d_name, prefix, strlen(prefix)) == 0) {
            snprintf(out, len, "%s/%s", dir, list[i]->d_name);
        }
        free(list[i]);
    }
    free(list);
    assert_true(out[0] != 0);
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)n + 1);
    assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return buf;
}

static void spit(const char *path, const unsigned char *buf, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, len, fp), len);
    fclose(fp);
}

static off_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

/* Sends stderr to a file while the code under test logs; returns what was logged. */
static int saved_stderr = -1;
static char capture_path[300];

static void capture_begin(const struct fx *f)
{
    snprintf(capture_path, sizeof capture_path, "%s.stderr", f->dir);
    int fd = open(capture_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    fflush(stderr);
    saved_stderr = dup(2);
    dup2(fd, 2);
    close(fd);
}

static char *capture_end(void)
{
    size_t len;
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    unsigned char *buf = slurp(capture_path, &len);
    unlink(capture_path);
    buf[len] = 0;
    return (char *)buf;
}

static const struct io_log_config small_segments = {.segment_bytes_max = 16 * 1024,
                                                    .buffer_bytes = 4096};

/* --- tests ----------------------------------------------------------------------------------- */

static void test_io_log_round_trip_across_segments(void **state)
{
    struct fx *f = *state;
    struct seen s = {.term1 = 3};
    int fds = count_fds();

    open_ok(f, &small_segments, NULL);
    assert_int_equal(io_log_last_index(&f->log), 0);
    assert_int_equal(io_log_first_index(&f->log), 1);
    append_range(&f->log, 1, 1000, 3, 17);
    assert_int_equal(io_log_durable_index(&f->log), 1000);

    /* Read back before close, one of them still only in the write buffer. */
    struct io_entry one = {.term = 3, .index = 1001, .type = 1001 % 3};
    unsigned char b[4096];
    one.len = payload_len(1001);
    payload_fill(1001, 3, b, one.len);
    one.buf = b;
    assert_int_equal(io_log_append(&f->log, &one, 1), 0);
    struct io_entry got;
    assert_int_equal(io_log_get(&f->log, 1001, &got), 0);
    assert_true(entry_matches(&got, 3));
    io_log_entry_release(&got);
    assert_int_equal(io_log_sync(&f->log), 0);
    io_log_close(&f->log);
    assert_true(count_files(f->dir, "0") >= 3);
    assert_int_equal(count_files(f->dir, "open-"), 1);

    open_ok(f, &small_segments, &s);
    assert_int_equal(s.bad, 0);
    assert_int_equal(s.first, 1);
    assert_int_equal(s.last, 1001);
    assert_int_equal(s.count, 1001);
    assert_int_equal(io_log_last_index(&f->log), 1001);
    assert_int_equal(io_log_last_term(&f->log), 3);
    for (uint64_t i = 1; i <= 1001; i += 13) {
        assert_int_equal(io_log_get(&f->log, i, &got), 0);
        assert_true(entry_matches(&got, 3));
        io_log_entry_release(&got);
    }
    assert_int_equal(io_log_get(&f->log, 1002, &got), IO_LOG_ENOENT);
    /* Appending continues in the reopened open segment. */
    append_range(&f->log, 1002, 1100, 4, 64);
    io_log_close(&f->log);
    s = (struct seen){.term1 = 3, .term2 = 4, .term_split = 1002};
    open_ok(f, &small_segments, &s);
    assert_int_equal(s.bad, 0);
    assert_int_equal(s.count, 1100);
    assert_int_equal(io_log_last_term(&f->log), 4);
    io_log_close(&f->log);
    assert_int_equal(count_fds(), fds);
}

static const struct io_log_config prealloc_segments = {
    .segment_bytes_max = 16 * 1024, .buffer_bytes = 4096, .preallocate = 1};

/* Does the file end in a record-header's worth of zeros (a zero tail no record can end with)? */
static int ends_in_zeros(const char *path)
{
    size_t len;
    unsigned char *buf = slurp(path, &len);
    int zeros = len >= IO_LOG_HEADER_BYTES;
    for (size_t i = 0; zeros && i < IO_LOG_HEADER_BYTES; i++) {
        zeros = buf[len - 1 - i] == 0;
    }
    free(buf);
    return zeros;
}

/* Offsets of the records at the start of a segment image, up to the first zero or short header. */
static size_t record_offsets(const unsigned char *buf, size_t len, size_t *offs, size_t max)
{
    size_t n = 0, off = 0;
    while (n < max && off + IO_LOG_HEADER_BYTES <= len && buf[off] != 0) {
        offs[n++] = off;
        uint32_t stored = (uint32_t)buf[off + 24] | (uint32_t)buf[off + 25] << 8 |
                          (uint32_t)buf[off + 26] << 16 | (uint32_t)buf[off + 27] << 24;
        off += IO_LOG_HEADER_BYTES + stored;
    }
    return n;
}

static void test_io_log_preallocated_segments_end_clean(void **state)
{
    struct fx *f = *state;
    struct seen s = {.term1 = 2};
    char path[512];

    open_ok(f, &prealloc_segments, NULL);
    append_range(&f->log, 1, 600, 2, 5);
    find_file(f->dir, "open-", path, sizeof path);
    assert_int_equal(file_size(path), 16 * 1024); /* zeros past the records */
    /* Closed segments were cut to their records before the rename. */
    DIR *d = opendir(f->dir);
    struct dirent *de;
    int closed = 0;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '0') {
            char p[600];
            snprintf(p, sizeof p, "%s/%s", f->dir, de->d_name);
            assert_false(ends_in_zeros(p));
            closed++;
        }
    }
    closedir(d);
    assert_true(closed >= 3);
    io_log_close(&f->log);

    /* The zeros after the last record are a clean end: nothing is logged, nothing lost. */
    capture_begin(f);
    open_ok(f, &prealloc_segments, &s);
    char *logged = capture_end();
    assert_string_equal(logged, "");
    free(logged);
    assert_int_equal(s.bad, 0);
    assert_int_equal(s.count, 600);
    append_range(&f->log, 601, 700, 2, 5);
    io_log_close(&f->log);
    s = (struct seen){.term1 = 2};
    open_ok(f, &prealloc_segments, &s);
    assert_int_equal(s.bad, 0);
    assert_int_equal(s.count, 700);
    io_log_close(&f->log);
}

/* A power cut in the middle of writing the last record of a preallocated segment: the bytes of
 * the record that reached the disk are followed by zeros. That is a torn tail, not a clean end. */
static void test_io_log_preallocated_torn_record_before_zeros(void **state)
{
    struct fx *f = *state;
    char path[512];
    size_t len, offs[64];
    const uint64_t n = 21; /* entry 21: noise, 777 bytes */

    open_ok(f, &prealloc_segments, NULL);
    append_range(&f->log, 1, n, 1, 1);
    find_file(f->dir, "open-", path, sizeof path);
    io_log_close(&f->log);
    unsigned char *image = slurp(path, &len);
    assert_int_equal(len, 16 * 1024);
    assert_int_equal(record_offsets(image, len, offs, 64), n);
    const size_t cuts[] = {1, 8, 39, 40, 41, 300, 776};
    for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
        unsigned char *torn = malloc(len);
        memcpy(torn, image, len);
        memset(torn + offs[n - 1] + cuts[c], 0, len - offs[n - 1] - cuts[c]);
        FILE *fp = fopen(path, "wb");
        assert_non_null(fp);
        assert_int_equal(fwrite(torn, 1, len, fp), len);
        fclose(fp);
        free(torn);
        struct seen s = {.term1 = 1};
        capture_begin(f);
        open_ok(f, &prealloc_segments, &s);
        char *logged = capture_end();
        assert_non_null(strstr(logged, "torn tail"));
        free(logged);
        assert_int_equal(s.bad, 0);
        assert_int_equal(s.count, n - 1);
        io_log_close(&f->log);
        find_file(f->dir, "open-", path, sizeof path);
    }
    free(image);
}

/* Writes entries 1..n (one sync each) and returns the open segment's path and the offset of the
 * last record. */
static off_t write_n(struct fx *f, uint64_t n, char *path, size_t path_len)
{
    open_ok(f, NULL, NULL);
    append_range(&f->log, 1, n - 1, 1, 1);
    find_file(f->dir, "open-", path, path_len);
    off_t last_off = file_size(path);
    append_range(&f->log, n, n, 1, 1);
    io_log_close(&f->log);
    return last_off;
}

static void test_io_log_every_cut_of_last_record_is_a_torn_tail(void **state)
{
    struct fx *f = *state;
    char path[512];
    size_t len;
    const uint64_t n = 21; /* entry 21: noise, 777 bytes: header and payload both get cut */

    off_t last_off = write_n(f, n, path, sizeof path);
    unsigned char *orig = slurp(path, &len);
    assert_true((size_t)last_off + 40 < len);
    for (size_t cut = (size_t)last_off; cut < len; cut++) {
        struct seen s = {.term1 = 1};
        spit(path, orig, cut);
        capture_begin(f);
        open_ok(f, NULL, &s);
        char *logged = capture_end();
        if (cut > (size_t)last_off) {
            char want[600];
            snprintf(want, sizeof want, "%s: offset %zu:", path, (size_t)last_off);
            assert_non_null(strstr(logged, "WARN"));
            assert_non_null(strstr(logged, want));
            assert_non_null(strstr(logged, "torn tail"));
        } else {
            assert_string_equal(logged, "");
        }
        free(logged);
        assert_int_equal(s.bad, 0);
        assert_int_equal(s.count, n - 1);
        assert_int_equal(io_log_last_index(&f->log), n - 1);
        io_log_close(&f->log);
        assert_int_equal(file_size(path), last_off);
    }
    /* And the entry can be written again at the same index. */
    open_ok(f, NULL, NULL);
    append_range(&f->log, n, n, 1, 1);
    io_log_close(&f->log);
    struct seen s = {.term1 = 1};
    open_ok(f, NULL, &s);
    assert_int_equal(s.count, n);
    io_log_close(&f->log);
    free(orig);
}

static void test_io_log_flipped_bit_in_tail_record_is_dropped(void **state)
{
    struct fx *f = *state;
    char path[512];
    size_t len;
    const uint64_t n = 21;

    off_t last_off = write_n(f, n, path, sizeof path);
    unsigned char *orig = slurp(path, &len);
    /* A bit in the header (term), then one in the payload. */
    size_t spots[] = {(size_t)last_off + 9, (size_t)last_off + 40 + 100, len - 1};
    for (size_t k = 0; k < sizeof spots / sizeof spots[0]; k++) {
        struct seen s = {.term1 = 1};
        unsigned char *copy = malloc(len);
        memcpy(copy, orig, len);
        copy[spots[k]] ^= 0x10;
        spit(path, copy, len);
        free(copy);
        capture_begin(f);
        open_ok(f, NULL, &s);
        char *logged = capture_end();
        assert_non_null(strstr(logged, "WARN"));
        assert_non_null(strstr(logged, "torn tail"));
        free(logged);
        assert_int_equal(s.bad, 0);
        assert_int_equal(s.count, n - 1);
        io_log_close(&f->log);
        assert_int_equal(file_size(path), last_off);
    }
    free(orig);
}

static void test_io_log_flipped_bit_in_middle_record_fails_open(void **state)
{
    struct fx *f = *state;
    char path[512], want[600];
    size_t len;
    const uint64_t n = 21;

    write_n(f, n, path, sizeof path);
    unsigned char *buf = slurp(path, &len);
    /* Record 1 starts at 0; record 2 at 40 + its stored length. Hit record 2's payload. */
    size_t rec1 = 40 + (size_t)(buf[24] | buf[25] << 8 | buf[26] << 16);
    buf[rec1 + 45] ^= 0x01;
    spit(path, buf, len);
    int fds = count_fds();
    int rc = io_log_open(&f->log, f->dir, NULL, NULL, NULL);
    assert_int_equal(rc, IO_LOG_ECORRUPT);
    assert_int_equal(count_fds(), fds); /* a failed open closes what it opened */
    snprintf(want, sizeof want, "%s: offset %zu:", path, rec1);
    if (strstr(io_log_errmsg(&f->log), want) == NULL) {
        fail_msg("error message '%s' does not name '%s'", io_log_errmsg(&f->log), want);
    }
    assert_non_null(strstr(io_log_errmsg(&f->log), "checksum mismatch"));
    /* Nothing was truncated: the evidence stays for the operator. */
    assert_int_equal((size_t)file_size(path), len);
    free(buf);
}

static void test_io_log_flipped_bit_in_closed_segment_fails_open(void **state)
{
    struct fx *f = *state;
    char path[512], want[600];
    size_t len;

    open_ok(f, &small_segments, NULL);
    append_range(&f->log, 1, 300, 1, 8);
    io_log_close(&f->log);
    find_file(f->dir, "0", path, sizeof path); /* the first closed segment */
    unsigned char *buf = slurp(path, &len);
    buf[len - 1] ^= 0x80; /* the last record of a closed segment is no tail */
    spit(path, buf, len);
    assert_int_equal(io_log_open(&f->log, f->dir, &small_segments, NULL, NULL), IO_LOG_ECORRUPT);
    snprintf(want, sizeof want, "%s: offset ", path);
    assert_non_null(strstr(io_log_errmsg(&f->log), want));
    assert_non_null(strstr(io_log_errmsg(&f->log), "checksum mismatch"));
    free(buf);
}

static void test_io_log_gap_between_segments_fails_open(void **state)
{
    struct fx *f = *state;
    struct dirent **list;

    open_ok(f, &small_segments, NULL);
    append_range(&f->log, 1, 300, 1, 8);
    io_log_close(&f->log);
    int n = scandir(f->dir, &list, NULL, alphasort);
    int closed = 0;
    for (int i = 0; i < n; i++) {
        if (list[i]->d_name[0] == '0' && ++closed == 2) {
            char p[600];
            snprintf(p, sizeof p, "%s/%s", f->dir, list[i]->d_name);
            assert_int_equal(unlink(p), 0);
        }
        free(list[i]);
    }
    free(list);
    assert_true(closed >= 3);
    assert_int_equal(io_log_open(&f->log, f->dir, &small_segments, NULL, NULL), IO_LOG_ECORRUPT);
    assert_non_null(strstr(io_log_errmsg(&f->log), "gap"));
}

static void test_io_log_malformed_segment_name_fails_open(void **state)
{
    struct fx *f = *state;
    char p[600];

    open_ok(f, NULL, NULL);
    append_range(&f->log, 1, 5, 1, 5);
    io_log_close(&f->log);
    snprintf(p, sizeof p, "%s/00000000000000x1-0000000000000002", f->dir);
    spit(p, (const unsigned char *)"", 0);
    assert_int_equal(io_log_open(&f->log, f->dir, NULL, NULL, NULL), IO_LOG_ECORRUPT);
    assert_non_null(strstr(io_log_errmsg(&f->log), "00000000000000x1-0000000000000002"));
    unlink(p);
    /* Files of other owners are left alone. */
    snprintf(p, sizeof p, "%s/metadata", f->dir);
    spit(p, (const unsigned char *)"x", 1);
    open_ok(f, NULL, NULL);
    assert_int_equal(io_log_last_index(&f->log), 5);
    io_log_close(&f->log);
}

static void test_io_log_truncate_suffix_then_append_same_indexes(void **state)
{
    struct fx *f = *state;
    struct seen s;

    open_ok(f, &small_segments, NULL);
    append_range(&f->log, 1, 400, 1, 16);
    /* Inside the open segment first. */
    assert_int_equal(io_log_truncate_suffix(&f->log, 395), 0);
    assert_int_equal(io_log_last_index(&f->log), 394);
    assert_int_equal(io_log_durable_index(&f->log), 394);
    append_range(&f->log, 395, 400, 1, 3);
    /* Then deep inside a closed segment: later segments go, that one is cut and reopened. */
    assert_int_equal(io_log_truncate_suffix(&f->log, 150), 0);
    assert_int_equal(io_log_last_index(&f->log), 149);
    assert_int_equal(io_log_last_term(&f->log), 1);
    append_range(&f->log, 150, 420, 2, 9);
    uint64_t term = 0;
    assert_int_equal(io_log_term(&f->log, 149, &term), 0);
    assert_int_equal(term, 1);
    assert_int_equal(io_log_term(&f->log, 150, &term), 0);
    assert_int_equal(term, 2);
    io_log_close(&f->log);

    s = (struct seen){.term1 = 1, .term2 = 2, .term_split = 150};
    open_ok(f, &small_segments, &s);
    assert_int_equal(s.bad, 0);
    assert_int_equal(s.count, 420);
    assert_int_equal(io_log_last_term(&f->log), 2);
    struct io_entry got;
    assert_int_equal(io_log_get(&f->log, 150, &got), 0);
    assert_int_equal(got.term, 2);
    io_log_entry_release(&got);
    /* At a segment's very first entry, without a sync in between. */
    char first_closed[512];
    find_file(f->dir, "0", first_closed, sizeof first_closed);
    const char *base = strrchr(first_closed, '/') + 1;
    uint64_t seg2 = strtoull(base + 17, NULL, 10) + 1;
    assert_int_equal(io_log_truncate_suffix(&f->log, seg2), 0);
    assert_int_equal(io_log_last_index(&f->log), seg2 - 1);
    assert_int_equal(io_log_truncate_suffix(&f->log, 0), IO_LOG_EINVAL);
    io_log_close(&f->log);
    s = (struct seen){.term1 = 1};
    open_ok(f, &small_segments, &s);
    assert_int_equal(s.bad, 0);
    assert_int_equal(s.last, seg2 - 1);
    append_range(&f->log, seg2, seg2 + 10, 3, 4);
    io_log_close(&f->log);
    s = (struct seen){.term1 = 1, .term2 = 3, .term_split = seg2};
    open_ok(f, &small_segments, &s);
    assert_int_equal(s.bad, 0);
    assert_int_equal(s.last, seg2 + 10);
    io_log_close(&f->log);
}

static void test_io_log_truncate_prefix_survives_reopen(void **state)
{
    struct fx *f = *state;
    struct seen s = {.term1 = 5};

    open_ok(f, &small_segments, NULL);
    append_range(&f->log, 1, 600, 5, 32);
    int before = count_files(f->dir, "0");
    assert_int_equal(io_log_truncate_prefix(&f->log, 450), 0);
    assert_int_equal(io_log_first_index(&f->log), 451);
    assert_true(count_files(f->dir, "0") < before);
    struct io_entry got;
    assert_int_equal(io_log_get(&f->log, 450, &got), IO_LOG_ECOMPACTED);
    assert_int_equal(io_log_get(&f->log, 451, &got), 0);
    io_log_entry_release(&got);
    assert_int_equal(io_log_truncate_prefix(&f->log, 601), IO_LOG_EINVAL);
    uint64_t term = 0;
    assert_int_equal(io_log_term(&f->log, 450, &term), 0);
    assert_int_equal(term, 5);
    assert_int_equal(io_log_term(&f->log, 449, &term), IO_LOG_ECOMPACTED);
    assert_int_equal(io_log_term(&f->log, 601, &term), IO_LOG_ENOENT);
    io_log_close(&f->log);

    open_ok(f, &small_segments, &s);
    assert_int_equal(s.bad, 0);
    assert_int_equal(s.first, 451);
    assert_int_equal(s.last, 600);
    assert_int_equal(io_log_first_index(&f->log), 451);
    assert_int_equal(io_log_last_index(&f->log), 600);
    /* Compacting everything leaves an empty log that still knows its last index and term. */
    assert_int_equal(io_log_truncate_prefix(&f->log, 600), 0);
    io_log_close(&f->log);
    s = (struct seen){.term1 = 5};
    open_ok(f, &small_segments, &s);
    assert_int_equal(s.count, 0);
    assert_int_equal(io_log_first_index(&f->log), 601);
    assert_int_equal(io_log_last_index(&f->log), 600);
    assert_int_equal(io_log_last_term(&f->log), 5);
    append_range(&f->log, 601, 610, 5, 5);
    io_log_close(&f->log);
    s = (struct seen){.term1 = 5};
    open_ok(f, &small_segments, &s);
    assert_int_equal(s.first, 601);
    assert_int_equal(s.last, 610);
    io_log_close(&f->log);
}

static void test_io_log_reset_to_snapshot_survives_reopen(void **state)
{
    struct fx *f = *state;
    struct seen s = {.term1 = 7};

    open_ok(f, &small_segments, NULL);
    append_range(&f->log, 1, 200, 2, 10);
    assert_int_equal(io_log_reset(&f->log, 1000, 7), 0);
    assert_int_equal(io_log_first_index(&f->log), 1001);
    assert_int_equal(io_log_last_index(&f->log), 1000);
    assert_int_equal(io_log_last_term(&f->log), 7);
    assert_int_equal(count_files(f->dir, "0") + count_files(f->dir, "open-"), 0);
    io_log_close(&f->log);

    open_ok(f, &small_segments, &s);
    assert_int_equal(s.count, 0);
    assert_int_equal(io_log_last_index(&f->log), 1000);
    assert_int_equal(io_log_last_term(&f->log), 7);
    append_range(&f->log, 1001, 1100, 7, 7);
    io_log_close(&f->log);
    s = (struct seen){.term1 = 7};
    open_ok(f, &small_segments, &s);
    assert_int_equal(s.bad, 0);
    assert_int_equal(s.first, 1001);
    assert_int_equal(s.last, 1100);
    io_log_close(&f->log);
}

static void test_io_log_leftover_open_segment_is_closed_at_startup(void **state)
{
    struct fx *f = *state;
    struct dirent **list;
    char last_closed[300] = "", from[600], to[600];

    open_ok(f, &small_segments, NULL);
    append_range(&f->log, 1, 300, 1, 8);
    io_log_close(&f->log);
    /* As if the rename that closed the newest full segment never reached the disk. */
    int n = scandir(f->dir, &list, NULL, alphasort);
    for (int i = 0; i < n; i++) {
        if (list[i]->d_name[0] == '0') {
            snprintf(last_closed, sizeof last_closed, "%s", list[i]->d_name);
        }
        free(list[i]);
    }
    free(list);
    assert_true(last_closed[0] != 0);
    snprintf(from, sizeof from, "%s/%s", f->dir, last_closed);
    snprintf(to, sizeof to, "%s/open-0000000000000000", f->dir);
    assert_int_equal(rename(from, to), 0);
    struct seen s = {.term1 = 1};
    open_ok(f, &small_segments, &s);
    assert_int_equal(s.bad, 0);
    assert_int_equal(s.count, 300);
    assert_int_equal(count_files(f->dir, "open-"), 1);
    assert_int_equal(access(from, F_OK), 0);
    append_range(&f->log, 301, 320, 1, 8);
    io_log_close(&f->log);
    s = (struct seen){.term1 = 1};
    open_ok(f, &small_segments, &s);
    assert_int_equal(s.count, 320);
    io_log_close(&f->log);
}

static void test_io_log_compresses_only_when_it_helps(void **state)
{
    struct fx *f = *state;
    char path[512];
    static unsigned char text[8192], noise[8192];
    uint64_t x = 88172645463325252ull;

    for (size_t i = 0; i < sizeof text; i++) {
        text[i] = (unsigned char)("CREATE TABLE t(a, b); "[i % 22]);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise[i] = (unsigned char)x;
    }
    open_ok(f, NULL, NULL);
    struct io_entry es[2] = {{.term = 1, .index = 1, .buf = text, .len = sizeof text},
                             {.term = 1, .index = 2, .buf = noise, .len = sizeof noise}};
    assert_int_equal(io_log_append(&f->log, es, 2), 0);
    assert_int_equal(io_log_sync(&f->log), 0);
    find_file(f->dir, "open-", path, sizeof path);
    size_t len;
    unsigned char *buf = slurp(path, &len);
    assert_int_equal(buf[6], IO_LOG_FLAG_LZ4);
    size_t stored1 = (size_t)(buf[24] | buf[25] << 8 | buf[26] << 16);
    assert_true(stored1 < sizeof text / 4);
    assert_int_equal(buf[40 + stored1 + 6], 0); /* noise is stored as is */
    assert_int_equal(len, 2 * 40 + stored1 + sizeof noise);
    free(buf);
    io_log_close(&f->log);
    open_ok(f, NULL, NULL);
    for (uint64_t i = 1; i <= 2; i++) {
        struct io_entry got;
        assert_int_equal(io_log_get(&f->log, i, &got), 0);
        assert_int_equal(got.len, 8192);
        assert_memory_equal(got.buf, i == 1 ? text : noise, 8192);
        io_log_entry_release(&got);
    }
    io_log_close(&f->log);
}

static int n_fdatasync, n_fsync;

static int counting_fdatasync(int fd)
{
    n_fdatasync++;
    return fdatasync(fd);
}

static int counting_fsync(int fd)
{
    n_fsync++;
    return fsync(fd);
}

/* Group commit: one fdatasync per sync however many entries it covers; the directory is synced
 * exactly when a segment file was created or renamed. */
static void test_io_log_sync_is_one_fdatasync_per_batch(void **state)
{
    struct fx *f = *state;
    unsigned char payload[1024];
    struct io_entry es[64];

    payload_fill(1, 1, payload, sizeof payload); /* noise: lz4 leaves the size alone */
    open_ok(f, &small_segments, NULL);
    io_sys.fdatasync = counting_fdatasync;
    io_sys.fsync = counting_fsync;
    for (size_t k = 0; k < 8; k++) {
        es[k] = (struct io_entry){.term = 1, .index = 1 + k, .buf = payload, .len = 100};
    }
    assert_int_equal(io_log_append(&f->log, es, 8), 0);
    assert_int_equal(n_fdatasync + n_fsync, 0); /* appends never sync */
    assert_int_equal(io_log_sync(&f->log), 0);
    assert_int_equal(n_fdatasync, 1);
    assert_int_equal(n_fsync, 1); /* the new open segment's directory entry */
    n_fdatasync = n_fsync = 0;
    for (size_t k = 0; k < 64; k++) {
        es[k] = (struct io_entry){.term = 1, .index = 9 + k, .buf = payload, .len = 100};
    }
    assert_int_equal(io_log_append(&f->log, es, 64), 0);
    assert_int_equal(io_log_sync(&f->log), 0);
    assert_int_equal(n_fdatasync, 1);
    assert_int_equal(n_fsync, 0);
    assert_int_equal(io_log_sync(&f->log), 0); /* nothing new: nothing to sync */
    assert_int_equal(n_fdatasync, 1);
    /* Crossing a segment boundary: the roll syncs the full segment, then the directory. */
    n_fdatasync = n_fsync = 0;
    for (size_t k = 0; k < 20; k++) {
        es[k] = (struct io_entry){.term = 1, .index = 73 + k, .buf = payload, .len = 1000};
    }
    assert_int_equal(io_log_append(&f->log, es, 20), 0);
    assert_int_equal(io_log_sync(&f->log), 0);
    assert_int_equal(n_fdatasync, 2);
    assert_int_equal(n_fsync, 1);
    io_log_close(&f->log);
}

/* Found by the random fault runs with power cuts (seed 9): entries a previous process wrote but
 * never synced sit in the page cache, and open called them durable without syncing them. */
static void test_io_log_open_syncs_what_it_reads(void **state)
{
    struct fx *f = *state;
    unsigned char payload[100] = {1};

    open_ok(f, NULL, NULL);
    struct io_entry e = {.term = 1, .index = 1, .buf = payload, .len = sizeof payload};
    assert_int_equal(io_log_append(&f->log, &e, 1), 0);
    io_log_close(&f->log); /* buffered only: lost */
    open_ok(f, NULL, NULL);
    assert_int_equal(io_log_last_index(&f->log), 0);
    append_range(&f->log, 1, 5, 1, 5);
    struct io_entry more[3];
    for (uint64_t i = 6; i <= 8; i++) {
        more[i - 6] = (struct io_entry){.term = 1, .index = i, .buf = payload, .len = 100};
    }
    assert_int_equal(io_log_append(&f->log, more, 3), 0);
    assert_int_equal(io_log_sync(&f->log), 0); /* now in the file; 9 is written, never synced */
    struct io_entry nine = {.term = 1, .index = 9, .buf = payload, .len = 100};
    assert_int_equal(io_log_append(&f->log, &nine, 1), 0);
    f->log.cfg.buffer_bytes = 1;
    struct io_entry ten = {.term = 1, .index = 10, .buf = payload, .len = 100};
    assert_int_equal(io_log_append(&f->log, &ten, 1), 0); /* flushes 9 and 10 to the file */
    io_log_close(&f->log);
    io_sys.fdatasync = counting_fdatasync;
    io_sys.fsync = counting_fsync;
    n_fdatasync = n_fsync = 0;
    open_ok(f, NULL, NULL);
    assert_int_equal(io_log_last_index(&f->log), 10);
    assert_int_equal(io_log_durable_index(&f->log), 10);
    assert_int_equal(n_fdatasync, 2); /* the anchor file, then the open segment */
    assert_int_equal(n_fsync, 1);
    io_log_close(&f->log);
}

/* A payload may carry bytes that look like a whole record (a database storing log files): cut
 * inside such a payload, the last record is still a torn tail, not a corruption. */
static void test_io_log_record_image_inside_torn_payload_is_still_a_tail(void **state)
{
    struct fx *f = *state;
    const struct io_log_config raw = {.no_compress = 1};
    char path[512];
    size_t len;

    open_ok(f, &raw, NULL);
    append_range(&f->log, 1, 3, 1, 3);
    find_file(f->dir, "open-", path, sizeof path);
    unsigned char *image = slurp(path, &len); /* records 1..3, valid images all */
    unsigned char *payload = malloc(len + 64);
    memset(payload, 0xee, 64);
    memcpy(payload + 32, image, len);
    struct io_entry e = {.term = 1, .index = 4, .buf = payload, .len = len + 64};
    assert_int_equal(io_log_append(&f->log, &e, 1), 0);
    assert_int_equal(io_log_sync(&f->log), 0);
    off_t rec4 = (off_t)len;
    io_log_close(&f->log);
    /* Cut after the embedded records, before the end of record 4. */
    assert_int_equal(truncate(path, rec4 + 40 + 32 + (off_t)len + 10), 0);
    struct seen s = {.term1 = 1};
    capture_begin(f);
    int rc = io_log_open(&f->log, f->dir, &raw, on_load, &s);
    char *logged = capture_end();
    if (rc != 0) {
        fail_msg("open: %s", io_log_errmsg(&f->log));
    }
    assert_non_null(strstr(logged, "torn tail"));
    assert_int_equal(s.last, 3);
    io_log_close(&f->log);
    free(logged);
    free(payload);
    free(image);
}

/* --- fault injection ------------------------------------------------------------------------- */

static long write_budget = -1; /* bytes pwrite may still write; -1: no limit */
static int fdatasync_fails;

static ssize_t full_disk_pwrite(int fd, const void *buf, size_t len, off_t off)
{
    if (write_budget >= 0) {
        if (write_budget == 0) {
            errno = ENOSPC;
            return -1;
        }
        if ((long)len > write_budget) {
            len = (size_t)write_budget; /* a short write, as a filling disk gives */
        }
        write_budget -= (long)len;
    }
    return pwrite(fd, buf, len, off);
}

static int failing_fdatasync(int fd)
{
    if (fdatasync_fails) {
        errno = ENOSPC;
        return -1;
    }
    return fdatasync(fd);
}

static void test_io_log_enospc_during_append_keeps_log_consistent(void **state)
{
    struct fx *f = *state;
    struct io_entry es[64];
    unsigned char *bufs[64];
    int failed = 0;

    open_ok(f, &small_segments, NULL);
    append_range(&f->log, 1, 100, 1, 10);
    io_sys.pwrite = full_disk_pwrite;
    write_budget = 20000;
    uint64_t next = 101;
    for (int round = 0; round < 20 && !failed; round++) {
        for (size_t k = 0; k < 32; k++, next++) {
            size_t len = payload_len(next);
            bufs[k] = malloc(len + 1);
            payload_fill(next, 1, bufs[k], len);
            es[k] = (struct io_entry){
                .term = 1, .index = next, .type = (uint8_t)(next % 3), .buf = bufs[k], .len = len};
        }
        int rc = io_log_append(&f->log, es, 32);
        if (rc == 0) {
            rc = io_log_sync(&f->log);
        }
        for (size_t k = 0; k < 32; k++) {
            free(bufs[k]);
        }
        if (rc != 0) {
            assert_int_equal(rc, IO_LOG_ENOSPC);
            assert_non_null(strstr(io_log_errmsg(&f->log), "No space left"));
            failed = 1;
        }
        next = io_log_last_index(&f->log) + 1;
    }
    assert_true(failed);
    uint64_t durable = io_log_durable_index(&f->log);
    assert_true(durable >= 100);
    assert_true(io_log_last_index(&f->log) >= durable);
    /* Still full: more appends fail, and the log does not move backwards or break. */
    assert_int_not_equal(
        io_log_sync(&f->log) == 0 &&
            io_log_append(
                &f->log,
                &(struct io_entry){
                    .term = 1, .index = io_log_last_index(&f->log) + 1, .buf = "x", .len = 1},
                1) == 0 &&
            io_log_sync(&f->log) == 0,
        1);
    uint64_t last = io_log_last_index(&f->log);
    io_log_close(&f->log);

    /* A restart on the full disk finds a consistent log. */
    struct seen s = {.term1 = 1};
    open_ok(f, &small_segments, &s);
    assert_int_equal(s.bad, 0);
    assert_true(s.last >= durable);
    assert_true(s.last <= last);
    /* Space returns: appends work again. */
    write_budget = -1;
    append_range(&f->log, s.last + 1, 900, 1, 32);
    io_log_close(&f->log);
    s = (struct seen){.term1 = 1};
    open_ok(f, &small_segments, &s);
    assert_int_equal(s.bad, 0);
    assert_int_equal(s.count, 900);
    io_log_close(&f->log);
}

static void test_io_log_failed_fsync_is_not_durable(void **state)
{
    struct fx *f = *state;
    unsigned char buf[4096];

    open_ok(f, NULL, NULL);
    append_range(&f->log, 1, 50, 1, 10);
    io_sys.fdatasync = failing_fdatasync;
    fdatasync_fails = 1;
    for (uint64_t i = 51; i <= 60; i++) {
        size_t len = payload_len(i);
        payload_fill(i, 1, buf, len);
        struct io_entry e = {
            .term = 1, .index = i, .type = (uint8_t)(i % 3), .buf = buf, .len = len};
        assert_int_equal(io_log_append(&f->log, &e, 1), 0);
    }
    assert_int_equal(io_log_sync(&f->log), IO_LOG_ENOSPC);
    assert_non_null(strstr(io_log_errmsg(&f->log), "fdatasync"));
    /* Not durable, and not pretended to be there either. */
    assert_int_equal(io_log_durable_index(&f->log), 50);
    assert_int_equal(io_log_last_index(&f->log), 50);
    struct io_entry got;
    assert_int_equal(io_log_get(&f->log, 51, &got), IO_LOG_ENOENT);
    fdatasync_fails = 0;
    append_range(&f->log, 51, 70, 1, 4);
    io_log_close(&f->log);
    struct seen s = {.term1 = 1};
    open_ok(f, NULL, &s);
    assert_int_equal(s.bad, 0);
    assert_int_equal(s.count, 70);
    io_log_close(&f->log);
}

static int create_fails;

static int failing_open(const char *path, int flags, mode_t mode)
{
    if (create_fails && (flags & O_CREAT)) {
        errno = ENOSPC;
        return -1;
    }
    return open(path, flags, mode);
}

static void test_io_log_enospc_creating_a_segment_then_recovers(void **state)
{
    struct fx *f = *state;
    unsigned char payload[1024] = {1};
    struct io_entry es[32];

    open_ok(f, &small_segments, NULL);
    io_sys.open = failing_open;
    create_fails = 1;
    uint64_t next = 1;
    int rc = 0;
    for (int round = 0; round < 10 && rc == 0; round++) {
        for (size_t k = 0; k < 32; k++) {
            es[k] = (struct io_entry){.term = 1, .index = next + k, .buf = payload, .len = 1024};
        }
        rc = io_log_append(&f->log, es, 32);
        if (rc == 0) {
            rc = io_log_sync(&f->log);
        }
        next = io_log_last_index(&f->log) + 1;
    }
    /* The very first segment cannot be created. */
    assert_int_equal(rc, IO_LOG_ENOSPC);
    assert_int_equal(io_log_last_index(&f->log), 0);
    create_fails = 0;
    for (int round = 0; round < 20; round++) {
        for (size_t k = 0; k < 32; k++) {
            es[k] = (struct io_entry){.term = 1, .index = next + k, .buf = payload, .len = 1024};
        }
        assert_int_equal(io_log_append(&f->log, es, 32), 0);
        assert_int_equal(io_log_sync(&f->log), 0);
        next += 32;
        if (round == 5) {
            create_fails = 1; /* full again at the next segment roll */
            rc = 0;
            for (int r2 = 0; r2 < 10 && rc == 0; r2++) {
                for (size_t k = 0; k < 32; k++) {
                    es[k] = (struct io_entry){
                        .term = 1, .index = next + k, .buf = payload, .len = 1024};
                }
                rc = io_log_append(&f->log, es, 32);
                if (rc == 0) {
                    rc = io_log_sync(&f->log);
                }
                next = io_log_last_index(&f->log) + 1;
            }
            assert_int_equal(rc, IO_LOG_ENOSPC);
            create_fails = 0;
            assert_int_equal(io_log_sync(&f->log), 0);
            assert_int_equal(io_log_durable_index(&f->log), next - 1);
        }
    }
    io_log_close(&f->log);
    struct io_log l2;
    assert_int_equal(io_log_open(&l2, f->dir, &small_segments, NULL, NULL), 0);
    assert_int_equal(io_log_last_index(&l2), next - 1);
    io_log_close(&l2);
}

static int truncate_fails;

static int failing_ftruncate(int fd, off_t len)
{
    if (truncate_fails) {
        errno = EIO;
        return -1;
    }
    return ftruncate(fd, len);
}

/* A short write whose clean-up also fails leaves a torn record behind: the log refuses to go on,
 * and the next open cuts the torn tail. */
static void test_io_log_failed_cleanup_breaks_log_until_reopen(void **state)
{
    struct fx *f = *state;
    unsigned char buf[4096];

    open_ok(f, NULL, NULL);
    append_range(&f->log, 1, 30, 1, 10);
    io_sys.pwrite = full_disk_pwrite;
    io_sys.ftruncate = failing_ftruncate;
    write_budget = 1000;
    truncate_fails = 1;
    int rc = 0;
    for (uint64_t i = 31; i <= 40 && rc == 0; i++) {
        size_t len = payload_len(i);
        payload_fill(i, 1, buf, len);
        struct io_entry e = {
            .term = 1, .index = i, .type = (uint8_t)(i % 3), .buf = buf, .len = len};
        rc = io_log_append(&f->log, &e, 1);
        if (rc == 0) {
            rc = io_log_sync(&f->log);
        }
    }
    assert_int_equal(rc, IO_LOG_ENOSPC);
    assert_int_equal(io_log_sync(&f->log), IO_LOG_EBROKEN); /* the truncate still fails */
    uint64_t durable = io_log_durable_index(&f->log);
    io_log_close(&f->log);
    write_budget = -1;
    truncate_fails = 0;
    struct seen s = {.term1 = 1};
    capture_begin(f);
    open_ok(f, NULL, &s);
    char *logged = capture_end();
    assert_non_null(strstr(logged, "torn tail")); /* the short write's remains */
    free(logged);
    assert_int_equal(s.bad, 0);
    assert_int_equal(s.last, durable);
    append_range(&f->log, durable + 1, 50, 1, 3);
    io_log_close(&f->log);
}

/* The same failed clean-up, repaired by the next call once the disk recovers. */
static void test_io_log_failed_cleanup_is_repaired_by_next_call(void **state)
{
    struct fx *f = *state;
    unsigned char buf[4096];

    open_ok(f, NULL, NULL);
    append_range(&f->log, 1, 30, 1, 10);
    io_sys.pwrite = full_disk_pwrite;
    io_sys.ftruncate = failing_ftruncate;
    write_budget = 1000;
    truncate_fails = 1;
    int rc = 0;
    for (uint64_t i = 31; i <= 40 && rc == 0; i++) {
        size_t len = payload_len(i);
        payload_fill(i, 1, buf, len);
        struct io_entry e = {
            .term = 1, .index = i, .type = (uint8_t)(i % 3), .buf = buf, .len = len};
        rc = io_log_append(&f->log, &e, 1);
        if (rc == 0) {
            rc = io_log_sync(&f->log);
        }
    }
    assert_int_equal(rc, IO_LOG_ENOSPC);
    assert_int_equal(io_log_sync(&f->log), IO_LOG_EBROKEN);
    write_budget = -1;
    truncate_fails = 0;
    uint64_t last = io_log_last_index(&f->log);
    append_range(&f->log, last + 1, 60, 1, 4); /* repairs, then appends */
    io_log_close(&f->log);
    struct seen s = {.term1 = 1};
    capture_begin(f);
    open_ok(f, NULL, &s);
    char *logged = capture_end();
    assert_string_equal(logged, ""); /* no torn tail left behind */
    free(logged);
    assert_int_equal(s.bad, 0);
    assert_int_equal(s.last, 60);
    io_log_close(&f->log);
}

/* Found by the random fault runs (seed 31): a failed anchor write that still reached the disk
 * made a later suffix truncation look like an interrupted reset, and the next open dropped
 * every segment. */
static void test_io_log_failed_anchor_write_breaks_log(void **state)
{
    struct fx *f = *state;

    open_ok(f, &small_segments, NULL);
    append_range(&f->log, 1, 300, 1, 10);
    io_sys.fdatasync = failing_fdatasync;
    fdatasync_fails = 1;
    assert_int_equal(io_log_truncate_prefix(&f->log, 250), IO_LOG_ENOSPC);
    /* While the anchor cannot be rewritten, nothing moves. */
    assert_int_equal(io_log_truncate_suffix(&f->log, 100), IO_LOG_EBROKEN);
    assert_int_equal(io_log_sync(&f->log), IO_LOG_EBROKEN);
    assert_int_equal(io_log_last_index(&f->log), 300);
    io_log_close(&f->log);
    fdatasync_fails = 0;
    struct seen s = {.term1 = 1};
    open_ok(f, &small_segments, &s);
    assert_int_equal(s.bad, 0);
    assert_int_equal(io_log_last_index(&f->log), 300); /* nothing lost either way */
    assert_true(io_log_first_index(&f->log) == 1 || io_log_first_index(&f->log) == 251);
    io_log_close(&f->log);
}

/* Without a reopen: the next call rewrites the anchor memory holds, then goes on. */
static void test_io_log_failed_anchor_write_is_repaired_by_next_call(void **state)
{
    struct fx *f = *state;

    open_ok(f, &small_segments, NULL);
    append_range(&f->log, 1, 300, 1, 10);
    io_sys.fdatasync = failing_fdatasync;
    fdatasync_fails = 1;
    assert_int_equal(io_log_truncate_prefix(&f->log, 250), IO_LOG_ENOSPC);
    fdatasync_fails = 0;
    capture_begin(f);
    int rc = io_log_truncate_suffix(&f->log, 100);
    char *logged = capture_end();
    assert_int_equal(rc, 0);
    assert_non_null(strstr(logged, "repaired"));
    free(logged);
    assert_int_equal(io_log_first_index(&f->log), 1);
    append_range(&f->log, 100, 120, 2, 10);
    io_log_close(&f->log);
    struct seen s = {.term1 = 1, .term2 = 2, .term_split = 100};
    open_ok(f, &small_segments, &s);
    assert_int_equal(s.bad, 0);
    assert_int_equal(s.first, 1);
    assert_int_equal(s.last, 120);
    io_log_close(&f->log);
}

/* Found by the random fault runs (seed 6): a closed segment reopened for a suffix truncation
 * that then failed kept the sizes of the deleted open segment, and appends went astray. */
static void test_io_log_failed_cut_of_closed_segment_keeps_appending(void **state)
{
    struct fx *f = *state;

    open_ok(f, &small_segments, NULL);
    append_range(&f->log, 1, 300, 1, 10);
    io_sys.ftruncate = failing_ftruncate;
    truncate_fails = 1;
    assert_int_equal(io_log_truncate_suffix(&f->log, 20), IO_LOG_EIO);
    truncate_fails = 0;
    uint64_t last = io_log_last_index(&f->log);
    assert_true(last >= 19);
    assert_true(last < 300);
    append_range(&f->log, last + 1, last + 50, 2, 10);
    io_log_close(&f->log);
    struct seen s = {.term1 = 1, .term2 = 2, .term_split = last + 1};
    open_ok(f, &small_segments, &s);
    assert_int_equal(s.bad, 0);
    assert_int_equal(s.last, last + 50);
    io_log_close(&f->log);
}

/* io_log_get keeps one closed segment open; a segment that is deleted and rewritten under the
 * same first index must not be read through the old descriptor. */
static void test_io_log_get_after_rewrite_reads_new_segment(void **state)
{
    struct fx *f = *state;
    struct io_entry got;

    open_ok(f, &small_segments, NULL);
    append_range(&f->log, 1, 200, 1, 10);
    assert_int_equal(io_log_get(&f->log, 5, &got), 0);
    assert_true(entry_matches(&got, 1));
    io_log_entry_release(&got);
    assert_int_equal(io_log_truncate_suffix(&f->log, 1), 0);
    assert_int_equal(io_log_last_index(&f->log), 0);
    append_range(&f->log, 1, 200, 2, 10); /* same sizes, so the same segment boundaries */
    for (uint64_t i = 1; i <= 200; i += 7) {
        assert_int_equal(io_log_get(&f->log, i, &got), 0);
        assert_true(entry_matches(&got, 2));
        io_log_entry_release(&got);
    }
    io_log_close(&f->log);
}

static int unlink_fails, fsync_fails;

static int failing_unlink(const char *path)
{
    if (unlink_fails) {
        errno = EIO;
        return -1;
    }
    return unlink(path);
}

static int failing_fsync(int fd)
{
    if (fsync_fails) {
        errno = EIO;
        return -1;
    }
    return fsync(fd);
}

/* Found by the random fault runs with rename, unlink and fsync faults (seed 1): a suffix
 * truncation that could not delete the open segment, or could not sync the directory after
 * reopening a closed one, left an open segment without a descriptor or a size. */
static void test_io_log_failed_suffix_truncation_leaves_log_usable(void **state)
{
    struct fx *f = *state;

    open_ok(f, &small_segments, NULL);
    append_range(&f->log, 1, 300, 1, 10);
    io_sys.unlink = failing_unlink;
    io_sys.fsync = failing_fsync;
    unlink_fails = 1;
    assert_int_equal(io_log_truncate_suffix(&f->log, 20), IO_LOG_EIO);
    unlink_fails = 0;
    assert_int_equal(io_log_last_index(&f->log), 300);
    append_range(&f->log, 301, 320, 1, 10);
    fsync_fails = 1;
    assert_int_equal(io_log_truncate_suffix(&f->log, 20), IO_LOG_EIO);
    fsync_fails = 0;
    uint64_t last = io_log_last_index(&f->log);
    assert_true(last >= 19);
    append_range(&f->log, last + 1, last + 30, 2, 10);
    assert_int_equal(io_log_truncate_suffix(&f->log, 20), 0);
    append_range(&f->log, 20, 40, 3, 10);
    io_log_close(&f->log);
    struct seen s = {.term1 = 1, .term2 = 3, .term_split = 20};
    open_ok(f, &small_segments, &s);
    assert_int_equal(s.bad, 0);
    assert_int_equal(s.last, 40);
    io_log_close(&f->log);
}

static void test_io_log_bad_appends_are_refused(void **state)
{
    struct fx *f = *state;
    open_ok(f, NULL, NULL);
    append_range(&f->log, 1, 3, 2, 3);
    struct io_entry gap = {.term = 2, .index = 5, .buf = "x", .len = 1};
    assert_int_equal(io_log_append(&f->log, &gap, 1), IO_LOG_EINVAL);
    struct io_entry old = {.term = 1, .index = 4, .buf = "x", .len = 1};
    assert_int_equal(io_log_append(&f->log, &old, 1), IO_LOG_EINVAL);
    assert_int_equal(io_log_last_index(&f->log), 3);
    assert_string_equal(io_log_strerror(IO_LOG_ENOSPC), "no space left on device");
    assert_string_equal(io_log_strerror(9999), "unknown error");
    io_log_close(&f->log);
}

/* Prints appends/s for 1 KiB entries with a sync per batch of 1 and of 64. No assertion on time. */
static void test_io_log_bench_group_commit(void **state)
{
    struct fx *f = *state;
    unsigned char payload[1024];
    struct io_entry es[64];
    uint64_t next = 1;

    for (size_t i = 0; i < sizeof payload; i++) {
        payload[i] = (unsigned char)(i * 131 + 7);
    }
    open_ok(f, NULL, NULL);
    size_t batches[] = {1, 64};
    for (size_t b = 0; b < 2; b++) {
        struct timespec t0, t1;
        uint64_t done = 0;
        double secs = 0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (secs < 1.0 && done < 200000) {
            for (size_t k = 0; k < batches[b]; k++) {
                es[k] = (struct io_entry){.term = 1, .index = next++, .buf = payload, .len = 1024};
            }
            assert_int_equal(io_log_append(&f->log, es, batches[b]), 0);
            assert_int_equal(io_log_sync(&f->log), 0);
            done += batches[b];
            clock_gettime(CLOCK_MONOTONIC, &t1);
            secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
        }
        printf("bench: 1 KiB entries, batch %2zu per fdatasync: %8.0f appends/s (%" PRIu64
               " in %.2f s, %s)\n",
               batches[b], (double)done / secs, done, secs, f->dir);
    }
    io_log_close(&f->log);
}

int main(void)
{
    /* Tests read the torn-tail warnings: make sure they are logged (read once, at first use). */
    setenv("WALRAFT_LOG", "warn", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_io_log_round_trip_across_segments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_log_every_cut_of_last_record_is_a_torn_tail, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_io_log_preallocated_segments_end_clean, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_io_log_preallocated_torn_record_before_zeros, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_io_log_flipped_bit_in_tail_record_is_dropped, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_io_log_flipped_bit_in_middle_record_fails_open, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_io_log_record_image_inside_torn_payload_is_still_a_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_log_flipped_bit_in_closed_segment_fails_open, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_io_log_gap_between_segments_fails_open, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_io_log_malformed_segment_name_fails_open, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_io_log_truncate_suffix_then_append_same_indexes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_io_log_truncate_prefix_survives_reopen, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_io_log_reset_to_snapshot_survives_reopen, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_io_log_enospc_during_append_keeps_log_consistent,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_log_failed_fsync_is_not_durable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_log_enospc_creating_a_segment_then_recovers, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_io_log_failed_cleanup_breaks_log_until_reopen, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_io_log_leftover_open_segment_is_closed_at_startup,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_log_compresses_only_when_it_helps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_log_sync_is_one_fdatasync_per_batch, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_io_log_open_syncs_what_it_reads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_log_failed_cleanup_is_repaired_by_next_call, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_io_log_failed_anchor_write_breaks_log, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_io_log_failed_anchor_write_is_repaired_by_next_call,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_log_failed_cut_of_closed_segment_keeps_appending,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_log_get_after_rewrite_reads_new_segment, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_io_log_failed_suffix_truncation_leaves_log_usable,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_log_bad_appends_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_log_bench_group_commit, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
