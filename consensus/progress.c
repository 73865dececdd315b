/*
 * The leader's view of each other server in the configuration (etcd/raft's progress tracking):
 *   PROBE      the leader does not know where the follower's log matches; it sends one
 *              AppendEntries at a time and backs off on rejection;
 *   REPLICATE  the logs match up to `match`; AppendEntries are pipelined, bounded by
 *              inflight_msgs_max and inflight_bytes_max;
 *   SNAPSHOT   the follower needs entries that were compacted; a snapshot stream is under way.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "consensus/internal.h"

struct progress *progress_get(struct raft *r, uint64_t id)
{
    for (size_t i = 0; i < r->n_prs; i++) {
        if (r->prs[i].id == id) {
            return &r->prs[i];
        }
    }
    return NULL;
}

static void progress_init(struct raft *r, struct progress *p, uint64_t id)
{
    memset(p, 0, sizeof *p);
    p->id = id;
    p->next = log_last_index(&r->log) + 1;
    p->state = RAFT_PROBE;
    p->last_contact_ms = r->now;
    p->last_progress_ms = r->now;
}

/* Makes prs hold exactly the other servers of the current configuration, keeping the progress of
 * servers that stay. */
int progress_rebuild(struct raft *r)
{
    const struct raft_config *c = cfg_current(&r->cfg);
    struct progress np[RAFT_SERVERS_MAX];
    if (r->prs == NULL) {
        /* Allocated once at its largest so pointers into it never dangle; entries may move. */
        r->prs = calloc(RAFT_SERVERS_MAX, sizeof *r->prs);
        if (r->prs == NULL) {
            return RAFT_ENOMEM;
        }
    }
    size_t n = 0;
    for (uint32_t i = 0; i < c->n && n < RAFT_SERVERS_MAX; i++) {
        uint64_t id = c->servers[i].id;
        if (id == r->id) {
            continue;
        }
        struct progress *old = progress_get(r, id);
        if (old != NULL) {
            np[n] = *old;
        } else {
            progress_init(r, &np[n], id);
        }
        n++;
    }
    memcpy(r->prs, np, n * sizeof *np);
    r->n_prs = n;
    return 0;
}

void progress_reset_all(struct raft *r)
{
    for (size_t i = 0; i < r->n_prs; i++) {
        progress_init(r, &r->prs[i], r->prs[i].id);
    }
}

static void inflight_clear(struct progress *p)
{
    p->fl_head = 0;
    p->fl_n = 0;
    p->fl_bytes = 0;
}

void progress_become_probe(struct progress *p, uint64_t now)
{
    (void)now;
    /* From §3.5: after a rejection "the leader decrements nextIndex and retries"; restart from
     * just after what is known to match. */
    if (p->state == RAFT_SNAPSHOT) {
        p->next = (p->match > p->snapshot_index ? p->match : p->snapshot_index) + 1;
    } else {
        p->next = p->match + 1;
    }
    p->state = RAFT_PROBE;
    p->probe_sent = false;
    p->snapshot_index = 0;
    inflight_clear(p);
}

void progress_become_replicate(struct progress *p, uint64_t now)
{
    p->state = RAFT_REPLICATE;
    p->next = p->match + 1;
    p->probe_sent = false;
    p->last_progress_ms = now;
    inflight_clear(p);
}

bool progress_inflight_full(const struct raft *r, const struct progress *p)
{
    uint32_t max = r->o.inflight_msgs_max;
    if (max > INFLIGHT_CAP) {
        max = INFLIGHT_CAP;
    }
    return p->fl_n >= max || (p->fl_n > 0 && p->fl_bytes >= r->o.inflight_bytes_max);
}

void progress_inflight_add(struct progress *p, uint64_t last, uint64_t bytes)
{
    assert(p->fl_n < INFLIGHT_CAP);
    uint32_t slot = (p->fl_head + p->fl_n) % INFLIGHT_CAP;
    p->fl[slot].last = last;
    p->fl[slot].bytes = bytes;
    p->fl_n++;
    p->fl_bytes += bytes;
}

/* Frees every in-flight message whose last index is <= index (it was acknowledged). */
void progress_inflight_free_to(struct progress *p, uint64_t index)
{
    while (p->fl_n > 0 && p->fl[p->fl_head].last <= index) {
        p->fl_bytes -= p->fl[p->fl_head].bytes;
        p->fl_head = (p->fl_head + 1) % INFLIGHT_CAP;
        p->fl_n--;
    }
}

/* Records an acknowledged match; true when it advanced. */
bool progress_maybe_update(struct progress *p, uint64_t match, uint64_t now)
{
    bool advanced = false;
    if (match > p->match) {
        p->match = match;
        p->last_progress_ms = now;
        advanced = true;
    }
    if (p->next < match + 1) {
        p->next = match + 1;
    }
    return advanced;
}
