/*
 * The node runtime: drives the Raft core with a durable log, a transport, timers, a disk thread
 * and an apply thread. See node.h for the threads and what each owns.
 *
 * Loop-thread state is everything in struct io_node that is not marked otherwise; other threads
 * see only the `pub` block (under pub_mu) and the atomics.
 */
#include "consensus/io/node.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>
#include <xxhash.h>

#include "consensus/io/log.h"
#include "consensus/io/logging.h"
#include "consensus/io/loop.h"
#include "consensus/io/meta.h"
#include "consensus/io/msg.h"
#include "consensus/io/transport.h"

#define SNAP_CHUNK_BYTES (1u << 20)
#define SNAP_ACK_TIMEOUT_MS 15000u
#define SNAP_WINDOW 4u /* chunks in flight per stream: the next is read while earlier ones travel */
#define LATENCY_SAMPLES 1024u

/* ---------------------------------------------------------------------------------------------
 * The process-wide loop, shared by every node of the process. */
static pthread_mutex_t loop_mu = PTHREAD_MUTEX_INITIALIZER;
static struct io_loop *loop;
static unsigned loop_users;

static int loop_acquire(struct io_loop **out)
{
    int rv = 0;
    pthread_mutex_lock(&loop_mu);
    if (loop == NULL) {
        rv = io_loop_start(&loop);
    }
    if (rv == 0) {
        loop_users++;
        *out = loop;
    }
    pthread_mutex_unlock(&loop_mu);
    return rv;
}

static void loop_release(void)
{
    pthread_mutex_lock(&loop_mu);
    assert(loop_users > 0);
    if (--loop_users == 0) {
        io_loop_stop(loop, NULL, NULL);
        loop = NULL;
    }
    pthread_mutex_unlock(&loop_mu);
}

const char *io_node_strerror(int rc)
{
    switch (rc) {
#define IO_NODE_ERROR_CASE(name, value, msg)                                                      \
    case name:                                                                                    \
        return msg;
        IO_NODE_ERRORS(IO_NODE_ERROR_CASE)
#undef IO_NODE_ERROR_CASE
    default:
        return raft_strerror(rc);
    }
}

uint64_t io_node_id_of(const char *name)
{
    uint64_t id = XXH64(name, strlen(name), 0);
    return id != 0 ? id : 1;
}

#define name_to_id io_node_id_of

/* ---------------------------------------------------------------------------------------------
 * Types. */

enum pending_kind { P_PROPOSE, P_CONFIG, P_READ, P_TRANSFER, P_JOIN_SERVE };

/* A request an application thread (or a remote joiner) waits on. */
struct pending {
    struct io_call call; /* first: the loop queue sees a struct io_work */
    struct io_node *node;
    enum pending_kind kind;
    uint64_t cookie;
    uint64_t index;       /* OUT: log index (proposals, reads) */
    uint64_t deadline_ms; /* transfers */
    uint64_t started_ms;  /* for latency */
    bool appended;
    /* inputs */
    struct raft_buf *buf;
    int op; /* config: 'a'dd, 'r'emove, 'p'romote, 'd'emote; */
    struct raft_server server;
    uint64_t target;
    uint64_t conn_id; /* P_JOIN_SERVE: where to answer */
    struct io_node_status *status;
    struct raft_config recover_config;
    int (*loop_fn)(struct pending *p); /* runs on the loop; returns rc (0: keep waiting) */
    bool queued;                       /* in the node's pending list */
    struct pending *next;
};

enum disk_kind { D_APPEND, D_TRUNCATE, D_RESET, D_COMPACT };

struct disk_op {
    enum disk_kind kind;
    uint64_t index, term;
    struct raft_entry *entries; /* D_APPEND; each buf holds a reference */
    uint32_t n;
    struct disk_op *next;
};

enum apply_kind { A_ENTRY, A_SNAP_BEGIN, A_SNAP_CHUNK, A_SNAP_END };

struct apply_item {
    enum apply_kind kind;
    uint64_t index;
    uint8_t type;
    struct raft_buf *buf; /* A_ENTRY payload or A_SNAP_CHUNK data */
    /* A_SNAP_END: what to tell the core */
    uint64_t from, term, last_term;
    struct raft_config config;
    uint64_t due_us; /* a lazy item: when the apply thread takes it at the latest */
    struct apply_item *next;
};

/* A snapshot being streamed to one follower (loop side; reads happen on libuv's work pool). */
struct snap_send {
    struct io_node *node;
    uint64_t to, index, term;
    struct raft_config config;
    void *handle;
    uint64_t size;
    uint64_t offset;
    uint8_t *chunk;
    size_t chunk_len;
    bool read_eof; /* the read on the work pool reached the end (written there) */
    bool eof;      /* the last chunk was sent (loop only: read_eof is copied when it goes) */
    bool failed;
    int fsm_rc;
    uv_work_t work;
    bool work_busy;
    bool waiting_ack;        /* chunks were sent; acknowledgements pending or the final one due */
    uint64_t ack_deadline_ms; /* no acknowledgement by then: the stream failed */
    unsigned inflight;        /* chunks sent and not yet acknowledged */
    uint64_t acked;           /* stream offset acknowledged so far */
    struct snap_send *next;
};

/* A snapshot being received (loop side). */
struct snap_recv {
    bool active;
    uint64_t from, term, index, last_term;
    uint64_t expected_offset;
    uint64_t total;
    uint64_t conn_from; /* leader id to ack */
};

struct io_node {
    /* set at start, read-only after */
    char dir[4096];
    char name[RAFT_NAME_MAX];
    char addr[RAFT_ADDR_MAX];
    uint64_t id;
    uint64_t cluster_id;
    struct io_node_config cfg;
    struct io_fsm fsm;
    struct io_loop *loop;
    int lock_fd;
    uint32_t election_timeout_ms;

    /* loop thread */
    struct raft *raft;
    struct io_transport transport;
    bool transport_open;
    uv_timer_t tick;
    bool tick_open;
    uv_timer_t tell; /* RAFT_EVENT_TELL_COMMIT, TELL_COMMIT_MS after an update left it untold */
    bool tell_open;
    uint64_t follower_push_us; /* when the last committed entry was queued, not leading */
    struct io_meta_file meta_file;
    struct io_meta meta;
    struct pending *pending;
    uint64_t next_cookie;
    struct snap_send *sends;
    unsigned snap_works; /* uv_work_t in flight */
    struct snap_recv recv;
    struct raft_config committed_config;
    uint64_t committed_config_index;
    struct raft_config known; /* addresses learned outside the log (the join answer) */
    bool stopping;
    struct pending *stop_call;
    unsigned closing_handles;
    uint64_t latency_us[LATENCY_SAMPLES];
    uint64_t latency_n;
    uint64_t proposals, commits, elections, snapshots_sent, snapshots_installed, bytes_out;
    uint8_t last_state;
    uint64_t floor_reported;
    /* partition hook */
    uint64_t part_peer; /* 0: all */
    bool part_in, part_out;

    /* published to other threads */
    pthread_mutex_t pub_mu;
    struct {
        uint8_t state;
        uint64_t term;
        uint64_t last_index;
        bool term_committed;
        uint64_t transfer;
        char leader_name[RAFT_NAME_MAX];
        char leader_addr[RAFT_ADDR_MAX];
    } pub;
    atomic_bool disk_failed;
    /* Lazy leader sync (IO_LEADER_SYNC_LAZY, see disk_hold_until): set by the loop, read by
     * the disk thread. */
    _Atomic uint64_t commit_hint; /* the core's commit index */
    atomic_bool lazy_ok;          /* leader, and a quorum of the other voters keeps up */
    _Atomic uint64_t near_index;  /* the leader's own durable copy would commit up to here */
    _Atomic uint64_t near_us;     /* when near_index last advanced (io_now_us) */
    _Atomic uint64_t disk_hold_us; /* disk thread: entries are held unsynced until then (0: none) */
    atomic_bool disk_running; /* the disk thread runs the loop while it waits (disk_main) */
    atomic_uint_fast64_t install_done, install_total;

    /* disk thread */
    struct io_log log;
    pthread_t disk_thread;
    pthread_mutex_t disk_mu;
    pthread_cond_t disk_cv;
    struct disk_op *disk_head, *disk_tail;
    bool disk_stop;
    /* Held while log operations run: by the disk thread, or by a proposer running them itself
     * (propose_direct). Taken before disk_mu. */
    pthread_mutex_t disk_io_mu;
    struct unsynced *disk_uns; /* under disk_io_mu */
    bool disk_polling;         /* under disk_mu: the disk thread looks at its queue within
                                * LAZY_POLL_US without a wake-up (it holds unsynced entries) */
    uint64_t lazy_first_us;    /* disk thread: when the oldest unsynced entry was written */
    uint64_t lazy_off_until;   /* disk thread: sync eagerly until then (ms), see disk_hold_until */
    unsigned lazy_strikes;     /* disk thread: fallbacks since the last batch synced in time */
    bool direct;               /* handle() runs for propose_direct: queue appends quietly */
    atomic_int direct_users;   /* threads inside propose_direct; io_node_stop waits for them */

    /* apply thread */
    pthread_t apply_thread;
    pthread_mutex_t apply_mu;
    pthread_cond_t apply_cv;     /* items queued, or stop */
    pthread_cond_t applied_cv;   /* applied advanced */
    struct apply_item *apply_head, *apply_tail;
    bool apply_stop;
    bool apply_urgent; /* a queued item needs the thread now (not only lazy ones queued) */
    uint64_t applied; /* under apply_mu */
    bool apply_failed;
};

static void handle(struct io_node *n, struct raft_update *u);

/* Steps the core with `ev` and carries out its update (loop side, or under io_loop_enter). */
static void step_event(struct io_node *n, const struct raft_event *ev)
{
    struct raft_update u;
    if (raft_step(n->raft, ev, &u) == 0) {
        handle(n, &u);
    }
}

static void publish(struct io_node *n);

/* ---------------------------------------------------------------------------------------------
 * Small files of the node directory: identity and the snapshot record. */

static int write_file_atomic(const char *dir, const char *name, const void *buf, size_t len)
{
    char path[4200], tmp[4210];
    int fd, rv = -1;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return -1;
    }
    if (write(fd, buf, len) == (ssize_t)len && fdatasync(fd) == 0) {
        rv = 0;
    }
    close(fd);
    if (rv == 0 && rename(tmp, path) != 0) {
        rv = -1;
    }
    if (rv == 0) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            rv = fsync(dfd);
            close(dfd);
        }
    } else {
        unlink(tmp);
    }
    return rv;
}

/* Reads a whole small file; returns its length or -1. */
static ssize_t read_file(const char *dir, const char *name, void *buf, size_t cap)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    ssize_t n = read(fd, buf, cap);
    close(fd);
    return n;
}

/* The snapshot record, "snapshot": the log's base after compaction or an installed snapshot.
 * Layout (little endian): u32 magic "WRSN", u32 version 1, u64 index, u64 term, u32 config
 * length, config bytes (raft_config_encode), u64 xxh64 of everything before it. */
#define SNAP_REC_MAGIC 0x4e535257u

static int snap_record_store(struct io_node *n, uint64_t index, uint64_t term,
                             const struct raft_config *c)
{
    uint8_t buf[32 + RAFT_CONFIG_ENCODED_MAX];
    size_t cfg_len = 0;
    if (raft_config_encode(c, buf + 28, &cfg_len) != 0) {
        return -1;
    }
    io_put32(buf, SNAP_REC_MAGIC);
    io_put32(buf + 4, 1);
    io_put64(buf + 8, index);
    io_put64(buf + 16, term);
    io_put32(buf + 24, (uint32_t)cfg_len);
    io_put64(buf + 28 + cfg_len, XXH64(buf, 28 + cfg_len, 0));
    return write_file_atomic(n->dir, "snapshot", buf, 28 + cfg_len + 8);
}

/* Returns 1 when a record was found, 0 when none, -1 when it is corrupt. */
static int snap_record_load(const char *dir, uint64_t *index, uint64_t *term,
                            struct raft_config *c)
{
    uint8_t buf[64 + RAFT_CONFIG_ENCODED_MAX];
    ssize_t len = read_file(dir, "snapshot", buf, sizeof buf);
    if (len < 0) {
        return 0;
    }
    if (len < 36 || io_get32(buf) != SNAP_REC_MAGIC || io_get32(buf + 4) != 1) {
        return -1;
    }
    uint32_t cfg_len = io_get32(buf + 24);
    if ((size_t)len != 28 + (size_t)cfg_len + 8 ||
        io_get64(buf + 28 + cfg_len) != XXH64(buf, 28 + cfg_len, 0)) {
        return -1;
    }
    *index = io_get64(buf + 8);
    *term = io_get64(buf + 16);
    return raft_config_decode(buf + 28, cfg_len, c) == 0 ? 1 : -1;
}

bool io_node_exists(const char *dir)
{
    char buf[256];
    return read_file(dir, "node-info", buf, sizeof buf) > 0;
}

/* ---------------------------------------------------------------------------------------------
 * Disk thread. */

static bool disk_has_work(void *arg);

static void disk_wake(struct io_node *n)
{
    pthread_cond_signal(&n->disk_cv); /* after unlocking disk_mu: the woken thread finds it free */
    if (atomic_load(&n->disk_running) && !io_loop_is_current(n->loop)) {
        io_loop_wake(n->loop); /* it waits in the loop's poll, not on disk_cv */
    }
}

/* Queues `op` for the disk thread; `quiet`: without waking it (the caller wakes it, or runs the
 * queue itself). Returns whether the disk thread polls its queue (a lazy leader holding unsynced
 * entries, see disk_hold_until): it then finds `op` within LAZY_POLL_US without a wake-up. */
static bool disk_queue(struct io_node *n, struct disk_op *op, bool quiet)
{
    pthread_mutex_lock(&n->disk_mu);
    op->next = NULL;
    if (n->disk_tail != NULL) {
        n->disk_tail->next = op;
    } else {
        n->disk_head = op;
    }
    n->disk_tail = op;
    bool polling = n->disk_polling;
    pthread_mutex_unlock(&n->disk_mu);
    if (!quiet) {
        disk_wake(n);
    }
    return polling;
}

static void disk_push(struct io_node *n, struct disk_op *op)
{
    disk_queue(n, op, false);
}

static struct disk_op *disk_op_new(enum disk_kind kind, uint64_t index, uint64_t term)
{
    struct disk_op *op = calloc(1, sizeof *op);
    if (op == NULL) {
        io_logf(IO_LOG_ERROR, NULL, "out of memory queueing a disk operation");
        abort();
    }
    op->kind = kind;
    op->index = index;
    op->term = term;
    return op;
}

static void disk_op_free(struct disk_op *op)
{
    for (uint32_t i = 0; i < op->n; i++) {
        raft_buf_unref(op->entries[i].buf);
    }
    free(op->entries);
    free(op);
}

/* Tells the core the log is durable up to index/term (under io_loop_enter: the disk thread and
 * propose_direct call it). */
static void step_persisted(struct io_node *n, uint64_t index, uint64_t term)
{
    if (!n->stopping) {
        struct raft_event ev = {.type = RAFT_EVENT_PERSISTED, .now_ms = io_now_ms()};
        ev.persisted.index = index;
        ev.persisted.term = term;
        step_event(n, &ev);
    }
}

/* Entries appended since the last successful sync, kept so a failed write can be redone. */
struct unsynced {
    struct raft_entry *e;
    size_t n, cap;
};

static int unsynced_add(struct unsynced *u, const struct raft_entry *e, uint32_t n)
{
    if (u->n + n > u->cap) {
        size_t cap = (u->n + n) * 2;
        struct raft_entry *ne = realloc(u->e, cap * sizeof *ne);
        if (ne == NULL) {
            return -1;
        }
        u->e = ne;
        u->cap = cap;
    }
    for (uint32_t i = 0; i < n; i++) {
        u->e[u->n++] = (struct raft_entry){e[i].term, e[i].index, e[i].type,
                                           raft_buf_ref(e[i].buf)};
    }
    return 0;
}

static void unsynced_drop_from(struct unsynced *u, uint64_t index)
{
    while (u->n > 0 && u->e[u->n - 1].index >= index) {
        raft_buf_unref(u->e[--u->n].buf);
    }
}

static void unsynced_clear(struct unsynced *u)
{
    unsynced_drop_from(u, 0);
}

