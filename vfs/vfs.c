/*
 * The walraft VFS: a shim over the unix VFS. Every method forwards to the underlying VFS and
 * file, except on a database attached to a node (node.c), where this file:
 *   - replaces the WRITE lock (wal-index slot 0) of local connections by a lock of its own,
 *     granted through the node's write gate, with a FIFO queue of waiting writers;
 *   - refuses local connections the CHECKPOINT lock (slot 1): checkpoints belong to the node;
 *   - captures the leader's transactions: frame headers and pages pass through to the WAL, each
 *     frame's page number is recorded by position; the commit frame's header is held back, and
 *     when its page arrives the frame set is proposed; only once it is committed are the header
 *     and page written (DESIGN §3).
 *
 * Known limit of stepping down (vfs_db_step_down). A doomed writer fails at its next WAL write or
 * log restart, but SQLite also writes the wal-index from memory without calling the VFS: hash
 * entries right after a spill, and walCleanupHash when it rolls back. If the apply path appends
 * to the index at the very moment a doomed writer is inside one of those steps, entries above
 * mxFrame can be lost or cleared. The window is that of an in-memory loop in a transaction that
 * was already running when leadership moved; closing it needs the runtime to stop applying until
 * the doomed writer's next VFS call (or its rollback), which vfs/ cannot observe.
 */
#include "vfs/internal.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

pthread_mutex_t vfs_mu = PTHREAD_MUTEX_INITIALIZER;
sqlite3_vfs *vfs_orig;
const char *vfs_name;
__thread int vfs_opening_node;

static sqlite3_vfs vfs;                 /* the walraft VFS */
static sqlite3_io_methods file_methods; /* filled in by vfs_register */
static struct vfs_shared *shared_list;  /* every path with an open wrapper or an attachment */

#define REAL(f) (((struct vfs_file *)(f))->real)
#define FILE_OF(f) ((struct vfs_file *)(f))

/* How long a writer sent back for a fresh snapshot keeps its turn. */
#define RESERVE_MS 50
#define NODE_WAIT_MS 5000    /* longest a writer waits for the node's own work, busy timeout or not */
#define NODE_WAIT_SLICE_MS 20
/* A queued writer whose connection neither waits in its busy handler nor asks again for this
 * long has given up (a deferred transaction's BUSY, a busy handler that said stop): it loses its
 * place. A connection that is retrying comes back within microseconds. */
#define QUEUE_GRACE_MS 50

/* How long the queue's head may be passed by writers asking anew (grantable, vwrite_release). */
#define BARGE_WINDOW_US 2000
/* How long the lock stays offered to the writer that just committed (vwrite_release). */
#define OFFER_US 100
/* How often the queue's head looks at the lock while it is held or offered (vfs_sleep). */
#define HEAD_LOOK_US 1000

/* Whether this thread's next busy-handler sleep is skipped: set when its request was bounced only
 * to refresh its read snapshot, with its turn reserved. */
static __thread int skip_next_sleep;
__thread int vfs_pacing;
static __thread int64_t pace_bytes; /* written since the last paced sync */

uint64_t vfs_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t vfs_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Condition variables here wait with CLOCK_MONOTONIC deadlines. */
static void cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(c, &attr);
    pthread_condattr_destroy(&attr);
}

/* --- per-path shared state ---------------------------------------------------------------------
 */

struct vfs_shared *vfs_shared_get(const char *path)
{
    struct vfs_shared *sh;
    for (sh = shared_list; sh != NULL; sh = sh->next) {
        if (strcmp(sh->path, path) == 0) {
            sh->refs++;
            return sh;
        }
    }
    sh = calloc(1, sizeof *sh);
    if (sh == NULL) {
        return NULL;
    }
    sh->path = strdup(path);
    if (sh->path == NULL) {
        free(sh);
        return NULL;
    }
    cond_init_monotonic(&sh->cond);
    sh->refs = 1;
    sh->next = shared_list;
    shared_list = sh;
    return sh;
}

void vfs_shared_put(struct vfs_shared *sh)
{
    if (--sh->refs > 0) {
        return;
    }
    struct vfs_shared **pp = &shared_list;
    while (*pp != sh) {
        pp = &(*pp)->next;
    }
    *pp = sh->next;
    pthread_cond_destroy(&sh->cond);
    free(sh->cap.pgno);
    free(sh->path);
    free(sh);
}

/* --- the virtual WRITE lock ------------------------------------------------------------------ */

void vfs_timed_wait_us(pthread_cond_t *cond, uint64_t us)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(us / 1000000);
    ts.tv_nsec += (long)(us % 1000000) * 1000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(cond, &vfs_mu, &ts);
}

void vfs_timed_wait_ms(pthread_cond_t *cond, uint64_t ms)
{
    vfs_timed_wait_us(cond, ms * 1000);
}

/* The writer the lock is offered to, while the offer lasts (vfs_mu held). */
static struct vfs_file *offered_to(struct vfs_shared *sh)
{
    if (sh->offered != NULL && vfs_now_us() >= sh->offered_until_us) {
        sh->offered = NULL;
    }
    return sh->offered;
}

void vfs_wake(struct vfs_shared *sh)
{
    pthread_cond_broadcast(&sh->cond);
    if (sh->holder != NULL || sh->node_active || sh->node_waiting > 0) {
        return; /* no queued writer can go yet: the release of the lock wakes the next one */
    }
    if (offered_to(sh) != NULL) {
        return; /* the head finds out by itself whether the offer is taken (vfs_sleep) */
    }
    struct waiter *head = sh->queue_head;
    if (head != NULL && head->cond_ready) {
        pthread_cond_signal(&head->cond);
    }
    if (sh->reserved != NULL && sh->reserved != (head ? head->f : NULL) &&
        sh->reserved->qw.cond_ready) {
        pthread_cond_signal(&sh->reserved->qw.cond);
    }
}

