/*
 * vfs/ internals shared by vfs.c (the shim: lock interception and leader capture), node.c (the
 * node's side: attach, apply, checkpoint) and frameset.c (the payload codec adapter).
 *
 * Every field of struct vfs_shared and struct vfs_db is guarded by vfs_mu unless noted. The
 * capture state (struct capture) belongs to the thread of the connection holding the virtual
 * WRITE lock; the WAL writes of the apply path belong to the node while node_active is set.
 */
#ifndef WALRAFT_VFS_INTERNAL_H
#define WALRAFT_VFS_INTERNAL_H

#include "vfs/sqlite_api.h"
#include "vfs/vfs.h"
#include "wal/frameset.h"
#include "wal/wal.h"

#include <pthread.h>
#include <stdint.h>

enum { FILE_OTHER = 0, FILE_MAIN, FILE_WAL };

struct vfs_shared;

/* A local writer in the queue for the virtual WRITE lock. Between its tries the connection holds
 * no read mark: SQLite ends the read transaction before calling the busy handler, whose sleep
 * (vfs_sleep) waits for the turn. */
struct waiter {
    struct vfs_file *f;
    struct waiter *next;
    pthread_t thread;        /* the thread that asked last: its busy-handler sleep waits here */
    uint64_t alive_until_ms; /* dropped from the queue if its connection has not asked again by
                              * then (it gave up); UINT64_MAX while it asks or waits */
    int sleep_armed;         /* told SQLITE_BUSY: the thread's next sleep is the busy handler's */
    pthread_cond_t cond;     /* its thread waits here for the turn (vfs_wake signals the head) */
    int cond_ready;
};

struct vfs_file {
    sqlite3_file base;     /* our methods */
    sqlite3_file *real;    /* the underlying file, allocated right after this struct */
    struct vfs_shared *sh; /* main db and WAL files: the path's shared state (a reference) */
    int kind;              /* FILE_* */
    int is_node;           /* main db file of the node's own connection (checkpoints) */
    int vwrite;            /* holds the virtual WRITE lock */
    void **busy;           /* SQLITE_FCNTL_BUSYHANDLER: {int (*)(void *), void *}, or NULL */
    struct waiter qw;      /* its place in the writers' queue, while queued */
    int queued;
    uint64_t released_us; /* when it last released the lock after a commit (0: asked since) */
    int slow_return;      /* it took longer than OFFER_US to ask again, last time (vfs.c) */
};

/* What the leader's writer has written in its current transaction. */
enum { CAP_OPEN = 0, CAP_HELD, CAP_COMMITTED, CAP_FAILED };
struct capture {
    int state;
    uint32_t page_size; /* from the WAL header; 0 until known */
    uint32_t first;     /* lowest frame written in this transaction (0: none yet) */
    uint32_t last;      /* highest frame written */
    uint32_t *pgno;     /* pgno[frame - first], 0 when that frame's header was not seen */
    uint32_t cap;       /* entries allocated in pgno */
    uint8_t held_hdr[WAL_FRAME_HDR_SIZE]; /* the commit frame's header, held back */
    uint32_t held_frame;
    uint64_t index; /* log index of the committed entry (CAP_COMMITTED) */
};

/* Per database path in this process. */
struct vfs_shared {
    char *path;
    int refs; /* open wrappers + an attachment */
    struct vfs_shared *next;
    pthread_cond_t cond; /* any change of the lock state below */
    struct vfs_db *node; /* attached node, or NULL (pass-through) */
    /* The virtual WRITE lock. */
    struct vfs_file *holder;   /* user connection holding it, or NULL */
    int holder_doomed;         /* holder's transaction is doomed (step down) */
    int node_active;           /* the node is applying or checkpointing */
    int node_waiting;          /* node threads waiting: they go before user writers */
    int ckpt_active;           /* the node checkpoints, to restart the log: new readers wait */
    int ckpt_busy;             /* the node copies the log beside local connections (node.c) */
    struct waiter *queue_head; /* user writers waiting, FIFO */
    struct waiter *queue_tail;
    struct vfs_file *reserved; /* a writer sent back for a fresh snapshot gets the lock next */
    uint64_t reserved_until_ms;
    uint64_t head_since_us; /* when the queue's head became head (vfs.c) */
    struct vfs_file *offered;  /* the writer that just committed may take the lock again first */
    uint64_t offered_until_us; /* ... until then (vfs.c, vwrite_release) */
    uint64_t commits; /* bumped whenever a transaction becomes visible */
    int index_stale;  /* hash entries above mxFrame may be left over */
    struct capture cap;
};

struct gen_entry {
    uint32_t end_frame; /* mxFrame after the entry */
    uint64_t index;
};

