/*
 * Internal state of the Raft core, shared by its files (one per concern):
 *   log.c         the in-memory log and the configuration history;
 *   progress.c    the leader's view of each follower (probe / replicate / snapshot, in-flight);
 *   election.c    timers, pre-vote, votes, becoming leader or follower, TimeoutNow;
 *   replication.c AppendEntries and heartbeats both ways, commitment, snapshots, persistence;
 *   membership.c  configuration changes, automatic promotion, leader transfer, recovery;
 *   read.c        ReadIndex and lease reads;
 *   core.c        creation, the update bundle, dispatch of events, proposals, status.
 * Nothing here is visible to the caller; raft.h is the contract.
 */
#ifndef WALRAFT_CONSENSUS_INTERNAL_H
#define WALRAFT_CONSENSUS_INTERNAL_H

#include "consensus/raft.h"

#define INFLIGHT_CAP 64  /* hard cap on inflight_msgs_max */
#define HB_RING 64       /* heartbeat rounds whose send time is remembered (lease reads) */

/* The log: entries [snap_index+1, snap_index+n] in memory, each holding one buf reference. */
struct log {
    struct raft_entry *e;
    size_t n;
    size_t cap;
    uint64_t snap_index; /* last index covered by a snapshot / compaction (0: none) */
    uint64_t snap_term;
    uint64_t bytes;      /* payload bytes held */
};

/* One configuration and the index of the entry that carried it. item[0] is the configuration in
 * effect at snap_index; later items are config entries still in the log. */
struct cfg_item {
    uint64_t index;
    struct raft_config c;
};

struct cfg_history {
    struct cfg_item *items;
    size_t n;
    size_t cap;
};

struct inflight {
    uint64_t last;  /* last index the message carried */
    uint64_t bytes;
};

struct progress {
    uint64_t id;
    uint64_t match;
    uint64_t next;
    uint8_t state;
    bool probe_sent;          /* probe state: a message is out, wait for an answer */
    uint64_t probe_sent_ms;
    uint64_t probe_bytes;     /* the entry bytes it carried (retransmit_ms) */
    uint64_t last_contact_ms; /* last message received from the peer in this term */
    uint64_t last_progress_ms; /* last time match advanced (or replicate began) */
    uint64_t snapshot_index;   /* snapshot state: the snapshot being sent */
    uint64_t acked_ctx;        /* highest heartbeat round acknowledged */
    uint64_t commit_told;      /* highest commit index a message to the peer carried for it */
    struct inflight fl[INFLIGHT_CAP];
    uint32_t fl_head;
    uint32_t fl_n;
    uint64_t fl_bytes;
};

struct pending {
    uint64_t cookie;
    uint64_t index;
    uint64_t term;
    uint64_t deadline_ms; /* 0 while leader; once deposed: report RAFT_EUNKNOWN at this time */
    bool internal;        /* appended by the core itself (no-op, promotion): not reported */
};

struct read_req {
    uint64_t cookie; /* local requests */
    uint64_t from;   /* 0: local; else a follower that forwarded it */
    uint64_t ctx;    /* forwarded: the follower's id for it */
    uint64_t index;  /* read index, once assigned */
    uint64_t round;  /* heartbeat round that confirms it (0: not yet assigned) */
};

struct fwd_read {
    uint64_t cookie;
    uint64_t ctx;
    uint64_t deadline_ms;
};

/* The bundle under construction. Arrays grow; everything is released at the next call. */
struct out {
    struct raft_entry *entries;
    size_t n_entries, cap_entries;
    struct raft_message *msgs;
    size_t n_msgs, cap_msgs;
    struct raft_entry *committed;
    size_t n_committed, cap_committed;
    struct raft_snapshot_send *snaps;
    size_t n_snaps, cap_snaps;
    struct raft_proposal_result *props;
    size_t n_props, cap_props;
    struct raft_read *reads;
    size_t n_reads, cap_reads;
    struct raft_buf **refs; /* references held for the caller until the next call */
    size_t n_refs, cap_refs;
    void **allocs;          /* entry arrays of messages */
    size_t n_allocs, cap_allocs;
    uint64_t truncate_from;
    uint64_t snapshot_index, snapshot_term;
    uint64_t compact_to;
    bool config_changed;
    bool oom; /* an allocation failed while building: the call reports RAFT_ENOMEM */
};

