/*
 * The randomized simulator: for each seed, a cluster of 3 or 5 voters runs through a fault phase
 * (message loss, duplication and delay, partitions of every shape, crashes and restarts, slow
 * disks, membership churn, leader transfers, compaction and snapshots, a client proposing and
 * reading throughout), then every fault is healed and the cluster must make progress within a
 * bound of virtual time. Safety is checked after every step (see cluster.c).
 *
 *   sim [--seeds N] [--first K] [--seed S] [--trace]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/sim/cluster.h"

struct totals {
    uint64_t steps, checks, msgs, elections, snapshots, crashes, proposals, committed;
};

static uint64_t pick(struct cluster *c, uint64_t n)
{
    return n == 0 ? 0 : cl_rand(c) % n;
}

static bool chance(struct cluster *c, unsigned one_in)
{
    return pick(c, one_in) == 0;
}

static uint64_t random_node(struct cluster *c, bool up_only)
{
    uint64_t ids[CL_MAX];
    uint64_t n = 0;
    for (uint64_t i = 1; i <= CL_MAX; i++) {
        if (c->nodes[i].exists && (!up_only || c->nodes[i].up)) {
            ids[n++] = i;
        }
    }
    return n == 0 ? 0 : ids[pick(c, n)];
}

/* Any node that believes it leads: stale leaders in a minority get proposals too, so logs
 * diverge the way they do in Figure 8 of the Raft paper. */
static uint64_t random_leader(struct cluster *c)
{
    uint64_t ids[CL_MAX];
    uint64_t n = 0;
    for (uint64_t i = 1; i <= CL_MAX; i++) {
        struct raft *r = cl_raft(c, i);
        if (r != NULL && raft_state(r) == RAFT_LEADER) {
            ids[n++] = i;
        }
    }
    return n == 0 ? 0 : ids[pick(c, n)];
}

static void partition(struct cluster *c)
{
    uint64_t a = random_node(c, false);
    if (a == 0) {
        return;
    }
    switch (pick(c, 4)) {
    case 0:
        cl_isolate(c, a);
        break;
    case 1: /* one way: a hears nobody, or nobody hears a */
        for (uint64_t o = 1; o <= CL_MAX; o++) {
            if (o != a) {
                if (pick(c, 2)) {
                    cl_cut(c, a, o);
                } else {
                    cl_cut(c, o, a);
                }
            }
        }
        break;
    case 2: { /* bridge: two sides that only `a` connects */
        for (uint64_t x = 1; x <= CL_MAX; x++) {
            for (uint64_t y = 1; y <= CL_MAX; y++) {
                if (x != a && y != a && (x % 2) != (y % 2)) {
                    cl_cut(c, x, y);
                }
            }
        }
        break;
    }
    default: { /* random split */
        uint64_t side = cl_rand(c);
        for (uint64_t x = 1; x <= CL_MAX; x++) {
            for (uint64_t y = 1; y <= CL_MAX; y++) {
                if (((side >> x) & 1) != ((side >> y) & 1)) {
                    cl_cut(c, x, y);
                }
            }
        }
        break;
    }
    }
}

static void churn(struct cluster *c, uint64_t leader, uint64_t *next_id)
{
    struct raft *r = cl_raft(c, leader);
    const struct raft_config *cfg = raft_configuration(r);
    unsigned voters = raft_config_voters(cfg);
    uint64_t op = pick(c, 5);
    if (op == 0 && *next_id <= CL_MAX) {
        uint64_t id = (*next_id)++;
        cl_start_new(c, id);
        cl_add(c, leader, id, pick(c, 3) == 0 ? RAFT_REPLICA : RAFT_VOTER);
        return;
    }
    const struct raft_server *s = &cfg->servers[pick(c, cfg->n)];
    if (op == 1 && (s->role != RAFT_VOTER || voters > 3)) {
        cl_remove(c, leader, s->id);
    } else if (op == 2 && s->role != RAFT_VOTER) {
        cl_promote(c, leader, s->id);
    } else if (op == 3 && s->role == RAFT_VOTER && voters > 3) {
        cl_demote(c, leader, s->id);
    }
}