struct vfs_db {
    struct vfs_shared *sh;
    struct vfs_node_ops ops;
    uint64_t max_txn_bytes;
    uint32_t checkpoint_frames;
    int gate_calls;     /* write_gate()/propose() calls in progress */
    sqlite3_file *dbf;  /* node's handle on the database: the real locks, the shm */
    sqlite3_file *walf; /* node's handle on the WAL: the apply path's writes */
    char *name_db;      /* names in SQLite's format (the unix VFS keeps pointers) */
    char *name_wal;
    sqlite3 *conn; /* node's own connection, for checkpoints */
    struct wal_shm shm;
    uint64_t applied;
    uint64_t floor;
    uint64_t ckpt_index; /* the last entry whose checkpoint step has run (node.c) */
    int wal_fd;                /* the WAL, read-only, for its writeback (node.c), or -1 */
    uint8_t *mark;             /* the state mark "<db>-applied", mapped (node.c), or NULL */
    uint32_t wal_written_back; /* mxFrame at the last wal_writeback_step (apply thread only) */
    struct gen_entry *gens; /* entries in the current WAL generation, by end frame */
    size_t n_gens;
    size_t cap_gens;
    char last_error[256];
    struct vfs_install *install; /* a snapshot being received (snapshot.c), or NULL */
    /* Called with every buffer the node has written to the WAL, while set (under the node lock):
     * installing a snapshot drops the mapped image behind the writes from its RSS. */
    void (*wal_written)(void *ctx, const void *buf, size_t n);
    void *wal_written_ctx;
    /* The apply path's WAL writes, gathered into one write per VFS_WAL_GATHER_BYTES of
     * consecutive frames (node.c): a page and its frame header are two writes otherwise. The
     * unix VFS writes at most 128 KiB - 1 in one call (seekAndWriteFd), hence 64 KiB. */
    uint8_t *wbuf;
    size_t wbuf_len;
    uint64_t wbuf_off;
};

#define VFS_WAL_GATHER_BYTES (64 * 1024)

extern pthread_mutex_t vfs_mu;
extern sqlite3_vfs *vfs_orig;
extern const char *vfs_name;

/* Node-side thread marker: set while the node opens its own connection (vfs.c reads it). */
extern __thread int vfs_opening_node;
/* Set while this thread copies the log beside local connections (node.c): its writes to the
 * database file are synced every VFS_PACE_BYTES (vfs.c), so that the copy reaches the disk in
 * small steps instead of one burst that every other fsync on the disk would queue behind. */
#define VFS_PACE_BYTES (256 * 1024)
extern __thread int vfs_pacing;

uint64_t vfs_now_ms(void);
uint64_t vfs_now_us(void);
void vfs_shared_put(struct vfs_shared *sh);          /* vfs_mu held */
struct vfs_shared *vfs_shared_get(const char *path); /* vfs_mu held; a new reference */

/* node.c, vfs_mu held: a local commit finished (or a transaction ended). */
void vfs_db_note_commit(struct vfs_db *db, uint64_t index, uint32_t first_frame);
void vfs_db_set_error(struct vfs_db *db, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* vfs_mu held: the lock state changed. Wakes the node's and other waiters on sh->cond, and the
 * writer at the head of the queue (and a reserved one) on its own condition variable, but only
 * while the lock is free: queued writers are not woken by every change (a gate call ending, a
 * proposal returning), only when their turn may have come. */
void vfs_wake(struct vfs_shared *sh);

/* vfs_mu held: waits on `cond` (CLOCK_MONOTONIC, as every condition variable here) for at most
 * `ms` milliseconds, or until signalled. */
void vfs_timed_wait_ms(pthread_cond_t *cond, uint64_t ms);
void vfs_timed_wait_us(pthread_cond_t *cond, uint64_t us);

/* node.c, vfs_mu not held: a local connection ended a read transaction. If the attached node's
 * WAL is due, checkpoint it and restart it when no reader is left on its frames, on this thread
 * (as SQLite's auto-checkpoint does after a commit) unless a writer or the node is busy. On a
 * leader this is what lets the log restart under back-to-back writers: the apply thread runs
 * while the next writer already holds a read mark, so its checkpoints never find the log free. */
void vfs_shared_read_done(struct vfs_shared *sh);

/* node.c, for snapshot.c: the node lock (serialises the node's WAL work with local writers),
 * and the apply path's append and checkpoint, which require it. */
struct vfs_install;
void vfs_node_lock(struct vfs_db *db);
void vfs_node_unlock(struct vfs_db *db);
int vfs_db_append_locked(struct vfs_db *db, const struct wal_txn *t, uint64_t index);
int vfs_db_checkpoint_locked(struct vfs_db *db);

/* node.c, for snapshot.c, node lock held: an image written straight into the database file of a
 * database that holds no entry yet. begin: SQLITE_OK once every reader is locked out, the marker
 * "<db>-installing" is durable and the WAL is empty; SQLITE_BUSY when this database cannot take
 * it (it holds entries, its WAL is not fully copied, a reader is in the way): use the WAL. The
 * caller then writes and syncs the file. end (after a successful begin): with ok, the index
 * restarts on the file of n_page pages holding entries up to `index`; without, the file is
 * emptied again; the marker goes and the readers are let in. */
int vfs_db_file_install_begin(struct vfs_db *db);
int vfs_db_file_install_end(struct vfs_db *db, uint32_t n_page, uint64_t index, int ok);

#endif
