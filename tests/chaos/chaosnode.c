/*
 * chaosnode: one Raft node per process over an in-memory state machine with three workloads,
 * for the fault-injection runs of tests/chaos/chaos.py. It exercises the runtime of
 * consensus/io/ without SQLite, like tests/e2e/kvnode.c, but answers many requests at once.
 *
 *   chaosnode --dir D [--name N --listen ADDR (--bootstrap | --join ADDR)]
 *             [--election-ms MS] [--heartbeat-ms MS] [--trailing N] [--lazy-sync]
 *
 * The state machine (one log entry = one operation, "OPID KIND ARGS", OPID unique per run):
 *   bank      ACCOUNTS balances starting at INITIAL_BALANCE; "B from to amount" moves the amount
 *             in one entry when the source holds it (result 1), else changes nothing (result 2)
 *   append    LISTS lists of op ids; "A list" appends OPID to the list
 *   register  REGS integer registers starting at 0; "W reg value" writes; "C reg old new" is a
 *             compare-and-set evaluated at apply time (result 1: swapped, 2: not)
 * Every applied op id is recorded in order, with its result, so the runner can tell whether an
 * operation took effect, and how often. A hash chained over (index, payload) of every applied
 * entry is equal on nodes that applied the same history.
 *
 * Control: standard input carries one request per line, "TAG COMMAND ARGS"; each runs on its
 * own thread and its answer is one line "TAG ANSWER" on standard output, in completion order.
 * The first line printed is "ready" (or "err CODE MESSAGE" when the node did not start).
 *   bank OPID FROM TO AMOUNT | append OPID LIST | write OPID REG VALUE | cas OPID REG OLD NEW
 *                      propose and wait for the commit: "ok INDEX RESULT" (RESULT 0..2, or ?
 *                      when this node did not apply the entry in time) or "err CODE MESSAGE"
 *   read REG           ReadIndex, then the register: "ok INDEX VALUE"
 *   readbank B         balances ("ok INDEX B0 B1 ..."); through ReadIndex when B is 1, else local
 *   readlist L B       the list ("ok INDEX ID,ID,..."), likewise
 *   seq | checkpoint | dump PATH | add N ADDR | remove N | transfer [N] | status | role
 *   progress           state, term, indexes, then per peer NAME:PROGRESS:MATCH:CONTACT_MS:CONN
 *   partition [N] IN OUT   drop messages from/to N (or every peer) when IN/OUT are 1
 *   quit               (untagged) stop the node and exit 0
 *
 * CHAOS_BUG in the environment switches on a deliberate bug, to show that the checks catch it:
 *   ack-early     acknowledge a write whose outcome is unknown or negative as if it committed
 *   double-apply  apply every 50th entry twice
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "consensus/io/node.h"

#define ACCOUNTS 5
#define INITIAL_BALANCE 100
#define LISTS 8
#define REGS 3
#define THREADS_MAX 128      /* requests in flight */
#define PROPOSE_TIMEOUT_MS 4000
#define READ_TIMEOUT_MS 4000
#define STATE_MAGIC 0x3153414f48434557ull /* "WECHAOS1" */

struct u64vec {
    uint64_t *v;
    size_t n, cap;
};