/* Appends the unsynced entries the log does not hold (after a rewind, all of them). */
static int append_unsynced(struct io_log *log, struct unsynced *u)
{
    uint64_t last = io_log_last_index(log);
    size_t i = 0;
    while (i < u->n && u->e[i].index <= last) {
        i++;
    }
    if (i == u->n) {
        return 0;
    }
    struct io_entry *es = malloc((u->n - i) * sizeof *es);
    if (es == NULL) {
        return IO_LOG_ENOMEM;
    }
    for (size_t k = i; k < u->n; k++) {
        const struct raft_entry *e = &u->e[k];
        es[k - i] = (struct io_entry){e->term, e->index, e->type, e->buf ? e->buf->base : NULL,
                                      e->buf ? e->buf->len : 0};
    }
    int rc = io_log_append(log, es, u->n - i);
    free(es);
    return rc;
}

static bool disk_should_stop(struct io_node *n)
{
    pthread_mutex_lock(&n->disk_mu);
    bool stop = n->disk_stop;
    pthread_mutex_unlock(&n->disk_mu);
    return stop;
}

/* Retries `what` until it succeeds or the node stops; a failing disk refuses writes meanwhile. */
static int disk_retry(struct io_node *n, int rc, const char *what)
{
    if (rc == 0) {
        return 0;
    }
    if (!atomic_exchange(&n->disk_failed, true)) {
        io_logf(IO_LOG_ERROR, n->name, "%s failed: %s (%s); refusing writes until it succeeds",
                what, io_log_strerror(rc), io_log_errmsg(&n->log));
    }
    if (disk_should_stop(n)) {
        return rc;
    }
    usleep(200 * 1000);
    return rc;
}

/*
 * Lazy leader sync (io_node_config.leader_sync). A leader's own copy of an entry counts toward a
 * quorum only once durable, and an entry a quorum of the other voters holds durably is committed
 * without it: "the leader may even commit an entry before it has been written to its own disk, if
 * a majority of followers have written it to their disks" (Raft thesis §10.2.1). A lazy leader
 * writes each entry at once but holds its fdatasync back while a quorum of followers keeps up:
 *   - entries the followers have committed are synced in batches, LAZY_BATCH_US after the first
 *     of them was written (or at LAZY_BATCH_ENTRIES): one sync for many entries, none on the
 *     commit path;
 *   - once all but one of the followers a commit needs hold an entry (near_index: the leader's
 *     own copy would complete the quorum), the leader syncs if the entry is still uncommitted
 *     LAZY_NEAR_US later (a follower stalled: a checkpoint, a slow fdatasync); after
 *     LAZY_STRIKES such fallbacks with no batch synced in time between them, it syncs every
 *     entry for LAZY_OFF_MS (a follower is slow, not stalled);
 *   - everything held is synced as soon as the node stops leading, stops, or the loop finds that
 *     fewer than a quorum of the other voters are replicating (lazy_ok).
 * Its disk thread meanwhile looks for new appends every LAZY_POLL_US instead of being woken for
 * each. The cost is the commit latency of the slower followers of the quorum instead of the
 * faster ones; the gain is one fdatasync per entry fewer on the cluster, and none on the
 * leader's commit path -- which matters where the nodes share a disk, or the leader's disk is
 * the busiest.
 */
#define LAZY_POLL_US 1000u
#define LAZY_NEAR_US 300u
#define LAZY_BATCH_US 20000u
#define LAZY_BATCH_ENTRIES 1024u
#define LAZY_OFF_MS 500
#define LAZY_STRIKES 8u

/* Until when (io_now_us) the entries written since the last sync may stay unsynced; 0 (or a past
 * time): sync now. *fallback: they must be synced because a follower quorum was too slow. Disk
 * thread, under disk_io_mu. */
static uint64_t disk_hold_until(struct io_node *n, bool *fallback)
{
    const struct unsynced *u = n->disk_uns;
    *fallback = false;
    if (u->n == 0 || n->cfg.leader_sync != IO_LEADER_SYNC_LAZY || !atomic_load(&n->lazy_ok) ||
        u->n >= LAZY_BATCH_ENTRIES || io_now_ms() < n->lazy_off_until || disk_should_stop(n)) {
        return 0;
    }
    uint64_t commit = atomic_load(&n->commit_hint);
    size_t k = 0;
    while (k < u->n && u->e[k].index <= commit) {
        k++;
    }
    /* Entry k is the oldest uncommitted. Our copy helps only once the followers are one short;
     * until then (or with all committed) the entries wait for the batch's end. */
    if (k == u->n || atomic_load(&n->near_index) < u->e[k].index) {
        return n->lazy_first_us + LAZY_BATCH_US;
    }
    uint64_t until = atomic_load(&n->near_us) + LAZY_NEAR_US;
    *fallback = io_now_us() >= until;
    return until;
}

/* Runs `ops` in order, then syncs once if any appended, retrying failed writes until they succeed
 * or the node stops. Returns whether entries were appended and synced; then, if `report`, tells
 * the core on this thread (io_loop_enter). Only the disk thread (`report`) may hold entries back
 * unsynced (disk_hold_until); it then calls again, with or without ops, to sync them. Caller
 * holds disk_io_mu. */
static bool disk_run(struct io_node *n, struct disk_op *ops, bool report)
{
    struct unsynced *uns = n->disk_uns;
    bool appended = false;
    for (struct disk_op *op = ops, *next; op != NULL; op = next) {
        int rc;
        next = op->next;
        switch (op->kind) {
        case D_APPEND:
            if (uns->n == 0) {
                n->lazy_first_us = io_now_us();
            }
            if (unsynced_add(uns, op->entries, op->n) != 0) {
                io_logf(IO_LOG_ERROR, n->name, "out of memory queueing log entries");
                abort();
            }
            do {
                rc = disk_retry(n, append_unsynced(&n->log, uns), "log append");
            } while (rc != 0 && !disk_should_stop(n));
            appended = true;
            break;
        case D_TRUNCATE:
            unsynced_drop_from(uns, op->index);
            if (op->index <= io_log_last_index(&n->log)) {
                do {
                    rc = disk_retry(n, io_log_truncate_suffix(&n->log, op->index),
                                    "log truncation");
                } while (rc != 0 && !disk_should_stop(n));
            }
            break;
        case D_RESET:
            unsynced_clear(uns);
            do {
                rc = disk_retry(n, io_log_reset(&n->log, op->index, op->term), "log reset");
            } while (rc != 0 && !disk_should_stop(n));
            break;
        case D_COMPACT:
            if (op->index >= io_log_first_index(&n->log) &&
                op->index <= io_log_durable_index(&n->log)) {
                rc = io_log_truncate_prefix(&n->log, op->index);
                if (rc != 0) {
                    io_logf(IO_LOG_WARN, n->name, "log compaction to %" PRIu64 " failed: %s",
                            op->index, io_log_errmsg(&n->log));
                }
            }
            break;
        }
        disk_op_free(op);
    }
    bool fallback = false;
    uint64_t hold = report ? disk_hold_until(n, &fallback) : 0;
    if (hold > io_now_us()) {
        atomic_store(&n->disk_hold_us, hold); /* a lazy leader: not yet (disk_main polls) */
        return false;
    }
    atomic_store(&n->disk_hold_us, 0);
    if (fallback && ++n->lazy_strikes >= LAZY_STRIKES) {
        /* The followers keep failing to commit in time: count our own copies again for a while. */
        n->lazy_off_until = io_now_ms() + LAZY_OFF_MS;
        n->lazy_strikes = 0;
        io_logf(IO_LOG_DEBUG, n->name, "followers slow to commit: leader syncs eagerly for %d ms",
                LAZY_OFF_MS);
    } else if (!fallback && report && uns->n > 0 && atomic_load(&n->lazy_ok)) {
        n->lazy_strikes = 0; /* a batch the followers committed in time */
    }
    if (appended || uns->n > 0) {
        int rc;
        for (;;) {
            rc = io_log_sync(&n->log);
            if (rc == 0) {
                break;
            }
            disk_retry(n, rc, "log sync");
            if (disk_should_stop(n)) {
                break;
            }
            /* The log rewound to its last durable state: write the entries again. */
            append_unsynced(&n->log, uns);
        }
        if (rc == 0) {
            unsynced_clear(uns);
            if (atomic_exchange(&n->disk_failed, false)) {
                io_logf(IO_LOG_WARN, n->name, "disk writes succeed again");
            }
            if (report) {
                /* Tell the core here rather than through the loop's queue: a follower's
                 * acknowledgement leaves a thread hand-off sooner. */
                uint64_t index = io_log_last_index(&n->log), term = io_log_last_term(&n->log);
                io_loop_enter(n->loop);
                step_persisted(n, index, term);
                if (disk_has_work(n)) {
                    io_loop_leave_and_wake(n->loop);
                } else {
                    io_loop_leave(n->loop); /* this thread runs the loop next (disk_main) */
                }
            }
            return true;
        }
    }
    return false;
}

static bool is_leader(struct io_node *n)
{
    pthread_mutex_lock(&n->pub_mu);
    bool leader = n->pub.state == RAFT_LEADER;
    pthread_mutex_unlock(&n->pub_mu);
    return leader;
}

/* Whether the idle disk thread should stop running the loop: work came, or the node leads (its
 * writers then run the loop while they wait for their commits). */
static bool disk_has_work(void *arg)
{
    struct io_node *n = arg;
    pthread_mutex_lock(&n->disk_mu);
    bool work = n->disk_head != NULL || n->disk_stop;
    pthread_mutex_unlock(&n->disk_mu);
    return work || is_leader(n);
}

