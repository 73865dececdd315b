/*
 * The walraft command-line program: shared declarations. main.c dispatches the subcommands
 * (serve.c, sql.c, status in main.c); common.c opens databases, prints result tables and the
 * pretty form of a node's status. The program uses only ext/walraft.h and the SQLite API.
 */
#ifndef WALRAFT_SHELL_H
#define WALRAFT_SHELL_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>

#define SHELL_PARAMS_MAX 16
#define SHELL_BUSY_TIMEOUT_MS 5000

/* How result rows are printed. */
struct shell_output {
    bool list;   /* "a|b|c" lines without a header, else aligned columns with a header */
    bool header; /* print the header line in aligned mode */
};

/* A database argument and its extra URI parameters ("name=value"). */
struct shell_db_arg {
    const char *db;
    const char *params[SHELL_PARAMS_MAX];
    int n_params;
};

/* Registers the walraft VFS and SQL functions and routes SQLite's log to stderr. Returns 0, or
 * prints why not and returns 1. */
int shell_init(void);

/* Opens `a->db` (a path or a "file:" URI) with the walraft VFS. Returns 0 with *db set, or
 * prints the error and returns 1. */
int shell_open(const struct shell_db_arg *a, sqlite3 **db /* OUT */);

/* Parses "-p NAME=VALUE" / "--param NAME=VALUE" at argv[*i]; returns 1 when consumed (and moves
 * *i past the value), 0 when argv[*i] is something else, -1 after printing an error. */
int shell_param_arg(int argc, char **argv, int *i, struct shell_db_arg *a);

/* Runs every statement of `sql`, printing result rows to `out` and errors to stderr. Returns 0
 * when all succeeded, else 1 (it stops at the first failure). */
int shell_exec(sqlite3 *db, const char *sql, const struct shell_output *o, FILE *out);

/* Called by shell_exec after each statement that succeeded, when set. */
extern void (*shell_after_statement)(sqlite3 *db);

/* Runs one query with an optional text parameter ?1 and prints its rows as a table. */
int shell_query(sqlite3 *db, const char *sql, const char *arg1, const struct shell_output *o,
                FILE *out);

/* One text value of a query with an optional text parameter ?1: a sqlite3_malloc'd string, or
 * NULL (with the error message in *err, sqlite3_malloc'd, if err is not NULL). */
char *shell_value(sqlite3 *db, const char *sql, const char *arg1, char **err /* OUT */);

/* Prints the status JSON of a node (raft_status() or walraft_remote_status()) for a reader.
 * `db` is any connection (the JSON is taken apart with SQLite's JSON functions). */
int shell_status_pretty(sqlite3 *db, const char *json, FILE *out);

/* Prints an SQLite error as "error: <message> (<CODE>)" on stderr. */
void shell_print_error(sqlite3 *db, int rc);

/* The name of a result code ("SQLITE_READONLY"). */
const char *shell_code_name(int rc);

/* A log line on stderr in the runtime's format: "HH:MM:SS.mmm walraft LEVEL [who] ...". */
void shell_log(const char *level, const char *who, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Subcommands; each returns the process exit status. */
int shell_cmd_serve(int argc, char **argv);
int shell_cmd_sql(int argc, char **argv);
int shell_cmd_status(int argc, char **argv);

/* Usage texts (main.c). `topic` is NULL or a subcommand name; returns 0, or 2 if unknown. */
int shell_help(const char *topic, FILE *out);

#endif
