/*
 * The extension entry point. sqlite3_walraft_init registers the VFS "walraft" once per process,
 * and for every connection (directly, then through sqlite3_auto_extension for connections opened
 * later) the SQL functions and tables, and restarts the node of a database opened with the
 * walraft VFS whose -raft/ directory holds one. It asks SQLite to keep the library loaded for the
 * life of the process: the VFS and the nodes must outlive every connection.
 */
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1

#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "consensus/io/logging.h"
#include "ext/internal.h"
#include "ext/walraft.h"

#define WALRAFT_API __attribute__((visibility("default")))

WALRAFT_API int sqlite3_walraft_init(sqlite3 *db, char **err, const sqlite3_api_routines *api);
WALRAFT_API void walraft_shutdown(void);
WALRAFT_API int walraft_remote_status(const char *addr, int timeout_ms, char **json, char *err,
                                      size_t err_len);

/* Restarts the node of `db`'s main database if it has one and none runs in this process. A
 * failure is logged, not fatal: the database still opens (another process may run the node). */
static void maybe_restart(sqlite3 *db)
{
    sqlite3_vfs *vfs = NULL;
    const char *path = sqlite3_db_filename(db, "main");
    if (ext_node_starting() || path == NULL || path[0] == '\0' ||
        sqlite3_file_control(db, "main", SQLITE_FCNTL_VFS_POINTER, &vfs) != SQLITE_OK ||
        vfs == NULL || strcmp(vfs->zName, "walraft") != 0 || ext_node_find(path) != NULL ||
        !ext_node_dir_exists(path)) {
        return;
    }
    struct ext_config cfg;
    char why[600];
    if (ext_config_from_uri(path, &cfg, why, sizeof why) != SQLITE_OK) {
        sqlite3_log(SQLITE_MISUSE, "walraft: %s: %s; the node restarts with the default", path, why);
    }
    int rc = ext_node_start(path, &cfg, EXT_RESTART, NULL, NULL, NULL, 0, why, sizeof why);
    if (rc != SQLITE_OK && rc != SQLITE_MISUSE) {
        sqlite3_log(rc, "walraft: the node of %s did not restart: %s", path, why);
        /* Also where the node's own lines go (stderr): an application rarely sets SQLite's
         * log, and a node that stops at once would otherwise leave no reason anywhere. */
        io_logf(IO_LOG_ERROR, NULL, "the node of %s did not restart: %s", path, why);
    }
}

static int connection_init(sqlite3 *db, char **err, const sqlite3_api_routines *api)
{
    (void)err;
    (void)api;
    int rc = ext_register_functions(db);
    if (rc == SQLITE_OK) {
        rc = ext_register_vtabs(db);
    }
    if (rc == SQLITE_OK) {
        maybe_restart(db);
    }
    return rc;
}

/* Stops the nodes when the process exits normally (the sqlite3 shell's .quit, a program that
 * returns from main): their threads end and their databases are left clean. The library stays
 * loaded for the life of the process, so the handler stays valid. */
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;

static void register_exit_handler(void)
{
    atexit(walraft_shutdown);
}

int sqlite3_walraft_init(sqlite3 *db, char **err, const sqlite3_api_routines *api)
{
    int rc;
    SQLITE_EXTENSION_INIT2(api);
    pthread_once(&exit_once, register_exit_handler);
    rc = vfs_register("walraft", 0);
    if (rc != SQLITE_OK) {
        if (err != NULL) {
            *err = sqlite3_mprintf("walraft: cannot register the VFS (%s)", sqlite3_errstr(rc));
        }
        return rc;
    }
    rc = sqlite3_auto_extension((void (*)(void))connection_init);
    if (rc == SQLITE_OK && db != NULL) {
        rc = connection_init(db, err, api);
    }
    if (rc != SQLITE_OK) {
        return rc;
    }
    return SQLITE_OK_LOAD_PERMANENTLY;
}

void walraft_shutdown(void)
{
    ext_node_stop_all();
}

int walraft_remote_status(const char *addr, int timeout_ms, char **json, char *err, size_t err_len)
{
    return io_node_remote_status(addr, timeout_ms, json, err, err_len);
}
