/*
 * The node runtime: everything real around the Raft core for one replicated state machine.
 *
 * A node owns a directory (app.db-raft/) holding its durable log (log.h), its metadata (meta.h),
 * its identity (name and address) and the configuration its last snapshot or compaction covered.
 * It runs on the process's loop thread (loop.h) together with every other node of the process,
 * talks to its peers through a transport (transport.h), and drives the core (consensus/raft.h):
 *
 *   loop thread   core steps, transport, timers, metadata writes (rare: terms, votes, floors)
 *   disk thread   log appends, one fdatasync per batch (group commit), truncations, compaction
 *   apply thread  committed entries and snapshot chunks, handed to the state machine in order
 *
 * Each hand-off between these threads is a wake-up (about 20 us on a 2-vCPU VM), so two steps
 * of the core run on the thread that has the event instead, as the loop would, under the loop's
 * lock (io_loop_enter): a leader's proposer proposes and sends the AppendEntries itself, and the
 * disk thread reports a sync (a follower's acknowledgement leaves from there). The proposer then
 * waits for its commit by running the loop itself (io_call_await_running), so the acknowledgement
 * that commits the entry wakes the proposer, not the loop thread, which steps aside meanwhile. A
 * follower's idle disk thread runs the loop the same way until an append arrives, and stops
 * before it writes (so a slow disk still never holds up the loop). A
 * leader alone in its configuration goes further (propose_direct in node.c): its proposer also
 * writes and syncs the log and completes its own commit. No log write or fsync ever runs under the
 * loop's lock.
 *
 * The state machine (struct io_fsm) knows nothing of Raft, and the runtime knows nothing of
 * SQLite. Every io_node_* function is thread-safe and may block the calling thread (never the
 * loop): application threads propose, wait for commits, wait for barriers, change membership.
 *
 * Node ids are the xxh64 of the node's name (never 0); names are what users see ("n1").
 */
#ifndef WALRAFT_IO_NODE_H
#define WALRAFT_IO_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "consensus/raft.h"

struct io_node;

/* Error codes of the runtime: the core's (RAFT_E*, 1..99) plus these. */
#define IO_NODE_ERRORS(X)                                                                         \
    X(IO_NODE_EIO, 100, "disk error")                                                             \
    X(IO_NODE_EEXIST, 101, "the node's directory already holds a cluster member")                 \
    X(IO_NODE_ENOENT, 102, "the node's directory holds no cluster member")                        \
    X(IO_NODE_ELISTEN, 103, "cannot listen on the address")                                       \
    X(IO_NODE_EJOIN, 104, "could not join the cluster")                                           \
    X(IO_NODE_ELOCKED, 105, "another process runs a node on this directory")                      \
    X(IO_NODE_EDISKFULL, 106, "the node's disk refused a write (full?): writes are refused")      \
    X(IO_NODE_EFSM, 107, "the state machine failed")

enum {
#define IO_NODE_ERROR_ENUM(name, value, msg) name = value,
    IO_NODE_ERRORS(IO_NODE_ERROR_ENUM)
#undef IO_NODE_ERROR_ENUM
};

/* A static message for a RAFT_E* or IO_NODE_E* code. */
const char *io_node_strerror(int rc);

/* One committed entry handed to io_fsm.apply_batch; buf is valid during the call. */
struct io_apply_entry {
    uint64_t index;
    const void *buf;
    size_t len;
};

/*
 * The state machine. Every callback runs on the node's apply thread, one at a time, in log order.
 */
struct io_fsm {
    void *ctx;
    /* Applies the committed RAFT_NORMAL entry `index`. After a restart entries from the applied
     * floor + 1 on are applied again: applying must be idempotent in that sense (DESIGN §4).
     * Non-zero stops the node's apply thread (a fatal error, logged). */
    int (*apply)(void *ctx, uint64_t index, const void *buf, size_t len);

    /* Snapshot sending (leader). open: starts a consistent image covering at least every applied
     * entry; read: fills up to `cap` bytes, *n = 0 at the end; close: ends it. Called on a worker
     * thread; may run concurrently with apply. NULL open: snapshots are not supported. */
    int (*snapshot_open)(void *ctx, void **handle /* OUT */, uint64_t *size /* OUT, 0: unknown */);
    int (*snapshot_read)(void *ctx, void *handle, void *buf, size_t cap, size_t *n /* OUT */);
    void (*snapshot_close)(void *ctx, void *handle);

    /* Snapshot installing (follower), on the apply thread: begin, chunks in order, then end with
     * ok=true to make the image the state (atomically) and durable before returning, or ok=false
     * to abandon it. After a successful end the node records the image as its log's base and its
     * applied floor, and drops the log before it: a state machine that came back after a crash
     * with an older state would never see the entries in between again. An image holding no more
     * than the state already does (a stream overtaken by a newer one, or by entries applied
     * meanwhile) must not be installed: end keeps the state, makes it durable, and succeeds; the
     * node never takes its log's base back. */
    int (*install_begin)(void *ctx, uint64_t index);
    int (*install_chunk)(void *ctx, const void *buf, size_t len);
    int (*install_end)(void *ctx, uint64_t index, bool ok);

