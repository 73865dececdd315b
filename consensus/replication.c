/*
 * Log replication both ways: AppendEntries and heartbeats, the follower's consistency check and
 * conflict hints, the leader's pipelining and back-off, commitment, persistence reports,
 * snapshots and compaction.
 *
 * Acknowledgements are durable: a follower's match index never exceeds what the caller reported
 * PERSISTED, and the leader counts itself only up to its own persisted index. A follower's match
 * also never exceeds `verified`, the prefix it has checked against this term's leader: entries
 * beyond it may be stale leftovers of an older term.
 */
#include <assert.h>
#include <string.h>

#include "consensus/internal.h"

static uint64_t entry_bytes(const struct raft_entry *e)
{
    return e->buf != NULL ? (uint64_t)e->buf->len : 0;
}

/* The highest index known to be durably in the state machine and still meaningful here: the
 * applied floor, bounded by what this node has handed out for applying and by its log. */
static uint64_t floor_in_log(const struct raft *r)
{
    uint64_t index = r->floor < r->applied_out ? r->floor : r->applied_out;
    return index < log_last_index(&r->log) ? index : log_last_index(&r->log);
}

static void send_snapshot(struct raft *r, struct progress *p)
{
    /* An image taken now contains at least the applied floor (durably in the state machine),
     * which compaction never passes. Label it with the floor rather than the compaction point:
     * the follower then needs only the entries after the floor, not the whole trailing window
     * (up to trailing_bytes_max it would receive, hold and apply again). */
    uint64_t index = floor_in_log(r);
    if (index < r->log.snap_index) {
        index = r->log.snap_index;
    }
    const struct cfg_item *ci = cfg_at(&r->cfg, index);
    struct raft_snapshot_send s;
    memset(&s, 0, sizeof s);
    s.to = p->id;
    s.index = index;
    s.term = index == r->log.snap_index ? r->log.snap_term : log_term(&r->log, index);
    s.config = ci->c;
    p->state = RAFT_SNAPSHOT;
    p->snapshot_index = s.index;
    p->fl_n = 0;
    p->fl_head = 0;
    p->fl_bytes = 0;
    out_snapshot(r, &s);
}

/* How long the leader waits before it sends entries again that are out to a peer, `bytes` of
 * them. A live TCP connection loses nothing; a message is lost with its connection (or in the
 * simulator). Either way a resend is only useful once the peer had the time to receive and
 * persist what is out: a heartbeat interval, plus the bytes at a conservative
 * RETRANSMIT_BYTES_PER_MS. Without the size term a 50 MB entry was sent again at every
 * heartbeat while its first copy was still on its way; the copies held the heartbeats back
 * behind them until the followers elected another leader. */
#define RETRANSMIT_BYTES_PER_MS (16u * 1024u)
static uint64_t retransmit_ms(const struct raft *r, uint64_t bytes)
{
    return (uint64_t)r->o.heartbeat_ms + bytes / RETRANSMIT_BYTES_PER_MS;
}

static void told(struct progress *p, uint64_t commit)
{
    if (commit > p->commit_told) {
        p->commit_told = commit;
    }
}

/* Sends one AppendEntries starting at p->next, or in replicate mode as many as the in-flight
 * window allows. `force` sends a probe even if one is outstanding. */
