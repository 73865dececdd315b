/*
 * walraft sql: an SQL prompt, or one batch of statements, on a replicated database. Opening the
 * database restarts its node in this process when DB-raft/ exists (the extension does that on
 * open), so the node runs for as long as the prompt is open and stops on .quit.
 *
 * Line editing and history come from libreadline or libedit when shell/rules.mk found one at
 * build time (WALRAFT_READLINE / WALRAFT_EDITLINE); otherwise lines are read with fgets.
 */
#include "shell/shell.h"

#include <ctype.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ext/walraft.h"

#if defined(WALRAFT_READLINE)
#include <readline/history.h>
#include <readline/readline.h>
#elif defined(WALRAFT_EDITLINE)
#include <editline/readline.h>
#endif

#define LINE_MAX_BYTES 65536
#define HISTORY_MAX 1000
#define LEADER_WAIT_MS 5000

static sqlite3 *interrupt_db;

static void on_sigint(int sig)
{
    (void)sig;
    if (interrupt_db != NULL) {
        sqlite3_interrupt(interrupt_db);
    }
}

struct input {
    bool tty;
    char history[4096];
};

/* One line without its newline, malloc'd; NULL at the end of input. */
static char *read_line(struct input *in, const char *prompt)
{
#if defined(WALRAFT_READLINE) || defined(WALRAFT_EDITLINE)
    if (in->tty) {
        char *line = readline(prompt);
        if (line != NULL && line[0] != '\0') {
            add_history(line);
        }
        return line;
    }
#endif
    if (in->tty) {
        fputs(prompt, stdout);
        fflush(stdout);
    }
    char *buf = malloc(LINE_MAX_BYTES);
    if (buf == NULL || fgets(buf, LINE_MAX_BYTES, stdin) == NULL) {
        free(buf);
        return NULL;
    }
    buf[strcspn(buf, "\n")] = '\0';
    return buf;
}

static void history_open(struct input *in)
{
    const char *home = getenv("HOME");
    in->history[0] = '\0';
    if (!in->tty || home == NULL) {
        return;
    }
    snprintf(in->history, sizeof in->history, "%s/.walraft_history", home);
#if defined(WALRAFT_READLINE) || defined(WALRAFT_EDITLINE)
    stifle_history(HISTORY_MAX);
    read_history(in->history);
#endif
}

static void history_close(struct input *in)
{
#if defined(WALRAFT_READLINE) || defined(WALRAFT_EDITLINE)
    if (in->history[0] != '\0') {
        write_history(in->history);
    }
#else
    (void)in;
#endif
}

static const char dot_help[] =
    ".status              this node's status, readable\n"
    ".nodes               the members (the raft_nodes table)\n"
    ".leader              who leads, and where\n"
    ".transfer [ID]       hand leadership to ID, or to the most up-to-date voter\n"
    ".tables              the tables of the database\n"
    ".mode list|columns   rows as a|b|c lines, or as aligned columns (the default)\n"
    ".headers on|off      the header lines of aligned columns\n"
    ".print TEXT          print TEXT (for scripts that wait for their output)\n"
    ".help                this list\n"
    ".quit, .exit         leave (the node of this process stops)\n"
    "Statements end with ';'. SELECT raft_barrier(); before a read sees every committed write.\n";

enum dot_result { DOT_OK, DOT_FAILED, DOT_QUIT };

