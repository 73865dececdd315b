/*
 * The payloads the runtime sends over the transport, and the codec of the Raft core's messages.
 * Pure functions over byte buffers; no I/O.
 *
 * Transport payload types (the u16 `type` of a wire.h frame):
 *   IO_MSG_RAFT        one struct raft_message, encoded below
 *   IO_MSG_SNAP_CHUNK  a piece of a snapshot stream (node.c)
 *   IO_MSG_SNAP_ACK    the receiver's acknowledgement of a chunk (flow control, errors)
 *   IO_MSG_JOIN        a server asks to be added (raft_join), from any connection
 *   IO_MSG_JOIN_RESULT the answer: added, or who the leader is
 *   IO_MSG_STATUS      a client asks for the node's status
 *   IO_MSG_STATUS_RESULT JSON text
 *
 * Raft message layout (all integers little-endian):
 *   offset size field
 *     0     1   format version, IO_MSG_VERSION (1)
 *     1     1   message type (enum raft_message_type)
 *     2     8   from
 *    10     8   to
 *    18     8   term
 *    26     -   the body of the type, fields in the order of the structs in consensus/raft.h:
 *               u64 fields as 8 bytes, bools as 1 byte (0 or 1), int status as 4 bytes signed.
 *               AppendEntries: prev_index, prev_term, commit, u32 n_entries, then per entry:
 *               u64 term, u64 index, u8 type, u32 payload length, payload bytes.
 *               InstallSnapshot: last_index, last_term, u32 config length, encoded config.
 * Decoding rejects unknown versions and types, truncated input, trailing bytes, more than
 * RAFT_ENTRIES_PER_MSG_MAX entries, payloads longer than the caller's bound, and indexes that do
 * not follow each other.
 */
#ifndef WALRAFT_IO_MSG_H
#define WALRAFT_IO_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "consensus/io/bytes.h"
#include "consensus/raft.h"

enum io_msg_type {
    IO_MSG_RAFT = 1,
    IO_MSG_SNAP_CHUNK = 2,
    IO_MSG_SNAP_ACK = 3,
    IO_MSG_JOIN = 4,
    IO_MSG_JOIN_RESULT = 5,
    IO_MSG_STATUS = 6,
    IO_MSG_STATUS_RESULT = 7
};

#define IO_MSG_VERSION 1u
#define IO_MSG_HEADER_BYTES 26u

/* An upper bound of the bytes io_msg_encode writes for `m` (exact but for InstallSnapshot). */
size_t io_msg_size(const struct raft_message *m);

/* Encodes `m` into `buf` of `cap` >= io_msg_size(m) bytes; returns the bytes written. */
size_t io_msg_encode(const struct raft_message *m, uint8_t *buf, size_t cap);

/*
 * Decodes `len` bytes into `m`. Entry payloads are copied into new raft_bufs, each with one
 * reference owned by the caller: release them with io_msg_release(m). `entry_bytes_max` bounds
 * each payload. Returns 0, RAFT_EMALFORMED, RAFT_ETOOBIG (payload above the bound) or
 * RAFT_ENOMEM; on error nothing needs releasing.
 */
int io_msg_decode(const void *buf, size_t len, uint64_t entry_bytes_max,
                  struct raft_message *m /* OUT */);

/* Releases what io_msg_decode allocated in `m`. */
void io_msg_release(struct raft_message *m);

#endif