void send_append(struct raft *r, struct progress *p, bool force)
{
    if (p->state == RAFT_SNAPSHOT) {
        return;
    }
    if (p->state == RAFT_PROBE && p->probe_sent && !force) {
        return;
    }
    uint64_t last = log_last_index(&r->log);
    for (;;) {
        if (p->next <= r->log.snap_index) {
            send_snapshot(r, p);
            return;
        }
        if (p->state == RAFT_REPLICATE && (p->next > last || progress_inflight_full(r, p))) {
            return;
        }
        uint64_t prev = p->next - 1;
        size_t max_n = r->o.batch_entries_max;
        if (max_n > RAFT_ENTRIES_PER_MSG_MAX) {
            max_n = RAFT_ENTRIES_PER_MSG_MAX;
        }
        size_t n = 0;
        uint64_t bytes = 0;
        while (n < max_n && prev + n + 1 <= last) {
            const struct raft_entry *e = log_get(&r->log, prev + n + 1);
            uint64_t b = entry_bytes(e);
            if (n > 0 && bytes + b > r->o.batch_bytes_max) {
                break;
            }
            bytes += b;
            n++;
        }
        struct raft_entry *es = NULL;
        if (n > 0) {
            es = out_alloc(r, n * sizeof *es);
            if (es == NULL) {
                return;
            }
            for (size_t i = 0; i < n; i++) {
                es[i] = *log_get(&r->log, prev + i + 1);
                out_keep(r, es[i].buf);
            }
        }
        struct raft_message *m = out_msg(r, RAFT_MSG_APPEND_ENTRIES, p->id);
        if (m == NULL) {
            return;
        }
        m->append_entries.prev_index = prev;
        m->append_entries.prev_term = log_term(&r->log, prev);
        m->append_entries.commit = r->commit;
        m->append_entries.n_entries = (uint32_t)n;
        told(p, r->commit < prev + n ? r->commit : prev + n); /* what a follower takes of it */
        m->append_entries.entries = es;
        if (p->state == RAFT_PROBE) {
            p->probe_sent = true;
            p->probe_sent_ms = r->now;
            p->probe_bytes = bytes;
            return;
        }
        /* Pipelining: optimistically assume the message arrives. */
        progress_inflight_add(p, prev + n, bytes);
        p->next = prev + n + 1;
        if (n == 0) {
            return;
        }
    }
}

void broadcast_append(struct raft *r)
{
    for (size_t i = 0; i < r->n_prs; i++) {
        send_append(r, &r->prs[i], false);
    }
}

/* What a peer may be told is committed: what it holds and matches ours (a heartbeat's rule). */
static uint64_t tellable(const struct raft *r, const struct progress *p)
{
    return r->commit < p->match ? r->commit : p->match;
}

void broadcast_heartbeat(struct raft *r)
{
    r->hb_round++;
    r->hb_sent_ms[r->hb_round % HB_RING] = r->now;
    r->heartbeat_due_ms = r->now + r->o.heartbeat_ms;
    for (size_t i = 0; i < r->n_prs; i++) {
        struct progress *p = &r->prs[i];
        struct raft_message *m = out_msg(r, RAFT_MSG_HEARTBEAT, p->id);
        if (m == NULL) {
            return;
        }
        /* Never tell a follower to commit beyond what it is known to hold. */
        m->heartbeat.commit = tellable(r, p);
        m->heartbeat.ctx = r->hb_round;
        told(p, m->heartbeat.commit);
    }
}

bool commit_untold(const struct raft *r)
{
    if (r->state != RAFT_LEADER) {
        return false;
    }
    for (size_t i = 0; i < r->n_prs; i++) {
        if (tellable(r, &r->prs[i]) > r->prs[i].commit_told) {
            return true;
        }
    }
    return false;
}

/* RAFT_EVENT_TELL_COMMIT: a heartbeat to each peer that holds committed entries it has not been
 * told of. Context 0 belongs to no round: its answers confirm no read and extend no lease. */
void tell_commit(struct raft *r)
{
    if (r->state != RAFT_LEADER) {
        return;
    }
    for (size_t i = 0; i < r->n_prs; i++) {
        struct progress *p = &r->prs[i];
        uint64_t c = tellable(r, p);
        if (c <= p->commit_told) {
            continue;
        }
        struct raft_message *m = out_msg(r, RAFT_MSG_HEARTBEAT, p->id);
        if (m == NULL) {
            return;
        }
        m->heartbeat.commit = c;
        m->heartbeat.ctx = 0;
        told(p, c);
    }
}

