/*
 * Snapshots of an attached database (DESIGN §5): the database itself is the image.
 *
 * Image stream layout (little endian), what vfs_snapshot_read produces and vfs_db_install_*
 * consumes:
 *     offset  size  field
 *          0     4  magic "WRSI" (0x49535257)
 *          4     4  format version, 2
 *          8     4  page size in bytes
 *         12     4  number of pages n
 *         16     8  the log index the image holds exactly (the sender's applied index)
 *         24     -  pages 1..n, page_size bytes each, in order
 *
 * The image holds exactly the entries up to its own index, which may be past the index Raft labels
 * the snapshot with (the applied floor: see send_snapshot in consensus/replication.c). The
 * receiver records the image's index as applied, so the entries between the two, already in the
 * image, are not written again: written over the newer image one by one, they would show readers
 * (and a restart, if the node is killed meanwhile) a mix of states, such as a header counting
 * pages the database does not have yet.
 *
 * Sending. vfs_db_snapshot_open pins a consistent image while writes go on: under the node lock
 * (no writer, no apply) it reads the wal-index header (mxFrame M, database size) and starts a
 * read transaction on a connection of its own, whose snapshot is therefore exactly M. That read
 * lock keeps checkpoints from copying newer frames into the database file and, unless the log is
 * copied to its end (then the reader holds READ(0) and the log may restart), keeps every frame up
 * to M in place. So page P is the newest frame of P at or below M, or else page P of the database
 * file; a fully copied log is not read at all. The node lock is released at once; reads then run
 * on the caller's thread, concurrently with applies and local writers.
 *
 * Installing. The follower spools the stream into a temporary file beside the database, then,
 * under the node lock, appends every page as ONE WAL transaction whose commit size is the
 * image's page count (readers see the old state or the new one, never a mix), syncs the WAL
 * (the node drops its log before the image once the install returns), checkpoints, and records
 * the image's log index as applied. Memory stays bounded: the pages are mapped from the
 * spool file, not copied. An image that holds no more than the database already does (a stream
 * overtaken by a newer one, or by entries applied meanwhile) is not installed: the database never
 * goes back to an older state. A database that holds no entry yet (a node that has just joined)
 * takes the image straight into its database file instead, with every reader locked out for the
 * copy (node.c, vfs_db_file_install_begin): half the writes and one sync instead of three; with
 * a reader in the way it takes the WAL path.
 */
#include "vfs/internal.h"
#include "wal/bytes.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define IMAGE_MAGIC 0x49535257u
#define IMAGE_VERSION 2u
#define IMAGE_HEADER_BYTES 24u

struct vfs_snapshot {
    struct vfs_db *db;
    sqlite3 *conn;       /* holds the read transaction that pins the image */
    uint32_t mx_frame;   /* the image: frames up to here ... */
    uint32_t page_size;  /* ... of this size ... */
    uint32_t n_pages;    /* ... and this many pages */
    uint64_t index;      /* the entries it holds: up to this one */
    uint8_t header[IMAGE_HEADER_BYTES];
    uint64_t offset;     /* bytes of the stream produced so far */
    uint8_t *page;       /* one page, the one being produced */
    uint32_t page_no;    /* page in `page` (0: none) */
};

/* The database's page size and size in pages when the WAL holds nothing (mxFrame 0): from the
 * database file's header and length. */
static int file_geometry(struct vfs_db *db, uint32_t *page_size, uint32_t *n_pages)
{
    uint8_t hdr[100];
    sqlite3_int64 size = 0;
    int rc = db->dbf->pMethods->xFileSize(db->dbf, &size);
    if (rc != SQLITE_OK) {
        return rc;
    }
    if (size < 100) {
        *page_size = 4096;
        *n_pages = 0;
        return SQLITE_OK;
    }
    rc = db->dbf->pMethods->xRead(db->dbf, hdr, sizeof hdr, 0);
    if (rc != SQLITE_OK) {
        return rc;
    }
    uint32_t ps = (uint32_t)hdr[16] << 8 | hdr[17];
    if (ps == 1) {
        ps = 65536;
    }
    if (ps < 512 || ps > 65536 || (ps & (ps - 1)) != 0) {
        return SQLITE_CORRUPT;
    }
    *page_size = ps;
    *n_pages = (uint32_t)(size / ps);
    return SQLITE_OK;
}