static bool marker_done(struct cluster *c, void *arg)
{
    uint64_t cookie = *(uint64_t *)arg;
    struct cl_proposal *p = cl_proposal_get(c, cookie);
    if (p == NULL || p->state != RAFT_PROPOSAL_COMMITTED) {
        return false;
    }
    /* Every up member of the leader's configuration applied it. */
    uint64_t l = cl_leader(c);
    if (l == 0) {
        return false;
    }
    const struct raft_config *cfg = raft_configuration(cl_raft(c, l));
    for (uint32_t i = 0; i < cfg->n; i++) {
        struct cl_node *n = &c->nodes[cfg->servers[i].id];
        if (n->up && n->sm_n < p->index) {
            return false;
        }
    }
    return true;
}

/* After healing: a follower that holds an entry learns that it committed within two message
 * latencies and the leader's 1 ms (raft_update.commit_untold), not at the next heartbeat. Checked
 * where that bound is shorter than a heartbeat; no proposal follows the one it makes. */
static void check_commit_told(struct cluster *c)
{
    uint64_t l = cl_leader(c), ck = 0;
    uint32_t bound = 2 * c->o.lat_max_ms + 2;
    if (c->failed || l == 0 || bound >= c->o.heartbeat_ms || cl_propose(c, l, 8, &ck) != 0) {
        return;
    }
    uint64_t term = raft_term(cl_raft(c, l)), deadline = c->now + 2000;
    struct cl_proposal *p = cl_proposal_get(c, ck);
    while (!c->failed && p->state != RAFT_PROPOSAL_COMMITTED && c->now < deadline) {
        cl_run_until(c, c->now + 1);
        p = cl_proposal_get(c, ck);
    }
    if (c->failed || p->state != RAFT_PROPOSAL_COMMITTED || cl_leader(c) != l ||
        raft_term(cl_raft(c, l)) != term) {
        return; /* not this check's business: liveness is checked above */
    }
    bool holds[CL_MAX + 1] = {false};
    for (uint64_t id = 1; id <= CL_MAX; id++) {
        struct raft *r = cl_raft(c, id);
        holds[id] = id != l && r != NULL && cl_role_in(c, l, id) >= 0 &&
                    raft_term(r) == term && raft_persisted_index(r) >= p->index;
    }
    uint64_t at = c->now;
    cl_run_until(c, at + bound);
    if (c->failed || cl_leader(c) != l || raft_term(cl_raft(c, l)) != term) {
        return;
    }
    for (uint64_t id = 1; id <= CL_MAX; id++) {
        struct raft *r = cl_raft(c, id);
        if (holds[id] && r != NULL && raft_commit_index(r) < p->index) {
            cl_fail(c, "n%llu held entry %llu when it committed at %llu ms but was not told within "
                       "%u ms (its commit index: %llu)",
                    (unsigned long long)id, (unsigned long long)p->index,
                    (unsigned long long)at, bound, (unsigned long long)raft_commit_index(r));
        }
    }
}

static unsigned first_commit_crash_in;

/* Buggify: a leader sometimes crashes the moment it first advances its commit index in a term,
 * before whatever it sends next is out -- with Figure 8's other ingredients (stale leaders with
 * uncommitted entries of higher terms) this is where commitment rules are put to the test. */
static void on_first_commit(struct cluster *c, uint64_t id)
{
    if (first_commit_crash_in != 0 && chance(c, first_commit_crash_in)) {
        c->crash_after_step = id;
    }
}