static void *disk_main(void *arg)
{
    struct io_node *n = arg;
    pthread_setname_np(pthread_self(), "walraft-disk");

    for (;;) {
        pthread_mutex_lock(&n->disk_mu);
        bool try_run = true;
        while (n->disk_head == NULL && !n->disk_stop) {
            uint64_t hold = atomic_load(&n->disk_hold_us);
            if (hold != 0) {
                /* A lazy leader holding entries unsynced: look at the queue and the commit
                 * index every LAZY_POLL_US (handle() does not wake us for appends meanwhile),
                 * and sync when the hold ends. */
                uint64_t now = io_now_us();
                if (now >= hold) {
                    break;
                }
                uint64_t until = now + LAZY_POLL_US < hold ? now + LAZY_POLL_US : hold;
                n->disk_polling = true;
                struct timespec ts = io_timespec_us(until);
                pthread_cond_timedwait(&n->disk_cv, &n->disk_mu, &ts);
                if (io_now_us() >= until) {
                    break;
                }
                continue;
            }
            n->disk_polling = false;
            /* A follower's disk thread waits for its next append by running the loop itself:
             * the AppendEntries that brings it then wakes this thread, not the loop thread,
             * which would only hand it over (a wake-up, about 20 us). It stops running the loop
             * before it writes, so a slow disk never holds up the loop (the loop thread takes
             * over within LOOP_PARK_MS). */
            if (try_run && !is_leader(n)) {
                pthread_mutex_unlock(&n->disk_mu);
                io_loop_enter(n->loop);
                atomic_store(&n->disk_running, true);
                int ran = io_loop_run_until(n->loop, disk_has_work, n, 1000);
                atomic_store(&n->disk_running, false);
                if (ran < 0) {
                    /* Another thread runs the loop: let it see what our last step queued. */
                    io_loop_leave_and_wake(n->loop);
                    try_run = false;
                } else if (is_leader(n)) {
                    io_loop_wake(n->loop); /* not coming back: the loop thread takes over now */
                }
                pthread_mutex_lock(&n->disk_mu);
                continue;
            }
            pthread_cond_wait(&n->disk_cv, &n->disk_mu);
            try_run = true;
        }
        pthread_mutex_unlock(&n->disk_mu);
        /* disk_io_mu before taking the queue, as propose_direct does: whoever holds it runs
         * everything queued so far, so the log sees operations in queue order. */
        pthread_mutex_lock(&n->disk_io_mu);
        pthread_mutex_lock(&n->disk_mu);
        struct disk_op *ops = n->disk_head;
        bool stop = n->disk_stop;
        n->disk_head = n->disk_tail = NULL;
        pthread_mutex_unlock(&n->disk_mu);
        if (ops == NULL && stop) {
            disk_run(n, NULL, false); /* what a lazy leader still holds */
            pthread_mutex_unlock(&n->disk_io_mu);
            break;
        }
        disk_run(n, ops, true);
        pthread_mutex_unlock(&n->disk_io_mu);
    }
    return NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Apply thread. */

/* How long a lazily queued entry may wait for the apply thread: on the leader an entry whose
 * proposer applies it (io_fsm.proposer_applies), elsewhere every entry. A follower batches its
 * applies: the entries of a steady stream of commits share one wake-up and one apply every
 * FOLLOWER_APPLY_US, and the thread stays off the CPU that the commit path (the follower's
 * append, fsync and acknowledgement) needs. io_node_wait_applied takes them at once. */
#define APPLY_LAZY_US 20000
#define FOLLOWER_APPLY_US 2000

/* A follower's apply waits only within a stream: an entry committed FOLLOWER_APPLY_US or more
 * after the one before it is applied at once, so that a replica of a quiet cluster is not
 * FOLLOWER_APPLY_US behind for each write. Loop side (handle). */
static uint64_t follower_apply_delay(struct io_node *n)
{
    uint64_t now = io_now_us(), last = n->follower_push_us;
    n->follower_push_us = now;
    return now - last < FOLLOWER_APPLY_US ? FOLLOWER_APPLY_US : 0;
}

/* Queues `it`. An item with lazy_us > 0 is lazy: it does not wake the apply thread before
 * lazy_us from now, unless something waits for it (io_node_wait_applied) or a non-lazy item
 * comes. */
static void apply_push(struct io_node *n, struct apply_item *it, uint64_t lazy_us)
{
    bool lazy = lazy_us > 0;
    it->due_us = lazy ? io_now_us() + lazy_us : 0;
    pthread_mutex_lock(&n->apply_mu);
    it->next = NULL;
    /* The thread waits without a timeout only on an empty queue: a lazy item landing there wakes
     * it once, to start its wait until the item is due; later lazy items add nothing to wake
     * for. */
    bool wake = lazy ? n->apply_head == NULL : !n->apply_urgent;
    if (n->apply_tail != NULL) {
        n->apply_tail->next = it;
    } else {
        n->apply_head = it;
    }
    n->apply_tail = it;
    if (!lazy) {
        n->apply_urgent = true;
    }
    pthread_mutex_unlock(&n->apply_mu);
    if (wake) {
        pthread_cond_signal(&n->apply_cv);
    }
}

/* Takes the head of the apply queue (under apply_mu). */
static struct apply_item *apply_take(struct io_node *n)
{
    struct apply_item *it = n->apply_head;
    n->apply_head = it->next;
    if (n->apply_head == NULL) {
        n->apply_tail = NULL;
        n->apply_urgent = false;
    }
    return it;
}

static uint64_t applied_index(struct io_node *n)
{
    pthread_mutex_lock(&n->apply_mu);
    uint64_t a = n->applied;
    pthread_mutex_unlock(&n->apply_mu);
    return a;
}

static void set_applied(struct io_node *n, uint64_t index)
{
    pthread_mutex_lock(&n->apply_mu);
    if (index > n->applied) {
        n->applied = index;
    }
    pthread_cond_broadcast(&n->applied_cv);
    pthread_mutex_unlock(&n->apply_mu);
}

struct installed_work {
    struct io_work work;
    struct io_node *node;
    struct apply_item item;
    bool ok;
    bool chunk_ack; /* only acknowledge a chunk */
    uint64_t ack_offset;
};

static void installed_on_loop(struct io_work *w);

static void post_installed(struct io_node *n, const struct apply_item *it, bool ok, bool chunk,
                           uint64_t offset)
{
    struct installed_work *p = calloc(1, sizeof *p);
    if (p == NULL) {
        return;
    }
    p->work.fn = installed_on_loop;
    p->node = n;
    p->item = *it;
    p->item.buf = NULL;
    p->ok = ok;
    p->chunk_ack = chunk;
    p->ack_offset = offset;
    if (io_loop_post(n->loop, &p->work) != 0) {
        free(p);
    }
}

#define APPLY_BATCH_ENTRIES_MAX 1024
#define APPLY_BATCH_BYTES_MAX (64u << 20)

static void apply_fail(struct io_node *n, uint64_t index, int rc)
{
    io_logf(IO_LOG_ERROR, n->name,
            "state machine failed to apply entry %" PRIu64 " (rc %d): stopping apply", index, rc);
    pthread_mutex_lock(&n->apply_mu);
    n->apply_failed = true;
    pthread_mutex_unlock(&n->apply_mu);
}

/* Applies `first` and every committed entry queued right behind it (bounded) as one unit through
 * fsm.apply_batch. Takes ownership of the items. */
static void apply_batch(struct io_node *n, struct apply_item *first, uint64_t applied)
{
    struct apply_item *items[APPLY_BATCH_ENTRIES_MAX];
    struct io_apply_entry es[APPLY_BATCH_ENTRIES_MAX];
    size_t k = 0, m = 0, bytes = first->buf != NULL ? first->buf->len : 0;

    items[k++] = first;
    pthread_mutex_lock(&n->apply_mu);
    while (k < APPLY_BATCH_ENTRIES_MAX && n->apply_head != NULL &&
           n->apply_head->kind == A_ENTRY) {
        size_t len = n->apply_head->buf != NULL ? n->apply_head->buf->len : 0;
        if (bytes + len > APPLY_BATCH_BYTES_MAX) {
            break;
        }
        bytes += len;
        items[k++] = apply_take(n);
    }
    pthread_mutex_unlock(&n->apply_mu);

    for (size_t i = 0; i < k; i++) {
        struct apply_item *it = items[i];
        if (it->index > applied && it->type == RAFT_NORMAL && it->buf != NULL) {
            es[m++] = (struct io_apply_entry){it->index, it->buf->base, it->buf->len};
        }
    }
    int rc = m > 0 ? n->fsm.apply_batch(n->fsm.ctx, es, m) : 0;
    if (rc != 0) {
        apply_fail(n, es[0].index, rc);
    } else {
        set_applied(n, items[k - 1]->index);
    }
    for (size_t i = 0; i < k; i++) {
        raft_buf_unref(items[i]->buf);
        free(items[i]);
    }
}

static void *apply_main(void *arg)
{
    struct io_node *n = arg;
    pthread_setname_np(pthread_self(), "walraft-apply");
    bool installing = false;
    uint64_t install_offset = 0;

    for (;;) {
        pthread_mutex_lock(&n->apply_mu);
        while (n->apply_head == NULL && !n->apply_stop) {
            pthread_cond_wait(&n->apply_cv, &n->apply_mu);
        }
        if (n->apply_head != NULL && !n->apply_urgent && !n->apply_stop &&
            n->apply_head->due_us > io_now_us()) {
            /* Only lazy entries, the oldest not due yet: on the leader their proposers normally
             * apply them meanwhile; on a follower more join them (apply_push). A backlog (the
             * oldest entry due) is taken at once. */
            struct timespec deadline = io_timespec_us(n->apply_head->due_us);
            while (!n->apply_urgent && !n->apply_stop &&
                   pthread_cond_timedwait(&n->apply_cv, &n->apply_mu, &deadline) != ETIMEDOUT) {
            }
        }
        if (n->apply_head == NULL) {
            pthread_mutex_unlock(&n->apply_mu);
            if (n->apply_stop) {
                break;
            }
            continue;
        }
        struct apply_item *it = apply_take(n);
        uint64_t applied = n->applied;
        bool failed = n->apply_failed;
        pthread_mutex_unlock(&n->apply_mu);

        int rc = 0;
        if (it->kind == A_ENTRY && !failed && n->fsm.apply_batch != NULL) {
            apply_batch(n, it, applied);
            continue;
        }
        switch (it->kind) {
        case A_ENTRY:
            if (failed || it->index <= applied) {
                break; /* already in the state (replay after a snapshot) */
            }
            if (it->type == RAFT_NORMAL && it->buf != NULL && n->fsm.apply != NULL) {
                rc = n->fsm.apply(n->fsm.ctx, it->index, it->buf->base, it->buf->len);
            }
            if (rc != 0) {
                apply_fail(n, it->index, rc);
            } else {
                set_applied(n, it->index);
            }
            break;
        case A_SNAP_BEGIN:
            if (installing && n->fsm.install_end != NULL) {
                n->fsm.install_end(n->fsm.ctx, it->index, false);
            }
            rc = n->fsm.install_begin != NULL ? n->fsm.install_begin(n->fsm.ctx, it->index) : -1;
            installing = rc == 0;
            install_offset = 0;
            if (rc != 0) {
                post_installed(n, it, false, false, 0);
            }
            break;
        case A_SNAP_CHUNK:
            if (!installing) {
                break;
            }
            rc = n->fsm.install_chunk(n->fsm.ctx, it->buf->base, it->buf->len);
            uint64_t total = atomic_load(&n->install_total);
            if (total > 0 && (install_offset * 10) / total != ((install_offset + it->buf->len) * 10) / total) {
                io_logf(IO_LOG_INFO, n->name, "snapshot %" PRIu64 ": %" PRIu64 " of %" PRIu64
                        " bytes received (%" PRIu64 "%%)", it->index, install_offset + it->buf->len,
                        total, ((install_offset + it->buf->len) * 100) / total);
            }
            install_offset += it->buf->len;
            atomic_store(&n->install_done, install_offset);
            if (rc != 0) {
                n->fsm.install_end(n->fsm.ctx, it->index, false);
                installing = false;
                post_installed(n, it, false, false, 0);
            } else {
                post_installed(n, it, true, true, install_offset);
            }
            break;
        case A_SNAP_END:
            if (!installing) {
                break;
            }
            rc = n->fsm.install_end(n->fsm.ctx, it->index, true);
            installing = false;
            if (rc == 0) {
                pthread_mutex_lock(&n->apply_mu);
                if (n->applied < it->index) { /* an older image leaves the state as it was */
                    n->applied = it->index;
                }
                n->apply_failed = false;
                pthread_cond_broadcast(&n->applied_cv);
                pthread_mutex_unlock(&n->apply_mu);
            }
            atomic_store(&n->install_total, 0);
            atomic_store(&n->install_done, 0);
            post_installed(n, it, rc == 0, false, 0);
            break;
        }
        raft_buf_unref(it->buf);
        free(it);
    }
    if (installing && n->fsm.install_end != NULL) {
        n->fsm.install_end(n->fsm.ctx, 0, false);
    }
    return NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Loop side: pending calls. */

static void pending_free(struct io_call *c)
{
    struct pending *p = (struct pending *)c;
    raft_buf_unref(p->buf);
    free(p->status);
    free(p);
}

static void pending_unlink(struct io_node *n, struct pending *p)
{
    for (struct pending **pp = &n->pending; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            p->queued = false;
            return;
        }
    }
}

static void join_serve_answer(struct io_node *n, struct pending *p, int rc);

/* Completes `p` with `rc` (it leaves the pending list). */
static void pending_finish(struct io_node *n, struct pending *p, int rc)
{
    if (p->queued) {
        pending_unlink(n, p);
    }
    if (p->kind == P_JOIN_SERVE) {
        join_serve_answer(n, p, rc);
        pending_free(&p->call);
        return;
    }
    io_call_done(&p->call, rc);
}

static struct pending *pending_find(struct io_node *n, uint64_t cookie)
{
    for (struct pending *p = n->pending; p != NULL; p = p->next) {
        if (p->cookie == cookie) {
            return p;
        }
    }
    return NULL;
}

static void pending_queue(struct io_node *n, struct pending *p)
{
    p->queued = true;
    p->next = n->pending;
    n->pending = p;
}

/* What a loop_fn returns when it completed the request at once, successfully. */
#define PENDING_DONE (-1000)

/* Runs a pending's loop_fn: 0 leaves it waiting for the core, PENDING_DONE completes it with
 * success, any other code completes it with that error. Once the node is stopping (or for a
 * request without loop_fn, used as a barrier) it completes with RAFT_ESHUTDOWN. */
static void pending_run(struct io_work *w)
{
    struct pending *p = (struct pending *)w;
    struct io_node *n = p->node;
    if (n->stopping || p->loop_fn == NULL) {
        pending_finish(n, p, RAFT_ESHUTDOWN);
        return;
    }
    p->cookie = ++n->next_cookie;
    int rc = p->loop_fn(p);
    if (rc != 0) {
        pending_finish(n, p, rc == PENDING_DONE ? 0 : rc);
    }
}

static struct pending *pending_new(struct io_node *n, enum pending_kind kind,
                                   int (*fn)(struct pending *p))
{
    struct pending *p = calloc(1, sizeof *p);
    if (p == NULL) {
        return NULL;
    }
    io_call_init(&p->call, pending_run, pending_free);
    p->node = n;
    p->kind = kind;
    p->loop_fn = fn;
    return p;
}

/* Posts `p`, waits, and frees it unless the waiter timed out (the loop frees it then). */
/* What pending_wait returns when the waiter gave up: the request now belongs to the loop side,
 * which frees it when it completes. Distinct from a request that completed with RAFT_ETIMEOUT
 * (a transfer past its deadline, a read the core timed out), which the caller still frees. */
#define PENDING_ABANDONED (-1001)

static int pending_wait(struct io_node *n, struct pending *p, int64_t timeout_ms)
{
    int rc = io_call_wait(n->loop, &p->call, timeout_ms);
    if (rc == -ETIMEDOUT) {
        return PENDING_ABANDONED;
    }
    if (rc == -ESHUTDOWN) {
        rc = RAFT_ESHUTDOWN;
    }
    return rc;
}

static void pending_release(struct pending *p)
{
    io_call_fini(&p->call);
    pending_free(&p->call);
}

/* ---------------------------------------------------------------------------------------------
 * Loop side: sending messages. */

static const struct raft_server *server_by_id(struct io_node *n, uint64_t id)
{
    const struct raft_server *s = raft_config_get(raft_configuration(n->raft), id);
    if (s == NULL) {
        s = raft_config_get(&n->committed_config, id);
    }
    if (s == NULL) {
        s = raft_config_get(&n->known, id);
    }
    return s;
}

/* The address to send to node `id`: from the configuration, or else the one it advertised on a
 * connection open now (a leader added while this node was away: the entry naming it comes in
 * that leader's own AppendEntries, which must be answered first). NULL if neither. */
static const char *peer_addr(struct io_node *n, uint64_t id, char buf[RAFT_ADDR_MAX])
{
    const struct raft_server *s = server_by_id(n, id);
    if (s != NULL) {
        return s->addr;
    }
    return io_transport_advertised(&n->transport, id, buf, RAFT_ADDR_MAX) ? buf : NULL;
}

static void send_raft(struct io_node *n, const struct raft_message *m)
{
    char learned[RAFT_ADDR_MAX];
    const char *addr = peer_addr(n, m->to, learned);
    if (addr == NULL) {
        return; /* a node we know no address for */
    }
    size_t cap = io_msg_size(m);
    uint8_t *buf = malloc(cap);
    if (buf == NULL) {
        return;
    }
    size_t len = io_msg_encode(m, buf, cap);
    enum io_transport_class cls = len > 64 * 1024 ? IO_TRANSPORT_BULK : IO_TRANSPORT_CONTROL;
    int rc = io_transport_send_owned(&n->transport, m->to, addr, IO_MSG_RAFT, cls, buf, len,
                                     NULL);
    if (rc != 0) {
        free(buf);
        if (rc != IO_TRANSPORT_EQUEUEFULL) {
            io_logf(IO_LOG_DEBUG, n->name, "send to %016" PRIx64 " at %s: %s", m->to, addr,
                    io_transport_strerror(rc));
        }
    } else if (m->type == RAFT_MSG_APPEND_ENTRIES) {
        n->bytes_out += len;
    }
}

static void sync_config_peers(struct io_node *n, const struct raft_config *c)
{
    for (uint32_t i = 0; i < c->n; i++) {
        if (c->servers[i].id != n->id) {
            io_transport_set_peer(&n->transport, c->servers[i].id, c->servers[i].addr);
        }
    }
}

static void sync_peers(struct io_node *n)
{
    sync_config_peers(n, &n->known);
    sync_config_peers(n, raft_configuration(n->raft));
}

/* ---------------------------------------------------------------------------------------------
 * Loop side: snapshots out. */

/* Chunk payload: u64 term, u64 index, u64 last_term, u64 offset, u64 total, u8 last,
 * u32 config length, config, data. */
#define CHUNK_HEADER_BYTES (8 * 5 + 1 + 4)

static void snap_send_next(struct snap_send *s);

static void snap_work_read(uv_work_t *w)
{
    struct snap_send *s = w->data;
    struct io_node *n = s->node;
    if (s->handle == NULL) {
        s->fsm_rc = n->fsm.snapshot_open(n->fsm.ctx, &s->handle, &s->size);
        if (s->fsm_rc != 0) {
            s->handle = NULL;
            return;
        }
    }
    size_t got = 0;
    s->fsm_rc = 0;
    while (got < SNAP_CHUNK_BYTES) {
        size_t k = 0;
        s->fsm_rc = n->fsm.snapshot_read(n->fsm.ctx, s->handle, s->chunk + got,
                                         SNAP_CHUNK_BYTES - got, &k);
        if (s->fsm_rc != 0) {
            return;
        }
        if (k == 0) {
            s->read_eof = true;
            break;
        }
        got += k;
    }
    s->chunk_len = got;
}

static void snap_send_free(struct io_node *n, struct snap_send *s)
{
    for (struct snap_send **pp = &n->sends; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    if (s->handle != NULL) {
        n->fsm.snapshot_close(n->fsm.ctx, s->handle);
    }
    free(s->chunk);
    free(s);
}

static void snap_send_end(struct snap_send *s, bool ok)
{
    struct io_node *n = s->node;
    if (!ok && s->to != 0) { /* to == 0: replaced or ended already, and said so then */
        io_logf(IO_LOG_WARN, n->name, "snapshot %" PRIu64 " to %016" PRIx64 " failed at byte %" PRIu64,
                s->index, s->to, s->offset);
    } else if (ok) {
        n->snapshots_sent++;
        io_logf(IO_LOG_INFO, n->name, "snapshot %" PRIu64 " sent: %" PRIu64 " bytes", s->index,
                s->offset);
    }
    uint64_t to = s->to, index = s->index;
    if (s->work_busy) {
        /* A read-ahead is still on libuv's work pool and holds `s`: snap_work_after frees it,
         * as it does a replaced stream (an early end: a refusal or a timeout mid-stream). */
        s->failed = true;
        s->to = 0;
        s->waiting_ack = false;
    } else {
        snap_send_free(n, s);
    }
    if (!n->stopping && to != 0) { /* to == 0: a replaced stream, nothing to report */
        struct raft_event ev = {.type = RAFT_EVENT_SNAPSHOT_SENT, .now_ms = io_now_ms()};
        ev.snapshot_sent.to = to;
        ev.snapshot_sent.index = index;
        ev.snapshot_sent.ok = ok;
        step_event(n, &ev);
    }
}

static void snap_work_after(uv_work_t *w, int status)
{
    struct snap_send *s = w->data;
    struct io_node *n = s->node;
    s->work_busy = false;
    n->snap_works--;
    if (n->stopping || status != 0 || s->fsm_rc != 0 || s->failed) {
        if (n->stopping) {
            snap_send_free(n, s);
            return;
        }
        snap_send_end(s, false);
        return;
    }
    const struct raft_server *to = server_by_id(n, s->to);
    uint8_t cfg[RAFT_CONFIG_ENCODED_MAX];
    size_t cfg_len = 0;
    if (to == NULL || raft_config_encode(&s->config, cfg, &cfg_len) != 0) {
        snap_send_end(s, false);
        return;
    }
    size_t len = CHUNK_HEADER_BYTES + cfg_len + s->chunk_len;
    uint8_t *buf = malloc(len);
    if (buf == NULL) {
        snap_send_end(s, false);
        return;
    }
    io_put64(buf, raft_term(n->raft));
    io_put64(buf + 8, s->index);
    io_put64(buf + 16, s->term);
    io_put64(buf + 24, s->offset);
    io_put64(buf + 32, s->size);
    /* Only now is the end the loop's to see: an acknowledgement of every chunk sent so far that
     * came while the read of the last one ran must not pass for the final one. */
    s->eof = s->read_eof;
    buf[40] = s->eof ? 1 : 0;
    io_put32(buf + 41, (uint32_t)cfg_len);
    memcpy(buf + CHUNK_HEADER_BYTES, cfg, cfg_len);
    memcpy(buf + CHUNK_HEADER_BYTES + cfg_len, s->chunk, s->chunk_len);
    int rc = io_transport_send_owned(&n->transport, s->to, to->addr, IO_MSG_SNAP_CHUNK,
                                     IO_TRANSPORT_BULK, buf, len, NULL);
    if (rc != 0) {
        free(buf);
        snap_send_end(s, false);
        return;
    }
    s->offset += s->chunk_len;
    s->inflight++;
    s->waiting_ack = true;
    s->ack_deadline_ms = io_now_ms() + SNAP_ACK_TIMEOUT_MS;
    if (!s->eof && s->inflight < SNAP_WINDOW) {
        snap_send_next(s); /* read ahead while this chunk travels */
    }
}

static void snap_send_next(struct snap_send *s)
{
    struct io_node *n = s->node;
    s->work.data = s;
    s->work_busy = true;
    n->snap_works++;
    if (uv_queue_work(io_loop_uv(n->loop), &s->work, snap_work_read, snap_work_after) != 0) {
        s->work_busy = false;
        n->snap_works--;
        snap_send_end(s, false);
    }
}

static void snap_send_start(struct io_node *n, const struct raft_snapshot_send *req)
{
    /* One stream per follower. A request for the index being streamed is a repeat; a request for
     * another index replaces the stream (the core now waits for that index only, and ignores a
     * completion reported for the old one). */
    for (struct snap_send *s = n->sends, *next; s != NULL; s = next) {
        next = s->next;
        if (s->to != req->to) {
            continue;
        }
        if (s->index == req->index && !s->failed) {
            return;
        }
        if (s->work_busy) {
            s->failed = true; /* snap_work_after ends it, reporting the old index */
            s->to = 0;        /* and it no longer counts as this follower's stream */
        } else {
            snap_send_free(n, s);
        }
    }
    struct snap_send *s = calloc(1, sizeof *s);
    if (s != NULL) {
        s->chunk = malloc(SNAP_CHUNK_BYTES);
    }
    if (s == NULL || s->chunk == NULL || n->fsm.snapshot_open == NULL) {
        if (s != NULL) {
            free(s->chunk);
            free(s);
        }
        struct raft_event ev = {.type = RAFT_EVENT_SNAPSHOT_SENT, .now_ms = io_now_ms()};
        ev.snapshot_sent.to = req->to;
        ev.snapshot_sent.index = req->index;
        ev.snapshot_sent.ok = false;
        step_event(n, &ev);
        return;
    }
    s->node = n;
    s->to = req->to;
    s->index = req->index;
    s->term = req->term;
    s->config = req->config;
    s->next = n->sends;
    n->sends = s;
    io_logf(IO_LOG_INFO, n->name, "sending snapshot %" PRIu64 " to %016" PRIx64, s->index, s->to);
    snap_send_next(s);
}

static void on_snap_ack(struct io_node *n, uint64_t from, const uint8_t *buf, size_t len)
{
    if (len != 8 + 8 + 1) {
        return;
    }
    uint64_t index = io_get64(buf), offset = io_get64(buf + 8);
    bool ok = buf[16] == 1;
    for (struct snap_send *s = n->sends; s != NULL; s = s->next) {
        if (s->to != from || s->index != index || !s->waiting_ack) {
            continue;
        }
        if (!ok) {
            s->waiting_ack = false;
            snap_send_end(s, false);
            return;
        }
        if (s->eof && offset == s->offset) {
            /* The receiver acknowledges the last chunk only once the image is installed. */
            s->waiting_ack = false;
            snap_send_end(s, true);
            return;
        }
        if (offset > s->acked && offset <= s->offset) {
            s->acked = offset;
            if (s->inflight > 0) {
                s->inflight--;
            }
            s->ack_deadline_ms = io_now_ms() + SNAP_ACK_TIMEOUT_MS;
            if (!s->eof && !s->work_busy && s->inflight < SNAP_WINDOW) {
                snap_send_next(s);
            }
        }
        return;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Loop side: snapshots in. */

static void send_snap_ack(struct io_node *n, uint64_t to, uint64_t index, uint64_t offset, bool ok)
{
    uint8_t buf[17];
    io_put64(buf, index);
    io_put64(buf + 8, offset);
    buf[16] = ok ? 1 : 0;
    char learned[RAFT_ADDR_MAX];
    io_transport_send(&n->transport, to, peer_addr(n, to, learned), IO_MSG_SNAP_ACK,
                      IO_TRANSPORT_CONTROL, buf, sizeof buf);
}

static void on_snap_chunk(struct io_node *n, uint64_t from, const uint8_t *buf, size_t len)
{
    if (len < CHUNK_HEADER_BYTES) {
        return;
    }
    uint64_t term = io_get64(buf), index = io_get64(buf + 8), last_term = io_get64(buf + 16);
    uint64_t offset = io_get64(buf + 24), total = io_get64(buf + 32);
    bool last = buf[40] == 1;
    uint32_t cfg_len = io_get32(buf + 41);
    if (cfg_len > len - CHUNK_HEADER_BYTES || term < raft_term(n->raft)) {
        return;
    }
    struct raft_config cfg;
    if (raft_config_decode(buf + CHUNK_HEADER_BYTES, cfg_len, &cfg) != 0) {
        send_snap_ack(n, from, index, offset, false);
        return;
    }
    const uint8_t *data = buf + CHUNK_HEADER_BYTES + cfg_len;
    size_t data_len = len - CHUNK_HEADER_BYTES - cfg_len;
    struct snap_recv *r = &n->recv;
    if (offset == 0 && index < n->meta.snapshot_index) {
        /* Older than the snapshot this node holds (a stale stream, or one from another leader,
         * arriving after a newer install): installed, it would take the state back past entries
         * the log no longer has. The leader finds the node's position by probing instead. */
        io_logf(IO_LOG_INFO, n->name,
                "refusing snapshot %" PRIu64 ": this node holds snapshot %" PRIu64, index,
                n->meta.snapshot_index);
        send_snap_ack(n, from, index, 0, false);
        return;
    }
    if (offset == 0) {
        struct apply_item *it = calloc(1, sizeof *it);
        if (it == NULL) {
            return;
        }
        *r = (struct snap_recv){true, from, term, index, last_term, 0, total, from};
        it->kind = A_SNAP_BEGIN;
        it->index = index;
        atomic_store(&n->install_total, total);
        atomic_store(&n->install_done, 0);
        io_logf(IO_LOG_INFO, n->name, "receiving snapshot %" PRIu64 " (%" PRIu64 " bytes)", index,
                total);
        apply_push(n, it, 0);
    } else if (!r->active || r->index != index || r->from != from || offset != r->expected_offset) {
        send_snap_ack(n, from, index, offset, false);
        return;
    }
    if (data_len > 0) {
        struct apply_item *it = calloc(1, sizeof *it);
        if (it == NULL || (it->buf = raft_buf_copy(data, data_len)) == NULL) {
            free(it);
            r->active = false;
            send_snap_ack(n, from, index, offset, false);
            return;
        }
        it->kind = A_SNAP_CHUNK;
        it->index = index;
        apply_push(n, it, 0);
    }
    r->expected_offset = offset + data_len;
    if (last) {
        struct apply_item *end = calloc(1, sizeof *end);
        if (end == NULL) {
            return;
        }
        end->kind = A_SNAP_END;
        end->index = index;
        end->from = from;
        end->term = term;
        end->last_term = last_term;
        end->config = cfg;
        r->active = false;
        apply_push(n, end, 0);
    }
}

static void installed_on_loop(struct io_work *w)
{
    struct installed_work *p = (struct installed_work *)w;
    struct io_node *n = p->node;
    const struct apply_item *it = &p->item;
    if (n->stopping) {
        free(p);
        return;
    }
    if (p->chunk_ack) {
        /* The chunk is in the state machine: ask for the next one (flow control). Only the
         * final acknowledgement (below) completes the stream, after the core knows. */
        if (n->recv.active || p->ack_offset < n->recv.expected_offset) {
            send_snap_ack(n, n->recv.from, it->index, p->ack_offset, true);
        }
        free(p);
        return;
    }
    if (it->kind == A_SNAP_END && p->ok) {
        n->snapshots_installed++;
        /* The state holds the snapshot durably: record it as the log's base, then tell the core,
         * which resets the log (handle() queues the reset) and the applied floor. A stream
         * accepted before a newer install had been recorded (both were queued to the state
         * machine, which kept its newer state) must not take the record or the floor back: the
         * core ignores it as below its log's base and acknowledges what the log holds. */
        bool newer = it->index > n->meta.snapshot_index;
        if (newer) {
            if (snap_record_store(n, it->index, it->last_term, &it->config) != 0) {
                io_logf(IO_LOG_ERROR, n->name, "cannot record the installed snapshot");
            }
            n->meta.snapshot_index = it->index;
            n->meta.snapshot_term = it->last_term;
            n->committed_config = it->config;
            n->committed_config_index = it->index;
        }
        if (n->meta.applied_floor < it->index) {
            n->meta.applied_floor = it->index;
        }
        io_meta_store(&n->meta_file, &n->meta);
        struct raft_event ev = {.type = RAFT_EVENT_SNAPSHOT_INSTALLED, .now_ms = io_now_ms()};
        ev.snapshot_installed.from = it->from;
        ev.snapshot_installed.term = it->term;
        ev.snapshot_installed.index = it->index;
        ev.snapshot_installed.last_term = it->last_term;
        ev.snapshot_installed.config = it->config;
        step_event(n, &ev);
        sync_peers(n);
        if (newer) {
            io_logf(IO_LOG_INFO, n->name, "installed snapshot %" PRIu64, it->index);
        } else {
            io_logf(IO_LOG_INFO, n->name,
                    "snapshot %" PRIu64 " ended after snapshot %" PRIu64 ": kept the newer state",
                    it->index, n->meta.snapshot_index);
        }
        send_snap_ack(n, it->from, it->index, n->recv.expected_offset, true);
    } else if (!p->ok) {
        io_logf(IO_LOG_WARN, n->name, "installing snapshot %" PRIu64 " failed", it->index);
        send_snap_ack(n, n->recv.from, it->index, 0, false);
        n->recv.active = false;
    }
    free(p);
}

/* ---------------------------------------------------------------------------------------------
 * Loop side: joins. JOIN payload: u8 role, u8 name length, name, u8 addr length, addr.
 * JOIN_RESULT payload: u32 status, u64 cluster id, u8 leader addr length, leader addr, then on
 * success the encoded configuration (so the new node knows its peers' addresses before its log
 * tells it). */

static void join_reply(struct io_node *n, uint64_t conn, int status, const char *leader_addr)
{
    uint8_t buf[4 + 8 + 1 + RAFT_ADDR_MAX + RAFT_CONFIG_ENCODED_MAX];
    size_t alen = leader_addr != NULL ? strlen(leader_addr) : 0, clen = 0;
    io_put32(buf, (uint32_t)status);
    io_put64(buf + 4, n->cluster_id);
    buf[12] = (uint8_t)alen;
    memcpy(buf + 13, leader_addr != NULL ? leader_addr : "", alen);
    if (status == 0 && raft_config_encode(raft_configuration(n->raft), buf + 13 + alen, &clen) != 0) {
        clen = 0;
    }
    io_transport_reply(&n->transport, conn, IO_MSG_JOIN_RESULT, IO_TRANSPORT_CONTROL, buf,
                       13 + alen + clen);
}

static void join_serve_answer(struct io_node *n, struct pending *p, int rc)
{
    join_reply(n, p->conn_id, rc, NULL);
}

static int decode_join(const uint8_t *buf, size_t len, struct raft_server *s)
{
    struct io_reader r = {buf, len, 0};
    memset(s, 0, sizeof *s);
    s->role = io_read8(&r);
    uint8_t nl = io_read8(&r);
    const uint8_t *name = io_read_bytes(&r, nl);
    uint8_t al = io_read8(&r);
    const uint8_t *addr = io_read_bytes(&r, al);
    if (r.bad || r.left != 0 || nl == 0 || nl >= RAFT_NAME_MAX || al == 0 || al >= RAFT_ADDR_MAX ||
        (s->role != RAFT_VOTER && s->role != RAFT_REPLICA)) {
        return -1;
    }
    memcpy(s->name, name, nl);
    memcpy(s->addr, addr, al);
    s->id = name_to_id(s->name);
    return 0;
}

static void on_join(struct io_node *n, uint64_t conn, const uint8_t *buf, size_t len)
{
    struct raft_server s;
    struct raft_update u;
    if (decode_join(buf, len, &s) != 0) {
        join_reply(n, conn, RAFT_EBADARG, NULL);
        return;
    }
    if (raft_state(n->raft) != RAFT_LEADER) {
        char leader_addr[RAFT_ADDR_MAX] = "";
        const struct raft_server *l = server_by_id(n, raft_leader(n->raft));
        if (l != NULL) {
            snprintf(leader_addr, sizeof leader_addr, "%s", l->addr);
        }
        join_reply(n, conn, RAFT_ENOTLEADER, leader_addr);
        return;
    }
    const struct raft_server *have = raft_config_get(raft_configuration(n->raft), s.id);
    if (have != NULL) {
        /* A retried join: answer once the configuration holding it has committed. */
        bool same = strcmp(have->addr, s.addr) == 0 && strcmp(have->name, s.name) == 0;
        int rc = !same ? RAFT_EDUPLICATE
                       : raft_config_get(&n->committed_config, s.id) != NULL ? 0 : RAFT_ECHANGE;
        join_reply(n, conn, rc, NULL);
        return;
    }
    struct pending *p = pending_new(n, P_JOIN_SERVE, NULL);
    if (p == NULL) {
        join_reply(n, conn, RAFT_ENOMEM, NULL);
        return;
    }
    p->cookie = ++n->next_cookie;
    p->conn_id = conn;
    int rc = raft_add(n->raft, io_now_ms(), &s, p->cookie, &u);
    if (rc != 0) {
        join_reply(n, conn, rc, NULL);
        pending_free(&p->call);
        return;
    }
    io_logf(IO_LOG_INFO, n->name, "adding %s at %s (%s) at its request", s.name, s.addr,
            s.role == RAFT_VOTER ? "voter" : "replica");
    pending_queue(n, p);
    handle(n, &u);
}

/* ---------------------------------------------------------------------------------------------
 * Loop side: status. */

static void fill_status(struct io_node *n, struct io_node_status *st)
{
    const struct raft_config *c = raft_configuration(n->raft);
    uint64_t leader = raft_leader(n->raft);
    uint64_t now = io_now_ms();
    memset(st, 0, sizeof *st);
    snprintf(st->name, sizeof st->name, "%s", n->name);
    snprintf(st->addr, sizeof st->addr, "%s", n->addr);
    st->id = n->id;
    st->cluster_id = n->cluster_id;
    st->state = raft_state(n->raft);
    const struct raft_server *self = raft_config_get(c, n->id);
    st->role = self != NULL ? self->role : 255;
    st->term = raft_term(n->raft);
    const struct raft_server *l = server_by_id(n, leader);
    if (l != NULL) {
        snprintf(st->leader_name, sizeof st->leader_name, "%s", l->name);
        snprintf(st->leader_addr, sizeof st->leader_addr, "%s", l->addr);
    }
    st->first_index = raft_first_index(n->raft);
    st->last_index = raft_last_index(n->raft);
    st->commit_index = raft_commit_index(n->raft);
    st->persisted_index = raft_persisted_index(n->raft);
    st->applied_index = applied_index(n);
    st->applied_floor = n->meta.applied_floor;
    st->n_peers = c->n;
    for (uint32_t i = 0; i < c->n; i++) {
        struct io_node_peer_status *ps = &st->peers[i];
        struct raft_progress_info info;
        ps->server = c->servers[i];
        ps->is_leader = c->servers[i].id == leader;
        if (c->servers[i].id == n->id) {
            ps->match_index = st->persisted_index;
            ps->connected = true;
        } else if (raft_progress(n->raft, c->servers[i].id, &info) == 0) {
            ps->match_index = info.match_index;
            ps->last_contact_ms = now > info.last_contact_ms ? now - info.last_contact_ms : 0;
            ps->progress = info.state;
        }
        struct io_transport_peer_stats ts;
        if (c->servers[i].id != n->id &&
            io_transport_peer_stats(&n->transport, c->servers[i].id, &ts) == 0) {
            ps->connected = ts.connected;
        }
    }
    st->proposals = n->proposals;
    st->commits = n->commits;
    st->elections = n->elections;
    st->snapshots_sent = n->snapshots_sent;
    st->snapshots_installed = n->snapshots_installed;
    st->bytes_replicated = n->bytes_out;
    uint64_t k = n->latency_n < LATENCY_SAMPLES ? n->latency_n : LATENCY_SAMPLES;
    if (k > 0) {
        uint64_t *v = malloc(k * sizeof *v);
        if (v != NULL) {
            memcpy(v, n->latency_us, k * sizeof *v);
            /* insertion sort: at most LATENCY_SAMPLES values, only on a status call */
            for (uint64_t i = 1; i < k; i++) {
                uint64_t x = v[i], j = i;
                while (j > 0 && v[j - 1] > x) {
                    v[j] = v[j - 1];
                    j--;
                }
                v[j] = x;
            }
            st->commit_latency_p50_us = v[k / 2];
            st->commit_latency_p99_us = v[(k * 99) / 100 < k ? (k * 99) / 100 : k - 1];
            free(v);
        }
    }
    st->install_done = atomic_load(&n->install_done);
    st->install_total = atomic_load(&n->install_total);
    st->disk_failed = atomic_load(&n->disk_failed);
}

static const char *state_name(uint8_t s)
{
    switch (s) {
    case RAFT_LEADER:
        return "leader";
    case RAFT_CANDIDATE:
        return "candidate";
    case RAFT_PRECANDIDATE:
        return "precandidate";
    default:
        return "follower";
    }
}

static const char *role_name(uint8_t r)
{
    switch (r) {
    case RAFT_VOTER:
        return "voter";
    case RAFT_REPLICA:
        return "replica";
    case RAFT_LEARNER:
        return "learner";
    default:
        return "none";
    }
}

size_t io_node_status_json(const struct io_node_status *st, char *buf, size_t cap)
{
    size_t n = 0;
#define OUT(...)                                                                                  \
    do {                                                                                          \
        int k_ = snprintf(buf + n, n < cap ? cap - n : 0, __VA_ARGS__);                           \
        if (k_ > 0) {                                                                             \
            n += (size_t)k_;                                                                      \
        }                                                                                         \
    } while (0)
    OUT("{\"id\":\"%s\",\"address\":\"%s\",\"state\":\"%s\",\"role\":\"%s\",\"term\":%" PRIu64
        ",\"leader\":\"%s\",\"leader_address\":\"%s\",\"cluster_id\":\"%016" PRIx64 "\""
        ",\"first_index\":%" PRIu64 ",\"last_index\":%" PRIu64 ",\"commit_index\":%" PRIu64
        ",\"persisted_index\":%" PRIu64 ",\"applied_index\":%" PRIu64
        ",\"applied_floor\":%" PRIu64 ",\"disk_failed\":%s",
        st->name, st->addr, state_name(st->state), role_name(st->role), st->term, st->leader_name,
        st->leader_addr, st->cluster_id, st->first_index, st->last_index, st->commit_index,
        st->persisted_index, st->applied_index, st->applied_floor,
        st->disk_failed ? "true" : "false");
    OUT(",\"snapshot_install\":{\"bytes_done\":%" PRIu64 ",\"bytes_total\":%" PRIu64 "}",
        st->install_done, st->install_total);
    OUT(",\"stats\":{\"proposals\":%" PRIu64 ",\"commits\":%" PRIu64 ",\"elections\":%" PRIu64
        ",\"snapshots_sent\":%" PRIu64 ",\"snapshots_installed\":%" PRIu64
        ",\"bytes_replicated\":%" PRIu64 ",\"commit_latency_p50_us\":%" PRIu64
        ",\"commit_latency_p99_us\":%" PRIu64 "}",
        st->proposals, st->commits, st->elections, st->snapshots_sent, st->snapshots_installed,
        st->bytes_replicated, st->commit_latency_p50_us, st->commit_latency_p99_us);
    OUT(",\"nodes\":[");
    for (uint32_t i = 0; i < st->n_peers; i++) {
        const struct io_node_peer_status *p = &st->peers[i];
        int64_t lag = (int64_t)st->last_index - (int64_t)p->match_index;
        OUT("%s{\"id\":\"%s\",\"address\":\"%s\",\"role\":\"%s\",\"is_leader\":%s"
            ",\"match_index\":%" PRIu64 ",\"lag\":%" PRId64 ",\"last_contact_ms\":%" PRIu64
            ",\"connected\":%s}",
            i > 0 ? "," : "", p->server.name, p->server.addr, role_name(p->server.role),
            p->is_leader ? "true" : "false", p->match_index,
            st->state == RAFT_LEADER ? (lag > 0 ? lag : 0) : 0, p->last_contact_ms,
            p->connected ? "true" : "false");
    }
    OUT("]}");
#undef OUT
    if (cap > 0 && n >= cap) {
        buf[cap - 1] = '\0';
    }
    return n;
}

static void on_status(struct io_node *n, uint64_t conn)
{
    struct io_node_status *st = malloc(sizeof *st);
    char *json = malloc(16384);
    if (st != NULL && json != NULL) {
        fill_status(n, st);
        size_t len = io_node_status_json(st, json, 16384);
        if (len >= 16384) {
            len = 16383;
        }
        io_transport_reply(&n->transport, conn, IO_MSG_STATUS_RESULT, IO_TRANSPORT_CONTROL, json,
                           len);
    }
    free(st);
    free(json);
}

/* ---------------------------------------------------------------------------------------------
 * Loop side: the core's updates. */

static void publish(struct io_node *n)
{
    struct raft *r = n->raft;
    pthread_mutex_lock(&n->pub_mu);
    n->pub.state = raft_state(r);
    n->pub.term = raft_term(r);
    n->pub.last_index = raft_last_index(r);
    n->pub.term_committed = raft_term_at(r, raft_commit_index(r)) == raft_term(r);
    n->pub.transfer = raft_transfer_target(r);
    const struct raft_server *l = server_by_id(n, raft_leader(r));
    snprintf(n->pub.leader_name, sizeof n->pub.leader_name, "%s", l != NULL ? l->name : "");
    snprintf(n->pub.leader_addr, sizeof n->pub.leader_addr, "%s", l != NULL ? l->addr : "");
    pthread_mutex_unlock(&n->pub_mu);
}

static void record_latency(struct io_node *n, struct pending *p)
{
    uint64_t us = (io_now_ms() - p->started_ms) * 1000;
    n->latency_us[n->latency_n % LATENCY_SAMPLES] = us;
    n->latency_n++;
}

/* Whether this update tells a waiting local proposer that `e`, its entry, committed. */
static bool proposer_waits(struct io_node *n, const struct raft_update *u, const struct raft_entry *e)
{
    if (e->type != RAFT_NORMAL) {
        return false;
    }
    for (uint32_t i = 0; i < u->n_proposals; i++) {
        const struct raft_proposal_result *pr = &u->proposals[i];
        if (pr->index == e->index && pr->outcome == RAFT_PROPOSAL_COMMITTED) {
            const struct pending *p = pending_find(n, pr->cookie);
            return p != NULL && p->kind == P_PROPOSE;
        }
    }
    return false;
}

/* The voters of the latest configuration as a lazy leader sees them (disk_hold_until). Loop
 * thread, leader only. */
struct voter_scan {
    unsigned voters;     /* voters, this node included if it is one */
    bool self_votes;     /* this node is a voter: its own copy counts */
    unsigned n;          /* entries of match: the other voters */
    uint64_t match[RAFT_SERVERS_MAX];
    unsigned keeping_up; /* other voters replicating that answered within two heartbeats */
};

static void scan_voters(struct io_node *n, uint64_t now_ms, struct voter_scan *v)
{
    const struct raft_config *c = raft_configuration(n->raft);
    memset(v, 0, sizeof *v);
    for (uint32_t i = 0; i < c->n; i++) {
        struct raft_progress_info p;
        if (c->servers[i].role != RAFT_VOTER) {
            continue;
        }
        v->voters++;
        if (c->servers[i].id == n->id) {
            v->self_votes = true;
        } else if (raft_progress(n->raft, c->servers[i].id, &p) == 0) {
            v->match[v->n++] = p.match_index;
            if (p.state == RAFT_REPLICATE && now_ms - p.last_contact_ms < 2u * n->cfg.heartbeat_ms) {
                v->keeping_up++;
            }
        }
    }
}

/* A lazy leader (disk_hold_until): records how far the followers are one short of a quorum, so
 * that the leader's own durable copy would complete it. Loop thread. */
static void lazy_track(struct io_node *n)
{
    struct voter_scan v;
    scan_voters(n, io_now_ms(), &v);
    unsigned need = v.voters / 2; /* followers a commit needs besides our own copy */
    if (!v.self_votes || need == 0 || v.n < need) {
        return;
    }
    uint64_t *m = v.match;
    for (unsigned i = 1; i < v.n; i++) { /* descending */
        for (unsigned j = i; j > 0 && m[j] > m[j - 1]; j--) {
            uint64_t t = m[j];
            m[j] = m[j - 1];
            m[j - 1] = t;
        }
    }
    if (m[need - 1] > atomic_load(&n->near_index)) {
        atomic_store(&n->near_us, io_now_us());
        atomic_store(&n->near_index, m[need - 1]);
    }
}

/* How long after an update that left a commit untold (raft_update.commit_untold) the leader
 * tells it: long enough for the next proposal, if one follows (a writer's next transaction,
 * about 0.1 ms here), to carry it without an extra message. */
#define TELL_COMMIT_MS 1

static void on_tell(uv_timer_t *t)
{
    struct io_node *n = t->data;
    struct raft_event ev = {.type = RAFT_EVENT_TELL_COMMIT, .now_ms = io_now_ms()};
    step_event(n, &ev);
}

static void handle(struct io_node *n, struct raft_update *u)
{
    /* 1. Term and vote, durable before any message of this update leaves. */
    if (u->hard_state_changed) {
        n->meta.term = u->term;
        n->meta.voted_for = u->vote;
        int rc = io_meta_store(&n->meta_file, &n->meta);
        if (rc != 0) {
            /* Sending anything now could break a promise a vote made: stay silent. */
            io_logf(IO_LOG_ERROR, n->name, "cannot store term and vote: %s; dropping messages",
                    io_meta_errmsg(&n->meta_file));
            u->n_messages = 0;
        }
    }
    /* 2.-4. Log changes go to the disk thread, in order. It is woken after the messages leave:
     * a wake-up costs the waker about 20 us on a 2-vCPU VM, and a leader's AppendEntries, which
     * need not wait for its own append (Raft §10.2.1), should not pay it. Nothing in a follower's
     * update needs these entries durable: its acknowledgement waits for RAFT_EVENT_PERSISTED. */
    bool wake_disk = false;
    if (u->snapshot_index != 0) {
        disk_queue(n, disk_op_new(D_RESET, u->snapshot_index, u->snapshot_term), true);
        wake_disk = true;
    }
    if (u->truncate_from != 0) {
        disk_queue(n, disk_op_new(D_TRUNCATE, u->truncate_from, 0), true);
        wake_disk = true;
    }
    if (u->n_entries > 0) {
        struct disk_op *op = disk_op_new(D_APPEND, 0, 0);
        op->entries = malloc(u->n_entries * sizeof *op->entries);
        if (op->entries == NULL) {
            io_logf(IO_LOG_ERROR, n->name, "out of memory queueing log entries");
            abort();
        }
        for (uint32_t i = 0; i < u->n_entries; i++) {
            op->entries[i] = u->entries[i];
            op->entries[i].buf = raft_buf_ref(u->entries[i].buf);
        }
        op->n = u->n_entries;
        bool polled = disk_queue(n, op, true);
        wake_disk = wake_disk || (!n->direct && !polled);
    }
    /* 5. Messages. propose_direct runs this off the loop, for a node alone in its configuration:
     * nothing there needs the loop (no one to send to, no snapshot to stream, no peer to add). */
    assert(!n->direct || (u->n_messages == 0 && u->n_snapshots == 0 && !u->config_changed));
    for (uint32_t i = 0; i < u->n_messages && !n->direct; i++) {
        const struct raft_message *m = &u->messages[i];
        if (n->part_out && (n->part_peer == 0 || n->part_peer == m->to)) {
            continue;
        }
        send_raft(n, m);
    }
    if (wake_disk) {
        disk_wake(n);
    }
    /* 6. Committed entries. */
    bool leading = raft_state(n->raft) == RAFT_LEADER;
    uint64_t follower_delay = u->n_committed > 0 && !leading ? follower_apply_delay(n) : 0;
    for (uint32_t i = 0; i < u->n_committed; i++) {
        const struct raft_entry *e = &u->committed[i];
        if (e->type == RAFT_CONFIG && e->buf != NULL) {
            struct raft_config c;
            if (raft_config_decode(e->buf->base, e->buf->len, &c) == 0) {
                n->committed_config = c;
                n->committed_config_index = e->index;
            }
        }
        struct apply_item *it = calloc(1, sizeof *it);
        if (it == NULL) {
            io_logf(IO_LOG_ERROR, n->name, "out of memory queueing committed entries");
            abort();
        }
        it->kind = A_ENTRY;
        it->index = e->index;
        it->type = e->type;
        it->buf = raft_buf_ref(e->buf);
        apply_push(n, it,
                   !leading                                               ? follower_delay
                   : n->fsm.proposer_applies && proposer_waits(n, u, e) ? APPLY_LAZY_US
                                                                          : 0);
        n->commits++;
    }
    /* 7. Snapshots to stream. */
    for (uint32_t i = 0; i < u->n_snapshots && !n->direct; i++) {
        snap_send_start(n, &u->snapshots[i]);
    }
    /* 8. Compaction: record the new base with its configuration first, then drop the prefix. */
    if (u->compact_to != 0) {
        uint64_t term = raft_term_at(n->raft, u->compact_to);
        if (term != 0 && n->committed_config.n > 0 &&
            snap_record_store(n, u->compact_to, term, &n->committed_config) == 0) {
            n->meta.snapshot_index = u->compact_to;
            n->meta.snapshot_term = term;
            disk_push(n, disk_op_new(D_COMPACT, u->compact_to, term));
        }
    }
    /* 9. Client results. */
    for (uint32_t i = 0; i < u->n_proposals; i++) {
        const struct raft_proposal_result *pr = &u->proposals[i];
        struct pending *p = pending_find(n, pr->cookie);
        if (p == NULL) {
            continue;
        }
        p->index = pr->index;
        if (pr->outcome == RAFT_PROPOSAL_APPENDED) {
            p->appended = true;
        } else if (pr->outcome == RAFT_PROPOSAL_COMMITTED) {
            if (p->kind == P_PROPOSE) {
                record_latency(n, p);
            }
            pending_finish(n, p, 0);
        } else {
            pending_finish(n, p, pr->status != 0 ? pr->status : RAFT_EUNKNOWN);
        }
    }
    for (uint32_t i = 0; i < u->n_reads; i++) {
        struct pending *p = pending_find(n, u->reads[i].cookie);
        if (p != NULL) {
            p->index = u->reads[i].index;
            pending_finish(n, p, u->reads[i].status);
        }
    }
    if (u->config_changed && !n->direct) {
        sync_peers(n);
    }
    /* 10. Commits that no message has carried to a peer yet: the proposer's next entry will
     * carry them within microseconds; if none comes, a heartbeat to that peer alone does, so a
     * read replica of a quiet leader is not a heartbeat behind. */
    if (u->commit_untold && n->tell_open && !uv_is_active((uv_handle_t *)&n->tell)) {
        uv_update_time(io_loop_uv(n->loop)); /* the cached time is stale off the loop thread */
        uv_timer_start(&n->tell, on_tell, TELL_COMMIT_MS, 0);
    }
    /* Publish before completing waiters below: a caller woken by a finished transfer reads the
     * new leader from the published state. */
    publish(n);
    atomic_store(&n->commit_hint, raft_commit_index(n->raft));
    uint8_t state = raft_state(n->raft);
    if (state != RAFT_LEADER) {
        atomic_store(&n->lazy_ok, false);
    } else if (n->cfg.leader_sync == IO_LEADER_SYNC_LAZY) {
        lazy_track(n);
    }
    if (state != n->last_state) {
        atomic_store(&n->near_index, 0);
        if (state == RAFT_LEADER) {
            n->elections++;
        }
        if (n->last_state == RAFT_LEADER && n->fsm.leadership_lost != NULL) {
            n->fsm.leadership_lost(n->fsm.ctx);
        }
        if (n->last_state == RAFT_LEADER) {
            /* A follower ignores chunks of an old term: end our streams now rather than let
             * each wait out its acknowledgement timeout (a leader again streams afresh). */
            for (struct snap_send *ss = n->sends, *next; ss != NULL; ss = next) {
                next = ss->next;
                if (ss->work_busy) {
                    ss->failed = true;
                    ss->to = 0;
                } else {
                    snap_send_free(n, ss);
                }
            }
        }
        io_logf(IO_LOG_INFO, n->name, "now %s in term %" PRIu64, state_name(state),
                raft_term(n->raft));
        n->last_state = state;
    }
    /* Transfers end when someone else leads. */
    if (u->state_changed) {
        uint64_t leader = raft_leader(n->raft);
        for (struct pending *p = n->pending, *next; p != NULL; p = next) {
            next = p->next;
            if (p->kind == P_TRANSFER && leader != 0 && leader != n->id) {
                pending_finish(n, p, 0);
            }
        }
    }
    publish(n);
}

/* ---------------------------------------------------------------------------------------------
 * Loop side: timers and messages. */

/* Whether a lazy leader may hold its own syncs back (disk_hold_until): a quorum of the voters
 * other than itself replicates, and each of them answered within two heartbeats. */
static bool lazy_allowed(struct io_node *n, uint64_t now)
{
    if (n->cfg.leader_sync != IO_LEADER_SYNC_LAZY || raft_state(n->raft) != RAFT_LEADER) {
        return false;
    }
    struct voter_scan v;
    scan_voters(n, now, &v);
    return v.keeping_up >= v.voters / 2 + 1;
}

static void on_tick(uv_timer_t *t)
{
    struct io_node *n = t->data;
    uint64_t now = io_now_ms();
    struct raft_event ev = {.type = RAFT_EVENT_TICK, .now_ms = now};
    step_event(n, &ev);
    atomic_store(&n->lazy_ok, lazy_allowed(n, now));
    for (struct pending *p = n->pending, *next; p != NULL; p = next) {
        next = p->next;
        if (p->kind == P_TRANSFER && now >= p->deadline_ms) {
            pending_finish(n, p, RAFT_ETIMEOUT);
        }
    }
    /* snap_send_end steps the core, whose update may end other streams: walk from the head
     * again after each one. */
    for (bool again = true; again;) {
        again = false;
        for (struct snap_send *s = n->sends; s != NULL; s = s->next) {
            if (s->waiting_ack && now > s->ack_deadline_ms) {
                s->waiting_ack = false;
                snap_send_end(s, false);
                again = true;
                break;
            }
        }
    }
}

static void on_message(struct io_transport *t, uint64_t from, uint16_t type, const void *buf,
                       size_t len, uint64_t conn)
{
    struct io_node *n = t->data;
    if (n->stopping) {
        return;
    }
    if (n->part_in && from != 0 && (n->part_peer == 0 || n->part_peer == from)) {
        return;
    }
    if (from == 0 && type != IO_MSG_JOIN && type != IO_MSG_STATUS) {
        return; /* outsiders may only ask to join or for the status */
    }
    switch (type) {
    case IO_MSG_RAFT: {
        struct raft_event ev = {.type = RAFT_EVENT_RECEIVE, .now_ms = io_now_ms()};
        int rc = io_msg_decode(buf, len, n->cfg.entry_bytes_max, &ev.message);
        if (rc != 0) {
            io_logf(IO_LOG_WARN, n->name, "malformed message from %016" PRIx64 ": %s", from,
                    raft_strerror(rc));
            return;
        }
        if (ev.message.from != from || ev.message.to != n->id) {
            io_msg_release(&ev.message);
            return;
        }
        step_event(n, &ev);
        io_msg_release(&ev.message);
        break;
    }
    case IO_MSG_SNAP_CHUNK:
        on_snap_chunk(n, from, buf, len);
        break;
    case IO_MSG_SNAP_ACK:
        on_snap_ack(n, from, buf, len);
        break;
    case IO_MSG_JOIN:
        on_join(n, conn, buf, len);
        break;
    case IO_MSG_STATUS:
        on_status(n, conn);
        break;
    default:
        break;
    }
}

/* A peer closed a connection: if it is our leader, its process has most likely exited. The core
 * then campaigns within a few heartbeats instead of an election timeout (RAFT_EVENT_PEER_DOWN);
 * if the leader is in fact alive, the other voters still hear from it and refuse. */
static void on_closed(struct io_transport *t, uint64_t id)
{
    struct io_node *n = t->data;
    if (n->stopping || n->raft == NULL || raft_leader(n->raft) != id) {
        return;
    }
    io_logf(IO_LOG_INFO, n->name, "the leader %016" PRIx64 " closed its connection", id);
    struct raft_event ev = {.type = RAFT_EVENT_PEER_DOWN, .now_ms = io_now_ms()};
    ev.peer_down.id = id;
    step_event(n, &ev);
}

/* ---------------------------------------------------------------------------------------------
 * Starting. */

struct start_req {
    struct io_call call;
    struct io_node *node;
    int rc;
};

static int transport_open(struct io_node *n)
{
    struct io_transport_config tc = {
        .cluster_id = n->cluster_id,
        .self_id = n->id,
        .listen_addr = n->addr,
        .payload_max = (uint32_t)(n->cfg.entry_bytes_max + (16u << 20)),
        .seed = n->id ^ io_now_ms(),
        .on_message = on_message,
        .on_closed = on_closed,
        .data = n,
    };
    int rc = io_transport_init(&n->transport, io_loop_uv(n->loop), &tc);
    if (rc != 0) {
        return rc;
    }
    n->transport.data = n;
    n->transport_open = true;
    return 0;
}

static void start_on_loop(struct io_work *w)
{
    struct start_req *s = (struct start_req *)w;
    struct io_node *n = s->node;
    int rc = transport_open(n);
    if (rc != 0) {
        io_logf(IO_LOG_ERROR, n->name, "cannot listen on %s: %s", n->addr,
                io_transport_strerror(rc));
        io_call_done(&s->call, IO_NODE_ELISTEN);
        return;
    }
    sync_peers(n);
    uv_timer_init(io_loop_uv(n->loop), &n->tick);
    n->tick.data = n;
    n->tick_open = true;
    uint64_t period = n->cfg.heartbeat_ms / 4 > 5 ? n->cfg.heartbeat_ms / 4 : 5;
    uv_timer_start(&n->tick, on_tick, period, period);
    uv_timer_init(io_loop_uv(n->loop), &n->tell);
    n->tell.data = n;
    n->tell_open = true;
    publish(n);
    io_call_done(&s->call, 0);
}

struct load_ctx {
    struct raft_entry *e;
    size_t n, cap;
    uint64_t after; /* skip entries <= after */
};

static int load_cb(void *arg, const struct io_entry *e)
{
    struct load_ctx *l = arg;
    if (e->index <= l->after) {
        return 0;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        struct raft_entry *ne = realloc(l->e, cap * sizeof *ne);
        if (ne == NULL) {
            return -1;
        }
        l->e = ne;
        l->cap = cap;
    }
    struct raft_buf *b = NULL;
    if (e->len > 0) {
        b = raft_buf_copy(e->buf, e->len);
        if (b == NULL) {
            return -1;
        }
    }
    l->e[l->n++] = (struct raft_entry){e->term, e->index, e->type, b};
    return 0;
}

static void load_free(struct load_ctx *l)
{
    for (size_t i = 0; i < l->n; i++) {
        raft_buf_unref(l->e[i].buf);
    }
    free(l->e);
}

static void set_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t err_len, const char *fmt, ...)
{
    if (err != NULL && err_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
}

/* Joins through `join_addr` with an anonymous connection; fills n->cluster_id. */
static int join_cluster(struct io_node *n, const char *join_addr, uint8_t role, int64_t timeout_ms,
                        char *err, size_t err_len);

/* Removes the files of a node directory and the directory: after a bootstrap or join that
 * failed (a failed call leaves nothing behind) or the leftovers of one that crashed. */
/* Removes the files of a node directory, but `keep` (NULL: none). */
static void remove_files(const char *dir, const char *keep)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        return;
    }
    struct dirent *e;
    char path[4400];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
            (keep == NULL || strcmp(e->d_name, keep) != 0)) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    }
    closedir(d);
}

