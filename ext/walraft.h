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

/* Asks the node listening at `addr` ("host:port") for its status, as the JSON of raft_status().
 * Returns 0 with a malloc'd string in *json (release it with free()), or non-zero with a
 * message in err. Needs no database and no cluster membership. */
int walraft_remote_status(const char *addr, int timeout_ms, char **json, char *err,
                          size_t err_len);

#ifdef __cplusplus
}
#endif
#endif
