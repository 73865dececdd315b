/* The transaction appender: writes one replicated transaction to a database's WAL and wal-index
 * the way SQLite's own writer does (see the follower's apply path, DESIGN §4). The caller holds
 * the locks; this file only orders the writes so that no reader, and no recovery after a crash,
 * can see part of a transaction:
 *   1. (restart) the index restarts: mxFrame 0, new salts, nBackfill 0, read marks reset;
 *   2. (mxFrame == 0) a new WAL header at offset 0;
 *   3. per page: its index entry (above mxFrame, so invisible), then its frame;
 *      the last frame, carrying the commit size, is written last (and the caller's flush, if it
 *      gathers writes, completes them all);
 *   4. the new index header is published (copy 2, barrier, copy 1).
 * Work is O(pages in the transaction): nothing reads or walks the existing WAL. */
#include <assert.h>
#include <string.h>

#include "wal/bytes.h"
#include "wal/wal.h"

static int write_all(const struct wal_io *io, const void *buf, size_t n, uint64_t off)
{
    return io->write(io->ctx, buf, n, off) == 0 ? WAL_OK : WAL_EIO;
}

/* Checkpoint sequence for a log that starts again at frame 1: one more than the old header's,
 * or 0 when there is no readable old header. */
static uint32_t next_ckpt_seq(const struct wal_io *io, int restart)
{
    if (io->read == NULL) {
        return 0;
    }
    uint8_t buf[WAL_HDR_SIZE];
    struct wal_hdr old;
    if (io->read(io->ctx, buf, sizeof buf, 0) != 0 || wal_hdr_decode(buf, &old) != WAL_OK) {
        return 0;
    }
    return restart ? old.ckpt_seq + 1 : old.ckpt_seq;
}

static int txn_valid(const struct wal_txn *txn)
{
    if (!wal_page_size_valid(txn->page_size) || txn->n_pages == 0 || txn->pages == NULL ||
        txn->commit_pages == 0) {
        return 0;
    }
    for (uint32_t i = 0; i < txn->n_pages; i++) {
        if (txn->pages[i].pgno == 0 || txn->pages[i].data == NULL) {
            return 0;
        }
    }
    return 1;
}

int wal_append_txn(const struct wal_shm *shm, const struct wal_io *io, const struct wal_txn *txn,
                   struct wal_append_result *result)
{
    assert(shm != NULL && shm->map != NULL);
    assert(io != NULL && io->write != NULL);
    if (!txn_valid(txn)) {
        return WAL_EINVAL;
    }
    struct wal_index_hdr h;
    int rc = wal_index_hdr_read(shm, &h);
    if (rc != WAL_OK) {
        return rc;
    }
    int restarted = 0;
    if (txn->restart) {
        uint32_t backfill;
        rc = wal_ckpt_backfill(shm, &backfill);
        if (rc != WAL_OK) {
            return rc;
        }
        if (backfill != h.mx_frame) {
            return WAL_ENOT_CHECKPOINTED;
        }
        rc = wal_index_restart(shm, &h, txn->salt[1]);
        if (rc != WAL_OK) {
            return rc;
        }
        restarted = 1;
    }
    if (h.mx_frame > UINT32_MAX - txn->n_pages) {
        return WAL_EFULL;
    }

    struct wal_chain c;
    if (h.mx_frame == 0) {
        /* The log starts at frame 1: a new header, in this machine's checksum byte order (as
         * SQLite writes it), with the salts the index holds; an index that never had a log has
         * none, and gets the caller's random ones. */
        uint32_t salt1 = wal_index_salt(&h, 0);
        uint32_t salt2 = wal_index_salt(&h, 1);
        if (salt1 == 0 && salt2 == 0 && !restarted) {
            salt1 = txn->salt[0];
            salt2 = txn->salt[1];
        }
        uint8_t buf[WAL_HDR_SIZE];
        struct wal_hdr wh;
        wal_hdr_build(&wh, __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__, txn->page_size,
                      next_ckpt_seq(io, restarted), salt1, salt2, buf);
        rc = write_all(io, buf, sizeof buf, 0);
        if (rc != WAL_OK) {
            return rc;
        }
        wal_chain_init(&c, &wh);
        h.big_end_cksum = (uint8_t)c.big_endian;
        h.page_size = wal_index_encode_page_size(txn->page_size);
        wal_index_hdr_set_salts(&h, salt1, salt2);
    } else {
        if (wal_index_page_size(&h) != txn->page_size) {
            return WAL_EPAGESIZE;
        }
        c.big_endian = h.big_end_cksum != 0;
        c.page_size = txn->page_size;
        c.salt1 = wal_index_salt(&h, 0);
        c.salt2 = wal_index_salt(&h, 1);
        c.cksum[0] = h.frame_cksum[0];
        c.cksum[1] = h.frame_cksum[1];
    }

    uint32_t frame = h.mx_frame;
    for (uint32_t i = 0; i < txn->n_pages; i++) {
        const struct wal_page *p = &txn->pages[i];
        frame++;
        rc = wal_index_append(shm, frame, p->pgno);
        if (rc != WAL_OK) {
            return rc;
        }
        uint8_t fh[WAL_FRAME_HDR_SIZE];
        uint32_t commit = i + 1 == txn->n_pages ? txn->commit_pages : 0;
        wal_frame_encode(&c, p->pgno, commit, p->data, fh);
        uint64_t off = wal_frame_offset(txn->page_size, frame);
        rc = write_all(io, fh, sizeof fh, off);
        if (rc == WAL_OK) {
            rc = write_all(io, p->data, txn->page_size, off + WAL_FRAME_HDR_SIZE);
        }
        if (rc != WAL_OK) {
            return rc;
        }
    }

    if (io->flush != NULL && io->flush(io->ctx) != 0) {
        return WAL_EIO;
    }
    uint32_t first = h.mx_frame + 1;
    h.mx_frame = frame;
    h.n_page = txn->commit_pages;
    h.frame_cksum[0] = c.cksum[0];
    h.frame_cksum[1] = c.cksum[1];
    rc = wal_index_hdr_publish(shm, &h);
    if (rc != WAL_OK) {
        return rc;
    }
    if (result != NULL) {
        result->first_frame = first;
        result->mx_frame = frame;
        result->restarted = restarted;
    }
    return WAL_OK;
}
