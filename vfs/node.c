/*
 * The node's side of a database (DESIGN §4): attach a database to a node and hold its write lock,
 * apply committed frame sets to the local WAL and wal-index with wal/'s appender, run the node's
 * checkpoints and track the applied floor, detach.
 *
 * The applied floor. Every entry applied or committed here is recorded with the WAL frame that
 * ends it (struct gen_entry), for the current generation of the WAL only. A checkpoint advances
 * nBackfill only after fsync'ing the database file, so every entry whose end frame is at most
 * nBackfill is in the database file; when the log restarts at frame 1 every earlier entry was.
 *
 * The state mark. The floor is a durable lower bound; after a kill the WAL usually holds more
 * (its writes are in the kernel's cache). Entries past the floor written again over that newer
 * state would show a mix of states until the last of them is written again (SQLite calls such a
 * database malformed, and a node killed meanwhile could not open it). So each commit also
 * overwrites a 56-byte record at the start of "<db>-applied", through a shared mapping (no system
 * call on the commit path; the kernel keeps and writes back the page after a kill), unsynced
 * like the WAL:
 *     offset  size  field (little endian)
 *          0     4  magic "WRAM" (0x4d415257)
 *          4     4  flags: 1 = the database file alone holds the entries (written at detach)
 *          8     4  WAL salt 1, as in the wal-index header
 *         12     4  WAL salt 2
 *         16     4  mxFrame: the frame that ends the entry
 *         20     4  0
 *         24     8  the entry's index
 *         32     8  with flag 1: the database file's size in bytes, else 0
 *         40     8  with flag 1: xxh64 of the file's first 100 bytes (SQLite's header), else 0
 *         48     8  xxh64 of bytes 0..47
 * On attach, a record whose salts and mxFrame match the recovered wal-index names exactly the
 * entry the WAL ends with: entries up to it are applied, not written again. With no WAL left,
 * a record with flag 1 whose file size and header hash match the file names the entry the file
 * holds. A record that does not match (lost, torn, another generation, another database at the
 * same path) is ignored: the floor stands.
 */
#include "vfs/internal.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "wal/bytes.h"

#define DEFAULT_MAX_TXN_BYTES (1ull << 30)
#define DEFAULT_CHECKPOINT_FRAMES 1000u
#define ATTACH_WAIT_MS 5000

void vfs_db_set_error(struct vfs_db *db, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(db->last_error, sizeof db->last_error, fmt, ap);
    va_end(ap);
    if (rc != SQLITE_BUSY) {
        /* A busy refusal is retried by the busy handler; logging each retry is noise. */
        sqlite3_log(rc, "%s", db->last_error);
    }
}

static int gens_push(struct vfs_db *db, uint32_t end_frame, uint64_t index)
{
    if (db->n_gens == db->cap_gens) {
        size_t ncap = db->cap_gens ? db->cap_gens * 2 : 64;
        struct gen_entry *g = realloc(db->gens, ncap * sizeof *g);
        if (g == NULL) {
            return SQLITE_NOMEM;
        }
        db->gens = g;
        db->cap_gens = ncap;
    }
    db->gens[db->n_gens].end_frame = end_frame;
    db->gens[db->n_gens].index = index;
    db->n_gens++;
    return SQLITE_OK;
}

/* The log restarted at frame 1: everything recorded before is in the database file. */
static void gens_restart(struct vfs_db *db)
{
    if (db->n_gens > 0 && db->gens[db->n_gens - 1].index > db->floor) {
        db->floor = db->gens[db->n_gens - 1].index;
    }
    db->n_gens = 0;
}

/* Entries whose end frame is at most n_backfill are in the database file. */
static void gens_backfilled(struct vfs_db *db, uint32_t n_backfill)
{
    size_t k = 0;
    while (k < db->n_gens && db->gens[k].end_frame <= n_backfill) {
        if (db->gens[k].index > db->floor) {
            db->floor = db->gens[k].index;
        }
        k++;
    }
    /* Keep the last one: its end frame tells a later restart apart. Drop the others. */
    if (k > 1) {
        memmove(db->gens, db->gens + (k - 1), (db->n_gens - (k - 1)) * sizeof *db->gens);
        db->n_gens -= k - 1;
    }
}

#define MARK_MAGIC 0x4d415257u
#define MARK_BYTES 56u
#define MARK_FILE_HOLDS 1u
#define MARK_MAP_BYTES 4096u

/* Maps the mark file (created, or grown to one page, as needed); NULL if that fails: the node
 * then runs without a mark, as if every record were lost. */
static uint8_t *mark_map(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        return NULL;
    }
    struct stat st;
    void *p = MAP_FAILED;
    if (fstat(fd, &st) == 0 && (st.st_size >= (off_t)MARK_MAP_BYTES ||
                                ftruncate(fd, (off_t)MARK_MAP_BYTES) == 0)) {
        p = mmap(NULL, MARK_MAP_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    }
    close(fd);
    return p == MAP_FAILED ? NULL : p;
}

/* The database file's size and a hash of its header, which a mark with MARK_FILE_HOLDS names. */
static int file_identity(struct vfs_db *db, uint64_t *size, uint64_t *hash)
{
    sqlite3_int64 sz = 0;
    uint8_t hdr[100];
    if (db->dbf->pMethods->xFileSize(db->dbf, &sz) != SQLITE_OK || sz < (sqlite3_int64)sizeof hdr ||
        db->dbf->pMethods->xRead(db->dbf, hdr, sizeof hdr, 0) != SQLITE_OK) {
        return 0;
    }
    *size = (uint64_t)sz;
    *hash = XXH64(hdr, sizeof hdr, 0);
    return 1;
}

/* Records that the WAL as the index header h describes ends with entry `index`. */
static void mark_write(struct vfs_db *db, const struct wal_index_hdr *h, uint64_t index,
                       uint32_t flags)
{
    if (db->mark == NULL) {
        return;
    }
    uint64_t size = 0, hash = 0;
    if ((flags & MARK_FILE_HOLDS) != 0 && !file_identity(db, &size, &hash)) {
        flags &= ~MARK_FILE_HOLDS;
    }
    uint8_t rec[MARK_BYTES] = {0};
    wal_put_le32(rec, MARK_MAGIC);
    wal_put_le32(rec + 4, flags);
    wal_put_le32(rec + 8, wal_index_salt(h, 0));
    wal_put_le32(rec + 12, wal_index_salt(h, 1));
    wal_put_le32(rec + 16, h->mx_frame);
    wal_put_le64(rec + 24, index);
    wal_put_le64(rec + 32, size);
    wal_put_le64(rec + 40, hash);
    wal_put_le64(rec + 48, XXH64(rec, 48, 0));
    /* A copy torn by a kill fails its hash and is ignored. */
    memcpy(db->mark, rec, sizeof rec);
}

