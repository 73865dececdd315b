/*
 * The durable Raft log: segment files, record codec, start-up scan, group commit, truncation and
 * the rewind after a failed write. See log.h for the format and the rules.
 */
#include "consensus/io/log.h"
#include "consensus/io/bytes.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <lz4.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "consensus/io/logging.h"
#include "consensus/io/meta.h"
#include "consensus/io/sys.h"

#define ANCHOR_NAME "log-anchor"
#define ANCHOR_MAGIC 0x414c5257u /* "WRLA" */
#define ANCHOR_VERSION 1u
#define ANCHOR_PAYLOAD_BYTES 16
#define SEGMENT_BYTES_LIMIT (1u << 30)       /* largest segment_bytes_max accepted */
#define SEGMENT_FILE_MAX ((uint64_t)1 << 31) /* larger files are not ours: corruption */
#define NAME_DIGITS 16

/* Why the log refuses calls until repair() succeeds (struct io_log.broken). */
enum { BROKEN_NONE = 0, BROKEN_REWIND, BROKEN_SYNC, BROKEN_ANCHOR, BROKEN_REOPEN };

/* One segment file. Records of the segment are first .. first + count - 1. */
struct io_log_segment {
    uint64_t first;     /* index of its first record; for an empty segment, the next index */
    uint64_t count;     /* records in the segment (including ones buffered, not yet written) */
    uint64_t last_term; /* term of its last record (when count > 0) */
    uint64_t seq;       /* open segments: the <seq> of "open-<seq>" */
    int is_open;
    uint32_t *offsets; /* offsets[k]: byte offset of record first + k */
    size_t offsets_cap;
};

/* A record decoded from bytes. */
struct rec {
    uint8_t type, flags;
    uint64_t term, index;
    uint32_t stored_len, raw_len;
    const unsigned char *payload;
};

const char *io_log_strerror(int rc)
{
    static const char *msgs[] = {
#define IO_LOG_ERROR_MSG(code, msg) msg,
        IO_LOG_ERRORS(IO_LOG_ERROR_MSG)
#undef IO_LOG_ERROR_MSG
    };
    if (rc < 0 || rc >= IO_LOG_NERRORS) {
        return "unknown error";
    }
    return msgs[rc];
}

/* --- record codec (byte helpers: bytes.h) ---------------------------------------------------- */

static uint64_t record_checksum(const unsigned char *hdr, const unsigned char *payload,
                                size_t stored_len)
{
    return XXH64(payload, stored_len, XXH64(hdr, 32, 0));
}

/* Decodes the header at p (avail bytes readable) and, when `with_payload`, checks the payload is
 * present and the checksum matches. Returns NULL for a valid record, else why it is not. */
static const char *decode_record(const unsigned char *p, size_t avail, int with_payload,
                                 struct rec *r)
{
    if (avail < IO_LOG_HEADER_BYTES) {
        return "short header";
    }
    if (io_get32(p) != IO_LOG_MAGIC) {
        return "bad magic";
    }
    if (p[4] != IO_LOG_VERSION) {
        return "unknown record version";
    }
    r->type = p[5];
    r->flags = p[6];
    if ((r->flags & ~IO_LOG_FLAG_LZ4) != 0 || p[7] != 0) {
        return "unknown flags";
    }
    r->term = io_get64(p + 8);
    r->index = io_get64(p + 16);
    r->stored_len = io_get32(p + 24);
    r->raw_len = io_get32(p + 28);
    if (r->stored_len > IO_LOG_ENTRY_BYTES_MAX || r->raw_len > IO_LOG_ENTRY_BYTES_MAX) {
        return "payload length out of range";
    }
    if (!(r->flags & IO_LOG_FLAG_LZ4) && r->stored_len != r->raw_len) {
        return "stored and raw lengths differ";
    }
    r->payload = p + IO_LOG_HEADER_BYTES;
    if (!with_payload) {
        return NULL;
    }
    if (avail - IO_LOG_HEADER_BYTES < r->stored_len) {
        return "short payload";
    }
    if (io_get64(p + 32) != record_checksum(p, r->payload, r->stored_len)) {
        return "checksum mismatch";
    }
    return NULL;
}

/* Decompresses (or copies) a record's payload into `out` (raw_len bytes). */
static int payload_extract(const struct rec *r, unsigned char *out)
{
    if (!(r->flags & IO_LOG_FLAG_LZ4)) {
        if (r->raw_len > 0) {
            memcpy(out, r->payload, r->raw_len);
        }
        return 0;
    }
    int n = LZ4_decompress_safe((const char *)r->payload, (char *)out, (int)r->stored_len,
                                (int)r->raw_len);
    return n == (int)r->raw_len ? 0 : -1;
}

/* --- errors ---------------------------------------------------------------------------------- */

__attribute__((format(printf, 3, 4))) static int fail(struct io_log *log, int rc, const char *fmt,
                                                      ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(log->errmsg, sizeof log->errmsg, fmt, ap);
    va_end(ap);
    return rc;
}

/* Records a failed system call (errno) and returns its code. */
static int sys_fail(struct io_log *log, const char *what, const char *file)
{
    int e = errno;
    int rc = e == ENOSPC || e == EDQUOT ? IO_LOG_ENOSPC : e == ENOMEM ? IO_LOG_ENOMEM : IO_LOG_EIO;
    return fail(log, rc, "%s %s/%s: %s", what, log->dir, file, strerror(e));
}

/* --- segments -------------------------------------------------------------------------------- */

static void seg_name(const struct io_log_segment *s, char *buf, size_t len)
{
    if (s->is_open) {
        snprintf(buf, len, "open-%016" PRIu64, s->seq);
    } else {
        snprintf(buf, len, "%016" PRIu64 "-%016" PRIu64, s->first, s->first + s->count - 1);
    }
}

static struct io_log_segment *open_seg(struct io_log *log)
{
    if (log->nsegs == 0 || !log->segs[log->nsegs - 1].is_open) {
        return NULL;
    }
    return &log->segs[log->nsegs - 1];
}

static struct io_log_segment *seg_push(struct io_log *log)
{
    if (log->nsegs == log->segs_cap) {
        size_t cap = log->segs_cap ? log->segs_cap * 2 : 8;
        struct io_log_segment *p = realloc(log->segs, cap * sizeof *p);
        if (p == NULL) {
            return NULL;
        }
        log->segs = p;
        log->segs_cap = cap;
    }
    struct io_log_segment *s = &log->segs[log->nsegs++];
    memset(s, 0, sizeof *s);
    return s;
}

/* Removes segment k from the array (the file is the caller's business). */
static void seg_remove(struct io_log *log, size_t k)
{
    assert(k < log->nsegs);
    free(log->segs[k].offsets);
    memmove(&log->segs[k], &log->segs[k + 1], (log->nsegs - k - 1) * sizeof *log->segs);
    log->nsegs--;
}