struct raft {
    struct raft_options o;
    uint64_t id;
    uint64_t now;
    uint64_t rng;

    /* Persistent state. */
    uint64_t term;
    uint64_t vote;
    struct log log;
    struct cfg_history cfg;

    /* Volatile state. */
    uint8_t state;
    uint64_t leader;
    uint64_t commit;
    uint64_t persisted;      /* the caller reported entries durable up to here */
    uint64_t applied_out;    /* entries handed out in `committed` up to here */
    uint64_t floor;          /* applied floor reported by the caller */
    uint64_t verified;       /* follower: log matches the leader's up to here (this term) */
    bool ack_pending;        /* follower: an AppendEntries awaits persistence to be acked */

    /* Timers. */
    uint64_t election_start_ms; /* when the election timer was last reset */
    uint64_t election_rand_ms;  /* randomised timeout in [et, 2et) */
    uint64_t leader_contact_ms; /* follower: last message from the current leader */
    uint64_t heartbeat_due_ms;
    uint64_t quorum_check_ms;   /* leader: next check-quorum */

    /* Elections. */
    uint64_t granted[RAFT_SERVERS_MAX];
    size_t n_granted;

    /* Leader. */
    struct progress *prs;
    size_t n_prs;
    uint64_t pending_conf_index; /* the last config entry; a change waits until it commits */
    uint64_t transfer_target;
    uint64_t transfer_deadline_ms;
    uint64_t transfer_started_ms;
    bool timeout_now_sent;
    bool step_down_on_commit;    /* the leader removed or demoted itself */
    uint64_t step_down_index;

    /* Heartbeat rounds (read index, leases). */
    uint64_t hb_round;
    uint64_t hb_sent_ms[HB_RING];

    /* Clients. */
    struct pending *pend;
    size_t n_pend, cap_pend;
    struct read_req *reads;
    size_t n_reads, cap_reads;
    struct fwd_read *fwd;
    size_t n_fwd, cap_fwd;
    uint64_t fwd_ctx;

    struct out u;
};

/* log.c */
uint64_t log_last_index(const struct log *l);
uint64_t log_last_term(const struct log *l);
uint64_t log_term(const struct log *l, uint64_t index); /* 0 when unknown */
const struct raft_entry *log_get(const struct log *l, uint64_t index);
int log_append(struct log *l, const struct raft_entry *e); /* takes its own buf reference */
void log_truncate(struct log *l, uint64_t from);
void log_compact(struct log *l, uint64_t to);
void log_reset(struct log *l, uint64_t index, uint64_t term);
void log_free(struct log *l);
uint64_t log_bytes_between(const struct log *l, uint64_t lo, uint64_t hi); /* (lo, hi] */
int cfg_push(struct cfg_history *h, uint64_t index, const struct raft_config *c);
void cfg_truncate(struct cfg_history *h, uint64_t from);
void cfg_compact(struct cfg_history *h, uint64_t to);
const struct raft_config *cfg_current(const struct cfg_history *h);
const struct cfg_item *cfg_at(const struct cfg_history *h, uint64_t index);
uint64_t cfg_current_index(const struct cfg_history *h);

/* progress.c */
struct progress *progress_get(struct raft *r, uint64_t id);
int progress_rebuild(struct raft *r);
void progress_reset_all(struct raft *r);
void progress_become_probe(struct progress *p, uint64_t now);
void progress_become_replicate(struct progress *p, uint64_t now);
bool progress_inflight_full(const struct raft *r, const struct progress *p);
void progress_inflight_add(struct progress *p, uint64_t last, uint64_t bytes);
void progress_inflight_free_to(struct progress *p, uint64_t index);
bool progress_maybe_update(struct progress *p, uint64_t match, uint64_t now);

