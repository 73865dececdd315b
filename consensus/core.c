/*
 * The core's entry points: creation and destruction, the update bundle handed to the caller,
 * dispatch of events and of received messages (with the term rules of §3.3 and the pre-vote and
 * stickiness exceptions of §9.6 and §4.2.3), proposals and their outcomes, status accessors.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "consensus/internal.h"

/* ---------------------------------------------------------------------------------------------
 * The bundle. */

static void out_release(struct raft *r)
{
    struct out *u = &r->u;
    for (size_t i = 0; i < u->n_refs; i++) {
        raft_buf_unref(u->refs[i]);
    }
    for (size_t i = 0; i < u->n_allocs; i++) {
        free(u->allocs[i]);
    }
    u->n_refs = u->n_allocs = 0;
    u->n_entries = u->n_msgs = u->n_committed = u->n_snaps = u->n_props = u->n_reads = 0;
    u->truncate_from = u->snapshot_index = u->snapshot_term = u->compact_to = 0;
    u->config_changed = false;
    u->oom = false;
}

static void out_free(struct raft *r)
{
    struct out *u = &r->u;
    out_release(r);
    free(u->entries);
    free(u->msgs);
    free(u->committed);
    free(u->snaps);
    free(u->props);
    free(u->reads);
    free(u->refs);
    free(u->allocs);
    memset(u, 0, sizeof *u);
}

struct raft_buf *out_keep(struct raft *r, struct raft_buf *b)
{
    if (b == NULL) {
        return NULL;
    }
    if (grow((void **)&r->u.refs, &r->u.cap_refs, r->u.n_refs + 1, sizeof *r->u.refs) != 0) {
        r->u.oom = true;
        return b; /* the holder's own reference keeps it alive for this call */
    }
    r->u.refs[r->u.n_refs++] = raft_buf_ref(b);
    return b;
}

void *out_alloc(struct raft *r, size_t size)
{
    if (grow((void **)&r->u.allocs, &r->u.cap_allocs, r->u.n_allocs + 1,
             sizeof *r->u.allocs) != 0) {
        r->u.oom = true;
        return NULL;
    }
    void *p = malloc(size);
    if (p == NULL) {
        r->u.oom = true;
        return NULL;
    }
    r->u.allocs[r->u.n_allocs++] = p;
    return p;
}

struct raft_message *out_msg(struct raft *r, uint8_t type, uint64_t to)
{
    struct out *u = &r->u;
    if (grow((void **)&u->msgs, &u->cap_msgs, u->n_msgs + 1, sizeof *u->msgs) != 0) {
        u->oom = true;
        return NULL;
    }
    struct raft_message *m = &u->msgs[u->n_msgs++];
    memset(m, 0, sizeof *m);
    m->type = type;
    m->from = r->id;
    m->to = to;
    m->term = r->term;
    return m;
}

void out_entry(struct raft *r, const struct raft_entry *e)
{
    struct out *u = &r->u;
    if (grow((void **)&u->entries, &u->cap_entries, u->n_entries + 1, sizeof *u->entries) != 0) {
        u->oom = true;
        return;
    }
    u->entries[u->n_entries++] = *e;
    out_keep(r, e->buf);
}

void out_committed(struct raft *r, const struct raft_entry *e)
{
    struct out *u = &r->u;
    if (grow((void **)&u->committed, &u->cap_committed, u->n_committed + 1,
             sizeof *u->committed) != 0) {
        u->oom = true;
        return;
    }
    u->committed[u->n_committed++] = *e;
    out_keep(r, e->buf);
}

void out_snapshot(struct raft *r, const struct raft_snapshot_send *s)
{
    struct out *u = &r->u;
    if (grow((void **)&u->snaps, &u->cap_snaps, u->n_snaps + 1, sizeof *u->snaps) != 0) {
        u->oom = true;
        return;
    }
    u->snaps[u->n_snaps++] = *s;
}