static void dequeue(struct vfs_shared *sh, struct waiter *w)
{
    struct waiter **pp = &sh->queue_head, *prev = NULL;
    while (*pp != w) {
        assert(*pp != NULL);
        prev = *pp;
        pp = &(*pp)->next;
    }
    *pp = w->next;
    if (sh->queue_tail == w) {
        sh->queue_tail = prev;
    }
    if (prev == NULL && sh->queue_head != NULL) {
        sh->head_since_us = vfs_now_us();
    }
    w->next = NULL;
    w->f->queued = 0;
}

static void enqueue(struct vfs_shared *sh, struct vfs_file *f)
{
    struct waiter *w = &f->qw;
    if (!w->cond_ready) {
        cond_init_monotonic(&w->cond);
        w->cond_ready = 1;
    }
    w->f = f;
    w->next = NULL;
    if (sh->queue_tail != NULL) {
        sh->queue_tail->next = w;
    } else {
        sh->queue_head = w;
        sh->head_since_us = vfs_now_us();
    }
    sh->queue_tail = w;
    f->queued = 1;
}

/* Drops the head of the queue while its connection has given up (vfs_mu held). */
static void queue_prune(struct vfs_shared *sh)
{
    uint64_t now = 0;
    while (sh->queue_head != NULL && sh->queue_head->alive_until_ms != UINT64_MAX) {
        if (now == 0) {
            now = vfs_now_ms();
        }
        if (now <= sh->queue_head->alive_until_ms) {
            break;
        }
        dequeue(sh, sh->queue_head);
        vfs_wake(sh);
    }
}

/* Is `w` next in line, kept waiting only by the node's own work? */
static int blocked_by_node_only(struct vfs_shared *sh, struct waiter *w)
{
    if (sh->holder != NULL || !(sh->node_active || sh->node_waiting > 0)) {
        return 0;
    }
    if (sh->reserved != NULL && sh->reserved != w->f && vfs_now_ms() < sh->reserved_until_ms) {
        return 0;
    }
    queue_prune(sh);
    return sh->queue_head == w || sh->reserved == w->f;
}

/* May a writer asking anew go before the queue's head (vfs_mu held)? For BARGE_WINDOW_US
 * after the head became head: the writer that just committed is running with a warm page cache,
 * while the head would need a thread wake-up and a new read transaction, and the pager of every
 * connection but the committer's discards its cache after a commit. A hand-over on every commit
 * makes 4 writers commit less than 1. Past the window the head goes next: the head waits at
 * most the window and the transaction in progress, and each writer ahead of a queued one adds
 * at most as much. */
static int may_barge(struct vfs_shared *sh)
{
    return sh->queue_head == NULL || vfs_now_us() - sh->head_since_us < BARGE_WINDOW_US;
}

/* `fresh`: the connection asks anew (it did not wait in the queue for this request). */
static int grantable(struct vfs_shared *sh, struct waiter *w, int fresh)
{
    if (sh->holder != NULL || sh->node_active || sh->node_waiting > 0) {
        return 0;
    }
    if (sh->reserved == w->f) {
        return 1;
    }
    if (sh->reserved != NULL && vfs_now_ms() < sh->reserved_until_ms) {
        return 0;
    }
    struct vfs_file *offered = offered_to(sh);
    if (offered != NULL) {
        return offered == w->f;
    }
    queue_prune(sh);
    return sh->queue_head == w || (fresh && may_barge(sh));
}

/* Does the connection retry a busy lock (SQLITE_FCNTL_BUSYHANDLER gave a handler)? */
static int has_busy_handler(const struct vfs_file *f)
{
    return f->busy != NULL && f->busy[0] != NULL;
}

static void capture_reset(struct capture *c)
{
    c->state = CAP_OPEN;
    c->first = 0;
    c->last = 0;
    c->held_frame = 0;
    c->index = 0;
    c->page_size = 0;
}

/* The transaction of the current holder is over (vfs_mu held): a committed one advances the
 * node's applied index; one that wrote frames and did not commit leaves hash entries behind. */
static void capture_finish(struct vfs_shared *sh)
{
    struct capture *c = &sh->cap;
    if (sh->node != NULL) {
        if (c->state == CAP_COMMITTED) {
            vfs_db_note_commit(sh->node, c->index, c->first);
            sh->commits++;
        } else if (c->first != 0) {
            sh->index_stale = 1;
        }
    }
    capture_reset(c);
}

/* Local connection f asks for WRITE on an attached database. Returns SQLITE_OK, SQLITE_READONLY,
 * SQLITE_BUSY, or -1 when the database is not attached (the caller passes the request down). */
