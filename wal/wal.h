/* wal/ -- SQLite's write-ahead log and wal-index formats, as pure code over buffers and mapped
 * memory. This module owns the byte formats below and nothing else: it takes no locks, does no I/O
 * of its own (the caller passes callbacks), has no randomness (the caller passes salts), and never
 * calls the sqlite3 API. The VFS uses it on the apply path to append replicated transactions to a
 * database's WAL exactly as SQLite's own writer would.
 *
 * ------------------------------------------------------------------------------------------------
 * WAL FILE (<db>-wal). Every integer is big-endian.
 *
 *   WAL header, 32 bytes, at offset 0:
 *      0   4  magic: 0x377f0682 (checksums over little-endian words) or 0x377f0683 (big-endian)
 *      4   4  format version, 3007000
 *      8   4  database page size (512..65536, a power of two)
 *     12   4  checkpoint sequence number
 *     16   4  salt-1 (incremented by one at every log restart)
 *     20   4  salt-2 (a fresh random value at every log restart)
 *     24   4  checksum-1 \  over bytes 0..23 of this header
 *     28   4  checksum-2 /
 *
 *   Frame i (1-based) at offset 32 + (i-1) * (24 + page size): a 24-byte header, then the page.
 *      0   4  page number (never 0)
 *      4   4  commit size: database size in pages after the transaction, on its last frame only;
 *             0 on every other frame
 *      8   4  salt-1 \  copied from the WAL header; a frame whose salts differ belongs to an
 *     12   4  salt-2 /  older generation of the log and ends the valid prefix
 *     16   4  checksum-1 \  running checksum: starts from the WAL header's checksum, then for each
 *     20   4  checksum-2 /  frame so far covers its header bytes 0..7 and its page
 *
 *   Checksum over 32-bit words x[0..n), n even, words read in the byte order the magic names:
 *      for each pair: s0 += x[i] + s1; s1 += x[i+1] + s0;     (mod 2^32, starting from s0, s1)
 *
 *   The valid prefix ends at the first frame whose salts or checksum do not match; the committed
 *   prefix ends at the last valid frame with a non-zero commit size. Only that prefix exists.
 *
 * ------------------------------------------------------------------------------------------------
 * WAL-INDEX (<db>-shm). Native byte order; shared memory made of 32 KiB regions, which need not
 * be contiguous in this process's address space (each region is mapped on its own).
 *
 *   Region 0, bytes 0..135: the index header, twice, then the checkpoint info.
 *      0  48  index header, copy 1 (struct wal_index_hdr)
 *     48  48  index header, copy 2
 *     96  40  checkpoint info (struct wal_ckpt_info); bytes 120..127 are the lock bytes of the
 *             eight xShmLock slots (WRITE, CHECKPOINT, RECOVER, READ(0..4)): never data
 *
 *   Index header (48 bytes):
 *      0   4  iVersion, 3007000
 *      4   4  unused
 *      8   4  iChange: bumped by every writer so readers notice a change
 *     12   1  isInit: 1 once the header is valid
 *     13   1  bigEndCksum: 1 when the WAL's checksums are over big-endian words
 *     14   2  szPage: page size, with 65536 stored as 1
 *     16   4  mxFrame: last valid commit frame; readers ignore every frame above it
 *     20   4  nPage: database size in pages (commit size of frame mxFrame)
 *     24   8  aFrameCksum[2]: running checksum after frame mxFrame (native values)
 *     32   8  aSalt[2]: the WAL header's salt BYTES as stored there (big-endian), not values
 *     40   8  aCksum[2]: checksum over bytes 0..39, words in native order
 *   A writer publishes by storing copy 2, a memory barrier, then copy 1. A reader loads copy 1, a
 *   barrier, copy 2, and trusts them only when both are equal, isInit is set and the checksum
 * holds.
 *
 *   Checkpoint info (40 bytes at offset 96):
 *      0   4  nBackfill: frames already copied into the database file
 *      4  20  aReadMark[5]: mxFrame of some reader's snapshot, 0xffffffff = unused; mark 0 is
 *             always 0 ("read the database file only")
 *     24   8  lock bytes
 *     32   4  nBackfillAttempted
 *     36   4  unused
 *
 *   Hash blocks. Block 0 lives in region 0 after the 136-byte header and indexes frames 1..4062;
 *   block k >= 1 fills region k and indexes the next 4096 frames. Each block is:
 *      page map:  u32 aPgno[n]      page number of the block's j-th frame (j = 1..n) at [j-1]
 *      hash:      u16 aHash[8192]   at byte 16384 of the region in every block
 *   Hash key of page P: (P * 383) & 8191; on collision probe the next slot (wrapping). A slot holds
 *   the 1-based position of a frame within its block, 0 = empty. Readers skip entries above their
 *   mxFrame, so a writer appends entries first and publishes a larger mxFrame afterwards. A block's
 *   map and hash are zeroed when its first frame is written. A writer that reuses frame numbers
 *   above a rolled-back mxFrame first clears the entries above it (wal_index_cleanup).
 *
 * Locks the caller holds (this module takes none): WRITE (slot 0) around wal_append_txn,
 * wal_index_append, wal_index_cleanup and wal_index_hdr_publish; additionally READ(1..4)
 * exclusively around a log restart, so that no reader is using the frames being overwritten.
 */