static int seg_add_offset(struct io_log_segment *s, uint64_t offset)
{
    assert(offset <= UINT32_MAX);
    if (s->count == s->offsets_cap) {
        size_t cap = s->offsets_cap ? s->offsets_cap * 2 : 256;
        uint32_t *p = realloc(s->offsets, cap * sizeof *p);
        if (p == NULL) {
            return -1;
        }
        s->offsets = p;
        s->offsets_cap = cap;
    }
    s->offsets[s->count++] = (uint32_t)offset;
    return 0;
}

/* The segment holding `index`, which must be a physical entry. */
static size_t seg_find(const struct io_log *log, uint64_t index)
{
    size_t lo = 0, hi = log->nsegs;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (log->segs[mid].first <= index) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/* Sets last index and term from what the segments hold and the anchor. */
static void recompute_last(struct io_log *log)
{
    uint64_t last = 0, term = 0;
    int found = 0;
    for (size_t k = log->nsegs; k > 0; k--) {
        const struct io_log_segment *s = &log->segs[k - 1];
        if (s->count > 0) {
            last = s->first + s->count - 1;
            term = s->last_term;
            found = 1;
            break;
        }
    }
    if (found && last >= log->first_index) {
        log->last_index = last;
        log->last_term = term;
    } else {
        log->last_index = log->first_index - 1;
        log->last_term = log->prev_term;
    }
}

/* Forgets the cached read descriptor; called whenever a segment file goes or changes name. */
static void read_cache_drop(struct io_log *log)
{
    if (log->read_fd >= 0) {
        io_sys.close(log->read_fd);
        log->read_fd = -1;
    }
}

static int dir_sync(struct io_log *log)
{
    if (io_sys.fsync(log->dirfd) != 0) {
        return sys_fail(log, "fsync directory", ".");
    }
    log->dir_dirty = 0;
    return 0;
}

static int unlink_seg(struct io_log *log, const struct io_log_segment *s)
{
    char name[64], path[sizeof log->dir + 64];
    seg_name(s, name, sizeof name);
    snprintf(path, sizeof path, "%s/%s", log->dir, name);
    read_cache_drop(log);
    log->dir_dirty = 1;
    if (io_sys.unlink(path) != 0 && errno != ENOENT) {
        return sys_fail(log, "unlink", name);
    }
    return 0;
}

/* Deletes the newest segment. The open segment's descriptor and buffer go only once its file
 * is gone: if the unlink fails, the log is exactly as before. */
static int drop_last_segment(struct io_log *log)
{
    assert(log->nsegs > 0);
    struct io_log_segment *s = &log->segs[log->nsegs - 1];
    int rc = unlink_seg(log, s);
    if (rc != 0) {
        return rc;
    }
    if (s->is_open) {
        if (log->fd >= 0) {
            io_sys.close(log->fd);
        }
        log->fd = -1;
        log->wlen = 0;
        log->file_size = 0;
        log->durable_size = 0;
        log->alloc_size = 0;
    }
    seg_remove(log, log->nsegs - 1);
    return 0;
}

/* --- write path ------------------------------------------------------------------------------ */

/*
 * After a failed write or fdatasync: forget everything after the last successful sync of the
 * open segment. Bytes the kernel could not write, or could not make durable, must never be read
 * back as if they were. If the truncation itself fails the log is broken until repair() redoes
 * it (or a reopen removes any torn tail).
 */
static void rewind_to_durable(struct io_log *log)
{
    struct io_log_segment *s = open_seg(log);
    log->wlen = 0;
    if (s == NULL) {
        recompute_last(log);
        return;
    }
    log->alloc_size = 0; /* cut below, or the file stays as it is: zeros or records past */
    if (log->fd >= 0 && io_sys.ftruncate(log->fd, (off_t)log->durable_size) != 0) {
        io_logf(IO_LOG_ERROR, "log",
                "%s: cannot truncate the open segment after a failed write (%s); refusing "
                "writes until reopened",
                log->dir, strerror(errno));
        log->broken = BROKEN_REWIND;
    }
    log->file_size = log->durable_size;
    while (s->count > 0 && s->offsets[s->count - 1] >= log->durable_size) {
        s->count--;
    }
    if (s->count > 0) {
        s->last_term = log->durable_seg_term;
    }
    recompute_last(log);
    if (log->durable_index > log->last_index) {
        log->durable_index = log->last_index;
        log->durable_term = log->last_term;
    }
}

/* Writes the buffer out to the open segment. */
static int flush(struct io_log *log)
{
    if (log->wlen == 0) {
        return 0;
    }
    assert(log->fd >= 0);
    if (io_sys_pwrite_all(log->fd, log->wbuf, log->wlen, (off_t)log->file_size) != 0) {
        struct io_log_segment *s = open_seg(log);
        char name[64];
        seg_name(s, name, sizeof name);
        int rc = sys_fail(log, "write", name);
        rewind_to_durable(log);
        return rc;
    }
    log->file_size += log->wlen;
    log->wlen = 0;
    return 0;
}

/* Makes the open segment's written bytes durable. */
static int datasync(struct io_log *log)
{
    struct io_log_segment *s = open_seg(log);
    if (s == NULL || log->fd < 0) {
        return 0;
    }
    if (io_sys.fdatasync(log->fd) != 0) {
        char name[64];
        seg_name(s, name, sizeof name);
        int rc = sys_fail(log, "fdatasync", name);
        rewind_to_durable(log);
        return rc;
    }
    log->durable_size = log->file_size;
    log->durable_seg_term = s->last_term;
    return 0;
}

/* Fills a new, empty open segment with zeros up to segment_bytes_max and syncs it, so that the
 * appends that follow overwrite allocated blocks. Best effort: on any failure (a full disk) the
 * file goes back to empty and the log appends as it would without, reporting errors there. */
static void preallocate(struct io_log *log, int fd)
{
    static const unsigned char zeros[64 * 1024];
    size_t want = log->cfg.segment_bytes_max, done = 0;
    while (done < want) {
        size_t n = want - done < sizeof zeros ? want - done : sizeof zeros;
        if (io_sys_pwrite_all(fd, zeros, n, (off_t)done) != 0) {
            break;
        }
        done += n;
    }
    if (done == want && io_sys.fdatasync(fd) == 0) {
        log->alloc_size = want;
        return;
    }
    if (io_sys.ftruncate(fd, 0) != 0) {
        log->alloc_size = done; /* zeros past the records: still a clean end on reopen */
    }
}

static int create_open_seg(struct io_log *log)
{
    char name[64], path[sizeof log->dir + 64];
    struct io_log_segment *s = seg_push(log);
    if (s == NULL) {
        return fail(log, IO_LOG_ENOMEM, "out of memory");
    }
    s->is_open = 1;
    s->seq = log->open_seq_next;
    s->first = log->last_index + 1;
    seg_name(s, name, sizeof name);
    snprintf(path, sizeof path, "%s/%s", log->dir, name);
    int fd = io_sys.open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        int rc = sys_fail(log, "create", name);
        seg_remove(log, log->nsegs - 1);
        return rc;
    }
    log->open_seq_next++;
    log->fd = fd;
    log->file_size = 0;
    log->durable_size = 0;
    log->alloc_size = 0;
    log->dir_dirty = 1;
    if (log->cfg.preallocate) {
        preallocate(log, fd);
    }
    return 0;
}

