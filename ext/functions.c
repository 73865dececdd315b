/*
 * The SQL functions of DESIGN §9. Each acts on the node of the calling connection's "main"
 * database, which must be open with the walraft VFS. Errors are SQL errors whose message says
 * what to do; a call that fails changes nothing.
 */
#include "ext/internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MEMBERSHIP_TIMEOUT_MS 30000
#define TRANSFER_TIMEOUT_MS 10000
#define BARRIER_TIMEOUT_MS 5000

/* The calling connection's database path if it is open with the walraft VFS; else sets an
 * error on ctx and returns NULL. */
static const char *db_path(sqlite3_context *ctx)
{
    sqlite3 *db = sqlite3_context_db_handle(ctx);
    sqlite3_vfs *vfs = NULL;
    const char *path = sqlite3_db_filename(db, "main");
    if (path == NULL || path[0] == '\0') {
        sqlite3_result_error(ctx, "walraft: the main database is temporary or in memory; open a "
                                  "file with the walraft VFS (file:app.db?vfs=walraft)", -1);
        return NULL;
    }
    if (sqlite3_file_control(db, "main", SQLITE_FCNTL_VFS_POINTER, &vfs) != SQLITE_OK ||
        vfs == NULL || strcmp(vfs->zName, "walraft") != 0) {
        sqlite3_result_error(ctx, "walraft: this database is not open with the walraft VFS; open "
                                  "it as file:app.db?vfs=walraft",
                             -1);
        return NULL;
    }
    return path;
}

/* The node of the calling connection's database, or NULL with an error set. */
static struct ext_node *need_node(sqlite3_context *ctx)
{
    const char *path = db_path(ctx);
    if (path == NULL) {
        return NULL;
    }
    struct ext_node *n = ext_node_find(path);
    if (n == NULL) {
        char *msg = sqlite3_mprintf(
            "walraft: no node runs for %s in this process: start one with raft_bootstrap(id, "
            "addr) or raft_join(id, addr, peer_addr)%s",
            path, ext_node_dir_exists(path) ? " (its node directory exists: another process may "
                                               "run it)"
                                             : "");
        sqlite3_result_error(ctx, msg, -1);
        sqlite3_free(msg);
    }
    return n;
}

static void result_rc(sqlite3_context *ctx, struct ext_node *n, int rc, const char *what)
{
    char why[512];
    ext_describe(n, rc, why, sizeof why);
    char *msg = sqlite3_mprintf("walraft: %s: %s", what, why);
    sqlite3_result_error(ctx, msg, -1);
    sqlite3_result_error_code(ctx, rc == RAFT_ENOTLEADER ? SQLITE_READONLY
                                   : rc == RAFT_EBUSY || rc == RAFT_ECHANGE ||
                                           rc == RAFT_ETRANSFER
                                       ? SQLITE_BUSY
                                       : SQLITE_ERROR);
    sqlite3_free(msg);
}

/* A server name: 1..31 bytes of letters, digits, '-', '_', '.'. */
static const char *arg_name(sqlite3_context *ctx, sqlite3_value *v, const char *what)
{
    const char *s = sqlite3_value_type(v) == SQLITE_TEXT ? (const char *)sqlite3_value_text(v) : NULL;
    bool ok = s != NULL && s[0] != '\0' && strlen(s) < RAFT_NAME_MAX;
    for (const char *p = s; ok && *p; p++) {
        ok = isalnum((unsigned char)*p) || *p == '-' || *p == '_' || *p == '.';
    }
    if (!ok) {
        char *msg = sqlite3_mprintf("walraft: %s must be a non-empty text id of at most %d "
                                    "letters, digits, '-', '_' or '.' (like 'n1')",
                                    what, RAFT_NAME_MAX - 1);
        sqlite3_result_error(ctx, msg, -1);
        sqlite3_free(msg);
        return NULL;
    }
    return s;
}

/* An address "host:port" with a numeric IPv4 host (or "localhost") or "[ipv6]:port". */
static const char *arg_addr(sqlite3_context *ctx, sqlite3_value *v, const char *what)
{
    const char *s = sqlite3_value_type(v) == SQLITE_TEXT ? (const char *)sqlite3_value_text(v) : NULL;
    const char *colon = s != NULL ? strrchr(s, ':') : NULL;
    bool ok = colon != NULL && colon != s && strlen(s) < RAFT_ADDR_MAX;
    if (ok) {
        char *end;
        long port = strtol(colon + 1, &end, 10);
        ok = colon[1] != '\0' && *end == '\0' && port > 0 && port < 65536;
    }
    if (!ok) {
        char *msg = sqlite3_mprintf("walraft: %s must be an address like '127.0.0.1:7001' "
                                    "(host:port, port 1-65535)",
                                    what);
        sqlite3_result_error(ctx, msg, -1);
        sqlite3_free(msg);
        return NULL;
    }
    return s;
}

