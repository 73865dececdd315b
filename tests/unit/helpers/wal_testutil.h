/* Test utilities for the wal/ unit tests: temporary directories, whole-file I/O, SQLite one-liners,
 * wal-index mappings (file-backed with one mmap per region, or separately malloc'd regions, so
 * that regions are never contiguous), and the walcheck.py second opinion. Header-only (static
 * inline) so that it adds nothing to other modules' test binaries. */
#ifndef WALRAFT_TEST_WAL_TESTUTIL_H
#define WALRAFT_TEST_WAL_TESTUTIL_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include "wal/wal.h"

#define WT_MAX_REGIONS 64

static inline void wt_die(const char *what)
{
    fprintf(stderr, "test helper: %s: %s\n", what, strerror(errno));
    abort();
}

/* mkdtemp under /tmp; path buffer of at least 64 bytes. */
static inline void wt_tmpdir(char *path, size_t cap)
{
    snprintf(path, cap, "/tmp/walraft-wal-XXXXXX");
    if (mkdtemp(path) == NULL) {
        wt_die("mkdtemp");
    }
}

static inline void wt_rmrf(const char *path)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) {
        fprintf(stderr, "test helper: cannot remove %s\n", path);
    }
}

/* Whole file into a malloc'd buffer (caller frees); NULL and *len = 0 when it does not exist. */
static inline uint8_t *wt_read_file(const char *path, size_t *len)
{
    *len = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        wt_die("fstat");
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, buf + got, n - got, (off_t)got);
        if (r <= 0) {
            wt_die("pread");
        }
        got += (size_t)r;
    }
    close(fd);
    *len = n;
    return buf;
}

static inline void wt_write_file(const char *path, const void *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        wt_die("open for write");
    }
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, (const uint8_t *)buf + done, len - done);
        if (w <= 0) {
            wt_die("write");
        }
        done += (size_t)w;
    }
    close(fd);
}

static inline void wt_copy_file(const char *from, const char *to)
{
    size_t len;
    uint8_t *buf = wt_read_file(from, &len);
    if (buf == NULL) {
        wt_die("copy: read");
    }
    wt_write_file(to, buf, len);
    free(buf);
}

/* Runs SQL, aborting the test binary on failure with SQLite's message. */
static inline void wt_exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "test helper: %s: %s\n", sql, err ? err : "?");
        sqlite3_free(err);
        abort();
    }
}

/* First column of the first row as an integer. */
static inline int64_t wt_query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "test helper: %s: %s\n", sql, sqlite3_errmsg(db));
        abort();
    }
    int64_t v = -1;
    if (sqlite3_step(st) == SQLITE_ROW) {
        v = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return v;
}

/* --- wal-index mappings ----------------------------------------------------------------------- */

/* Regions malloc'd one by one (never contiguous), zero-filled on creation. */
struct wt_mem_shm {
    uint8_t *region[WT_MAX_REGIONS];
    unsigned maps; /* map() calls, to check that work stays bounded */
};

static inline int wt_mem_map(void *ctx, uint32_t region, int extend, volatile void **out)
{
    struct wt_mem_shm *m = ctx;
    m->maps++;
    if (region >= WT_MAX_REGIONS) {
        return 1;
    }
    if (m->region[region] == NULL) {
        if (!extend) {
            return 1;
        }
        m->region[region] = calloc(1, WAL_INDEX_REGION_SIZE);
        if (m->region[region] == NULL) {
            return 1;
        }
    }
    *out = m->region[region];
    return 0;
}

static inline void wt_mem_free(struct wt_mem_shm *m)
{
    for (unsigned i = 0; i < WT_MAX_REGIONS; i++) {
        free(m->region[i]);
        m->region[i] = NULL;
    }
}

/* Writes the regions (missing ones as zeros) to a -shm file, for walcheck.py. */
static inline void wt_mem_dump(const struct wt_mem_shm *m, const char *path)
{
    unsigned n = 0;
    for (unsigned i = 0; i < WT_MAX_REGIONS; i++) {
        if (m->region[i] != NULL) {
            n = i + 1;
        }
    }
    uint8_t *buf = calloc(n ? n : 1, WAL_INDEX_REGION_SIZE);
    for (unsigned i = 0; i < n; i++) {
        if (m->region[i] != NULL) {
            memcpy(buf + (size_t)i * WAL_INDEX_REGION_SIZE, m->region[i], WAL_INDEX_REGION_SIZE);
        }
    }
    wt_write_file(path, buf, (size_t)n * WAL_INDEX_REGION_SIZE);
    free(buf);
}