static int vwrite_acquire(struct vfs_file *f)
{
    struct vfs_shared *sh = f->sh;
    pthread_mutex_lock(&vfs_mu);
    struct vfs_db *db = sh->node;
    if (db == NULL) {
        if (f->queued) {
            dequeue(sh, &f->qw);
        }
        pthread_mutex_unlock(&vfs_mu);
        return -1;
    }
    db->gate_calls++;
    pthread_mutex_unlock(&vfs_mu);

    char why[200] = "";
    int rc =
        db->ops.write_gate != NULL ? db->ops.write_gate(db->ops.ctx, why, sizeof why) : SQLITE_OK;

    pthread_mutex_lock(&vfs_mu);
    db->gate_calls--;
    vfs_wake(sh);
    int gate_deferred = 0;
    if (rc != SQLITE_OK && rc != SQLITE_READONLY && sh->holder != NULL && sh->holder != f) {
        /* "Catching up" while a local writer's entry is in flight: that entry is the gap. Queue,
         * and ask the gate again when granted. */
        gate_deferred = 1;
        rc = SQLITE_OK;
    }
    if (rc != SQLITE_OK) {
        why[sizeof why - 1] = '\0';
        if (rc == SQLITE_READONLY) {
            vfs_db_set_error(db, rc, "walraft: write refused: %s",
                             why[0] ? why : "this node is not the leader");
        } else {
            rc = SQLITE_BUSY;
            vfs_db_set_error(db, rc, "walraft: write refused for now: %s",
                             why[0] ? why : "the leader is catching up");
        }
        pthread_mutex_unlock(&vfs_mu);
        return rc;
    }

    skip_next_sleep = 0;
    if (f->released_us != 0) {
        f->slow_return = vfs_now_us() - f->released_us > OFFER_US;
        f->released_us = 0;
    }
    uint64_t commits0 = sh->commits;
    struct waiter *w = &f->qw;
    int fresh = !f->queued;
    if (!f->queued) {
        enqueue(sh, f);
    }
    w->thread = pthread_self();
    w->alive_until_ms = UINT64_MAX;
    w->sleep_armed = 0;
    int waited = 0;
    uint64_t node_deadline_ms = vfs_now_ms() + NODE_WAIT_MS;
    while (!grantable(sh, w, fresh && !waited)) {
        if (sh->node != db) { /* detached while we waited */
            dequeue(sh, w);
            vfs_wake(sh);
            pthread_mutex_unlock(&vfs_mu);
            return SQLITE_BUSY;
        }
        if (blocked_by_node_only(sh, w) && vfs_now_ms() < node_deadline_ms) {
            /* Only the node's own brief work (an apply's bookkeeping, a checkpoint) is in the
             * way, not another writer: wait for it here, whatever the busy handler, so that a
             * connection without one (the sqlite3 shell's default) or a deferred transaction
             * upgrading to a write is not told "database is locked". */
            waited = 1;
            vfs_timed_wait_ms(&w->cond, NODE_WAIT_SLICE_MS);
            continue;
        }
        if (!has_busy_handler(f)) {
            /* Another writer has the lock or is ahead, and this connection does not retry:
             * SQLITE_BUSY, as SQLite answers when another connection holds WRITE. */
            dequeue(sh, w);
            vfs_wake(sh);
            pthread_mutex_unlock(&vfs_mu);
            return SQLITE_BUSY;
        }
        /* Another writer is ahead. Keep the place in the queue and answer SQLITE_BUSY: SQLite
         * ends this read transaction and calls the busy handler, whose sleep reaches vfs_sleep
         * and waits for the turn. The retry then starts from a fresh snapshot, and no waiting
         * writer holds a read mark that would keep a checkpoint from completing or the log
         * from restarting. (A deferred transaction gets the BUSY, as from SQLite itself.) */
        w->alive_until_ms = vfs_now_ms() + QUEUE_GRACE_MS;
        w->sleep_armed = 1;
        pthread_mutex_unlock(&vfs_mu);
        return SQLITE_BUSY;
    }
    sh->offered = NULL;
    int was_head = sh->queue_head == w;
    dequeue(sh, w);
    if (was_head && sh->queue_head != NULL && sh->queue_head->cond_ready) {
        /* The new head may be asleep for its busy handler's whole delay: make it look again
         * every HEAD_LOOK_US from now on (vfs_sleep). */
        pthread_cond_signal(&sh->queue_head->cond);
    }
    int refresh = waited && sh->commits != commits0;
    if (sh->reserved == f) {
        sh->reserved = NULL;
    } else if (refresh) {
        /* Someone committed while we queued: this connection's read snapshot is stale and SQLite
         * would answer SQLITE_BUSY_SNAPSHOT. Send it back for a fresh snapshot with its turn
         * kept, rather than let it lose its place. */
        sh->reserved = f;
        sh->reserved_until_ms = vfs_now_ms() + RESERVE_MS;
        skip_next_sleep = 1;
        vfs_wake(sh);
        pthread_mutex_unlock(&vfs_mu);
        return SQLITE_BUSY;
    }
    sh->holder = f;
    sh->holder_doomed = 0;
    f->vwrite = 1;
    capture_reset(&sh->cap);
    if (waited || gate_deferred) {
        /* Leadership may have moved while this writer queued: ask the gate again. */
        db->gate_calls++;
        pthread_mutex_unlock(&vfs_mu);
        why[0] = '\0';
        rc = db->ops.write_gate != NULL ? db->ops.write_gate(db->ops.ctx, why, sizeof why)
                                        : SQLITE_OK;
        pthread_mutex_lock(&vfs_mu);
        db->gate_calls--;
        if (rc != SQLITE_OK) {
            why[sizeof why - 1] = '\0';
            rc = rc == SQLITE_READONLY ? SQLITE_READONLY : SQLITE_BUSY;
            vfs_db_set_error(db, rc, "walraft: write refused: %s",
                             why[0] ? why : "leadership changed");
            sh->holder = NULL;
            f->vwrite = 0;
        }
    }
    vfs_wake(sh);
    pthread_mutex_unlock(&vfs_mu);
    return rc;
}