static int arg_role(sqlite3_context *ctx, int argc, sqlite3_value **argv, int i, uint8_t *role)
{
    *role = RAFT_VOTER;
    if (argc <= i) {
        return 0;
    }
    const char *s = (const char *)sqlite3_value_text(argv[i]);
    if (s != NULL && strcmp(s, "voter") == 0) {
        *role = RAFT_VOTER;
    } else if (s != NULL && strcmp(s, "replica") == 0) {
        *role = RAFT_REPLICA;
    } else {
        sqlite3_result_error(ctx, "walraft: role must be 'voter' or 'replica'", -1);
        return -1;
    }
    return 0;
}

static void start(sqlite3_context *ctx, enum ext_start how, const char *name, const char *addr,
                  const char *peer, uint8_t role)
{
    const char *path = db_path(ctx);
    if (path == NULL) {
        return;
    }
    struct ext_config cfg;
    char err[600] = "";
    int rc = ext_config_from_uri(path, &cfg, err, sizeof err);
    if (rc == SQLITE_OK) {
        rc = ext_node_start(path, &cfg, how, name, addr, peer, role, err, sizeof err);
    }
    if (rc != SQLITE_OK) {
        char *msg = sqlite3_mprintf("walraft: %s", err);
        sqlite3_result_error(ctx, msg, -1);
        sqlite3_free(msg);
        return;
    }
    char *msg = how == EXT_BOOTSTRAP
                    ? sqlite3_mprintf("bootstrapped %s at %s", name, addr)
                    : sqlite3_mprintf("joined as %s at %s through %s", name, addr, peer);
    sqlite3_result_text(ctx, msg, -1, sqlite3_free);
}

static void fn_bootstrap(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    const char *name = arg_name(ctx, argv[0], "id");
    const char *addr = name ? arg_addr(ctx, argv[1], "addr") : NULL;
    if (addr != NULL) {
        start(ctx, EXT_BOOTSTRAP, name, addr, NULL, RAFT_VOTER);
    }
}

static void fn_join(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    uint8_t role;
    const char *name = arg_name(ctx, argv[0], "id");
    const char *addr = name ? arg_addr(ctx, argv[1], "addr") : NULL;
    const char *peer = addr ? arg_addr(ctx, argv[2], "peer_addr") : NULL;
    if (peer != NULL && arg_role(ctx, argc, argv, 3, &role) == 0) {
        start(ctx, EXT_JOIN, name, addr, peer, role);
    }
}

static void fn_add(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    uint8_t role;
    struct ext_node *n = need_node(ctx);
    const char *name = n ? arg_name(ctx, argv[0], "id") : NULL;
    const char *addr = name ? arg_addr(ctx, argv[1], "addr") : NULL;
    if (addr == NULL || arg_role(ctx, argc, argv, 2, &role) != 0) {
        return;
    }
    int rc = io_node_add(n->node, name, addr, role, MEMBERSHIP_TIMEOUT_MS);
    if (rc != 0) {
        result_rc(ctx, n, rc, "raft_add");
        return;
    }
    sqlite3_result_text(ctx, sqlite3_mprintf("added %s at %s as %s", name, addr,
                                             role == RAFT_VOTER ? "voter" : "replica"),
                        -1, sqlite3_free);
}

/* raft_remove / raft_promote / raft_demote: one id on the leader. */
static void fn_member(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    int op = *(const char *)sqlite3_user_data(ctx);
    static const char *names[] = {"raft_remove", "raft_promote", "raft_demote"};
    const char *fname = names[op == 'r' ? 0 : op == 'p' ? 1 : 2];
    struct ext_node *n = need_node(ctx);
    const char *name = n ? arg_name(ctx, argv[0], "id") : NULL;
    if (name == NULL) {
        return;
    }
    int rc = op == 'r'   ? io_node_remove(n->node, name, MEMBERSHIP_TIMEOUT_MS)
             : op == 'p' ? io_node_promote(n->node, name, MEMBERSHIP_TIMEOUT_MS)
                         : io_node_demote(n->node, name, MEMBERSHIP_TIMEOUT_MS);
    if (rc != 0) {
        result_rc(ctx, n, rc, fname);
        return;
    }
    sqlite3_result_text(ctx,
                        sqlite3_mprintf("%s %s", op == 'r' ? "removed" : op == 'p' ? "promoted"
                                                                                   : "demoted",
                                        name),
                        -1, sqlite3_free);
}