    /* Applies several committed RAFT_NORMAL entries (increasing indexes) as one unit, so
     * readers see all of them or none. When set, the apply thread hands every consecutive
     * committed entry it has queued to apply_batch (bounded by count and bytes) and never calls
     * apply: after a restart the whole replay is one unit. Set apply, apply_batch, or both. */
    int (*apply_batch)(void *ctx, const struct io_apply_entry *e, size_t n);

    /* This node stopped being the leader (may be NULL). Runs on the loop (the loop thread, or a
     * proposer running it while it waits): it must be quick and must not wait for anything an
     * application thread holds. */
    void (*leadership_lost)(void *ctx);

    /* The proposer applies its own entries (the VFS's writer completes its transaction once the
     * proposal commits). Then a committed entry whose proposer is waiting for it is queued for the
     * apply thread without waking it: the thread takes such entries with the next entry that
     * needs it, when io_node_wait_applied waits, or after 20 ms (APPLY_LAZY_US); by then
     * apply_batch usually finds them applied. Without it every committed entry wakes the apply
     * thread. */
    bool proposer_applies;

    /* May be NULL. At a restart, before anything is applied: the index of the last entry in the
     * state the state machine holds (what it will build on). The runtime replays from its applied
     * floor + 1, which it recorded when the state machine reported it durable; a state machine
     * that came back older than that (its durable state was lost or replaced) would miss the
     * entries in between. With this callback the runtime replays from the state's index instead
     * while its log still holds the entries after it, and refuses to start (IO_NODE_EFSM, with a
     * message) once they are compacted away. NULL: the floor is trusted. */
    uint64_t (*state_index)(void *ctx);
};

struct io_node_config {
    const char *dir;           /* the node's directory, created if missing */
    const char *name;          /* e.g. "n1"; required for bootstrap and join */
    const char *listen_addr;   /* "host:port"; required for bootstrap and join */
    uint32_t election_timeout_ms; /* 0: 1000 */
    uint32_t heartbeat_ms;        /* 0: 100 */
    uint64_t trailing_entries;    /* 0: the core's default */
    uint64_t trailing_bytes;      /* 0: the core's default (16 MiB) */
    uint64_t entry_bytes_max;     /* 0: 64 MiB */
    uint8_t leader_sync;          /* IO_LEADER_SYNC_EAGER (0) or _LAZY: see below */
    struct io_fsm fsm;
};

/* How a leader makes its own log durable. EAGER: it syncs every append at once, in parallel with
 * replication; its copy counts toward the quorum as soon as it is durable. LAZY: while a quorum of
 * the other voters keeps up, it writes its appends at once but syncs them in batches (every 20 ms)
 * after the followers have committed them (Raft thesis §10.2.1); when the followers are one short
 * of a quorum and the last of them is 0.3 ms late, it syncs at once, and after 8 such fallbacks in
 * a row it stays eager for 0.5 s (node.c, disk_hold_until). One fdatasync per entry fewer across
 * the cluster, none on the leader's commit path; a commit waits for the slower followers of the
 * quorum rather than the faster ones. */
enum { IO_LEADER_SYNC_EAGER = 0, IO_LEADER_SYNC_LAZY = 1 };

enum io_node_start_mode {
    IO_NODE_RESTART = 0,   /* the directory holds a member: run it */
    IO_NODE_BOOTSTRAP = 1, /* a new one-node cluster */
    IO_NODE_JOIN = 2       /* ask the cluster, through any member at join_addr, to add this node */
};

/* The node id of a server name (its xxh64; never 0). */
uint64_t io_node_id_of(const char *name);

/* Does `dir` hold a cluster member (a node that bootstrapped or joined)? */
bool io_node_exists(const char *dir);

/* Removes a node directory and everything in it. Only for a node that is not running: one
 * whose bootstrap or join could not be completed. */
void io_node_wipe_dir(const char *dir);

/*
 * Starts a node. JOIN blocks until the cluster has committed the addition (or fails after
 * join_timeout_ms); `role` is RAFT_VOTER (joins as a learner, promoted once caught up) or
 * RAFT_REPLICA. On error returns a code and writes a message into err (may be NULL).
 */
int io_node_start(const struct io_node_config *cfg, enum io_node_start_mode mode,
                  const char *join_addr, uint8_t role, int64_t join_timeout_ms,
                  struct io_node **out /* OUT */, char *err, size_t err_len);

/* Stops the node: closes its connections, finishes in-flight disk writes, joins its threads,
 * fails every waiting call with RAFT_ESHUTDOWN. The last node of the process stops the loop. */
void io_node_stop(struct io_node *n);