static void vwrite_release(struct vfs_file *f)
{
    struct vfs_shared *sh = f->sh;
    pthread_mutex_lock(&vfs_mu);
    if (sh->holder == f) {
        int committed = sh->cap.state == CAP_COMMITTED;
        capture_finish(sh);
        sh->holder = NULL;
        sh->holder_doomed = 0;
        f->released_us = committed ? vfs_now_us() : 0;
        if (committed && !f->slow_return && sh->queue_head != NULL && may_barge(sh) &&
            sh->reserved == NULL) {
            /* Writers are queued, and this one will most likely ask again within microseconds,
             * warm (its page cache is still valid; the head's is not, after this commit). Waking
             * the head now would race it: whichever won, the other thread's wake-up and trip
             * through SQLite were spent for nothing, and on a small machine that CPU is taken
             * from the commit path. So the lock waits a moment for this writer, and nobody is
             * woken: the head looks again by itself when the offer would lapse or
             * HEAD_LOOK_US from its last look (vfs_sleep). Past the head's window, no offer. A
             * writer that did not come back within OFFER_US last time (it works between its
             * transactions) is offered nothing: the lock would only stand idle. */
            sh->offered = f;
            sh->offered_until_us = vfs_now_us() + OFFER_US;
        }
    }
    f->vwrite = 0;
    vfs_wake(sh);
    pthread_mutex_unlock(&vfs_mu);
}

/* --- file methods ---------------------------------------------------------------------------- */

static int file_close(sqlite3_file *f)
{
    struct vfs_file *file = FILE_OF(f);
    int rc = REAL(f)->pMethods ? REAL(f)->pMethods->xClose(REAL(f)) : SQLITE_OK;
    if (file->sh != NULL) {
        if (file->vwrite) {
            vwrite_release(file);
        }
        pthread_mutex_lock(&vfs_mu);
        if (file->sh->reserved == file) {
            file->sh->reserved = NULL;
        }
        if (file->sh->offered == file) {
            file->sh->offered = NULL;
        }
        if (file->queued) {
            dequeue(file->sh, &file->qw);
        }
        vfs_wake(file->sh);
        vfs_shared_put(file->sh);
        pthread_mutex_unlock(&vfs_mu);
        file->sh = NULL;
    }
    if (file->qw.cond_ready) {
        pthread_cond_destroy(&file->qw.cond);
        file->qw.cond_ready = 0;
    }
    f->pMethods = NULL;
    return rc;
}
static int file_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
    return REAL(f)->pMethods->xRead(REAL(f), buf, n, off);
}

static int write_real(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
    return REAL(f)->pMethods->xWrite(REAL(f), buf, n, off);
}

/* Records that `frame` of the current transaction holds `pgno`. */
static int capture_frame(struct vfs_db *db, struct capture *c, uint32_t frame, uint32_t pgno)
{
    if (c->first == 0) {
        c->first = frame;
        c->last = frame;
    }
    if (frame < c->first) { /* not expected from SQLite: grow the array downwards */
        uint32_t shift = c->first - frame;
        uint32_t used = c->last - c->first + 1;
        if (used + shift > c->cap) {
            uint32_t ncap = (used + shift) * 2;
            uint32_t *p = realloc(c->pgno, ncap * sizeof *p);
            if (p == NULL) {
                return SQLITE_NOMEM;
            }
            c->pgno = p;
            c->cap = ncap;
        }
        memmove(c->pgno + shift, c->pgno, used * sizeof *c->pgno);
        memset(c->pgno, 0, shift * sizeof *c->pgno);
        c->first = frame;
    }
    uint32_t i = frame - c->first;
    if (i >= c->cap) {
        uint32_t ncap = c->cap ? c->cap : 64;
        while (ncap <= i) {
            ncap *= 2;
        }
        uint32_t *p = realloc(c->pgno, ncap * sizeof *p);
        if (p == NULL) {
            return SQLITE_NOMEM;
        }
        memset(p + c->cap, 0, (ncap - c->cap) * sizeof *p);
        c->pgno = p;
        c->cap = ncap;
    }
    if (frame > c->last) {
        for (uint32_t j = c->last + 1 - c->first; j < i; j++) {
            c->pgno[j] = 0;
        }
        c->last = frame;
    }
    c->pgno[i] = pgno;
    uint64_t bytes = (uint64_t)(c->last - c->first + 1) * c->page_size;
    if (bytes > db->max_txn_bytes) {
        pthread_mutex_lock(&vfs_mu);
        vfs_db_set_error(db, SQLITE_FULL,
                         "walraft: transaction larger than max_txn_bytes (%llu bytes); "
                         "split it or raise the bound",
                         (unsigned long long)db->max_txn_bytes);
        pthread_mutex_unlock(&vfs_mu);
        return SQLITE_FULL;
    }
    return SQLITE_OK;
}

/* The commit frame's page arrived: gather the transaction's pages (the newest frame of each page
 * number, as SQLite's readers will see them), propose, and write the commit frame only if the
 * entry committed. f is the holder's WAL file. */