static void fn_transfer(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    struct ext_node *n = need_node(ctx);
    const char *name = NULL;
    if (n == NULL) {
        return;
    }
    if (argc > 0 && sqlite3_value_type(argv[0]) != SQLITE_NULL &&
        (name = arg_name(ctx, argv[0], "id")) == NULL) {
        return;
    }
    int rc = io_node_transfer(n->node, name, TRANSFER_TIMEOUT_MS);
    if (rc != 0) {
        result_rc(ctx, n, rc, "raft_transfer");
        return;
    }
    char lname[RAFT_NAME_MAX], laddr[RAFT_ADDR_MAX];
    io_node_leader(n->node, lname, laddr);
    sqlite3_result_text(ctx, sqlite3_mprintf("%s", lname), -1, sqlite3_free);
}

static int status_of(sqlite3_context *ctx, struct ext_node *n, struct io_node_status *st)
{
    int rc = io_node_status(n->node, st);
    if (rc != 0) {
        result_rc(ctx, n, rc, "status");
    }
    return rc;
}

/* raft_leader(): the leader's id; raft_leader('address'): its address. NULL when unknown. */
static void fn_leader(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    struct ext_node *n = need_node(ctx);
    if (n == NULL) {
        return;
    }
    char name[RAFT_NAME_MAX], addr[RAFT_ADDR_MAX];
    io_node_leader(n->node, name, addr);
    bool want_addr = argc > 0 && sqlite3_value_text(argv[0]) != NULL &&
                     strcmp((const char *)sqlite3_value_text(argv[0]), "address") == 0;
    if (argc > 0 && !want_addr && sqlite3_value_type(argv[0]) != SQLITE_NULL &&
        strcmp((const char *)sqlite3_value_text(argv[0]), "id") != 0) {
        sqlite3_result_error(ctx, "walraft: raft_leader() takes no argument, 'id' or 'address'",
                             -1);
        return;
    }
    const char *v = want_addr ? addr : name;
    if (v[0] == '\0') {
        sqlite3_result_null(ctx);
    } else {
        sqlite3_result_text(ctx, v, -1, SQLITE_TRANSIENT);
    }
}

static void fn_role(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    (void)argv;
    struct ext_node *n = need_node(ctx);
    struct io_node_status st;
    if (n == NULL || status_of(ctx, n, &st) != 0) {
        return;
    }
    const char *s = st.state == RAFT_LEADER        ? "leader"
                    : st.state == RAFT_CANDIDATE    ? "candidate"
                    : st.state == RAFT_PRECANDIDATE ? "candidate"
                    : st.role == RAFT_REPLICA       ? "replica"
                    : st.role == RAFT_LEARNER       ? "learner"
                    : st.role == 255                ? "none"
                                                    : "follower";
    sqlite3_result_text(ctx, s, -1, SQLITE_STATIC);
}

static void fn_term(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    (void)argv;
    struct ext_node *n = need_node(ctx);
    struct io_node_status st;
    if (n != NULL && status_of(ctx, n, &st) == 0) {
        sqlite3_result_int64(ctx, (sqlite3_int64)st.term);
    }
}

static void fn_status(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    (void)argv;
    struct ext_node *n = need_node(ctx);
    struct io_node_status st;
    if (n == NULL || status_of(ctx, n, &st) != 0) {
        return;
    }
    char *json = sqlite3_malloc(16384);
    if (json == NULL) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    io_node_status_json(&st, json, 16384);
    sqlite3_result_text(ctx, json, -1, sqlite3_free);
}

static void fn_barrier(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    struct ext_node *n = need_node(ctx);
    if (n == NULL) {
        return;
    }
    int64_t timeout = BARRIER_TIMEOUT_MS;
    if (argc > 0) {
        if (sqlite3_value_type(argv[0]) != SQLITE_INTEGER || sqlite3_value_int64(argv[0]) < 0) {
            sqlite3_result_error(ctx, "walraft: raft_barrier(timeout_ms) takes a non-negative "
                                      "integer",
                                 -1);
            return;
        }
        timeout = sqlite3_value_int64(argv[0]);
    }
    uint64_t index = 0;
    int rc = io_node_barrier(n->node, timeout, &index);
    if (rc != 0) {
        result_rc(ctx, n, rc, "raft_barrier");
        return;
    }
    sqlite3_result_int64(ctx, (sqlite3_int64)index);
}