/* Closes the open segment: written out, fdatasync'ed, renamed to its index range. The rename
 * becomes durable with the next directory fsync; until then either name loads correctly. */
static int roll(struct io_log *log)
{
    struct io_log_segment *s = open_seg(log);
    char from[64], to[64], pfrom[sizeof log->dir + 64], pto[sizeof log->dir + 64];
    int rc;

    assert(s != NULL);
    assert(s->count > 0);
    rc = flush(log);
    if (rc != 0) {
        return rc;
    }
    if (log->alloc_size > log->file_size) {
        /* A closed segment holds its records and nothing else (the fdatasync below makes the
         * new length durable before the rename can be). */
        if (io_sys.ftruncate(log->fd, (off_t)log->file_size) != 0) {
            seg_name(s, from, sizeof from);
            return sys_fail(log, "truncate", from);
        }
        log->alloc_size = 0;
    }
    rc = datasync(log);
    if (rc != 0) {
        return rc;
    }
    if (s->count == 0) { /* everything was rewound: nothing to close */
        return 0;
    }
    seg_name(s, from, sizeof from);
    s->is_open = 0;
    seg_name(s, to, sizeof to);
    snprintf(pfrom, sizeof pfrom, "%s/%s", log->dir, from);
    snprintf(pto, sizeof pto, "%s/%s", log->dir, to);
    if (io_sys.rename(pfrom, pto) != 0) {
        s->is_open = 1;
        return sys_fail(log, "rename", from);
    }
    log->dir_dirty = 1;
    io_sys.close(log->fd);
    log->fd = -1;
    log->file_size = 0;
    log->durable_size = 0;
    log->alloc_size = 0;
    return 0;
}

static int wbuf_reserve(struct io_log *log, size_t more)
{
    if (log->wcap - log->wlen >= more) {
        return 0;
    }
    size_t cap = log->wcap ? log->wcap : 4096;
    while (cap - log->wlen < more) {
        cap *= 2;
    }
    unsigned char *p = realloc(log->wbuf, cap);
    if (p == NULL) {
        return -1;
    }
    log->wbuf = p;
    log->wcap = cap;
    return 0;
}

/* Encodes one record at the end of the write buffer. */
static void encode_record(struct io_log *log, const struct io_entry *e, size_t *rec_len)
{
    unsigned char *hdr = log->wbuf + log->wlen;
    unsigned char *payload = hdr + IO_LOG_HEADER_BYTES;
    size_t stored = e->len;
    uint8_t flags = 0;

    if (!log->cfg.no_compress && e->len >= log->cfg.compress_min_bytes &&
        e->len <= (size_t)LZ4_MAX_INPUT_SIZE) {
        /* A capacity one byte short of the input makes lz4 give up unless it shrinks it. */
        int n = LZ4_compress_default(e->buf, (char *)payload, (int)e->len, (int)e->len - 1);
        if (n > 0) {
            stored = (size_t)n;
            flags |= IO_LOG_FLAG_LZ4;
        }
    }
    if (!(flags & IO_LOG_FLAG_LZ4) && e->len > 0) {
        memcpy(payload, e->buf, e->len);
    }
    io_put32(hdr, IO_LOG_MAGIC);
    hdr[4] = IO_LOG_VERSION;
    hdr[5] = e->type;
    hdr[6] = flags;
    hdr[7] = 0;
    io_put64(hdr + 8, e->term);
    io_put64(hdr + 16, e->index);
    io_put32(hdr + 24, (uint32_t)stored);
    io_put32(hdr + 28, (uint32_t)e->len);
    io_put64(hdr + 32, record_checksum(hdr, payload, stored));
    *rec_len = IO_LOG_HEADER_BYTES + stored;
#ifndef NDEBUG
    struct rec r;
    assert(decode_record(hdr, *rec_len, 1, &r) == NULL);
    assert(r.index == e->index);
#endif
}

static int anchor_store(struct io_log *log, uint64_t first_index, uint64_t prev_term);

/*
 * A log broken by a failed clean-up tries the clean-up again before every call, so a caller
 * that retries until the disk recovers needs no reopen. What each state redoes:
 *   BROKEN_REWIND  truncate the open segment back to its durable size;
 *   BROKEN_SYNC    fdatasync the open segment after a suffix truncation;
 *   BROKEN_ANCHOR  write the anchor memory holds (the failed write may or may not have landed);
 *   BROKEN_REOPEN  open the segment a suffix truncation renamed open, and take its size.
 */
static int repair(struct io_log *log)
{
    struct io_log_segment *s = open_seg(log);
    char name[64] = "-";
    int rc = 0;

    if (log->broken == BROKEN_NONE) {
        return 0;
    }
    if (s != NULL) {
        seg_name(s, name, sizeof name);
    }
    switch (log->broken) {
    case BROKEN_REWIND:
        if (io_sys.ftruncate(log->fd, (off_t)log->durable_size) != 0) {
            rc = sys_fail(log, "truncate", name);
        }
        break;
    case BROKEN_SYNC:
        if (io_sys.fdatasync(log->fd) != 0) {
            rc = sys_fail(log, "fdatasync", name);
        }
        break;
    case BROKEN_ANCHOR:
        rc = anchor_store(log, log->first_index, log->prev_term);
        break;
    case BROKEN_REOPEN: {
        char path[sizeof log->dir + 64];
        struct stat st;
        assert(s != NULL);
        snprintf(path, sizeof path, "%s/%s", log->dir, name);
        if (log->fd < 0) {
            log->fd = io_sys.open(path, O_RDWR | O_CLOEXEC, 0);
        }
        if (log->fd < 0) {
            rc = sys_fail(log, "open", name);
        } else if (io_sys.fstat(log->fd, &st) != 0) {
            rc = sys_fail(log, "stat", name);
        } else {
            log->file_size = (uint64_t)st.st_size;
            log->durable_size = log->file_size;
            log->durable_seg_term = s->last_term;
        }
        break;
    }
    default:
        assert(0);
    }
    if (rc != 0) {
        char why[sizeof log->errmsg];
        memcpy(why, log->errmsg, sizeof why);
        return fail(log, IO_LOG_EBROKEN, "%.400s (repairing an earlier failed write)", why);
    }
    io_logf(IO_LOG_WARN, "log", "%s: repaired after a failed write", log->dir);
    log->broken = BROKEN_NONE;
    return 0;
}