struct state {
    uint64_t applied; /* last index in the state */
    uint64_t count;   /* entries applied */
    uint64_t hash;    /* chained over (index, payload) of every applied entry */
    int64_t bal[ACCOUNTS];
    int64_t reg[REGS];
    struct u64vec list[LISTS];
    struct u64vec ops; /* op ids in apply order */
    uint8_t *res;      /* by op id: 0 not applied, 1 took effect, 2 applied without effect */
    size_t res_cap;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER; /* guards st */
static struct state st;
static struct io_node *node;
static char state_dir[4096];
static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_int active;
static atomic_bool quitting;
static bool bug_ack_early, bug_double_apply;

/* Snapshot being installed (apply thread only). */
static char *inst;
static size_t inst_len, inst_cap;

static void vec_push(struct u64vec *v, uint64_t x)
{
    if (v->n == v->cap) {
        v->cap = v->cap != 0 ? v->cap * 2 : 64;
        v->v = realloc(v->v, v->cap * sizeof *v->v);
        if (v->v == NULL) {
            abort();
        }
    }
    v->v[v->n++] = x;
}

static void res_set(struct state *s, uint64_t opid, uint8_t r)
{
    if (opid >= s->res_cap) {
        size_t cap = s->res_cap != 0 ? s->res_cap : 1024;
        while (cap <= opid) {
            cap *= 2;
        }
        s->res = realloc(s->res, cap);
        if (s->res == NULL) {
            abort();
        }
        memset(s->res + s->res_cap, 0, cap - s->res_cap);
        s->res_cap = cap;
    }
    s->res[opid] = r;
}

static void state_free(struct state *s)
{
    for (int i = 0; i < LISTS; i++) {
        free(s->list[i].v);
    }
    free(s->ops.v);
    free(s->res);
    memset(s, 0, sizeof *s);
}

static void state_init(struct state *s)
{
    memset(s, 0, sizeof *s);
    for (int i = 0; i < ACCOUNTS; i++) {
        s->bal[i] = INITIAL_BALANCE;
    }
}

/* Applies one operation; caller holds mu. Malformed payloads change nothing but the hash. */
static void apply_op(const char *p, size_t len)
{
    char buf[256];
    if (len >= sizeof buf) {
        return;
    }
    memcpy(buf, p, len);
    buf[len] = '\0';
    uint64_t opid;
    char kind;
    long long a = 0, b = 0, c = 0;
    int k = sscanf(buf, "%" SCNu64 " %c %lld %lld %lld", &opid, &kind, &a, &b, &c);
    if (k < 2 || opid > (1u << 24)) {
        return;
    }
    uint8_t r = 1;
    if (kind == 'B' && k == 5 && a >= 0 && a < ACCOUNTS && b >= 0 && b < ACCOUNTS && c >= 0) {
        if (st.bal[a] >= c) {
            st.bal[a] -= c;
            st.bal[b] += c;
        } else {
            r = 2;
        }
    } else if (kind == 'A' && k == 3 && a >= 0 && a < LISTS) {
        vec_push(&st.list[a], opid);
    } else if (kind == 'W' && k == 4 && a >= 0 && a < REGS) {
        st.reg[a] = b;
    } else if (kind == 'C' && k == 5 && a >= 0 && a < REGS) {
        if (st.reg[a] == b) {
            st.reg[a] = c;
        } else {
            r = 2;
        }
    } else {
        return;
    }
    vec_push(&st.ops, opid);
    res_set(&st, opid, r);
}

/* io_fsm.state_index: the state loaded at start. */
static uint64_t fsm_state_index(void *ctx)
{
    (void)ctx;
    pthread_mutex_lock(&mu);
    uint64_t applied = st.applied;
    pthread_mutex_unlock(&mu);
    return applied;
}

static int fsm_apply(void *ctx, uint64_t index, const void *buf, size_t len)
{
    (void)ctx;
    pthread_mutex_lock(&mu);
    if (index <= st.applied) {
        pthread_mutex_unlock(&mu);
        return 0;
    }
    apply_op(buf, len);
    if (bug_double_apply && index % 50 == 0) {
        apply_op(buf, len);
    }
    uint64_t h[2] = {st.hash, index};
    st.hash = XXH64(buf, len, XXH64(h, sizeof h, 0));
    st.applied = index;
    st.count++;
    pthread_mutex_unlock(&mu);
    return 0;
}

/* --- serialisation: the checkpoint file and the snapshot stream ----------------------------- */

struct wbuf {
    char *p;
    size_t n, cap;
};

static void put(struct wbuf *w, const void *x, size_t len)
{
    if (len == 0) {
        return;
    }
    if (w->n + len > w->cap) {
        w->cap = (w->n + len) * 2;
        w->p = realloc(w->p, w->cap);
        if (w->p == NULL) {
            abort();
        }
    }
    memcpy(w->p + w->n, x, len);
    w->n += len;
}

static void put64(struct wbuf *w, uint64_t x)
{
    put(w, &x, sizeof x);
}

/* Layout (host byte order, one machine): magic, applied, count, hash, balances, registers,
 * per list its length and ids, the op count and ids, the result table's size and bytes, and
 * the xxh64 of everything before it. Caller holds mu. */
static char *serialise(size_t *len /* OUT */)
{
    struct wbuf w = {0};
    put64(&w, STATE_MAGIC);
    put64(&w, st.applied);
    put64(&w, st.count);
    put64(&w, st.hash);
    put(&w, st.bal, sizeof st.bal);
    put(&w, st.reg, sizeof st.reg);
    for (int i = 0; i < LISTS; i++) {
        put64(&w, st.list[i].n);
        put(&w, st.list[i].v, st.list[i].n * sizeof(uint64_t));
    }
    put64(&w, st.ops.n);
    put(&w, st.ops.v, st.ops.n * sizeof(uint64_t));
    put64(&w, st.res_cap);
    put(&w, st.res, st.res_cap);
    put64(&w, XXH64(w.p, w.n, 0));
    *len = w.n;
    return w.p;
}

struct rbuf {
    const char *p;
    size_t n, off;
    bool bad;
};

static void get(struct rbuf *r, void *x, size_t len)
{
    if (r->bad || len > r->n - r->off) {
        r->bad = true;
        memset(x, 0, len);
        return;
    }
    memcpy(x, r->p + r->off, len);
    r->off += len;
}

static uint64_t get64(struct rbuf *r)
{
    uint64_t x;
    get(r, &x, sizeof x);
    return x;
}

static int get_vec(struct rbuf *r, struct u64vec *v)
{
    uint64_t n = get64(r);
    if (r->bad || n > (r->n - r->off) / sizeof(uint64_t)) {
        r->bad = true;
        return -1;
    }
    for (uint64_t i = 0; i < n; i++) {
        vec_push(v, get64(r));
    }
    return 0;
}

/* Parses a serialised state into *s; the bytes are validated, never trusted. */
static int deserialise(const char *buf, size_t len, struct state *s /* OUT */)
{
    if (len < 16 || XXH64(buf, len - 8, 0) != *(const uint64_t *)(const void *)(buf + len - 8)) {
        return -1;
    }
    struct rbuf r = {buf, len - 8, 0, false};
    memset(s, 0, sizeof *s);
    if (get64(&r) != STATE_MAGIC) {
        return -1;
    }
    s->applied = get64(&r);
    s->count = get64(&r);
    s->hash = get64(&r);
    get(&r, s->bal, sizeof s->bal);
    get(&r, s->reg, sizeof s->reg);
    for (int i = 0; i < LISTS; i++) {
        get_vec(&r, &s->list[i]);
    }
    get_vec(&r, &s->ops);
    uint64_t cap = get64(&r);
    if (!r.bad && cap <= r.n - r.off && cap > 0) {
        s->res = malloc(cap);
        s->res_cap = cap;
        get(&r, s->res, cap);
    }
    if (r.bad || r.off != r.n) {
        state_free(s);
        return -1;
    }
    return 0;
}

struct snap_handle {
    char *buf;
    size_t len, off;
};

static int fsm_snapshot_open(void *ctx, void **handle, uint64_t *size)
{
    (void)ctx;
    struct snap_handle *s = malloc(sizeof *s);
    if (s == NULL) {
        return -1;
    }
    pthread_mutex_lock(&mu);
    s->buf = serialise(&s->len);
    pthread_mutex_unlock(&mu);
    s->off = 0;
    *handle = s;
    *size = s->len;
    return 0;
}

static int fsm_snapshot_read(void *ctx, void *handle, void *buf, size_t cap, size_t *n)
{
    (void)ctx;
    struct snap_handle *s = handle;
    size_t k = s->len - s->off < cap ? s->len - s->off : cap;
    memcpy(buf, s->buf + s->off, k);
    s->off += k;
    *n = k;
    return 0;
}

static void fsm_snapshot_close(void *ctx, void *handle)
{
    (void)ctx;
    struct snap_handle *s = handle;
    free(s->buf);
    free(s);
}

static int fsm_install_begin(void *ctx, uint64_t index)
{
    (void)ctx;
    (void)index;
    free(inst);
    inst = NULL;
    inst_len = inst_cap = 0;
    return 0;
}

static int fsm_install_chunk(void *ctx, const void *buf, size_t len)
{
    (void)ctx;
    if (inst_len + len > inst_cap) {
        inst_cap = (inst_len + len) * 2;
        inst = realloc(inst, inst_cap);
        if (inst == NULL) {
            abort();
        }
    }
    memcpy(inst + inst_len, buf, len);
    inst_len += len;
    return 0;
}

static int save_state(uint64_t *applied_out);

/* io_fsm's contract: the installed image must be durable when this returns (the node then records
 * it as its log's base and drops the log before it). */
static int fsm_install_end(void *ctx, uint64_t index, bool ok)
{
    (void)ctx;
    int rc = 0;
    if (ok) {
        struct state s;
        rc = deserialise(inst, inst_len, &s);
        if (rc == 0 && s.applied != index) {
            fprintf(stderr, "chaosnode: snapshot for index %" PRIu64 " holds state at %" PRIu64
                            "\n", index, s.applied);
        }
        if (rc == 0) {
            pthread_mutex_lock(&mu);
            state_free(&st);
            st = s;
            pthread_mutex_unlock(&mu);
            uint64_t held;
            rc = save_state(&held);
        }
    }
    free(inst);
    inst = NULL;
    inst_len = inst_cap = 0;
    return rc;
}

/* Writes the state durably (a new file, fsync'ed, renamed over the old one); *applied is the
 * index it holds. */
static int save_state(uint64_t *applied_out)
{
    size_t len;
    pthread_mutex_lock(&mu);
    char *buf = serialise(&len);
    uint64_t applied = st.applied;
    pthread_mutex_unlock(&mu);
    char path[4200], tmp[4210];
    snprintf(path, sizeof path, "%s/chaos.state", state_dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int rc = -1;
    if (fd >= 0 && write(fd, buf, len) == (ssize_t)len && fsync(fd) == 0 && rename(tmp, path) == 0) {
        rc = 0;
    }
    if (fd >= 0) {
        close(fd);
    }
    free(buf);
    *applied_out = applied;
    return rc;
}

static int checkpoint(uint64_t *floor /* OUT */)
{
    uint64_t applied;
    int rc = save_state(&applied);
    if (rc == 0) {
        io_node_set_applied_floor(node, applied);
        *floor = applied;
    }
    return rc;
}

static void load_state(void)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/chaos.state", state_dir);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return;
    }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = len > 0 ? malloc((size_t)len) : NULL;
    struct state s;
    if (buf != NULL && fread(buf, 1, (size_t)len, f) == (size_t)len &&
        deserialise(buf, (size_t)len, &s) == 0) {
        state_free(&st);
        st = s;
    } else {
        fprintf(stderr, "chaosnode: ignoring an unreadable %s\n", path);
    }
    fclose(f);
    free(buf);
}

