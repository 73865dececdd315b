/*
 * app.c — an application that links libwalraft.a and uses replicated databases with the plain
 * SQLite API.
 *
 * A walraft node lives in the process that opens its database, and only that process can write
 * it. A real deployment runs one application process per machine, each hosting the node of its
 * own copy of the database; to keep this example self-contained, one process hosts a whole
 * three-node cluster on 127.0.0.1 (three databases under a temporary directory, one node each).
 *
 * What it shows:
 *   - sqlite3_walraft_init() once, then sqlite3_open_v2("file:...?vfs=walraft") as usual;
 *   - raft_bootstrap() on the first node, raft_join() on the others;
 *   - a write on a follower fails with SQLITE_READONLY: ask raft_leader() who leads and send
 *     the write there (here: the connection of that node; in a real deployment: the
 *     application instance at raft_leader('address'));
 *   - SQLITE_BUSY right after an election (the new leader is catching up): retry shortly;
 *   - a write whose outcome is unknown (SQLITE_IOERR after a leadership loss) is retried safely
 *     because each write carries a unique request id (INSERT OR IGNORE);
 *   - a read on a replica after raft_barrier() sees every write committed before it.
 *
 * Build: make examples (or see examples/rules.mk); run: build/examples/app [DIR]. Exits 0 when
 * every check passed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nftw's FTW_DEPTH */
#endif
#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ext/walraft.h"

#define NODES 3

struct node {
    char id[8];
    char addr[32];
    char path[4096];
    sqlite3 *db;
};

static struct node nodes[NODES];

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "app: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A TCP port that was free a moment ago on 127.0.0.1. */
static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        die("cannot find a free port");
    }
    close(fd);
    return ntohs(a.sin_port);
}

/* The first column of the first row of `sql` as text (malloc'd), or NULL with *rc set. */
static char *query_text(sqlite3 *db, const char *sql, int *rc)
{
    sqlite3_stmt *stmt;
    char *out = NULL;
    *rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
    if (*rc != SQLITE_OK) {
        return NULL;
    }
    *rc = sqlite3_step(stmt);
    if (*rc == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(stmt, 0);
        out = t != NULL ? strdup((const char *)t) : NULL;
        *rc = SQLITE_OK;
    } else if (*rc == SQLITE_DONE) {
        *rc = SQLITE_OK;
    }
    sqlite3_finalize(stmt);
    return out;
}

static struct node *node_by_id(const char *id)
{
    for (int i = 0; i < NODES; i++) {
        if (id != NULL && strcmp(nodes[i].id, id) == 0) {
            return &nodes[i];
        }
    }
    return NULL;
}

/* Who leads, as this node knows it (NULL during an election). */
static struct node *leader_seen_by(struct node *n)
{
    int rc;
    char *id = query_text(n->db, "SELECT raft_leader()", &rc);
    struct node *l = node_by_id(id);
    free(id);
    return l;
}

/* The node this application believes leads; corrected when a write says otherwise. */
static struct node *writer;

/*
 * Records one event, written through whichever node leads. `request` is unique per logical
 * write, so retrying after an unknown outcome can never apply it twice.
 */
static void record_event(const char *request, const char *what)
{
    struct node *n = writer;
    for (int attempt = 0; attempt < 100; attempt++) {
        sqlite3_stmt *stmt;
        int rc = sqlite3_prepare_v2(
            n->db, "INSERT OR IGNORE INTO events(request, what) VALUES (?, ?)", -1, &stmt, NULL);
        if (rc != SQLITE_OK) {
            die("prepare on %s: %s", n->id, sqlite3_errmsg(n->db));
        }
        sqlite3_bind_text(stmt, 1, request, -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 2, what, -1, SQLITE_STATIC);
        rc = sqlite3_step(stmt);
        int code = sqlite3_extended_errcode(n->db);
        sqlite3_finalize(stmt);
        if (rc == SQLITE_DONE) {
            if (n != writer) {
                printf("  %s: written on the leader %s, which takes the next writes\n", request,
                       n->id);
                writer = n;
            }
            return;
        }
        switch (code & 0xff) {
        case SQLITE_READONLY: {
            /* Not the leader: ask it who is, and go there. */
            struct node *l = leader_seen_by(n);
            printf("  %s: %s is not the leader (SQLITE_READONLY); raft_leader() says %s\n", request,
                   n->id, l != NULL ? l->id : "nobody yet");
            if (l != NULL) {
                n = l;
            } else {
                sleep_ms(100); /* an election is on */
            }
            break;
        }
        case SQLITE_BUSY:
            sleep_ms(50); /* a new leader catching up, or another writer */
            break;
        case SQLITE_IOERR:
            /* The commit did not complete: the outcome may be unknown. The request id makes
             * the retry safe; without one, read after raft_barrier() to find out. */
            printf("  %s: outcome unknown on %s (%s); retrying, safely\n", request, n->id,
                   sqlite3_errmsg(n->db));
            sleep_ms(100);
            break;
        default:
            die("write on %s: %s (code %d)", n->id, sqlite3_errmsg(n->db), code);
        }
    }
    die("could not record %s", request);
}