void io_node_wipe_dir(const char *dir)
{
    remove_files(dir, NULL);
    rmdir(dir);
}

static void node_free(struct io_node *n)
{
    pthread_mutex_destroy(&n->pub_mu);
    pthread_mutex_destroy(&n->disk_mu);
    pthread_mutex_destroy(&n->disk_io_mu);
    pthread_cond_destroy(&n->disk_cv);
    if (n->disk_uns != NULL) {
        unsynced_clear(n->disk_uns);
        free(n->disk_uns->e);
        free(n->disk_uns);
    }
    pthread_mutex_destroy(&n->apply_mu);
    pthread_cond_destroy(&n->apply_cv);
    pthread_cond_destroy(&n->applied_cv);
    if (n->lock_fd >= 0) {
        close(n->lock_fd);
    }
    free(n);
}

int io_node_start(const struct io_node_config *cfg, enum io_node_start_mode mode,
                  const char *join_addr, uint8_t role, int64_t join_timeout_ms,
                  struct io_node **out, char *err, size_t err_len)
{
    struct io_node *n = calloc(1, sizeof *n);
    struct load_ctx lc = {0};
    struct raft_config snap_cfg = {0};
    uint64_t snap_index = 0, snap_term = 0;
    int rc, created = 0;
    char info[256];

