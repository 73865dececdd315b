/*
 * How vfs/ and ext/ reach the SQLite API. In the loadable extension the calls go through the routine
 * table SQLite hands to sqlite3_walraft_init (sqlite3ext.h); built with -DSQLITE_CORE (the static
 * library and the tests) they are direct calls.
 */
#ifndef WALRAFT_SQLITE_API_H
#define WALRAFT_SQLITE_API_H
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT3
#endif