static void follower_ack(struct raft *r)
{
    if (r->leader == 0 || r->leader == r->id) {
        return;
    }
    uint64_t match = r->verified < r->persisted ? r->verified : r->persisted;
    struct raft_message *m = out_msg(r, RAFT_MSG_APPEND_ENTRIES_RESULT, r->leader);
    if (m == NULL) {
        return;
    }
    m->append_entries_result.success = true;
    m->append_entries_result.match_index = match;
    r->ack_pending = r->persisted < r->verified;
}

void truncate_log(struct raft *r, uint64_t from)
{
    assert(from > r->commit);
    log_truncate(&r->log, from);
    size_t ncfg = r->cfg.n;
    cfg_truncate(&r->cfg, from);
    if (r->persisted >= from) {
        r->persisted = from - 1;
    }
    if (r->u.truncate_from == 0 || from < r->u.truncate_from) {
        r->u.truncate_from = from;
    }
    /* Entries appended earlier in this same update and now removed must not reach the caller. */
    while (r->u.n_entries > 0 && r->u.entries[r->u.n_entries - 1].index >= from) {
        r->u.n_entries--;
    }
    if (r->cfg.n != ncfg) {
        config_took_effect(r);
    }
}

void apply_config_entry(struct raft *r, const struct raft_entry *e)
{
    struct raft_config c;
    if (e->buf == NULL || raft_config_decode(e->buf->base, e->buf->len, &c) != 0) {
        return; /* validated before appending; cannot happen */
    }
    if (cfg_push(&r->cfg, e->index, &c) != 0) {
        r->u.oom = true;
        return;
    }
    config_took_effect(r);
}

static int append_one(struct raft *r, const struct raft_entry *e)
{
    int rc = log_append(&r->log, e);
    if (rc != 0) {
        r->u.oom = true;
        return rc;
    }
    out_entry(r, e);
    if (e->type == RAFT_CONFIG) {
        apply_config_entry(r, e);
    }
    return 0;
}

int append_local(struct raft *r, uint8_t type, struct raft_buf *buf)
{
    struct raft_entry e = {
        .term = r->term, .index = log_last_index(&r->log) + 1, .type = type, .buf = buf};
    return append_one(r, &e);
}

/* Validates the entries of an AppendEntries: bytes from the network are never trusted. */
static bool append_well_formed(const struct raft_message *m)
{
    const struct raft_append_entries *ae = &m->append_entries;
    if (ae->n_entries > RAFT_ENTRIES_PER_MSG_MAX || (ae->n_entries > 0 && ae->entries == NULL)) {
        return false;
    }
    uint64_t prev_term = ae->prev_term;
    if (prev_term > m->term || (ae->prev_index == 0 && prev_term != 0)) {
        return false;
    }
    for (uint32_t i = 0; i < ae->n_entries; i++) {
        const struct raft_entry *e = &ae->entries[i];
        if (e->index != ae->prev_index + i + 1 || e->term < prev_term || e->term > m->term ||
            e->term == 0) {
            return false;
        }
        if (e->type != RAFT_NORMAL && e->type != RAFT_NOOP && e->type != RAFT_CONFIG) {
            return false;
        }
        if (e->type == RAFT_CONFIG) {
            struct raft_config c;
            if (e->buf == NULL || raft_config_decode(e->buf->base, e->buf->len, &c) != 0) {
                return false;
            }
        }
        prev_term = e->term;
    }
    return true;
}

static void reject_append(struct raft *r, const struct raft_message *m)
{
    const struct raft_append_entries *ae = &m->append_entries;
    uint64_t last = log_last_index(&r->log);
    uint64_t hint = ae->prev_index < last ? ae->prev_index : last;
    /* Fast back-off (§5.3 of the paper, etcd's findConflictByTerm): skip every entry of ours
     * whose term is above prev_term, since none of them can match. */
    while (hint > r->log.snap_index && log_term(&r->log, hint) > ae->prev_term) {
        hint--;
    }
    struct raft_message *reply = out_msg(r, RAFT_MSG_APPEND_ENTRIES_RESULT, m->from);
    if (reply == NULL) {
        return;
    }
    reply->append_entries_result.success = false;
    reply->append_entries_result.reject_index = ae->prev_index;
    reply->append_entries_result.hint_index = hint;
    reply->append_entries_result.hint_term = log_term(&r->log, hint);
}