    if (n != NULL) {
        n->disk_uns = calloc(1, sizeof *n->disk_uns);
        if (n->disk_uns == NULL) {
            free(n);
            n = NULL;
        }
    }
    if (n == NULL) {
        return RAFT_ENOMEM;
    }
    n->lock_fd = -1;
    pthread_mutex_init(&n->pub_mu, NULL);
    pthread_mutex_init(&n->disk_mu, NULL);
    pthread_mutex_init(&n->disk_io_mu, NULL);
    io_cond_init_monotonic(&n->disk_cv); /* the lazy poll waits with monotonic deadlines */
    pthread_mutex_init(&n->apply_mu, NULL);
    io_cond_init_monotonic(&n->apply_cv);
    io_cond_init_monotonic(&n->applied_cv);
    n->cfg = *cfg;
    n->fsm = cfg->fsm;
    if (n->cfg.election_timeout_ms == 0) {
        n->cfg.election_timeout_ms = 1000;
    }
    if (n->cfg.heartbeat_ms == 0) {
        n->cfg.heartbeat_ms = 100;
    }
    if (n->cfg.entry_bytes_max == 0 || n->cfg.entry_bytes_max > IO_LOG_ENTRY_BYTES_MAX) {
        n->cfg.entry_bytes_max = IO_LOG_ENTRY_BYTES_MAX;
    }
    n->election_timeout_ms = n->cfg.election_timeout_ms;
    snprintf(n->dir, sizeof n->dir, "%s", cfg->dir);