static void exec(struct node *n, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(n->db, sql, NULL, NULL, &err) != SQLITE_OK) {
        die("%s on %s: %s", sql, n->id, err);
    }
}

static long long count_on(struct node *n, bool barrier)
{
    int rc;
    if (barrier) {
        /* ReadIndex: once it returns, this node has applied every write committed before. */
        free(query_text(n->db, "SELECT raft_barrier()", &rc));
        if (rc != SQLITE_OK) {
            die("raft_barrier on %s: %s", n->id, sqlite3_errmsg(n->db));
        }
    }
    char *v = query_text(n->db, "SELECT count(*) FROM events", &rc);
    if (v == NULL) {
        die("count on %s: %s", n->id, sqlite3_errmsg(n->db));
    }
    long long c = atoll(v);
    free(v);
    return c;
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

int main(int argc, char **argv)
{
    char tmpl[] = "/tmp/walraft-app.XXXXXX";
    const char *dir = argc > 1 ? argv[1] : mkdtemp(tmpl);
    if (dir == NULL || strlen(dir) > 1024) {
        die("cannot create a temporary directory (or its name is too long)");
    }
    char *err = NULL;
    int rc = sqlite3_walraft_init(NULL, &err, NULL);
    if (rc != SQLITE_OK && rc != SQLITE_OK_LOAD_PERMANENTLY) {
        die("sqlite3_walraft_init: %s", err);
    }

    /* Open one database per node. Election timeout 500 ms (the default is 1000). */
    for (int i = 0; i < NODES; i++) {
        struct node *n = &nodes[i];
        snprintf(n->id, sizeof n->id, "n%d", i + 1);
        snprintf(n->addr, sizeof n->addr, "127.0.0.1:%d", free_port());
        snprintf(
            n->path, sizeof n->path,
            "file:%.1024s/n%d.db?vfs=walraft&raft_election_timeout_ms=500&raft_heartbeat_ms=50",
            dir, i + 1);
        rc = sqlite3_open_v2(n->path, &n->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL);
        if (rc != SQLITE_OK) {
            die("open %s: %s", n->path, sqlite3_errmsg(n->db));
        }
        sqlite3_busy_timeout(n->db, 5000);
        sqlite3_extended_result_codes(n->db, 1);
    }

    /* n1 starts the cluster; n2 and n3 join through it. */
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT raft_bootstrap('n1', '%s')", nodes[0].addr);
    exec(&nodes[0], sql);
    for (int i = 1; i < NODES; i++) {
        snprintf(sql, sizeof sql, "SELECT raft_join('%s', '%s', '%s')", nodes[i].id, nodes[i].addr,
                 nodes[0].addr);
        exec(&nodes[i], sql);
    }
    printf("cluster: n1 %s, n2 %s, n3 %s under %s\n", nodes[0].addr, nodes[1].addr, nodes[2].addr,
           dir);

    /* The schema, through the leader (record_event finds it; DDL goes the same way). */
    struct node *l = NULL;
    for (int i = 0; i < 100 && (l = leader_seen_by(&nodes[0])) == NULL; i++) {
        sleep_ms(50);
    }
    if (l == NULL) {
        die("no leader after 5 s");
    }
    exec(l, "CREATE TABLE events(request TEXT PRIMARY KEY, what TEXT, "
            "at TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')))");
    /* A follower applies the new schema a moment later; raft_barrier() waits for it, so that
     * statements prepared on any node see the table. */
    for (int i = 0; i < NODES; i++) {
        count_on(&nodes[i], true);
    }

    /* Writes started on a follower find their way to the leader. */
    printf("writing 10 events, starting on n3 (a follower):\n");
    writer = &nodes[2];
    for (int i = 0; i < 10; i++) {
        char req[32];
        snprintf(req, sizeof req, "req-%d", i);
        record_event(req, "signup");
    }

    /* A read on a replica, after raft_barrier(). */
    long long c = count_on(&nodes[1], true);
    printf("n2 (a replica) reads %lld events after raft_barrier()\n", c);
    if (c != 10) {
        die("n2 reads %lld events, expected 10", c);
    }

    /* Leadership moves; the writer notices through SQLITE_READONLY and follows. */
    int trc;
    char *to = query_text(l->db, "SELECT raft_transfer('n2')", &trc);
    if (trc != SQLITE_OK) {
        die("raft_transfer: %s", sqlite3_errmsg(l->db));
    }
    free(to);
    printf("leadership transferred to n2; writing 10 more:\n");
    for (int i = 10; i < 20; i++) {
        char req[32];
        snprintf(req, sizeof req, "req-%d", i);
        record_event(req, "order");
    }
    /* A retried request id is ignored: the write is idempotent. */
    record_event("req-3", "signup");

    for (int i = 0; i < NODES; i++) {
        c = count_on(&nodes[i], true);
        printf("%s reads %lld events\n", nodes[i].id, c);
        if (c != 20) {
            die("%s reads %lld events, expected 20", nodes[i].id, c);
        }
    }

    /* Stop the nodes, then close: the databases stay ordinary SQLite files. */
    walraft_shutdown();
    for (int i = 0; i < NODES; i++) {
        sqlite3_close(nodes[i].db);
    }
    if (argc <= 1) {
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
    printf("app: ok\n");
    return 0;
}