int io_log_append(struct io_log *log, const struct io_entry *entries, size_t n)
{
    int rc;

    rc = repair(log);
    if (rc != 0) {
        return rc;
    }
    uint64_t expect = log->last_index + 1, term = log->last_term;
    for (size_t i = 0; i < n; i++) {
        if (entries[i].index != expect || entries[i].term < term) {
            return fail(log, IO_LOG_EINVAL,
                        "append: entry %" PRIu64 " (term %" PRIu64 ") does not follow %" PRIu64
                        " (term %" PRIu64 ")",
                        entries[i].index, entries[i].term, expect - 1, term);
        }
        if (entries[i].len > IO_LOG_ENTRY_BYTES_MAX) {
            return fail(log, IO_LOG_EINVAL, "append: entry %" PRIu64 " has %zu bytes, max %u",
                        entries[i].index, entries[i].len, IO_LOG_ENTRY_BYTES_MAX);
        }
        expect++;
        term = entries[i].term;
    }

    for (size_t i = 0; i < n; i++) {
        const struct io_entry *e = &entries[i];
        struct io_log_segment *s = open_seg(log);
        if (s != NULL && s->count > 0 && log->file_size + log->wlen >= log->cfg.segment_bytes_max) {
            rc = roll(log);
            if (rc != 0) {
                return rc;
            }
            s = open_seg(log);
        }
        if (s == NULL) {
            rc = create_open_seg(log);
            if (rc != 0) {
                return rc;
            }
            s = open_seg(log);
        }
        if (e->index != log->last_index + 1) { /* a failed write rewound the log */
            return fail(log, IO_LOG_EIO, "append: log rewound to %" PRIu64, log->last_index);
        }
        if (wbuf_reserve(log, IO_LOG_HEADER_BYTES + e->len) != 0 ||
            seg_add_offset(s, log->file_size + log->wlen) != 0) {
            return fail(log, IO_LOG_ENOMEM, "append: out of memory");
        }
        size_t rec_len;
        encode_record(log, e, &rec_len);
        log->wlen += rec_len;
        s->last_term = e->term;
        log->last_index = e->index;
        log->last_term = e->term;
        if (log->wlen >= log->cfg.buffer_bytes) {
            rc = flush(log);
            if (rc != 0) {
                return rc;
            }
        }
    }
    return 0;
}

int io_log_sync(struct io_log *log)
{
    int rc;

    rc = repair(log);
    if (rc != 0) {
        return rc;
    }
    rc = flush(log);
    if (rc != 0) {
        return rc;
    }
    if (log->file_size != log->durable_size) {
        rc = datasync(log);
        if (rc != 0) {
            return rc;
        }
    }
    if (log->dir_dirty) {
        rc = dir_sync(log);
        if (rc != 0) {
            return rc;
        }
    }
    log->durable_index = log->last_index;
    log->durable_term = log->last_term;
    return 0;
}

/* --- reading back ---------------------------------------------------------------------------- */

/* Reads `len` bytes at `offset` of segment s (buffer, open descriptor or a fresh descriptor). */
static int seg_read(struct io_log *log, const struct io_log_segment *s, uint64_t offset, void *buf,
                    size_t len)
{
    char name[64], path[sizeof log->dir + 64];
    seg_name(s, name, sizeof name);
    if (s->is_open && offset >= log->file_size) {
        uint64_t at = offset - log->file_size;
        if (at > log->wlen || log->wlen - at < len) {
            return fail(log, IO_LOG_ECORRUPT, "%s/%s: offset %" PRIu64 ": read past the end",
                        log->dir, name, offset);
        }
        memcpy(buf, log->wbuf + at, len);
        return 0;
    }
    int fd = log->fd;
    if (!s->is_open) {
        /* One closed segment stays open for reading: a lagging follower reads runs of entries. */
        if (log->read_fd < 0 || log->read_first != s->first) {
            read_cache_drop(log);
            snprintf(path, sizeof path, "%s/%s", log->dir, name);
            log->read_fd = io_sys.open(path, O_RDONLY | O_CLOEXEC, 0);
            if (log->read_fd < 0) {
                return sys_fail(log, "open", name);
            }
            log->read_first = s->first;
        }
        fd = log->read_fd;
    }
    ssize_t n = io_sys_pread_all(fd, buf, len, (off_t)offset);
    if (n < 0) {
        return sys_fail(log, "read", name);
    }
    if ((size_t)n < len) {
        return fail(log, IO_LOG_ECORRUPT, "%s/%s: offset %" PRIu64 ": record cut short", log->dir,
                    name, offset);
    }
    return 0;
}

/* Reads and checks the record of physical entry `index`; *raw_out (malloc'ed) gets the whole
 * record when `with_payload`, else only the header is read into hdr. */
static int read_record(struct io_log *log, uint64_t index, int with_payload, unsigned char *hdr,
                       unsigned char **rec_out, struct rec *r)
{
    const struct io_log_segment *s = &log->segs[seg_find(log, index)];
    uint64_t offset = s->offsets[index - s->first];
    char name[64];
    const char *why;
    int rc;

    seg_name(s, name, sizeof name);
    rc = seg_read(log, s, offset, hdr, IO_LOG_HEADER_BYTES);
    if (rc != 0) {
        return rc;
    }
    why = decode_record(hdr, IO_LOG_HEADER_BYTES, 0, r);
    if (why == NULL && r->index != index) {
        why = "unexpected index";
    }
    if (why == NULL && with_payload) {
        unsigned char *rec = malloc(IO_LOG_HEADER_BYTES + (size_t)r->stored_len);
        if (rec == NULL) {
            return fail(log, IO_LOG_ENOMEM, "out of memory");
        }
        memcpy(rec, hdr, IO_LOG_HEADER_BYTES);
        rc = seg_read(log, s, offset + IO_LOG_HEADER_BYTES, rec + IO_LOG_HEADER_BYTES,
                      r->stored_len);
        if (rc != 0) {
            free(rec);
            return rc;
        }
        why = decode_record(rec, IO_LOG_HEADER_BYTES + (size_t)r->stored_len, 1, r);
        if (why != NULL) {
            free(rec);
        } else {
            *rec_out = rec;
        }
    }
    if (why != NULL) {
        return fail(log, IO_LOG_ECORRUPT, "%s/%s: offset %" PRIu64 ": %s (entry %" PRIu64 ")",
                    log->dir, name, offset, why, index);
    }
    return 0;
}

int io_log_get(struct io_log *log, uint64_t index, struct io_entry *out)
{
    unsigned char hdr[IO_LOG_HEADER_BYTES];
    unsigned char *rec = NULL;
    struct rec r;

    memset(out, 0, sizeof *out);
    if (index < log->first_index) {
        return fail(log, IO_LOG_ECOMPACTED, "entry %" PRIu64 " is below the first index %" PRIu64,
                    index, log->first_index);
    }
    if (index > log->last_index) {
        return fail(log, IO_LOG_ENOENT, "entry %" PRIu64 " is above the last index %" PRIu64, index,
                    log->last_index);
    }
    int rc = read_record(log, index, 1, hdr, &rec, &r);
    if (rc != 0) {
        return rc;
    }
    unsigned char *payload = malloc(r.raw_len > 0 ? r.raw_len : 1);
    if (payload == NULL) {
        free(rec);
        return fail(log, IO_LOG_ENOMEM, "out of memory");
    }
    if (payload_extract(&r, payload) != 0) {
        free(payload);
        free(rec);
        return fail(log, IO_LOG_ECORRUPT, "%s: entry %" PRIu64 ": lz4 payload does not decode",
                    log->dir, index);
    }
    free(rec);
    out->term = r.term;
    out->index = r.index;
    out->type = r.type;
    out->buf = payload;
    out->len = r.raw_len;
    return 0;
}

