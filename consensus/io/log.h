/*
 * The durable Raft log: entries in append-only segment files in one directory (app.db-raft/).
 * Owns the segment files and the anchor file "log-anchor" of that directory; other files there
 * (metadata, locks, snapshots) belong to others and are ignored, except that a name starting
 * with a digit or "open-" must be a well-formed segment name.
 *
 * Threading and ownership: the log does blocking I/O and is not thread-safe. One thread (the
 * node's disk thread) calls every function on a given struct io_log; nothing here blocks the
 * libuv loop because the loop never calls it. The caller allocates struct io_log; its fields are
 * private. Entry payloads passed to io_log_append stay owned by the caller (they are copied);
 * payloads handed out by io_log_open's callback are valid only during the call; payloads from
 * io_log_get are owned by the caller (io_log_entry_release).
 *
 * Files. Closed segments are named "<first>-<last>" (each 16 decimal digits, zero padded: the
 * index range they hold, inclusive). The single open segment being appended is "open-<seq>"
 * (16 decimal digits, seq increasing). A segment is closed when it reaches
 * segment_bytes_max (default 8 MiB): fdatasync, then rename to its range name (the directory
 * fsync of the next io_log_sync makes the new name durable; either name loads). Memory: 4 bytes
 * per entry (its offset) plus one write buffer; a whole segment is read once at open.
 * With `preallocate`, a new open segment is first filled with zeros up to segment_bytes_max and
 * synced; it is cut to its records' length before it is closed. An open segment therefore ends
 * either at end of file or at zeros: a run of zero bytes to the end of the file is a clean end
 * (never written), not a torn tail. A record never starts with a zero byte (the magic).
 *
 * Record format (all integers little-endian), IO_LOG_HEADER_BYTES = 40 bytes then the payload:
 *
 *     offset  size  field
 *          0     4  magic 0x474c5257 ("WRLG" on disk)
 *          4     1  format version, IO_LOG_VERSION (1)
 *          5     1  entry type (opaque to the log)
 *          6     1  flags: bit 0 = payload is lz4 block-compressed; other bits must be zero
 *          7     1  reserved, zero
 *          8     8  term
 *         16     8  index
 *         24     4  stored payload length (bytes following the header)
 *         28     4  raw payload length (after decompression; equals stored length if not lz4)
 *         32     8  checksum = XXH64(payload, stored length, seed = XXH64(bytes 0..31, 32, 0))
 *         40     -  stored payload
 *
 * Records follow each other without padding. The payload is compressed only when it is at least
 * compress_min_bytes long and lz4 makes it smaller. Lengths above IO_LOG_ENTRY_BYTES_MAX are
 * rejected when read as corruption.
 *
 * Anchor: "log-anchor" is a two-slot file (see meta.h, magic "WRLA", payload: first index, term
 * of first index - 1) giving the logical first index after compaction or a snapshot reset.
 * Entries below it may still sit in a segment but are never returned.
 *
 * Durability: io_log_append only buffers and writes; io_log_sync makes everything appended so
 * far durable with one fdatasync (group commit), plus a directory fsync when files were
 * created, renamed or deleted. Only entries up to io_log_durable_index() may be acknowledged.
 *
 * Failures: when a write or an fdatasync fails, the log rewinds to its last durable state: the
 * open segment is truncated back to the size of its last successful fdatasync and the entries
 * past it are forgotten (io_log_last_index() says where the log now ends, never below
 * io_log_durable_index(); the caller re-appends from there once the fault is gone). Entries of
 * a segment closed since the last sync stay: closing fdatasync'ed them. If even that clean-up
 * fails (or the anchor could not be written: a restart may then see the old or the new first
 * index), the log is broken: every later call first redoes the clean-up and returns
 * IO_LOG_EBROKEN while it still fails, so a caller that retries until the disk recovers needs
 * nothing else; closing and reopening also repairs it (open removes any torn tail and adopts
 * whatever the anchor holds). A failed sync is never reported as durable.
 */
#ifndef WALRAFT_IO_LOG_H
#define WALRAFT_IO_LOG_H

#include <stddef.h>
#include <stdint.h>

#define IO_LOG_MAGIC 0x474c5257u
#define IO_LOG_VERSION 1u
#define IO_LOG_HEADER_BYTES 40
#define IO_LOG_FLAG_LZ4 0x01u
#define IO_LOG_ENTRY_BYTES_MAX (64u * 1024u * 1024u)
#define IO_LOG_SEGMENT_BYTES_DEFAULT (8u * 1024u * 1024u)
#define IO_LOG_COMPRESS_MIN_DEFAULT 256u
#define IO_LOG_BUFFER_BYTES_DEFAULT (256u * 1024u)

