/*
 * vfs/ — the walraft VFS: a shim over SQLite's default unix VFS.
 *
 * It owns the database side of replication: the writer gate, capture of each write transaction's
 * WAL frames on the leader, and the apply path that writes committed frame sets into the local WAL
 * and wal-index. It never includes consensus/: it talks to a node through struct vfs_node_ops,
 * which ext/ wires to the runtime.
 *
 * Lock model (DESIGN §4). A database attached to a node (vfs_db_attach) is written only by that
 * node: its private handle on the database, opened through the underlying VFS's xOpen, holds the
 * real wal-index WRITE (slot 0) and CHECKPOINT (slot 1) locks for the whole attachment, plus a
 * SHARED lock on the database file (so no connection can take the EXCLUSIVE lock that would
 * checkpoint and delete the WAL on close). Consequences:
 *   - other processes can never write (their WRITE lock request is SQLITE_BUSY, "database is
 *     locked") nor checkpoint the database;
 *   - in-process connections that open the database with this VFS and ask for WRITE get a lock of
 *     the VFS's own instead, granted only when the node's write_gate says SQLITE_OK
 *     (SQLITE_READONLY on a follower, SQLITE_BUSY while a new leader catches up); writers that
 *     find it taken queue on a condition variable, bounded by the connection's busy handler;
 *   - in-process connections are refused the CHECKPOINT lock (SQLITE_BUSY), so their
 *     auto-checkpoints and `PRAGMA wal_checkpoint` do nothing: checkpoints belong to the node
 *     (vfs_db_checkpoint), serialised with writes, applies and WAL restarts.
 * A database opened with this VFS and not attached behaves as a plain pass-through.
 *
 * Obligations of the caller (ext/ and the runtime):
 *   - vfs_register before any attach; one attachment per database path per process.
 *   - Hand every committed entry to vfs_db_apply (or vfs_db_apply_batch), on every node including
 *     the leader, from one thread per database, in log order. On the leader, entries its own
 *     writers committed locally are skipped in O(1); the skip path is also where the leader's
 *     WAL gets checkpointed (past cfg.checkpoint_frames), since local connections cannot.
 *   - Never call vfs_db_apply/checkpoint/detach from inside write_gate() or propose(), nor from a
 *     thread whose progress propose() waits on: apply waits for a local writer that holds the
 *     write lock (unless doomed), and that writer may be blocked in propose().
 *   - On losing leadership, call vfs_db_step_down before applying entries of the new leader, and
 *     make write_gate answer SQLITE_READONLY from then on; make propose() of the doomed
 *     transaction return (NOT_COMMITTED or UNKNOWN).
 *   - On start-up, attach with the persisted applied floor and replay floor+1..commit with one
 *     vfs_db_apply_batch, before write_gate admits writers.
 *   - vfs_db_checkpoint's floor is the value to persist as the applied floor.
 * Errors reach the user as SQLite result codes from the statement (SQLITE_READONLY for a
 * follower, SQLITE_BUSY while catching up or after the busy timeout, SQLITE_IOERR_WRITE for a
 * failed or unknown commit, SQLITE_FULL for a transaction over max_txn_bytes); the sentence that
 * explains them (who leads, "outcome unknown", the bound) goes to sqlite3_log and to
 * vfs_db_last_error, for ext/ to report.
 */
#ifndef WALRAFT_VFS_H
#define WALRAFT_VFS_H

#include <stddef.h>
#include <stdint.h>

/* Registers the VFS under `name` over the current default VFS. `make_default` != 0 makes it the
 * default VFS. Returns an SQLITE_* code. Safe to call again: a second call is a no-op. */
int vfs_register(const char *name, int make_default);

/* What propose() reports. */
enum vfs_propose_result {
    VFS_PROPOSE_OK = 0,            /* committed (a quorum holds it durably); *index_out is set */
    VFS_PROPOSE_NOT_COMMITTED = 1, /* definitely not committed, and never will be */
    VFS_PROPOSE_UNKNOWN = 2,       /* may still commit (deposed or timed out after sending) */
};

/* What vfs/ needs from a node. Every callback is called from an application thread that is inside
 * an SQLite call, with no vfs/ lock held; none may call back into vfs_db_* for the same database
 * except as noted.
 *
 * write_gate: may a local connection start a write transaction now? Returns SQLITE_OK,
 *   SQLITE_READONLY (not the leader: writes `why`, e.g. "not the leader; the leader is n1 at
 *   127.0.0.1:7001", NUL-terminated, at most why_len bytes) or SQLITE_BUSY (leader still
 *   catching up). Must not block for long.
 * propose: replicate one transaction. `payload` (len bytes, borrowed for the call) is a frame
 *   set; blocks until the entry is committed or cannot be. Returns an enum vfs_propose_result;
 *   on failure writes a reason into `why`. Must complete without waiting for vfs_db_apply() of
 *   the same entry (the runtime signals the proposer first, then hands the entry to apply, which
 *   skips it once the proposer has written it locally).
 */
struct vfs_node_ops {
    void *ctx;
    int (*write_gate)(void *ctx, char *why, size_t why_len);
    int (*propose)(void *ctx, const void *payload, size_t len, uint64_t *index_out, char *why,
                   size_t why_len);
};

struct vfs_db_config {
    uint64_t max_txn_bytes;     /* largest transaction (pages x page size); 0: 1 GiB */
    uint32_t checkpoint_frames; /* vfs_db_apply checkpoints past this WAL size; 0: 1000 */
};