/* The entry the WAL described by h ends with, if the mark names it; 0 otherwise. */
static uint64_t mark_read(struct vfs_db *db, const struct wal_index_hdr *h)
{
    uint8_t rec[MARK_BYTES];
    if (db->mark == NULL) {
        return 0;
    }
    memcpy(rec, db->mark, sizeof rec);
    if (wal_get_le32(rec) != MARK_MAGIC || wal_get_le64(rec + 48) != XXH64(rec, 48, 0)) {
        return 0;
    }
    uint32_t flags = wal_get_le32(rec + 4);
    if (h->mx_frame == 0) {
        /* No WAL (the last connection to close checkpointed and deleted it): the database file
         * holds the entry only if the node saw it copied completely when it detached, and the
         * file is still the one it saw. */
        uint64_t size, hash;
        return (flags & MARK_FILE_HOLDS) != 0 && file_identity(db, &size, &hash) &&
                       size == wal_get_le64(rec + 32) && hash == wal_get_le64(rec + 40)
                   ? wal_get_le64(rec + 24)
                   : 0;
    }
    if (wal_get_le32(rec + 8) != wal_index_salt(h, 0) ||
        wal_get_le32(rec + 12) != wal_index_salt(h, 1) || wal_get_le32(rec + 16) != h->mx_frame) {
        return 0;
    }
    return wal_get_le64(rec + 24);
}

void vfs_db_note_commit(struct vfs_db *db, uint64_t index, uint32_t first_frame)
{
    struct wal_index_hdr h;
    if (first_frame == 1) {
        gens_restart(db);
    }
    if (index > db->applied) {
        db->applied = index;
    }
    if (wal_index_hdr_read(&db->shm, &h) == WAL_OK) {
        gens_push(db, h.mx_frame, index);
        mark_write(db, &h, index, 0);
    }
}

/* --- the node's handle ------------------------------------------------------------------------ */

static int shm_map(void *ctx, uint32_t region, int extend, volatile void **out)
{
    struct vfs_db *db = ctx;
    void volatile *p = NULL;
    int rc = db->dbf->pMethods->xShmMap(db->dbf, (int)region, WAL_INDEX_REGION_SIZE, extend, &p);
    if (rc != SQLITE_OK || p == NULL) {
        return 1;
    }
    *out = p;
    return 0;
}

/* The apply path's writes to the WAL (wal_append_txn's io): consecutive frames are gathered and
 * written VFS_WAL_GATHER_BYTES at a time, and the rest at wal_flush, before the transaction is
 * published. */
static int wal_flush(void *ctx)
{
    struct vfs_db *db = ctx;
    size_t n = db->wbuf_len;
    db->wbuf_len = 0;
    return n > 0 && db->walf->pMethods->xWrite(db->walf, db->wbuf, (int)n,
                                               (sqlite3_int64)db->wbuf_off) != SQLITE_OK;
}

static int wal_write(void *ctx, const void *buf, size_t n, uint64_t off)
{
    struct vfs_db *db = ctx;
    if (db->wbuf_len > 0 && (off != db->wbuf_off + db->wbuf_len ||
                             db->wbuf_len + n > VFS_WAL_GATHER_BYTES)) {
        if (wal_flush(db) != 0) {
            return 1;
        }
    }
    if (db->wbuf == NULL || n > VFS_WAL_GATHER_BYTES) {
        if (db->walf->pMethods->xWrite(db->walf, buf, (int)n, (sqlite3_int64)off) != SQLITE_OK) {
            return 1;
        }
    } else {
        if (db->wbuf_len == 0) {
            db->wbuf_off = off;
        }
        memcpy(db->wbuf + db->wbuf_len, buf, n);
        db->wbuf_len += n;
    }
    if (db->wal_written != NULL) {
        db->wal_written(db->wal_written_ctx, buf, n);
    }
    return 0;
}

static int wal_read(void *ctx, void *buf, size_t n, uint64_t off)
{
    struct vfs_db *db = ctx;
    if (wal_flush(db) != 0) {
        return 1;
    }
    return db->walf->pMethods->xRead(db->walf, buf, (int)n, (sqlite3_int64)off) != SQLITE_OK;
}

/* A file name in the layout SQLite hands to xOpen (the unix VFS looks for URI parameters after
 * the name and for four zero bytes before it). */
static char *sqlite_name(const char *path, const char *suffix)
{
    size_t n = strlen(path), s = strlen(suffix);
    char *buf = calloc(1, 4 + n + s + 4);
    if (buf == NULL) {
        return NULL;
    }
    memcpy(buf + 4, path, n);
    memcpy(buf + 4 + n, suffix, s);
    return buf + 4;
}

