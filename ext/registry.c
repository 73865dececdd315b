/*
 * The registry of nodes: one per database path per process. Each entry joins a database's VFS
 * attachment to its Raft node: the node's state machine applies committed frame sets through
 * vfs_db_apply, and the VFS asks the node whether a local write may start and proposes each
 * local transaction through it.
 */
#include "consensus/io/logging.h"
#include "ext/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* How long raft_join() waits, after the cluster committed the addition, for this node to hear
 * of it (a big database arrives as a snapshot first). */
#define JOIN_SETTLE_MS 60000

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static struct ext_node *nodes;

/* Set while this thread starts a node: the connections vfs_db_attach opens run the
 * per-connection hook, which must not look for a node to restart (it would wait for the
 * registry lock this thread holds). */
static _Thread_local bool starting;

bool ext_node_starting(void)
{
    return starting;
}

struct ext_node *ext_node_find(const char *path)
{
    struct ext_node *n;
    pthread_mutex_lock(&registry_mu);
    for (n = nodes; n != NULL; n = n->next) {
        if (strcmp(n->path, path) == 0) {
            break;
        }
    }
    pthread_mutex_unlock(&registry_mu);
    return n;
}

static void raft_dir(const char *path, char *out, size_t len)
{
    snprintf(out, len, "%s-raft", path);
}

bool ext_node_dir_exists(const char *path)
{
    char dir[EXT_PATH_MAX + 8];
    raft_dir(path, dir, sizeof dir);
    return io_node_exists(dir);
}

int ext_config_from_uri(const char *filename, struct ext_config *cfg, char *err, size_t err_len)
{
    int rc = SQLITE_OK;
    cfg->election_timeout_ms =
        (uint32_t)sqlite3_uri_int64(filename, "raft_election_timeout_ms", 1000);
    cfg->heartbeat_ms = (uint32_t)sqlite3_uri_int64(filename, "raft_heartbeat_ms", 100);
    cfg->commit_timeout_ms = (uint32_t)sqlite3_uri_int64(filename, "raft_commit_timeout_ms", 10000);
    cfg->checkpoint_frames = (uint32_t)sqlite3_uri_int64(filename, "raft_checkpoint_frames", 1000);
    cfg->trailing_entries = (uint64_t)sqlite3_uri_int64(filename, "raft_trailing_entries", 1024);
    cfg->trailing_bytes =
        (uint64_t)sqlite3_uri_int64(filename, "raft_trailing_bytes", 16ll * 1024 * 1024);
    cfg->max_txn_bytes =
        (uint64_t)sqlite3_uri_int64(filename, "raft_max_txn_bytes", 60ll * 1024 * 1024);
    if (cfg->election_timeout_ms < 50) {
        cfg->election_timeout_ms = 50;
    }
    if (cfg->heartbeat_ms < 10 || cfg->heartbeat_ms >= cfg->election_timeout_ms) {
        cfg->heartbeat_ms = cfg->election_timeout_ms / 10 > 10 ? cfg->election_timeout_ms / 10 : 10;
    }
    if (cfg->commit_timeout_ms < 100) {
        cfg->commit_timeout_ms = 100;
    }
    /* Negative sizes read as huge: take them as "the default" (0) instead. */
    if ((int64_t)cfg->trailing_bytes < 0) {
        cfg->trailing_bytes = 0;
    }
    if ((int64_t)cfg->trailing_entries < 0) {
        cfg->trailing_entries = 0;
    }
    /* One transaction is one log entry: it must fit the log's bound. */
    if (cfg->max_txn_bytes == 0 || cfg->max_txn_bytes > 60ull * 1024 * 1024) {
        cfg->max_txn_bytes = 60ull * 1024 * 1024;
    }
    const char *sync = sqlite3_uri_parameter(filename, "raft_leader_sync");
    cfg->leader_sync = IO_LEADER_SYNC_EAGER;
    if (sync != NULL && strcmp(sync, "lazy") == 0) {
        cfg->leader_sync = IO_LEADER_SYNC_LAZY;
    } else if (sync != NULL && strcmp(sync, "eager") != 0) {
        snprintf(err, err_len, "raft_leader_sync=%.60s: unknown value (use eager or lazy)", sync);
        rc = SQLITE_MISUSE;
    }
    return rc;
}

