/*
 * Membership changes one server at a time (thesis §4.1), automatic promotion of caught-up
 * learners (§4.2.1), leader transfer (§3.10) and disaster recovery.
 *
 * From §4.1: "The new configuration takes effect on each server as soon as it is added to that
 * server's log"; and a leader allows a new change only once the previous one is committed. We
 * also wait for the leader's first entry of its term to commit, which closes the gap described
 * in the raft-dev errata for single-server changes across leader changes.
 */
#include <assert.h>
#include <string.h>

#include "consensus/internal.h"

static int change_precheck(const struct raft *r)
{
    if (r->state != RAFT_LEADER) {
        return RAFT_ENOTLEADER;
    }
    if (r->transfer_target != 0) {
        return RAFT_ETRANSFER;
    }
    if (!committed_in_term(r) || r->pending_conf_index > r->commit) {
        return RAFT_ECHANGE;
    }
    return 0;
}

static bool caught_up(const struct raft *r, const struct progress *p)
{
    return p != NULL && p->match + r->o.promote_lag_max >= log_last_index(&r->log);
}

int change_config(struct raft *r, const struct raft_config *c, uint64_t cookie, bool internal)
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
    rc = append_local(r, RAFT_CONFIG, b);
    raft_buf_unref(b);
    if (rc != 0) {
        return rc;
    }
    uint64_t index = log_last_index(&r->log);
    if (pending_add(r, cookie, index, r->term, internal) != 0) {
        r->u.oom = true;
    }
    if (!internal) {
        out_proposal(r, cookie, index, r->term, RAFT_PROPOSAL_APPENDED, 0);
    }
    broadcast_append(r);
    return 0;
}

void config_took_effect(struct raft *r)
{
    r->u.config_changed = true;
    if (r->state != RAFT_LEADER) {
        return;
    }
    if (progress_rebuild(r) != 0) {
        r->u.oom = true;
    }
    r->pending_conf_index = cfg_current_index(&r->cfg);
    /* From §4.2.2: a leader not part of the new configuration keeps managing the cluster until
     * the entry commits, but does not count itself in majorities. */
    if (!is_voter(r, r->id)) {
        r->step_down_on_commit = true;
        r->step_down_index = r->pending_conf_index;
    } else {
        r->step_down_on_commit = false;
    }
    if (r->transfer_target != 0 && !is_voter(r, r->transfer_target)) {
        transfer_abort(r);
    }
}

static bool server_ok(const struct raft_server *s)
{
    return s->id != 0 && s->role <= RAFT_LEARNER && memchr(s->name, '\0', RAFT_NAME_MAX) &&
           memchr(s->addr, '\0', RAFT_ADDR_MAX);
}

static int begin_change(struct raft *r, uint64_t id, struct raft_config *c, int *pos)
{
    int rc = change_precheck(r);
    if (rc != 0) {
        return rc;
    }
    *c = *cfg_current(&r->cfg);
    *pos = -1;
    for (uint32_t i = 0; i < c->n; i++) {
        if (c->servers[i].id == id) {
            *pos = (int)i;
        }
    }
    return 0;
}

int change_add(struct raft *r, const struct raft_server *s, uint64_t cookie)
{
    struct raft_config c;
    int pos;
    if (s == NULL || !server_ok(s)) {
        return RAFT_EBADARG;
    }
    int rc = begin_change(r, s->id, &c, &pos);
    if (rc != 0) {
        return rc;
    }
    if (pos >= 0) {
        return RAFT_EDUPLICATE;
    }
    if (c.n >= RAFT_SERVERS_MAX) {
        return RAFT_ETOOBIG;
    }
    c.servers[c.n] = *s;
    /* From §4.2.1: new servers join "as non-voting members" until they have caught up. */
    if (s->role == RAFT_VOTER) {
        c.servers[c.n].role = RAFT_LEARNER;
    }
    c.n++;
    return change_config(r, &c, cookie, false);
}

int change_remove(struct raft *r, uint64_t id, uint64_t cookie)
{
    struct raft_config c;
    int pos;
    int rc = begin_change(r, id, &c, &pos);
    if (rc != 0) {
        return rc;
    }
    if (pos < 0) {
        return RAFT_EUNKNOWNNODE;
    }
    if (c.servers[pos].role == RAFT_VOTER && raft_config_voters(&c) == 1) {
        return RAFT_EBADARG; /* the last voter */
    }
    memmove(&c.servers[pos], &c.servers[pos + 1],
            (c.n - (uint32_t)pos - 1) * sizeof c.servers[0]);
    c.n--;
    return change_config(r, &c, cookie, false);
}