static void fn_snapshot(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    (void)argv;
    struct ext_node *n = need_node(ctx);
    if (n == NULL) {
        return;
    }
    uint64_t floor = 0;
    int rc = vfs_db_checkpoint(n->db, &floor);
    if (rc != SQLITE_OK) {
        char why[256];
        vfs_db_last_error(n->db, why, sizeof why);
        char *msg = sqlite3_mprintf("walraft: raft_snapshot: checkpoint failed: %s",
                                    why[0] ? why : sqlite3_errstr(rc));
        sqlite3_result_error(ctx, msg, -1);
        sqlite3_free(msg);
        return;
    }
    io_node_set_applied_floor(n->node, floor); /* the node ignores a floor that did not move */
    sqlite3_result_int64(ctx, (sqlite3_int64)floor);
}

/* raft_checksum(): a hash of every page of this node's database as applied now (xxh64 over the
 * image a snapshot would send: page size, page count, every page). Replicas that applied the same
 * entries give the same value: compare after raft_barrier() while no writes run. */
static void fn_checksum(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    (void)argv;
    struct ext_node *n = need_node(ctx);
    if (n == NULL) {
        return;
    }
    uint64_t hash = 0;
    uint32_t pages = 0;
    int rc = vfs_db_checksum(n->db, &hash, &pages);
    if (rc != SQLITE_OK) {
        char why[256];
        vfs_db_last_error(n->db, why, sizeof why);
        char *msg = sqlite3_mprintf("walraft: raft_checksum: %s", why[0] ? why : sqlite3_errstr(rc));
        sqlite3_result_error(ctx, msg, -1);
        sqlite3_free(msg);
        return;
    }
    sqlite3_result_text(ctx, sqlite3_mprintf("%u:%016llx", pages, (unsigned long long)hash), -1,
                        sqlite3_free);
}

/* raft_last_error(): the last reason this node's replication gave for refusing or failing a
 * write on this database ("not the leader; the leader is n1 at ...", "outcome unknown ...", the
 * transaction-size bound), NULL when there was none. SQLite reports such failures with generic
 * texts ("attempt to write a readonly database", "disk I/O error"); this says which it was. */
static void fn_last_error(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    (void)argv;
    struct ext_node *n = need_node(ctx);
    if (n == NULL) {
        return;
    }
    char why[512];
    vfs_db_last_error(n->db, why, sizeof why);
    if (why[0] == '\0') {
        sqlite3_result_null(ctx);
    } else {
        sqlite3_result_text(ctx, why, -1, SQLITE_TRANSIENT);
    }
}

/* --- raft_recover(config_json) -------------------------------------------------------------
 * The configuration is a JSON array of objects with string members "id", "address" and
 * optionally "role" ("voter" or "replica"): [{"id":"n1","address":"127.0.0.1:7001"}, ...]. */

struct json {
    const char *p;
};

static void skip_ws(struct json *j)
{
    while (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r') {
        j->p++;
    }
}

static bool json_char(struct json *j, char c)
{
    skip_ws(j);
    if (*j->p != c) {
        return false;
    }
    j->p++;
    return true;
}

/* A string without escapes into out (cap bytes). */
static bool json_string(struct json *j, char *out, size_t cap)
{
    if (!json_char(j, '"')) {
        return false;
    }
    size_t n = 0;
    while (*j->p != '"') {
        if (*j->p == '\0' || *j->p == '\\' || n + 1 >= cap) {
            return false;
        }
        out[n++] = *j->p++;
    }
    j->p++;
    out[n] = '\0';
    return true;
}

static bool parse_config(const char *text, struct raft_config *c, char *err, size_t err_len)
{
    struct json j = {text};
    memset(c, 0, sizeof *c);
    if (!json_char(&j, '[')) {
        snprintf(err, err_len, "expected a JSON array of servers");
        return false;
    }
    if (json_char(&j, ']')) {
        snprintf(err, err_len, "the configuration needs at least one voter");
        return false;
    }
    do {
        if (c->n == RAFT_SERVERS_MAX) {
            snprintf(err, err_len, "at most %d servers", RAFT_SERVERS_MAX);
            return false;
        }
        struct raft_server *s = &c->servers[c->n];
        char key[16], role[16] = "voter";
        bool have_id = false, have_addr = false;
        if (!json_char(&j, '{')) {
            snprintf(err, err_len, "expected an object for server %u", c->n + 1);
            return false;
        }
        do {
            if (!json_string(&j, key, sizeof key) || !json_char(&j, ':')) {
                snprintf(err, err_len, "malformed member in server %u", c->n + 1);
                return false;
            }
            bool ok = strcmp(key, "id") == 0        ? (have_id = json_string(&j, s->name, sizeof s->name))
                      : strcmp(key, "address") == 0 ? (have_addr = json_string(&j, s->addr, sizeof s->addr))
                      : strcmp(key, "role") == 0    ? json_string(&j, role, sizeof role)
                                                    : false;
            if (!ok) {
                snprintf(err, err_len, "bad or unknown member \"%s\" in server %u", key, c->n + 1);
                return false;
            }
        } while (json_char(&j, ','));
        if (!json_char(&j, '}') || !have_id || !have_addr || s->name[0] == '\0') {
            snprintf(err, err_len, "server %u needs \"id\" and \"address\"", c->n + 1);
            return false;
        }
        if (strcmp(role, "voter") == 0) {
            s->role = RAFT_VOTER;
        } else if (strcmp(role, "replica") == 0) {
            s->role = RAFT_REPLICA;
        } else {
            snprintf(err, err_len, "role of %s must be \"voter\" or \"replica\"", s->name);
            return false;
        }
        s->id = 0; /* filled by the caller from the name */
        c->n++;
    } while (json_char(&j, ','));
    if (!json_char(&j, ']')) {
        snprintf(err, err_len, "expected ']' at the end of the array");
        return false;
    }
    skip_ws(&j);
    if (*j.p != '\0') {
        snprintf(err, err_len, "trailing characters after the array");
        return false;
    }
    return true;
}