/* Writes the state as text for the runner's checks. */
static int dump(const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        return -1;
    }
    pthread_mutex_lock(&mu);
    fprintf(f, "seq %" PRIu64 " %" PRIu64 " %016" PRIx64 "\nbal", st.applied, st.count, st.hash);
    for (int i = 0; i < ACCOUNTS; i++) {
        fprintf(f, " %" PRId64, st.bal[i]);
    }
    fprintf(f, "\nreg");
    for (int i = 0; i < REGS; i++) {
        fprintf(f, " %" PRId64, st.reg[i]);
    }
    for (int i = 0; i < LISTS; i++) {
        fprintf(f, "\nlist %d", i);
        for (size_t j = 0; j < st.list[i].n; j++) {
            fprintf(f, " %" PRIu64, st.list[i].v[j]);
        }
    }
    fprintf(f, "\nops");
    for (size_t j = 0; j < st.ops.n; j++) {
        uint64_t id = st.ops.v[j];
        fprintf(f, " %" PRIu64 ":%u", id, id < st.res_cap ? st.res[id] : 0);
    }
    fprintf(f, "\n");
    pthread_mutex_unlock(&mu);
    return fclose(f) == 0 ? 0 : -1;
}

/* --- requests --------------------------------------------------------------------------------- */

static void reply(const char *tag, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void reply(const char *tag, const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&out_mu);
    printf("%s ", tag);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    pthread_mutex_unlock(&out_mu);
}