static int capture_commit(struct vfs_db *db, struct vfs_shared *sh, struct vfs_file *f,
                          const void *page, sqlite3_int64 off)
{
    struct capture *c = &sh->cap;
    uint32_t ps = c->page_size;
    uint32_t nframes = c->held_frame - c->first + 1;
    uint32_t commit_pages = get_be32(c->held_hdr + 4);
    struct wal_page *pages = calloc(nframes, sizeof *pages);
    uint8_t *data = malloc((size_t)nframes * ps);
    /* Open-addressing set of page numbers already taken (newest frame first). */
    uint32_t nslots = 16;
    while (nslots < nframes * 2) {
        nslots *= 2;
    }
    uint32_t *seen = calloc(nslots, sizeof *seen);
    uint8_t *payload = NULL;
    size_t len = 0;
    int rc = SQLITE_NOMEM;
    if (pages == NULL || data == NULL || seen == NULL) {
        goto out;
    }
    uint32_t n = 0;
    for (uint32_t fr = c->held_frame; fr >= c->first && fr != 0; fr--) {
        uint32_t pgno = fr == c->held_frame ? get_be32(c->held_hdr) : c->pgno[fr - c->first];
        if (pgno == 0) {
            continue;
        }
        uint32_t h = (pgno * 383u) & (nslots - 1);
        while (seen[h] != 0 && seen[h] != pgno) {
            h = (h + 1) & (nslots - 1);
        }
        if (seen[h] == pgno) {
            continue;
        }
        seen[h] = pgno;
        uint8_t *dst = data + (size_t)n * ps;
        if (fr == c->held_frame) {
            memcpy(dst, page, ps);
        } else {
            rc = REAL(f)->pMethods->xRead(REAL(f), dst, (int)ps,
                                          (sqlite3_int64)wal_frame_offset(ps, fr) +
                                              WAL_FRAME_HDR_SIZE);
            if (rc != SQLITE_OK) {
                goto out;
            }
        }
        pages[n].pgno = pgno;
        pages[n].data = dst;
        n++;
    }
    /* Oldest frame first, the commit frame's page last. */
    for (uint32_t i = 0; i < n / 2; i++) {
        struct wal_page t = pages[i];
        pages[i] = pages[n - 1 - i];
        pages[n - 1 - i] = t;
    }
    struct wal_frameset fs = {
        .page_size = ps, .commit_pages = commit_pages, .n_pages = n, .pages = pages};
    int wrc = wal_frameset_encode(&fs, &payload, &len);
    if (wrc != WAL_OK) {
        rc = wrc == WAL_ENOMEM ? SQLITE_NOMEM : SQLITE_IOERR_WRITE;
        goto out;
    }

    pthread_mutex_lock(&vfs_mu);
    db->gate_calls++;
    pthread_mutex_unlock(&vfs_mu);
    char why[200] = "";
    uint64_t index = 0;
    int prc = db->ops.propose(db->ops.ctx, payload, len, &index, why, sizeof why);
    why[sizeof why - 1] = '\0';
    pthread_mutex_lock(&vfs_mu);
    db->gate_calls--;
    vfs_wake(sh);
    if (prc != VFS_PROPOSE_OK) {
        c->state = CAP_FAILED;
        vfs_db_set_error(db, SQLITE_IOERR_WRITE,
                         prc == VFS_PROPOSE_UNKNOWN
                             ? "walraft: commit outcome unknown (%s): the transaction may still "
                               "commit; do not retry it blindly"
                             : "walraft: transaction not committed (%s)",
                         why[0] ? why : "replication failed");
        pthread_mutex_unlock(&vfs_mu);
        rc = SQLITE_IOERR_WRITE;
        goto out;
    }
    int doomed = sh->holder_doomed;
    pthread_mutex_unlock(&vfs_mu);
    if (doomed) {
        /* Committed in Raft, but the apply path owns the WAL now: it will apply the entry. */
        c->state = CAP_FAILED;
        rc = SQLITE_IOERR_WRITE;
        goto out;
    }
    rc = write_real(&f->base, c->held_hdr, WAL_FRAME_HDR_SIZE, off - WAL_FRAME_HDR_SIZE);
    if (rc == SQLITE_OK) {
        rc = write_real(&f->base, page, (int)ps, off);
    }
    if (rc != SQLITE_OK) {
        c->state = CAP_FAILED; /* committed in Raft: the apply path writes it */
        goto out;
    }
    c->state = CAP_COMMITTED;
    c->index = index;
out:
    free(payload);
    free(seen);
    free(data);
    free(pages);
    return rc;
}

/* A write to the WAL of an attached database by the holder of the virtual WRITE lock. */
static int capture_write(struct vfs_db *db, struct vfs_shared *sh, struct vfs_file *f,
                         const void *buf, int n, sqlite3_int64 off)
{
    struct capture *c = &sh->cap;
    if (off == 0 && n == (int)WAL_HDR_SIZE) {
        /* A WAL header: the log starts at frame 1 (a new transaction in exclusive mode). */
        if (c->state == CAP_COMMITTED) {
            pthread_mutex_lock(&vfs_mu);
            capture_finish(sh);
            pthread_mutex_unlock(&vfs_mu);
        }
        c->page_size = get_be32((const uint8_t *)buf + 8);
        return write_real(&f->base, buf, n, off);
    }
    if (c->page_size == 0) {
        uint8_t hdr[WAL_HDR_SIZE];
        int rc = REAL(f)->pMethods->xRead(REAL(f), hdr, sizeof hdr, 0);
        if (rc != SQLITE_OK) {
            return SQLITE_IOERR_WRITE;
        }
        c->page_size = get_be32(hdr + 8);
    }
    uint64_t ps = c->page_size, fsz = ps + WAL_FRAME_HDR_SIZE;
    if (ps < WAL_PAGE_SIZE_MIN || ps > WAL_PAGE_SIZE_MAX || off < (sqlite3_int64)WAL_HDR_SIZE) {
        return write_real(&f->base, buf, n, off);
    }
    uint64_t rel = (uint64_t)off - WAL_HDR_SIZE;
    if (n == (int)WAL_FRAME_HDR_SIZE && rel % fsz == 0) {
        uint32_t frame = (uint32_t)(rel / fsz) + 1;
        uint32_t pgno = get_be32(buf), commit = get_be32((const uint8_t *)buf + 4);
        if (c->state == CAP_COMMITTED) {
            if (frame <= c->held_frame) { /* checksums rewritten after the commit frame */
                return write_real(&f->base, buf, n, off);
            }
            pthread_mutex_lock(&vfs_mu); /* the next transaction (exclusive locking mode) */
            capture_finish(sh);
            pthread_mutex_unlock(&vfs_mu);
        }
        if (c->state != CAP_OPEN) {
            return SQLITE_IOERR_WRITE;
        }
        int rc = capture_frame(db, c, frame, pgno);
        if (rc != SQLITE_OK) {
            return rc;
        }
        if (commit != 0) {
            memcpy(c->held_hdr, buf, WAL_FRAME_HDR_SIZE);
            c->held_frame = frame;
            c->state = CAP_HELD;
            return SQLITE_OK;
        }
        return write_real(&f->base, buf, n, off);
    }
    if ((uint64_t)n == ps && rel >= WAL_FRAME_HDR_SIZE && (rel - WAL_FRAME_HDR_SIZE) % fsz == 0) {
        uint32_t frame = (uint32_t)((rel - WAL_FRAME_HDR_SIZE) / fsz) + 1;
        if (c->state == CAP_HELD && frame == c->held_frame) {
            return capture_commit(db, sh, f, buf, off);
        }
        if (c->state == CAP_HELD || c->state == CAP_FAILED) {
            return SQLITE_IOERR_WRITE;
        }
    }
    return write_real(&f->base, buf, n, off);
}

