/*
 * The simulated cluster (see cluster.h). The runtime rules of raft.h are followed literally:
 * hard state is made durable before a message of the same update leaves; entries are appended by
 * an asynchronous FIFO disk whose completions are reported with RAFT_EVENT_PERSISTED; a crash
 * loses the queue; committed entries are applied to a state machine whose prefix up to the
 * applied floor survives crashes.
 *
 * Every check compares against global histories: what was applied at each index, the term
 * committed at each index, who led each term, and the (index, term) -> (previous term, payload)
 * registry that makes Log Matching checkable one append at a time.
 */
#include "tests/sim/cluster.h"

#include <assert.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

enum { EV_MSG = 1, EV_SNAP, EV_DISK, EV_TICK, EV_PEER_DOWN, EV_TELL };

struct cl_disk_op {
    uint64_t truncate_from;
    struct raft_entry *e;
    size_t n;
    uint64_t done_at;
};

struct cl_snap {
    uint64_t from, to;
    unsigned from_life;
    uint64_t leader_term;
    uint64_t index, term;
    struct raft_config config;
    struct cl_sm_item *content; /* 1..content_n */
    uint64_t content_n;
    bool lost;
};

struct cl_ev {
    uint64_t at;
    uint64_t seq;
    int kind;
    uint64_t node;
    unsigned life;
    struct raft_message m; /* EV_MSG: deep copy */
    struct cl_snap *snap;  /* EV_SNAP */
    uint64_t down;         /* EV_PEER_DOWN: the server that stopped */
};

struct cl_reg {
    uint64_t index, term, prev_term, hash;
};

/* ---------------------------------------------------------------------------------------------
 * Utilities. */

uint64_t cl_rand(struct cluster *c)
{
    uint64_t z = (c->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rnd(struct cluster *c, uint64_t lo, uint64_t hi) /* [lo, hi] */
{
    return lo + cl_rand(c) % (hi - lo + 1);
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (q == NULL) {
        abort();
    }
    return q;
}

#define GROW(arr, cap, need)                                                                   \
    do {                                                                                       \
        if ((need) > (cap)) {                                                                  \
            size_t nc_ = (cap) ? (cap) * 2 : 16;                                               \
            while (nc_ < (need))                                                               \
                nc_ *= 2;                                                                      \
            (arr) = xrealloc((arr), nc_ * sizeof *(arr));                                      \
            memset((arr) + (cap), 0, (nc_ - (cap)) * sizeof *(arr));                           \
            (cap) = nc_;                                                                       \
        }                                                                                      \
    } while (0)

void cl_fail(struct cluster *c, const char *fmt, ...)
{
    if (c->failed) {
        return;
    }
    c->failed = true;
    va_list ap;
    va_start(ap, fmt);
    int k = snprintf(c->failure, sizeof c->failure, "t=%llu: ", (unsigned long long)c->now);
    vsnprintf(c->failure + k, sizeof c->failure - (size_t)k, fmt, ap);
    va_end(ap);
    if (c->trace) {
        fprintf(c->trace, "VIOLATION %s\n", c->failure);
    }
}

#define TRACE(c, ...)                                                                          \
    do {                                                                                       \
        if ((c)->trace) {                                                                      \
            fprintf((c)->trace, "%8llu ", (unsigned long long)(c)->now);                       \
            fprintf((c)->trace, __VA_ARGS__);                                                  \
            fputc('\n', (c)->trace);                                                           \
        }                                                                                      \
    } while (0)

static uint64_t entry_hash(const struct raft_entry *e)
{
    uint64_t h = 1469598103934665603ull ^ e->type;
    h *= 1099511628211ull;
    if (e->buf != NULL) {
        const uint8_t *p = e->buf->base;
        for (size_t i = 0; i < e->buf->len; i++) {
            h = (h ^ p[i]) * 1099511628211ull;
        }
    }
    return h;
}

static uint64_t entry_cookie(const struct raft_entry *e)
{
    uint64_t v = 0;
    if (e->type == RAFT_NORMAL && e->buf != NULL && e->buf->len >= 8) {
        memcpy(&v, e->buf->base, 8);
    }
    return v;
}

/* ---------------------------------------------------------------------------------------------
 * Event heap (by time, then sequence: fully deterministic). */

static bool ev_less(const struct cl_ev *a, const struct cl_ev *b)
{
    return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}

static void heap_push(struct cluster *c, struct cl_ev *ev)
{
    ev->seq = c->seq++;
    GROW(c->heap, c->capheap, c->nheap + 1);
    size_t i = c->nheap++;
    c->heap[i] = *ev;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!ev_less(&c->heap[i], &c->heap[p])) {
            break;
        }
        struct cl_ev t = c->heap[i];
        c->heap[i] = c->heap[p];
        c->heap[p] = t;
        i = p;
    }
}

static void heap_pop(struct cluster *c, struct cl_ev *out)
{
    *out = c->heap[0];
    c->heap[0] = c->heap[--c->nheap];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < c->nheap && ev_less(&c->heap[l], &c->heap[m])) {
            m = l;
        }
        if (r < c->nheap && ev_less(&c->heap[r], &c->heap[m])) {
            m = r;
        }
        if (m == i) {
            break;
        }
        struct cl_ev t = c->heap[i];
        c->heap[i] = c->heap[m];
        c->heap[m] = t;
        i = m;
    }
}

static void msg_free(struct raft_message *m)
{
    if (m->type == RAFT_MSG_APPEND_ENTRIES) {
        for (uint32_t i = 0; i < m->append_entries.n_entries; i++) {
            raft_buf_unref(m->append_entries.entries[i].buf);
        }
        free(m->append_entries.entries);
        m->append_entries.entries = NULL;
    }
}

static void msg_copy(struct raft_message *dst, const struct raft_message *src)
{
    *dst = *src;
    if (src->type == RAFT_MSG_APPEND_ENTRIES && src->append_entries.n_entries > 0) {
        uint32_t n = src->append_entries.n_entries;
        dst->append_entries.entries = xrealloc(NULL, n * sizeof(struct raft_entry));
        for (uint32_t i = 0; i < n; i++) {
            dst->append_entries.entries[i] = src->append_entries.entries[i];
            raft_buf_ref(dst->append_entries.entries[i].buf);
        }
    } else if (src->type == RAFT_MSG_APPEND_ENTRIES) {
        dst->append_entries.entries = NULL;
    }
}