static void reply_err(const char *tag, int rc)
{
    char name[RAFT_NAME_MAX], addr[RAFT_ADDR_MAX];
    io_node_leader(node, name, addr);
    reply(tag, "err %d %s (leader %s at %s)", rc, io_node_strerror(rc), name[0] ? name : "-",
          addr[0] ? addr : "-");
}

/* Proposes an operation; answers with its index and the result this node applied. */
static void do_propose(const char *tag, const char *payload, uint64_t opid)
{
    uint64_t index = 0;
    int rc = io_node_propose(node, payload, strlen(payload), PROPOSE_TIMEOUT_MS, &index);
    if (rc != 0 && bug_ack_early &&
        (rc == RAFT_EUNKNOWN || rc == RAFT_ENOTCOMMITTED || rc == RAFT_ETIMEOUT)) {
        reply(tag, "ok 0 ?");
        return;
    }
    if (rc != 0) {
        reply_err(tag, rc);
        return;
    }
    char res = '?';
    if (io_node_wait_applied(node, index, 2000) == 0) {
        pthread_mutex_lock(&mu);
        if (opid < st.res_cap && st.res[opid] != 0) {
            res = (char)('0' + st.res[opid]);
        }
        pthread_mutex_unlock(&mu);
    }
    reply(tag, "ok %" PRIu64 " %c", index, res);
}