static void heard_from_leader(struct raft *r, uint64_t from)
{
    if (r->state != RAFT_FOLLOWER) {
        become_follower(r, r->term, from);
    }
    r->leader = from;
    r->leader_contact_ms = r->now;
    election_reset_timer(r);
}

void recv_append(struct raft *r, const struct raft_message *m)
{
    const struct raft_append_entries *ae = &m->append_entries;
    if (r->state == RAFT_LEADER || !append_well_formed(m)) {
        return;
    }
    heard_from_leader(r, m->from);
    uint64_t prev = ae->prev_index;
    uint64_t end = prev + ae->n_entries;
    if (prev < r->log.snap_index) {
        /* Everything up to snap_index is committed and durably in our state machine: it
         * matches any leader's log. Tell the leader to continue from there. */
        if (r->verified < r->log.snap_index) {
            r->verified = r->log.snap_index;
        }
        follower_ack(r);
        return;
    }
    if (prev > log_last_index(&r->log) || log_term(&r->log, prev) != ae->prev_term) {
        reject_append(r, m);
        return;
    }
    for (uint32_t i = 0; i < ae->n_entries; i++) {
        const struct raft_entry *e = &ae->entries[i];
        uint64_t have = log_term(&r->log, e->index);
        if (e->index <= log_last_index(&r->log)) {
            if (have == e->term) {
                continue;
            }
            /* From §3.5: "If an existing entry conflicts with a new one (same index but
             * different terms), delete the existing entry and all that follow it". A committed
             * entry can never conflict; if a message says so it is bogus: drop it. */
            if (e->index <= r->commit) {
                return;
            }
            truncate_log(r, e->index);
        }
        if (append_one(r, e) != 0) {
            return;
        }
    }
    if (end > r->verified) {
        r->verified = end;
    }
    uint64_t commit = ae->commit < end ? ae->commit : end;
    if (commit > r->commit) {
        r->commit = commit;
        commit_advanced(r);
    }
    if (r->persisted >= end) {
        follower_ack(r);
    } else {
        r->ack_pending = true;
    }
}

/* The leader's side of the back-off: the largest index <= index whose term is <= term. */
static uint64_t leader_find_conflict(const struct raft *r, uint64_t index, uint64_t term)
{
    uint64_t last = log_last_index(&r->log);
    uint64_t i = index < last ? index : last;
    while (i > r->log.snap_index && log_term(&r->log, i) > term) {
        i--;
    }
    return i;
}

void recv_append_result(struct raft *r, const struct raft_message *m)
{
    const struct raft_append_entries_result *res = &m->append_entries_result;
    if (r->state != RAFT_LEADER) {
        return;
    }
    struct progress *p = progress_get(r, m->from);
    if (p == NULL) {
        return;
    }
    p->last_contact_ms = r->now;
    if (!res->success) {
        if (p->state == RAFT_SNAPSHOT) {
            return;
        }
        if (p->state == RAFT_REPLICATE && res->reject_index <= p->match) {
            return; /* stale */
        }
        if (p->state == RAFT_PROBE && res->reject_index != p->next - 1) {
            return; /* stale */
        }
        uint64_t idx = res->hint_index;
        if (res->hint_term > 0) {
            idx = leader_find_conflict(r, res->hint_index, res->hint_term);
        }
        uint64_t next = res->reject_index < idx + 1 ? res->reject_index : idx + 1;
        if (next < p->match + 1) {
            next = p->match + 1;
        }
        progress_become_probe(p, r->now);
        p->next = next;
        send_append(r, p, true);
        return;
    }
    if (res->match_index > log_last_index(&r->log)) {
        return; /* bogus: claims entries we never had */
    }
    bool advanced = progress_maybe_update(p, res->match_index, r->now);
    progress_inflight_free_to(p, res->match_index);
    if (p->state == RAFT_PROBE && (advanced || res->match_index + 1 >= p->next)) {
        progress_become_replicate(p, r->now);
    } else if (p->state == RAFT_SNAPSHOT && p->match >= p->snapshot_index) {
        progress_become_replicate(p, r->now);
    }
    if (advanced) {
        maybe_commit(r);
        if (r->state != RAFT_LEADER) {
            return;
        }
        uint64_t id = p->id;
        maybe_promote(r, p);
        /* A promotion rebuilds the progress array: look the peer up again. */
        p = progress_get(r, id);
        if (p == NULL || r->state != RAFT_LEADER) {
            return;
        }
        transfer_maybe_send(r, p);
    }
    send_append(r, p, false);
}