    if (mkdir(n->dir, 0755) != 0 && errno != EEXIST) {
        set_err(err, err_len, "cannot create %s: %s", n->dir, strerror(errno));
        node_free(n);
        return IO_NODE_EIO;
    }
    /* One node per directory: a lock the kernel drops when the process dies. */
    char lock_path[4200];
    snprintf(lock_path, sizeof lock_path, "%s/lock", n->dir);
    n->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (n->lock_fd < 0 || flock(n->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        set_err(err, err_len, "%s: %s", n->dir,
                "another process runs a node on this directory");
        node_free(n);
        return IO_NODE_ELOCKED;
    }
    bool exists = io_node_exists(n->dir);
    if (mode == IO_NODE_RESTART && !exists) {
        set_err(err, err_len, "%s holds no cluster member", n->dir);
        node_free(n);
        return IO_NODE_ENOENT;
    }
    if (mode != IO_NODE_RESTART && exists) {
        set_err(err, err_len, "%s already holds a cluster member%s", n->dir,
                " (it restarts by itself)");
        node_free(n);
        return IO_NODE_EEXIST;
    }
    if (mode != IO_NODE_RESTART) {
        /* Not a member: whatever is there is left from a start that failed or crashed. Keep
         * only the lock we hold. */
        remove_files(n->dir, "lock");
    }
    if (mode == IO_NODE_RESTART) {
        ssize_t k = read_file(n->dir, "node-info", info, sizeof info - 1);
        info[k > 0 ? k : 0] = '\0';
        char *nl = strchr(info, '\n');
        if (nl == NULL) {
            set_err(err, err_len, "%s/node-info is malformed", n->dir);
            node_free(n);
            return IO_NODE_EIO;
        }
        *nl = '\0';
        char *addr_end = strchr(nl + 1, '\n');
        if (addr_end != NULL) {
            *addr_end = '\0';
        }
        if (strlen(info) >= RAFT_NAME_MAX || strlen(nl + 1) >= RAFT_ADDR_MAX) {
            set_err(err, err_len, "%s/node-info is malformed", n->dir);
            node_free(n);
            return IO_NODE_EIO;
        }
        memcpy(n->name, info, strlen(info) + 1);
        memcpy(n->addr, nl + 1, strlen(nl + 1) + 1);
    } else {
        if (cfg->name == NULL || cfg->name[0] == '\0' || strlen(cfg->name) >= RAFT_NAME_MAX ||
            cfg->listen_addr == NULL || strlen(cfg->listen_addr) >= RAFT_ADDR_MAX) {
            set_err(err, err_len, "a node needs a name (< %d bytes) and an address", RAFT_NAME_MAX);
            node_free(n);
            return RAFT_EBADARG;
        }
        snprintf(n->name, sizeof n->name, "%s", cfg->name);
        snprintf(n->addr, sizeof n->addr, "%s", cfg->listen_addr);
    }
    n->id = name_to_id(n->name);

    char meta_path[4200];
    snprintf(meta_path, sizeof meta_path, "%s/metadata", n->dir);
    rc = io_meta_open(&n->meta_file, meta_path, &n->meta, &created);
    if (rc != 0) {
        set_err(err, err_len, "%s", io_meta_errmsg(&n->meta_file));
        node_free(n);
        return IO_NODE_EIO;
    }
    int sr = snap_record_load(n->dir, &snap_index, &snap_term, &snap_cfg);
    if (sr < 0) {
        set_err(err, err_len, "%s/snapshot is corrupt", n->dir);
        rc = IO_NODE_EIO;
        goto err_after_meta;
    }
    lc.after = snap_index;
    /* Entries are stored as they come: the state machine's payloads are compressed already
     * where that pays (a frame set is lz4'd when it shrinks), and compressing them again cost
     * a third of a single-row commit's instructions. */
    struct io_log_config log_cfg = {.no_compress = 1, .preallocate = 1};
    rc = io_log_open(&n->log, n->dir, &log_cfg, load_cb, &lc);
    if (rc != 0) {
        set_err(err, err_len, "cannot open the log: %s", io_log_errmsg(&n->log));
        rc = IO_NODE_EIO;
        goto err_after_meta;
    }
    if (snap_index > 0 && io_log_last_index(&n->log) < snap_index) {
        /* An interrupted reset: repeat it. */
        if (io_log_reset(&n->log, snap_index, snap_term) != 0) {
            set_err(err, err_len, "cannot reset the log: %s", io_log_errmsg(&n->log));
            rc = IO_NODE_EIO;
            goto err_after_log;
        }
    }
    /* Entries must follow the snapshot without a gap. */
    if (lc.n > 0 && lc.e[0].index != snap_index + 1) {
        set_err(err, err_len, "the log of %s does not follow its snapshot record", n->dir);
        rc = IO_NODE_EIO;
        goto err_after_log;
    }
    /* A state machine older than the floor recorded for it: replay from its own index while the
     * log still holds the entries after it (io_fsm.state_index). */
    if (mode == IO_NODE_RESTART && n->fsm.state_index != NULL) {
        uint64_t held = n->fsm.state_index(n->fsm.ctx);
        if (held < n->meta.applied_floor) {
            if (held < snap_index) {
                set_err(err, err_len,
                        "the state machine holds the entries up to %" PRIu64 " only, but this "
                        "node recorded %" PRIu64 " as applied and durable, and its log now starts "
                        "after %" PRIu64 ": the entries in between are gone here. Remove %s and "
                        "add the node to the cluster again",
                        held, n->meta.applied_floor, snap_index, n->dir);
                rc = IO_NODE_EFSM;
                goto err_after_log;
            }
            io_logf(IO_LOG_WARN, n->name,
                    "the state machine holds the entries up to %" PRIu64 ", older than the "
                    "applied floor %" PRIu64 ": replaying the log from %" PRIu64,
                    held, n->meta.applied_floor, held + 1);
            n->meta.applied_floor = held; /* in memory: the next floor reported is stored */
        }
    }

    if (mode == IO_NODE_BOOTSTRAP) {
        uint64_t cid = 0;
        if (getrandom(&cid, sizeof cid, 0) != sizeof cid || cid == 0) {
            cid = io_now_ms() ^ n->id;
        }
        n->cluster_id = cid;
        struct raft_config c = {.n = 1};
        c.servers[0].id = n->id;
        c.servers[0].role = RAFT_VOTER;
        snprintf(c.servers[0].name, RAFT_NAME_MAX, "%s", n->name);
        snprintf(c.servers[0].addr, RAFT_ADDR_MAX, "%s", n->addr);
        struct raft_entry e;
        rc = raft_bootstrap_entry(&c, &e);
        if (rc == 0) {
            struct io_entry ie = {e.term, e.index, e.type, e.buf->base, e.buf->len};
            rc = io_log_append(&n->log, &ie, 1);
            if (rc == 0) {
                rc = io_log_sync(&n->log);
            }
            if (rc == 0) {
                lc.after = 0;
                rc = load_cb(&lc, &ie);
            }
            raft_buf_unref(e.buf);
        }
        if (rc != 0) {
            set_err(err, err_len, "cannot write the first log entry: %s", io_log_errmsg(&n->log));
            rc = IO_NODE_EIO;
            goto err_after_log;
        }
    }

    rc = loop_acquire(&n->loop);
    if (rc != 0) {
        set_err(err, err_len, "cannot start the runtime thread");
        rc = RAFT_ENOMEM;
        goto err_after_log;
    }
    if (mode == IO_NODE_JOIN) {
        rc = join_cluster(n, join_addr, role, join_timeout_ms, err, err_len);
        if (rc != 0) {
            goto err_after_loop;
        }
    }
    if (mode != IO_NODE_RESTART) {
        n->meta.node_id = n->id;
        n->meta.cluster_id = n->cluster_id;
        if (mode == IO_NODE_BOOTSTRAP) {
            n->meta.term = 1; /* the term of the bootstrap entry */
        }
        if (io_meta_store(&n->meta_file, &n->meta) != 0) {
            set_err(err, err_len, "%s", io_meta_errmsg(&n->meta_file));
            rc = IO_NODE_EIO;
            goto err_after_loop;
        }
        int k = snprintf(info, sizeof info, "%s\n%s\n", n->name, n->addr);
        if (write_file_atomic(n->dir, "node-info", info, (size_t)k) != 0) {
            set_err(err, err_len, "cannot write %s/node-info: %s", n->dir, strerror(errno));
            rc = IO_NODE_EIO;
            goto err_after_loop;
        }
    }
    n->cluster_id = n->meta.cluster_id;

    /* The core. */
    struct raft_options o;
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, 0) != sizeof seed) {
        seed = io_now_ms() ^ n->id;
    }
    raft_options_init(&o, n->id, seed);
    o.election_timeout_ms = n->cfg.election_timeout_ms;
    o.heartbeat_ms = n->cfg.heartbeat_ms;
    o.entry_bytes_max = n->cfg.entry_bytes_max;
    if (n->cfg.trailing_entries != 0) {
        o.trailing_entries = n->cfg.trailing_entries;
    }
    if (n->cfg.trailing_bytes != 0) {
        o.trailing_bytes_max = n->cfg.trailing_bytes;
    }
    struct raft_initial_state init = {
        .term = n->meta.term,
        .vote = n->meta.voted_for,
        .snapshot_index = snap_index,
        .snapshot_term = snap_term,
        .snapshot_config = snap_cfg,
        .entries = lc.e,
        .n_entries = (uint32_t)lc.n,
        .commit_index = n->meta.applied_floor,
        .now_ms = io_now_ms(),
    };
    if (init.commit_index > snap_index + lc.n) {
        init.commit_index = snap_index + lc.n;
    }
    rc = raft_create(&o, &init, &n->raft);
    if (rc != 0) {
        set_err(err, err_len, "cannot create the Raft state: %s", raft_strerror(rc));
        goto err_after_loop;
    }
    n->committed_config = snap_cfg;
    n->committed_config_index = snap_index;
    n->applied = init.commit_index;
    load_free(&lc);
    lc = (struct load_ctx){0};

    if (pthread_create(&n->disk_thread, NULL, disk_main, n) != 0) {
        rc = RAFT_ENOMEM;
        goto err_after_raft;
    }
    if (pthread_create(&n->apply_thread, NULL, apply_main, n) != 0) {
        rc = RAFT_ENOMEM;
        goto err_after_disk;
    }
    struct start_req sreq = {.node = n};
    io_call_init(&sreq.call, start_on_loop, NULL);
    rc = io_call_wait(n->loop, &sreq.call, -1);
    io_call_fini(&sreq.call);
    if (rc != 0) {
        set_err(err, err_len, "cannot listen on %s", n->addr);
        goto err_after_apply;
    }
    io_logf(IO_LOG_INFO, n->name, "node started at %s (dir %s)", n->addr, n->dir);
    *out = n;
    return 0;