void io_log_entry_release(struct io_entry *e)
{
    free((void *)e->buf);
    e->buf = NULL;
    e->len = 0;
}

/* The term of entry `index` (first_index - 1 .. last_index). */
static int term_at(struct io_log *log, uint64_t index, uint64_t *term)
{
    unsigned char hdr[IO_LOG_HEADER_BYTES];
    struct rec r;
    if (index == log->last_index) {
        *term = log->last_term;
        return 0;
    }
    if (index == log->first_index - 1) {
        *term = log->prev_term;
        return 0;
    }
    int rc = read_record(log, index, 0, hdr, NULL, &r);
    if (rc == 0) {
        *term = r.term;
    }
    return rc;
}

int io_log_term(struct io_log *log, uint64_t index, uint64_t *term)
{
    if (index + 1 < log->first_index) {
        return fail(log, IO_LOG_ECOMPACTED, "term of %" PRIu64 ": below the first index %" PRIu64,
                    index, log->first_index);
    }
    if (index > log->last_index) {
        return fail(log, IO_LOG_ENOENT, "term of %" PRIu64 ": above the last index %" PRIu64, index,
                    log->last_index);
    }
    return term_at(log, index, term);
}

/* --- truncation ------------------------------------------------------------------------------ */

static int anchor_store(struct io_log *log, uint64_t first_index, uint64_t prev_term)
{
    unsigned char payload[ANCHOR_PAYLOAD_BYTES];
    io_put64(payload, first_index);
    io_put64(payload + 8, prev_term);
    int rc = io_slots_write(log->anchor, payload);
    if (rc != 0) {
        /* The new copy may have landed anyway (a failed fdatasync says nothing either way), so
         * memory can no longer tell which first index a restart will see: stop until reopened
         * rather than truncate a suffix the new anchor would declare compacted. */
        log->broken = BROKEN_ANCHOR;
        return fail(log, rc, "%s", log->anchor->errmsg);
    }
    return 0;
}

int io_log_truncate_suffix(struct io_log *log, uint64_t index)
{
    int rc;

    rc = repair(log);
    if (rc != 0) {
        return rc;
    }
    if (index < log->first_index || index > log->last_index + 1) {
        return fail(log, IO_LOG_EINVAL,
                    "truncate suffix: %" PRIu64 " outside %" PRIu64 "..%" PRIu64, index,
                    log->first_index, log->last_index + 1);
    }
    if (index == log->last_index + 1) {
        return 0;
    }
    uint64_t new_term;
    rc = term_at(log, index - 1, &new_term);
    if (rc != 0) {
        return rc;
    }
    rc = flush(log);
    if (rc != 0) {
        return rc;
    }
    size_t k = seg_find(log, index);
    /* Later segments go first, newest first, so a crash leaves a contiguous prefix. */
    while (log->nsegs > k + 1) {
        rc = drop_last_segment(log);
        if (rc != 0) {
            goto out;
        }
    }
    struct io_log_segment *s = &log->segs[k];
    if (!s->is_open && index == s->first) {
        rc = unlink_seg(log, s);
        if (rc != 0) {
            goto out;
        }
        seg_remove(log, k);
        rc = dir_sync(log);
        goto out;
    }
    if (log->dir_dirty) {
        rc = dir_sync(log);
        if (rc != 0) {
            goto out;
        }
    }
    if (!s->is_open) {
        /* Renamed (durably) before it shrinks: a closed segment whose records do not match its
         * name is corruption, an open one may end anywhere. */
        char from[64], to[64], pfrom[sizeof log->dir + 64], pto[sizeof log->dir + 64];
        seg_name(s, from, sizeof from);
        read_cache_drop(log);
        s->is_open = 1;
        s->seq = log->open_seq_next;
        seg_name(s, to, sizeof to);
        snprintf(pfrom, sizeof pfrom, "%s/%s", log->dir, from);
        snprintf(pto, sizeof pto, "%s/%s", log->dir, to);
        if (io_sys.rename(pfrom, pto) != 0) {
            s->is_open = 0;
            rc = sys_fail(log, "rename", from);
            goto out;
        }
        log->open_seq_next++;
        log->dir_dirty = 1;
        /* It is the open segment from now on: give it its descriptor and size before anything
         * else can fail, so appends continue at its end whatever happens below. */
        int fd = io_sys.open(pto, O_RDWR | O_CLOEXEC, 0);
        if (fd < 0) {
            rc = sys_fail(log, "open", to);
            log->broken = BROKEN_REOPEN; /* an open segment without a descriptor */
            goto out;
        }
        log->fd = fd;
        struct stat st;
        if (io_sys.fstat(fd, &st) != 0) {
            rc = sys_fail(log, "stat", to);
            log->broken = BROKEN_REOPEN;
            goto out;
        }
        log->file_size = (uint64_t)st.st_size;
        log->durable_size = log->file_size;
        log->durable_seg_term = s->last_term;
        /* The new name must be durable before the file shrinks: a closed name over fewer
         * records is corruption. On failure dir_dirty stays set and a retry syncs first. */
        rc = dir_sync(log);
        if (rc != 0) {
            goto out;
        }
    }
    uint64_t cut = s->offsets[index - s->first];
    if (io_sys.ftruncate(log->fd, (off_t)cut) != 0) {
        char name[64];
        seg_name(s, name, sizeof name);
        rc = sys_fail(log, "truncate", name);
        goto out;
    }
    log->alloc_size = 0;
    s->count = index - s->first;
    s->last_term = new_term;
    log->file_size = cut;
    log->durable_size = cut;
    log->durable_seg_term = new_term; /* the fdatasync below covers it; on failure we are broken */
    if (io_sys.fdatasync(log->fd) != 0) {
        char name[64];
        seg_name(s, name, sizeof name);
        rc = sys_fail(log, "fdatasync", name);
        /* The new size may not be durable: appending on top would be acknowledged wrongly. */
        log->broken = BROKEN_SYNC;
        goto out;
    }

out:
    /* The segments' records are now exactly what memory says; restate last and durable. */
    recompute_last(log);
    if (rc == 0) {
        log->durable_index = log->last_index;
        log->durable_term = log->last_term;
    } else if (log->durable_index > log->last_index) {
        log->durable_index = log->last_index;
        log->durable_term = log->last_term;
    }
    return rc;
}