static int run_seed(uint64_t seed, bool trace, struct totals *tot)
{
    struct cluster c;
    struct cl_options o;
    cl_options_default(&o, seed);
    /* Per-seed fault profile. */
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + 1;
    z ^= z >> 29;
    o.voters = (z & 1) ? 5 : 3;
    o.drop_pct = (uint32_t)((z >> 1) % 12);
    /* A third of the seeds are stormy: heavy loss, frequent crashes and partitions. */
    bool storm = (z >> 50) % 3 == 0;
    unsigned crash_in = storm ? 60 : 250, part_in = storm ? 80 : 300, lcrash_in = storm ? 100 : 400;
    if (storm) {
        o.drop_pct += 15;
    }
    o.dup_pct = (uint32_t)((z >> 5) % 8);
    o.lat_max_ms = 2 + (uint32_t)((z >> 9) % 40);
    o.trailing_entries = 2 + (z >> 15) % 40;
    o.snap_ms = 20 + (uint32_t)((z >> 21) % 200);
    o.lease_reads = (z >> 30) & 1;
    o.peer_down_pct = (uint32_t)((z >> 31) % 3) * 50; /* none, half, all */
    o.batch_entries_max = (z >> 40) % 3 == 0 ? 1 : 1 + (uint32_t)((z >> 42) % 16);
    o.inflight_msgs_max = 1 + (uint32_t)((z >> 44) % 6);
    o.trace = trace;
    if (cl_init(&c, &o) != 0) {
        printf("seed %llu: init failed\n", (unsigned long long)seed);
        return 1;
    }
    c.on_first_commit = on_first_commit;
    first_commit_crash_in = storm ? 3 : 10;
    uint64_t fault_ms = 6000 + (z >> 33) % 6000;
    uint64_t next_id = o.voters + 1;
    uint64_t heal_at = 0;
    /* Links of the current partition (healed: all true); fresh leaders may in addition be
     * isolated on their own clock, outlasting or overlapping it. */
    bool base[CL_MAX + 1][CL_MAX + 1];
    uint64_t iso_until[CL_MAX + 1] = {0};
    memcpy(base, c.link, sizeof base);
    uint64_t restart_at[CL_MAX + 1] = {0};
    uint64_t seen_leader = 0, seen_term = 0, doom_at = 0, doomed = 0;
    for (uint64_t t = 10; t <= fault_ms && !c.failed; t += 10) {
        uint64_t leader = cl_leader(&c);
        uint64_t any = random_leader(&c);
        if (any != 0 && chance(&c, 3)) {
            cl_propose(&c, any, chance(&c, 20) ? 8 + pick(&c, 20000) : 16, NULL);
        }
        /* Buggify: a newly elected leader sometimes crashes within moments, before its no-op
         * reaches a majority -- the window where Figure 8 of the Raft paper lives. */
        if (leader != 0 && (leader != seen_leader || raft_term(cl_raft(&c, leader)) != seen_term)) {
            seen_leader = leader;
            seen_term = raft_term(cl_raft(&c, leader));
            if (chance(&c, storm ? 2 : 5)) {
                doomed = leader;
                doom_at = t + pick(&c, 60);
            } else if (chance(&c, storm ? 1 : 3)) {
                /* Cut off at once: even its in-flight no-op is lost. */
                iso_until[leader] = t + 50 + pick(&c, 1500);
                cl_isolate(&c, leader);
            }
        }
        if (doomed != 0 && t >= doom_at) {
            cl_crash(&c, doomed);
            restart_at[doomed] = t + 20 + pick(&c, 400);
            doomed = 0;
            leader = cl_leader(&c);
        }
        if (leader != 0 && chance(&c, lcrash_in)) {
            /* The leader crashes: the most interesting moment for the log. */
            cl_crash(&c, leader);
            restart_at[leader] = t + 50 + pick(&c, 1500);
            leader = 0;
        }
        if (chance(&c, 25)) {
            uint64_t id = random_node(&c, true);
            if (id != 0) {
                cl_read(&c, id, NULL);
            }
        }
        if (o.peer_down_pct != 0 && leader != 0 && chance(&c, 50)) {
            /* A wrong hint: the leader is alive (a connection closed for another reason). */
            uint64_t id = random_node(&c, true);
            if (id != 0 && id != leader) {
                cl_peer_down(&c, id, leader);
            }
        }
        if (any != 0 && chance(&c, 10)) {
            cl_read(&c, any, NULL); /* stale leaders must not serve stale reads */
        }
        if (o.lease_reads && leader != 0 && chance(&c, 10)) {
            cl_lease_read(&c, leader);
        }
        if (chance(&c, crash_in)) {
            uint64_t id = random_node(&c, true);
            if (id != 0) {
                cl_crash(&c, id);
                restart_at[id] = t + 30 + pick(&c, storm ? 600 : 2500);
            }
        }
        for (uint64_t id = 1; id <= CL_MAX; id++) {
            if (restart_at[id] == 0 && c.nodes[id].exists && !c.nodes[id].up) {
                restart_at[id] = t + 20 + pick(&c, 400); /* crashed by a hook */
            }
            if (restart_at[id] != 0 && t >= restart_at[id]) {
                restart_at[id] = 0;
                cl_restart(&c, id);
            }
        }
        if (heal_at == 0 && chance(&c, part_in)) {
            cl_heal(&c);
            partition(&c);
            memcpy(base, c.link, sizeof base);
            heal_at = t + 50 + pick(&c, storm ? 800 : 2500);
        } else if (heal_at != 0 && t >= heal_at) {
            cl_heal(&c);
            memcpy(base, c.link, sizeof base);
            heal_at = 0;
        }
        memcpy(c.link, base, sizeof base);
        for (uint64_t id = 1; id <= CL_MAX; id++) {
            if (iso_until[id] > t) {
                cl_isolate(&c, id);
            }
        }
        if (chance(&c, 400)) {
            uint64_t id = random_node(&c, false);
            if (id != 0) {
                c.nodes[id].slow_disk = !c.nodes[id].slow_disk;
            }
        }
        leader = cl_leader(&c);
        if (leader != 0 && chance(&c, 150)) {
            churn(&c, leader, &next_id);
        }
        leader = cl_leader(&c);
        if (leader != 0 && chance(&c, 300)) {
            cl_transfer(&c, leader, chance(&c, 2) ? 0 : random_node(&c, false));
        }
        if (chance(&c, 15)) {
            uint64_t id = random_node(&c, true);
            if (id != 0) {
                cl_checkpoint(&c, id);
            }
        }
        cl_run_until(&c, t);
        if (t % 500 == 0) {
            cl_check_all(&c);
        }
    }
    /* Heal everything; the cluster must make progress within a bound of virtual time. */
    c.on_first_commit = NULL;
    cl_heal(&c);
    c.o.drop_pct = 0;
    c.o.dup_pct = 0;
    for (uint64_t id = 1; id <= CL_MAX; id++) {
        c.nodes[id].slow_disk = false;
        cl_restart(&c, id);
    }
    uint64_t marker = 0;
    uint64_t deadline = c.now + 15000;
    while (!c.failed && c.now < deadline) {
        uint64_t l = cl_leader(&c);
        struct cl_proposal *p = cl_proposal_get(&c, marker);
        bool need = p == NULL || p->state == RAFT_PROPOSAL_FAILED ||
                    (p->state == 0) ||
                    (p->state == RAFT_PROPOSAL_APPENDED && l != 0 &&
                     raft_term(cl_raft(&c, l)) != p->term);
        if (l != 0 && need) {
            uint64_t ck = 0;
            if (cl_propose(&c, l, 8, &ck) == 0) {
                marker = ck;
            }
        }
        if (marker != 0 && marker_done(&c, &marker)) {
            break;
        }
        cl_run_until(&c, c.now + 50);
    }
    if (!c.failed && !marker_done(&c, &marker)) {
        cl_fail(&c, "liveness: no progress within 15 s of healing (leader n%llu)",
                (unsigned long long)cl_leader(&c));
    }
    check_commit_told(&c);
    cl_check_final(&c);
    tot->steps += c.steps;
    tot->checks += c.checks;
    tot->msgs += c.msgs;
    tot->elections += c.elections;
    tot->snapshots += c.snapshots;
    tot->crashes += c.crashes;
    for (size_t k = 0; k < c.nprops; k++) {
        tot->proposals++;
        tot->committed += c.props[k].state == RAFT_PROPOSAL_COMMITTED;
    }
    int rc = 0;
    if (c.failed && trace) {
        for (uint64_t id = 1; id <= CL_MAX; id++) {
            struct raft *r = cl_raft(&c, id);
            if (r == NULL) {
                continue;
            }
            const struct raft_config *cf = raft_configuration(r);
            printf("n%llu: state %u term %llu leader %llu commit %llu last %llu persisted %llu "
                   "first %llu sm %llu config",
                   (unsigned long long)id, raft_state(r), (unsigned long long)raft_term(r),
                   (unsigned long long)raft_leader(r), (unsigned long long)raft_commit_index(r),
                   (unsigned long long)raft_last_index(r),
                   (unsigned long long)raft_persisted_index(r),
                   (unsigned long long)raft_first_index(r), (unsigned long long)c.nodes[id].sm_n);
            for (uint32_t i = 0; i < cf->n; i++) {
                printf(" n%llu/%u", (unsigned long long)cf->servers[i].id, cf->servers[i].role);
            }
            printf("\n");
            if (raft_state(r) == RAFT_LEADER) {
                for (uint32_t i = 0; i < cf->n; i++) {
                    struct raft_progress_info pi;
                    if (raft_progress(r, cf->servers[i].id, &pi) == 0) {
                        printf("   n%llu match %llu next %llu state %u fl %u\n",
                               (unsigned long long)pi.id, (unsigned long long)pi.match_index,
                               (unsigned long long)pi.next_index, pi.state, pi.inflight_msgs);
                    }
                }
            }
        }
    }
    if (c.failed) {
        printf("seed %llu FAILED: %s\n", (unsigned long long)seed, c.failure);
        rc = 1;
    }
    cl_free(&c);
    return rc;
}

