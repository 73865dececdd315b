/*
 * Helpers for scenario tests that drive one core by hand: build a node with a given log, feed it
 * messages and events, find messages in its update. The cluster (cluster.h) is for scenarios
 * with several cores; these are for exact message-by-message cases such as Figure 8.
 */
#ifndef WALRAFT_SIM_DRIVE_H
#define WALRAFT_SIM_DRIVE_H

#include "consensus/raft.h"

/* Node `id` of a cluster of voters 1..voters, at `term`, whose log is the bootstrap config
 * (index 1, term 1) followed by entries 2..n+1 with terms terms[0..n-1]; all durable, none known
 * committed. Election timeout 1000 ms, heartbeat 100 ms, pre-vote on. */
struct raft *drv_node(uint64_t id, unsigned voters, uint64_t term, const uint64_t *terms,
                      unsigned n);
void drv_options(struct raft_options *o, uint64_t id);
/* drv_node with options of the caller's (o->id is the node's id). */
struct raft *drv_node_with(const struct raft_options *o, unsigned voters, uint64_t term,
                           const uint64_t *terms, unsigned n);

int drv_recv(struct raft *r, uint64_t now, const struct raft_message *m, struct raft_update *u);
int drv_tick(struct raft *r, uint64_t now, struct raft_update *u);
int drv_persisted(struct raft *r, uint64_t now, uint64_t index, uint64_t term,
                  struct raft_update *u);

/* The first message of `type` to `to` (0: any) in `u`, or NULL. */
const struct raft_message *drv_find(const struct raft_update *u, uint8_t type, uint64_t to);

/* Makes `r` leader: ticks past the election timeout, grants the pre-vote and vote of voters
 * 2..`voters` (or up to a quorum). *now advances. Returns raft_state(r). */
uint8_t drv_elect(struct raft *r, unsigned voters, uint64_t *now);

/* A vote / append result from `from` to `to` at `term`. */
struct raft_message drv_vote_result(uint64_t from, uint64_t to, uint64_t term, bool pre,
                                    bool granted);
struct raft_message drv_append_ok(uint64_t from, uint64_t to, uint64_t term, uint64_t match);

#endif