static void snap_free(struct cl_snap *s)
{
    if (s != NULL) {
        free(s->content);
        free(s);
    }
}

static void ev_free(struct cl_ev *ev)
{
    if (ev->kind == EV_MSG) {
        msg_free(&ev->m);
    } else if (ev->kind == EV_SNAP) {
        snap_free(ev->snap);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Checks. */

static uint64_t *u64_at(uint64_t **arr, uint64_t *cap, uint64_t i)
{
    if (i >= *cap) {
        size_t capz = (size_t)*cap;
        GROW(*arr, capz, (size_t)i + 1);
        *cap = capz;
    }
    return &(*arr)[i];
}

static struct cl_reg *reg_find(struct cluster *c, uint64_t index, uint64_t term)
{
    /* Open addressing would be faster; a linear probe over a hash-bucketed array is enough. */
    if (c->capreg == 0) {
        return NULL;
    }
    size_t mask = c->capreg - 1;
    size_t h = (size_t)((index * 0x9E3779B97F4A7C15ull) ^ (term * 0xC2B2AE3D27D4EB4Full)) & mask;
    for (size_t k = 0; k < c->capreg; k++) {
        struct cl_reg *r = &c->reg[(h + k) & mask];
        if (r->index == 0) {
            return r;
        }
        if (r->index == index && r->term == term) {
            return r;
        }
    }
    return NULL;
}

static void reg_check(struct cluster *c, uint64_t node, uint64_t index, uint64_t term,
                      uint64_t prev_term, bool prev_known, uint64_t hash)
{
    if (c->nreg * 2 >= c->capreg) {
        struct cl_reg *old = c->reg;
        size_t oldcap = c->capreg;
        c->capreg = oldcap ? oldcap * 2 : 1024;
        c->reg = calloc(c->capreg, sizeof *c->reg);
        for (size_t i = 0; i < oldcap; i++) {
            if (old[i].index != 0) {
                *reg_find(c, old[i].index, old[i].term) = old[i];
            }
        }
        free(old);
    }
    struct cl_reg *r = reg_find(c, index, term);
    if (r->index == 0) {
        r->index = index;
        r->term = term;
        r->prev_term = prev_known ? prev_term : UINT64_MAX;
        r->hash = hash;
        c->nreg++;
        return;
    }
    c->checks++;
    if (r->hash != hash) {
        cl_fail(c, "log matching: n%llu has a different entry at (%llu, term %llu)",
                (unsigned long long)node, (unsigned long long)index, (unsigned long long)term);
    }
    if (prev_known) {
        if (r->prev_term == UINT64_MAX) {
            r->prev_term = prev_term;
        } else if (r->prev_term != prev_term) {
            cl_fail(c,
                    "log matching: n%llu has (%llu, term %llu) after term %llu, another log "
                    "after term %llu",
                    (unsigned long long)node, (unsigned long long)index,
                    (unsigned long long)term, (unsigned long long)prev_term,
                    (unsigned long long)r->prev_term);
        }
    }
}

/* Leader completeness: a leader of term t holds every entry committed so far (all committed
 * entries come from terms <= t, as any commit in a later term would need a later leader). */
static void check_leader_complete(struct cluster *c, struct cl_node *n)
{
    struct raft *r = n->r;
    uint64_t first = raft_first_index(r);
    for (uint64_t i = first; i <= c->commit_max; i++) {
        uint64_t want = i < c->committed_cap ? c->committed_term[i] : 0;
        if (want == 0) {
            continue;
        }
        c->checks++;
        uint64_t have = raft_term_at(r, i);
        if (have != want) {
            cl_fail(c,
                    "leader completeness: leader n%llu (term %llu) has term %llu at %llu, "
                    "committed term %llu",
                    (unsigned long long)n->id, (unsigned long long)raft_term(r),
                    (unsigned long long)have, (unsigned long long)i, (unsigned long long)want);
            return;
        }
    }
}

static void note_commit(struct cluster *c, struct cl_node *n, uint64_t commit)
{
    if (commit < n->commit_seen) {
        cl_fail(c, "commit index of n%llu went back from %llu to %llu", (unsigned long long)n->id,
                (unsigned long long)n->commit_seen, (unsigned long long)commit);
    }
    struct raft *r = n->r;
    uint64_t first = raft_first_index(r);
    for (uint64_t i = n->commit_seen + 1; i <= commit; i++) {
        if (i < first - 1 || (i == first - 1 && i == 0)) {
            continue;
        }
        uint64_t t = raft_term_at(r, i);
        if (t == 0) {
            continue;
        }
        uint64_t *slot = u64_at(&c->committed_term, &c->committed_cap, i);
        c->checks++;
        if (*slot == 0) {
            *slot = t;
        } else if (*slot != t) {
            cl_fail(c, "state machine safety: n%llu committed term %llu at %llu, earlier %llu",
                    (unsigned long long)n->id, (unsigned long long)t, (unsigned long long)i,
                    (unsigned long long)*slot);
        }
    }
    if (commit > n->commit_seen) {
        n->commit_seen = commit;
        if (raft_state(r) == RAFT_LEADER && c->first_commit_term[n->id] != raft_term(r)) {
            c->first_commit_term[n->id] = raft_term(r);
            if (c->on_first_commit != NULL) {
                c->on_first_commit(c, n->id);
            }
        }
    }
    if (commit > c->commit_max) {
        c->commit_max = commit;
    }
}

static void sm_set(struct cluster *c, struct cl_node *n, uint64_t index, struct cl_sm_item it)
{
    (void)c;
    if (index + 1 > n->sm_cap) {
        size_t cap = (size_t)n->sm_cap;
        GROW(n->sm, cap, (size_t)index + 1);
        n->sm_cap = cap;
    }
    n->sm[index] = it;
}

static void history_check(struct cluster *c, uint64_t node, uint64_t index,
                          const struct cl_sm_item *it)
{
    if (index + 1 > c->applied_cap) {
        size_t cap = (size_t)c->applied_cap;
        GROW(c->applied, cap, (size_t)index + 1);
        c->applied_cap = cap;
    }
    c->checks++;
    struct cl_sm_item *h = &c->applied[index];
    if (h->term == 0) {
        *h = *it;
        if (index > c->applied_n) {
            c->applied_n = index;
        }
        return;
    }
    if (h->term != it->term || h->hash != it->hash) {
        cl_fail(c, "state machine safety: n%llu applied (term %llu) at %llu, history has term %llu",
                (unsigned long long)node, (unsigned long long)it->term, (unsigned long long)index,
                (unsigned long long)h->term);
    }
}

static void apply(struct cluster *c, struct cl_node *n, const struct raft_entry *e)
{
    struct cl_sm_item it = {.term = e->term, .hash = entry_hash(e), .cookie = entry_cookie(e)};
    if (e->index <= n->sm_n) {
        /* Already in the state machine (replayed after a snapshot or a restart). */
        c->checks++;
        if (n->sm[e->index].term != it.term || n->sm[e->index].hash != it.hash) {
            cl_fail(c, "n%llu re-applies a different entry at %llu", (unsigned long long)n->id,
                    (unsigned long long)e->index);
        }
        return;
    }
    if (e->index != n->sm_n + 1) {
        cl_fail(c, "n%llu applies %llu after %llu (gap)", (unsigned long long)n->id,
                (unsigned long long)e->index, (unsigned long long)n->sm_n);
        return;
    }
    history_check(c, n->id, e->index, &it);
    sm_set(c, n, e->index, it);
    n->sm_n = e->index;
}

static void check_roles(struct cluster *c, struct cl_node *n)
{
    struct raft *r = n->r;
    if (raft_state(r) != RAFT_LEADER) {
        return;
    }
    uint64_t t = raft_term(r);
    uint64_t *slot = u64_at(&c->leader_of_term, &c->lot_cap, t);
    c->checks++;
    if (*slot == 0) {
        *slot = n->id;
        c->elections++;
        TRACE(c, "n%llu leader of term %llu", (unsigned long long)n->id, (unsigned long long)t);
        check_leader_complete(c, n);
    } else if (*slot != n->id) {
        cl_fail(c, "election safety: n%llu and n%llu both lead term %llu",
                (unsigned long long)*slot, (unsigned long long)n->id, (unsigned long long)t);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Handling an update, as the runtime would. */

static void disk_enqueue(struct cluster *c, struct cl_node *n, const struct raft_update *u)
{
    if (u->truncate_from == 0 && u->n_entries == 0) {
        return;
    }
    GROW(n->ops, n->capops, n->nops + 1);
    struct cl_disk_op *op = &n->ops[n->nops++];
    op->truncate_from = u->truncate_from;
    op->n = u->n_entries;
    op->e = u->n_entries ? xrealloc(NULL, u->n_entries * sizeof *op->e) : NULL;
    for (uint32_t i = 0; i < u->n_entries; i++) {
        op->e[i] = u->entries[i];
        raft_buf_ref(op->e[i].buf);
    }
    uint64_t lat = n->slow_disk ? rnd(c, c->o.slow_disk_ms / 2, c->o.slow_disk_ms)
                                : rnd(c, 1, c->o.disk_ms);
    /* Group commit: a write completes `lat` after it was issued, never before an earlier one. */
    op->done_at = c->now + lat > n->disk_free_at ? c->now + lat : n->disk_free_at;
    n->disk_free_at = op->done_at;
    struct cl_ev ev = {.at = op->done_at, .kind = EV_DISK, .node = n->id, .life = n->life};
    heap_push(c, &ev);
}

static void disk_op_free(struct cl_disk_op *op)
{
    for (size_t i = 0; i < op->n; i++) {
        raft_buf_unref(op->e[i].buf);
    }
    free(op->e);
    op->e = NULL;
}

static void disk_drop_all(struct cl_node *n)
{
    for (size_t i = 0; i < n->nops; i++) {
        disk_op_free(&n->ops[i]);
    }
    n->nops = 0;
}

static void dlog_truncate(struct cl_node *n, uint64_t from)
{
    while (n->dn > 0 && n->snap_index + n->dn >= from) {
        raft_buf_unref(n->dlog[--n->dn].buf);
    }
}

static void dlog_compact(struct cluster *c, struct cl_node *n, uint64_t to)
{
    if (to <= n->snap_index) {
        return;
    }
    size_t k = (size_t)(to - n->snap_index);
    if (k > n->dn) {
        cl_fail(c, "n%llu compacts to %llu beyond its durable log (%llu+%zu)",
                (unsigned long long)n->id, (unsigned long long)to,
                (unsigned long long)n->snap_index, n->dn);
        k = n->dn;
    }
    for (size_t i = 0; i < k; i++) {
        struct raft_entry *e = &n->dlog[i];
        if (e->type == RAFT_CONFIG) {
            raft_config_decode(e->buf->base, e->buf->len, &n->snap_config);
        }
        if (i + 1 == k) {
            n->snap_term = e->term;
        }
        raft_buf_unref(e->buf);
    }
    memmove(n->dlog, n->dlog + k, (n->dn - k) * sizeof *n->dlog);
    n->dn -= k;
    n->snap_index += k;
}

static void step(struct cluster *c, struct cl_node *n, const struct raft_event *ev);
static void handle(struct cluster *c, struct cl_node *n, const struct raft_update *u);

static void send_msg(struct cluster *c, struct cl_node *n, const struct raft_message *m)
{
    c->msgs++;
    if (m->to == 0 || m->to > CL_MAX || !c->link[n->id][m->to]) {
        return;
    }
    if (rnd(c, 1, 100) <= c->o.drop_pct) {
        return;
    }
    unsigned copies = rnd(c, 1, 100) <= c->o.dup_pct ? 2 : 1;
    for (unsigned k = 0; k < copies; k++) {
        struct cl_ev ev;
        memset(&ev, 0, sizeof ev);
        ev.at = c->now + rnd(c, c->o.lat_min_ms, c->o.lat_max_ms);
        ev.kind = EV_MSG;
        ev.node = m->to;
        ev.life = n->life; /* the sender's life: a crash loses what it had not yet delivered */
        msg_copy(&ev.m, m);
        heap_push(c, &ev);
    }
}

static void send_snapshot(struct cluster *c, struct cl_node *n, const struct raft_snapshot_send *s)
{
    c->snapshots++;
    if (n->sm_n < s->index) {
        cl_fail(c, "n%llu asked to send snapshot %llu but applied only %llu",
                (unsigned long long)n->id, (unsigned long long)s->index,
                (unsigned long long)n->sm_n);
        return;
    }
    struct cl_snap *sn = calloc(1, sizeof *sn);
    sn->from = n->id;
    sn->to = s->to;
    sn->from_life = n->life;
    sn->leader_term = raft_term(n->r);
    sn->index = s->index;
    sn->term = s->term;
    sn->config = s->config;
    sn->content_n = n->sm_n;
    sn->content = xrealloc(NULL, (n->sm_n + 1) * sizeof *sn->content);
    memcpy(sn->content, n->sm, (n->sm_n + 1) * sizeof *sn->content);
    sn->lost = s->to > CL_MAX || !c->link[n->id][s->to] || rnd(c, 1, 100) <= c->o.drop_pct;
    struct cl_ev ev;
    memset(&ev, 0, sizeof ev);
    ev.at = c->now + rnd(c, c->o.snap_ms / 2, c->o.snap_ms);
    ev.kind = EV_SNAP;
    ev.node = s->to;
    ev.snap = sn;
    heap_push(c, &ev);
    TRACE(c, "n%llu -> n%llu snapshot at %llu (content %llu)", (unsigned long long)n->id,
          (unsigned long long)s->to, (unsigned long long)s->index, (unsigned long long)n->sm_n);
}

static const char *msg_name(uint8_t t)
{
    static const char *names[] = {"?",  "RV",   "RV-R", "AE",  "AE-R",
                                  "HB", "HB-R", "IS",   "TNOW", "RI", "RI-R"};
    return t <= 10 ? names[t] : "?";
}

static void handle(struct cluster *c, struct cl_node *n, const struct raft_update *u)
{
    struct raft *r = n->r;
    /* 1. Hard state, durable before anything is sent. */
    if (u->hard_state_changed) {
        if (u->term < n->term) {
            cl_fail(c, "n%llu term went back", (unsigned long long)n->id);
        }
        n->term = u->term;
        n->vote = u->vote;
    }
    /* 2. Log reset by a snapshot. */
    if (u->snapshot_index != 0) {
        disk_drop_all(n);
        dlog_truncate(n, 0);
        n->snap_index = u->snapshot_index;
        n->snap_term = u->snapshot_term;
        n->snap_config = *raft_configuration(r);
    }
    /* 3./4. Log Matching, one append at a time; then the disk. */
    for (uint32_t i = 0; i < u->n_entries; i++) {
        const struct raft_entry *e = &u->entries[i];
        uint64_t prev = e->index - 1;
        bool known = prev >= raft_first_index(r) - 1;
        reg_check(c, n->id, e->index, e->term, known ? raft_term_at(r, prev) : 0, known,
                  entry_hash(e));
    }
    disk_enqueue(c, n, u);
    /* 5. Messages. */
    for (uint32_t i = 0; i < u->n_messages; i++) {
        const struct raft_message *m = &u->messages[i];
        bool pre = (m->type == RAFT_MSG_REQUEST_VOTE && m->request_vote.pre_vote) ||
                   (m->type == RAFT_MSG_REQUEST_VOTE_RESULT && m->request_vote_result.pre_vote);
        if (m->from != n->id || (m->term > n->term && !pre)) {
            cl_fail(c, "n%llu sends in term %llu before persisting it", (unsigned long long)n->id,
                    (unsigned long long)m->term);
        }
        if (c->trace) {
            TRACE(c, "n%llu -> n%llu %s t%llu%s%s", (unsigned long long)n->id,
                  (unsigned long long)m->to, msg_name(m->type), (unsigned long long)m->term,
                  m->type == RAFT_MSG_REQUEST_VOTE && m->request_vote.pre_vote ? " pre" : "",
                  m->type == RAFT_MSG_APPEND_ENTRIES_RESULT
                      ? (m->append_entries_result.success ? " ok" : " reject")
                      : "");
        }
        send_msg(c, n, m);
    }
    /* A commit no message carried yet: told 1 ms later, as the runtime does (TELL_COMMIT_MS). */
    if (u->commit_untold && !n->tell_due) {
        struct cl_ev ev = {.at = c->now + 1, .kind = EV_TELL, .node = n->id, .life = n->life};
        heap_push(c, &ev);
        n->tell_due = true;
    }
    /* Commit index monotonic and consistent. */
    note_commit(c, n, u->commit_index);
    /* 6. Apply. */
    for (uint32_t i = 0; i < u->n_committed; i++) {
        if (u->committed[i].index > u->commit_index) {
            cl_fail(c, "n%llu applies %llu beyond commit %llu", (unsigned long long)n->id,
                    (unsigned long long)u->committed[i].index,
                    (unsigned long long)u->commit_index);
        }
        apply(c, n, &u->committed[i]);
    }
    /* 7. Snapshots. */
    for (uint32_t i = 0; i < u->n_snapshots; i++) {
        send_snapshot(c, n, &u->snapshots[i]);
    }
    /* 8. Compaction. */
    if (u->compact_to != 0) {
        if (u->compact_to > n->floor && u->compact_to > n->snap_index) {
            cl_fail(c, "n%llu compacts to %llu above its floor %llu", (unsigned long long)n->id,
                    (unsigned long long)u->compact_to, (unsigned long long)n->floor);
        }
        dlog_compact(c, n, u->compact_to);
    }
    /* 9. Clients. */
    for (uint32_t i = 0; i < u->n_proposals; i++) {
        const struct raft_proposal_result *p = &u->proposals[i];
        struct cl_proposal *cp = cl_proposal_get(c, p->cookie);
        if (cp == NULL) {
            continue;
        }
        if (p->outcome == RAFT_PROPOSAL_APPENDED) {
            cp->index = p->index;
            cp->term = p->term;
            cp->state = RAFT_PROPOSAL_APPENDED;
        } else {
            if (cp->state != RAFT_PROPOSAL_APPENDED) {
                cl_fail(c, "proposal %llu resolved twice", (unsigned long long)p->cookie);
            }
            cp->state = p->outcome;
            cp->status = p->status;
        }
    }
    for (uint32_t i = 0; i < u->n_reads; i++) {
        const struct raft_read *q = &u->reads[i];
        for (size_t k = 0; k < c->nreads; k++) {
            struct cl_read *cr = &c->reads[k];
            if (cr->cookie != q->cookie || cr->done) {
                continue;
            }
            cr->done = true;
            c->checks++;
            TRACE(c, "n%llu: read %llu released at %llu: %s", (unsigned long long)n->id,
                  (unsigned long long)q->cookie, (unsigned long long)q->index,
                  raft_strerror(q->status));
            if (q->status == 0 && q->index < cr->min_index) {
                cl_fail(c, "read %llu released at index %llu < %llu committed before it",
                        (unsigned long long)q->cookie, (unsigned long long)q->index,
                        (unsigned long long)cr->min_index);
            }
        }
    }
    check_roles(c, n);
}

static void step(struct cluster *c, struct cl_node *n, const struct raft_event *ev)
{
    struct raft_update u;
    c->steps++;
    int rc = raft_step(n->r, ev, &u);
    if (rc != 0 && rc != RAFT_EMALFORMED) {
        cl_fail(c, "n%llu step: %s", (unsigned long long)n->id, raft_strerror(rc));
    }
    handle(c, n, &u);
}

/* ---------------------------------------------------------------------------------------------
 * Nodes. */

static int node_boot(struct cluster *c, struct cl_node *n)
{
    struct raft_options o;
    raft_options_init(&o, n->id, c->o.seed * 131 + n->id * 7 + n->life);
    o.election_timeout_ms = c->o.election_timeout_ms;
    o.heartbeat_ms = c->o.heartbeat_ms;
    o.trailing_entries = c->o.trailing_entries;
    o.batch_entries_max = c->o.batch_entries_max;
    o.batch_bytes_max = 64 * 1024;
    o.inflight_msgs_max = c->o.inflight_msgs_max;
    o.promote_lag_max = 8;
    o.lease_reads = c->o.lease_reads;
    struct raft_initial_state in;
    memset(&in, 0, sizeof in);
    in.term = n->term;
    in.vote = n->vote;
    in.snapshot_index = n->snap_index;
    in.snapshot_term = n->snap_term;
    in.snapshot_config = n->snap_config;
    in.entries = n->dlog;
    in.n_entries = (uint32_t)n->dn;
    in.commit_index = n->floor;
    in.now_ms = c->now;
    int rc = raft_create(&o, &in, &n->r);
    if (rc != 0) {
        cl_fail(c, "n%llu create: %s", (unsigned long long)n->id, raft_strerror(rc));
        return rc;
    }
    n->up = true;
    n->commit_seen = raft_commit_index(n->r);
    n->disk_free_at = c->now;
    struct cl_ev ev = {.at = c->now + rnd(c, 1, 10), .kind = EV_TICK, .node = n->id,
                       .life = n->life};
    heap_push(c, &ev);
    return 0;
}

int cl_start_new(struct cluster *c, uint64_t id)
{
    if (id == 0 || id > CL_MAX || c->nodes[id].exists) {
        return -1;
    }
    struct cl_node *n = &c->nodes[id];
    n->id = id;
    n->exists = true;
    n->life = 1;
    TRACE(c, "n%llu starts empty", (unsigned long long)id);
    return node_boot(c, n);
}

void cl_crash(struct cluster *c, uint64_t id)
{
    struct cl_node *n = &c->nodes[id];
    if (!n->up) {
        return;
    }
    TRACE(c, "n%llu crashes (durable log to %llu, floor %llu)", (unsigned long long)id,
          (unsigned long long)(n->snap_index + n->dn), (unsigned long long)n->floor);
    c->crashes++;
    raft_destroy(n->r);
    n->r = NULL;
    n->up = false;
    n->life++;
    n->tell_due = false; /* its EV_TELL belongs to the old life */
    disk_drop_all(n);
    /* The state machine keeps what was checkpointed. */
    n->sm_n = n->floor;
    if (c->o.peer_down_pct != 0) {
        /* What a real transport sees when a process dies: its connections close. Hints arrive
         * late, after a restart, or not at all (peer_down_pct). */
        for (uint64_t i = 1; i <= CL_MAX; i++) {
            if (i != id && c->nodes[i].up && rnd(c, 0, 99) < c->o.peer_down_pct) {
                struct cl_ev ev = {.at = c->now + rnd(c, 1, 30), .kind = EV_PEER_DOWN,
                                   .node = i, .life = c->nodes[i].life, .down = id};
                heap_push(c, &ev);
            }
        }
    }
}

void cl_peer_down(struct cluster *c, uint64_t to, uint64_t down)
{
    struct cl_node *n = &c->nodes[to];
    if (n->up) {
        TRACE(c, "n%llu hears that n%llu is down", (unsigned long long)to,
              (unsigned long long)down);
        struct raft_event e = {.type = RAFT_EVENT_PEER_DOWN, .now_ms = c->now};
        e.peer_down.id = down;
        step(c, n, &e);
    }
}

void cl_restart(struct cluster *c, uint64_t id)
{
    struct cl_node *n = &c->nodes[id];
    if (n->up || !n->exists) {
        return;
    }
    TRACE(c, "n%llu restarts", (unsigned long long)id);
    n->restart_at = 0;
    node_boot(c, n);
}

struct raft *cl_raft(struct cluster *c, uint64_t id)
{
    return id >= 1 && id <= CL_MAX && c->nodes[id].up ? c->nodes[id].r : NULL;
}

uint64_t cl_leader(struct cluster *c)
{
    uint64_t best = 0, best_term = 0;
    for (uint64_t i = 1; i <= CL_MAX; i++) {
        struct cl_node *n = &c->nodes[i];
        if (n->up && raft_state(n->r) == RAFT_LEADER && raft_term(n->r) >= best_term) {
            best = i;
            best_term = raft_term(n->r);
        }
    }
    return best;
}

void cl_checkpoint(struct cluster *c, uint64_t id)
{
    struct cl_node *n = &c->nodes[id];
    if (!n->up) {
        return;
    }
    n->floor = n->sm_n;
    struct raft_event ev = {.type = RAFT_EVENT_APPLIED_FLOOR, .now_ms = c->now};
    ev.applied_floor.index = n->floor;
    step(c, n, &ev);
}

int cl_role_in(struct cluster *c, uint64_t of, uint64_t id)
{
    struct raft *r = cl_raft(c, of);
    if (r == NULL) {
        return -1;
    }
    const struct raft_server *s = raft_config_get(raft_configuration(r), id);
    return s == NULL ? -1 : s->role;
}

/* ---------------------------------------------------------------------------------------------
 * Network. */

void cl_heal(struct cluster *c)
{
    for (int a = 0; a <= CL_MAX; a++) {
        for (int b = 0; b <= CL_MAX; b++) {
            c->link[a][b] = true;
        }
    }
}

void cl_isolate(struct cluster *c, uint64_t id)
{
    for (uint64_t o = 1; o <= CL_MAX; o++) {
        c->link[id][o] = c->link[o][id] = false;
    }
}

void cl_cut(struct cluster *c, uint64_t from, uint64_t to)
{
    c->link[from][to] = false;
}

void cl_connect(struct cluster *c, uint64_t from, uint64_t to)
{
    c->link[from][to] = true;
}

/* ---------------------------------------------------------------------------------------------
 * Events. */

static void deliver_snapshot(struct cluster *c, struct cl_snap *s)
{
    struct cl_node *to = &c->nodes[s->to];
    bool ok = !s->lost && to->up && c->link[s->from][s->to];
    if (ok) {
        if (s->content_n > to->sm_n) {
            /* The receiver's state machine must be a prefix of the image. */
            for (uint64_t i = 1; i <= to->sm_n; i++) {
                c->checks++;
                if (to->sm[i].term != s->content[i].term || to->sm[i].hash != s->content[i].hash) {
                    cl_fail(c, "snapshot from n%llu disagrees with n%llu at %llu",
                            (unsigned long long)s->from, (unsigned long long)s->to,
                            (unsigned long long)i);
                    break;
                }
            }
            for (uint64_t i = to->sm_n + 1; i <= s->content_n; i++) {
                sm_set(c, to, i, s->content[i]);
            }
            to->sm_n = s->content_n;
            to->floor = s->content_n; /* installed images are checkpointed */
        } else {
            /* Our own state is newer: the contract still wants it durable before the core
             * drops log entries up to the snapshot, so checkpoint it. */
            to->floor = to->sm_n;
        }
        TRACE(c, "n%llu installs snapshot %llu from n%llu", (unsigned long long)s->to,
              (unsigned long long)s->index, (unsigned long long)s->from);
        struct raft_event ev = {.type = RAFT_EVENT_SNAPSHOT_INSTALLED, .now_ms = c->now};
        ev.snapshot_installed.from = s->from;
        ev.snapshot_installed.term = s->leader_term;
        ev.snapshot_installed.index = s->index;
        ev.snapshot_installed.last_term = s->term;
        ev.snapshot_installed.config = s->config;
        step(c, to, &ev);
    }
    struct cl_node *from = &c->nodes[s->from];
    if (from->up && from->life == s->from_life) {
        struct raft_event ev = {.type = RAFT_EVENT_SNAPSHOT_SENT, .now_ms = c->now};
        ev.snapshot_sent.to = s->to;
        ev.snapshot_sent.index = s->index;
        ev.snapshot_sent.ok = ok;
        step(c, from, &ev);
    }
}

static void disk_complete(struct cluster *c, struct cl_node *n)
{
    if (n->nops == 0) {
        return;
    }
    struct cl_disk_op op = n->ops[0];
    memmove(n->ops, n->ops + 1, (n->nops - 1) * sizeof *n->ops);
    n->nops--;
    if (op.truncate_from != 0) {
        dlog_truncate(n, op.truncate_from);
    }
    for (size_t i = 0; i < op.n; i++) {
        if (op.e[i].index != n->snap_index + n->dn + 1) {
            cl_fail(c, "n%llu disk: append %llu after %llu", (unsigned long long)n->id,
                    (unsigned long long)op.e[i].index,
                    (unsigned long long)(n->snap_index + n->dn));
            break;
        }
        GROW(n->dlog, n->dcap, n->dn + 1);
        n->dlog[n->dn++] = op.e[i];
        op.e[i].buf = NULL;
    }
    if (op.n > 0) {
        TRACE(c, "n%llu persisted %llu..%llu (truncate %llu)", (unsigned long long)n->id,
              (unsigned long long)op.e[0].index, (unsigned long long)op.e[op.n - 1].index,
              (unsigned long long)op.truncate_from);
        struct raft_event ev = {.type = RAFT_EVENT_PERSISTED, .now_ms = c->now};
        ev.persisted.index = op.e[op.n - 1].index;
        ev.persisted.term = op.e[op.n - 1].term;
        step(c, n, &ev);
    }
    disk_op_free(&op);
}

static void process(struct cluster *c, struct cl_ev *ev)
{
    struct cl_node *n = &c->nodes[ev->node];
    switch (ev->kind) {
    case EV_MSG:
        if (n->up && c->link[ev->m.from][ev->m.to] && ev->m.from <= CL_MAX &&
            c->nodes[ev->m.from].life == ev->life) {
            struct raft_event e = {.type = RAFT_EVENT_RECEIVE, .now_ms = c->now};
            e.message = ev->m;
            step(c, n, &e);
        }
        msg_free(&ev->m);
        break;
    case EV_SNAP:
        deliver_snapshot(c, ev->snap);
        snap_free(ev->snap);
        break;
    case EV_DISK:
        if (n->up && n->life == ev->life) {
            disk_complete(c, n);
        }
        break;
    case EV_PEER_DOWN:
        if (n->up && n->life == ev->life) {
            cl_peer_down(c, ev->node, ev->down);
        }
        break;
    case EV_TELL:
        if (n->up && n->life == ev->life) {
            n->tell_due = false;
            struct raft_event e = {.type = RAFT_EVENT_TELL_COMMIT, .now_ms = c->now};
            step(c, n, &e);
        }
        break;
    case EV_TICK:
        if (n->up && n->life == ev->life) {
            struct raft_event e = {.type = RAFT_EVENT_TICK, .now_ms = c->now};
            step(c, n, &e);
            struct cl_ev next = {.at = c->now + 10, .kind = EV_TICK, .node = n->id,
                                 .life = n->life};
            heap_push(c, &next);
        }
        break;
    }
}

void cl_run_until(struct cluster *c, uint64_t t)
{
    while (c->nheap > 0 && c->heap[0].at <= t) {
        struct cl_ev ev;
        heap_pop(c, &ev);
        if (ev.at > c->now) {
            c->now = ev.at;
        }
        process(c, &ev);
        if (c->crash_after_step != 0) {
            uint64_t id = c->crash_after_step;
            c->crash_after_step = 0;
            cl_crash(c, id);
        }
    }
    if (t > c->now) {
        c->now = t;
    }
}

bool cl_run_until_pred(struct cluster *c, bool (*pred)(struct cluster *, void *), void *arg,
                       uint64_t max_ms)
{
    uint64_t end = c->now + max_ms;
    while (c->now < end) {
        if (pred(c, arg)) {
            return true;
        }
        cl_run_until(c, c->now + 10);
    }
    return pred(c, arg);
}

/* ---------------------------------------------------------------------------------------------
 * Clients. */

struct cl_proposal *cl_proposal_get(struct cluster *c, uint64_t cookie)
{
    if (cookie == 0 || cookie > c->nprops) {
        return NULL;
    }
    return &c->props[cookie - 1];
}

int cl_propose(struct cluster *c, uint64_t id, size_t size, uint64_t *cookie)
{
    struct raft *r = cl_raft(c, id);
    if (r == NULL) {
        return RAFT_ESHUTDOWN;
    }
    GROW(c->props, c->capprops, c->nprops + 1);
    struct cl_proposal *p = &c->props[c->nprops++];
    memset(p, 0, sizeof *p);
    p->cookie = c->nprops;
    if (size < 8) {
        size = 8;
    }
    uint8_t *bytes = calloc(1, size);
    memcpy(bytes, &p->cookie, 8);
    struct raft_buf *b = raft_buf_new(bytes, size);
    struct raft_update u;
    int rc = raft_propose(r, c->now, RAFT_NORMAL, b, p->cookie, &u);
    raft_buf_unref(b);
    c->steps++;
    handle(c, &c->nodes[id], &u);
    if (cookie != NULL) {
        *cookie = p->cookie;
    }
    return rc;
}

static uint64_t commit_anywhere(struct cluster *c)
{
    return c->commit_max;
}

int cl_read(struct cluster *c, uint64_t id, uint64_t *cookie)
{
    struct raft *r = cl_raft(c, id);
    if (r == NULL) {
        return RAFT_ESHUTDOWN;
    }
    GROW(c->reads, c->capreads, c->nreads + 1);
    struct cl_read *q = &c->reads[c->nreads++];
    q->cookie = 1000000000ull + c->nreads;
    q->min_index = commit_anywhere(c);
    q->done = false;
    struct raft_update u;
    int rc = raft_read_index(r, c->now, q->cookie, &u);
    TRACE(c, "n%llu: read %llu (commit anywhere %llu): %s", (unsigned long long)id,
          (unsigned long long)q->cookie, (unsigned long long)q->min_index, raft_strerror(rc));
    c->steps++;
    handle(c, &c->nodes[id], &u);
    if (rc != 0) {
        q->done = true;
    }
    if (cookie != NULL) {
        *cookie = q->cookie;
    }
    return rc;
}

int cl_lease_read(struct cluster *c, uint64_t id)
{
    struct raft *r = cl_raft(c, id);
    if (r == NULL) {
        return RAFT_ESHUTDOWN;
    }
    uint64_t index = 0;
    uint64_t min = commit_anywhere(c);
    int rc = raft_read_lease(r, c->now, &index);
    c->checks++;
    if (rc == 0 && index < min) {
        cl_fail(c, "lease read on n%llu at %llu < %llu committed", (unsigned long long)id,
                (unsigned long long)index, (unsigned long long)min);
    }
    return rc;
}

static int call_done(struct cluster *c, uint64_t id, int rc, struct raft_update *u)
{
    c->steps++;
    handle(c, &c->nodes[id], u);
    return rc;
}

static uint64_t new_cookie(struct cluster *c)
{
    GROW(c->props, c->capprops, c->nprops + 1);
    struct cl_proposal *p = &c->props[c->nprops++];
    memset(p, 0, sizeof *p);
    p->cookie = c->nprops;
    p->config = true;
    return p->cookie;
}

int cl_add(struct cluster *c, uint64_t leader, uint64_t id, uint8_t role)
{
    struct raft *r = cl_raft(c, leader);
    if (r == NULL) {
        return RAFT_ESHUTDOWN;
    }
    struct raft_server s;
    memset(&s, 0, sizeof s);
    s.id = id;
    s.role = role;
    snprintf(s.name, sizeof s.name, "n%llu", (unsigned long long)id);
    snprintf(s.addr, sizeof s.addr, "127.0.0.1:%llu", 7000 + (unsigned long long)id);
    struct raft_update u;
    int rc = raft_add(r, c->now, &s, new_cookie(c), &u);
    TRACE(c, "n%llu: add n%llu role %u: %s", (unsigned long long)leader, (unsigned long long)id,
          role, raft_strerror(rc));
    return call_done(c, leader, rc, &u);
}

int cl_remove(struct cluster *c, uint64_t leader, uint64_t id)
{
    struct raft *r = cl_raft(c, leader);
    if (r == NULL) {
        return RAFT_ESHUTDOWN;
    }
    struct raft_update u;
    int rc = raft_remove(r, c->now, id, new_cookie(c), &u);
    TRACE(c, "n%llu: remove n%llu: %s", (unsigned long long)leader, (unsigned long long)id,
          raft_strerror(rc));
    return call_done(c, leader, rc, &u);
}

int cl_promote(struct cluster *c, uint64_t leader, uint64_t id)
{
    struct raft *r = cl_raft(c, leader);
    if (r == NULL) {
        return RAFT_ESHUTDOWN;
    }
    struct raft_update u;
    int rc = raft_promote(r, c->now, id, new_cookie(c), &u);
    TRACE(c, "n%llu: promote n%llu: %s", (unsigned long long)leader, (unsigned long long)id,
          raft_strerror(rc));
    return call_done(c, leader, rc, &u);
}

int cl_demote(struct cluster *c, uint64_t leader, uint64_t id)
{
    struct raft *r = cl_raft(c, leader);
    if (r == NULL) {
        return RAFT_ESHUTDOWN;
    }
    struct raft_update u;
    int rc = raft_demote(r, c->now, id, new_cookie(c), &u);
    TRACE(c, "n%llu: demote n%llu: %s", (unsigned long long)leader, (unsigned long long)id,
          raft_strerror(rc));
    return call_done(c, leader, rc, &u);
}

int cl_transfer(struct cluster *c, uint64_t leader, uint64_t target)
{
    struct raft *r = cl_raft(c, leader);
    if (r == NULL) {
        return RAFT_ESHUTDOWN;
    }
    struct raft_update u;
    int rc = raft_transfer(r, c->now, target, &u);
    TRACE(c, "n%llu: transfer to n%llu: %s", (unsigned long long)leader,
          (unsigned long long)target, raft_strerror(rc));
    return call_done(c, leader, rc, &u);
}

/* ---------------------------------------------------------------------------------------------
 * Thorough checks. */

void cl_check_all(struct cluster *c)
{
    /* Pairwise Log Matching over the logs in memory: equal terms at an index imply equal terms
     * at every earlier index both still hold. */
    for (uint64_t a = 1; a <= CL_MAX; a++) {
        struct raft *ra = cl_raft(c, a);
        if (ra == NULL) {
            continue;
        }
        for (uint64_t b = a + 1; b <= CL_MAX; b++) {
            struct raft *rb = cl_raft(c, b);
            if (rb == NULL) {
                continue;
            }
            uint64_t lo = raft_first_index(ra) > raft_first_index(rb) ? raft_first_index(ra)
                                                                       : raft_first_index(rb);
            uint64_t hi = raft_last_index(ra) < raft_last_index(rb) ? raft_last_index(ra)
                                                                     : raft_last_index(rb);
            bool matched = false;
            for (uint64_t i = hi; i >= lo && i > 0; i--) {
                uint64_t ta = raft_term_at(ra, i), tb = raft_term_at(rb, i);
                c->checks++;
                if (ta == tb) {
                    matched = true;
                } else if (matched) {
                    cl_fail(c, "log matching: n%llu and n%llu agree above %llu, differ at it",
                            (unsigned long long)a, (unsigned long long)b, (unsigned long long)i);
                    return;
                }
            }
        }
    }
    /* Every node's state machine is a prefix of the one history. */
    for (uint64_t a = 1; a <= CL_MAX; a++) {
        struct cl_node *n = &c->nodes[a];
        if (!n->exists) {
            continue;
        }
        for (uint64_t i = 1; i <= n->sm_n; i++) {
            c->checks++;
            if (i > c->applied_n || c->applied[i].hash != n->sm[i].hash ||
                c->applied[i].term != n->sm[i].term) {
                cl_fail(c, "state machine of n%llu differs from the history at %llu",
                        (unsigned long long)a, (unsigned long long)i);
                return;
            }
        }
    }
}

void cl_check_final(struct cluster *c)
{
    cl_check_all(c);
    /* Every committed index up to commit_max has been applied by someone in the end. */
    for (size_t k = 0; k < c->nprops; k++) {
        struct cl_proposal *p = &c->props[k];
        if (p->config) {
            continue;
        }
        if (p->state == RAFT_PROPOSAL_COMMITTED) {
            c->checks++;
            if (p->index > c->applied_n || c->applied[p->index].cookie != p->cookie) {
                cl_fail(c, "acknowledged proposal %llu (index %llu) is not in the history",
                        (unsigned long long)p->cookie, (unsigned long long)p->index);
            }
        } else if (p->state == RAFT_PROPOSAL_FAILED && p->status == RAFT_ENOTCOMMITTED) {
            c->checks++;
            if (p->index <= c->applied_n && c->applied[p->index].cookie == p->cookie) {
                cl_fail(c, "proposal %llu reported not committed is in the history at %llu",
                        (unsigned long long)p->cookie, (unsigned long long)p->index);
            }
        }
    }
    /* No proposal appears twice in the history. */
    uint8_t *seen = calloc(c->nprops + 2, 1);
    for (uint64_t i = 1; i <= c->applied_n; i++) {
        uint64_t ck = c->applied[i].cookie;
        if (ck == 0 || ck > c->nprops) {
            continue;
        }
        if (seen[ck]) {
            cl_fail(c, "proposal %llu applied twice", (unsigned long long)ck);
        }
        seen[ck] = 1;
    }
    free(seen);
}

/* ---------------------------------------------------------------------------------------------
 * Lifecycle. */

void cl_options_default(struct cl_options *o, uint64_t seed)
{
    memset(o, 0, sizeof *o);
    o->voters = 3;
    o->seed = seed;
    o->election_timeout_ms = 300;
    o->heartbeat_ms = 50;
    o->trailing_entries = 20;
    o->lat_min_ms = 1;
    o->lat_max_ms = 10;
    o->disk_ms = 3;
    o->slow_disk_ms = 200;
    o->snap_ms = 50;
    o->batch_entries_max = 16;
    o->inflight_msgs_max = 4;
}

int cl_init(struct cluster *c, const struct cl_options *o)
{
    memset(c, 0, sizeof *c);
    c->o = *o;
    c->rng = o->seed ^ 0x5DEECE66Dull;
    c->now = 0;
    if (o->trace) {
        c->trace = stdout;
    }
    cl_heal(c);
    struct raft_config cfg;
    memset(&cfg, 0, sizeof cfg);
    for (unsigned i = 1; i <= o->voters; i++) {
        struct raft_server *s = &cfg.servers[cfg.n++];
        s->id = i;
        s->role = RAFT_VOTER;
        snprintf(s->name, sizeof s->name, "n%u", i);
        snprintf(s->addr, sizeof s->addr, "127.0.0.1:%u", 7000 + i);
    }
    struct raft_entry boot;
    int rc = raft_bootstrap_entry(&cfg, &boot);
    if (rc != 0) {
        return rc;
    }
    for (unsigned i = 1; i <= o->voters; i++) {
        struct cl_node *n = &c->nodes[i];
        n->id = i;
        n->exists = true;
        n->life = 1;
        n->term = 1;
        GROW(n->dlog, n->dcap, 1);
        n->dlog[0] = boot;
        raft_buf_ref(boot.buf);
        n->dn = 1;
        struct cl_sm_item none = {0};
        sm_set(c, n, 0, none);
        reg_check(c, i, 1, 1, 0, true, entry_hash(&boot));
        rc = node_boot(c, n);
        if (rc != 0) {
            break;
        }
    }
    raft_buf_unref(boot.buf);
    return rc;
}

void cl_free(struct cluster *c)
{
    for (uint64_t i = 1; i <= CL_MAX; i++) {
        struct cl_node *n = &c->nodes[i];
        if (n->r != NULL) {
            raft_destroy(n->r);
        }
        disk_drop_all(n);
        free(n->ops);
        dlog_truncate(n, 0);
        free(n->dlog);
        free(n->sm);
    }
    while (c->nheap > 0) {
        struct cl_ev ev;
        heap_pop(c, &ev);
        ev_free(&ev);
    }
    free(c->heap);
    free(c->applied);
    free(c->committed_term);
    free(c->leader_of_term);
    free(c->reg);
    free(c->props);
    free(c->reads);
}