err_after_apply:
    pthread_mutex_lock(&n->apply_mu);
    n->apply_stop = true;
    pthread_cond_signal(&n->apply_cv);
    pthread_mutex_unlock(&n->apply_mu);
    pthread_join(n->apply_thread, NULL);
err_after_disk:
    pthread_mutex_lock(&n->disk_mu);
    n->disk_stop = true;
    pthread_mutex_unlock(&n->disk_mu);
    disk_wake(n);
    pthread_join(n->disk_thread, NULL);
err_after_raft:
    raft_destroy(n->raft);
err_after_loop:
    loop_release();
err_after_log:
    io_log_close(&n->log);
err_after_meta:
    io_meta_close(&n->meta_file);
    load_free(&lc);
    if (mode != IO_NODE_RESTART) {
        io_node_wipe_dir(n->dir); /* a failed bootstrap or join leaves nothing behind */
    }
    node_free(n);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Requests from outside a cluster (joining, `walraft status`): an anonymous transport on the loop
 * sends one message to an address, resends it every `resend_ms` (0: never) until a reply settles
 * it or the deadline passes, then closes its handles and completes the waiting call. */

struct outsider {
    struct io_call call;
    struct io_loop *loop;
    struct io_transport t;
    bool t_open;
    uv_timer_t timer;
    bool timer_open;
    char target[RAFT_ADDR_MAX];
    uint16_t type;
    const uint8_t *payload;
    size_t payload_len;
    uint64_t resend_ms;
    uint64_t deadline_ms;
    /* Handles a reply; returns true when the request is settled (result set). */
    bool (*on_reply)(struct outsider *o, uint16_t type, const uint8_t *buf, size_t len);
    void *ctx;
    int result;
    char last_error[128];
    unsigned closing;
    bool finished;
};

static void outsider_closed(struct outsider *o)
{
    if (o->closing == 0 && o->finished) {
        io_call_done(&o->call, o->result);
    }
}

static void outsider_t_closed(struct io_transport *t)
{
    struct outsider *o = t->data;
    o->closing--;
    outsider_closed(o);
}

static void outsider_timer_closed(uv_handle_t *h)
{
    struct outsider *o = h->data;
    o->closing--;
    outsider_closed(o);
}

static void outsider_finish(struct outsider *o, int result)
{
    if (o->finished) {
        return;
    }
    o->finished = true;
    o->result = result;
    if (o->timer_open) {
        o->closing++;
        uv_close((uv_handle_t *)&o->timer, outsider_timer_closed);
    }
    if (o->t_open) {
        o->closing++;
        io_transport_close(&o->t, outsider_t_closed);
    }
    outsider_closed(o);
}

static void outsider_send(struct outsider *o)
{
    int rc = io_transport_send(&o->t, 0, o->target, o->type, IO_TRANSPORT_CONTROL, o->payload,
                               o->payload_len);
    if (rc != 0) {
        snprintf(o->last_error, sizeof o->last_error, "%s", io_transport_strerror(rc));
        if (rc == IO_TRANSPORT_EADDR) {
            outsider_finish(o, RAFT_EBADARG);
        }
    }
}

static void outsider_on_message(struct io_transport *t, uint64_t from, uint16_t type,
                                 const void *buf, size_t len, uint64_t conn)
{
    struct outsider *o = t->data;
    (void)from;
    (void)conn;
    if (!o->finished && o->on_reply(o, type, buf, len)) {
        outsider_finish(o, o->result);
    }
}

static void outsider_tick(uv_timer_t *timer)
{
    struct outsider *o = timer->data;
    if (io_now_ms() >= o->deadline_ms) {
        outsider_finish(o, RAFT_ETIMEOUT);
        return;
    }
    if (o->resend_ms > 0) {
        outsider_send(o); /* a repeat is harmless: the receiver answers it again */
    }
}

static void outsider_start(struct io_work *w)
{
    struct outsider *o = (struct outsider *)w;
    struct io_transport_config tc = {.cluster_id = 0, .self_id = 0,
                                     .on_message = outsider_on_message, .seed = io_now_ms(),
                                     .data = o};
    int rc = io_transport_init(&o->t, io_loop_uv(o->loop), &tc);
    if (rc != 0) {
        snprintf(o->last_error, sizeof o->last_error, "%s", io_transport_strerror(rc));
        outsider_finish(o, RAFT_ENOMEM);
        return;
    }
    o->t.data = o;
    o->t_open = true;
    uv_timer_init(io_loop_uv(o->loop), &o->timer);
    o->timer.data = o;
    o->timer_open = true;
    uint64_t period = o->resend_ms > 0 ? o->resend_ms : o->deadline_ms - io_now_ms();
    uv_timer_start(&o->timer, outsider_tick, period, period);
    outsider_send(o);
}

/* Runs the request to completion from an application thread; returns its result. */
static int outsider_run(struct outsider *o, struct io_loop *l, int64_t timeout_ms)
{
    io_call_init(&o->call, outsider_start, NULL);
    o->loop = l;
    o->deadline_ms = io_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 5000);
    int rc = io_call_wait(l, &o->call, -1);
    io_call_fini(&o->call);
    return rc;
}

/* Joining: JOIN_RESULT either settles the join or names the leader to ask instead. */
static bool join_on_reply(struct outsider *o, uint16_t type, const uint8_t *p, size_t len)
{
    struct io_node *n = o->ctx;
    if (type != IO_MSG_JOIN_RESULT || len < 13) {
        return false;
    }
    int status = (int)io_get32(p);
    uint64_t cid = io_get64(p + 4);
    size_t alen = p[12];
    if (13 + alen > len || alen >= RAFT_ADDR_MAX) {
        return false;
    }
    if (status == 0) {
        n->cluster_id = cid;
        if (raft_config_decode(p + 13 + alen, len - 13 - alen, &n->known) != 0) {
            memset(&n->known, 0, sizeof n->known);
        }
        o->result = 0;
        return true;
    }
    if (status == RAFT_ENOTLEADER && alen > 0) {
        memcpy(o->target, p + 13, alen);
        o->target[alen] = '\0';
        outsider_send(o);
        return false;
    }
    snprintf(o->last_error, sizeof o->last_error, "%s", io_node_strerror(status));
    if (status == RAFT_ENOTLEADER || status == RAFT_ECHANGE || status == RAFT_EBUSY) {
        return false; /* no leader yet, or another change first: ask again */
    }
    o->result = IO_NODE_EJOIN;
    return true;
}

