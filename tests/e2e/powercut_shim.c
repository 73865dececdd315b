/*
 * LD_PRELOAD shim for the power-cut tests (test_sql.py). Before each write to a file whose path
 * contains POWERCUT_MATCH (default "-raft/": a node's Raft log and metadata), it appends the bytes
 * about to be overwritten to the undo file POWERCUT_UNDO; at each fsync/fdatasync of such a file it
 * appends a sync marker. After the process is killed, the test rolls back every write made after
 * the file's last sync (tests/e2e/test_sql.py, powercut_revert): what a power cut may lose, at
 * worst. Other files (the database, its WAL) keep what the process wrote, as page cache written
 * back before the cut would.
 *
 * Undo records (native byte order), appended with one write(2) each:
 *     'W' u32 path_len, path, u64 seq, i64 offset, i64 size_before, u32 n_old, n_old old bytes
 *     'S' u32 path_len, path, u64 seq
 * A W record's seq numbers it; an S record says that the W records of its path numbered below
 * its seq are durable (the writes recorded before that sync call started).
 * The undo file is written through the page cache only: it must survive the killed process, not
 * the machine.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_FD 4096

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char *tracked[MAX_FD]; /* path of a tracked descriptor, or NULL */
static int undo_fd = -2;      /* -2: not opened yet; -1: disabled */
static const char *match = "-raft/";
static uint64_t next_seq;

static int (*real_openat)(int, const char *, int, ...);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_write)(int, const void *, size_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_close)(int);

static void init(void)
{
    if (real_openat != NULL) {
        return;
    }
    real_openat = (int (*)(int, const char *, int, ...))dlsym(RTLD_NEXT, "openat");
    real_pwrite = (ssize_t(*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite");
    real_write = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    real_close = (int (*)(int))dlsym(RTLD_NEXT, "close");
}

/* mu held */
static int undo(void)
{
    if (undo_fd == -2) {
        const char *path = getenv("POWERCUT_UNDO");
        const char *m = getenv("POWERCUT_MATCH");
        if (m != NULL && m[0] != '\0') {
            match = m;
        }
        undo_fd = path ? real_openat(AT_FDCWD, path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                                     0644)
                       : -1;
        if (undo_fd < 0) {
            undo_fd = -1;
        }
    }
    return undo_fd;
}

static void put(char **p, const void *src, size_t n)
{
    memcpy(*p, src, n);
    *p += n;
}

/* Appends a record (mu held). A failure here would make the test's rollback wrong: abort. */
static void record(char kind, const char *path, uint64_t seq, const int64_t *offset,
                   const int64_t *size_before, const void *old, uint32_t n_old)
{
    uint32_t plen = (uint32_t)strlen(path);
    size_t total = 1 + 4 + plen + 8 + (kind == 'W' ? 8 + 8 + 4 + n_old : 0);
    char *buf = malloc(total), *p = buf;
    if (buf == NULL) {
        abort();
    }
    put(&p, &kind, 1);
    put(&p, &plen, 4);
    put(&p, path, plen);
    put(&p, &seq, 8);
    if (kind == 'W') {
        put(&p, offset, 8);
        put(&p, size_before, 8);
        put(&p, &n_old, 4);
        put(&p, old, n_old);
    }
    if (real_write(undo(), buf, total) != (ssize_t)total) {
        abort();
    }
    free(buf);
}

static void track(int fd, const char *path)
{
    if (fd < 0 || fd >= MAX_FD || path == NULL) {
        return;
    }
    pthread_mutex_lock(&mu);
    free(tracked[fd]);
    tracked[fd] = NULL;
    if (undo() >= 0) {
        char full[4096];
        if (path[0] != '/' && getcwd(full, sizeof full) != NULL) {
            size_t n = strlen(full);
            snprintf(full + n, sizeof full - n, "/%s", path);
        } else {
            snprintf(full, sizeof full, "%s", path);
        }
        if (strstr(full, match) != NULL) {
            tracked[fd] = strdup(full);
        }
    }
    pthread_mutex_unlock(&mu);
}

int open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    return openat(AT_FDCWD, path, flags, mode); /* the one place that opens and tracks */
}

int open64(const char *path, int flags, ...) __attribute__((alias("open")));

int openat(int dirfd, const char *path, int flags, ...)
{
    init();
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = (mode_t)va_arg(ap, int);
        va_end(ap);
    }
    int fd = real_openat(dirfd, path, flags, mode);
    track(fd, dirfd == AT_FDCWD || path[0] == '/' ? path : NULL);
    return fd;
}

int openat64(int dirfd, const char *path, int flags, ...) __attribute__((alias("openat")));

ssize_t pwrite(int fd, const void *buf, size_t len, off_t offset)
{
    init();
    if (fd >= 0 && fd < MAX_FD) {
        pthread_mutex_lock(&mu);
        if (tracked[fd] != NULL) {
            struct stat st;
            int64_t size_before = fstat(fd, &st) == 0 ? (int64_t)st.st_size : 0;
            int64_t off = (int64_t)offset;
            uint32_t n_old = 0;
            if (off < size_before) {
                int64_t avail = size_before - off;
                n_old = (uint32_t)((int64_t)len < avail ? (int64_t)len : avail);
            }
            char *old = malloc(n_old ? n_old : 1);
            if (old == NULL || pread(fd, old, n_old, offset) != (ssize_t)n_old) {
                abort();
            }
            record('W', tracked[fd], next_seq++, &off, &size_before, old, n_old);
            free(old);
        }
        pthread_mutex_unlock(&mu);
    }
    return real_pwrite(fd, buf, len, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t len, off_t offset) __attribute__((alias("pwrite")));

/* The seq below which writes are covered by a sync that starts now. */
static uint64_t sync_start(void)
{
    pthread_mutex_lock(&mu);
    uint64_t seq = next_seq;
    pthread_mutex_unlock(&mu);
    return seq;
}

static void synced(int fd, uint64_t seq)
{
    if (fd >= 0 && fd < MAX_FD) {
        pthread_mutex_lock(&mu);
        if (tracked[fd] != NULL) {
            record('S', tracked[fd], seq, NULL, NULL, NULL, 0);
        }
        pthread_mutex_unlock(&mu);
    }
}

/* A sync through `fn`; on success, a marker covering the writes recorded before it started. */
static int sync_marked(int (*fn)(int), int fd)
{
    uint64_t seq = sync_start();
    int rc = fn(fd);
    if (rc == 0) {
        synced(fd, seq);
    }
    return rc;
}

int fsync(int fd)
{
    init();
    return sync_marked(real_fsync, fd);
}

int fdatasync(int fd)
{
    init();
    return sync_marked(real_fdatasync, fd);
}

int close(int fd)
{
    init();
    if (fd >= 0 && fd < MAX_FD) {
        pthread_mutex_lock(&mu);
        free(tracked[fd]);
        tracked[fd] = NULL;
        pthread_mutex_unlock(&mu);
    }
    return real_close(fd);
}
