/*
 * A simulated cluster driving the pure Raft core: virtual clock, seeded PRNG, a network that
 * delays, drops, duplicates and reorders messages and can be partitioned (also one-way), disks
 * that persist asynchronously (slowly, if asked) and lose unpersisted writes on a crash, a state
 * machine per node, snapshot streams, and safety checks run after every step.
 *
 * Used by the randomized simulator (tests/sim/main.c) and by scenario tests
 * (tests/unit/test_raft_*.c). One thread, no real time: a seed replays a whole run.
 */
#ifndef WALRAFT_SIM_CLUSTER_H
#define WALRAFT_SIM_CLUSTER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "consensus/raft.h"

#define CL_MAX 9 /* node ids 1..CL_MAX */

struct cl_sm_item {
    uint64_t term;
    uint64_t hash; /* of type and payload */
    uint64_t cookie;
};

struct cl_node {
    uint64_t id;
    bool exists; /* created at least once */
    bool up;
    unsigned life;
    struct raft *r;
    /* Durable state. */
    uint64_t term, vote;
    uint64_t snap_index, snap_term;
    struct raft_config snap_config;
    struct raft_entry *dlog; /* entries snap_index+1 .. */
    size_t dn, dcap;
    /* Disk queue (not yet durable), FIFO. */
    struct cl_disk_op *ops;
    size_t nops, capops;
    uint64_t disk_free_at;
    bool slow_disk;
    /* State machine: items 1..sm_n (index i at sm[i]). */
    struct cl_sm_item *sm;
    uint64_t sm_n, sm_cap;
    uint64_t floor;       /* durable applied floor */
    uint64_t commit_seen; /* highest commit index in this life */
    uint64_t restart_at;  /* when down: restart time (0: stays down) */
    bool tell_due;        /* an EV_TELL is queued for this life */
};

struct cl_options {
    unsigned voters;  /* initial voters 1..voters */
    uint64_t seed;
    uint32_t election_timeout_ms, heartbeat_ms;
    uint64_t trailing_entries;
    uint32_t lat_min_ms, lat_max_ms; /* message latency */
    uint32_t drop_pct, dup_pct;      /* per message, percent */
    uint32_t disk_ms, slow_disk_ms;  /* disk write latency */
    uint32_t snap_ms;                /* snapshot stream duration */
    uint32_t batch_entries_max;
    uint32_t inflight_msgs_max;
    bool lease_reads;
    uint32_t peer_down_pct; /* a crash sends RAFT_EVENT_PEER_DOWN to this percent of the others */
    bool trace;
};

struct cl_proposal {
    uint64_t cookie;
    uint64_t index, term; /* when appended */
    uint8_t state;        /* 0 unsent/rejected, enum raft_proposal_outcome */
    int status;
    bool config; /* a membership change: the entry holds a configuration, not the cookie */
};

struct cl_read {
    uint64_t cookie;
    uint64_t min_index; /* max commit index anywhere when the read started */
    bool done;
};

struct cluster {
    struct cl_options o;
    uint64_t now;
    uint64_t rng;
    uint64_t seq;
    struct cl_node nodes[CL_MAX + 1];
    bool link[CL_MAX + 1][CL_MAX + 1]; /* link[a][b]: messages from a reach b */
    struct cl_ev *heap;
    size_t nheap, capheap;
    /* Global histories for the checks, indexed by log index. */
    struct cl_sm_item *applied; /* what any node applied at each index */
    uint64_t applied_n, applied_cap;
    uint64_t *committed_term;   /* term of the committed entry at each index (0 unknown) */
    uint64_t committed_cap;
    uint64_t commit_max;        /* highest commit index seen anywhere */
    uint64_t *leader_of_term;   /* who led each term */
    uint64_t lot_cap;
    struct cl_reg *reg;         /* (index, term) -> (prev term, hash) */
    size_t nreg, capreg;
    struct cl_proposal *props;
    size_t nprops, capprops;
    struct cl_read *reads;
    size_t nreads, capreads;
    uint64_t next_cookie;
    /* Fault hook: called when a leader's commit index first advances in its term; it may set
     * crash_after_step to crash that node once the current step is handled. */
    void (*on_first_commit)(struct cluster *c, uint64_t id);
    uint64_t crash_after_step;
    uint64_t first_commit_term[CL_MAX + 1];
    /* Counters. */
    uint64_t steps, checks, msgs, elections, snapshots, crashes;
    /* First violation (the run stops checking after one). */
    char failure[512];
    bool failed;
    FILE *trace;
};

/* Lifecycle. cl_init bootstraps nodes 1..o->voters as a cluster (all voters). */
int cl_init(struct cluster *c, const struct cl_options *o);
void cl_free(struct cluster *c);
void cl_options_default(struct cl_options *o, uint64_t seed);

/* Runs the simulation until `t` (absolute virtual ms). */
void cl_run_until(struct cluster *c, uint64_t t);
/* Runs until pred(c, arg) holds (checked every 10 ms) or `max_ms` pass; true if it held. */
bool cl_run_until_pred(struct cluster *c, bool (*pred)(struct cluster *, void *), void *arg,
                       uint64_t max_ms);

/* Nodes. */
int cl_start_new(struct cluster *c, uint64_t id); /* fresh empty node (to be added) */
void cl_crash(struct cluster *c, uint64_t id);
void cl_restart(struct cluster *c, uint64_t id);
/* Steps `to` with RAFT_EVENT_PEER_DOWN for `down` now (true or not). */
void cl_peer_down(struct cluster *c, uint64_t to, uint64_t down);
uint64_t cl_leader(struct cluster *c); /* the up leader of the highest term, 0 if none */
struct raft *cl_raft(struct cluster *c, uint64_t id);

/* Network. */
void cl_heal(struct cluster *c);
void cl_isolate(struct cluster *c, uint64_t id);                 /* both ways */
void cl_cut(struct cluster *c, uint64_t from, uint64_t to);      /* one way */
void cl_connect(struct cluster *c, uint64_t from, uint64_t to);

/* Clients. A proposal's payload is its cookie (8 bytes) padded to `size`. Returns the core's rc. */
int cl_propose(struct cluster *c, uint64_t id, size_t size, uint64_t *cookie /* OUT */);
int cl_read(struct cluster *c, uint64_t id, uint64_t *cookie /* OUT */);
int cl_lease_read(struct cluster *c, uint64_t id);
int cl_add(struct cluster *c, uint64_t leader, uint64_t id, uint8_t role);
int cl_remove(struct cluster *c, uint64_t leader, uint64_t id);
int cl_promote(struct cluster *c, uint64_t leader, uint64_t id);
int cl_demote(struct cluster *c, uint64_t leader, uint64_t id);
int cl_transfer(struct cluster *c, uint64_t leader, uint64_t target);
/* The APPLIED_FLOOR a node reports after a checkpoint of its state machine. */
void cl_checkpoint(struct cluster *c, uint64_t id);
struct cl_proposal *cl_proposal_get(struct cluster *c, uint64_t cookie);

/* Checks. cl_check_all is the thorough pairwise check; cl_check_final the end-of-run checks
 * (acknowledged proposals in the history, definite failures not in it). */
void cl_check_all(struct cluster *c);
void cl_check_final(struct cluster *c);
void cl_fail(struct cluster *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

uint64_t cl_rand(struct cluster *c);
/* Is `id` in the configuration of `of`, and with which role? -1 if absent. */
int cl_role_in(struct cluster *c, uint64_t of, uint64_t id);

#endif