static int join_cluster(struct io_node *n, const char *join_addr, uint8_t role, int64_t timeout_ms,
                        char *err, size_t err_len)
{
    uint8_t payload[3 + RAFT_NAME_MAX + RAFT_ADDR_MAX];
    if (join_addr == NULL || strlen(join_addr) >= RAFT_ADDR_MAX) {
        set_err(err, err_len, "raft_join needs the address of a cluster member");
        return RAFT_EBADARG;
    }
    struct outsider *o = calloc(1, sizeof *o);
    if (o == NULL) {
        return RAFT_ENOMEM;
    }
    size_t nl = strlen(n->name), al = strlen(n->addr);
    payload[0] = role;
    payload[1] = (uint8_t)nl;
    memcpy(payload + 2, n->name, nl);
    payload[2 + nl] = (uint8_t)al;
    memcpy(payload + 3 + nl, n->addr, al);
    snprintf(o->target, sizeof o->target, "%s", join_addr);
    o->type = IO_MSG_JOIN;
    o->payload = payload;
    o->payload_len = 3 + nl + al;
    o->resend_ms = 1000;
    o->on_reply = join_on_reply;
    o->ctx = n;
    int rc = outsider_run(o, n->loop, timeout_ms > 0 ? timeout_ms : 30000);
    if (rc != 0) {
        set_err(err, err_len, "could not join the cluster through %s: %s", join_addr,
                o->last_error[0] ? o->last_error
                                 : (rc == RAFT_ETIMEOUT ? "no answer (timed out)" : "refused"));
        rc = rc == RAFT_EBADARG ? RAFT_EBADARG : IO_NODE_EJOIN;
    }
    free(o);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Stopping. */

static void stop_check(struct io_node *n)
{
    if (n->closing_handles == 0 && n->snap_works == 0 && n->stop_call != NULL) {
        struct pending *p = n->stop_call;
        n->stop_call = NULL;
        io_call_done(&p->call, 0);
    }
}

static void tick_closed(uv_handle_t *h)
{
    struct io_node *n = h->data;
    n->closing_handles--;
    stop_check(n);
}

static void transport_closed(struct io_transport *t)
{
    struct io_node *n = t->data;
    n->closing_handles--;
    stop_check(n);
}

static int stop_on_loop(struct pending *p)
{
    struct io_node *n = p->node;
    n->stopping = true;
    while (n->pending != NULL) {
        pending_finish(n, n->pending, RAFT_ESHUTDOWN);
    }
    for (struct snap_send *s = n->sends, *next; s != NULL; s = next) {
        next = s->next;
        if (!s->work_busy) {
            snap_send_free(n, s);
        } else {
            s->failed = true; /* freed by snap_work_after */
        }
    }
    n->stop_call = p;
    if (n->tick_open) {
        n->closing_handles++;
        uv_close((uv_handle_t *)&n->tick, tick_closed);
    }
    if (n->tell_open) {
        n->tell_open = false;
        n->closing_handles++;
        uv_close((uv_handle_t *)&n->tell, tick_closed);
    }
    if (n->transport_open) {
        n->closing_handles++;
        io_transport_close(&n->transport, transport_closed);
    }
    stop_check(n);
    return 0;
}

/* Waits until everything posted to the loop so far has run (the queue is FIFO). */
static void loop_barrier(struct io_node *n)
{
    struct pending *p = pending_new(n, P_CONFIG, NULL);
    if (p == NULL) {
        abort();
    }
    pending_wait(n, p, -1);
    pending_release(p);
}

void io_node_stop(struct io_node *n)
{
    struct pending *p = pending_new(n, P_CONFIG, stop_on_loop);
    if (p == NULL) {
        abort();
    }
    pending_wait(n, p, -1);
    pending_release(p);
    /* The node is stopping: a proposer still in propose_direct finds its request completed. */
    while (atomic_load(&n->direct_users) > 0) {
        usleep(1000);
    }

    pthread_mutex_lock(&n->disk_mu);
    n->disk_stop = true;
    pthread_mutex_unlock(&n->disk_mu);
    disk_wake(n);
    pthread_join(n->disk_thread, NULL);

    pthread_mutex_lock(&n->apply_mu);
    n->apply_stop = true;
    pthread_cond_signal(&n->apply_cv);
    pthread_cond_broadcast(&n->applied_cv);
    pthread_mutex_unlock(&n->apply_mu);
    pthread_join(n->apply_thread, NULL);

    /* The disk and apply threads may have posted work before they stopped; the loop drops it
     * (n->stopping) but must have run it before the node is freed. */
    loop_barrier(n);

    io_log_sync(&n->log);
    io_log_close(&n->log);
    io_meta_close(&n->meta_file);
    raft_destroy(n->raft);
    loop_release();
    io_logf(IO_LOG_INFO, n->name, "node stopped");
    node_free(n);
}

/* ---------------------------------------------------------------------------------------------
 * Calls from application threads. */

static int propose_on_loop(struct pending *p)
{
    struct io_node *n = p->node;
    struct raft_update u;
    if (atomic_load(&n->disk_failed)) {
        return IO_NODE_EDISKFULL;
    }
    p->started_ms = io_now_ms();
    int rc = raft_propose(n->raft, p->started_ms, RAFT_NORMAL, p->buf, p->cookie, &u);
    if (rc != 0) {
        return rc;
    }
    n->proposals++;
    pending_queue(n, p);
    handle(n, &u);
    return 0;
}

/* A leader alone in its configuration commits an entry the moment it is durable. Its proposer
 * then does the whole commit on its own thread — steps the core under io_loop_enter, writes and
 * syncs the log under disk_io_mu (not under the loop's lock: a slow disk must not hold up the
 * loop, which other nodes of the process share), steps the core again — instead of two hand-offs
 * to the loop and two to the disk thread, each a thread wake-up (about 20 us on a 2-vCPU VM, most
 * of such a commit's latency besides the fdatasync). Returns PENDING_DONE if the loop path must
 * be taken (nothing done), else the waiting result as pending_wait does. */
static int propose_direct_run(struct io_node *n, struct pending *p, int64_t timeout_ms)
{
    io_loop_enter(n->loop);
    const struct raft_config *c = raft_configuration(n->raft);
    if (n->stopping || raft_state(n->raft) != RAFT_LEADER || atomic_load(&n->disk_failed)) {
        io_loop_leave(n->loop);
        return PENDING_DONE;
    }
    p->cookie = ++n->next_cookie;
    if (c->n != 1) {
        /* With peers the commit needs their acknowledgements, which the loop receives; but the
         * proposal and its AppendEntries still leave from here, a hand-off earlier. */
        int rc = propose_on_loop(p);
        if (rc != 0) {
            io_loop_leave_and_wake(n->loop);
            return rc;
        }
        /* The acknowledgement that commits the entry then wakes this thread, not the loop's. */
        rc = io_call_await_running(n->loop, &p->call, timeout_ms);
        return rc == -ETIMEDOUT ? PENDING_ABANDONED : rc;
    }
    n->direct = true;
    int rc = propose_on_loop(p);
    n->direct = false;
    io_loop_leave(n->loop);
    if (rc != 0) {
        return rc;
    }
    /* Our append is queued (quietly); run the queue unless the disk thread took it. */
    pthread_mutex_lock(&n->disk_io_mu);
    pthread_mutex_lock(&n->disk_mu);
    struct disk_op *ops = n->disk_head;
    n->disk_head = n->disk_tail = NULL;
    pthread_mutex_unlock(&n->disk_mu);
    bool synced = ops != NULL && disk_run(n, ops, false);
    uint64_t index = io_log_last_index(&n->log), term = io_log_last_term(&n->log);
    pthread_mutex_unlock(&n->disk_io_mu);
    if (synced) {
        io_loop_enter(n->loop);
        step_persisted(n, index, term);
        io_loop_leave(n->loop);
    }
    rc = io_call_await(&p->call, timeout_ms);
    if (rc == -ETIMEDOUT) {
        return PENDING_ABANDONED;
    }
    return rc;
}

static int propose_direct(struct io_node *n, struct pending *p, int64_t timeout_ms)
{
    atomic_fetch_add(&n->direct_users, 1);
    int rc = propose_direct_run(n, p, timeout_ms);
    atomic_fetch_sub(&n->direct_users, 1);
    return rc;
}

int io_node_propose(struct io_node *n, const void *buf, size_t len, int64_t timeout_ms,
                    uint64_t *index)
{
    struct pending *p = pending_new(n, P_PROPOSE, propose_on_loop);
    if (p == NULL) {
        return RAFT_ENOMEM;
    }
    p->buf = raft_buf_copy(buf, len);
    if (p->buf == NULL) {
        pending_release(p);
        return RAFT_ENOMEM;
    }
    int rc = propose_direct(n, p, timeout_ms);
    if (rc == PENDING_DONE) {
        rc = pending_wait(n, p, timeout_ms);
    }
    if (rc == PENDING_ABANDONED) {
        return RAFT_EUNKNOWN; /* it may still commit */
    }
    if (rc == 0 && index != NULL) {
        *index = p->index;
    }
    if (rc == RAFT_ESHUTDOWN && p->appended) {
        rc = RAFT_EUNKNOWN;
    }
    pending_release(p);
    return rc;
}

int io_node_wait_applied(struct io_node *n, uint64_t index, int64_t timeout_ms)
{
    struct timespec deadline = io_deadline_ms(timeout_ms > 0 ? timeout_ms : 0);
    int rc = 0;
    pthread_mutex_lock(&n->apply_mu);
    if (n->applied < index && n->apply_head != NULL && !n->apply_urgent) {
        n->apply_urgent = true; /* lazy entries (io_fsm.proposer_applies): take them now */
        pthread_cond_signal(&n->apply_cv);
    }
    while (n->applied < index && !n->apply_stop) {
        if (pthread_cond_timedwait(&n->applied_cv, &n->apply_mu, &deadline) == ETIMEDOUT) {
            rc = n->applied >= index ? 0 : RAFT_ETIMEOUT;
            break;
        }
    }
    if (rc == 0 && n->applied < index) {
        rc = RAFT_ESHUTDOWN;
    }
    pthread_mutex_unlock(&n->apply_mu);
    return rc;
}

static int read_on_loop(struct pending *p)
{
    struct io_node *n = p->node;
    struct raft_update u;
    int rc = raft_read_index(n->raft, io_now_ms(), p->cookie, &u);
    if (rc != 0) {
        return rc;
    }
    pending_queue(n, p);
    handle(n, &u);
    return 0;
}

/* One ReadIndex round; *read_index receives the index to wait for. */
static int read_index_once(struct io_node *n, int64_t timeout_ms, uint64_t *read_index)
{
    struct pending *p = pending_new(n, P_READ, read_on_loop);
    if (p == NULL) {
        return RAFT_ENOMEM;
    }
    int rc = pending_wait(n, p, timeout_ms);
    if (rc == PENDING_ABANDONED) {
        return RAFT_ETIMEOUT;
    }
    *read_index = p->index;
    pending_release(p);
    return rc;
}

int io_node_barrier(struct io_node *n, int64_t timeout_ms, uint64_t *index)
{
    uint64_t start = io_now_ms();
    uint64_t read_index = 0;
    int rc;
    /* Without a known leader (an election, a node that just joined), or when the request
     * forwarded to the leader went unanswered for an election timeout (lost with a connection,
     * or sent to a leader this node is only now connecting to), retry until the caller's
     * timeout: it asked for "everything committed before now", not for one attempt. */
    for (;;) {
        int64_t left = timeout_ms - (int64_t)(io_now_ms() - start);
        rc = read_index_once(n, left > 0 ? left : 0, &read_index);
        if ((rc != RAFT_ENOTLEADER && rc != RAFT_ELEADERSHIPLOST && rc != RAFT_ETIMEOUT) ||
            (int64_t)(io_now_ms() - start) + 20 >= timeout_ms) {
            break;
        }
        usleep(20 * 1000);
    }
    if (rc != 0) {
        return rc;
    }
    int64_t left = timeout_ms - (int64_t)(io_now_ms() - start);
    rc = io_node_wait_applied(n, read_index, left > 0 ? left : 0);
    if (rc == 0 && index != NULL) {
        *index = read_index;
    }
    return rc;
}

static int config_on_loop(struct pending *p)
{
    struct io_node *n = p->node;
    struct raft_update u;
    uint64_t now = io_now_ms();
    int rc;
    switch (p->op) {
    case 'a':
        rc = raft_add(n->raft, now, &p->server, p->cookie, &u);
        break;
    case 'r':
        rc = raft_remove(n->raft, now, p->target, p->cookie, &u);
        break;
    case 'p':
        rc = raft_promote(n->raft, now, p->target, p->cookie, &u);
        break;
    case 'd':
        rc = raft_demote(n->raft, now, p->target, p->cookie, &u);
        break;
    default:
        rc = raft_recover(n->raft, now, &p->recover_config, &u);
        if (rc == 0) {
            handle(n, &u);
            return PENDING_DONE; /* in effect once appended */
        }
        return rc;
    }
    if (rc != 0) {
        return rc;
    }
    pending_queue(n, p);
    handle(n, &u);
    return 0;
}

static int config_call(struct io_node *n, int op, const char *name, const char *addr, uint8_t role,
                       int64_t timeout_ms)
{
    if (name == NULL || name[0] == '\0' || strlen(name) >= RAFT_NAME_MAX) {
        return RAFT_EBADARG;
    }
    if (op == 'a' && (addr == NULL || addr[0] == '\0' || strlen(addr) >= RAFT_ADDR_MAX)) {
        return RAFT_EBADARG;
    }
    struct pending *p = pending_new(n, P_CONFIG, config_on_loop);
    if (p == NULL) {
        return RAFT_ENOMEM;
    }
    p->op = op;
    p->target = name_to_id(name);
    if (op == 'a') {
        p->server.id = p->target;
        p->server.role = role;
        snprintf(p->server.name, sizeof p->server.name, "%s", name);
        snprintf(p->server.addr, sizeof p->server.addr, "%s", addr);
    }
    int rc = pending_wait(n, p, timeout_ms);
    if (rc == PENDING_ABANDONED) {
        return RAFT_ETIMEOUT;
    }
    pending_release(p);
    return rc;
}

int io_node_add(struct io_node *n, const char *name, const char *addr, uint8_t role,
                int64_t timeout_ms)
{
    if (role != RAFT_VOTER && role != RAFT_REPLICA) {
        return RAFT_EBADARG;
    }
    return config_call(n, 'a', name, addr, role, timeout_ms);
}

int io_node_remove(struct io_node *n, const char *name, int64_t timeout_ms)
{
    return config_call(n, 'r', name, NULL, 0, timeout_ms);
}

int io_node_promote(struct io_node *n, const char *name, int64_t timeout_ms)
{
    return config_call(n, 'p', name, NULL, 0, timeout_ms);
}

int io_node_demote(struct io_node *n, const char *name, int64_t timeout_ms)
{
    return config_call(n, 'd', name, NULL, 0, timeout_ms);
}

int io_node_recover(struct io_node *n, const struct raft_config *c)
{
    struct pending *p = pending_new(n, P_CONFIG, config_on_loop);
    if (p == NULL) {
        return RAFT_ENOMEM;
    }
    p->op = 'R';
    p->recover_config = *c;
    int rc = pending_wait(n, p, -1);
    pending_release(p);
    return rc;
}

static int transfer_on_loop(struct pending *p)
{
    struct io_node *n = p->node;
    struct raft_update u;
    uint64_t now = io_now_ms();
    int rc = raft_transfer(n->raft, now, p->target, &u);
    if (rc != 0) {
        return rc;
    }
    p->deadline_ms = now + 2 * (uint64_t)n->election_timeout_ms;
    pending_queue(n, p);
    handle(n, &u);
    return 0;
}

int io_node_transfer(struct io_node *n, const char *name, int64_t timeout_ms)
{
    struct pending *p = pending_new(n, P_TRANSFER, transfer_on_loop);
    if (p == NULL) {
        return RAFT_ENOMEM;
    }
    if (name != NULL) {
        if (name[0] == '\0' || strlen(name) >= RAFT_NAME_MAX) {
            pending_release(p);
            return RAFT_EBADARG;
        }
        p->target = name_to_id(name);
    }
    int rc = pending_wait(n, p, timeout_ms);
    if (rc == PENDING_ABANDONED) {
        return RAFT_ETIMEOUT;
    }
    pending_release(p);
    return rc;
}

struct floor_work {
    struct io_work work;
    struct io_node *node;
    uint64_t index;
};

static void floor_on_loop(struct io_work *w)
{
    struct floor_work *f = (struct floor_work *)w;
    struct io_node *n = f->node;
    if (!n->stopping && f->index > n->meta.applied_floor) {
        n->meta.applied_floor = f->index;
        if (io_meta_store(&n->meta_file, &n->meta) == 0) {
            struct raft_event ev = {.type = RAFT_EVENT_APPLIED_FLOOR, .now_ms = io_now_ms()};
            ev.applied_floor.index = f->index;
            step_event(n, &ev);
        }
    }
    free(f);
}

void io_node_set_applied_floor(struct io_node *n, uint64_t index)
{
    struct floor_work *f = malloc(sizeof *f);
    if (f == NULL) {
        return;
    }
    f->work.fn = floor_on_loop;
    f->node = n;
    f->index = index;
    if (io_loop_post(n->loop, &f->work) != 0) {
        free(f);
    }
}

int io_node_write_gate(struct io_node *n, uint64_t applied_hint)
{
    if (atomic_load(&n->disk_failed)) {
        return IO_NODE_EDISKFULL;
    }
    pthread_mutex_lock(&n->pub_mu);
    uint8_t state = n->pub.state;
    bool committed = n->pub.term_committed;
    uint64_t last = n->pub.last_index;
    uint64_t transfer = n->pub.transfer;
    pthread_mutex_unlock(&n->pub_mu);
    if (state != RAFT_LEADER) {
        return RAFT_ENOTLEADER;
    }
    if (transfer != 0) {
        return RAFT_ETRANSFER;
    }
    uint64_t applied = applied_index(n);
    if (applied_hint > applied) {
        applied = applied_hint;
    }
    if (!committed || applied < last) {
        return RAFT_EBUSY;
    }
    return 0;
}

void io_node_leader(struct io_node *n, char name[RAFT_NAME_MAX], char addr[RAFT_ADDR_MAX])
{
    pthread_mutex_lock(&n->pub_mu);
    memcpy(name, n->pub.leader_name, RAFT_NAME_MAX);
    memcpy(addr, n->pub.leader_addr, RAFT_ADDR_MAX);
    pthread_mutex_unlock(&n->pub_mu);
}

static int status_on_loop(struct pending *p)
{
    fill_status(p->node, p->status);
    return PENDING_DONE;
}

int io_node_status(struct io_node *n, struct io_node_status *st)
{
    struct pending *p = pending_new(n, P_CONFIG, status_on_loop);
    if (p == NULL) {
        return RAFT_ENOMEM;
    }
    p->status = malloc(sizeof *p->status);
    if (p->status == NULL) {
        pending_release(p);
        return RAFT_ENOMEM;
    }
    int rc = pending_wait(n, p, 10000);
    if (rc == PENDING_ABANDONED) {
        return RAFT_ETIMEOUT;
    }
    if (rc == 0) {
        *st = *p->status;
    }
    pending_release(p);
    return rc;
}

struct part_work {
    struct io_work work;
    struct io_node *node;
    uint64_t peer;
    bool in, out;
};

static void part_on_loop(struct io_work *w)
{
    struct part_work *pw = (struct part_work *)w;
    pw->node->part_peer = pw->peer;
    pw->node->part_in = pw->in;
    pw->node->part_out = pw->out;
    free(pw);
}

void io_node_set_partition(struct io_node *n, const char *peer, bool drop_in, bool drop_out)
{
    struct part_work *pw = malloc(sizeof *pw);
    if (pw == NULL) {
        return;
    }
    pw->work.fn = part_on_loop;
    pw->node = n;
    pw->peer = peer != NULL ? name_to_id(peer) : 0;
    pw->in = drop_in;
    pw->out = drop_out;
    if (io_loop_post(n->loop, &pw->work) != 0) {
        free(pw);
    }
}

/* Status of a node at an address: STATUS_RESULT carries its JSON. */
static bool status_on_reply(struct outsider *o, uint16_t type, const uint8_t *buf, size_t len)
{
    char **json = o->ctx;
    if (type != IO_MSG_STATUS_RESULT) {
        return false;
    }
    *json = malloc(len + 1);
    if (*json == NULL) {
        o->result = RAFT_ENOMEM;
        return true;
    }
    memcpy(*json, buf, len);
    (*json)[len] = '\0';
    o->result = 0;
    return true;
}

int io_node_remote_status(const char *addr, int64_t timeout_ms, char **json, char *err,
                          size_t err_len)
{
    struct io_loop *l;
    if (addr == NULL || strlen(addr) >= RAFT_ADDR_MAX) {
        set_err(err, err_len, "bad address");
        return RAFT_EBADARG;
    }
    struct outsider *o = calloc(1, sizeof *o);
    if (o == NULL) {
        return RAFT_ENOMEM;
    }
    if (loop_acquire(&l) != 0) {
        free(o);
        return RAFT_ENOMEM;
    }
    *json = NULL;
    snprintf(o->target, sizeof o->target, "%s", addr);
    o->type = IO_MSG_STATUS;
    o->payload = (const uint8_t *)"";
    o->on_reply = status_on_reply;
    o->ctx = json;
    int rc = outsider_run(o, l, timeout_ms);
    if (rc != 0) {
        free(*json);
        *json = NULL;
        set_err(err, err_len, "no status from %s: %s", addr,
                rc == RAFT_EBADARG ? "bad address" : "no answer (timed out)");
    }
    free(o);
    loop_release();
    return rc;
}