static enum dot_result dot_command(sqlite3 *db, char *line, struct shell_output *o)
{
    char *argv[4] = {0};
    if (strncmp(line, ".print", 6) == 0 && (line[6] == '\0' || isspace((unsigned char)line[6]))) {
        printf("%s\n", line[6] != '\0' ? line + 7 : "");
        fflush(stdout);
        return DOT_OK;
    }
    int argc = 0;
    for (char *p = strtok(line, " \t"); p != NULL && argc < 4; p = strtok(NULL, " \t")) {
        argv[argc++] = p;
    }
    const char *cmd = argv[0];
    int rc = 0;
    if (strcmp(cmd, ".quit") == 0 || strcmp(cmd, ".exit") == 0 || strcmp(cmd, ".q") == 0) {
        return DOT_QUIT;
    } else if (strcmp(cmd, ".help") == 0) {
        fputs(dot_help, stdout);
    } else if (strcmp(cmd, ".status") == 0) {
        char *err = NULL;
        char *json = shell_value(db, "SELECT raft_status()", NULL, &err);
        if (json == NULL) {
            fprintf(stderr, "error: %s\n", err != NULL ? err : "no status");
            rc = 1;
        } else {
            rc = shell_status_pretty(db, json, stdout);
        }
        sqlite3_free(err);
        sqlite3_free(json);
    } else if (strcmp(cmd, ".nodes") == 0) {
        struct shell_output t = *o;
        if (!t.list) {
            t.header = true;
        }
        rc = shell_query(db, "SELECT * FROM raft_nodes", NULL, &t, stdout);
    } else if (strcmp(cmd, ".leader") == 0) {
        char *err = NULL;
        char *who =
            shell_value(db, "SELECT raft_leader() || ' at ' || raft_leader('address')", NULL, &err);
        if (err != NULL) {
            fprintf(stderr, "error: %s\n", err);
            rc = 1;
        } else {
            printf("%s\n", who != NULL ? who : "no leader known right now");
        }
        sqlite3_free(err);
        sqlite3_free(who);
    } else if (strcmp(cmd, ".transfer") == 0) {
        char *err = NULL;
        char *to =
            shell_value(db, argv[1] != NULL ? "SELECT raft_transfer(?1)" : "SELECT raft_transfer()",
                        argv[1], &err);
        if (err != NULL) {
            fprintf(stderr, "error: %s\n", err);
            rc = 1;
        } else {
            /* The old leader may not know the new one yet: ask for a moment. */
            for (int i = 0; i < 40 && (to == NULL || to[0] == '\0'); i++) {
                sqlite3_free(to);
                usleep(50 * 1000);
                to = shell_value(db, "SELECT raft_leader()", NULL, NULL);
            }
            printf("leadership transferred; the leader is now %s\n",
                   to != NULL && to[0] != '\0' ? to : "not known yet");
        }
        sqlite3_free(err);
        sqlite3_free(to);
    } else if (strcmp(cmd, ".mode") == 0 && argv[1] != NULL &&
               (strcmp(argv[1], "list") == 0 || strcmp(argv[1], "columns") == 0)) {
        o->list = strcmp(argv[1], "list") == 0;
    } else if (strcmp(cmd, ".headers") == 0 && argv[1] != NULL &&
               (strcmp(argv[1], "on") == 0 || strcmp(argv[1], "off") == 0)) {
        o->header = strcmp(argv[1], "on") == 0;
    } else if (strcmp(cmd, ".tables") == 0) {
        struct shell_output t = {.list = true};
        rc = shell_query(db,
                         "SELECT name FROM sqlite_schema WHERE type IN ('table','view') AND "
                         "name NOT LIKE 'sqlite_%' ORDER BY name",
                         NULL, &t, stdout);
    } else {
        fprintf(stderr, "error: unknown command %s (.help lists them)\n", cmd);
        rc = 1;
    }
    fflush(stdout);
    return rc == 0 ? DOT_OK : DOT_FAILED;
}

/* Reads statements and dot-commands until the end of input or .quit. Returns the number of
 * failures. */
static int loop(sqlite3 *db, struct input *in, struct shell_output *o)
{
    sqlite3_str *sql = sqlite3_str_new(db);
    int failures = 0;
    for (;;) {
        bool fresh = sqlite3_str_length(sql) == 0;
        char *line = read_line(in, fresh ? "walraft> " : "    ...> ");
        if (line == NULL) {
            break;
        }
        if (fresh) {
            const char *p = line;
            while (isspace((unsigned char)*p)) {
                p++;
            }
            if (*p == '\0') {
                free(line);
                continue;
            }
            if (*p == '.') {
                char *cmd = strdup(p);
                free(line);
                enum dot_result r = cmd != NULL ? dot_command(db, cmd, o) : DOT_FAILED;
                free(cmd);
                if (r == DOT_QUIT) {
                    break;
                }
                failures += r == DOT_FAILED;
                continue;
            }
        }
        sqlite3_str_appendall(sql, line);
        sqlite3_str_appendchar(sql, 1, '\n');
        free(line);
        const char *text = sqlite3_str_value(sql);
        if (text != NULL && sqlite3_complete(text)) {
            failures += shell_exec(db, text, o, stdout);
            fflush(stdout);
            sqlite3_str_reset(sql);
        }
    }
    const char *rest = sqlite3_str_value(sql);
    if (rest != NULL && sqlite3_str_length(sql) > 0) {
        /* A last statement without ';'. */
        failures += shell_exec(db, rest, o, stdout);
    }
    sqlite3_free(sqlite3_str_finish(sql));
    return failures;
}

static bool node_here; /* this process runs the node of the database */