#ifndef WALRAFT_WAL_H
#define WALRAFT_WAL_H

#include <stddef.h>
#include <stdint.h>

/* --- errors ----------------------------------------------------------------------------------- */

/* X(name, value, message). 0 is success; every error is negative. */
#define WAL_ERRORS(X)                                                                              \
    X(WAL_OK, 0, "success")                                                                        \
    X(WAL_EINVAL, -1, "invalid argument")                                                          \
    X(WAL_ETRUNCATED, -2, "input is truncated")                                                    \
    X(WAL_EMAGIC, -3, "bad magic number")                                                          \
    X(WAL_EVERSION, -4, "unsupported format version")                                              \
    X(WAL_EPAGESIZE, -5, "invalid page size")                                                      \
    X(WAL_ECHECKSUM, -6, "checksum mismatch")                                                      \
    X(WAL_ESALT, -7, "frame salts differ from the WAL header")                                     \
    X(WAL_EPGNO, -8, "invalid page number")                                                        \
    X(WAL_ETOOBIG, -9, "input exceeds the size limit")                                             \
    X(WAL_ECORRUPT, -10, "input is corrupt")                                                       \
    X(WAL_ENOMEM, -11, "out of memory")                                                            \
    X(WAL_EINDEX_HDR, -12, "wal-index header is not consistent (recovery needed)")                 \
    X(WAL_EINDEX_CORRUPT, -13, "wal-index hash table is corrupt")                                  \
    X(WAL_EMAP, -14, "cannot map a wal-index region")                                              \
    X(WAL_EIO, -15, "WAL file read or write failed")                                               \
    X(WAL_ENOT_CHECKPOINTED, -16, "log restart needs a fully checkpointed log")                    \
    X(WAL_EFULL, -17, "WAL would exceed the largest frame number")

enum wal_error {
#define WAL_ERROR_ENUM(name, value, msg) name = value,
    WAL_ERRORS(WAL_ERROR_ENUM)
#undef WAL_ERROR_ENUM
};

/* A static message for any return code of this module; "unknown wal error" for anything else. */
const char *wal_strerror(int rc);

/* --- constants -------------------------------------------------------------------------------- */

#define WAL_MAGIC_LE 0x377f0682u
#define WAL_MAGIC_BE 0x377f0683u
#define WAL_VERSION 3007000u
#define WAL_HDR_SIZE 32u
#define WAL_FRAME_HDR_SIZE 24u
#define WAL_PAGE_SIZE_MIN 512u
#define WAL_PAGE_SIZE_MAX 65536u

#define WAL_INDEX_VERSION 3007000u
#define WAL_INDEX_REGION_SIZE 32768u
#define WAL_INDEX_HDR_BYTES 136u  /* two header copies + checkpoint info */
#define WAL_INDEX_NPAGE 4096u     /* frames per hash block, blocks >= 1 */
#define WAL_INDEX_NPAGE_ONE 4062u /* frames in block 0: 4096 - 136/4 */
#define WAL_INDEX_NSLOT 8192u     /* u16 hash slots per block */
#define WAL_INDEX_HASH_MUL 383u
#define WAL_NREADER 5u
#define WAL_READMARK_UNUSED 0xffffffffu

/* --- checksums, WAL header, frames ------------------------------------------------------------ */

/* Advances the running checksum s[2] over n bytes of data (n a multiple of 8), reading 32-bit
 * words big-endian when big_endian is non-zero, little-endian otherwise. */
void wal_cksum(int big_endian, const uint8_t *data, size_t n, uint32_t s[2]);

/* A WAL header as values (not bytes). */
struct wal_hdr {
    uint32_t magic;
    uint32_t version;
    uint32_t page_size;
    uint32_t ckpt_seq;
    uint32_t salt1;
    uint32_t salt2;
    uint32_t cksum1;
    uint32_t cksum2;
};

/* Fills h for a new log (version, magic for the requested checksum byte order, checksum) and
 * writes its 32 bytes to out. */
void wal_hdr_build(struct wal_hdr *h /* OUT */, int big_endian, uint32_t page_size,
                   uint32_t ckpt_seq, uint32_t salt1, uint32_t salt2,
                   uint8_t out[WAL_HDR_SIZE] /* OUT */);