int vfs_db_snapshot_open(struct vfs_db *db, struct vfs_snapshot **out, uint64_t *size)
{
    struct vfs_snapshot *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return SQLITE_NOMEM;
    }
    s->db = db;
    char *uri = sqlite3_mprintf("file:%s?vfs=%s", db->sh->path, vfs_name);
    int rc = uri != NULL ? SQLITE_OK : SQLITE_NOMEM;
    if (rc == SQLITE_OK) {
        rc = sqlite3_open_v2(uri, &s->conn, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL);
    }
    sqlite3_free(uri);
    if (rc != SQLITE_OK) {
        goto err;
    }
    vfs_node_lock(db);
    struct wal_index_hdr h;
    uint32_t backfill = 0;
    if (wal_index_hdr_read(&db->shm, &h) != WAL_OK ||
        wal_ckpt_backfill(&db->shm, &backfill) != WAL_OK) {
        rc = SQLITE_PROTOCOL;
    }
    pthread_mutex_lock(&vfs_mu);
    s->index = db->applied;
    pthread_mutex_unlock(&vfs_mu);
    if (rc == SQLITE_OK) {
        /* Nothing changes the database while the node lock is held: the read transaction
         * starts at exactly this header, which holds exactly the entries up to applied. */
        rc = sqlite3_exec(s->conn, "BEGIN; SELECT count(*) FROM sqlite_schema;", NULL, NULL,
                          NULL);
    }
    vfs_node_unlock(db);
    if (rc != SQLITE_OK) {
        goto err;
    }
    /* A log copied to its end pins nothing: SQLite's reader then reads the database file alone
     * (READ(0)), and writers may restart the log and fill frames 1, 2, ... of the next
     * generation while the image is read. The file holds exactly the image (no checkpoint can
     * copy past a reader), so it is read alone too. */
    s->mx_frame = backfill < h.mx_frame ? h.mx_frame : 0;
    if (h.mx_frame > 0) {
        s->page_size = wal_index_page_size(&h);
        s->n_pages = h.n_page;
    } else {
        rc = file_geometry(db, &s->page_size, &s->n_pages);
        if (rc != SQLITE_OK) {
            goto err;
        }
    }
    s->page = malloc(s->page_size);
    if (s->page == NULL) {
        rc = SQLITE_NOMEM;
        goto err;
    }
    wal_put_le32(s->header, IMAGE_MAGIC);
    wal_put_le32(s->header + 4, IMAGE_VERSION);
    wal_put_le32(s->header + 8, s->page_size);
    wal_put_le32(s->header + 12, s->n_pages);
    wal_put_le64(s->header + 16, s->index);
    if (size != NULL) {
        *size = IMAGE_HEADER_BYTES + (uint64_t)s->n_pages * s->page_size;
    }
    *out = s;
    return SQLITE_OK;

err:
    pthread_mutex_lock(&vfs_mu);
    vfs_db_set_error(db, rc, "walraft: cannot open a snapshot of %s: %s", db->sh->path,
                     s->conn != NULL ? sqlite3_errmsg(s->conn) : sqlite3_errstr(rc));
    pthread_mutex_unlock(&vfs_mu);
    sqlite3_close(s->conn);
    free(s);
    return rc;
}

/* Reads page `pgno` of the pinned image into s->page. */
static int read_page(struct vfs_snapshot *s, uint32_t pgno)
{
    struct vfs_db *db = s->db;
    uint32_t frame = 0;
    if (s->mx_frame > 0 && wal_index_lookup(&db->shm, pgno, 0, s->mx_frame, &frame) != WAL_OK) {
        return SQLITE_PROTOCOL;
    }
    int rc;
    if (frame != 0) {
        uint64_t off = wal_frame_offset(s->page_size, frame) + WAL_FRAME_HDR_SIZE;
        rc = db->walf->pMethods->xRead(db->walf, s->page, (int)s->page_size,
                                        (sqlite3_int64)off);
    } else {
        rc = db->dbf->pMethods->xRead(db->dbf, s->page, (int)s->page_size,
                                       (sqlite3_int64)(pgno - 1) * s->page_size);
        if (rc == SQLITE_IOERR_SHORT_READ) {
            rc = SQLITE_OK; /* past the end of the file: a zeroed page, as SQLite reads it */
        }
    }
    s->page_no = pgno;
    return rc;
}

