/* Helpers for driving one core by hand (see drive.h). */
#include "tests/sim/drive.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void drv_options(struct raft_options *o, uint64_t id)
{
    raft_options_init(o, id, 42 + id);
    o->election_timeout_ms = 1000;
    o->heartbeat_ms = 100;
}

struct raft *drv_node(uint64_t id, unsigned voters, uint64_t term, const uint64_t *terms,
                      unsigned n)
{
    struct raft_options o;
    drv_options(&o, id);
    return drv_node_with(&o, voters, term, terms, n);
}

struct raft *drv_node_with(const struct raft_options *o, unsigned voters, uint64_t term,
                           const uint64_t *terms, unsigned n)
{
    struct raft_config cfg;
    memset(&cfg, 0, sizeof cfg);
    for (unsigned i = 1; i <= voters; i++) {
        struct raft_server *s = &cfg.servers[cfg.n++];
        s->id = i;
        s->role = RAFT_VOTER;
        snprintf(s->name, sizeof s->name, "n%u", i);
        snprintf(s->addr, sizeof s->addr, "127.0.0.1:%u", 7000 + i);
    }
    struct raft_entry *es = calloc(n + 1, sizeof *es);
    if (raft_bootstrap_entry(&cfg, &es[0]) != 0) {
        abort();
    }
    for (unsigned i = 0; i < n; i++) {
        es[i + 1].index = i + 2;
        es[i + 1].term = terms[i];
        es[i + 1].type = RAFT_NORMAL;
        uint64_t v = 1000 + i;
        es[i + 1].buf = raft_buf_copy(&v, sizeof v);
    }
    struct raft_initial_state in;
    memset(&in, 0, sizeof in);
    in.term = term;
    in.entries = es;
    in.n_entries = n + 1;
    struct raft *r = NULL;
    if (raft_create(o, &in, &r) != 0) {
        abort();
    }
    for (unsigned i = 0; i <= n; i++) {
        raft_buf_unref(es[i].buf);
    }
    free(es);
    return r;
}

int drv_recv(struct raft *r, uint64_t now, const struct raft_message *m, struct raft_update *u)
{
    struct raft_event ev = {.type = RAFT_EVENT_RECEIVE, .now_ms = now};
    ev.message = *m;
    return raft_step(r, &ev, u);
}

int drv_tick(struct raft *r, uint64_t now, struct raft_update *u)
{
    struct raft_event ev = {.type = RAFT_EVENT_TICK, .now_ms = now};
    return raft_step(r, &ev, u);
}

int drv_persisted(struct raft *r, uint64_t now, uint64_t index, uint64_t term,
                  struct raft_update *u)
{
    struct raft_event ev = {.type = RAFT_EVENT_PERSISTED, .now_ms = now};
    ev.persisted.index = index;
    ev.persisted.term = term;
    return raft_step(r, &ev, u);
}

const struct raft_message *drv_find(const struct raft_update *u, uint8_t type, uint64_t to)
{
    for (uint32_t i = 0; i < u->n_messages; i++) {
        if (u->messages[i].type == type && (to == 0 || u->messages[i].to == to)) {
            return &u->messages[i];
        }
    }
    return NULL;
}

struct raft_message drv_vote_result(uint64_t from, uint64_t to, uint64_t term, bool pre,
                                    bool granted)
{
    struct raft_message m;
    memset(&m, 0, sizeof m);
    m.type = RAFT_MSG_REQUEST_VOTE_RESULT;
    m.from = from;
    m.to = to;
    m.term = term;
    m.request_vote_result.pre_vote = pre;
    m.request_vote_result.granted = granted;
    return m;
}

struct raft_message drv_append_ok(uint64_t from, uint64_t to, uint64_t term, uint64_t match)
{
    struct raft_message m;
    memset(&m, 0, sizeof m);
    m.type = RAFT_MSG_APPEND_ENTRIES_RESULT;
    m.from = from;
    m.to = to;
    m.term = term;
    m.append_entries_result.success = true;
    m.append_entries_result.match_index = match;
    return m;
}

uint8_t drv_elect(struct raft *r, unsigned voters, uint64_t *now)
{
    struct raft_update u;
    uint64_t id = raft_id(r);
    for (int i = 0; i < 40 && raft_state(r) == RAFT_FOLLOWER; i++) {
        *now += 100;
        drv_tick(r, *now, &u);
    }
    unsigned quorum = voters / 2 + 1;
    if (raft_state(r) == RAFT_PRECANDIDATE) {
        unsigned granted = 1;
        for (uint64_t v = 1; v <= voters && granted < quorum; v++) {
            if (v == id) {
                continue;
            }
            struct raft_message m = drv_vote_result(v, id, raft_term(r) + 1, true, true);
            drv_recv(r, *now, &m, &u);
            granted++;
        }
    }
    if (raft_state(r) == RAFT_CANDIDATE) {
        unsigned granted = 1;
        for (uint64_t v = 1; v <= voters && granted < quorum; v++) {
            if (v == id) {
                continue;
            }
            struct raft_message m = drv_vote_result(v, id, raft_term(r), false, true);
            drv_recv(r, *now, &m, &u);
            granted++;
        }
    }
    return raft_state(r);
}
