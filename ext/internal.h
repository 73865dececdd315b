/*
 * ext/ internals: the registry of nodes (one per database path per process) that wires a
 * database's VFS attachment (vfs/) to its Raft node (consensus/io/), and the SQL surface on top.
 */
#ifndef WALRAFT_EXT_INTERNAL_H
#define WALRAFT_EXT_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "consensus/io/node.h"
#include "vfs/sqlite_api.h"
#include "vfs/vfs.h"

#define EXT_PATH_MAX 4096

/* Per-database settings: URI parameters of the database's filename, else these defaults. */
struct ext_config {
    uint32_t election_timeout_ms; /* raft_election_timeout_ms, default 1000 */
    uint32_t heartbeat_ms;        /* raft_heartbeat_ms, default 100 */
    uint32_t commit_timeout_ms;   /* raft_commit_timeout_ms, default 10000 */
    uint32_t checkpoint_frames;   /* raft_checkpoint_frames, default 1000 */
    uint64_t trailing_entries;    /* raft_trailing_entries, default 1024 */
    uint64_t trailing_bytes;      /* raft_trailing_bytes, default 16 MiB */
    uint64_t max_txn_bytes;       /* raft_max_txn_bytes, default 60 MiB */
    uint8_t leader_sync;          /* raft_leader_sync: eager (default) or lazy, IO_LEADER_SYNC_* */
};

struct ext_node {
    char path[EXT_PATH_MAX]; /* the database file, as SQLite names it */
    struct ext_config cfg;
    struct io_node *node;
    pthread_mutex_t mu; /* guards db, failed */
    pthread_cond_t cv;  /* db attached (or failed) */
    struct vfs_db *db;
    bool failed;
    uint64_t floor_reported;
    struct ext_node *next;
};

/* Starting a node for a database. */
enum ext_start { EXT_RESTART, EXT_BOOTSTRAP, EXT_JOIN };

/* The node of the database at `path`, or NULL. Thread-safe. */
struct ext_node *ext_node_find(const char *path);

/* Starts (or restarts) the node of `path`. For EXT_JOIN, `peer` is a member's address and `role`
 * RAFT_VOTER or RAFT_REPLICA. On error returns an SQLITE_* code with a message in err. */
int ext_node_start(const char *path, const struct ext_config *cfg, enum ext_start how,
                   const char *name, const char *addr, const char *peer, uint8_t role, char *err,
                   size_t err_len);

/* Reads the per-database configuration from a filename's URI parameters. */
/* Reads the settings; SQLITE_OK, or SQLITE_MISUSE with a message in err for a value that cannot
 * be taken (the setting then has its default). */
int ext_config_from_uri(const char *filename, struct ext_config *cfg /* OUT */, char *err,
                        size_t err_len);

/* True while this thread is inside ext_node_start. */
bool ext_node_starting(void);

/* Does `path`-raft/ hold a node that should restart? */
bool ext_node_dir_exists(const char *path);

/* Stops every node of the process (walraft_shutdown). */
void ext_node_stop_all(void);

/* A sentence for an io_node/raft error, naming the leader where that helps. */
void ext_describe(struct ext_node *n, int rc, char *buf, size_t len);

/* Registers the SQL functions and tables on `db`. */
int ext_register_functions(sqlite3 *db);
int ext_register_vtabs(sqlite3 *db);

#endif