int vfs_snapshot_read(struct vfs_snapshot *s, void *buf, size_t cap, size_t *n)
{
    uint64_t total = IMAGE_HEADER_BYTES + (uint64_t)s->n_pages * s->page_size;
    uint8_t *out = buf;
    size_t done = 0;
    while (done < cap && s->offset < total) {
        if (s->offset < IMAGE_HEADER_BYTES) {
            size_t k = IMAGE_HEADER_BYTES - (size_t)s->offset;
            k = k < cap - done ? k : cap - done;
            memcpy(out + done, s->header + s->offset, k);
            done += k;
            s->offset += k;
            continue;
        }
        uint64_t body = s->offset - IMAGE_HEADER_BYTES;
        uint32_t pgno = (uint32_t)(body / s->page_size) + 1;
        size_t in_page = (size_t)(body % s->page_size);
        if (s->page_no != pgno) {
            int rc = read_page(s, pgno);
            if (rc != SQLITE_OK) {
                return rc;
            }
        }
        size_t k = s->page_size - in_page;
        k = k < cap - done ? k : cap - done;
        memcpy(out + done, s->page + in_page, k);
        done += k;
        s->offset += k;
    }
    *n = done;
    return SQLITE_OK;
}

void vfs_snapshot_close(struct vfs_snapshot *s)
{
    if (s == NULL) {
        return;
    }
    sqlite3_exec(s->conn, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(s->conn);
    free(s->page);
    free(s);
}

int vfs_db_checksum(struct vfs_db *db, uint64_t *hash, uint32_t *n_pages)
{
    struct vfs_snapshot *s;
    int rc = vfs_db_snapshot_open(db, &s, NULL);
    if (rc != SQLITE_OK) {
        return rc;
    }
    XXH64_state_t *st = XXH64_createState();
    if (st == NULL) {
        vfs_snapshot_close(s);
        return SQLITE_NOMEM;
    }
    XXH64_reset(st, 0);
    /* The content only: replicas holding the same entries may count trailing entries that
     * change nothing (a new leader's first) differently. */
    memset(s->header + 16, 0, 8);
    uint8_t buf[65536];
    size_t n;
    do {
        rc = vfs_snapshot_read(s, buf, sizeof buf, &n);
        if (rc == SQLITE_OK) {
            XXH64_update(st, buf, n);
        }
    } while (rc == SQLITE_OK && n > 0);
    *hash = XXH64_digest(st);
    *n_pages = s->n_pages;
    XXH64_freeState(st);
    vfs_snapshot_close(s);
    return rc;
}

/* --- installing ------------------------------------------------------------------------------ */

struct vfs_install {
    int fd;
    char *path;
    uint64_t index;
    uint64_t bytes;
};

static void install_drop(struct vfs_db *db)
{
    struct vfs_install *in = db->install;
    if (in == NULL) {
        return;
    }
    if (in->fd >= 0) {
        close(in->fd);
    }
    if (in->path != NULL) {
        unlink(in->path);
        sqlite3_free(in->path);
    }
    free(in);
    db->install = NULL;
}

int vfs_db_install_begin(struct vfs_db *db, uint64_t index)
{
    install_drop(db);
    struct vfs_install *in = calloc(1, sizeof *in);
    if (in == NULL) {
        return SQLITE_NOMEM;
    }
    in->fd = -1;
    in->index = index;
    /* A file of our own beside the database (never the database or its -wal/-shm). */
    in->path = sqlite3_mprintf("%s-snapshot-in", db->sh->path);
    if (in->path == NULL) {
        free(in);
        return SQLITE_NOMEM;
    }
    in->fd = open(in->path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    db->install = in;
    if (in->fd < 0) {
        pthread_mutex_lock(&vfs_mu);
        vfs_db_set_error(db, SQLITE_CANTOPEN, "walraft: cannot create %s: %s", in->path,
                         strerror(errno));
        pthread_mutex_unlock(&vfs_mu);
        install_drop(db);
        return SQLITE_CANTOPEN;
    }
    return SQLITE_OK;
}

int vfs_db_install_chunk(struct vfs_db *db, const void *buf, size_t len)
{
    struct vfs_install *in = db->install;
    if (in == NULL) {
        return SQLITE_MISUSE;
    }
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t k = pwrite(in->fd, p, len, (off_t)in->bytes);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            int full = k < 0 && errno == ENOSPC;
            pthread_mutex_lock(&vfs_mu);
            vfs_db_set_error(db, full ? SQLITE_FULL : SQLITE_IOERR_WRITE,
                             "walraft: cannot spool the snapshot to %s: %s", in->path,
                             k < 0 ? strerror(errno) : "short write");
            pthread_mutex_unlock(&vfs_mu);
            install_drop(db);
            return full ? SQLITE_FULL : SQLITE_IOERR_WRITE;
        }
        p += k;
        len -= (size_t)k;
        in->bytes += (uint64_t)k;
    }
    return SQLITE_OK;
}