/* election.c */
uint64_t rng_next(struct raft *r);
void election_reset_timer(struct raft *r);
void become_follower(struct raft *r, uint64_t term, uint64_t leader);
void become_leader(struct raft *r);
void election_start(struct raft *r, bool pre_vote, bool transfer);
void election_tick(struct raft *r);
void election_peer_down(struct raft *r, uint64_t id);
void recv_request_vote(struct raft *r, const struct raft_message *m);
void recv_request_vote_result(struct raft *r, const struct raft_message *m);
void recv_timeout_now(struct raft *r, const struct raft_message *m);
bool is_voter(const struct raft *r, uint64_t id);
unsigned quorum_size(const struct raft *r);

/* replication.c */
void send_append(struct raft *r, struct progress *p, bool force);
void broadcast_append(struct raft *r);
void broadcast_heartbeat(struct raft *r);
void tell_commit(struct raft *r);
bool commit_untold(const struct raft *r);
void recv_append(struct raft *r, const struct raft_message *m);
void recv_append_result(struct raft *r, const struct raft_message *m);
void recv_heartbeat(struct raft *r, const struct raft_message *m);
void recv_heartbeat_result(struct raft *r, const struct raft_message *m);
void maybe_commit(struct raft *r);
void commit_advanced(struct raft *r);
void on_persisted(struct raft *r, uint64_t index, uint64_t term);
void on_snapshot_sent(struct raft *r, uint64_t to, uint64_t index, bool ok);
void on_snapshot_installed(struct raft *r, const struct raft_event *ev);
void on_applied_floor(struct raft *r, uint64_t index);
void replication_tick(struct raft *r);
int append_local(struct raft *r, uint8_t type, struct raft_buf *buf); /* leader / recover */
void apply_config_entry(struct raft *r, const struct raft_entry *e);
void truncate_log(struct raft *r, uint64_t from);

/* membership.c */
int change_config(struct raft *r, const struct raft_config *c, uint64_t cookie, bool internal);
void maybe_promote(struct raft *r, struct progress *p);
void transfer_maybe_send(struct raft *r, struct progress *p);
void transfer_abort(struct raft *r);
void membership_tick(struct raft *r);
void config_took_effect(struct raft *r);
int change_add(struct raft *r, const struct raft_server *s, uint64_t cookie);
int change_remove(struct raft *r, uint64_t id, uint64_t cookie);
int change_role(struct raft *r, uint64_t id, bool promote, uint64_t cookie);
int transfer_start(struct raft *r, uint64_t target);
int recover_config(struct raft *r, const struct raft_config *c);

/* read.c */
void read_on_round_acked(struct raft *r);
void read_on_commit_in_term(struct raft *r);
void read_fail_all(struct raft *r, int status);
void recv_read_index(struct raft *r, const struct raft_message *m);
void recv_read_index_result(struct raft *r, const struct raft_message *m);
void read_tick(struct raft *r);
uint64_t read_quorum_round(struct raft *r);
int read_start(struct raft *r, uint64_t cookie);
int read_lease(struct raft *r, uint64_t *index);

/* core.c: the bundle */
struct raft_message *out_msg(struct raft *r, uint8_t type, uint64_t to);
void out_entry(struct raft *r, const struct raft_entry *e);
void out_committed(struct raft *r, const struct raft_entry *e);
void out_snapshot(struct raft *r, const struct raft_snapshot_send *s);
void out_proposal(struct raft *r, uint64_t cookie, uint64_t index, uint64_t term, uint8_t outcome,
                  int status);
void out_read(struct raft *r, uint64_t cookie, uint64_t index, int status);
struct raft_buf *out_keep(struct raft *r, struct raft_buf *b);
void *out_alloc(struct raft *r, size_t size);
int pending_add(struct raft *r, uint64_t cookie, uint64_t index, uint64_t term, bool internal);
void pending_on_commit(struct raft *r);
void pending_on_depose(struct raft *r);
bool committed_in_term(const struct raft *r);

/* Grows *arr (of *cap elements of `size` bytes) to hold at least `need`; 0 or RAFT_ENOMEM. */
int grow(void **arr, size_t *cap, size_t need, size_t size);

#endif
