/*
 * The extension entry point: registers the VFS "walraft" and the SQL functions, and asks SQLite to
 * keep the library loaded for the life of the process (the VFS must outlive every connection).
 */
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1

#include "vfs/vfs.h"

#include <stddef.h>

#define WALRAFT_API __attribute__((visibility("default")))

WALRAFT_API int sqlite3_walraft_init(sqlite3 *db, char **err, const sqlite3_api_routines *api);

int sqlite3_walraft_init(sqlite3 *db, char **err, const sqlite3_api_routines *api)
{
    int rc;
    (void)db;
    SQLITE_EXTENSION_INIT2(api);
    rc = vfs_register("walraft", 0);
    if (rc != SQLITE_OK) {
        if (err != NULL) {
            *err = sqlite3_mprintf("walraft: cannot register the VFS (%s)", sqlite3_errstr(rc));
        }
        return rc;
    }
    return SQLITE_OK_LOAD_PERMANENTLY;
}