/* The record header as laid out on disk (documentation and size check; the code encodes and
 * decodes byte by byte so it does not depend on the host's byte order or padding). */
struct io_log_header {
    uint32_t magic;
    uint8_t version;
    uint8_t type;
    uint8_t flags;
    uint8_t reserved;
    uint64_t term;
    uint64_t index;
    uint32_t stored_len;
    uint32_t raw_len;
    uint64_t checksum;
};
_Static_assert(sizeof(struct io_log_header) == IO_LOG_HEADER_BYTES,
               "log record header is 40 bytes");

/* Error codes of the log and metadata files. */
#define IO_LOG_ERRORS(X)                                                                           \
    X(IO_LOG_OK, "success")                                                                        \
    X(IO_LOG_ENOSPC, "no space left on device")                                                    \
    X(IO_LOG_EIO, "I/O error")                                                                     \
    X(IO_LOG_ENOMEM, "out of memory")                                                              \
    X(IO_LOG_ECORRUPT, "corrupt data on disk")                                                     \
    X(IO_LOG_EVERSION, "unsupported on-disk format version")                                       \
    X(IO_LOG_EINVAL, "invalid argument")                                                           \
    X(IO_LOG_ENOENT, "no such entry in the log")                                                   \
    X(IO_LOG_ECOMPACTED, "entry was compacted away")                                               \
    X(IO_LOG_ECALLBACK, "the load callback failed")                                                \
    X(IO_LOG_EBROKEN, "log cannot undo a failed write yet; retry, or close and reopen it")

enum io_log_error {
#define IO_LOG_ERROR_ENUM(code, msg) code,
    IO_LOG_ERRORS(IO_LOG_ERROR_ENUM)
#undef IO_LOG_ERROR_ENUM
        IO_LOG_NERRORS
};

/* A static message for an IO_LOG_* code. */
const char *io_log_strerror(int rc);

/* One log entry as the log sees it; the runtime converts from and to the core's entries. */
struct io_entry {
    uint64_t term;
    uint64_t index;
    uint8_t type;
    const void *buf; /* payload, `len` bytes */
    size_t len;
};

struct io_log_config {
    size_t segment_bytes_max;  /* close a segment once it is this large (0: default 8 MiB) */
    size_t compress_min_bytes; /* never compress smaller payloads (0: default 256) */
    size_t buffer_bytes;       /* write buffer; written out when full (0: default 256 KiB) */
    int no_compress;           /* 1: never compress */
    int preallocate;           /* 1: fill each new open segment with zeros up to segment_bytes_max
                                * (and sync) before use, so that appends overwrite allocated
                                * blocks: an fdatasync then writes no file-size metadata */
};

/* Called by io_log_open for each entry from the logical first index on, in order. `e->buf` is
 * valid during the call only. A non-zero return stops the open (IO_LOG_ECALLBACK). */
typedef int (*io_log_load_cb)(void *arg, const struct io_entry *e);

struct io_log_segment; /* private */
struct io_slots;

/* A log. Caller-allocated; every field is private. */
struct io_log {
    char dir[4096];
    int dirfd;
    struct io_log_config cfg;
    struct io_log_segment *segs; /* by index; the last one may be the open segment */
    size_t nsegs, segs_cap;
    int fd;                    /* the open segment, -1: none */
    int read_fd;               /* a closed segment kept open for io_log_get, -1: none */
    uint64_t read_first;       /* first index of that segment */
    uint64_t open_seq_next;    /* sequence for the next "open-<seq>" */
    uint64_t file_size;        /* bytes of the open segment written to the file */
    uint64_t durable_size;     /* bytes of the open segment covered by the last fdatasync */
    uint64_t alloc_size;       /* the open segment file's length when preallocated, else 0 */
    uint64_t durable_seg_term; /* term of the open segment's last record within durable_size */
    unsigned char *wbuf;       /* appended, not yet written, bytes of the open segment */
    size_t wlen, wcap;
    uint64_t first_index, prev_term; /* logical first index; term of first_index - 1 */
    uint64_t last_index, last_term;
    uint64_t durable_index, durable_term;
    int dir_dirty;
    int broken; /* a clean-up to redo before the next call (log.c: repair) */
    struct io_slots *anchor;
    char errmsg[512];
};