/* When this process runs the node (it restarted on open), waits a bounded time for it to learn
 * who leads: right after a restart every node is a follower without a leader, and a write would
 * be refused at once. */
static void wait_for_leader(sqlite3 *db)
{
    char *role = shell_value(db, "SELECT raft_role()", NULL, NULL);
    if (role == NULL) {
        return; /* no node in this process */
    }
    sqlite3_free(role);
    node_here = true;
    for (int i = 0; i < LEADER_WAIT_MS / 50; i++) {
        char *leader = shell_value(db, "SELECT raft_leader()", NULL, NULL);
        sqlite3_free(leader);
        if (leader != NULL) {
            return;
        }
        usleep(50 * 1000);
    }
    fprintf(stderr,
            "note: no leader known after %d s (no quorum yet?): writes are refused until "
            "one is elected\n",
            LEADER_WAIT_MS / 1000);
}

/* After a statement: if it started the node here (raft_bootstrap, raft_join), wait for a leader
 * before the next statement, which is likely a write. */
static void after_statement(sqlite3 *db)
{
    if (!node_here) {
        char *role = shell_value(db, "SELECT raft_role()", NULL, NULL);
        node_here = role != NULL;
        sqlite3_free(role);
        if (node_here) {
            wait_for_leader(db);
        }
    }
}

/* One line for a person at a terminal: which node runs here, if any. */
static void greet(sqlite3 *db, const char *name)
{
    char *who = shell_value(db,
                            "SELECT raft_status()->>'$.id' || ' at ' || "
                            "(raft_status()->>'$.address') || ', ' || raft_role() || ', "
                            "term ' || raft_term()",
                            NULL, NULL);
    char dir[4200];
    struct stat st;
    snprintf(dir, sizeof dir, "%s-raft", name);
    if (who != NULL) {
        printf("walraft sql on %s: node %s. .help for help.\n", name, who);
    } else if (strncmp(name, "file:", 5) != 0 && stat(dir, &st) == 0) {
        printf("walraft sql on %s: its node runs in another process; this prompt can read, not "
               "write. .help for help.\n",
               name);
    } else {
        printf("walraft sql on %s: no node yet; SELECT raft_bootstrap('n1', '127.0.0.1:7001'); "
               "starts a cluster. .help for help.\n",
               name);
    }
    sqlite3_free(who);
}

int shell_cmd_sql(int argc, char **argv)
{
    struct shell_db_arg dba = {0};
    struct shell_output o = {.list = false, .header = true};
    const char *sql = NULL;
    for (int i = 1; i < argc; i++) {
        int k = shell_param_arg(argc, argv, &i, &dba);
        if (k < 0) {
            return 2;
        }
        if (k > 0) {
            continue;
        }
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            return shell_help("sql", stdout);
        } else if (strcmp(a, "--list") == 0) {
            o.list = true;
        } else if (strcmp(a, "--no-header") == 0) {
            o.header = false;
        } else if (a[0] == '-' && a[1] != '\0' && dba.db == NULL) {
            fprintf(stderr, "walraft sql: unknown option '%s' (see walraft help sql)\n", a);
            return 2;
        } else if (dba.db == NULL) {
            dba.db = a;
        } else if (sql == NULL) {
            sql = a;
        } else {
            fprintf(stderr, "walraft sql: one SQL argument only (quote it; separate statements "
                            "with ';')\n");
            return 2;
        }
    }
    if (dba.db == NULL) {
        fprintf(stderr, "walraft sql: which database? walraft sql DB [SQL]\n");
        return 2;
    }
    if (shell_init() != 0) {
        return 1;
    }
    sqlite3 *db = NULL;
    if (shell_open(&dba, &db) != 0) {
        return 1;
    }
    interrupt_db = db;
    wait_for_leader(db);
    shell_after_statement = after_statement;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    int failures;
    if (sql != NULL) {
        sigaction(SIGINT, &sa, NULL);
        failures = shell_exec(db, sql, &o, stdout);
    } else {
        struct input in = {.tty = isatty(STDIN_FILENO) != 0};
        if (in.tty) {
            sigaction(SIGINT, &sa, NULL);
            greet(db, dba.db);
        }
        history_open(&in);
        failures = loop(db, &in, &o);
        history_close(&in);
        if (in.tty) {
            failures = 0; /* a person saw each error as it happened */
        }
    }
    fflush(stdout);
    interrupt_db = NULL;
    walraft_shutdown();
    sqlite3_close(db);
    return failures > 0 ? 1 : 0;
}
