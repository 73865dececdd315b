/*
 * walraft — public API for applications that link libwalraft.a.
 *
 * Call sqlite3_walraft_init once per process (or register it with sqlite3_auto_extension) before
 * opening databases with the VFS "walraft".
 */
#ifndef WALRAFT_H
#define WALRAFT_H

#include <sqlite3.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Registers the VFS "walraft" (once per process) and the SQL functions on `db` (may be NULL)
 * and on every connection opened afterwards. Returns SQLITE_OK_LOAD_PERMANENTLY or an error. */
int sqlite3_walraft_init(sqlite3 *db, char **err, const sqlite3_api_routines *api);

/* Stops every node this process runs (their databases stay as they are: ordinary SQLite
 * files). Call before exit when a clean shutdown matters; connections may stay open. */
void walraft_shutdown(void);

#ifdef __cplusplus
}
#endif
#endif
