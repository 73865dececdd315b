/*
 * Elections: the randomised election timer, pre-vote, votes, and the transitions between
 * follower, pre-candidate, candidate and leader. Also TimeoutNow, the last step of a transfer.
 *
 * Randomness comes only from the PRNG seeded by the caller (options.seed).
 */
#include <assert.h>
#include <string.h>

#include "consensus/internal.h"

/* splitmix64: small, fast, and good enough to spread election timeouts. */
uint64_t rng_next(struct raft *r)
{
    uint64_t z = (r->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* From §3.4: "Raft uses randomized election timeouts ... chosen randomly from a fixed interval". */
void election_reset_timer(struct raft *r)
{
    uint64_t et = r->o.election_timeout_ms;
    r->election_start_ms = r->now;
    r->election_rand_ms = et + rng_next(r) % et;
}

bool is_voter(const struct raft *r, uint64_t id)
{
    const struct raft_server *s = raft_config_get(cfg_current(&r->cfg), id);
    return s != NULL && s->role == RAFT_VOTER;
}

unsigned quorum_size(const struct raft *r)
{
    return raft_config_voters(cfg_current(&r->cfg)) / 2 + 1;
}

void become_follower(struct raft *r, uint64_t term, uint64_t leader)
{
    bool was_leader = r->state == RAFT_LEADER;
    assert(term >= r->term);
    if (term > r->term) {
        r->term = term;
        r->vote = 0;
        r->verified = 0;
        r->ack_pending = false;
    }
    r->state = RAFT_FOLLOWER;
    r->leader = leader;
    if (leader != 0) {
        r->leader_contact_ms = r->now;
    }
    if (was_leader) {
        r->transfer_target = 0;
        r->step_down_on_commit = false;
        pending_on_depose(r);
        read_fail_all(r, RAFT_ELEADERSHIPLOST);
    }
    election_reset_timer(r);
}

void become_leader(struct raft *r)
{
    assert(r->state == RAFT_CANDIDATE);
    r->state = RAFT_LEADER;
    r->leader = r->id;
    r->transfer_target = 0;
    r->step_down_on_commit = false;
    if (progress_rebuild(r) != 0) {
        r->u.oom = true;
    }
    progress_reset_all(r);
    r->quorum_check_ms = r->now + r->o.election_timeout_ms;
    r->pending_conf_index = cfg_current_index(&r->cfg);
    /* From §6.4: "the Leader Completeness Property guarantees that a leader has all committed
     * entries, but at the start of its term, it may not know which those are. To find out, it
     * needs to commit an entry from its term ... each leader commit a blank no-op entry". */
    if (append_local(r, RAFT_NOOP, NULL) != 0) {
        r->u.oom = true;
    }
    config_took_effect(r);
    broadcast_append(r);
    broadcast_heartbeat(r);
}

void election_start(struct raft *r, bool pre_vote, bool transfer)
{
    if (!is_voter(r, r->id)) {
        election_reset_timer(r);
        return;
    }
    if (pre_vote) {
        /* From §9.6: "a candidate would first ask other servers whether its log was up-to-date
         * enough to get their vote ... only if the candidate believes it can get votes from a
         * majority of the cluster would it increment its term and start a normal election". */
        r->state = RAFT_PRECANDIDATE;
    } else {
        r->state = RAFT_CANDIDATE;
        r->term++;
        r->vote = r->id;
        r->verified = 0;
        r->ack_pending = false;
    }
    r->leader = 0;
    r->n_granted = 1;
    r->granted[0] = r->id;
    election_reset_timer(r);
    if (quorum_size(r) == 1) {
        if (pre_vote) {
            election_start(r, false, transfer);
        } else {
            become_leader(r);
        }
        return;
    }
    const struct raft_config *c = cfg_current(&r->cfg);
    for (uint32_t i = 0; i < c->n; i++) {
        const struct raft_server *s = &c->servers[i];
        if (s->id == r->id || s->role != RAFT_VOTER) {
            continue;
        }
        struct raft_message *m = out_msg(r, RAFT_MSG_REQUEST_VOTE, s->id);
        if (m == NULL) {
            continue;
        }
        m->term = pre_vote ? r->term + 1 : r->term;
        m->request_vote.last_log_index = log_last_index(&r->log);
        m->request_vote.last_log_term = log_last_term(&r->log);
        m->request_vote.pre_vote = pre_vote;
        m->request_vote.transfer = transfer;
    }
}

void election_peer_down(struct raft *r, uint64_t id)
{
    if (r->state != RAFT_FOLLOWER || id == 0 || id != r->leader || id == r->id) {
        return;
    }
    if (r->o.lease_reads) {
        /* A leader serving lease reads counts on every follower keeping its lease for the whole
         * election timeout; a wrong hint at a majority would let a new leader be elected while
         * the old one still reads locally. */
        return;
    }
    /* Forgetting the leader ends its lease here: recv_message grants (pre-)votes again. A
     * message from the leader restores it and the whole timeout (heard_from_leader). The
     * remaining voters all hear of the crash at the same moment, so each waits a heartbeat more
     * than the one before it in id order (plus up to half a heartbeat at random): with random
     * delays alone two of them sometimes campaign within a round trip of each other, each votes
     * for itself, and the vote splits. One whose log is behind is refused and the next one,
     * a heartbeat later, wins. */
    const struct raft_config *c = cfg_current(&r->cfg);
    uint64_t rank = 0;
    for (uint32_t i = 0; i < c->n; i++) {
        const struct raft_server *s = &c->servers[i];
        rank += s->role == RAFT_VOTER && s->id != id && s->id < r->id;
    }
    uint64_t hb = r->o.heartbeat_ms;
    r->leader = 0;
    uint64_t delay = hb * (1 + rank) + rng_next(r) % (hb / 2 + 1);
    uint64_t elapsed = r->now - r->election_start_ms;
    if (elapsed + delay < r->election_rand_ms) {
        r->election_rand_ms = elapsed + delay;
    }
}

void election_tick(struct raft *r)
{
    assert(r->state != RAFT_LEADER);
    if (r->now - r->election_start_ms >= r->election_rand_ms) {
        election_start(r, r->o.pre_vote, false);
    }
}

/* From §3.6.1: "the voter denies its vote if its own log is more up-to-date than that of the
 * candidate ... If the logs have last entries with different terms, then the log with the later
 * term is more up-to-date. If the logs end with the same term, then whichever log is longer is
 * more up-to-date." */
static bool log_up_to_date(const struct raft *r, uint64_t last_index, uint64_t last_term)
{
    uint64_t my_term = log_last_term(&r->log);
    return last_term > my_term ||
           (last_term == my_term && last_index >= log_last_index(&r->log));
}

/* The caller (core.c) has applied the term rules: a real request has m->term <= r->term now. */
void recv_request_vote(struct raft *r, const struct raft_message *m)
{
    const struct raft_request_vote *rv = &m->request_vote;
    bool can_vote = r->vote == m->from || (r->vote == 0 && r->leader == 0) ||
                    (rv->pre_vote && m->term > r->term);
    bool granted = m->term >= r->term && can_vote &&
                   log_up_to_date(r, rv->last_log_index, rv->last_log_term);
    if (granted && !rv->pre_vote) {
        r->vote = m->from;
        election_reset_timer(r);
    }
    struct raft_message *reply = out_msg(r, RAFT_MSG_REQUEST_VOTE_RESULT, m->from);
    if (reply == NULL) {
        return;
    }
    /* A granted pre-vote answers in the term the pre-candidate would use, so that it does not
     * look like a stale reply; a refusal carries our term, which may make it step down. */
    reply->term = granted && rv->pre_vote ? m->term : r->term;
    reply->request_vote_result.granted = granted;
    reply->request_vote_result.pre_vote = rv->pre_vote;
}

void recv_request_vote_result(struct raft *r, const struct raft_message *m)
{
    const struct raft_request_vote_result *res = &m->request_vote_result;
    if (res->pre_vote) {
        if (r->state != RAFT_PRECANDIDATE || m->term != r->term + 1) {
            return;
        }
    } else if (r->state != RAFT_CANDIDATE || m->term != r->term) {
        return;
    }
    if (!res->granted || !is_voter(r, m->from)) {
        return;
    }
    for (size_t i = 0; i < r->n_granted; i++) {
        if (r->granted[i] == m->from) {
            return;
        }
    }
    if (r->n_granted >= RAFT_SERVERS_MAX) {
        return;
    }
    r->granted[r->n_granted++] = m->from;
    if (r->n_granted < quorum_size(r)) {
        return;
    }
    if (res->pre_vote) {
        election_start(r, false, false);
    } else {
        become_leader(r);
    }
}

/* From §3.10: "the target server ... starts a new election (incrementing its term and becoming a
 * candidate)" at once, without waiting for its timer and without pre-vote. */
void recv_timeout_now(struct raft *r, const struct raft_message *m)
{
    if (m->term != r->term || r->state == RAFT_LEADER || !is_voter(r, r->id)) {
        return;
    }
    election_start(r, false, true);
}