void recv_heartbeat(struct raft *r, const struct raft_message *m)
{
    if (r->state == RAFT_LEADER) {
        return;
    }
    heard_from_leader(r, m->from);
    /* The leader sends min(its commit, our acknowledged match): durable entries that match. */
    uint64_t last = log_last_index(&r->log);
    uint64_t c = m->heartbeat.commit < last ? m->heartbeat.commit : last;
    if (c > r->commit) {
        r->commit = c;
        commit_advanced(r);
    }
    struct raft_message *reply = out_msg(r, RAFT_MSG_HEARTBEAT_RESULT, m->from);
    if (reply != NULL) {
        reply->heartbeat_result.ctx = m->heartbeat.ctx;
    }
}

void recv_heartbeat_result(struct raft *r, const struct raft_message *m)
{
    if (r->state != RAFT_LEADER) {
        return;
    }
    struct progress *p = progress_get(r, m->from);
    if (p == NULL) {
        return;
    }
    p->last_contact_ms = r->now;
    if (m->heartbeat_result.ctx > p->acked_ctx && m->heartbeat_result.ctx <= r->hb_round) {
        p->acked_ctx = m->heartbeat_result.ctx;
        read_on_round_acked(r);
        if (r->state != RAFT_LEADER) {
            return;
        }
    }
    if (p->match >= log_last_index(&r->log)) {
        return;
    }
    if (p->state == RAFT_PROBE) {
        if (!p->probe_sent || r->now - p->probe_sent_ms >= retransmit_ms(r, p->probe_bytes)) {
            send_append(r, p, true);
        }
    } else if (p->state == RAFT_REPLICATE &&
               r->now - p->last_progress_ms >=
                   (uint64_t)r->o.heartbeat_ms + retransmit_ms(r, p->fl_bytes)) {
        /* Pipelined messages were probably lost: nothing advanced for two heartbeats (and the
         * time their bytes take). */
        progress_become_probe(p, r->now);
        send_append(r, p, true);
    }
}

/* From §3.6.2: "Raft never commits log entries from previous terms by counting replicas. Only
 * log entries from the leader's current term are committed by counting replicas". */
void maybe_commit(struct raft *r)
{
    assert(r->state == RAFT_LEADER);
    uint64_t m[RAFT_SERVERS_MAX + 1];
    size_t n = 0;
    if (is_voter(r, r->id)) {
        m[n++] = r->persisted;
    }
    for (size_t i = 0; i < r->n_prs; i++) {
        if (is_voter(r, r->prs[i].id)) {
            m[n++] = r->prs[i].match;
        }
    }
    if (n == 0) {
        return;
    }
    /* Sort descending (n <= 17). */
    for (size_t i = 1; i < n; i++) {
        for (size_t j = i; j > 0 && m[j] > m[j - 1]; j--) {
            uint64_t t = m[j];
            m[j] = m[j - 1];
            m[j - 1] = t;
        }
    }
    uint64_t idx = m[quorum_size(r) - 1];
    if (idx > r->commit && log_term(&r->log, idx) == r->term) {
        r->commit = idx;
        commit_advanced(r);
    }
}