/* Decodes and validates 32 header bytes: magic, version, page size, checksum. */
int wal_hdr_decode(const uint8_t in[WAL_HDR_SIZE], struct wal_hdr *h /* OUT */);

/* The running state of a frame chain: what the next frame must carry. */
struct wal_chain {
    int big_endian; /* checksum byte order (from the magic) */
    uint32_t page_size;
    uint32_t salt1;
    uint32_t salt2;
    uint32_t cksum[2]; /* running checksum after the last frame (or the WAL header) */
};

/* Starts a chain right after a decoded header. */
void wal_chain_init(struct wal_chain *c /* OUT */, const struct wal_hdr *h);

/* Byte offset of frame i (1-based) in a WAL of this page size. */
uint64_t wal_frame_offset(uint32_t page_size, uint32_t frame);

/* Encodes the 24-byte header of the next frame of chain c holding page (c->page_size bytes) and
 * advances the chain. commit is the database size in pages on a commit frame, else 0. */
void wal_frame_encode(struct wal_chain *c /* IN/OUT */, uint32_t pgno, uint32_t commit,
                      const uint8_t *page, uint8_t out[WAL_FRAME_HDR_SIZE] /* OUT */);

/* A decoded frame header. */
struct wal_frame_hdr {
    uint32_t pgno;
    uint32_t commit;
};

/* Checks that hdr + page is the next valid frame of chain c. On success advances c and fills out;
 * on WAL_ESALT / WAL_ECHECKSUM / WAL_EPGNO leaves c unchanged. */
int wal_frame_decode(struct wal_chain *c /* IN/OUT */, const uint8_t hdr[WAL_FRAME_HDR_SIZE],
                     const uint8_t *page, struct wal_frame_hdr *out /* OUT */);

/* What a scan of a whole WAL image found. */
struct wal_scan {
    struct wal_hdr hdr;
    uint32_t n_valid;       /* frames whose salts and checksum chain hold */
    uint32_t mx_frame;      /* last valid commit frame (0: nothing committed) */
    uint32_t n_page;        /* commit size of frame mx_frame */
    uint32_t n_commits;     /* commit frames among the first mx_frame */
    struct wal_chain chain; /* chain state after frame mx_frame */
};

/* Decodes a WAL image of len bytes: the header must be valid (else its error); the frames are
 * walked until the chain breaks or the image ends (a torn tail is not an error). If on_frame is
 * not NULL it is called for every valid frame, committed or not, in order; a non-zero return
 * stops the scan and is returned. O(len). */
typedef int (*wal_frame_cb)(void *arg, uint32_t frame, const struct wal_frame_hdr *fh,
                            const uint8_t *page);
int wal_scan_image(const uint8_t *wal, size_t len, struct wal_scan *out /* OUT */,
                   wal_frame_cb on_frame, void *arg);

/* --- wal-index -------------------------------------------------------------------------------- */

/* The caller's view of the shared memory. map() returns in *out the address of 32 KiB region
 * `region`; with extend == 0 it may fail when the region does not exist yet; with extend != 0 it
 * creates it (zero-filled). Returns 0 or non-zero on failure. The VFS backs this with xShmMap. */
struct wal_shm {
    void *ctx;
    int (*map)(void *ctx, uint32_t region, int extend, volatile void **out);
};

struct wal_index_hdr {
    uint32_t version;
    uint32_t unused;
    uint32_t change;
    uint8_t is_init;
    uint8_t big_end_cksum;
    uint16_t page_size; /* encoded: 65536 is 1; see wal_index_page_size() */
    uint32_t mx_frame;
    uint32_t n_page;
    uint32_t frame_cksum[2];
    uint32_t salt[2]; /* salt bytes as stored in the WAL header; see wal_index_salt() */
    uint32_t cksum[2];
};
_Static_assert(sizeof(struct wal_index_hdr) == 48, "wal-index header is 48 bytes");

struct wal_ckpt_info {
    uint32_t n_backfill;
    uint32_t read_mark[WAL_NREADER];
    uint8_t lock[8];
    uint32_t n_backfill_attempted;
    uint32_t unused;
};
_Static_assert(sizeof(struct wal_ckpt_info) == 40, "checkpoint info is 40 bytes");

/* Page size of an index header, decoded (65536 is stored as 1). */
uint32_t wal_index_page_size(const struct wal_index_hdr *h);
/* Salt i (0 or 1) of an index header as a value, as in the WAL header. */
uint32_t wal_index_salt(const struct wal_index_hdr *h, int i);

/* Reads a consistent index header: copies equal, isInit set, checksum valid; else
 * WAL_EINDEX_HDR (SQLite would run recovery). */
int wal_index_hdr_read(const struct wal_shm *shm, struct wal_index_hdr *out /* OUT */);