/* A database attached to a node. */
struct vfs_db;

/* Attaches the database at `path` (created if missing, switched to WAL mode) to a node: opens
 * the node's handle and takes the locks above, waiting up to a few seconds for an in-flight local
 * writer. `applied_floor` is the last log index known to be in the database file (or in its WAL);
 * vfs_db_apply skips indexes at or below it. ops is copied; ops->ctx must outlive the
 * attachment. cfg may be NULL. One attachment per path per process: a second one is
 * SQLITE_MISUSE. Returns SQLITE_OK and *out, or an SQLITE_* code (SQLITE_BUSY: another process
 * or attachment holds the write lock). */
int vfs_db_attach(const char *path, const struct vfs_node_ops *ops, const struct vfs_db_config *cfg,
                  uint64_t applied_floor, struct vfs_db **out /* OUT */);

/* Detaches: waits for a local write transaction in progress, releases the locks, closes the
 * node's handles and frees db. Local connections stay open and become pass-through. */
int vfs_db_detach(struct vfs_db *db);

/* Applies the committed entry `index` whose payload is a frame set (len == 0: an entry without
 * pages, e.g. a no-op; only the applied index moves). Entries at or below the applied index are
 * skipped (the leader's own writer already wrote them). Call from one thread per database, in
 * log order, never from inside propose() or write_gate(). Waits for a local write transaction
 * in progress unless it is doomed (vfs_db_step_down). Runs a PASSIVE checkpoint when the WAL
 * passes cfg.checkpoint_frames. Returns an SQLITE_* code; SQLITE_CORRUPT for a payload that does
 * not decode or does not fit the database (page size). */
int vfs_db_apply(struct vfs_db *db, const void *payload, size_t len, uint64_t index);

/* One committed entry for vfs_db_apply_batch. */
struct vfs_entry {
    const void *payload; /* borrowed */
    size_t len;
    uint64_t index;
};

/* Applies entries e[0..n) (increasing indexes) as ONE WAL transaction: readers see all of them
 * or none. For restart replay from the applied floor (DESIGN §4). Same rules as vfs_db_apply. */
int vfs_db_apply_batch(struct vfs_db *db, const struct vfs_entry *e, size_t n);

/* Runs a PASSIVE checkpoint now, serialised with writers and applies. *floor_out (may be NULL)
 * receives the applied floor: the last index known to be in the database file after the
 * checkpoint's fsync. Returns an SQLITE_* code. */
int vfs_db_checkpoint(struct vfs_db *db, uint64_t *floor_out /* OUT */);

/* The last index applied to the database (by vfs_db_apply or by a local commit), and the applied
 * floor as of the last checkpoint or WAL restart. */
uint64_t vfs_db_applied(struct vfs_db *db);
uint64_t vfs_db_floor(struct vfs_db *db);

/* Leadership lost: a local write transaction in progress (if any) is doomed: every further WAL
 * write fails, so SQLite rolls it back; vfs_db_apply no longer waits for it. */
void vfs_db_step_down(struct vfs_db *db);

/* Copies the last error this database's replication reported (NUL-terminated) into buf: why a
 * write was refused, why a commit failed (including "outcome unknown"), a transaction over
 * max_txn_bytes. The same text goes to sqlite3_log. Empty when there was none. */
void vfs_db_last_error(struct vfs_db *db, char *buf, size_t n);

/* --- snapshots (snapshot.c): the database itself is the image (DESIGN §5) --------------------
 *
 * vfs_db_snapshot_open pins a consistent image of the database as applied now, while applies and
 * local writers go on; vfs_snapshot_read produces its byte stream (a 24-byte header: magic,
 * version, page size, page count, the index of the last entry it holds; then every page in
 * order), *n = 0 at the end;
 * vfs_snapshot_close releases it. Any thread; one thread per snapshot. *size receives the
 * stream's length. */
struct vfs_snapshot;
int vfs_db_snapshot_open(struct vfs_db *db, struct vfs_snapshot **out, uint64_t *size);
int vfs_snapshot_read(struct vfs_snapshot *s, void *buf, size_t cap, size_t *n /* OUT */);
void vfs_snapshot_close(struct vfs_snapshot *s);

/* Installs an image received from the leader as log index `index`: begin, the stream's bytes in
 * order (spooled to a file beside the database), then end: with ok, every page is appended as ONE
 * WAL transaction (readers see the old state or the new one), checkpointed, and the index the
 * image holds (`index` or later: entries up to it are then skipped when applied) becomes the
 * applied index; without, the spool is dropped. An image holding less than `index`, or whose
 * header counts more pages than it holds, is refused (SQLITE_CORRUPT). An image holding no more
 * than the database already does is not installed: the database keeps its state, made durable
 * (WAL synced, checkpointed), and end returns SQLITE_OK. From the thread that applies entries. */
int vfs_db_install_begin(struct vfs_db *db, uint64_t index);
int vfs_db_install_chunk(struct vfs_db *db, const void *buf, size_t len);
int vfs_db_install_end(struct vfs_db *db, uint64_t index, int ok);

/* xxh64 over the image a snapshot would send (*n_pages: its page count): equal on replicas that
 * applied the same entries. */
int vfs_db_checksum(struct vfs_db *db, uint64_t *hash /* OUT */, uint32_t *n_pages /* OUT */);

#endif