void ext_describe(struct ext_node *n, int rc, char *buf, size_t len)
{
    char name[RAFT_NAME_MAX] = "", addr[RAFT_ADDR_MAX] = "";
    if (n != NULL && n->node != NULL) {
        io_node_leader(n->node, name, addr);
    }
    switch (rc) {
    case RAFT_ENOTLEADER:
        if (name[0] != '\0') {
            snprintf(buf, len, "not the leader; the leader is %s at %s", name, addr);
        } else {
            snprintf(buf, len, "not the leader; no leader is known right now (election in "
                               "progress, or no quorum): retry shortly");
        }
        break;
    case RAFT_EUNKNOWN:
        snprintf(buf, len, "leadership lost or timed out while committing: the outcome is "
                           "unknown (the transaction may still commit); do not retry blindly, "
                           "read after raft_barrier() to find out");
        break;
    case RAFT_EBUSY:
        snprintf(buf, len, "busy: the new leader is still catching up; retry shortly");
        break;
    case RAFT_ECHANGE:
        snprintf(buf, len, "a membership change is already in progress (or the leader has not "
                           "committed an entry of its term yet); retry when it completes");
        break;
    case RAFT_ETRANSFER:
        snprintf(buf, len, "a leadership transfer is in progress; retry when it completes");
        break;
    case RAFT_ETIMEOUT:
        snprintf(buf, len, "timed out: %s", name[0] ? "the cluster did not answer in time"
                                                    : "no leader is known (no quorum?)");
        break;
    default:
        snprintf(buf, len, "%s", io_node_strerror(rc));
        break;
    }
}

/* --- the node's view of the database (struct io_fsm) ------------------------------------- */

static struct vfs_db *wait_db(struct ext_node *n)
{
    pthread_mutex_lock(&n->mu);
    while (n->db == NULL && !n->failed) {
        pthread_cond_wait(&n->cv, &n->mu);
    }
    struct vfs_db *db = n->db;
    pthread_mutex_unlock(&n->mu);
    return db;
}

/* After an apply (which may checkpoint): tell the node when the applied floor moved, so it can
 * compact its log. Runs on the apply thread only. */
static void report_floor(struct ext_node *n, struct vfs_db *db)
{
    uint64_t floor = vfs_db_floor(db);
    if (floor > n->floor_reported) {
        n->floor_reported = floor;
        io_node_set_applied_floor(n->node, floor);
    }
}

static int fsm_apply_batch(void *ctx, const struct io_apply_entry *e, size_t count)
{
    struct ext_node *n = ctx;
    struct vfs_db *db = wait_db(n);
    if (db == NULL) {
        return -1;
    }
    struct vfs_entry stack[64];
    struct vfs_entry *ve = count <= 64 ? stack : malloc(count * sizeof *ve);
    if (ve == NULL) {
        return SQLITE_NOMEM;
    }
    for (size_t i = 0; i < count; i++) {
        ve[i] = (struct vfs_entry){.payload = e[i].buf, .len = e[i].len, .index = e[i].index};
    }
    int rc = vfs_db_apply_batch(db, ve, count);
    if (ve != stack) {
        free(ve);
    }
    if (rc != SQLITE_OK) {
        char why[256];
        vfs_db_last_error(db, why, sizeof why);
        sqlite3_log(rc, "walraft: cannot apply entries %llu..%llu to %s: %s",
                    (unsigned long long)e[0].index, (unsigned long long)e[count - 1].index,
                    n->path, why);
        return rc;
    }
    report_floor(n, db);
    return 0;
}

/* Snapshots: the database itself is the image (DESIGN §5). The leader streams a consistent,
 * pinned image while writes go on; a follower installs one as a single WAL transaction. */
static int fsm_snapshot_open(void *ctx, void **handle, uint64_t *size)
{
    struct ext_node *n = ctx;
    struct vfs_db *db = wait_db(n);
    struct vfs_snapshot *s = NULL;
    if (db == NULL) {
        return -1;
    }
    int rc = vfs_db_snapshot_open(db, &s, size);
    *handle = s;
    return rc == SQLITE_OK ? 0 : rc;
}

static int fsm_snapshot_read(void *ctx, void *handle, void *buf, size_t cap, size_t *n)
{
    (void)ctx;
    int rc = vfs_snapshot_read(handle, buf, cap, n);
    return rc == SQLITE_OK ? 0 : rc;
}

static void fsm_snapshot_close(void *ctx, void *handle)
{
    (void)ctx;
    vfs_snapshot_close(handle);
}

static int fsm_install_begin(void *ctx, uint64_t index)
{
    struct ext_node *n = ctx;
    struct vfs_db *db = wait_db(n);
    if (db == NULL) {
        return -1;
    }
    int rc = vfs_db_install_begin(db, index);
    return rc == SQLITE_OK ? 0 : rc;
}