static int install_fail(struct vfs_db *db, int rc, const char *why)
{
    pthread_mutex_lock(&vfs_mu);
    vfs_db_set_error(db, rc, "walraft: cannot install snapshot %llu: %s",
                     (unsigned long long)(db->install ? db->install->index : 0), why);
    pthread_mutex_unlock(&vfs_mu);
    install_drop(db);
    return rc;
}

/* The received image, mapped; the part the WAL append has consumed is dropped from the process
 * (its pages stay in the file and the kernel's page cache), so installing a 200 MB image does not
 * raise the node's RSS by 200 MB. The append reads the image once, in order. */
struct install_map {
    uintptr_t base;
    size_t len, released;
    size_t page; /* the system page size: madvise works in whole pages */
};

#define INSTALL_RELEASE_BYTES (1u << 20)

static void install_written(void *ctx, const void *buf, size_t n)
{
    struct install_map *m = ctx;
    uintptr_t p = (uintptr_t)buf;
    if (p < m->base || p - m->base > m->len || n > m->len - (p - m->base)) {
        return; /* a frame header, not the image */
    }
    size_t end = ((p - m->base) + n) / m->page * m->page;
    if (end >= m->released + INSTALL_RELEASE_BYTES) {
        (void)madvise((void *)(m->base + m->released), end - m->released, MADV_DONTNEED);
        m->released = end;
    }
}

/* Writes the image's pages into the database file (page 1 first: a copy cut short leaves a file
 * SQLite still opens, which the node then empties), truncates it to them and syncs it. */
static int write_image_file(struct vfs_db *db, const uint8_t *pages, uint32_t ps, uint32_t np,
                            struct install_map *im)
{
    sqlite3_file *f = db->dbf;
    int rc = f->pMethods->xWrite(f, pages, (int)ps, 0);
    uint32_t step = VFS_WAL_GATHER_BYTES / ps > 0 ? VFS_WAL_GATHER_BYTES / ps : 1;
    for (uint32_t i = 1; i < np && rc == SQLITE_OK; i += step) {
        uint32_t k = np - i < step ? np - i : step;
        const uint8_t *p = pages + (size_t)i * ps;
        rc = f->pMethods->xWrite(f, p, (int)((size_t)k * ps), (sqlite3_int64)i * ps);
        install_written(im, p, (size_t)k * ps);
    }
    if (rc == SQLITE_OK) {
        rc = f->pMethods->xTruncate(f, (sqlite3_int64)np * ps);
    }
    if (rc == SQLITE_OK) {
        rc = f->pMethods->xSync(f, SQLITE_SYNC_NORMAL);
    }
    return rc;
}

/* Whether page 1 of an image of np pages gives a database size above np, while its size field is
 * valid (SQLite trusts it when the "version-valid-for" number at offset 92 equals the change
 * counter at 24). SQLite refuses to open such a database ("malformed"); installed, it would stop
 * the node at its next start. */
static int image_overcounts(const uint8_t *page1, uint32_t np)
{
    uint32_t counted = wal_get_be32(page1 + 28);
    return wal_get_be32(page1 + 92) == wal_get_be32(page1 + 24) && counted > np;
}

/* Node lock held: makes the database durable as it is (WAL synced, checkpointed). */
static int keep_state(struct vfs_db *db)
{
    int rc = db->walf->pMethods->xSync(db->walf, SQLITE_SYNC_NORMAL);
    return rc == SQLITE_OK ? vfs_db_checkpoint_locked(db) : rc;
}

/* Node lock held: the image into the database file of a database that holds nothing yet; or
 * SQLITE_BUSY, having changed nothing, when the file cannot take it (node.c says when). */
static int install_into_file(struct vfs_db *db, const uint8_t *pages, uint32_t ps, uint32_t np,
                             uint64_t held, struct install_map *im)
{
    int rc = vfs_db_file_install_begin(db);
    if (rc != SQLITE_OK) {
        return rc;
    }
    rc = write_image_file(db, pages, ps, np, im);
    int erc = vfs_db_file_install_end(db, np, held, rc == SQLITE_OK);
    return rc != SQLITE_OK ? rc : erc;
}

/* Node lock held: the image as ONE WAL transaction, made durable and checkpointed; the image's
 * index becomes the applied index. */