static int file_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
    struct vfs_file *file = FILE_OF(f);
    if (file->kind == FILE_MAIN && vfs_pacing) {
        int rc = write_real(f, buf, n, off);
        pace_bytes += n;
        if (rc == SQLITE_OK && pace_bytes >= VFS_PACE_BYTES) {
            pace_bytes = 0;
            rc = REAL(f)->pMethods->xSync(REAL(f), SQLITE_SYNC_NORMAL | SQLITE_SYNC_DATAONLY);
        }
        return rc;
    }
    if (file->kind != FILE_WAL || file->sh == NULL) {
        return write_real(f, buf, n, off);
    }
    struct vfs_shared *sh = file->sh;
    pthread_mutex_lock(&vfs_mu);
    struct vfs_db *db = sh->node;
    int mine = sh->holder != NULL && !sh->holder_doomed;
    pthread_mutex_unlock(&vfs_mu);
    if (db == NULL) {
        return write_real(f, buf, n, off);
    }
    if (!mine) {
        /* Only the holder of the WRITE lock writes the WAL; a doomed one fails from now on. */
        return SQLITE_IOERR_WRITE;
    }
    return capture_write(db, sh, file, buf, n, off);
}
static int file_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    return REAL(f)->pMethods->xTruncate(REAL(f), size);
}
static int file_sync(sqlite3_file *f, int flags)
{
    return REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    return REAL(f)->pMethods->xFileSize(REAL(f), size);
}
static int file_lock(sqlite3_file *f, int level)
{
    return REAL(f)->pMethods->xLock(REAL(f), level);
}
static int file_unlock(sqlite3_file *f, int level)
{
    return REAL(f)->pMethods->xUnlock(REAL(f), level);
}
static int file_check_reserved(sqlite3_file *f, int *out)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int file_control(sqlite3_file *f, int op, void *arg)
{
    if (op == SQLITE_FCNTL_BUSYHANDLER) {
        FILE_OF(f)->busy = arg;
    }
    int rc = REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
    if (op == SQLITE_FCNTL_VFSNAME && rc == SQLITE_OK && arg != NULL) {
        char **name = arg;
        char *mine = sqlite3_mprintf("walraft/%z", *name);
        if (mine == NULL) {
            return SQLITE_NOMEM;
        }
        *name = mine;
    }
    return rc;
}
static int file_sector_size(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int file_device_characteristics(sqlite3_file *f)
{
    /* Power-safe overwrite: SQLite then never pads a commit by repeating the commit frame. */
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f)) | SQLITE_IOCAP_POWERSAFE_OVERWRITE;
}
static int file_shm_map(sqlite3_file *f, int region, int size, int extend, void volatile **pp)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), region, size, extend, pp);
}

#define SLOT_WRITE 0
#define SLOT_CKPT 1
#define SLOT_READ0 3 /* READ(0); READ(1..4) follow */

static int shm_lock_real(sqlite3_file *f, int ofst, int n, int flags)
{
    if (n <= 0) {
        return SQLITE_OK;
    }
    return REAL(f)->pMethods->xShmLock(REAL(f), ofst, n, flags);
}