/*
 * Proposes a RAFT_NORMAL entry (copies `len` bytes) and waits until it is committed. Returns 0
 * with *index, or: RAFT_ENOTLEADER (definitely not appended), RAFT_EBUSY, RAFT_ETRANSFER,
 * RAFT_ETOOBIG, IO_NODE_EDISKFULL (refused before appending), RAFT_ENOTCOMMITTED (appended,
 * then discarded), RAFT_EUNKNOWN (leadership lost after appending, or the wait timed out: the
 * entry may still commit), RAFT_ESHUTDOWN.
 */
int io_node_propose(struct io_node *n, const void *buf, size_t len, int64_t timeout_ms,
                    uint64_t *index /* OUT, may be NULL */);

/* ReadIndex (raft_barrier): returns once this node has applied everything committed before the
 * call; *index receives the read index. RAFT_ENOTLEADER when no leader is known. */
int io_node_barrier(struct io_node *n, int64_t timeout_ms, uint64_t *index /* OUT */);

/* Waits until the node has applied `index` (0 on success, RAFT_ETIMEOUT). */
int io_node_wait_applied(struct io_node *n, uint64_t index, int64_t timeout_ms);

/* Membership, on the leader; each waits for the configuration entry to commit. Servers are
 * named by name. add: role RAFT_VOTER or RAFT_REPLICA. */
int io_node_add(struct io_node *n, const char *name, const char *addr, uint8_t role,
                int64_t timeout_ms);
int io_node_remove(struct io_node *n, const char *name, int64_t timeout_ms);
int io_node_promote(struct io_node *n, const char *name, int64_t timeout_ms);
int io_node_demote(struct io_node *n, const char *name, int64_t timeout_ms);

/* Leader transfer to `name` (NULL: the most up-to-date voter); waits until another node leads. */
int io_node_transfer(struct io_node *n, const char *name, int64_t timeout_ms);

/* Disaster recovery: forces the configuration `c` on this node (see raft_recover). */
int io_node_recover(struct io_node *n, const struct raft_config *c);

/* The state machine reports that every entry up to `index` is durably in its checkpointed state
 * (the applied floor): the log may be compacted below it. Thread-safe, cheap, asynchronous. */
void io_node_set_applied_floor(struct io_node *n, uint64_t index);

/* Can this node accept a write now? 0 when it is the leader, has committed an entry of its term
 * and has applied its whole log; RAFT_ENOTLEADER; RAFT_EBUSY (catching up); RAFT_ETRANSFER;
 * IO_NODE_EDISKFULL. `applied_hint` is the state machine's own applied index when it can be
 * ahead of the apply thread (a leader's local commit is in the state before the apply thread
 * reaches its entry); 0 if none. Cheap (reads state the loop publishes). */
int io_node_write_gate(struct io_node *n, uint64_t applied_hint);

/* The known leader's name and address ("" when unknown). */
void io_node_leader(struct io_node *n, char name[RAFT_NAME_MAX], char addr[RAFT_ADDR_MAX]);

struct io_node_peer_status {
    struct raft_server server;
    bool is_leader;
    uint64_t match_index;     /* leader only; 0 elsewhere */
    uint64_t last_contact_ms; /* leader only: ms since the peer last answered */
    uint8_t progress;         /* enum raft_progress_state; leader only */
    bool connected;
};

struct io_node_status {
    char name[RAFT_NAME_MAX];
    char addr[RAFT_ADDR_MAX];
    uint64_t id;
    uint64_t cluster_id;
    uint8_t state; /* enum raft_state */
    uint8_t role;  /* this node's enum raft_role; 255 when not in the configuration */
    uint64_t term;
    char leader_name[RAFT_NAME_MAX];
    char leader_addr[RAFT_ADDR_MAX];
    uint64_t first_index, last_index, commit_index, persisted_index, applied_index;
    uint64_t applied_floor; /* durable: the last index known to be in the checkpointed state */
    uint32_t n_peers;
    struct io_node_peer_status peers[RAFT_SERVERS_MAX];
    /* counters */
    uint64_t proposals, commits, elections, snapshots_sent, snapshots_installed;
    uint64_t bytes_replicated;
    uint64_t commit_latency_p50_us, commit_latency_p99_us;
    /* a snapshot being installed: bytes done / total (0/0 when none) */
    uint64_t install_done, install_total;
    bool disk_failed;
};

/* Fills *st with a consistent picture taken on the loop thread. */
int io_node_status(struct io_node *n, struct io_node_status *st /* OUT */);

/* Renders *st as one JSON object into buf (NUL-terminated, truncated to cap). */
size_t io_node_status_json(const struct io_node_status *st, char *buf, size_t cap);

/* Asks the node listening at `addr` for its status JSON (the `walraft status ADDR` command).
 * Returns 0 with a malloc'd NUL-terminated string in *json, or an error code. */
int io_node_remote_status(const char *addr, int64_t timeout_ms, char **json /* OUT */,
                          char *err, size_t err_len);

/* Test hook: drop messages to or from `peer` (name; NULL: every peer) in one or both
 * directions, as a lossy or partitioned network would. `in`/`out` false restore delivery. */
void io_node_set_partition(struct io_node *n, const char *peer, bool drop_in, bool drop_out);

#endif
