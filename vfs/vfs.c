/*
 * The walraft VFS. For now a pass-through over the unix VFS: every method forwards to the
 * underlying VFS and file. Replication (frame capture, writer gate, apply) builds on this shim.
 */
#include "vfs/vfs.h"
#include "vfs/sqlite_api.h"

#include <string.h>

struct vfs_file {
    sqlite3_file base;   /* our methods */
    sqlite3_file *real;  /* the underlying file, allocated right after this struct */
};

static sqlite3_vfs vfs;                 /* the walraft VFS */
static sqlite3_vfs *orig;               /* the VFS it wraps */
static sqlite3_io_methods file_methods; /* filled in by vfs_register */

#define REAL(f) (((struct vfs_file *)(f))->real)

static int file_close(sqlite3_file *f)
{
    int rc = REAL(f)->pMethods ? REAL(f)->pMethods->xClose(REAL(f)) : SQLITE_OK;
    f->pMethods = NULL;
    return rc;
}
static int file_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
    return REAL(f)->pMethods->xRead(REAL(f), buf, n, off);
}
static int file_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
    return REAL(f)->pMethods->xWrite(REAL(f), buf, n, off);
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
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int file_shm_map(sqlite3_file *f, int region, int size, int extend, void volatile **pp)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), region, size, extend, pp);
}
static int file_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    return REAL(f)->pMethods->xShmLock(REAL(f), offset, n, flags);
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

static int vfs_open(sqlite3_vfs *v, const char *name, sqlite3_file *f, int flags, int *out_flags)
{
    struct vfs_file *file = (struct vfs_file *)f;
    int rc;
    (void)v;
    memset(file, 0, sizeof *file);
    file->real = (sqlite3_file *)(file + 1);
    rc = orig->xOpen(orig, name, file->real, flags, out_flags);
    if (rc == SQLITE_OK) {
        f->pMethods = &file_methods;
    }
    return rc;
}
static int vfs_delete(sqlite3_vfs *v, const char *name, int sync_dir)
{
    (void)v;
    return orig->xDelete(orig, name, sync_dir);
}
static int vfs_access(sqlite3_vfs *v, const char *name, int flags, int *out)
{
    (void)v;
    return orig->xAccess(orig, name, flags, out);
}
static int vfs_full_pathname(sqlite3_vfs *v, const char *name, int n, char *out)
{
    (void)v;
    return orig->xFullPathname(orig, name, n, out);
}
static void *vfs_dl_open(sqlite3_vfs *v, const char *name)
{
    (void)v;
    return orig->xDlOpen(orig, name);
}
static void vfs_dl_error(sqlite3_vfs *v, int n, char *msg)
{
    (void)v;
    orig->xDlError(orig, n, msg);
}
static void (*vfs_dl_sym(sqlite3_vfs *v, void *h, const char *sym))(void)
{
    (void)v;
    return orig->xDlSym(orig, h, sym);
}
static void vfs_dl_close(sqlite3_vfs *v, void *h)
{
    (void)v;
    orig->xDlClose(orig, h);
}
static int vfs_randomness(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    return orig->xRandomness(orig, n, out);
}
static int vfs_sleep(sqlite3_vfs *v, int us)
{
    (void)v;
    return orig->xSleep(orig, us);
}
static int vfs_current_time(sqlite3_vfs *v, double *out)
{
    (void)v;
    return orig->xCurrentTime(orig, out);
}
static int vfs_get_last_error(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    return orig->xGetLastError ? orig->xGetLastError(orig, n, out) : 0;
}
static int vfs_current_time_int64(sqlite3_vfs *v, sqlite3_int64 *out)
{
    (void)v;
    return orig->xCurrentTimeInt64(orig, out);
}

int vfs_register(const char *name, int make_default)
{
    if (orig != NULL) {
        return SQLITE_OK;
    }
    orig = sqlite3_vfs_find(NULL);
    if (orig == NULL) {
        return SQLITE_ERROR;
    }
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
        .szOsFile = (int)sizeof(struct vfs_file) + orig->szOsFile,
        .mxPathname = orig->mxPathname,
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