bool committed_in_term(const struct raft *r)
{
    return log_term(&r->log, r->commit) == r->term;
}

void commit_advanced(struct raft *r)
{
    /* A follower applies what is committed and durable in its own log. A leader applies what is
     * committed: a quorum holds it durably, and that quorum may be of followers only, before the
     * leader's own write is durable (From §10.2.1: "the leader may even commit an entry before
     * it has been written to its own disk, if a majority of followers have written it to their
     * disks; this is still safe"). Compaction still waits for our own copy (on_applied_floor). */
    uint64_t upto = r->commit;
    if (r->state != RAFT_LEADER && upto > r->persisted) {
        upto = r->persisted;
    }
    while (r->applied_out < upto) {
        const struct raft_entry *e = log_get(&r->log, r->applied_out + 1);
        if (e == NULL) {
            break;
        }
        out_committed(r, e);
        r->applied_out++;
    }
    pending_on_commit(r);
    if (r->state != RAFT_LEADER) {
        return;
    }
    /* From §4.2.2: the leader that is removed "steps down (returns to follower state) once the
     * Cnew entry is committed". */
    if (r->step_down_on_commit && r->commit >= r->step_down_index) {
        /* Hand over at once rather than leave the cluster to time out: TimeoutNow to the most
         * up-to-date voter that holds our whole log (§3.10's mechanism). */
        const struct progress *best = NULL;
        for (size_t i = 0; i < r->n_prs; i++) {
            const struct progress *p = &r->prs[i];
            if (is_voter(r, p->id) && p->match == log_last_index(&r->log) &&
                (best == NULL || p->last_contact_ms > best->last_contact_ms)) {
                best = p;
            }
        }
        if (best != NULL) {
            struct raft_message *m = out_msg(r, RAFT_MSG_TIMEOUT_NOW, best->id);
            if (m != NULL) {
                m->timeout_now.last_log_index = log_last_index(&r->log);
            }
        }
        become_follower(r, r->term, 0);
        return;
    }
    if (committed_in_term(r)) {
        read_on_commit_in_term(r);
        for (size_t i = 0; i < r->n_prs && r->state == RAFT_LEADER; i++) {
            maybe_promote(r, &r->prs[i]);
        }
    }
}

void on_persisted(struct raft *r, uint64_t index, uint64_t term)
{
    if (index > log_last_index(&r->log) || index < r->log.snap_index ||
        log_term(&r->log, index) != term) {
        return; /* a write overtaken by a truncation */
    }
    if (index <= r->persisted) {
        return;
    }
    r->persisted = index;
    if (r->state == RAFT_LEADER) {
        maybe_commit(r);
    } else if (r->ack_pending) {
        follower_ack(r);
    }
    commit_advanced(r);
}

void on_snapshot_sent(struct raft *r, uint64_t to, uint64_t index, bool ok)
{
    if (r->state != RAFT_LEADER) {
        return;
    }
    struct progress *p = progress_get(r, to);
    if (p == NULL || p->state != RAFT_SNAPSHOT || p->snapshot_index != index) {
        return;
    }
    if (ok) {
        progress_maybe_update(p, index, r->now);
        progress_become_probe(p, r->now);
        send_append(r, p, true);
        maybe_commit(r);
    } else {
        p->snapshot_index = 0;
        progress_become_probe(p, r->now);
        /* Retry after a heartbeat interval rather than at once. */
        p->probe_sent = true;
        p->probe_sent_ms = r->now;
        p->probe_bytes = 0;
    }
}