/*
 * Opens the log in directory `dir` (created if missing), scans every segment and calls `cb`
 * (may be NULL) for each entry from the logical first index to the last, decompressed.
 * `cfg` may be NULL for defaults.
 *
 * Start-up checks. A torn tail is removed with a WARN log line: the tail is a bad record in the
 * *last* open segment (short header, short payload, wrong magic, version, flags or checksum)
 * such that no valid record (a complete header and payload with a correct checksum, an index
 * not below the bad record's expected index and a term not below the previous record's) starts
 * at any later byte offset of that file; the file is truncated at the bad record's offset.
 * Anything else is corruption and makes the open fail with IO_LOG_ECORRUPT and an error
 * message naming the file and byte offset: a bad record with a valid one after it, a bad record
 * in a closed segment or an earlier open segment, indexes that do not follow each other within
 * or across segments, a closed segment whose records do not match its name, a malformed
 * segment name.
 *
 * Returns 0 or an IO_LOG_E* code (io_log_errmsg() explains). On failure the log is closed and
 * entries already passed to `cb` must be discarded by the caller.
 */
int io_log_open(struct io_log *log, const char *dir, const struct io_log_config *cfg,
                io_log_load_cb cb, void *arg);

/* Releases the log's memory and descriptors. Does not sync: call io_log_sync first if the
 * appended entries should be durable. */
void io_log_close(struct io_log *log);

/* What the log holds: entries first..last (empty when last == first - 1). When the log is empty,
 * last index and term are those of the snapshot it was reset to (0, 0 for a new log). */
uint64_t io_log_first_index(const struct io_log *log);
uint64_t io_log_last_index(const struct io_log *log);
uint64_t io_log_last_term(const struct io_log *log);
/* The last entry covered by a successful io_log_sync. */
uint64_t io_log_durable_index(const struct io_log *log);

/* The last error's message, with file and offset where they apply. */
const char *io_log_errmsg(const struct io_log *log);

/*
 * Appends `n` entries. entries[0].index must be io_log_last_index() + 1, indexes consecutive and
 * terms not below the last term (else IO_LOG_EINVAL, nothing appended). Payloads are copied into
 * a write buffer that is written out when full; nothing is durable until io_log_sync. On an I/O
 * error the log rewinds to its last durable state (see the top of this file).
 */
int io_log_append(struct io_log *log, const struct io_entry *entries, size_t n);

/* Makes everything appended so far durable: one fdatasync, and a directory fsync if files were
 * created, renamed or deleted since the last one. Returns 0 only when both succeeded. */
int io_log_sync(struct io_log *log);

/*
 * Removes entries index.. (after a conflict with the leader's log); `index` must be in
 * first_index .. last_index + 1 (last_index + 1: nothing to do). Durable on return: the files
 * are truncated, renamed or removed and synced before it returns 0 (which also makes entries
 * before `index` durable), so new entries at `index` can be appended and acknowledged after
 * the next io_log_sync.
 */
int io_log_truncate_suffix(struct io_log *log, uint64_t index);

/*
 * Compaction: forgets entries ..index (index <= last_index). The logical first index becomes
 * index + 1 (recorded durably in the anchor before any file goes); closed segments whose entries
 * are all <= index are deleted. Entries of a segment straddling `index` stay on disk, hidden.
 */
int io_log_truncate_prefix(struct io_log *log, uint64_t index);

/*
 * Drops every entry and restarts the log after a snapshot: the next entry is index + 1 and while
 * the log is empty its last index and term are `index` and `term`. Durable on return. If a crash
 * interrupts it, the log may come back empty with its old anchor; the caller repeats the reset
 * when the log's last index is below its snapshot's index.
 */
int io_log_reset(struct io_log *log, uint64_t index, uint64_t term);

/*
 * Reads entry `index` back (from the write buffer or the files), verifies its checksum and
 * decompresses it. On success out->buf is a malloc'ed copy owned by the caller: release it with
 * io_log_entry_release. IO_LOG_ENOENT above the last index, IO_LOG_ECOMPACTED below the first.
 */
int io_log_get(struct io_log *log, uint64_t index, struct io_entry *out);
void io_log_entry_release(struct io_entry *e);

/* The term of entry `index`, from first_index - 1 (the term the log was reset or compacted to)
 * to last_index; reads one record header at most. */
int io_log_term(struct io_log *log, uint64_t index, uint64_t *term);

#endif