int main(int argc, char **argv)
{
    uint64_t seeds = 100, first = 1;
    bool trace = false, single = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seeds") == 0 && i + 1 < argc) {
            seeds = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--first") == 0 && i + 1 < argc) {
            first = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            first = strtoull(argv[++i], NULL, 10);
            seeds = 1;
            single = true;
        } else if (strcmp(argv[i], "--trace") == 0) {
            trace = true;
        } else {
            fprintf(stderr, "usage: sim [--seeds N] [--first K] [--seed S] [--trace]\n");
            return 2;
        }
    }
    struct totals tot;
    memset(&tot, 0, sizeof tot);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t pass = 0, fail = 0;
    for (uint64_t s = first; s < first + seeds; s++) {
        if (run_seed(s, trace, &tot) == 0) {
            pass++;
        } else {
            fail++;
        }
        if (!single && seeds >= 10000 && (s - first + 1) % 10000 == 0) {
            printf("... %llu seeds, %llu failed\n", (unsigned long long)(s - first + 1),
                   (unsigned long long)fail);
            fflush(stdout);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("sim: %llu seeds in %.1f s (%.1f seeds/s), %llu steps, %llu checks, %llu messages, "
           "%llu elections, %llu snapshots, %llu crashes, %llu/%llu proposals committed\n",
           (unsigned long long)seeds, secs, secs > 0 ? (double)seeds / secs : 0.0,
           (unsigned long long)tot.steps, (unsigned long long)tot.checks,
           (unsigned long long)tot.msgs, (unsigned long long)tot.elections,
           (unsigned long long)tot.snapshots, (unsigned long long)tot.crashes,
           (unsigned long long)tot.committed, (unsigned long long)tot.proposals);
    printf("%llu passed, %llu failed\n", (unsigned long long)pass, (unsigned long long)fail);
    return fail == 0 ? 0 : 1;
}