int io_log_truncate_prefix(struct io_log *log, uint64_t index)
{
    int rc;

    rc = repair(log);
    if (rc != 0) {
        return rc;
    }
    if (index > log->last_index) {
        return fail(log, IO_LOG_EINVAL,
                    "truncate prefix: %" PRIu64 " is above the last index %" PRIu64, index,
                    log->last_index);
    }
    if (index < log->first_index) {
        return 0;
    }
    uint64_t term;
    rc = term_at(log, index, &term);
    if (rc != 0) {
        return rc;
    }
    rc = anchor_store(log, index + 1, term);
    if (rc != 0) {
        return rc;
    }
    log->first_index = index + 1;
    log->prev_term = term;
    while (log->nsegs > 0 && !log->segs[0].is_open &&
           log->segs[0].first + log->segs[0].count - 1 <= index) {
        rc = unlink_seg(log, &log->segs[0]);
        if (rc != 0) {
            return rc;
        }
        seg_remove(log, 0);
    }
    recompute_last(log);
    return 0;
}

int io_log_reset(struct io_log *log, uint64_t index, uint64_t term)
{
    int rc;

    rc = repair(log);
    if (rc != 0) {
        return rc;
    }
    /* Newest first, so an interrupted reset leaves a contiguous prefix under the old anchor. */
    while (log->nsegs > 0) {
        rc = drop_last_segment(log);
        if (rc != 0) {
            recompute_last(log);
            return rc;
        }
    }
    recompute_last(log);
    rc = dir_sync(log);
    if (rc != 0) {
        return rc;
    }
    rc = anchor_store(log, index + 1, term);
    if (rc != 0) {
        return rc;
    }
    log->first_index = index + 1;
    log->prev_term = term;
    recompute_last(log);
    log->durable_index = log->last_index;
    log->durable_term = log->last_term;
    return 0;
}

/* --- opening --------------------------------------------------------------------------------- */

static int parse_digits(const char *p, uint64_t *out)
{
    uint64_t v = 0;
    for (int i = 0; i < NAME_DIGITS; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return -1;
        }
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *out = v;
    return 0;
}

static int cmp_segs(const void *a, const void *b)
{
    const struct io_log_segment *x = a, *y = b;
    if (x->is_open != y->is_open) {
        return x->is_open - y->is_open;
    }
    uint64_t kx = x->is_open ? x->seq : x->first, ky = y->is_open ? y->seq : y->first;
    return kx < ky ? -1 : kx > ky;
}

/* Lists the directory's segment files into log->segs, sorted: closed ones by index, then open
 * ones by sequence. For closed segments, `count` holds the count their name promises. */
static int list_segments(struct io_log *log)
{
    DIR *d = opendir(log->dir);
    struct dirent *de;
    int rc = 0;

    if (d == NULL) {
        return sys_fail(log, "list", ".");
    }
    while ((de = readdir(d)) != NULL) {
        const char *n = de->d_name;
        uint64_t a, b;
        if (n[0] >= '0' && n[0] <= '9') {
            if (strlen(n) != 2 * NAME_DIGITS + 1 || n[NAME_DIGITS] != '-' ||
                parse_digits(n, &a) != 0 || parse_digits(n + NAME_DIGITS + 1, &b) != 0 || a == 0 ||
                a > b) {
                rc = fail(log, IO_LOG_ECORRUPT, "%s/%s: offset 0: malformed segment name", log->dir,
                          n);
                break;
            }
            struct io_log_segment *s = seg_push(log);
            if (s == NULL) {
                rc = fail(log, IO_LOG_ENOMEM, "out of memory");
                break;
            }
            s->first = a;
            s->count = b - a + 1;
        } else if (strncmp(n, "open-", 5) == 0) {
            if (strlen(n) != 5 + NAME_DIGITS || parse_digits(n + 5, &a) != 0) {
                rc = fail(log, IO_LOG_ECORRUPT, "%s/%s: offset 0: malformed segment name", log->dir,
                          n);
                break;
            }
            struct io_log_segment *s = seg_push(log);
            if (s == NULL) {
                rc = fail(log, IO_LOG_ENOMEM, "out of memory");
                break;
            }
            s->is_open = 1;
            s->seq = a;
            if (a >= log->open_seq_next) {
                log->open_seq_next = a + 1;
            }
        }
    }
    closedir(d);
    if (rc == 0 && log->nsegs > 1) {
        qsort(log->segs, log->nsegs, sizeof *log->segs, cmp_segs);
    }
    return rc;
}

static int read_whole(struct io_log *log, const char *name, unsigned char **buf_out,
                      size_t *len_out)
{
    char path[sizeof log->dir + 64];
    struct stat st;
    int rc = 0;

    snprintf(path, sizeof path, "%s/%s", log->dir, name);
    int fd = io_sys.open(path, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) {
        return sys_fail(log, "open", name);
    }
    if (io_sys.fstat(fd, &st) != 0) {
        rc = sys_fail(log, "stat", name);
        goto out;
    }
    if ((uint64_t)st.st_size > SEGMENT_FILE_MAX) {
        rc = fail(log, IO_LOG_ECORRUPT, "%s/%s: offset %" PRIu64 ": segment file too large",
                  log->dir, name, SEGMENT_FILE_MAX);
        goto out;
    }
    size_t len = (size_t)st.st_size;
    unsigned char *buf = malloc(len > 0 ? len : 1);
    if (buf == NULL) {
        rc = fail(log, IO_LOG_ENOMEM, "out of memory reading %s", name);
        goto out;
    }
    ssize_t n = io_sys_pread_all(fd, buf, len, 0);
    if (n < 0) {
        rc = sys_fail(log, "read", name);
        free(buf);
        goto out;
    }
    *buf_out = buf;
    *len_out = (size_t)n;
out:
    io_sys.close(fd);
    return rc;
}

/* Is there a valid record starting anywhere in buf[from, len)? */
static int valid_record_after(const unsigned char *buf, size_t from, size_t len, uint64_t min_index,
                              uint64_t min_term, size_t *at)
{
    struct rec r;
    for (size_t p = from; p + IO_LOG_HEADER_BYTES <= len; p++) {
        /* Index and term must be plausible as a successor too, so a record image carried
         * inside a payload (a database storing log files) is not taken for one. */
        if (buf[p] == (IO_LOG_MAGIC & 0xff) && decode_record(buf + p, len - p, 1, &r) == NULL &&
            r.index >= min_index && r.term >= min_term) {
            *at = p;
            return 1;
        }
    }
    return 0;
}

struct scan {
    io_log_load_cb cb;
    void *arg;
    unsigned char *raw; /* decompression buffer */
    size_t raw_cap;
    uint64_t expect; /* next index expected, 0: any (first segment) */
};

static int all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != 0) {
            return 0;
        }
    }
    return 1;
}

/*
 * Checks every record of segment k (its bytes in buf) and hands entries from the logical first
 * index on to the callback. `tail_ok`: this is the last open segment, where a torn tail is cut
 * off (*keep gets the length to keep). Closed segments must match their name exactly.
 */