/* A -shm file, each region mmap'd on its own (MAP_SHARED), grown with ftruncate on extend. */
struct wt_file_shm {
    int fd;
    volatile void *region[WT_MAX_REGIONS];
};

static inline int wt_file_map(void *ctx, uint32_t region, int extend, volatile void **out)
{
    struct wt_file_shm *f = ctx;
    if (region >= WT_MAX_REGIONS) {
        return 1;
    }
    if (f->region[region] == NULL) {
        struct stat st;
        if (fstat(f->fd, &st) != 0) {
            return 1;
        }
        off_t need = (off_t)(region + 1) * WAL_INDEX_REGION_SIZE;
        if (st.st_size < need) {
            if (!extend || ftruncate(f->fd, need) != 0) {
                return 1;
            }
        }
        void *p = mmap(NULL, WAL_INDEX_REGION_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, f->fd,
                       (off_t)region * WAL_INDEX_REGION_SIZE);
        if (p == MAP_FAILED) {
            return 1;
        }
        f->region[region] = p;
    }
    *out = f->region[region];
    return 0;
}

static inline int wt_file_shm_open(struct wt_file_shm *f, const char *path)
{
    memset(f, 0, sizeof *f);
    f->fd = open(path, O_RDWR);
    return f->fd < 0 ? -1 : 0;
}

static inline void wt_file_shm_close(struct wt_file_shm *f)
{
    for (unsigned i = 0; i < WT_MAX_REGIONS; i++) {
        if (f->region[i] != NULL) {
            munmap((void *)f->region[i], WAL_INDEX_REGION_SIZE);
            f->region[i] = NULL;
        }
    }
    if (f->fd >= 0) {
        close(f->fd);
    }
    f->fd = -1;
}

/* A WAL file accessed with pread/pwrite. */
static inline int wt_fd_write(void *ctx, const void *buf, size_t n, uint64_t off)
{
    int fd = *(int *)ctx;
    return pwrite(fd, buf, n, (off_t)off) == (ssize_t)n ? 0 : 1;
}

static inline int wt_fd_read(void *ctx, void *buf, size_t n, uint64_t off)
{
    int fd = *(int *)ctx;
    return pread(fd, buf, n, (off_t)off) == (ssize_t)n ? 0 : 1;
}

/* --- walcheck.py ------------------------------------------------------------------------------ */

/* Path of walcheck.py (../shared/tools relative to the repo root, where tests run), or NULL with
 * a notice when it is not there. */
static inline const char *wt_walcheck_path(void)
{
    static const char *const candidates[] = {"../shared/tools/walcheck.py",
                                             "/work/shared/tools/walcheck.py"};
    const char *env = getenv("WALCHECK");
    if (env != NULL && access(env, R_OK) == 0) {
        return env;
    }
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++) {
        if (access(candidates[i], R_OK) == 0) {
            return candidates[i];
        }
    }
    return NULL;
}

/* Runs walcheck.py shm SHM WAL quietly; returns its exit status, or 0 (with a printed notice)
 * when the checker or Python is absent. */
static inline int wt_walcheck(const char *shm, const char *wal)
{
    const char *tool = wt_walcheck_path();
    const char *py = access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
    if (tool == NULL) {
        printf("notice: walcheck.py not found, second-opinion check skipped\n");
        return 0;
    }
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s shm '%s' '%s' > '%s.walcheck' 2>&1", py, tool, shm, wal, wal);
    int st = system(cmd);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) == 127) {
        printf("notice: cannot run walcheck.py, second-opinion check skipped\n");
        return 0;
    }
    char out[600];
    snprintf(out, sizeof out, "%s.walcheck", wal);
    size_t n;
    uint8_t *txt = wt_read_file(out, &n);
    if (txt != NULL) {
        if (WEXITSTATUS(st) != 0) {
            fprintf(stderr, "walcheck says:\n%.*s\n", (int)(n > 4000 ? 4000 : n), (char *)txt);
        } else {
            /* The summary line: "checked N frames, M distinct pages". */
            const char *c = memmem(txt, n, "checked", 7);
            const char *e = c ? memchr(c, '\n', n - (size_t)(c - (const char *)txt)) : NULL;
            if (c != NULL && e != NULL) {
                printf("walcheck: %.*s\n", (int)(e - c), c);
            }
        }
        free(txt);
        unlink(out);
    }
    return WEXITSTATUS(st);
}

#endif /* WALRAFT_TEST_WAL_TESTUTIL_H */
