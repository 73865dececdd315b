/*
 * Small durable records that are rewritten in place: the node's metadata (current term, vote,
 * ids, applied floor, snapshot index and term) and, through the same machinery, the log's anchor
 * (its logical first index). Owns one file per record.
 *
 * A slot file holds two fixed-size slots. A write goes to the slot that does not hold the newest
 * valid copy, then fdatasync; a load takes the valid slot with the higher sequence number (and
 * fdatasyncs the file first, so what it returns is on disk). A torn write therefore damages at
 * most the slot being written, and the previous copy survives.
 *
 * Slot file layout (little-endian; IO_SLOT_BYTES per slot, slot k at byte k * IO_SLOT_BYTES):
 *
 *     offset  size  field
 *          0     4  magic, names the kind of record (IO_META_MAGIC "WRMD", log anchor "WRLA")
 *          4     4  format version of the payload (IO_META_VERSION for the metadata)
 *          8     8  sequence number, +1 on every write; the higher valid one wins
 *         16     4  payload length in bytes (fixed per kind; a mismatch makes the slot invalid)
 *         20     4  reserved, zero
 *         24     n  payload (n <= IO_SLOT_PAYLOAD_MAX), then zeros up to byte 504
 *        504     8  xxh64 (seed 0) of bytes 0..503 of the slot
 *
 * A slot is valid when its magic, version and length are the expected ones and its checksum
 * matches. A slot file is created whole (both slots written to "<path>.tmp", fdatasync, rename,
 * directory fsync), so an existing file with no valid slot is corruption, reported as an error
 * and never reset to zero.
 *
 * Metadata payload (IO_META_VERSION 1, 56 bytes): term, voted_for, node_id, cluster_id,
 * applied_floor, snapshot_index, snapshot_term; each 8 bytes little-endian, in that order.
 *
 * Threading: a struct io_slots / io_meta_file is used by one thread at a time.
 */
#ifndef WALRAFT_IO_META_H
#define WALRAFT_IO_META_H

#include <stddef.h>
#include <stdint.h>

#include "consensus/io/log.h" /* error codes */

#define IO_SLOT_BYTES 512
#define IO_SLOT_HEADER_BYTES 24
#define IO_SLOT_PAYLOAD_MAX (IO_SLOT_BYTES - IO_SLOT_HEADER_BYTES - 8)
#define IO_META_MAGIC 0x444d5257u /* "WRMD" */
#define IO_META_VERSION 1u

/* A two-slot file. Caller-allocated; fields are private. */
struct io_slots {
    int fd;
    uint32_t magic;
    uint32_t version;
    size_t payload_len;
    uint64_t seq; /* sequence number of the newest valid slot (0: none yet) */
    int newest;   /* index (0 or 1) of the slot holding `seq` */
    char path[4096];
    char errmsg[512];
};

/*
 * Opens or creates the slot file at `path`. On success *found is 1 and `payload` (OUT,
 * `payload_len` bytes) holds the newest valid copy, or *found is 0 when the file did not exist
 * (it is then created, both slots holding `initial`). Returns 0 or an IO_LOG_E* code; on error
 * s->errmsg says which file and why, and the file stays closed.
 */
int io_slots_open(struct io_slots *s, const char *path, uint32_t magic, uint32_t version,
                  size_t payload_len, const void *initial, void *payload, int *found);

/* Durably writes `payload` (payload_len bytes) into the older slot. Returns 0 only after the
 * fdatasync succeeded. On error the previous copy is untouched, but the new one may still have
 * reached the disk: a restart may load either, so the caller must not act on the new value
 * (e.g. send a vote) and should retry or stop. */
int io_slots_write(struct io_slots *s, const void *payload);

void io_slots_close(struct io_slots *s);

/* The node's metadata. */
struct io_meta {
    uint64_t term;           /* current term */
    uint64_t voted_for;      /* node id voted for in `term`, 0: none */
    uint64_t node_id;        /* this node's id, 0: not assigned yet */
    uint64_t cluster_id;     /* 0: not assigned yet */
    uint64_t applied_floor;  /* last index known to be in the checkpointed database file */
    uint64_t snapshot_index; /* last index covered by the newest snapshot, 0: none */
    uint64_t snapshot_term;  /* term of snapshot_index */
};

struct io_meta_file {
    struct io_slots slots;
};

/*
 * Opens (or creates, all fields zero) the metadata file at `path` and loads it into *out.
 * *created (may be NULL) is set to 1 when the file did not exist. Returns 0 or an IO_LOG_E* code
 * with the reason in io_meta_errmsg(); a file whose two slots are both invalid is
 * IO_LOG_ECORRUPT.
 */
int io_meta_open(struct io_meta_file *f, const char *path, struct io_meta *out, int *created);

/* Durably stores *m. Returns 0 only once it is on disk. */
int io_meta_store(struct io_meta_file *f, const struct io_meta *m);

void io_meta_close(struct io_meta_file *f);

const char *io_meta_errmsg(const struct io_meta_file *f);

#endif