static int scan_segment(struct io_log *log, struct scan *sc, size_t k, const unsigned char *buf,
                        size_t len, int tail_ok, size_t *keep)
{
    struct io_log_segment *s = &log->segs[k];
    uint64_t promised = s->count;
    char name[64];
    size_t off = 0;

    seg_name(s, name, sizeof name);
    s->count = 0;
    if (s->is_open) {
        s->first = sc->expect != 0 ? sc->expect : 0;
    } else if (sc->expect != 0 && s->first != sc->expect) {
        return fail(log, IO_LOG_ECORRUPT,
                    "%s/%s: offset 0: segment starts at %" PRIu64 ", expected %" PRIu64
                    " (a gap or overlap in the log)",
                    log->dir, name, s->first, sc->expect);
    }
    while (off < len) {
        struct rec r;
        const char *why = decode_record(buf + off, len - off, 1, &r);
        if (why != NULL && all_zero(buf + off, len - off)) {
            break; /* the never-written rest of a preallocated segment: a clean end */
        }
        if (why != NULL) {
            size_t at;
            uint64_t min_index = s->count > 0 ? s->first + s->count : sc->expect;
            uint64_t min_term = s->count > 0 ? s->last_term : 0;
            if (tail_ok && !valid_record_after(buf, off + 1, len, min_index, min_term, &at)) {
                io_logf(IO_LOG_WARN, "log",
                        "%s/%s: offset %zu: %s; dropping a torn tail of %zu bytes (never "
                        "acknowledged)",
                        log->dir, name, off, why, len - off);
                break;
            }
            if (tail_ok) {
                return fail(log, IO_LOG_ECORRUPT,
                            "%s/%s: offset %zu: %s, and a valid record follows at offset %zu",
                            log->dir, name, off, why, at);
            }
            return fail(log, IO_LOG_ECORRUPT, "%s/%s: offset %zu: %s", log->dir, name, off, why);
        }
        if (s->count == 0 && s->is_open && sc->expect == 0) {
            s->first = r.index;
        }
        uint64_t want = s->first + s->count;
        if (r.index != want) {
            return fail(log, IO_LOG_ECORRUPT,
                        "%s/%s: offset %zu: entry %" PRIu64 " where %" PRIu64 " was expected",
                        log->dir, name, off, r.index, want);
        }
        if (s->count > 0 && r.term < s->last_term) {
            return fail(log, IO_LOG_ECORRUPT,
                        "%s/%s: offset %zu: entry %" PRIu64 " has term %" PRIu64
                        " below the previous %" PRIu64,
                        log->dir, name, off, r.index, r.term, s->last_term);
        }
        if (!s->is_open && s->count == promised) {
            return fail(log, IO_LOG_ECORRUPT, "%s/%s: offset %zu: records past the named range",
                        log->dir, name, off);
        }
        if (seg_add_offset(s, off) != 0) {
            return fail(log, IO_LOG_ENOMEM, "out of memory");
        }
        s->last_term = r.term;
        if (sc->cb != NULL && r.index >= log->first_index) {
            if (r.raw_len > sc->raw_cap) {
                unsigned char *p = realloc(sc->raw, r.raw_len);
                if (p == NULL) {
                    return fail(log, IO_LOG_ENOMEM, "out of memory");
                }
                sc->raw = p;
                sc->raw_cap = r.raw_len;
            }
            if (payload_extract(&r, sc->raw) != 0) {
                return fail(log, IO_LOG_ECORRUPT, "%s/%s: offset %zu: lz4 payload does not decode",
                            log->dir, name, off);
            }
            struct io_entry e = {.term = r.term,
                                 .index = r.index,
                                 .type = r.type,
                                 .buf = sc->raw != NULL ? (const void *)sc->raw : "",
                                 .len = r.raw_len};
            if (sc->cb(sc->arg, &e) != 0) {
                return fail(log, IO_LOG_ECALLBACK, "load callback refused entry %" PRIu64, r.index);
            }
        }
        off += IO_LOG_HEADER_BYTES + r.stored_len;
    }
    if (!s->is_open && s->count != promised) {
        return fail(log, IO_LOG_ECORRUPT,
                    "%s/%s: offset %zu: segment ends after %" PRIu64 " of %" PRIu64 " records",
                    log->dir, name, off, s->count, promised);
    }
    if (s->is_open && s->count == 0 && sc->expect == 0) {
        s->first = log->first_index; /* an empty open segment continues the anchor */
    }
    sc->expect = s->first + s->count;
    *keep = off;
    return 0;
}

static void config_defaults(struct io_log_config *c, const struct io_log_config *in)
{
    memset(c, 0, sizeof *c);
    if (in != NULL) {
        *c = *in;
    }
    if (c->segment_bytes_max == 0) {
        c->segment_bytes_max = IO_LOG_SEGMENT_BYTES_DEFAULT;
    }
    if (c->segment_bytes_max > SEGMENT_BYTES_LIMIT) {
        c->segment_bytes_max = SEGMENT_BYTES_LIMIT;
    }
    if (c->compress_min_bytes == 0) {
        c->compress_min_bytes = IO_LOG_COMPRESS_MIN_DEFAULT;
    }
    if (c->buffer_bytes == 0) {
        c->buffer_bytes = IO_LOG_BUFFER_BYTES_DEFAULT;
    }
}

/* Scans every segment, cuts a torn tail, closes earlier open segments left by a crash and
 * deletes segments wholly below the anchor. */
