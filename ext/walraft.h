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

int sqlite3_walraft_init(sqlite3 *db, char **err, const sqlite3_api_routines *api);

#ifdef __cplusplus
}
#endif
#endif