static int fsm_install_chunk(void *ctx, const void *buf, size_t len)
{
    struct ext_node *n = ctx;
    int rc = vfs_db_install_chunk(n->db, buf, len);
    return rc == SQLITE_OK ? 0 : rc;
}

static int fsm_install_end(void *ctx, uint64_t index, bool ok)
{
    struct ext_node *n = ctx;
    if (n->db == NULL) {
        return -1;
    }
    int rc = vfs_db_install_end(n->db, index, ok);
    if (rc != SQLITE_OK) {
        char why[256];
        vfs_db_last_error(n->db, why, sizeof why);
        sqlite3_log(rc, "walraft: cannot install snapshot %llu into %s: %s",
                    (unsigned long long)index, n->path, why);
        io_logf(IO_LOG_WARN, NULL, "cannot install snapshot %llu into %s: %s",
                (unsigned long long)index, n->path, why);
        return rc;
    }
    if (ok) {
        n->floor_reported = vfs_db_floor(n->db);
    }
    return 0;
}

static void fsm_leadership_lost(void *ctx)
{
    struct ext_node *n = ctx;
    pthread_mutex_lock(&n->mu);
    struct vfs_db *db = n->db;
    pthread_mutex_unlock(&n->mu);
    if (db != NULL) {
        vfs_db_step_down(db);
    }
}

/* --- the database's view of the node (struct vfs_node_ops) ------------------------------- */

static int ops_write_gate(void *ctx, char *why, size_t why_len)
{
    struct ext_node *n = ctx;
    pthread_mutex_lock(&n->mu);
    struct vfs_db *db = n->db;
    pthread_mutex_unlock(&n->mu);
    int rc = io_node_write_gate(n->node, db != NULL ? vfs_db_applied(db) : 0);
    if (rc == 0) {
        return SQLITE_OK;
    }
    ext_describe(n, rc, why, why_len);
    if (rc == RAFT_EBUSY || rc == RAFT_ETRANSFER) {
        return SQLITE_BUSY;
    }
    if (rc == IO_NODE_EDISKFULL) {
        snprintf(why, why_len, "this node's disk refused a write (full?): writes are refused "
                               "until it accepts them again");
    }
    return SQLITE_READONLY;
}

static int ops_propose(void *ctx, const void *payload, size_t len, uint64_t *index_out, char *why,
                       size_t why_len)
{
    struct ext_node *n = ctx;
    int rc = io_node_propose(n->node, payload, len, n->cfg.commit_timeout_ms, index_out);
    if (rc == 0) {
        return VFS_PROPOSE_OK;
    }
    ext_describe(n, rc, why, why_len);
    return rc == RAFT_EUNKNOWN ? VFS_PROPOSE_UNKNOWN : VFS_PROPOSE_NOT_COMMITTED;
}

/* --- starting and stopping ---------------------------------------------------------------- */