static int install_into_wal(struct vfs_db *db, const uint8_t *image, uint32_t ps, uint32_t np,
                            uint64_t held, struct install_map *im)
{
    struct wal_page *pages = malloc((np > 0 ? np : 1) * sizeof *pages);
    if (pages == NULL) {
        return SQLITE_NOMEM;
    }
    for (uint32_t i = 0; i < np; i++) {
        pages[i].pgno = i + 1;
        pages[i].data = image + (size_t)i * ps;
    }
    struct wal_txn t = {.page_size = ps, .commit_pages = np, .pages = pages, .n_pages = np};
    db->wal_written = install_written;
    db->wal_written_ctx = im;
    int rc = np > 0 ? vfs_db_append_locked(db, &t, held) : SQLITE_OK;
    db->wal_written = NULL;
    db->wal_written_ctx = NULL;
    free(pages);
    if (rc == SQLITE_OK) {
        /* The node records the image as its log's base once this returns, and drops the log
         * before it: the image must be durable now. The checkpoint syncs the WAL only when it
         * has frames to copy, which a reader on older frames can prevent. */
        rc = np > 0 ? keep_state(db) : vfs_db_checkpoint_locked(db);
    }
    if (rc == SQLITE_OK) {
        pthread_mutex_lock(&vfs_mu);
        db->applied = held;
        pthread_mutex_unlock(&vfs_mu);
    }
    return rc;
}

int vfs_db_install_end(struct vfs_db *db, uint64_t index, int ok)
{
    struct vfs_install *in = db->install;
    if (!ok || in == NULL) {
        install_drop(db);
        return ok ? SQLITE_MISUSE : SQLITE_OK;
    }
    if (in->bytes < IMAGE_HEADER_BYTES) {
        return install_fail(db, SQLITE_CORRUPT, "the image is shorter than its header");
    }
    uint8_t *map = mmap(NULL, (size_t)in->bytes, PROT_READ, MAP_SHARED, in->fd, 0);
    if (map == MAP_FAILED) {
        return install_fail(db, SQLITE_IOERR_READ, strerror(errno));
    }
    uint32_t ps = wal_get_le32(map + 8), np = wal_get_le32(map + 12);
    uint64_t held = wal_get_le64(map + 16);
    const char *bad = NULL;
    if (wal_get_le32(map) != IMAGE_MAGIC || wal_get_le32(map + 4) != IMAGE_VERSION || ps < 512 ||
        ps > 65536 || (ps & (ps - 1)) != 0 ||
        in->bytes != IMAGE_HEADER_BYTES + (uint64_t)np * ps) {
        bad = "malformed image (header or length)";
    } else if (held < index) {
        /* The entries between would be taken as applied and never written. */
        bad = "the image holds fewer entries than its label";
    } else if (np > 0 && image_overcounts(map + IMAGE_HEADER_BYTES, np)) {
        bad = "its database header counts more pages than the image holds";
    }
    if (bad != NULL) {
        munmap(map, (size_t)in->bytes);
        return install_fail(db, SQLITE_CORRUPT, bad);
    }
    struct install_map im = {.base = (uintptr_t)map,
                             .len = (size_t)in->bytes,
                             .page = (size_t)sysconf(_SC_PAGESIZE)};
    const uint8_t *pages = map + IMAGE_HEADER_BYTES;
    vfs_node_lock(db);
    pthread_mutex_lock(&vfs_mu);
    uint64_t applied = db->applied;
    pthread_mutex_unlock(&vfs_mu);
    int rc;
    const char *why;
    if (held <= applied) {
        /* This database already holds every entry of the image, and maybe more (a stream that
         * was overtaken by a newer one, or by entries applied from the log): installed, the
         * image would take it back to an older state, past entries the log may no longer hold.
         * Keep it, and make it durable as an install would (the node then records `index` as
         * its log's base). */
        rc = keep_state(db);
        why = "cannot make the database durable";
        if (rc == SQLITE_OK) {
            sqlite3_log(SQLITE_NOTICE, "walraft: snapshot %llu not installed: it holds entries up "
                        "to %llu, this database up to %llu",
                        (unsigned long long)index, (unsigned long long)held,
                        (unsigned long long)applied);
        }
    } else {
        /* A database that holds nothing yet takes the image straight into its file (node.c
         * decides: SQLITE_BUSY otherwise). */
        rc = np > 0 ? install_into_file(db, pages, ps, np, held, &im) : SQLITE_BUSY;
        why = "cannot write the image into the database file";
        if (rc == SQLITE_BUSY) {
            rc = install_into_wal(db, pages, ps, np, held, &im);
            why = "cannot write the image into the WAL";
        }
    }
    vfs_node_unlock(db);
    munmap(map, (size_t)in->bytes);
    if (rc != SQLITE_OK) {
        return install_fail(db, rc, why);
    }
    install_drop(db);
    return SQLITE_OK;
}