static int file_shm_lock(sqlite3_file *f, int ofst, int n, int flags)
{
    struct vfs_file *file = FILE_OF(f);
    struct vfs_shared *sh = file->sh;
    if (sh == NULL || file->kind != FILE_MAIN) {
        return shm_lock_real(f, ofst, n, flags);
    }
    int lock = (flags & SQLITE_SHM_LOCK) != 0, excl = (flags & SQLITE_SHM_EXCLUSIVE) != 0;
    pthread_mutex_lock(&vfs_mu);
    int attached = sh->node != NULL;
    int doomed = sh->holder == file && sh->holder_doomed;
    int beside = sh->ckpt_busy && !sh->node_active;
    pthread_mutex_unlock(&vfs_mu);

    if (ofst == SLOT_WRITE && n >= 1) {
        if (file->is_node && attached && beside && lock && excl) {
            /* The node's checkpoint copies beside local writers (node.c, checkpoint_beside). If
             * it found the index header torn, SQLite asks for WRITE to rebuild the index: that
             * is only safe with no writer, so refuse; the checkpoint answers BUSY, not now. */
            return SQLITE_BUSY;
        }
        if (file->is_node) {
            /* The node's handle holds the real WRITE and CHECKPOINT locks: grant no-ops. */
            int skip = n >= 2 ? 2 : 1;
            return attached ? shm_lock_real(f, ofst + skip, n - skip, flags)
                            : shm_lock_real(f, ofst, n, flags);
        }
        if (lock && excl && n == 1) {
            int rc = vwrite_acquire(file);
            if (rc != -1) {
                return rc;
            }
            return shm_lock_real(f, ofst, n, flags);
        }
        if (!lock && n == 1 && file->vwrite) {
            vwrite_release(file);
            return SQLITE_OK;
        }
        return shm_lock_real(f, ofst, n, flags);
    }
    if (!attached) {
        return shm_lock_real(f, ofst, n, flags);
    }
    if (ofst <= SLOT_CKPT && ofst + n > SLOT_CKPT) {
        if (file->is_node) {
            /* Held by the node's handle already: pass down the other slots only. */
            return shm_lock_real(f, SLOT_CKPT + 1, ofst + n - (SLOT_CKPT + 1), flags);
        }
        if (lock) {
            /* Checkpoints belong to the node: a local connection's (auto-)checkpoint is BUSY. */
            return SQLITE_BUSY;
        }
        return SQLITE_OK;
    }
    if (doomed && lock && excl) {
        /* A doomed writer must not restart the log (READ(1..4) exclusive) under the node. */
        return SQLITE_IOERR_WRITE;
    }
    if (lock && !excl && n == 1 && ofst > SLOT_READ0 && !file->is_node) {
        /* A read transaction starts on the log's frames while the node checkpoints to restart
         * the log: wait for the checkpoint, then answer BUSY. SQLite retries the start with a
         * fresh look at the log, which is now fully checkpointed: it reads the database file
         * alone (READ(0)) and leaves the log free to restart. */
        pthread_mutex_lock(&vfs_mu);
        if (sh->ckpt_active) {
            uint64_t deadline = vfs_now_ms() + NODE_WAIT_MS;
            for (uint64_t now = vfs_now_ms(); sh->ckpt_active && now < deadline;
                 now = vfs_now_ms()) {
                vfs_timed_wait_ms(&sh->cond, deadline - now);
            }
            pthread_mutex_unlock(&vfs_mu);
            return SQLITE_BUSY;
        }
        pthread_mutex_unlock(&vfs_mu);
    }
    if (!lock && !excl && n == 1 && ofst >= SLOT_READ0 && !file->is_node) {
        /* A read transaction ended: the moment SQLite's own auto-checkpoint would run, with
         * this connection off the WAL's frames, so that the checkpoint is complete and the
         * log can restart (see vfs_shared_read_done). */
        int rc = shm_lock_real(f, ofst, n, flags);
        vfs_shared_read_done(sh);
        return rc;
    }
    return shm_lock_real(f, ofst, n, flags);
}
static void file_shm_barrier(sqlite3_file *f)
{
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int file_shm_unmap(sqlite3_file *f, int delete_flag)
{
    return REAL(f)->pMethods->xShmUnmap(REAL(f), delete_flag);
}
static int file_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
    return REAL(f)->pMethods->xFetch(REAL(f), off, n, pp);
}
static int file_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    return REAL(f)->pMethods->xUnfetch(REAL(f), off, p);
}

/* --- VFS methods ----------------------------------------------------------------------------- */

static int vfs_open(sqlite3_vfs *v, const char *name, sqlite3_file *f, int flags, int *out_flags)
{
    struct vfs_file *file = (struct vfs_file *)f;
    int rc;
    (void)v;
    memset(file, 0, sizeof *file);
    file->real = (sqlite3_file *)(file + 1);
    if (name != NULL && (flags & (SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_WAL)) != 0) {
        char *path = NULL;
        if (flags & SQLITE_OPEN_MAIN_DB) {
            file->kind = FILE_MAIN;
            file->is_node = vfs_opening_node;
            path = strdup(name);
        } else {
            size_t len = strlen(name);
            file->kind = FILE_WAL;
            if (len > 4 && strcmp(name + len - 4, "-wal") == 0) {
                path = strndup(name, len - 4);
            }
        }
        if (path != NULL) {
            pthread_mutex_lock(&vfs_mu);
            file->sh = vfs_shared_get(path);
            pthread_mutex_unlock(&vfs_mu);
            free(path);
        }
    }
    rc = vfs_orig->xOpen(vfs_orig, name, file->real, flags, out_flags);
    if (rc == SQLITE_OK) {
        f->pMethods = &file_methods;
    } else if (file->sh != NULL) {
        pthread_mutex_lock(&vfs_mu);
        vfs_shared_put(file->sh);
        pthread_mutex_unlock(&vfs_mu);
        file->sh = NULL;
    }
    return rc;
}
static int vfs_delete(sqlite3_vfs *v, const char *name, int sync_dir)
{
    (void)v;
    return vfs_orig->xDelete(vfs_orig, name, sync_dir);
}
static int vfs_access(sqlite3_vfs *v, const char *name, int flags, int *out)
{
    (void)v;
    return vfs_orig->xAccess(vfs_orig, name, flags, out);
}
static int vfs_full_pathname(sqlite3_vfs *v, const char *name, int n, char *out)
{
    (void)v;
    return vfs_orig->xFullPathname(vfs_orig, name, n, out);
}
static void *vfs_dl_open(sqlite3_vfs *v, const char *name)
{
    (void)v;
    return vfs_orig->xDlOpen(vfs_orig, name);
}
static void vfs_dl_error(sqlite3_vfs *v, int n, char *msg)
{
    (void)v;
    vfs_orig->xDlError(vfs_orig, n, msg);
}
static void (*vfs_dl_sym(sqlite3_vfs *v, void *h, const char *sym))(void)
{
    (void)v;
    return vfs_orig->xDlSym(vfs_orig, h, sym);
}
static void vfs_dl_close(sqlite3_vfs *v, void *h)
{
    (void)v;
    vfs_orig->xDlClose(vfs_orig, h);
}
static int vfs_randomness(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    return vfs_orig->xRandomness(vfs_orig, n, out);
}
/* The queue place of the calling thread's connection that was just told SQLITE_BUSY and has not
 * slept since, or NULL (vfs_mu held). Only that first sleep is the busy handler's: SQLite also
 * sleeps between the retries of starting a read, and those must really sleep. Found through the
 * queues, not a thread-local pointer: the connection may have been closed since. */