static int load(struct io_log *log, io_log_load_cb cb, void *arg)
{
    struct scan sc = {.cb = cb, .arg = arg};
    size_t last_open = log->nsegs;
    int rc = 0;

    for (size_t k = 0; k < log->nsegs; k++) {
        if (log->segs[k].is_open) {
            last_open = k;
        }
    }
    for (size_t k = 0; k < log->nsegs && rc == 0; k++) {
        unsigned char *buf = NULL;
        size_t len = 0, keep = 0;
        char name[64];
        seg_name(&log->segs[k], name, sizeof name);
        rc = read_whole(log, name, &buf, &len);
        if (rc != 0) {
            break;
        }
        rc = scan_segment(log, &sc, k, buf, len, k == last_open, &keep);
        free(buf);
        if (rc == 0 && keep < len) {
            char path[sizeof log->dir + 64];
            snprintf(path, sizeof path, "%s/%s", log->dir, name);
            int fd = io_sys.open(path, O_RDWR | O_CLOEXEC, 0);
            if (fd < 0) {
                rc = sys_fail(log, "open", name);
            } else {
                if (io_sys.ftruncate(fd, (off_t)keep) != 0) {
                    rc = sys_fail(log, "truncate", name);
                } else if (io_sys.fdatasync(fd) != 0) {
                    rc = sys_fail(log, "fdatasync", name);
                }
                io_sys.close(fd);
            }
        }
    }
    free(sc.raw);
    if (rc != 0) {
        return rc;
    }

    /* Open segments before the last one were complete when the crash came: close them now. */
    for (size_t k = 0; k + 1 < log->nsegs; k++) {
        struct io_log_segment *s = &log->segs[k];
        if (!s->is_open) {
            continue;
        }
        if (s->count == 0) {
            rc = unlink_seg(log, s);
            if (rc != 0) {
                return rc;
            }
            seg_remove(log, k);
            k--;
            continue;
        }
        char from[64], to[64], pfrom[sizeof log->dir + 64], pto[sizeof log->dir + 64];
        seg_name(s, from, sizeof from);
        s->is_open = 0;
        seg_name(s, to, sizeof to);
        snprintf(pfrom, sizeof pfrom, "%s/%s", log->dir, from);
        snprintf(pto, sizeof pto, "%s/%s", log->dir, to);
        if (io_sys.rename(pfrom, pto) != 0) {
            return sys_fail(log, "rename", from);
        }
        log->dir_dirty = 1;
    }

    /* The anchor against the data: no entry may be missing between them. */
    if (log->nsegs > 0) {
        const struct io_log_segment *s0 = &log->segs[0];
        const struct io_log_segment *sn = &log->segs[log->nsegs - 1];
        uint64_t phys_last = sn->first + sn->count - 1;
        if (s0->first > log->first_index && !(s0->is_open && s0->count == 0)) {
            char name[64];
            seg_name(s0, name, sizeof name);
            return fail(log, IO_LOG_ECORRUPT,
                        "%s/%s: offset 0: log starts at %" PRIu64
                        " but the anchor says entries from %" PRIu64 " are kept",
                        log->dir, name, s0->first, log->first_index);
        }
        if (phys_last + 1 < log->first_index) {
            /* Everything is older than the anchor, which only moves over entries a snapshot
             * covers: keeping them would leave a gap before the next append. */
            io_logf(IO_LOG_WARN, "log",
                    "%s: entries end at %" PRIu64 ", below the first index %" PRIu64
                    " of the anchor; removing the segments the snapshot covers",
                    log->dir, phys_last, log->first_index);
            while (log->nsegs > 0) {
                rc = unlink_seg(log, &log->segs[log->nsegs - 1]);
                if (rc != 0) {
                    return rc;
                }
                seg_remove(log, log->nsegs - 1);
            }
        }
    }
    while (log->nsegs > 0 && !log->segs[0].is_open &&
           log->segs[0].first + log->segs[0].count <= log->first_index) {
        rc = unlink_seg(log, &log->segs[0]);
        if (rc != 0) {
            return rc;
        }
        seg_remove(log, 0);
    }

    struct io_log_segment *s = open_seg(log);
    if (s != NULL) {
        char name[64], path[sizeof log->dir + 64];
        seg_name(s, name, sizeof name);
        snprintf(path, sizeof path, "%s/%s", log->dir, name);
        log->fd = io_sys.open(path, O_RDWR | O_CLOEXEC, 0);
        if (log->fd < 0) {
            return sys_fail(log, "open", name);
        }
        struct stat st;
        if (io_sys.fstat(log->fd, &st) != 0) {
            return sys_fail(log, "stat", name);
        }
        log->file_size = (uint64_t)st.st_size;
        log->durable_size = log->file_size;
        log->durable_seg_term = s->last_term;
        if (s->count == 0) {
            s->first = log->nsegs > 1
                           ? log->segs[log->nsegs - 2].first + log->segs[log->nsegs - 2].count
                           : log->first_index;
        }
    }
    recompute_last(log);
    /* What we read may be only in the page cache: a process that stopped without syncing
     * leaves its appends there. Sync before calling any of it durable. */
    if (log->fd >= 0 && io_sys.fdatasync(log->fd) != 0) {
        char name[64];
        seg_name(s, name, sizeof name);
        return sys_fail(log, "fdatasync", name);
    }
    rc = dir_sync(log);
    if (rc != 0) {
        return rc;
    }
    log->durable_index = log->last_index;
    log->durable_term = log->last_term;
    return 0;
}

int io_log_open(struct io_log *log, const char *dir, const struct io_log_config *cfg,
                io_log_load_cb cb, void *arg)
{
    unsigned char initial[ANCHOR_PAYLOAD_BYTES], payload[ANCHOR_PAYLOAD_BYTES];
    char path[sizeof log->dir + 64];
    int found, rc;

    memset(log, 0, sizeof *log);
    log->fd = -1;
    log->dirfd = -1;
    log->read_fd = -1;
    log->open_seq_next = 1;
    config_defaults(&log->cfg, cfg);
    if (strlen(dir) >= sizeof log->dir - 64) {
        return fail(log, IO_LOG_EINVAL, "directory path too long");
    }
    snprintf(log->dir, sizeof log->dir, "%s", dir);
    if (io_sys.mkdir(dir, 0755) != 0 && errno != EEXIST) {
        return sys_fail(log, "mkdir", ".");
    }
    log->dirfd = io_sys.open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (log->dirfd < 0) {
        return sys_fail(log, "open directory", ".");
    }
    log->anchor = calloc(1, sizeof *log->anchor);
    if (log->anchor == NULL) {
        rc = fail(log, IO_LOG_ENOMEM, "out of memory");
        goto err;
    }
    io_put64(initial, 1);
    io_put64(initial + 8, 0);
    snprintf(path, sizeof path, "%s/%s", dir, ANCHOR_NAME);
    rc = io_slots_open(log->anchor, path, ANCHOR_MAGIC, ANCHOR_VERSION, ANCHOR_PAYLOAD_BYTES,
                       initial, payload, &found);
    if (rc != 0) {
        fail(log, rc, "%s", log->anchor->errmsg);
        goto err;
    }
    log->first_index = io_get64(payload);
    log->prev_term = io_get64(payload + 8);
    if (log->first_index == 0) {
        rc = fail(log, IO_LOG_ECORRUPT, "%s: first index 0", path);
        goto err;
    }
    rc = list_segments(log);
    if (rc != 0) {
        goto err;
    }
    rc = load(log, cb, arg);
    if (rc != 0) {
        goto err;
    }
    return 0;

err : {
    char msg[sizeof log->errmsg];
    memcpy(msg, log->errmsg, sizeof msg);
    io_log_close(log);
    memcpy(log->errmsg, msg, sizeof msg);
    return rc;
}
}

void io_log_close(struct io_log *log)
{
    read_cache_drop(log);
    if (log->fd >= 0) {
        io_sys.close(log->fd);
    }
    if (log->dirfd >= 0) {
        io_sys.close(log->dirfd);
    }
    if (log->anchor != NULL) {
        io_slots_close(log->anchor);
        free(log->anchor);
    }
    for (size_t k = 0; k < log->nsegs; k++) {
        free(log->segs[k].offsets);
    }
    free(log->segs);
    free(log->wbuf);
    char msg[sizeof log->errmsg];
    memcpy(msg, log->errmsg, sizeof msg);
    memset(log, 0, sizeof *log);
    memcpy(log->errmsg, msg, sizeof msg);
    log->fd = -1;
    log->dirfd = -1;
    log->read_fd = -1;
}

uint64_t io_log_first_index(const struct io_log *log)
{
    return log->first_index;
}

uint64_t io_log_last_index(const struct io_log *log)
{
    return log->last_index;
}

uint64_t io_log_last_term(const struct io_log *log)
{
    return log->last_term;
}

uint64_t io_log_durable_index(const struct io_log *log)
{
    return log->durable_index;
}

const char *io_log_errmsg(const struct io_log *log)
{
    return log->errmsg;
}
