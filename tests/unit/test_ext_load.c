/* The extension registers the VFS "walraft", and a WAL database opened through it works. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <cmocka.h>
#include <sqlite3.h>

#include "ext/walraft.h"

static void test_ext_registers_vfs(void **state)
{
    (void)state;
    sqlite3 *db;
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    char *err = NULL;
    int rc = sqlite3_walraft_init(db, &err, NULL);
    assert_true(rc == SQLITE_OK || rc == SQLITE_OK_LOAD_PERMANENTLY);
    assert_non_null(sqlite3_vfs_find("walraft"));
    sqlite3_close(db);
}

static void test_ext_wal_database_through_vfs(void **state)
{
    (void)state;
    char dir[] = "/tmp/walraft-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/a.db", dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                                     "walraft"),
                     SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "PRAGMA journal_mode=WAL; CREATE TABLE t(a);"
                                  "INSERT INTO t VALUES(1),(2),(3);",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT sum(a) FROM t", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 6);
    sqlite3_finalize(st);
    sqlite3_close(db);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ext_registers_vfs),
        cmocka_unit_test(test_ext_wal_database_through_vfs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