void on_snapshot_installed(struct raft *r, const struct raft_event *ev)
{
    uint64_t index = ev->snapshot_installed.index;
    uint64_t last_term = ev->snapshot_installed.last_term;
    uint64_t from = ev->snapshot_installed.from;
    uint64_t term = ev->snapshot_installed.term;
    if (term > r->term) {
        become_follower(r, term, from);
    }
    bool current = term == r->term && r->state != RAFT_LEADER;
    if (current) {
        heard_from_leader(r, from);
    }
    /* The caller has made the image (containing at least `index`) durable. Afterwards our log
     * must durably reach `index` too, or the leader's match index for us would outlive a crash.
     * So keep the suffix only if the prefix is already persisted in our own log with the same
     * term at `index` (From the snapshot rules of §5.3: "If existing log entry has same index
     * and term as snapshot's last included entry, retain log entries following it"); otherwise
     * the whole log goes -- entries still on their way to disk are superseded by the image, and
     * committed entries beyond `index` come again from the leader. */
    if (index <= r->log.snap_index) {
        /* Already compacted past it. */
    } else if (index <= r->persisted && log_term(&r->log, index) == last_term) {
        log_compact(&r->log, index);
        cfg_compact(&r->cfg, index);
        if (r->u.compact_to < index) {
            r->u.compact_to = index;
        }
    } else {
        log_reset(&r->log, index, last_term);
        r->cfg.n = 0;
        if (cfg_push(&r->cfg, index, &ev->snapshot_installed.config) != 0) {
            r->u.oom = true;
        }
        r->u.snapshot_index = index;
        r->u.snapshot_term = last_term;
        r->u.truncate_from = 0;
        r->u.n_entries = 0;
        r->persisted = index;
        r->ack_pending = false;
        config_took_effect(r);
    }
    if (r->commit < index) {
        r->commit = index;
    }
    if (r->persisted < index) {
        r->persisted = index; /* defensive: persisted never falls below snap_index */
    }
    if (r->applied_out < index) {
        r->applied_out = index;
    }
    if (r->floor < index) {
        r->floor = index;
    }
    pending_on_commit(r);
    if (current) {
        if (r->verified < index) {
            r->verified = index;
        }
        follower_ack(r);
    }
}

void on_applied_floor(struct raft *r, uint64_t index)
{
    if (index > r->floor) {
        r->floor = index;
    }
    uint64_t target = floor_in_log(r);
    if (target > r->persisted) {
        target = r->persisted; /* a leader may apply before its own write is durable */
    }
    uint64_t t = target > r->o.trailing_entries ? target - r->o.trailing_entries : 0;
    if (t < r->log.snap_index) {
        t = r->log.snap_index;
    }
    /* The trailing window is also bounded in bytes: big entries are not kept for long. */
    uint64_t bytes = log_bytes_between(&r->log, t, target);
    while (t < target && bytes > r->o.trailing_bytes_max) {
        bytes -= entry_bytes(log_get(&r->log, t + 1));
        t++;
    }
    if (t <= r->log.snap_index) {
        return;
    }
    log_compact(&r->log, t);
    cfg_compact(&r->cfg, t);
    r->u.compact_to = t;
}

void replication_tick(struct raft *r)
{
    assert(r->state == RAFT_LEADER);
    uint64_t et = r->o.election_timeout_ms;
    if (r->o.check_quorum && r->now >= r->quorum_check_ms) {
        /* From §6.2: "a leader steps down if an election timeout elapses without a successful
         * round of heartbeats to a majority of its cluster". */
        unsigned active = is_voter(r, r->id) ? 1 : 0;
        for (size_t i = 0; i < r->n_prs; i++) {
            struct progress *p = &r->prs[i];
            if (is_voter(r, p->id) && r->now - p->last_contact_ms < et) {
                active++;
            }
        }
        if (active < quorum_size(r)) {
            become_follower(r, r->term, 0);
            return;
        }
        r->quorum_check_ms = r->now + et;
    }
    if (r->now >= r->heartbeat_due_ms) {
        broadcast_heartbeat(r);
        for (size_t i = 0; i < r->n_prs; i++) {
            struct progress *p = &r->prs[i];
            if (p->state == RAFT_PROBE && p->probe_sent &&
                r->now - p->probe_sent_ms >= retransmit_ms(r, p->probe_bytes)) {
                send_append(r, p, true);
            }
        }
    }
}
