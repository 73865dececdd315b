/* Membership changes (thesis §4): one server at a time, non-voting catch-up and automatic
 * promotion, read replicas, removal of the leader, disruptive removed servers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "consensus/raft.h"
#include "tests/sim/cluster.h"

static bool has_leader(struct cluster *c, void *arg)
{
    (void)arg;
    return cl_leader(c) != 0;
}

/* The leader has committed an entry of its term, so it accepts changes. */
static bool leader_ready(struct cluster *c, void *arg)
{
    (void)arg;
    uint64_t l = cl_leader(c);
    if (l == 0) {
        return false;
    }
    struct raft *r = cl_raft(c, l);
    return raft_term_at(r, raft_commit_index(r)) == raft_term(r);
}

static void start(struct cluster *c, unsigned voters, uint64_t seed)
{
    struct cl_options o;
    cl_options_default(&o, seed);
    o.voters = voters;
    assert_int_equal(cl_init(c, &o), 0);
    assert_true(cl_run_until_pred(c, leader_ready, NULL, 5000));
}

struct role_want {
    uint64_t id;
    int role;
};

static bool role_is(struct cluster *c, void *arg)
{
    struct role_want *w = arg;
    uint64_t l = cl_leader(c);
    if (l == 0) {
        return false;
    }
    struct raft *r = cl_raft(c, l);
    return cl_role_in(c, l, w->id) == w->role &&
           raft_commit_index(r) >= raft_last_index(r);
}

static void load(struct cluster *c, int n)
{
    for (int i = 0; i < n; i++) {
        uint64_t l = cl_leader(c);
        if (l != 0) {
            cl_propose(c, l, 64, NULL);
        }
        cl_run_until(c, c->now + 10);
    }
}

/* §4.2.1: a new voter joins as a non-voter and is promoted once caught up. */
static void test_raft_add_voter_joins_as_learner_then_promoted(void **state)
{
    (void)state;
    struct cluster c;
    start(&c, 3, 11);
    load(&c, 50);
    assert_int_equal(cl_start_new(&c, 4), 0);
    assert_int_equal(cl_add(&c, cl_leader(&c), 4, RAFT_VOTER), 0);
    assert_int_equal(cl_role_in(&c, cl_leader(&c), 4), RAFT_LEARNER);
    struct role_want w = {4, RAFT_VOTER};
    assert_true(cl_run_until_pred(&c, role_is, &w, 5000));
    assert_true(c.nodes[4].sm_n > 40);
    assert_false(c.failed);
    cl_free(&c);
}

/* A replica catches up and applies, but is never promoted and never votes. */
static void test_raft_replica_stays_non_voter(void **state)
{
    (void)state;
    struct cluster c;
    start(&c, 3, 12);
    assert_int_equal(cl_start_new(&c, 4), 0);
    assert_int_equal(cl_add(&c, cl_leader(&c), 4, RAFT_REPLICA), 0);
    load(&c, 50);
    cl_run_until(&c, c.now + 2000);
    assert_int_equal(cl_role_in(&c, cl_leader(&c), 4), RAFT_REPLICA);
    assert_true(c.nodes[4].sm_n >= raft_commit_index(cl_raft(&c, cl_leader(&c))) - 2);
    assert_int_not_equal(raft_state(cl_raft(&c, 4)), RAFT_LEADER);
    assert_false(c.failed);
    cl_free(&c);
}

/* §4.2.2: a leader that removes itself steps down once the removal commits. */
static void test_raft_removed_leader_steps_down(void **state)
{
    (void)state;
    struct cluster c;
    start(&c, 3, 13);
    uint64_t old = cl_leader(&c);
    assert_int_equal(cl_remove(&c, old, old), 0);
    cl_run_until(&c, c.now + 3000);
    assert_int_not_equal(raft_state(cl_raft(&c, old)), RAFT_LEADER);
    uint64_t l = cl_leader(&c);
    assert_int_not_equal(l, 0);
    assert_int_not_equal(l, old);
    assert_int_equal(cl_role_in(&c, l, old), -1);
    assert_false(c.failed);
    cl_free(&c);
}

/* §4.2.3: a server removed while cut off never learns it; its elections must not disturb the
 * cluster when it comes back (pre-vote and stickiness). */
static void test_raft_disruptive_removed_server_is_ignored(void **state)
{
    (void)state;
    struct cluster c;
    start(&c, 3, 14);
    uint64_t l = cl_leader(&c);
    uint64_t gone = l == 3 ? 2 : 3;
    cl_isolate(&c, gone);
    assert_int_equal(cl_remove(&c, l, gone), 0);
    cl_run_until(&c, c.now + 1000);
    assert_int_equal(cl_role_in(&c, l, gone), -1);
    uint64_t term = raft_term(cl_raft(&c, l));
    cl_heal(&c);
    load(&c, 300); /* 3 s of traffic while the removed server times out repeatedly */
    assert_int_equal(cl_leader(&c), l);
    assert_int_equal(raft_term(cl_raft(&c, l)), term);
    assert_false(c.failed);
    cl_free(&c);
}

/* §4.1: one change at a time; every rejection says why. */
static void test_raft_change_errors(void **state)
{
    (void)state;
    struct cluster c;
    start(&c, 3, 15);
    uint64_t l = cl_leader(&c);
    uint64_t f = l == 1 ? 2 : 1;
    assert_int_equal(cl_start_new(&c, 4), 0);
    assert_int_equal(cl_add(&c, f, 4, RAFT_VOTER), RAFT_ENOTLEADER);
    assert_int_equal(cl_add(&c, l, 4, RAFT_VOTER), 0);
    assert_int_equal(cl_add(&c, l, 5, RAFT_VOTER), RAFT_ECHANGE);
    assert_int_equal(cl_remove(&c, l, 4), RAFT_ECHANGE);
    cl_run_until(&c, c.now + 1000);
    assert_int_equal(cl_add(&c, l, 4, RAFT_VOTER), RAFT_EDUPLICATE);
    assert_int_equal(cl_remove(&c, l, 9), RAFT_EUNKNOWNNODE);
    assert_int_equal(cl_promote(&c, l, f), RAFT_EBADARG); /* already a voter */
    assert_int_equal(cl_demote(&c, l, 8), RAFT_EUNKNOWNNODE);
    assert_false(c.failed);
    cl_free(&c);
}

/* Demote a voter to a replica, then promote it back. */
static void test_raft_demote_then_promote(void **state)
{
    (void)state;
    struct cluster c;
    start(&c, 3, 16);
    uint64_t l = cl_leader(&c);
    uint64_t f = l == 1 ? 2 : 1;
    assert_int_equal(cl_demote(&c, l, f), 0);
    struct role_want w = {f, RAFT_REPLICA};
    assert_true(cl_run_until_pred(&c, role_is, &w, 3000));
    assert_int_equal(cl_promote(&c, cl_leader(&c), f), 0);
    w.role = RAFT_VOTER;
    assert_true(cl_run_until_pred(&c, role_is, &w, 3000));
    assert_false(c.failed);
    cl_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_raft_add_voter_joins_as_learner_then_promoted),
        cmocka_unit_test(test_raft_replica_stays_non_voter),
        cmocka_unit_test(test_raft_removed_leader_steps_down),
        cmocka_unit_test(test_raft_disruptive_removed_server_is_ignored),
        cmocka_unit_test(test_raft_change_errors),
        cmocka_unit_test(test_raft_demote_then_promote),
    };
    (void)has_leader;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