/* Local read, or through ReadIndex: returns the index the read reflects, or -rc. */
static int64_t read_point(bool barrier)
{
    if (!barrier) {
        return 0;
    }
    uint64_t index = 0;
    int rc = io_node_barrier(node, READ_TIMEOUT_MS, &index);
    return rc == 0 ? (int64_t)index : -rc;
}

static void handle_request(char *line)
{
    char tag[32] = "", cmd[32] = "", a[256] = "", b[64] = "", c[64] = "", d[64] = "";
    int k = sscanf(line, "%31s %31s %255s %63s %63s %63s", tag, cmd, a, b, c, d);
    char payload[640];
    uint64_t opid = strtoull(a, NULL, 10);
    if (k < 2) {
        reply(tag[0] ? tag : "?", "err 8 malformed request");
    } else if (strcmp(cmd, "bank") == 0 && k == 6) {
        snprintf(payload, sizeof payload, "%s B %s %s %s", a, b, c, d);
        do_propose(tag, payload, opid);
    } else if (strcmp(cmd, "append") == 0 && k == 4) {
        snprintf(payload, sizeof payload, "%s A %s", a, b);
        do_propose(tag, payload, opid);
    } else if (strcmp(cmd, "write") == 0 && k == 5) {
        snprintf(payload, sizeof payload, "%s W %s %s", a, b, c);
        do_propose(tag, payload, opid);
    } else if (strcmp(cmd, "cas") == 0 && k == 6) {
        snprintf(payload, sizeof payload, "%s C %s %s %s", a, b, c, d);
        do_propose(tag, payload, opid);
    } else if (strcmp(cmd, "read") == 0 && k == 3) {
        int r = atoi(a);
        int64_t at = read_point(true);
        if (at < 0 || r < 0 || r >= REGS) {
            reply_err(tag, at < 0 ? (int)-at : RAFT_EBADARG);
            return;
        }
        pthread_mutex_lock(&mu);
        int64_t v = st.reg[r];
        pthread_mutex_unlock(&mu);
        reply(tag, "ok %" PRId64 " %" PRId64, at, v);
    } else if (strcmp(cmd, "readbank") == 0 && k == 3) {
        int64_t at = read_point(atoi(a) != 0);
        if (at < 0) {
            reply_err(tag, (int)-at);
            return;
        }
        char out[256];
        size_t n = 0;
        pthread_mutex_lock(&mu);
        n += (size_t)snprintf(out, sizeof out, "ok %" PRIu64, at > 0 ? (uint64_t)at : st.applied);
        for (int i = 0; i < ACCOUNTS; i++) {
            n += (size_t)snprintf(out + n, sizeof out - n, " %" PRId64, st.bal[i]);
        }
        pthread_mutex_unlock(&mu);
        reply(tag, "%s", out);
    } else if (strcmp(cmd, "readlist") == 0 && k == 4) {
        int l = atoi(a);
        int64_t at = read_point(atoi(b) != 0);
        if (at < 0 || l < 0 || l >= LISTS) {
            reply_err(tag, at < 0 ? (int)-at : RAFT_EBADARG);
            return;
        }
        pthread_mutex_lock(&mu);
        size_t cap = 64 + st.list[l].n * 21, n = 0;
        char *out = malloc(cap);
        n += (size_t)snprintf(out, cap, "ok %" PRIu64 " ", at > 0 ? (uint64_t)at : st.applied);
        for (size_t j = 0; j < st.list[l].n; j++) {
            n += (size_t)snprintf(out + n, cap - n, "%s%" PRIu64, j ? "," : "", st.list[l].v[j]);
        }
        pthread_mutex_unlock(&mu);
        reply(tag, "%s", out);
        free(out);
    } else if (strcmp(cmd, "seq") == 0) {
        pthread_mutex_lock(&mu);
        uint64_t applied = st.applied, count = st.count, hash = st.hash;
        pthread_mutex_unlock(&mu);
        reply(tag, "seq %" PRIu64 " %" PRIu64 " %016" PRIx64, applied, count, hash);
    } else if (strcmp(cmd, "checkpoint") == 0) {
        uint64_t floor = 0;
        if (checkpoint(&floor) == 0) {
            reply(tag, "ok %" PRIu64, floor);
        } else {
            reply_err(tag, IO_NODE_EIO);
        }
    } else if (strcmp(cmd, "dump") == 0 && k == 3) {
        if (dump(a) == 0) {
            reply(tag, "ok 0");
        } else {
            reply_err(tag, IO_NODE_EIO);
        }
    } else if (strcmp(cmd, "add") == 0 && k == 4) {
        int rc = io_node_add(node, a, b, RAFT_VOTER, 8000);
        rc == 0 ? reply(tag, "ok 0") : reply_err(tag, rc);
    } else if (strcmp(cmd, "remove") == 0 && k == 3) {
        int rc = io_node_remove(node, a, 8000);
        rc == 0 ? reply(tag, "ok 0") : reply_err(tag, rc);
    } else if (strcmp(cmd, "transfer") == 0) {
        int rc = io_node_transfer(node, k >= 3 ? a : NULL, 8000);
        rc == 0 ? reply(tag, "ok 0") : reply_err(tag, rc);
    } else if (strcmp(cmd, "progress") == 0) {
        /* The leader's view of each peer: name:progress-state:match:contact-ms:connected. */
        struct io_node_status *s = malloc(sizeof *s);
        int rc = s != NULL ? io_node_status(node, s) : RAFT_ENOMEM;
        if (rc != 0) {
            reply_err(tag, rc);
        } else {
            char out[2048];
            size_t n = (size_t)snprintf(out, sizeof out, "state %u term %" PRIu64 " last %" PRIu64
                                        " commit %" PRIu64 " applied %" PRIu64 " first %" PRIu64,
                                        s->state, s->term, s->last_index, s->commit_index,
                                        s->applied_index, s->first_index);
            for (uint32_t i = 0; i < s->n_peers && n < sizeof out - 128; i++) {
                const struct io_node_peer_status *ps = &s->peers[i];
                n += (size_t)snprintf(out + n, sizeof out - n, " %s:%u:%" PRIu64 ":%" PRIu64 ":%d",
                                      ps->server.name, ps->progress, ps->match_index,
                                      ps->last_contact_ms, ps->connected);
            }
            reply(tag, "%s", out);
        }
        free(s);
    } else if (strcmp(cmd, "status") == 0 || strcmp(cmd, "role") == 0) {
        struct io_node_status *s = malloc(sizeof *s);
        int rc = s != NULL ? io_node_status(node, s) : RAFT_ENOMEM;
        if (rc != 0) {
            reply_err(tag, rc);
        } else if (strcmp(cmd, "role") == 0) {
            reply(tag, "%s", s->state == RAFT_LEADER ? "leader" : "follower");
        } else {
            char json[16384];
            io_node_status_json(s, json, sizeof json);
            reply(tag, "%s", json);
        }
        free(s);
    } else if (strcmp(cmd, "partition") == 0 && (k == 4 || k == 5)) {
        if (k == 5) {
            io_node_set_partition(node, a, atoi(b) != 0, atoi(c) != 0);
        } else {
            io_node_set_partition(node, NULL, atoi(a) != 0, atoi(b) != 0);
        }
        reply(tag, "ok 0");
    } else {
        reply(tag, "err 8 unknown command: %s", cmd);
    }
}