static void fn_recover(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    struct ext_node *n = need_node(ctx);
    if (n == NULL) {
        return;
    }
    const char *text = (const char *)sqlite3_value_text(argv[0]);
    struct raft_config c;
    char err[200];
    if (text == NULL || !parse_config(text, &c, err, sizeof err)) {
        char *msg = sqlite3_mprintf("walraft: raft_recover: %s; nothing was changed",
                                    text == NULL ? "expects a JSON array of servers" : err);
        sqlite3_result_error(ctx, msg, -1);
        sqlite3_free(msg);
        return;
    }
    for (uint32_t i = 0; i < c.n; i++) {
        c.servers[i].id = io_node_id_of(c.servers[i].name);
    }
    int rc = io_node_recover(n->node, &c);
    if (rc != 0) {
        char *msg = sqlite3_mprintf("walraft: raft_recover: %s (this node must be a voter of the "
                                    "new configuration, ids distinct); nothing was changed",
                                    io_node_strerror(rc));
        sqlite3_result_error(ctx, msg, -1);
        sqlite3_free(msg);
        return;
    }
    sqlite3_log(SQLITE_WARNING, "walraft: raft_recover forced a new configuration of %u servers "
                                "on %s",
                c.n, n->path);
    sqlite3_result_text(ctx,
                        sqlite3_mprintf("forced a configuration of %u servers on this node; "
                                        "entries only the lost servers held are lost; start the "
                                        "other listed servers with the same configuration",
                                        c.n),
                        -1, sqlite3_free);
}

int ext_register_functions(sqlite3 *db)
{
    static const char remove_op = 'r', promote_op = 'p', demote_op = 'd';
    static const struct {
        const char *name;
        int nargs;
        void (*fn)(sqlite3_context *, int, sqlite3_value **);
        const void *data;
    } fns[] = {
        {"raft_bootstrap", 2, fn_bootstrap, NULL}, {"raft_join", 3, fn_join, NULL},
        {"raft_join", 4, fn_join, NULL},           {"raft_add", 2, fn_add, NULL},
        {"raft_add", 3, fn_add, NULL},             {"raft_remove", 1, fn_member, &remove_op},
        {"raft_promote", 1, fn_member, &promote_op}, {"raft_demote", 1, fn_member, &demote_op},
        {"raft_transfer", 0, fn_transfer, NULL},   {"raft_transfer", 1, fn_transfer, NULL},
        {"raft_leader", 0, fn_leader, NULL},       {"raft_leader", 1, fn_leader, NULL},
        {"raft_role", 0, fn_role, NULL},           {"raft_term", 0, fn_term, NULL},
        {"raft_status", 0, fn_status, NULL},       {"raft_barrier", 0, fn_barrier, NULL},
        {"raft_barrier", 1, fn_barrier, NULL},     {"raft_snapshot", 0, fn_snapshot, NULL},
        {"raft_recover", 1, fn_recover, NULL},     {"raft_checksum", 0, fn_checksum, NULL},
        {"raft_last_error", 0, fn_last_error, NULL},
    };
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        int rc = sqlite3_create_function(db, fns[i].name, fns[i].nargs, SQLITE_UTF8 | SQLITE_DIRECTONLY,
                                         (void *)fns[i].data, fns[i].fn, NULL, NULL);
        if (rc != SQLITE_OK) {
            return rc;
        }
    }
    return SQLITE_OK;
}