int ext_node_start(const char *path, const struct ext_config *cfg, enum ext_start how,
                   const char *name, const char *addr, const char *peer, uint8_t role, char *err,
                   size_t err_len)
{
    char dir[EXT_PATH_MAX + 8];
    struct ext_node *n;

    if (strlen(path) >= EXT_PATH_MAX) {
        snprintf(err, err_len, "database path too long");
        return SQLITE_ERROR;
    }
    pthread_mutex_lock(&registry_mu);
    for (n = nodes; n != NULL; n = n->next) {
        if (strcmp(n->path, path) == 0) {
            pthread_mutex_unlock(&registry_mu);
            snprintf(err, err_len, "a node already runs for %s in this process", path);
            return SQLITE_MISUSE;
        }
    }
    n = calloc(1, sizeof *n);
    if (n == NULL) {
        pthread_mutex_unlock(&registry_mu);
        return SQLITE_NOMEM;
    }
    snprintf(n->path, sizeof n->path, "%s", path);
    n->cfg = *cfg;
    pthread_mutex_init(&n->mu, NULL);
    pthread_cond_init(&n->cv, NULL);

    raft_dir(path, dir, sizeof dir);
    struct io_node_config nc = {
        .dir = dir,
        .name = name,
        .listen_addr = addr,
        .election_timeout_ms = cfg->election_timeout_ms,
        .heartbeat_ms = cfg->heartbeat_ms,
        .trailing_entries = cfg->trailing_entries,
        .trailing_bytes = cfg->trailing_bytes,
        .leader_sync = cfg->leader_sync,
        .fsm = {.ctx = n,
                .apply_batch = fsm_apply_batch,
                .snapshot_open = fsm_snapshot_open,
                .snapshot_read = fsm_snapshot_read,
                .snapshot_close = fsm_snapshot_close,
                .install_begin = fsm_install_begin,
                .install_chunk = fsm_install_chunk,
                .install_end = fsm_install_end,
                .leadership_lost = fsm_leadership_lost,
                .proposer_applies = true},
    };
    enum io_node_start_mode mode = how == EXT_BOOTSTRAP ? IO_NODE_BOOTSTRAP
                                   : how == EXT_JOIN    ? IO_NODE_JOIN
                                                        : IO_NODE_RESTART;
    char why[512] = "";
    /* The registry lock is held across the start so two connections cannot start one path
     * twice; a join can take a while, which only delays other starts. */
    int rc = io_node_start(&nc, mode, peer, role, 30000, &n->node, why, sizeof why);
    if (rc != 0) {
        pthread_mutex_unlock(&registry_mu);
        snprintf(err, err_len, "%s", why[0] ? why : io_node_strerror(rc));
        pthread_mutex_destroy(&n->mu);
        pthread_cond_destroy(&n->cv);
        free(n);
        return rc == RAFT_EBADARG ? SQLITE_MISUSE : SQLITE_ERROR;
    }
    struct io_node_status *st = malloc(sizeof *st);
    uint64_t floor = 0;
    if (st != NULL && io_node_status(n->node, st) == 0) {
        floor = st->applied_floor;
    }
    free(st);
    n->floor_reported = floor;
    struct vfs_node_ops ops = {.ctx = n, .write_gate = ops_write_gate, .propose = ops_propose};
    struct vfs_db_config vc = {.max_txn_bytes = cfg->max_txn_bytes,
                               .checkpoint_frames = cfg->checkpoint_frames};
    struct vfs_db *db = NULL;
    starting = true;
    rc = vfs_db_attach(path, &ops, &vc, floor, &db);
    starting = false;
    pthread_mutex_lock(&n->mu);
    n->db = db;
    n->failed = rc != SQLITE_OK;
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
    if (rc != SQLITE_OK) {
        pthread_mutex_unlock(&registry_mu);
        snprintf(err, err_len, "cannot attach the database %s to its node: %s", path,
                 rc == SQLITE_BUSY ? "another process holds its write lock"
                                   : sqlite3_errstr(rc));
        io_node_stop(n->node);
        if (how != EXT_RESTART) {
            io_node_wipe_dir(dir); /* a failed bootstrap or join changes nothing */
        }
        pthread_mutex_destroy(&n->mu);
        pthread_cond_destroy(&n->cv);
        free(n);
        return rc;
    }
    n->next = nodes;
    nodes = n;
    pthread_mutex_unlock(&registry_mu);
    if (how == EXT_BOOTSTRAP) {
        /* A new one-node cluster elects itself within an election timeout or two: return a node
         * that accepts writes, so that a CREATE TABLE right after raft_bootstrap() works. */
        uint64_t waited_ms = 0, limit_ms = 4ull * cfg->election_timeout_ms + 1000;
        while (io_node_write_gate(n->node, vfs_db_applied(n->db)) != 0 && waited_ms < limit_ms) {
            sqlite3_sleep(10);
            waited_ms += 10;
        }
    } else if (how == EXT_JOIN) {
        /* The cluster committed the addition. Wait (bounded) until this node has heard so from
         * the leader, by entries or by a snapshot (now that the database is attached, it can
         * install one), so that raft_join() returns a node that knows it is a member and who
         * leads. */
        struct io_node_status *ns = malloc(sizeof *ns);
        char lname[RAFT_NAME_MAX], laddr[RAFT_ADDR_MAX];
        for (uint64_t waited_ms = 0; ns != NULL && waited_ms < JOIN_SETTLE_MS; waited_ms += 10) {
            io_node_leader(n->node, lname, laddr);
            if (lname[0] != '\0' && io_node_status(n->node, ns) == 0 && ns->role != 255) {
                break;
            }
            sqlite3_sleep(10);
        }
        free(ns);
    }
    return SQLITE_OK;
}

void ext_node_stop_all(void)
{
    pthread_mutex_lock(&registry_mu);
    struct ext_node *list = nodes;
    nodes = NULL;
    pthread_mutex_unlock(&registry_mu);
    while (list != NULL) {
        struct ext_node *n = list;
        list = n->next;
        /* Stop the node first: its apply thread may be inside vfs_db_apply. */
        io_node_stop(n->node);
        if (n->db != NULL) {
            vfs_db_detach(n->db);
        }
        pthread_mutex_destroy(&n->mu);
        pthread_cond_destroy(&n->cv);
        free(n);
    }
}