int change_role(struct raft *r, uint64_t id, bool promote, uint64_t cookie)
{
    struct raft_config c;
    int pos;
    int rc = begin_change(r, id, &c, &pos);
    if (rc != 0) {
        return rc;
    }
    if (pos < 0) {
        return RAFT_EUNKNOWNNODE;
    }
    struct raft_server *s = &c.servers[pos];
    if (promote) {
        if (s->role == RAFT_VOTER) {
            return RAFT_EBADARG;
        }
        bool ready = id == r->id || caught_up(r, progress_get(r, id));
        if (!ready && s->role == RAFT_LEARNER) {
            return RAFT_EBADARG; /* already being promoted */
        }
        s->role = ready ? RAFT_VOTER : RAFT_LEARNER;
    } else {
        if (s->role != RAFT_VOTER || raft_config_voters(&c) == 1) {
            return RAFT_EBADARG;
        }
        s->role = RAFT_REPLICA;
    }
    return change_config(r, &c, cookie, false);
}

void maybe_promote(struct raft *r, struct progress *p)
{
    if (r->state != RAFT_LEADER || change_precheck(r) != 0) {
        return;
    }
    const struct raft_server *s = raft_config_get(cfg_current(&r->cfg), p->id);
    if (s == NULL || s->role != RAFT_LEARNER || !caught_up(r, p)) {
        return;
    }
    struct raft_config c = *cfg_current(&r->cfg);
    for (uint32_t i = 0; i < c.n; i++) {
        if (c.servers[i].id == p->id) {
            c.servers[i].role = RAFT_VOTER;
        }
    }
    if (change_config(r, &c, 0, true) != 0) {
        r->u.oom = true;
    }
}

void transfer_maybe_send(struct raft *r, struct progress *p)
{
    if (r->transfer_target != p->id || r->timeout_now_sent ||
        p->match < log_last_index(&r->log)) {
        return;
    }
    struct raft_message *m = out_msg(r, RAFT_MSG_TIMEOUT_NOW, p->id);
    if (m != NULL) {
        m->timeout_now.last_log_index = log_last_index(&r->log);
        r->timeout_now_sent = true;
    }
}

void transfer_abort(struct raft *r)
{
    r->transfer_target = 0;
    r->timeout_now_sent = false;
}

int transfer_start(struct raft *r, uint64_t target)
{
    if (r->state != RAFT_LEADER) {
        return RAFT_ENOTLEADER;
    }
    if (r->transfer_target != 0) {
        return RAFT_ETRANSFER;
    }
    if (target == r->id) {
        return RAFT_EBADARG;
    }
    if (target == 0) {
        /* The most up-to-date voter needs the least catching up. */
        const struct progress *best = NULL;
        for (size_t i = 0; i < r->n_prs; i++) {
            const struct progress *p = &r->prs[i];
            if (is_voter(r, p->id) && (best == NULL || p->match > best->match)) {
                best = p;
            }
        }
        if (best == NULL) {
            return RAFT_EUNKNOWNNODE;
        }
        target = best->id;
    }
    struct progress *p = progress_get(r, target);
    if (p == NULL || !is_voter(r, target)) {
        return RAFT_EUNKNOWNNODE;
    }
    /* From §3.10: "the prior leader stops accepting new client requests", catches the target up,
     * then sends TimeoutNow; "if the transfer does not complete within an election timeout, the
     * prior leader aborts the transfer and resumes accepting client requests". */
    r->transfer_target = target;
    r->transfer_deadline_ms = r->now + r->o.election_timeout_ms;
    r->transfer_started_ms = r->now;
    r->timeout_now_sent = false;
    transfer_maybe_send(r, p);
    if (!r->timeout_now_sent) {
        send_append(r, p, true);
    }
    return 0;
}

void membership_tick(struct raft *r)
{
    if (r->state == RAFT_LEADER && r->transfer_target != 0 &&
        r->now >= r->transfer_deadline_ms) {
        transfer_abort(r);
    }
}

int recover_config(struct raft *r, const struct raft_config *c)
{
    if (c == NULL || raft_config_check(c) != 0) {
        return RAFT_ECONFIG;
    }
    const struct raft_server *self = raft_config_get(c, r->id);
    if (self == NULL || self->role != RAFT_VOTER) {
        return RAFT_EBADARG;
    }
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
    /* A fresh term that this node votes for itself: no other server can be elected leader of it
     * with our vote, and the forced entry is the first of that term in our log. */
    become_follower(r, r->term + 1, 0);
    r->vote = r->id;
    rc = append_local(r, RAFT_CONFIG, b);
    raft_buf_unref(b);
    return rc;
}