/* Publishes h: bumps h->change, sets version and isInit, computes the checksum (h is updated to
 * what was published), stores copy 2, a full memory barrier, then copy 1. */
int wal_index_hdr_publish(const struct wal_shm *shm, struct wal_index_hdr *h /* IN/OUT */);

/* Reads (a snapshot of) the checkpoint info. */
int wal_ckpt_info_read(const struct wal_shm *shm, struct wal_ckpt_info *out /* OUT */);
/* nBackfill and read mark i (0..4) individually. */
int wal_ckpt_backfill(const struct wal_shm *shm, uint32_t *out /* OUT */);
int wal_ckpt_read_mark(const struct wal_shm *shm, uint32_t i, uint32_t *out /* OUT */);

/* Records that frame `frame` (1-based) holds page pgno: page map entry plus hash slot; zeroes the
 * block first when frame is the block's first. Frames are appended in increasing order after
 * the published mxFrame; when the slot of `frame` still holds an entry left by a writer that
 * rolled back, every entry from `frame` on is cleared first (wal_index_cleanup(frame - 1)), as
 * SQLite's writer does. */
int wal_index_append(const struct wal_shm *shm, uint32_t frame, uint32_t pgno);

/* Finds the newest frame holding pgno among frames min_frame..mx_frame; *frame_out = 0 when
 * none (the page is read from the database file). */
int wal_index_lookup(const struct wal_shm *shm, uint32_t pgno, uint32_t min_frame,
                     uint32_t mx_frame, uint32_t *frame_out /* OUT */);

/* Removes every hash and page-map entry above mx_frame in the block holding mx_frame (later
 * blocks are zeroed when their first frame is written). As SQLite's writer does before it reuses
 * frame numbers a rolled-back transaction used. O(block), independent of the WAL size. */
int wal_index_cleanup(const struct wal_shm *shm, uint32_t mx_frame);

/* Restarts the log in the index, as SQLite does after a complete checkpoint: mxFrame = 0,
 * salt-1 + 1, salt-2 = the caller's random salt2, header published; then nBackfill = 0,
 * nBackfillAttempted = 0, read marks [0, 0, unused, unused, unused]. h is the current header
 * (IN) and the published one (OUT). The caller holds WRITE and READ(1..4), has checked that
 * the log is fully checkpointed (nBackfill == mxFrame), and runs no checkpoint concurrently
 * (nBackfill is reset here; DESIGN §4 serialises checkpoints with writes for this reason). */
int wal_index_restart(const struct wal_shm *shm, struct wal_index_hdr *h /* IN/OUT */,
                      uint32_t salt2);

/* --- transaction appender --------------------------------------------------------------------- */

/* I/O on the WAL file, supplied by the caller. write() and read() return 0 on success (the whole
 * range), non-zero otherwise. read may be NULL; it is used only to take the checkpoint sequence
 * from the existing WAL header when the log restarts. flush may be NULL: a caller whose write()
 * only gathers the bytes (into fewer, larger writes) completes them there; it is called once the
 * frames are written, before the index header is published. */
struct wal_io {
    void *ctx;
    int (*write)(void *ctx, const void *buf, size_t n, uint64_t offset);
    int (*read)(void *ctx, void *buf, size_t n, uint64_t offset);
    int (*flush)(void *ctx);
};

struct wal_page {
    uint32_t pgno;
    const uint8_t *data; /* page_size bytes, borrowed */
};

struct wal_txn {
    uint32_t page_size;
    uint32_t commit_pages;        /* database size in pages after the transaction */
    const struct wal_page *pages; /* n_pages entries, borrowed; each page number at most once */
    uint32_t n_pages;
    int restart;      /* restart the log first (caller checked it may) */
    uint32_t salt[2]; /* caller's random values: salt[1] is salt-2 on a restart; both
                         are the salts of a brand-new log whose index has none */
};

struct wal_append_result {
    uint32_t first_frame; /* frame number of the transaction's first frame */
    uint32_t mx_frame;    /* published mxFrame (its commit frame) */
    int restarted;        /* the log restarted at frame 1 */
};

/* Appends txn to the WAL as one transaction and publishes it in the index, as SQLite's writer
 * does: a WAL header when the log starts at frame 1, one frame per page with the running
 * checksum, the commit size on the last frame, index entries, then a new index header. The caller
 * holds the WRITE lock (and READ(1..4) when txn->restart). Costs O(pages in txn). On error
 * nothing is published: readers and SQLite's recovery never see a partial transaction (frames
 * written past mxFrame carry no commit frame, or stale salts). result may be NULL. */
int wal_append_txn(const struct wal_shm *shm, const struct wal_io *io, const struct wal_txn *txn,
                   struct wal_append_result *result /* OUT */);

#endif /* WALRAFT_WAL_H */
