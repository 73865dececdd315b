/*
 * Linearizable reads without writing to the log: ReadIndex (thesis §6.4), forwarded from
 * followers (§6.4: "followers could also help offload the processing of read-only queries"), and
 * optional lease reads (§6.4.1).
 *
 * Heartbeat rounds are numbered (hb_round, carried as ctx and echoed back). A read registered
 * before round k is confirmed once a majority of voters acknowledged some round >= k: at that
 * moment this server was still the leader, so the commit index recorded at registration is at
 * least the commit index of any leader at the time the read was made.
 */
#include <assert.h>
#include <string.h>

#include "consensus/internal.h"

#define READS_MAX 4096

uint64_t read_quorum_round(struct raft *r)
{
    uint64_t m[RAFT_SERVERS_MAX + 1];
    size_t n = 0;
    if (is_voter(r, r->id)) {
        m[n++] = r->hb_round;
    }
    for (size_t i = 0; i < r->n_prs; i++) {
        if (is_voter(r, r->prs[i].id)) {
            m[n++] = r->prs[i].acked_ctx;
        }
    }
    if (n == 0) {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        for (size_t j = i; j > 0 && m[j] > m[j - 1]; j--) {
            uint64_t t = m[j];
            m[j] = m[j - 1];
            m[j - 1] = t;
        }
    }
    return m[quorum_size(r) - 1];
}

static void release(struct raft *r, const struct read_req *q, int status)
{
    if (q->from == 0) {
        out_read(r, q->cookie, status == 0 ? q->index : 0, status);
        return;
    }
    struct raft_message *m = out_msg(r, RAFT_MSG_READ_INDEX_RESULT, q->from);
    if (m != NULL) {
        m->read_index_result.ctx = q->ctx;
        m->read_index_result.index = status == 0 ? q->index : 0;
        m->read_index_result.status = status == 0 ? 0 : RAFT_ENOTLEADER;
    }
}

void read_on_round_acked(struct raft *r)
{
    if (r->n_reads == 0) {
        return;
    }
    uint64_t q = read_quorum_round(r);
    size_t k = 0;
    for (size_t i = 0; i < r->n_reads; i++) {
        struct read_req *rq = &r->reads[i];
        if (rq->round != 0 && rq->round <= q) {
            release(r, rq, 0);
        } else {
            r->reads[k++] = *rq;
        }
    }
    r->n_reads = k;
}

/* From §6.4: "If the leader has not yet marked an entry from its current term committed, it
 * waits until it has done so"; then it records the commit index and confirms leadership with a
 * fresh round of heartbeats. */
void read_on_commit_in_term(struct raft *r)
{
    bool any = false;
    for (size_t i = 0; i < r->n_reads; i++) {
        if (r->reads[i].round == 0) {
            r->reads[i].index = r->commit;
            r->reads[i].round = r->hb_round + 1;
            any = true;
        }
    }
    if (!any) {
        return;
    }
    broadcast_heartbeat(r);
    read_on_round_acked(r);
}

static int read_add(struct raft *r, uint64_t cookie, uint64_t from, uint64_t ctx)
{
    if (r->n_reads >= READS_MAX) {
        return RAFT_EBUSY;
    }
    if (grow((void **)&r->reads, &r->cap_reads, r->n_reads + 1, sizeof *r->reads) != 0) {
        return RAFT_ENOMEM;
    }
    struct read_req *q = &r->reads[r->n_reads++];
    memset(q, 0, sizeof *q);
    q->cookie = cookie;
    q->from = from;
    q->ctx = ctx;
    if (committed_in_term(r)) {
        read_on_commit_in_term(r);
    }
    return 0;
}

int read_start(struct raft *r, uint64_t cookie)
{
    if (r->state == RAFT_LEADER) {
        return read_add(r, cookie, 0, 0);
    }
    if (r->leader == 0) {
        return RAFT_ENOTLEADER;
    }
    if (r->n_fwd >= READS_MAX) {
        return RAFT_EBUSY;
    }
    if (grow((void **)&r->fwd, &r->cap_fwd, r->n_fwd + 1, sizeof *r->fwd) != 0) {
        return RAFT_ENOMEM;
    }
    struct fwd_read *f = &r->fwd[r->n_fwd++];
    f->cookie = cookie;
    f->ctx = ++r->fwd_ctx;
    f->deadline_ms = r->now + r->o.election_timeout_ms;
    struct raft_message *m = out_msg(r, RAFT_MSG_READ_INDEX, r->leader);
    if (m != NULL) {
        m->read_index.ctx = f->ctx;
    }
    return 0;
}

void recv_read_index(struct raft *r, const struct raft_message *m)
{
    if (r->state != RAFT_LEADER || read_add(r, 0, m->from, m->read_index.ctx) != 0) {
        struct read_req q = {.from = m->from, .ctx = m->read_index.ctx};
        release(r, &q, RAFT_ENOTLEADER);
    }
}

void recv_read_index_result(struct raft *r, const struct raft_message *m)
{
    const struct raft_read_index_result *res = &m->read_index_result;
    for (size_t i = 0; i < r->n_fwd; i++) {
        if (r->fwd[i].ctx == res->ctx) {
            int status = res->status == 0 ? 0 : RAFT_ENOTLEADER;
            out_read(r, r->fwd[i].cookie, status == 0 ? res->index : 0, status);
            r->fwd[i] = r->fwd[--r->n_fwd];
            return;
        }
    }
}

void read_fail_all(struct raft *r, int status)
{
    for (size_t i = 0; i < r->n_reads; i++) {
        release(r, &r->reads[i], status);
    }
    r->n_reads = 0;
}

void read_tick(struct raft *r)
{
    size_t k = 0;
    for (size_t i = 0; i < r->n_fwd; i++) {
        if (r->now >= r->fwd[i].deadline_ms) {
            out_read(r, r->fwd[i].cookie, 0, RAFT_ETIMEOUT);
        } else {
            r->fwd[k++] = r->fwd[i];
        }
    }
    r->n_fwd = k;
}

/* From §6.4.1: the leader "would use the normal heartbeat mechanism to maintain a lease ... it
 * would then reply to read-only queries without any additional communication", assuming bounded
 * clock drift. The lease runs from the SEND time of the newest round a majority acknowledged,
 * for 3/4 of an election timeout (followers refuse votes for a full one: leader stickiness). */
int read_lease(struct raft *r, uint64_t *index)
{
    if (!r->o.lease_reads) {
        return RAFT_EBADARG;
    }
    if (r->state != RAFT_LEADER) {
        return RAFT_ENOTLEADER;
    }
    if (!committed_in_term(r)) {
        return RAFT_EBUSY;
    }
    uint64_t et = r->o.election_timeout_ms;
    /* TimeoutNow makes followers ignore stickiness: no lease around a transfer. */
    if (r->transfer_target != 0 ||
        (r->transfer_started_ms != 0 && r->now < r->transfer_started_ms + et)) {
        return RAFT_ENOQUORUM;
    }
    uint64_t q = read_quorum_round(r);
    if (q == 0 || r->hb_round - q >= HB_RING) {
        return RAFT_ENOQUORUM;
    }
    uint64_t sent = r->hb_sent_ms[q % HB_RING];
    if (r->now >= sent + et * 3 / 4) {
        return RAFT_ENOQUORUM;
    }
    *index = r->commit;
    return 0;
}
