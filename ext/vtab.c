/*
 * The tables of DESIGN §9, as eponymous virtual tables over the node's status:
 *   raft_nodes  one row per member: id, address, role, is_leader, match_index, last_contact_ms
 *   raft_stats  one row per counter: name, value
 * Both read the node of the connection's main database; without a node they are empty.
 */
#include "ext/internal.h"

#include <stdlib.h>
#include <string.h>

struct cursor {
    sqlite3_vtab_cursor base;
    struct io_node_status st;
    bool have;
    int row;
};

struct table {
    sqlite3_vtab base;
    sqlite3 *db;
    bool stats; /* raft_stats, else raft_nodes */
};

static int connect(sqlite3 *db, void *aux, int argc, const char *const *argv, sqlite3_vtab **out,
                   char **err)
{
    (void)argc;
    (void)argv;
    (void)err;
    bool stats = aux != NULL;
    int rc = sqlite3_declare_vtab(
        db, stats ? "CREATE TABLE x(name TEXT, value INTEGER)"
                  : "CREATE TABLE x(id TEXT, address TEXT, role TEXT, is_leader INTEGER, "
                    "match_index INTEGER, last_contact_ms INTEGER)");
    if (rc != SQLITE_OK) {
        return rc;
    }
    struct table *t = sqlite3_malloc(sizeof *t);
    if (t == NULL) {
        return SQLITE_NOMEM;
    }
    memset(t, 0, sizeof *t);
    t->db = db;
    t->stats = stats;
    *out = &t->base;
    return SQLITE_OK;
}

static int disconnect(sqlite3_vtab *v)
{
    sqlite3_free(v);
    return SQLITE_OK;
}

static int best_index(sqlite3_vtab *v, sqlite3_index_info *info)
{
    (void)v;
    info->estimatedCost = 10;
    info->estimatedRows = 16;
    return SQLITE_OK;
}

static int open_cursor(sqlite3_vtab *v, sqlite3_vtab_cursor **out)
{
    (void)v;
    struct cursor *c = sqlite3_malloc(sizeof *c);
    if (c == NULL) {
        return SQLITE_NOMEM;
    }
    memset(c, 0, sizeof *c);
    *out = &c->base;
    return SQLITE_OK;
}

static int close_cursor(sqlite3_vtab_cursor *cur)
{
    sqlite3_free(cur);
    return SQLITE_OK;
}

static const struct {
    const char *name;
    size_t offset;
} counters[] = {
    {"proposals", offsetof(struct io_node_status, proposals)},
    {"commits", offsetof(struct io_node_status, commits)},
    {"commit_latency_p50_us", offsetof(struct io_node_status, commit_latency_p50_us)},
    {"commit_latency_p99_us", offsetof(struct io_node_status, commit_latency_p99_us)},
    {"elections", offsetof(struct io_node_status, elections)},
    {"snapshots_sent", offsetof(struct io_node_status, snapshots_sent)},
    {"snapshots_installed", offsetof(struct io_node_status, snapshots_installed)},
    {"bytes_replicated", offsetof(struct io_node_status, bytes_replicated)},
    {"term", offsetof(struct io_node_status, term)},
    {"commit_index", offsetof(struct io_node_status, commit_index)},
    {"applied_index", offsetof(struct io_node_status, applied_index)},
    {"applied_floor", offsetof(struct io_node_status, applied_floor)},
    {"last_index", offsetof(struct io_node_status, last_index)},
    {"first_index", offsetof(struct io_node_status, first_index)},
};
#define N_COUNTERS ((int)(sizeof counters / sizeof counters[0]))

static int filter(sqlite3_vtab_cursor *cur, int idx, const char *idx_str, int argc,
                  sqlite3_value **argv)
{
    (void)idx;
    (void)idx_str;
    (void)argc;
    (void)argv;
    struct cursor *c = (struct cursor *)cur;
    struct table *t = (struct table *)cur->pVtab;
    const char *path = sqlite3_db_filename(t->db, "main");
    struct ext_node *n = path != NULL ? ext_node_find(path) : NULL;
    c->row = 0;
    c->have = n != NULL && io_node_status(n->node, &c->st) == 0;
    return SQLITE_OK;
}

static int rows(struct cursor *c)
{
    struct table *t = (struct table *)c->base.pVtab;
    if (!c->have) {
        return 0;
    }
    return t->stats ? N_COUNTERS : (int)c->st.n_peers;
}

static int next(sqlite3_vtab_cursor *cur)
{
    ((struct cursor *)cur)->row++;
    return SQLITE_OK;
}

static int eof(sqlite3_vtab_cursor *cur)
{
    struct cursor *c = (struct cursor *)cur;
    return c->row >= rows(c);
}

static const char *role_text(uint8_t role)
{
    return role == RAFT_VOTER ? "voter" : role == RAFT_REPLICA ? "replica" : "learner";
}

static int column(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int col)
{
    struct cursor *c = (struct cursor *)cur;
    struct table *t = (struct table *)cur->pVtab;
    if (t->stats) {
        if (col == 0) {
            sqlite3_result_text(ctx, counters[c->row].name, -1, SQLITE_STATIC);
        } else {
            uint64_t v;
            memcpy(&v, (const char *)&c->st + counters[c->row].offset, sizeof v);
            sqlite3_result_int64(ctx, (sqlite3_int64)v);
        }
        return SQLITE_OK;
    }
    const struct io_node_peer_status *p = &c->st.peers[c->row];
    switch (col) {
    case 0:
        sqlite3_result_text(ctx, p->server.name, -1, SQLITE_TRANSIENT);
        break;
    case 1:
        sqlite3_result_text(ctx, p->server.addr, -1, SQLITE_TRANSIENT);
        break;
    case 2:
        sqlite3_result_text(ctx, role_text(p->server.role), -1, SQLITE_STATIC);
        break;
    case 3:
        sqlite3_result_int(ctx, p->is_leader);
        break;
    case 4:
        sqlite3_result_int64(ctx, (sqlite3_int64)p->match_index);
        break;
    default:
        if (c->st.state == RAFT_LEADER && p->server.id != c->st.id) {
            sqlite3_result_int64(ctx, (sqlite3_int64)p->last_contact_ms);
        } else {
            sqlite3_result_null(ctx);
        }
        break;
    }
    return SQLITE_OK;
}

static int rowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *out)
{
    *out = ((struct cursor *)cur)->row;
    return SQLITE_OK;
}

static sqlite3_module module = {
    .iVersion = 0,
    .xCreate = NULL, /* eponymous only */
    .xConnect = connect,
    .xBestIndex = best_index,
    .xDisconnect = disconnect,
    .xDestroy = disconnect,
    .xOpen = open_cursor,
    .xClose = close_cursor,
    .xFilter = filter,
    .xNext = next,
    .xEof = eof,
    .xColumn = column,
    .xRowid = rowid,
};

int ext_register_vtabs(sqlite3 *db)
{
    static int stats_tag = 1;
    int rc = sqlite3_create_module(db, "raft_nodes", &module, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_create_module(db, "raft_stats", &module, &stats_tag);
    }
    return rc;
}