static struct waiter *my_waiter(void)
{
    pthread_t self = pthread_self();
    struct waiter *best = NULL;
    for (struct vfs_shared *sh = shared_list; sh != NULL; sh = sh->next) {
        for (struct waiter *w = sh->queue_head; w != NULL; w = w->next) {
            if (pthread_equal(w->thread, self) && w->sleep_armed &&
                (best == NULL || w->alive_until_ms > best->alive_until_ms)) {
                best = w;
            }
        }
    }
    return best;
}

static int vfs_sleep(sqlite3_vfs *v, int us)
{
    (void)v;
    if (skip_next_sleep) {
        /* The busy handler's sleep right after a snapshot-refresh bounce: the turn is reserved
         * for this thread, retry at once (reported as slept, so the timeout still bounds it). */
        skip_next_sleep = 0;
        return us;
    }
    if (us > 0) {
        /* A queued writer's busy handler: wait for the turn for as long as it would sleep. The
         * wait ends early only when the lock is ours, so the busy timeout never runs faster
         * than real time. */
        pthread_mutex_lock(&vfs_mu);
        struct waiter *w = my_waiter();
        if (w != NULL) {
            struct vfs_shared *sh = w->f->sh;
            uint64_t deadline = vfs_now_us() + (uint64_t)us;
            w->alive_until_ms = UINT64_MAX;
            w->sleep_armed = 0;
            for (uint64_t now = vfs_now_us(); now < deadline && w->f->queued && !grantable(sh, w, 0);
                 now = vfs_now_us()) {
                /* The release of a writer that is offered the lock wakes nobody, and an offer
                 * lapses unannounced: the head looks again when it would lapse, and at least
                 * every HEAD_LOOK_US while a writer holds the lock (vwrite_release). */
                uint64_t until = deadline;
                if (sh->queue_head == w) {
                    uint64_t look =
                        offered_to(sh) != NULL ? sh->offered_until_us : now + HEAD_LOOK_US;
                    until = look < deadline ? look : deadline;
                }
                vfs_timed_wait_us(&w->cond, until - now);
            }
            if (w->f->queued) {
                w->alive_until_ms = vfs_now_ms() + QUEUE_GRACE_MS;
            }
            pthread_mutex_unlock(&vfs_mu);
            return us;
        }
        pthread_mutex_unlock(&vfs_mu);
    }
    return vfs_orig->xSleep(vfs_orig, us);
}
static int vfs_current_time(sqlite3_vfs *v, double *out)
{
    (void)v;
    return vfs_orig->xCurrentTime(vfs_orig, out);
}
static int vfs_get_last_error(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    return vfs_orig->xGetLastError ? vfs_orig->xGetLastError(vfs_orig, n, out) : 0;
}
static int vfs_current_time_int64(sqlite3_vfs *v, sqlite3_int64 *out)
{
    (void)v;
    return vfs_orig->xCurrentTimeInt64(vfs_orig, out);
}

int vfs_register(const char *name, int make_default)
{
    if (vfs_orig != NULL) {
        return SQLITE_OK;
    }
    vfs_orig = sqlite3_vfs_find(NULL);
    if (vfs_orig == NULL) {
        return SQLITE_ERROR;
    }
    vfs_name = name;
    file_methods = (sqlite3_io_methods){
        .iVersion = 3,
        .xClose = file_close,
        .xRead = file_read,
        .xWrite = file_write,
        .xTruncate = file_truncate,
        .xSync = file_sync,
        .xFileSize = file_size,
        .xLock = file_lock,
        .xUnlock = file_unlock,
        .xCheckReservedLock = file_check_reserved,
        .xFileControl = file_control,
        .xSectorSize = file_sector_size,
        .xDeviceCharacteristics = file_device_characteristics,
        .xShmMap = file_shm_map,
        .xShmLock = file_shm_lock,
        .xShmBarrier = file_shm_barrier,
        .xShmUnmap = file_shm_unmap,
        .xFetch = file_fetch,
        .xUnfetch = file_unfetch,
    };
    vfs = (sqlite3_vfs){
        .iVersion = 2,
        .szOsFile = (int)sizeof(struct vfs_file) + vfs_orig->szOsFile,
        .mxPathname = vfs_orig->mxPathname,
        .zName = name,
        .xOpen = vfs_open,
        .xDelete = vfs_delete,
        .xAccess = vfs_access,
        .xFullPathname = vfs_full_pathname,
        .xDlOpen = vfs_dl_open,
        .xDlError = vfs_dl_error,
        .xDlSym = vfs_dl_sym,
        .xDlClose = vfs_dl_close,
        .xRandomness = vfs_randomness,
        .xSleep = vfs_sleep,
        .xCurrentTime = vfs_current_time,
        .xGetLastError = vfs_get_last_error,
        .xCurrentTimeInt64 = vfs_current_time_int64,
    };
    return sqlite3_vfs_register(&vfs, make_default);
}