static void *request_main(void *arg)
{
    char *line = arg;
    handle_request(line);
    free(line);
    atomic_fetch_sub(&active, 1);
    return NULL;
}

static const char *arg_value(int argc, char **argv, const char *flag)
{
    for (int i = 1; i < argc - 1; i++) {
        if (strcmp(argv[i], flag) == 0) {
            return argv[i + 1];
        }
    }
    return NULL;
}

static bool has_flag(int argc, char **argv, const char *flag)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], flag) == 0) {
            return true;
        }
    }
    return false;
}

int main(int argc, char **argv)
{
    const char *dir = arg_value(argc, argv, "--dir");
    if (dir == NULL) {
        fprintf(stderr, "usage: chaosnode --dir D [--name N --listen ADDR (--bootstrap | --join "
                        "ADDR)] [--election-ms MS] [--heartbeat-ms MS] [--trailing N] [--lazy-sync]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
    const char *bug = getenv("CHAOS_BUG");
    bug_ack_early = bug != NULL && strcmp(bug, "ack-early") == 0;
    bug_double_apply = bug != NULL && strcmp(bug, "double-apply") == 0;
    if (bug != NULL && bug[0] != '\0') {
        fprintf(stderr, "chaosnode: deliberate bug %s switched on\n", bug);
    }
    snprintf(state_dir, sizeof state_dir, "%s", dir);
    state_init(&st);

    struct io_node_config cfg = {
        .dir = dir,
        .name = arg_value(argc, argv, "--name"),
        .listen_addr = arg_value(argc, argv, "--listen"),
        .fsm = {.ctx = NULL,
                .apply = fsm_apply,
                .snapshot_open = fsm_snapshot_open,
                .snapshot_read = fsm_snapshot_read,
                .snapshot_close = fsm_snapshot_close,
                .install_begin = fsm_install_begin,
                .install_chunk = fsm_install_chunk,
                .install_end = fsm_install_end,
                .state_index = fsm_state_index},
    };
    const char *v;
    if ((v = arg_value(argc, argv, "--election-ms")) != NULL) {
        cfg.election_timeout_ms = (uint32_t)atoi(v);
    }
    if ((v = arg_value(argc, argv, "--heartbeat-ms")) != NULL) {
        cfg.heartbeat_ms = (uint32_t)atoi(v);
    }
    if ((v = arg_value(argc, argv, "--trailing")) != NULL) {
        cfg.trailing_entries = (uint64_t)atoll(v);
    }
    if (has_flag(argc, argv, "--lazy-sync")) {
        cfg.leader_sync = IO_LEADER_SYNC_LAZY; /* io_node_config.leader_sync */
    }
    enum io_node_start_mode mode = IO_NODE_RESTART;
    const char *join = arg_value(argc, argv, "--join");
    if (has_flag(argc, argv, "--bootstrap")) {
        mode = IO_NODE_BOOTSTRAP;
    } else if (join != NULL) {
        mode = IO_NODE_JOIN;
    }
    if (mode == IO_NODE_RESTART) {
        load_state();
    }
    char err[512] = "";
    int rc = io_node_start(&cfg, mode, join, RAFT_VOTER, 20000, &node, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "chaosnode: %s (%s)\n", err, io_node_strerror(rc));
        printf("err %d %s\n", rc, err);
        fflush(stdout);
        state_free(&st);
        return 1;
    }
    printf("ready\n");
    fflush(stdout);

    char line[1024];
    while (fgets(line, sizeof line, stdin) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (strcmp(line, "quit") == 0) {
            break;
        }
        if (atomic_load(&active) >= THREADS_MAX) {
            char tag[32] = "?";
            sscanf(line, "%31s", tag);
            reply(tag, "err 3 too many requests in flight");
            continue;
        }
        char *copy = strdup(line);
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        atomic_fetch_add(&active, 1);
        if (copy == NULL || pthread_create(&th, &attr, request_main, copy) != 0) {
            atomic_fetch_sub(&active, 1);
            free(copy);
        }
        pthread_attr_destroy(&attr);
    }
    /* Requests still running use the node: wait for them (every call they make is bounded). */
    atomic_store(&quitting, true);
    for (int i = 0; i < 3000 && atomic_load(&active) > 0; i++) {
        usleep(10 * 1000);
    }
    if (atomic_load(&active) > 0) {
        fprintf(stderr, "chaosnode: %d requests still running at quit\n", atomic_load(&active));
        _exit(3);
    }
    io_node_stop(node);
    pthread_mutex_lock(&mu);
    state_free(&st);
    pthread_mutex_unlock(&mu);
    free(inst);
    printf("bye\n");
    fflush(stdout);
    return 0;
}