static void sqlite_name_free(char *name)
{
    if (name != NULL) {
        free(name - 4);
    }
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void close_handles(struct vfs_db *db)
{
    if (db->wal_fd >= 0) {
        close(db->wal_fd);
        db->wal_fd = -1;
    }
    if (db->mark != NULL) {
        munmap(db->mark, MARK_MAP_BYTES);
        db->mark = NULL;
    }
    if (db->walf != NULL) {
        if (db->walf->pMethods != NULL) {
            db->walf->pMethods->xClose(db->walf);
        }
        free(db->walf);
        db->walf = NULL;
    }
    if (db->dbf != NULL) {
        if (db->dbf->pMethods != NULL) {
            db->dbf->pMethods->xClose(db->dbf);
        }
        free(db->dbf);
        db->dbf = NULL;
    }
    if (db->conn != NULL) {
        sqlite3_close(db->conn);
        db->conn = NULL;
    }
    sqlite_name_free(db->name_db);
    sqlite_name_free(db->name_wal);
    db->name_db = db->name_wal = NULL;
}

static int file_install_undo(struct vfs_db *db);

/* Opens the node's own connection: it puts the database in WAL mode and makes sure the wal-index
 * is valid (SQLite runs recovery if needed) before the node takes the WRITE lock for good. */
static int open_conn(struct vfs_db *db, const char *path)
{
    vfs_opening_node = 1;
    int rc = sqlite3_open_v2(path, &db->conn, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs_name);
    vfs_opening_node = 0;
    if (rc != SQLITE_OK) {
        return rc;
    }
    sqlite3_busy_timeout(db->conn, ATTACH_WAIT_MS);
    /* A node killed while it wrote entries again over a newer state (see "The state mark" above:
     * a mark that did not match) left a database whose header may count more pages than its last
     * commit holds. SQLite refuses to open such a file unless the schema is writable; the node
     * must open it, to write the rest of the entries, which makes it whole again. This
     * connection never runs SQL of its users. */
    rc = sqlite3_exec(db->conn, "PRAGMA writable_schema=ON", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        return rc;
    }
    sqlite3_stmt *st;
    rc = sqlite3_prepare_v2(db->conn, "PRAGMA journal_mode=WAL", -1, &st, NULL);
    if (rc != SQLITE_OK) {
        return rc;
    }
    rc = sqlite3_step(st);
    int wal = rc == SQLITE_ROW && sqlite3_column_text(st, 0) != NULL &&
              strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
    sqlite3_finalize(st);
    if (!wal) {
        return SQLITE_CANTOPEN;
    }
    return sqlite3_exec(db->conn,
                        "PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=0;"
                        "SELECT count(*) FROM sqlite_master;",
                        NULL, NULL, NULL);
}

int vfs_db_attach(const char *path, const struct vfs_node_ops *ops, const struct vfs_db_config *cfg,
                  uint64_t applied_floor, struct vfs_db **out)
{
    if (vfs_orig == NULL || path == NULL || ops == NULL || ops->propose == NULL || out == NULL) {
        return SQLITE_MISUSE;
    }
    *out = NULL;
    int rc;
    char *full = malloc((size_t)vfs_orig->mxPathname + 1);
    struct vfs_db *db = calloc(1, sizeof *db);
    if (full == NULL || db == NULL) {
        rc = SQLITE_NOMEM;
        goto err_after_alloc;
    }
    rc = vfs_orig->xFullPathname(vfs_orig, path, vfs_orig->mxPathname + 1, full);
    if (rc != SQLITE_OK) {
        goto err_after_alloc;
    }
    db->ops = *ops;
    db->max_txn_bytes = cfg && cfg->max_txn_bytes ? cfg->max_txn_bytes : DEFAULT_MAX_TXN_BYTES;
    db->checkpoint_frames =
        cfg && cfg->checkpoint_frames ? cfg->checkpoint_frames : DEFAULT_CHECKPOINT_FRAMES;
    db->applied = db->floor = applied_floor;
    db->wal_fd = -1;
    db->wbuf = malloc(VFS_WAL_GATHER_BYTES); /* NULL: the writes go out one by one */
    db->shm.ctx = db;
    db->shm.map = shm_map;

    pthread_mutex_lock(&vfs_mu);
    db->sh = vfs_shared_get(full);
    if (db->sh == NULL || db->sh->node != NULL) {
        rc = db->sh == NULL ? SQLITE_NOMEM : SQLITE_MISUSE;
        if (db->sh != NULL) {
            vfs_shared_put(db->sh);
            db->sh = NULL;
        }
        pthread_mutex_unlock(&vfs_mu);
        goto err_after_alloc;
    }
    pthread_mutex_unlock(&vfs_mu);

    rc = open_conn(db, full);
    if (rc != SQLITE_OK) {
        goto err_after_shared;
    }
    db->name_db = sqlite_name(full, "");
    db->name_wal = sqlite_name(full, "-wal");
    db->dbf = calloc(1, (size_t)vfs_orig->szOsFile);
    db->walf = calloc(1, (size_t)vfs_orig->szOsFile);
    if (db->name_db == NULL || db->name_wal == NULL || db->dbf == NULL || db->walf == NULL) {
        rc = SQLITE_NOMEM;
        goto err_after_shared;
    }
    int oflags = 0;
    rc = vfs_orig->xOpen(vfs_orig, db->name_db, db->dbf,
                         SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_READWRITE, &oflags);
    if (rc != SQLITE_OK) {
        db->dbf->pMethods = NULL;
        goto err_after_shared;
    }
    rc = vfs_orig->xOpen(vfs_orig, db->name_wal, db->walf,
                         SQLITE_OPEN_WAL | SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &oflags);
    if (rc != SQLITE_OK) {
        db->walf->pMethods = NULL;
        goto err_after_shared;
    }
    /* For wal_writeback_step only (a descriptor of our own is safe on the WAL, which has no
     * POSIX locks; closing one on the database file would drop SQLite's). name_wal is a plain
     * path up to its first NUL. */
    db->wal_fd = open(db->name_wal, O_RDONLY | O_CLOEXEC);
    char *mark = sqlite3_mprintf("%s-applied", full);
    if (mark != NULL) {
        db->mark = mark_map(mark);
        sqlite3_free(mark);
    }
    /* SHARED on the database file: nobody can take EXCLUSIVE, which a closing connection needs to
     * checkpoint and delete the WAL, and a journal mode change needs. */
    rc = db->dbf->pMethods->xLock(db->dbf, SQLITE_LOCK_SHARED);
    if (rc != SQLITE_OK) {
        goto err_after_shared;
    }
    volatile void *region0;
    if (shm_map(db, 0, 1, &region0) != 0) {
        rc = SQLITE_IOERR_SHMMAP;
        goto err_after_shared;
    }
    /* WRITE and CHECKPOINT, for the whole attachment; a local writer mid-transaction (or another
     * process) may hold WRITE for a moment. */
    uint64_t deadline = vfs_now_ms() + ATTACH_WAIT_MS;
    for (;;) {
        rc = db->dbf->pMethods->xShmLock(db->dbf, 0, 2, SQLITE_SHM_LOCK | SQLITE_SHM_EXCLUSIVE);
        if (rc != SQLITE_BUSY || vfs_now_ms() >= deadline) {
            break;
        }
        sleep_ms(2);
    }
    if (rc != SQLITE_OK) {
        goto err_after_shared;
    }
    rc = file_install_undo(db);
    if (rc != SQLITE_OK) {
        goto err_after_lock;
    }
    struct wal_index_hdr h;
    if (wal_index_hdr_read(&db->shm, &h) != WAL_OK) {
        rc = SQLITE_PROTOCOL;
        goto err_after_lock;
    }
    /* Entries past the floor that the WAL (or the file) already holds are applied, not
     * written again over it. */
    uint64_t held = mark_read(db, &h);
    if (held > db->applied) {
        db->applied = held;
    }
    if (h.mx_frame > 0) {
        gens_push(db, h.mx_frame, db->applied);
    }

    pthread_mutex_lock(&vfs_mu);
    db->sh->node = db;
    db->sh->index_stale = 1;
    db->sh->refs++; /* the attachment's own reference, dropped by detach */
    vfs_shared_put(db->sh);
    pthread_mutex_unlock(&vfs_mu);
    free(full);
    *out = db;
    return SQLITE_OK;

err_after_lock:
    db->dbf->pMethods->xShmLock(db->dbf, 0, 2, SQLITE_SHM_UNLOCK | SQLITE_SHM_EXCLUSIVE);
err_after_shared:
    if (db->dbf != NULL && db->dbf->pMethods != NULL) {
        db->dbf->pMethods->xShmUnmap(db->dbf, 0);
    }
    close_handles(db);
    pthread_mutex_lock(&vfs_mu);
    vfs_shared_put(db->sh);
    pthread_mutex_unlock(&vfs_mu);
err_after_alloc:
    if (db != NULL) {
        free(db->wbuf);
    }
    free(db);
    free(full);
    return rc;
}

/* --- serialising the node with local writers ----------------------------------------------- */

/* How long the node waits for a doomed local writer to roll back before writing over it. Its
 * next WAL write fails, so it normally ends within milliseconds; waiting closes the window in
 * which its rollback cleans wal-index hash slots (in shared memory, with no VFS call) while the
 * node appends to the same blocks. Only a writer idling inside an open transaction outlasts it. */
#define DOOMED_GRACE_MS 2000

/* Takes the node lock. `wait`: for the writer in progress (user writers queued behind it wait
 * for the node) and for other node work; otherwise only if it is free now (returns 0 if not).
 * `after_beside`: the caller ends its own copy beside local connections (checkpoint_beside)
 * here, with no gap in which another node task could start. */
static int node_take(struct vfs_db *db, int wait, int after_beside)
{
    struct vfs_shared *sh = db->sh;
    pthread_mutex_lock(&vfs_mu);
    if (after_beside) {
        assert(sh->ckpt_busy);
        sh->ckpt_busy = 0;
        vfs_wake(sh);
    }
    if (!wait) {
        int ok = !sh->node_active && !sh->ckpt_busy && (sh->holder == NULL || sh->holder_doomed);
        if (ok) {
            sh->node_active = 1;
        }
        pthread_mutex_unlock(&vfs_mu);
        return ok;
    }
    sh->node_waiting++;
    uint64_t grace_end = 0;
    while (sh->node_active || sh->ckpt_busy || sh->holder != NULL) {
        if (sh->holder != NULL && sh->holder_doomed && !sh->node_active && !sh->ckpt_busy) {
            uint64_t now = vfs_now_ms();
            if (grace_end == 0) {
                grace_end = now + DOOMED_GRACE_MS;
            }
            if (now >= grace_end) {
                break; /* write over it: its frames are above the published mxFrame */
            }
            vfs_timed_wait_ms(&sh->cond, 20);
            continue;
        }
        pthread_cond_wait(&sh->cond, &vfs_mu);
    }
    sh->node_waiting--;
    sh->node_active = 1;
    pthread_mutex_unlock(&vfs_mu);
    return 1;
}

static void node_acquire(struct vfs_db *db)
{
    (void)node_take(db, 1, 0);
}

static void node_release(struct vfs_db *db)
{
    pthread_mutex_lock(&vfs_mu);
    db->sh->node_active = 0;
    vfs_wake(db->sh);
    pthread_mutex_unlock(&vfs_mu);
}

static int checkpoint_locked(struct vfs_db *db);

int vfs_db_detach(struct vfs_db *db)
{
    if (db == NULL) {
        return SQLITE_OK;
    }
    struct vfs_shared *sh = db->sh;
    node_acquire(db);
    /* Copy the log to its end if no reader is in the way: the last connection to close may
     * then delete the WAL, and the mark says the database file holds everything. */
    struct wal_index_hdr h;
    uint32_t backfill = 0;
    if (checkpoint_locked(db) == SQLITE_OK && wal_index_hdr_read(&db->shm, &h) == WAL_OK &&
        wal_ckpt_backfill(&db->shm, &backfill) == WAL_OK && backfill == h.mx_frame) {
        pthread_mutex_lock(&vfs_mu);
        mark_write(db, &h, db->applied, MARK_FILE_HOLDS);
        pthread_mutex_unlock(&vfs_mu);
    }
    pthread_mutex_lock(&vfs_mu);
    while (db->gate_calls > 0 || (sh->holder != NULL)) {
        pthread_cond_wait(&sh->cond, &vfs_mu);
    }
    sh->node = NULL;
    sh->node_active = 0;
    vfs_wake(sh);
    pthread_mutex_unlock(&vfs_mu);

    db->dbf->pMethods->xShmLock(db->dbf, 0, 2, SQLITE_SHM_UNLOCK | SQLITE_SHM_EXCLUSIVE);
    db->dbf->pMethods->xShmUnmap(db->dbf, 0);
    db->dbf->pMethods->xUnlock(db->dbf, SQLITE_LOCK_NONE);
    close_handles(db);
    pthread_mutex_lock(&vfs_mu);
    vfs_shared_put(sh);
    pthread_mutex_unlock(&vfs_mu);
    free(db->gens);
    free(db->wbuf);
    free(db);
    return SQLITE_OK;
}

/* --- apply ------------------------------------------------------------------------------------ */

/* A passive checkpoint of the node's connection, then the applied floor it proves. Run either
 * with the node active (serialised with writers) or beside local connections (ckpt_busy), where
 * SQLITE_BUSY only means "not now" (vfs.c refuses the node's WRITE lock then, see there). */
static int checkpoint_run(struct vfs_db *db, int beside)
{
    int nlog = 0, nckpt = 0;
    int rc = sqlite3_wal_checkpoint_v2(db->conn, NULL, SQLITE_CHECKPOINT_PASSIVE, &nlog, &nckpt);
    if (rc == SQLITE_BUSY && beside) {
        return SQLITE_OK;
    }
    if (rc != SQLITE_OK) {
        pthread_mutex_lock(&vfs_mu);
        vfs_db_set_error(db, rc, "walraft: checkpoint failed: %s", sqlite3_errmsg(db->conn));
        pthread_mutex_unlock(&vfs_mu);
        return rc;
    }
    /* nBackfill is read under vfs_mu: beside a writer, the log may restart at any time, and the
     * restart reaches the gens at that writer's commit, under vfs_mu. Read here, the backfill is
     * then the one of the generation the gens describe, or 0 (restarted, none recorded yet). */
    uint32_t backfill;
    pthread_mutex_lock(&vfs_mu);
    rc = wal_ckpt_backfill(&db->shm, &backfill) == WAL_OK ? SQLITE_OK : SQLITE_PROTOCOL;
    if (rc == SQLITE_OK) {
        gens_backfilled(db, backfill);
    }
    pthread_mutex_unlock(&vfs_mu);
    return rc;
}

/* Checkpoint with the node already active (serialised with writers). */
static int checkpoint_locked(struct vfs_db *db)
{
    return checkpoint_run(db, 0);
}

/* Tries to take READ(1..4) exclusively on the node's handle: no reader uses the WAL's frames. */
static int readers_lock(struct vfs_db *db)
{
    return db->dbf->pMethods->xShmLock(db->dbf, 3 + 1, (int)WAL_NREADER - 1,
                                       SQLITE_SHM_LOCK | SQLITE_SHM_EXCLUSIVE);
}

static void readers_unlock(struct vfs_db *db)
{
    db->dbf->pMethods->xShmLock(db->dbf, 3 + 1, (int)WAL_NREADER - 1,
                                SQLITE_SHM_UNLOCK | SQLITE_SHM_EXCLUSIVE);
}

static int wal_rc(int rc)
{
    switch (rc) {
    case WAL_OK:
        return SQLITE_OK;
    case WAL_ENOMEM:
        return SQLITE_NOMEM;
    case WAL_EIO:
        return SQLITE_IOERR_WRITE;
    case WAL_EPAGESIZE:
    case WAL_EINVAL:
        return SQLITE_CORRUPT;
    case WAL_EFULL:
        return SQLITE_FULL;
    default:
        return SQLITE_PROTOCOL;
    }
}

/* Writes one WAL transaction of the given pages (node active). */
static int append_locked(struct vfs_db *db, const struct wal_txn *t_in, uint64_t index)
{
    struct vfs_shared *sh = db->sh;
    struct wal_txn t = *t_in;
    struct wal_index_hdr h;
    int rc = wal_index_hdr_read(&db->shm, &h);
    if (rc != WAL_OK) {
        return SQLITE_PROTOCOL;
    }
    if (h.mx_frame > 0 && wal_index_page_size(&h) != t.page_size) {
        pthread_mutex_lock(&vfs_mu);
        vfs_db_set_error(db, SQLITE_CORRUPT,
                         "walraft: entry %llu has %u-byte pages, this database %u-byte ones",
                         (unsigned long long)index, t.page_size, wal_index_page_size(&h));
        pthread_mutex_unlock(&vfs_mu);
        return SQLITE_CORRUPT;
    }
    pthread_mutex_lock(&vfs_mu);
    int stale = sh->index_stale;
    sh->index_stale = 0;
    pthread_mutex_unlock(&vfs_mu);
    if (stale && h.mx_frame > 0) {
        /* A local writer that rolled back (or was doomed) left entries above mxFrame. */
        rc = wal_index_cleanup(&db->shm, h.mx_frame);
        if (rc != WAL_OK) {
            return wal_rc(rc);
        }
    }
    int locked_readers = 0;
    uint32_t backfill = 0;
    if (h.mx_frame > 0 && wal_ckpt_backfill(&db->shm, &backfill) == WAL_OK &&
        backfill == h.mx_frame && readers_lock(db) == SQLITE_OK) {
        locked_readers = 1;
        t.restart = 1;
    }
    sqlite3_randomness(sizeof t.salt, t.salt);
    struct wal_io io = {.ctx = db, .write = wal_write, .read = wal_read, .flush = wal_flush};
    struct wal_append_result res;
    db->wbuf_len = 0; /* what a failed append gathered lies past mxFrame: drop it */
    rc = wal_append_txn(&db->shm, &io, &t, &res);
    if (locked_readers) {
        readers_unlock(db);
    }
    if (rc != WAL_OK) {
        pthread_mutex_lock(&vfs_mu);
        sh->index_stale = 1;
        vfs_db_set_error(db, wal_rc(rc), "walraft: cannot apply entry %llu: %s",
                         (unsigned long long)index, wal_strerror(rc));
        pthread_mutex_unlock(&vfs_mu);
        return wal_rc(rc);
    }
    pthread_mutex_lock(&vfs_mu);
    if (res.restarted || res.first_frame == 1) {
        gens_restart(db);
    }
    gens_push(db, res.mx_frame, index);
    if (index > db->applied) {
        db->applied = index;
    }
    sh->commits++;
    if (wal_index_hdr_read(&db->shm, &h) == WAL_OK) {
        mark_write(db, &h, db->applied, 0);
    }
    pthread_mutex_unlock(&vfs_mu);
    return SQLITE_OK;
}

/* After a complete checkpoint (node active): restart the log in the index, as SQLite does, when
 * no reader is on its frames (the next writer starts a new WAL header at frame 1). Queued local
 * writers hold no read mark (vfs.c), so only readers stand in the way; a later checkpoint, or the
 * end of their read transactions, tries again. */
static void restart_if_checkpointed(struct vfs_db *db)
{
    struct wal_index_hdr h;
    uint32_t backfill = 0;
    if (wal_index_hdr_read(&db->shm, &h) != WAL_OK || h.mx_frame == 0 ||
        wal_ckpt_backfill(&db->shm, &backfill) != WAL_OK || backfill != h.mx_frame) {
        return;
    }
    if (readers_lock(db) != SQLITE_OK) {
        return;
    }
    uint32_t salt2;
    sqlite3_randomness(sizeof salt2, &salt2);
    int rc = wal_index_restart(&db->shm, &h, salt2);
    readers_unlock(db);
    if (rc == WAL_OK) {
        pthread_mutex_lock(&vfs_mu);
        gens_restart(db);
        db->sh->commits++; /* the header changed: queued writers need a fresh snapshot */
        pthread_mutex_unlock(&vfs_mu);
    }
}

/* Checkpoints (node active) a WAL of checkpoint_frames frames or more, and restarts it when fully
 * checkpointed and no reader is in the way. `eager`: copy whatever is not copied yet (the end of
 * a local read transaction, where SQLite's own auto-checkpoint runs); otherwise only once another
 * checkpoint_frames frames wait (the apply thread, which runs while the next writer may already
 * be reading: copying a few frames per transaction there cost two fsyncs each).
 *
 * While it checkpoints, local connections that start a read transaction wait for it to end
 * (vfs.c, READ locks): they then read a fully checkpointed log from the database file alone
 * (READ(0)), hold no mark on the log's frames, and the log can restart. */
/* Would checkpoint_and_restart(db, eager) do anything: copy frames or try a restart? Fills in the
 * index header and the backfill it read. */
static int checkpoint_due(struct vfs_db *db, int eager, struct wal_index_hdr *h, uint32_t *backfill)
{
    *backfill = 0;
    if (wal_index_hdr_read(&db->shm, h) != WAL_OK ||
        wal_ckpt_backfill(&db->shm, backfill) != WAL_OK || h->mx_frame < db->checkpoint_frames) {
        return 0;
    }
    return eager || *backfill == h->mx_frame ||
           h->mx_frame - *backfill >= db->checkpoint_frames;
}

static int checkpoint_and_restart(struct vfs_db *db, int eager)
{
    struct wal_index_hdr h;
    uint32_t backfill;
    if (!checkpoint_due(db, eager, &h, &backfill)) {
        return SQLITE_OK;
    }
    int rc = SQLITE_OK;
    if (backfill < h.mx_frame && (eager || h.mx_frame - backfill >= db->checkpoint_frames)) {
        pthread_mutex_lock(&vfs_mu);
        db->sh->ckpt_active = 1;
        pthread_mutex_unlock(&vfs_mu);
        rc = checkpoint_locked(db);
    }
    if (rc == SQLITE_OK) {
        restart_if_checkpointed(db);
    }
    pthread_mutex_lock(&vfs_mu);
    if (db->sh->ckpt_active) {
        db->sh->ckpt_active = 0;
        vfs_wake(db->sh);
    }
    pthread_mutex_unlock(&vfs_mu);
    return rc;
}

/* The WAL needs no sync at commit (the Raft log holds the entries), but a checkpoint syncs it
 * before copying: some 4 MB at once with the default threshold, a burst that every fsync on the
 * same disk (the Raft log's at each commit, other nodes') then waits behind. The apply thread
 * starts the WAL's writeback every WAL_WRITEBACK_FRAMES frames instead (no wait, no cache flush),
 * so that the checkpoint's sync finds little left to write. */
#define WAL_WRITEBACK_FRAMES 64

static void wal_writeback_step(struct vfs_db *db)
{
    struct wal_index_hdr h;
    if (db->wal_fd < 0 || wal_index_hdr_read(&db->shm, &h) != WAL_OK) {
        return;
    }
    if (h.mx_frame < db->wal_written_back) {
        db->wal_written_back = 0; /* the log restarted */
    }
    if (h.mx_frame - db->wal_written_back >= WAL_WRITEBACK_FRAMES) {
        (void)sync_file_range(db->wal_fd, 0, 0, SYNC_FILE_RANGE_WRITE); /* advisory */
        db->wal_written_back = h.mx_frame;
    }
}

/* The node's checkpoint step copies the log beside local connections until at most
 * checkpoint_frames / CKPT_TAIL_DIVISOR frames remain (62 by default), in at most
 * CKPT_BESIDE_PASSES passes (writers add frames meanwhile). */
#define CKPT_TAIL_DIVISOR 16
#define CKPT_BESIDE_PASSES 4

/* Copies the bulk of the log into the database file while local writers and readers go on. A
 * passive checkpoint is made for that: it copies only frames that no reader still needs from the
 * log, while a writer appends beyond them. Holding the node lock instead stopped every writer for
 * the whole copy and its two fsyncs (8-13 ms per 1,000 frames, measured on a virtual disk).
 * The caller has set ckpt_busy, which keeps other node work out meanwhile, and ends it with
 * node_take. Returns SQLITE_OK or the checkpoint's error. */
static int checkpoint_beside(struct vfs_db *db)
{
    uint32_t before = 0;
    for (int pass = 0; pass < CKPT_BESIDE_PASSES; pass++) {
        struct wal_index_hdr h;
        uint32_t backfill;
        if (wal_index_hdr_read(&db->shm, &h) != WAL_OK ||
            wal_ckpt_backfill(&db->shm, &backfill) != WAL_OK ||
            h.mx_frame <= backfill + db->checkpoint_frames / CKPT_TAIL_DIVISOR ||
            (pass > 0 && backfill <= before)) {
            break; /* short enough, restarted under us, or stuck behind a reader */
        }
        before = backfill;
        vfs_pacing = 1;
        int rc = checkpoint_run(db, 1);
        vfs_pacing = 0;
        if (rc != SQLITE_OK) {
            return rc;
        }
    }
    return SQLITE_OK;
}

/* A leader's WAL this many times past checkpoint_frames is checkpointed to the end even if that
 * means waiting for the local writer in progress: under back-to-back writers the node lock is
 * never free when the apply thread looks, and the log would grow without end (the node goes
 * before queued writers, so the wait is one transaction). */
#define LONG_WAL_FACTOR 4

/* The node's checkpoint, run by the apply thread (node not active) after each batch: once
 * checkpoint_frames frames wait, copy them beside local connections; then, if the node lock is
 * free (or the log is LONG_WAL_FACTOR times too long: then after the writer in progress), the
 * short rest, and restart the log. Otherwise the end of a local read transaction finishes it
 * (vfs_shared_read_done), with only the short rest to copy. */
static int checkpoint_step(struct vfs_db *db, uint64_t index)
{
    struct wal_index_hdr h;
    uint32_t backfill;
    int rc = SQLITE_OK;
    wal_writeback_step(db);
    if (checkpoint_due(db, 0, &h, &backfill)) {
        int long_wal = h.mx_frame >= LONG_WAL_FACTOR * db->checkpoint_frames;
        pthread_mutex_lock(&vfs_mu);
        /* Otherwise another node task runs (a local connection's end-of-read checkpoint, a
         * snapshot being taken): only the node lock after it, as for the rest. */
        int beside = !db->sh->node_active && !db->sh->ckpt_busy;
        db->sh->ckpt_busy |= beside;
        pthread_mutex_unlock(&vfs_mu);
        if (beside) {
            rc = checkpoint_beside(db);
        }
        if (node_take(db, long_wal, beside)) {
            if (rc == SQLITE_OK) {
                rc = checkpoint_and_restart(db, 1);
            }
            node_release(db);
        }
    }
    pthread_mutex_lock(&vfs_mu);
    if (index > db->ckpt_index) {
        db->ckpt_index = index;
    }
    pthread_mutex_unlock(&vfs_mu);
    return rc;
}

void vfs_shared_read_done(struct vfs_shared *sh)
{
    pthread_mutex_lock(&vfs_mu);
    struct vfs_db *db = sh->node;
    if (db == NULL || sh->node_active || sh->ckpt_busy || sh->holder != NULL ||
        sh->node_waiting > 0) {
        pthread_mutex_unlock(&vfs_mu);
        return;
    }
    struct wal_index_hdr h;
    uint32_t backfill;
    if (!checkpoint_due(db, 1, &h, &backfill) ||
        (h.mx_frame - backfill >= db->checkpoint_frames && db->applied > db->ckpt_index)) {
        /* Nothing to do, or a long log with entries whose checkpoint step the apply thread
         * has still to run: that step copies them beside this and other connections, where a
         * copy here would hold every writer off for all of it. */
        pthread_mutex_unlock(&vfs_mu);
        return;
    }
    sh->node_active = 1; /* the node lock, taken only if free; detach waits for it */
    pthread_mutex_unlock(&vfs_mu);
    checkpoint_and_restart(db, 1);
    node_release(db);
}

int vfs_db_apply_batch(struct vfs_db *db, const struct vfs_entry *e, size_t n)
{
    if (db == NULL || (n > 0 && e == NULL)) {
        return SQLITE_MISUSE;
    }
    pthread_mutex_lock(&vfs_mu);
    uint64_t applied = db->applied;
    pthread_mutex_unlock(&vfs_mu);
    size_t k = 0;
    while (k < n && e[k].index <= applied) {
        k++;
    }
    if (k == n) {
        /* Already written locally (the leader's own entries): this is the leader's moment to
         * checkpoint. Under back-to-back writers the node lock is never free when this runs;
         * checkpoint_step copies beside them and then waits for one transaction only. */
        return checkpoint_step(db, e[n - 1].index);
    }
    node_acquire(db);
    pthread_mutex_lock(&vfs_mu);
    applied = db->applied; /* a local writer may have committed meanwhile */
    pthread_mutex_unlock(&vfs_mu);
    while (k < n && e[k].index <= applied) {
        k++;
    }
    int rc = SQLITE_OK;
    struct wal_frameset *fs = calloc(n - k + 1, sizeof *fs);
    struct wal_page *pages = NULL;
    uint32_t *seen = NULL;
    if (fs == NULL) {
        rc = SQLITE_NOMEM;
        goto out;
    }
    uint32_t page_size = 0, commit = 0;
    /* Room for max_txn_bytes of pages plus their page numbers (at 512-byte pages). */
    size_t body_max = (size_t)(db->max_txn_bytes + db->max_txn_bytes / 128 + 65536);
    uint64_t total = 0, last_index = applied;
    size_t nfs = 0;
    for (size_t i = k; i < n; i++) {
        last_index = e[i].index;
        if (e[i].len == 0) {
            continue;
        }
        int wrc = wal_frameset_decode(e[i].payload, e[i].len, body_max, &fs[nfs]);
        if (wrc != WAL_OK) {
            rc = wrc == WAL_ENOMEM ? SQLITE_NOMEM : SQLITE_CORRUPT;
            pthread_mutex_lock(&vfs_mu);
            vfs_db_set_error(db, rc, "walraft: entry %llu does not decode: %s",
                             (unsigned long long)e[i].index, wal_strerror(wrc));
            pthread_mutex_unlock(&vfs_mu);
            goto out;
        }
        if (page_size != 0 && fs[nfs].page_size != page_size) {
            nfs++;
            rc = SQLITE_CORRUPT;
            pthread_mutex_lock(&vfs_mu);
            vfs_db_set_error(db, rc, "walraft: entry %llu changes the page size",
                             (unsigned long long)e[i].index);
            pthread_mutex_unlock(&vfs_mu);
            goto out;
        }
        page_size = fs[nfs].page_size;
        commit = fs[nfs].commit_pages;
        total += fs[nfs].n_pages;
        nfs++;
    }
    if (nfs == 0) {
        pthread_mutex_lock(&vfs_mu);
        if (last_index > db->applied) {
            db->applied = last_index;
        }
        pthread_mutex_unlock(&vfs_mu);
        /* Typically a leader's own entry that reached this thread before its writer finished:
         * it is in the WAL now; checkpoint_step below runs after the node lock is released. */
        goto out;
    }
    /* Merge: the newest image of each page, pages beyond the final commit size dropped. */
    pages = malloc(total * sizeof *pages);
    uint32_t nslots = 16;
    while (nslots < total * 2) {
        nslots *= 2;
    }
    seen = calloc(nslots, sizeof *seen);
    if (pages == NULL || seen == NULL) {
        rc = SQLITE_NOMEM;
        goto out;
    }
    uint32_t np = 0;
    for (size_t i = nfs; i-- > 0;) {
        for (uint32_t j = fs[i].n_pages; j-- > 0;) {
            uint32_t pgno = fs[i].pages[j].pgno;
            if (pgno > commit) {
                continue;
            }
            uint32_t hh = (pgno * 383u) & (nslots - 1);
            while (seen[hh] != 0 && seen[hh] != pgno) {
                hh = (hh + 1) & (nslots - 1);
            }
            if (seen[hh] == pgno) {
                continue;
            }
            seen[hh] = pgno;
            pages[np++] = fs[i].pages[j];
        }
    }
    for (uint32_t i = 0; i < np / 2; i++) {
        struct wal_page t = pages[i];
        pages[i] = pages[np - 1 - i];
        pages[np - 1 - i] = t;
    }
    struct wal_txn txn = {
        .page_size = page_size, .commit_pages = commit, .pages = pages, .n_pages = np};
    rc = append_locked(db, &txn, last_index);
out:
    node_release(db);
    if (rc == SQLITE_OK) {
        rc = checkpoint_step(db, last_index);
    }
    if (fs != NULL) {
        for (size_t i = 0; i < n - k + 1; i++) {
            wal_frameset_free(&fs[i]);
        }
    }
    free(fs);
    free(pages);
    free(seen);
    return rc;
}

int vfs_db_apply(struct vfs_db *db, const void *payload, size_t len, uint64_t index)
{
    struct vfs_entry e = {.payload = payload, .len = len, .index = index};
    return vfs_db_apply_batch(db, &e, 1);
}

int vfs_db_checkpoint(struct vfs_db *db, uint64_t *floor_out)
{
    if (db == NULL) {
        return SQLITE_MISUSE;
    }
    node_acquire(db);
    int rc = checkpoint_locked(db);
    node_release(db);
    if (floor_out != NULL) {
        *floor_out = vfs_db_floor(db);
    }
    return rc;
}

uint64_t vfs_db_applied(struct vfs_db *db)
{
    pthread_mutex_lock(&vfs_mu);
    uint64_t v = db->applied;
    pthread_mutex_unlock(&vfs_mu);
    return v;
}

uint64_t vfs_db_floor(struct vfs_db *db)
{
    pthread_mutex_lock(&vfs_mu);
    uint64_t v = db->floor;
    pthread_mutex_unlock(&vfs_mu);
    return v;
}

void vfs_db_step_down(struct vfs_db *db)
{
    pthread_mutex_lock(&vfs_mu);
    if (db->sh->holder != NULL) {
        db->sh->holder_doomed = 1;
        db->sh->index_stale = 1;
    }
    vfs_wake(db->sh);
    pthread_mutex_unlock(&vfs_mu);
}

void vfs_db_last_error(struct vfs_db *db, char *buf, size_t n)
{
    if (n == 0) {
        return;
    }
    pthread_mutex_lock(&vfs_mu);
    snprintf(buf, n, "%s", db->last_error);
    pthread_mutex_unlock(&vfs_mu);
}

/* --- for snapshot.c --------------------------------------------------------------------------- */

void vfs_node_lock(struct vfs_db *db)
{
    node_acquire(db);
}

void vfs_node_unlock(struct vfs_db *db)
{
    node_release(db);
}

int vfs_db_append_locked(struct vfs_db *db, const struct wal_txn *t, uint64_t index)
{
    return append_locked(db, t, index);
}

int vfs_db_checkpoint_locked(struct vfs_db *db)
{
    return checkpoint_locked(db);
}

/* --- a snapshot installed straight into the database file -------------------------------------
 *
 * A database that holds no entry yet (a node that has just joined) takes a snapshot's image
 * straight into its database file: through the WAL every page is written twice (the frames, then
 * the checkpoint's copy) and both files are synced. No reader runs meanwhile: the node holds
 * every read lock, READ(0..4), for the whole copy, and readers wait for it as they wait for a WAL
 * restart; with a reader in the way the WAL path is taken instead. The WAL is emptied first, so
 * that no recovery can ever write old frames over the new file. "<db>-installing" exists while
 * the file is being written: found at attach, the copy was cut short, and the database, which
 * held no entry before it, is emptied again (file_install_undo). */

static int readers_lock_all(struct vfs_db *db)
{
    return db->dbf->pMethods->xShmLock(db->dbf, 3, (int)WAL_NREADER,
                                       SQLITE_SHM_LOCK | SQLITE_SHM_EXCLUSIVE);
}

static void readers_unlock_all(struct vfs_db *db)
{
    db->dbf->pMethods->xShmLock(db->dbf, 3, (int)WAL_NREADER,
                                SQLITE_SHM_UNLOCK | SQLITE_SHM_EXCLUSIVE);
}

/* fsync of the directory that holds `path`: a file created or removed there stays so. */
static int sync_dir_of(const char *path)
{
    char *dir = sqlite3_mprintf("%s", path);
    if (dir == NULL) {
        return SQLITE_NOMEM;
    }
    char *slash = strrchr(dir, '/');
    if (slash == dir) {
        slash[1] = '\0';
    } else if (slash != NULL) {
        *slash = '\0';
    } else {
        dir[0] = '.', dir[1] = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = fd >= 0 && fsync(fd) == 0 ? SQLITE_OK : SQLITE_IOERR_DIR_FSYNC;
    if (fd >= 0) {
        close(fd);
    }
    sqlite3_free(dir);
    return rc;
}

/* Creates (present) or removes the marker "<db>-installing", durably. */
static int installing_mark(struct vfs_db *db, int present)
{
    char *path = sqlite3_mprintf("%s-installing", db->sh->path);
    if (path == NULL) {
        return SQLITE_NOMEM;
    }
    int rc = SQLITE_OK;
    if (present) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        rc = fd >= 0 && fsync(fd) == 0 ? SQLITE_OK : SQLITE_IOERR_WRITE;
        if (fd >= 0) {
            close(fd);
        }
    } else if (unlink(path) != 0 && errno != ENOENT) {
        rc = SQLITE_IOERR_DELETE;
    }
    if (rc == SQLITE_OK) {
        rc = sync_dir_of(path);
    }
    sqlite3_free(path);
    return rc;
}

static int installing_marked(struct vfs_db *db)
{
    char *path = sqlite3_mprintf("%s-installing", db->sh->path);
    int there = path != NULL && access(path, F_OK) == 0;
    sqlite3_free(path);
    return there;
}

/* Truncates the WAL to nothing, durably. */
static int wal_empty(struct vfs_db *db)
{
    int rc = db->walf->pMethods->xTruncate(db->walf, 0);
    return rc == SQLITE_OK ? db->walf->pMethods->xSync(db->walf, SQLITE_SYNC_NORMAL) : rc;
}

/* Readers locked out: restarts the index on an empty WAL, the database file `n_page` pages. */
static int index_restart_empty(struct vfs_db *db, uint32_t n_page, struct wal_index_hdr *h)
{
    uint32_t salt2;
    sqlite3_randomness(sizeof salt2, &salt2);
    if (wal_index_hdr_read(&db->shm, h) != WAL_OK || wal_index_restart(&db->shm, h, salt2) != WAL_OK) {
        return SQLITE_PROTOCOL;
    }
    h->n_page = n_page;
    return wal_index_hdr_publish(&db->shm, h) == WAL_OK ? SQLITE_OK : SQLITE_PROTOCOL;
}

int vfs_db_file_install_begin(struct vfs_db *db)
{
    struct wal_index_hdr h;
    uint32_t backfill = 0;
    pthread_mutex_lock(&vfs_mu);
    uint64_t applied = db->applied;
    pthread_mutex_unlock(&vfs_mu);
    if (applied != 0 || wal_index_hdr_read(&db->shm, &h) != WAL_OK ||
        wal_ckpt_backfill(&db->shm, &backfill) != WAL_OK || backfill != h.mx_frame ||
        readers_lock_all(db) != SQLITE_OK) {
        return SQLITE_BUSY;
    }
    int rc = installing_mark(db, 1);
    if (rc != SQLITE_OK) {
        readers_unlock_all(db);
        return rc;
    }
    /* Every frame is in the database file (backfill == mxFrame): the WAL can go. */
    rc = wal_empty(db);
    if (rc != SQLITE_OK) {
        (void)index_restart_empty(db, h.n_page, &h);
        (void)installing_mark(db, 0);
        readers_unlock_all(db);
    }
    return rc;
}

int vfs_db_file_install_end(struct vfs_db *db, uint32_t n_page, uint64_t index, int ok)
{
    int rc = SQLITE_OK;
    if (!ok) {
        /* The file holds part of the image: empty it again (it held no entry before). */
        n_page = 0;
        rc = db->dbf->pMethods->xTruncate(db->dbf, 0);
        if (rc == SQLITE_OK) {
            rc = db->dbf->pMethods->xSync(db->dbf, SQLITE_SYNC_NORMAL);
        }
    }
    struct wal_index_hdr h;
    int irc = index_restart_empty(db, n_page, &h);
    if (rc == SQLITE_OK && irc == SQLITE_OK) {
        rc = installing_mark(db, 0);
    }
    readers_unlock_all(db);
    pthread_mutex_lock(&vfs_mu);
    gens_restart(db);
    if (ok && rc == SQLITE_OK && irc == SQLITE_OK) {
        db->applied = index;
        if (db->floor < index) {
            db->floor = index;
        }
        mark_write(db, &h, index, MARK_FILE_HOLDS);
    }
    db->sh->commits++; /* the header changed: queued writers need a fresh snapshot */
    pthread_mutex_unlock(&vfs_mu);
    return rc != SQLITE_OK ? rc : irc;
}

/* At attach, with the node's locks: a copy into the database file that was cut short leaves the
 * marker; the database held no entry before it and is emptied again. */
static int file_install_undo(struct vfs_db *db)
{
    if (!installing_marked(db)) {
        return SQLITE_OK;
    }
    uint64_t deadline = vfs_now_ms() + ATTACH_WAIT_MS;
    int rc;
    while ((rc = readers_lock_all(db)) == SQLITE_BUSY && vfs_now_ms() < deadline) {
        sleep_ms(2);
    }
    if (rc != SQLITE_OK) {
        return rc;
    }
    rc = wal_empty(db);
    if (rc == SQLITE_OK) {
        rc = vfs_db_file_install_end(db, 0, 0, 0); /* unlocks the readers */
    } else {
        readers_unlock_all(db);
    }
    if (rc == SQLITE_OK) {
        sqlite3_log(SQLITE_NOTICE, "walraft: %s: a snapshot install was cut short: the database, "
                    "which held no entry, is empty again", db->sh->path);
    }
    return rc;
}