void out_proposal(struct raft *r, uint64_t cookie, uint64_t index, uint64_t term, uint8_t outcome,
                  int status)
{
    struct out *u = &r->u;
    if (grow((void **)&u->props, &u->cap_props, u->n_props + 1, sizeof *u->props) != 0) {
        u->oom = true;
        return;
    }
    struct raft_proposal_result *p = &u->props[u->n_props++];
    p->cookie = cookie;
    p->index = index;
    p->term = term;
    p->outcome = outcome;
    p->status = status;
}

void out_read(struct raft *r, uint64_t cookie, uint64_t index, int status)
{
    struct out *u = &r->u;
    if (grow((void **)&u->reads, &u->cap_reads, u->n_reads + 1, sizeof *u->reads) != 0) {
        u->oom = true;
        return;
    }
    struct raft_read *q = &u->reads[u->n_reads++];
    q->cookie = cookie;
    q->index = index;
    q->status = status;
}

struct snap {
    uint64_t term, vote, leader;
    uint8_t state;
};

static void begin(struct raft *r, uint64_t now_ms, struct snap *s)
{
    out_release(r);
    if (now_ms > r->now) {
        r->now = now_ms;
    }
    s->term = r->term;
    s->vote = r->vote;
    s->leader = r->leader;
    s->state = r->state;
}

