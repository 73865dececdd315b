/* The frame set: the payload of one Raft log entry, i.e. one replicated write transaction as
 * whole page images. The leader's VFS encodes it from the frames SQLite wrote; every node decodes
 * it and appends it to its own WAL with wal_append_txn (wal/wal.h).
 *
 * Encoded form. Every integer is little-endian.
 *
 *   Header, 40 bytes:
 *      0   4  magic 0x53465257 ("WRFS" read as bytes)
 *      4   2  format version, 1
 *      6   2  flags: bit 0 = the body is lz4-compressed (LZ4 block format); other bits are 0
 *      8   4  page size (512..65536, a power of two)
 *     12   4  commit size: database size in pages after the transaction (>= 1)
 *     16   4  page count n (>= 1)
 *     20   4  body length, uncompressed: n * (4 + page size)
 *     24   4  body length as stored (== uncompressed length unless lz4)
 *     28   4  reserved, 0
 *     32   8  xxh64 of the stored body, seeded with xxh64(header bytes 0..31, seed 0): covers
 *             both without a streaming state
 *   Body (uncompressed), page numbers first so that they compress together:
 *      n x u32 page number (never 0, each at most once), then n x page image, in the same order.
 *
 * lz4 is used only when it makes the body smaller. Decoding validates everything above before
 * trusting it and rejects truncated, oversized or corrupt input with an error; it allocates one
 * buffer, never larger than the caller's limit.
 */
#ifndef WALRAFT_WAL_FRAMESET_H
#define WALRAFT_WAL_FRAMESET_H

#include <stddef.h>
#include <stdint.h>

#include "wal/wal.h"

#define WAL_FRAMESET_MAGIC 0x53465257u
#define WAL_FRAMESET_VERSION 1u
#define WAL_FRAMESET_HDR_SIZE 40u
#define WAL_FRAMESET_FLAG_LZ4 1u

struct wal_frameset {
    uint32_t page_size;
    uint32_t commit_pages;
    uint32_t n_pages;
    struct wal_page *pages; /* n_pages entries; see the owner notes on each function */
    void *buf;              /* decoded storage owned by this struct, or NULL */
};

/* Encodes fs (pages borrowed, not modified) into a new malloc'd buffer: on success *out (owned by
 * the caller, free() it) and *out_len. Fails with WAL_EINVAL on invalid page size, counts, page
 * numbers (0 or repeated), WAL_ETOOBIG when the body exceeds what lz4 handles (about 2 GB),
 * WAL_ENOMEM. */
int wal_frameset_encode(const struct wal_frameset *fs, uint8_t **out /* OUT */,
                        size_t *out_len /* OUT */);

/* Decodes len bytes of in (borrowed; not referenced after return). On success fs->pages and every
 * page image point into fs->buf, one allocation of sizeof(struct wal_page) * n + body bytes
 * (n <= body / 516, so at most about 1.03 * max_body_bytes), owned by fs: release with
 * wal_frameset_free. A temporary array of n page numbers is freed before returning. The body
 * (uncompressed) may not exceed max_body_bytes: WAL_ETOOBIG. Other errors: WAL_ETRUNCATED,
 * WAL_EMAGIC, WAL_EVERSION, WAL_EPAGESIZE, WAL_ECHECKSUM, WAL_ECORRUPT, WAL_EPGNO, WAL_ENOMEM; fs
 * is then empty. */
int wal_frameset_decode(const uint8_t *in, size_t len, size_t max_body_bytes,
                        struct wal_frameset *fs /* OUT */);

/* Releases what wal_frameset_decode allocated; fs is empty afterwards. */
void wal_frameset_free(struct wal_frameset *fs);

#endif /* WALRAFT_WAL_FRAMESET_H */