static int finish(struct raft *r, const struct snap *s, int rc, struct raft_update *out)
{
    struct out *u = &r->u;
    memset(out, 0, sizeof *out);
    out->hard_state_changed = r->term != s->term || r->vote != s->vote;
    out->term = r->term;
    out->vote = r->vote;
    out->snapshot_index = u->snapshot_index;
    out->snapshot_term = u->snapshot_term;
    out->truncate_from = u->truncate_from;
    out->entries = u->entries;
    out->n_entries = (uint32_t)u->n_entries;
    out->messages = u->msgs;
    out->n_messages = (uint32_t)u->n_msgs;
    out->committed = u->committed;
    out->n_committed = (uint32_t)u->n_committed;
    out->commit_index = r->commit;
    out->snapshots = u->snaps;
    out->n_snapshots = (uint32_t)u->n_snaps;
    out->compact_to = u->compact_to;
    out->proposals = u->props;
    out->n_proposals = (uint32_t)u->n_props;
    out->reads = u->reads;
    out->n_reads = (uint32_t)u->n_reads;
    out->state = r->state;
    out->leader = r->leader;
    out->state_changed = r->state != s->state || r->leader != s->leader || r->term != s->term;
    out->config_changed = u->config_changed;
    out->commit_untold = commit_untold(r);
    if (rc == 0 && u->oom) {
        rc = RAFT_ENOMEM;
    }
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Proposal outcomes. */

int pending_add(struct raft *r, uint64_t cookie, uint64_t index, uint64_t term, bool internal)
{
    if (grow((void **)&r->pend, &r->cap_pend, r->n_pend + 1, sizeof *r->pend) != 0) {
        return RAFT_ENOMEM;
    }
    struct pending *p = &r->pend[r->n_pend++];
    p->cookie = cookie;
    p->index = index;
    p->term = term;
    p->deadline_ms = 0;
    p->internal = internal;
    return 0;
}

/* A proposal's fate is decided once the commit index passes its index: the committed entry there
 * is either ours (same term) or another, and committed entries never change. Truncation alone
 * decides nothing: a later leader may still hold and commit our entry. */
void pending_on_commit(struct raft *r)
{
    size_t k = 0;
    for (size_t i = 0; i < r->n_pend; i++) {
        struct pending *p = &r->pend[i];
        if (p->index > r->commit) {
            r->pend[k++] = *p;
            continue;
        }
        if (p->internal) {
            continue;
        }
        if (p->index < r->log.snap_index) {
            /* Jumped over by a snapshot: the term there is no longer known. */
            out_proposal(r, p->cookie, p->index, p->term, RAFT_PROPOSAL_FAILED, RAFT_EUNKNOWN);
        } else if (log_term(&r->log, p->index) == p->term) {
            out_proposal(r, p->cookie, p->index, p->term, RAFT_PROPOSAL_COMMITTED, 0);
        } else {
            out_proposal(r, p->cookie, p->index, p->term, RAFT_PROPOSAL_FAILED,
                         RAFT_ENOTCOMMITTED);
        }
    }
    r->n_pend = k;
}

void pending_on_depose(struct raft *r)
{
    for (size_t i = 0; i < r->n_pend; i++) {
        if (r->pend[i].deadline_ms == 0) {
            r->pend[i].deadline_ms = r->now + 2 * (uint64_t)r->o.election_timeout_ms;
        }
    }
}

static void pending_tick(struct raft *r)
{
    size_t k = 0;
    for (size_t i = 0; i < r->n_pend; i++) {
        struct pending *p = &r->pend[i];
        if (p->deadline_ms != 0 && r->now >= p->deadline_ms) {
            if (!p->internal) {
                out_proposal(r, p->cookie, p->index, p->term, RAFT_PROPOSAL_FAILED,
                             RAFT_EUNKNOWN);
            }
            continue;
        }
        r->pend[k++] = *p;
    }
    r->n_pend = k;
}

/* ---------------------------------------------------------------------------------------------
 * Creation. */

void raft_options_init(struct raft_options *o, uint64_t id, uint64_t seed)
{
    memset(o, 0, sizeof *o);
    o->id = id;
    o->seed = seed;
    o->election_timeout_ms = 1000;
    o->heartbeat_ms = 100;
    o->batch_entries_max = 64;
    o->batch_bytes_max = 1u << 20;
    o->inflight_msgs_max = 8;
    o->inflight_bytes_max = 8u << 20;
    o->trailing_entries = 1024;
    o->trailing_bytes_max = 16u << 20;
    o->promote_lag_max = 64;
    o->entry_bytes_max = 256u << 20;
    o->pending_max = 4096;
    o->pre_vote = true;
    o->check_quorum = true;
    o->lease_reads = false;
}

static bool options_ok(const struct raft_options *o)
{
    return o->id != 0 && o->election_timeout_ms > 0 && o->heartbeat_ms > 0 &&
           o->heartbeat_ms < o->election_timeout_ms && o->batch_entries_max > 0 &&
           o->inflight_msgs_max > 0 && o->pending_max > 0;
}

int raft_create(const struct raft_options *opts, const struct raft_initial_state *in,
                struct raft **out)
{
    if (opts == NULL || in == NULL || out == NULL || !options_ok(opts)) {
        return RAFT_EBADARG;
    }
    if (in->snapshot_config.n > RAFT_SERVERS_MAX ||
        (in->snapshot_config.n > 0 && raft_config_check(&in->snapshot_config) != 0)) {
        return RAFT_EBADARG;
    }
    struct raft *r = calloc(1, sizeof *r);
    if (r == NULL) {
        return RAFT_ENOMEM;
    }
    int rc;
    r->o = *opts;
    r->id = opts->id;
    r->rng = opts->seed;
    r->now = in->now_ms;
    r->term = in->term;
    r->vote = in->vote;
    r->state = RAFT_FOLLOWER;
    log_reset(&r->log, in->snapshot_index, in->snapshot_term);
    rc = cfg_push(&r->cfg, in->snapshot_index, &in->snapshot_config);
    if (rc != 0) {
        goto err_after_alloc;
    }
    uint64_t prev_term = in->snapshot_term;
    for (uint32_t i = 0; i < in->n_entries; i++) {
        const struct raft_entry *e = &in->entries[i];
        struct raft_config c;
        if (e->index != in->snapshot_index + i + 1 || e->term < prev_term || e->term == 0 ||
            e->term > in->term) {
            rc = RAFT_EBADARG;
            goto err_after_log;
        }
        if (e->type == RAFT_CONFIG) {
            if (e->buf == NULL || raft_config_decode(e->buf->base, e->buf->len, &c) != 0) {
                rc = RAFT_EBADARG;
                goto err_after_log;
            }
            rc = cfg_push(&r->cfg, e->index, &c);
            if (rc != 0) {
                goto err_after_log;
            }
        }
        rc = log_append(&r->log, e);
        if (rc != 0) {
            goto err_after_log;
        }
        prev_term = e->term;
    }
    r->persisted = log_last_index(&r->log);
    r->commit = in->commit_index < r->persisted ? in->commit_index : r->persisted;
    if (r->commit < in->snapshot_index) {
        r->commit = in->snapshot_index;
    }
    r->applied_out = r->commit;
    r->floor = in->snapshot_index;
    /* Forwarded-read ids must not repeat across restarts: a leader's late answer to a request of
     * an earlier life would release a new read with a stale index. */
    r->fwd_ctx = rng_next(r) >> 16;
    election_reset_timer(r);
    *out = r;
    return 0;

err_after_log:
    log_free(&r->log);
    free(r->cfg.items);
err_after_alloc:
    free(r);
    return rc;
}

void raft_destroy(struct raft *r)
{
    if (r == NULL) {
        return;
    }
    out_free(r);
    log_free(&r->log);
    free(r->cfg.items);
    free(r->prs);
    free(r->pend);
    free(r->reads);
    free(r->fwd);
    free(r);
}

int raft_bootstrap_entry(const struct raft_config *c, struct raft_entry *entry)
{
    uint8_t enc[RAFT_CONFIG_ENCODED_MAX];
    size_t len = 0;
    int rc = raft_config_encode(c, enc, &len);
    if (rc != 0) {
        return rc;
    }
    struct raft_buf *b = raft_buf_copy(enc, len);
    if (b == NULL) {
        return RAFT_ENOMEM;
    }
    entry->term = 1;
    entry->index = 1;
    entry->type = RAFT_CONFIG;
    entry->buf = b;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Events. */

static bool message_ok(const struct raft *r, const struct raft_message *m)
{
    return m->to == r->id && m->from != 0 && m->from != r->id &&
           m->type >= RAFT_MSG_REQUEST_VOTE && m->type <= RAFT_MSG_READ_INDEX_RESULT &&
           m->type != RAFT_MSG_INSTALL_SNAPSHOT;
}

static void recv_message(struct raft *r, const struct raft_message *m)
{
    bool from_leader = m->type == RAFT_MSG_APPEND_ENTRIES || m->type == RAFT_MSG_HEARTBEAT;
    if (m->term > r->term) {
        if (m->type == RAFT_MSG_REQUEST_VOTE) {
            /* From §4.2.3: "if a server receives a RequestVote request within the minimum
             * election timeout of hearing from a current leader, it does not update its term or
             * grant its vote" -- unless the leader itself asked for it (TimeoutNow). */
            bool in_lease = r->o.check_quorum && r->leader != 0 &&
                            (r->state == RAFT_LEADER ||
                             r->now - r->leader_contact_ms < r->o.election_timeout_ms);
            if (in_lease && !m->request_vote.transfer) {
                return;
            }
        }
        if (m->type == RAFT_MSG_REQUEST_VOTE && m->request_vote.pre_vote) {
            /* A pre-vote changes no state. */
        } else if (m->type == RAFT_MSG_REQUEST_VOTE_RESULT && m->request_vote_result.pre_vote &&
                   m->request_vote_result.granted) {
            /* Granted pre-votes carry the term we would campaign in. */
        } else {
            become_follower(r, m->term, from_leader ? m->from : 0);
        }
    } else if (m->term < r->term) {
        if (from_leader) {
            /* A stale leader (perhaps back from a partition, held off by pre-vote) learns the
             * newer term from our answer and steps down. */
            struct raft_message *reply = out_msg(r, RAFT_MSG_APPEND_ENTRIES_RESULT, m->from);
            if (reply != NULL) {
                reply->append_entries_result.success = false;
            }
            return;
        }
        if (m->type == RAFT_MSG_REQUEST_VOTE && m->request_vote.pre_vote) {
            recv_request_vote(r, m); /* refuses, with our term */
        }
        return;
    }
    switch (m->type) {
    case RAFT_MSG_REQUEST_VOTE:
        recv_request_vote(r, m);
        break;
    case RAFT_MSG_REQUEST_VOTE_RESULT:
        recv_request_vote_result(r, m);
        break;
    case RAFT_MSG_APPEND_ENTRIES:
        recv_append(r, m);
        break;
    case RAFT_MSG_APPEND_ENTRIES_RESULT:
        recv_append_result(r, m);
        break;
    case RAFT_MSG_HEARTBEAT:
        recv_heartbeat(r, m);
        break;
    case RAFT_MSG_HEARTBEAT_RESULT:
        recv_heartbeat_result(r, m);
        break;
    case RAFT_MSG_TIMEOUT_NOW:
        recv_timeout_now(r, m);
        break;
    case RAFT_MSG_READ_INDEX:
        recv_read_index(r, m);
        break;
    case RAFT_MSG_READ_INDEX_RESULT:
        recv_read_index_result(r, m);
        break;
    default:
        break;
    }
}

static void tick(struct raft *r)
{
    if (r->state == RAFT_LEADER) {
        replication_tick(r);
    } else {
        election_tick(r);
    }
    membership_tick(r);
    read_tick(r);
    pending_tick(r);
}

int raft_step(struct raft *r, const struct raft_event *ev, struct raft_update *out)
{
    assert(r != NULL);
    assert(out != NULL);
    struct snap s;
    int rc = 0;
    begin(r, ev->now_ms, &s);
    switch (ev->type) {
    case RAFT_EVENT_TICK:
        tick(r);
        break;
    case RAFT_EVENT_RECEIVE:
        if (message_ok(r, &ev->message)) {
            recv_message(r, &ev->message);
        } else {
            rc = RAFT_EMALFORMED;
        }
        break;
    case RAFT_EVENT_PERSISTED:
        on_persisted(r, ev->persisted.index, ev->persisted.term);
        break;
    case RAFT_EVENT_SNAPSHOT_SENT:
        on_snapshot_sent(r, ev->snapshot_sent.to, ev->snapshot_sent.index, ev->snapshot_sent.ok);
        break;
    case RAFT_EVENT_SNAPSHOT_INSTALLED:
        if (raft_config_check(&ev->snapshot_installed.config) != 0 ||
            ev->snapshot_installed.index == 0 || ev->snapshot_installed.last_term == 0) {
            rc = RAFT_EMALFORMED;
        } else {
            on_snapshot_installed(r, ev);
        }
        break;
    case RAFT_EVENT_APPLIED_FLOOR:
        on_applied_floor(r, ev->applied_floor.index);
        break;
    case RAFT_EVENT_PEER_DOWN:
        election_peer_down(r, ev->peer_down.id);
        break;
    case RAFT_EVENT_TELL_COMMIT:
        tell_commit(r);
        break;
    default:
        rc = RAFT_EBADARG;
        break;
    }
    return finish(r, &s, rc, out);
}

/* ---------------------------------------------------------------------------------------------
 * Calls. */

int raft_propose(struct raft *r, uint64_t now_ms, uint8_t type, struct raft_buf *buf,
                 uint64_t cookie, struct raft_update *out)
{
    struct snap s;
    begin(r, now_ms, &s);
    int rc = 0;
    if (r->state != RAFT_LEADER) {
        rc = RAFT_ENOTLEADER;
    } else if (r->transfer_target != 0) {
        rc = RAFT_ETRANSFER;
    } else if (type != RAFT_NORMAL && type != RAFT_NOOP) {
        rc = RAFT_EBADARG;
    } else if (buf != NULL && buf->len > r->o.entry_bytes_max) {
        rc = RAFT_ETOOBIG;
    } else if (r->n_pend >= r->o.pending_max) {
        rc = RAFT_EBUSY;
    }
    if (rc == 0) {
        rc = append_local(r, type, buf);
    }
    if (rc == 0) {
        uint64_t index = log_last_index(&r->log);
        rc = pending_add(r, cookie, index, r->term, false);
        out_proposal(r, cookie, index, r->term, RAFT_PROPOSAL_APPENDED, 0);
        broadcast_append(r);
    }
    return finish(r, &s, rc, out);
}

int raft_add(struct raft *r, uint64_t now_ms, const struct raft_server *srv, uint64_t cookie,
             struct raft_update *out)
{
    struct snap s;
    begin(r, now_ms, &s);
    return finish(r, &s, change_add(r, srv, cookie), out);
}

int raft_remove(struct raft *r, uint64_t now_ms, uint64_t id, uint64_t cookie,
                struct raft_update *out)
{
    struct snap s;
    begin(r, now_ms, &s);
    return finish(r, &s, change_remove(r, id, cookie), out);
}

int raft_promote(struct raft *r, uint64_t now_ms, uint64_t id, uint64_t cookie,
                 struct raft_update *out)
{
    struct snap s;
    begin(r, now_ms, &s);
    return finish(r, &s, change_role(r, id, true, cookie), out);
}

int raft_demote(struct raft *r, uint64_t now_ms, uint64_t id, uint64_t cookie,
                struct raft_update *out)
{
    struct snap s;
    begin(r, now_ms, &s);
    return finish(r, &s, change_role(r, id, false, cookie), out);
}

int raft_transfer(struct raft *r, uint64_t now_ms, uint64_t target, struct raft_update *out)
{
    struct snap s;
    begin(r, now_ms, &s);
    return finish(r, &s, transfer_start(r, target), out);
}

int raft_read_index(struct raft *r, uint64_t now_ms, uint64_t cookie, struct raft_update *out)
{
    struct snap s;
    begin(r, now_ms, &s);
    return finish(r, &s, read_start(r, cookie), out);
}

int raft_read_lease(struct raft *r, uint64_t now_ms, uint64_t *index)
{
    if (now_ms > r->now) {
        r->now = now_ms;
    }
    if (!r->o.check_quorum) {
        return RAFT_EBADARG;
    }
    return read_lease(r, index);
}

int raft_recover(struct raft *r, uint64_t now_ms, const struct raft_config *c,
                 struct raft_update *out)
{
    struct snap s;
    begin(r, now_ms, &s);
    return finish(r, &s, recover_config(r, c), out);
}

/* ---------------------------------------------------------------------------------------------
 * Status. */

uint8_t raft_state(const struct raft *r) { return r->state; }
uint64_t raft_id(const struct raft *r) { return r->id; }
uint64_t raft_term(const struct raft *r) { return r->term; }
uint64_t raft_vote(const struct raft *r) { return r->vote; }
uint64_t raft_leader(const struct raft *r) { return r->leader; }
uint64_t raft_commit_index(const struct raft *r) { return r->commit; }
uint64_t raft_last_index(const struct raft *r) { return log_last_index(&r->log); }
uint64_t raft_last_term(const struct raft *r) { return log_last_term(&r->log); }
uint64_t raft_first_index(const struct raft *r) { return r->log.snap_index + 1; }
uint64_t raft_persisted_index(const struct raft *r) { return r->persisted; }
uint64_t raft_applied_floor(const struct raft *r) { return r->floor; }
uint64_t raft_term_at(const struct raft *r, uint64_t index) { return log_term(&r->log, index); }
const struct raft_config *raft_configuration(const struct raft *r) { return cfg_current(&r->cfg); }
uint64_t raft_transfer_target(const struct raft *r) { return r->transfer_target; }

int raft_progress(const struct raft *r, uint64_t id, struct raft_progress_info *info)
{
    if (r->state != RAFT_LEADER) {
        return RAFT_ENOTLEADER;
    }
    for (size_t i = 0; i < r->n_prs; i++) {
        const struct progress *p = &r->prs[i];
        if (p->id == id) {
            info->id = id;
            info->match_index = p->match;
            info->next_index = p->next;
            info->state = p->state;
            info->last_contact_ms = p->last_contact_ms;
            info->inflight_bytes = p->fl_bytes;
            info->inflight_msgs = p->fl_n;
            return 0;
        }
    }
    return RAFT_EUNKNOWNNODE;
}
