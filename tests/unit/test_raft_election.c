/* Leader election (thesis §3.4, §3.6.1) with pre-vote (§9.6), check-quorum (§6.2) and leader
 * stickiness (§4.2.3). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "consensus/raft.h"
#include "tests/sim/cluster.h"
#include "tests/sim/drive.h"

static bool has_leader(struct cluster *c, void *arg)
{
    (void)arg;
    return cl_leader(c) != 0;
}

static void start(struct cluster *c, unsigned voters, uint64_t seed)
{
    struct cl_options o;
    cl_options_default(&o, seed);
    o.voters = voters;
    assert_int_equal(cl_init(c, &o), 0);
    assert_true(cl_run_until_pred(c, has_leader, NULL, 5000));
}

static void test_raft_election_one_leader_emerges(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 10; seed++) {
        struct cluster c;
        start(&c, 5, seed);
        cl_run_until(&c, c.now + 3000);
        assert_false(c.failed);
        unsigned leaders = 0;
        for (uint64_t id = 1; id <= 5; id++) {
            leaders += raft_state(cl_raft(&c, id)) == RAFT_LEADER;
        }
        assert_int_equal(leaders, 1);
        cl_free(&c);
    }
}

/* §9.6: a server partitioned away keeps timing out, but pre-vote stops it from raising its term,
 * so when it returns the leader is undisturbed. */
static void test_raft_prevote_rejoining_node_keeps_leader(void **state)
{
    (void)state;
    struct cluster c;
    start(&c, 3, 3);
    uint64_t leader = cl_leader(&c);
    uint64_t term = raft_term(cl_raft(&c, leader));
    uint64_t f = leader == 1 ? 2 : 1;
    cl_isolate(&c, f);
    cl_run_until(&c, c.now + 5000);
    assert_int_equal(raft_term(cl_raft(&c, f)), term);
    assert_int_not_equal(raft_state(cl_raft(&c, f)), RAFT_LEADER);
    cl_heal(&c);
    cl_run_until(&c, c.now + 3000);
    assert_int_equal(cl_leader(&c), leader);
    assert_int_equal(raft_term(cl_raft(&c, leader)), term);
    assert_false(c.failed);
    cl_free(&c);
}

/* §6.2: a leader cut off from the majority steps down within about an election timeout; the
 * majority elects a new leader; on healing the old one follows it. */
static void test_raft_check_quorum_isolated_leader_steps_down(void **state)
{
    (void)state;
    struct cluster c;
    start(&c, 3, 5);
    uint64_t old = cl_leader(&c);
    cl_isolate(&c, old);
    cl_run_until(&c, c.now + 2 * c.o.election_timeout_ms + 100);
    assert_int_not_equal(raft_state(cl_raft(&c, old)), RAFT_LEADER);
    uint64_t now_leader = cl_leader(&c);
    assert_int_not_equal(now_leader, 0);
    assert_int_not_equal(now_leader, old);
    cl_heal(&c);
    cl_run_until(&c, c.now + 1000);
    assert_int_equal(raft_leader(cl_raft(&c, old)), now_leader);
    assert_false(c.failed);
    cl_free(&c);
}

/* Delivers a heartbeat of `term` from `from` to node 2. */
static void heartbeat_to_2(struct raft *r, uint64_t now, uint64_t from, uint64_t term,
                           struct raft_update *u)
{
    struct raft_message hb;
    memset(&hb, 0, sizeof hb);
    hb.type = RAFT_MSG_HEARTBEAT;
    hb.from = from;
    hb.to = 2;
    hb.term = term;
    drv_recv(r, now, &hb, u);
}

/* A RequestVote from 3 to 2. */
static struct raft_message vote_request_3_to_2(uint64_t term, bool pre_vote, uint64_t last_index,
                                               uint64_t last_term)
{
    struct raft_message rv;
    memset(&rv, 0, sizeof rv);
    rv.type = RAFT_MSG_REQUEST_VOTE;
    rv.from = 3;
    rv.to = 2;
    rv.term = term;
    rv.request_vote.pre_vote = pre_vote;
    rv.request_vote.last_log_index = last_index;
    rv.request_vote.last_log_term = last_term;
    return rv;
}

/* §4.2.3: a follower that heard from its leader within the election timeout ignores a
 * RequestVote of a higher term: no reply, no term change. TimeoutNow's votes are exempt. */
static void test_raft_sticky_follower_ignores_vote_request(void **state)
{
    (void)state;
    struct raft *r = drv_node(2, 3, 1, NULL, 0);
    struct raft_update u;
    heartbeat_to_2(r, 100, 1, 2, &u);
    assert_int_equal(raft_leader(r), 1);
    struct raft_message rv = vote_request_3_to_2(3, false, 5, 2);
    drv_recv(r, 200, &rv, &u);
    assert_int_equal(u.n_messages, 0);
    assert_int_equal(raft_term(r), 2);
    rv.request_vote.transfer = true;
    drv_recv(r, 300, &rv, &u);
    const struct raft_message *res = drv_find(&u, RAFT_MSG_REQUEST_VOTE_RESULT, 3);
    assert_non_null(res);
    assert_true(res->request_vote_result.granted);
    assert_true(u.hard_state_changed);
    assert_int_equal(u.vote, 3);
    raft_destroy(r);
}

/* §3.6.1: a vote is denied to a candidate whose log is less up-to-date. */
static void test_raft_vote_denied_to_less_up_to_date_log(void **state)
{
    (void)state;
    uint64_t terms[] = {3};
    struct raft *r = drv_node(2, 3, 3, terms, 1);
    struct raft_update u;
    /* Longer, but of an older term. */
    struct raft_message rv = vote_request_3_to_2(4, false, 9, 2);
    drv_recv(r, 5000, &rv, &u);
    const struct raft_message *res = drv_find(&u, RAFT_MSG_REQUEST_VOTE_RESULT, 3);
    assert_non_null(res);
    assert_false(res->request_vote_result.granted);
    assert_int_equal(raft_term(r), 4);
    assert_int_equal(raft_vote(r), 0);
    raft_destroy(r);
}

/* A pre-vote changes nothing on the voter, granted or not. */
static void test_raft_prevote_changes_no_state(void **state)
{
    (void)state;
    struct raft *r = drv_node(2, 3, 1, NULL, 0);
    struct raft_update u;
    struct raft_message rv = vote_request_3_to_2(2, true, 1, 1);
    drv_recv(r, 5000, &rv, &u);
    const struct raft_message *res = drv_find(&u, RAFT_MSG_REQUEST_VOTE_RESULT, 3);
    assert_non_null(res);
    assert_true(res->request_vote_result.granted);
    assert_int_equal(res->term, 2);
    assert_false(u.hard_state_changed);
    assert_int_equal(raft_term(r), 1);
    raft_destroy(r);
}

/* PEER_DOWN for the leader ends its lease on this follower at once (a vote request is answered
 * again) and brings the campaign forward to (1 + rank) heartbeats; for another server it changes
 * nothing. */
static void test_raft_peer_down_hint_ends_the_leaders_lease(void **state)
{
    (void)state;
    struct raft *r = drv_node(2, 3, 1, NULL, 0);
    struct raft_update u;
    heartbeat_to_2(r, 100, 1, 2, &u);
    struct raft_message rv = vote_request_3_to_2(3, true, 1, 1);
    drv_recv(r, 150, &rv, &u);
    assert_int_equal(u.n_messages, 0); /* in the leader's lease: ignored */

    struct raft_event ev = {.type = RAFT_EVENT_PEER_DOWN, .now_ms = 160};
    ev.peer_down.id = 3; /* not the leader */
    assert_int_equal(raft_step(r, &ev, &u), 0);
    assert_int_equal(raft_leader(r), 1);
    ev.peer_down.id = 1;
    ev.now_ms = 170;
    assert_int_equal(raft_step(r, &ev, &u), 0);
    assert_int_equal(raft_leader(r), 0);
    assert_int_equal(raft_state(r), RAFT_FOLLOWER);
    assert_int_equal(raft_term(r), 2);

    drv_recv(r, 180, &rv, &u);
    const struct raft_message *res = drv_find(&u, RAFT_MSG_REQUEST_VOTE_RESULT, 3);
    assert_non_null(res);
    assert_true(res->request_vote_result.granted);

    /* The default heartbeat is 100 ms and node 2 comes first among the voters left (3): it
     * campaigns 100-150 ms after the hint (ticks every 10 ms here), long before the election
     * timeout (at least 1000 ms after the heartbeat). */
    uint64_t now = 170;
    while (raft_state(r) == RAFT_FOLLOWER && now < 1100) {
        now += 10;
        drv_tick(r, now, &u);
    }
    assert_int_equal(raft_state(r), RAFT_PRECANDIDATE);
    assert_true(now >= 170 + 100 && now <= 170 + 150 + 10);
    raft_destroy(r);
}

static bool leader_other_than(struct cluster *c, void *arg)
{
    uint64_t l = cl_leader(c);
    return l != 0 && l != *(uint64_t *)arg;
}

/* With the hints a crash sends, the survivors elect a leader within a few heartbeats instead
 * of an election timeout (300 ms, random up to 600 ms, in the simulator), in 3- and 5-voter
 * clusters. Their delays are a heartbeat apart in id order: with random delays alone (100-300 %
 * of a heartbeat) seed 19 of the 3-voter runs split the vote and waited 530 ms. */
static void test_raft_peer_down_hints_elect_a_leader_fast(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 40; seed++) {
        struct cl_options o;
        cl_options_default(&o, seed);
        o.voters = seed <= 20 ? 3 : 5;
        o.peer_down_pct = 100;
        struct cluster c;
        assert_int_equal(cl_init(&c, &o), 0);
        assert_true(cl_run_until_pred(&c, has_leader, NULL, 5000));
        cl_run_until(&c, c.now + 500);
        uint64_t old = cl_leader(&c);
        uint64_t t0 = c.now;
        cl_crash(&c, old);
        assert_true(cl_run_until_pred(&c, leader_other_than, &old, 5000));
        /* Hint after <= 30 ms; the first in line campaigns 50-75 ms later, or if its log is
         * behind the next one 50 ms after; two round trips of <= 20 ms each. */
        assert_true(c.now - t0 < (o.voters == 3 ? 220 : 320));
        assert_false(c.failed);
        cl_free(&c);
    }
}

/* A wrong hint (the leader is alive) disturbs nothing: the other voters still hear from the
 * leader and refuse the pre-vote, so no term changes. */
static void test_raft_wrong_peer_down_hint_keeps_the_leader(void **state)
{
    (void)state;
    struct cluster c;
    start(&c, 3, 7);
    cl_run_until(&c, c.now + 500);
    uint64_t leader = cl_leader(&c);
    uint64_t term = raft_term(cl_raft(&c, leader));
    uint64_t f = leader == 1 ? 2 : 1;
    for (int i = 0; i < 10; i++) {
        cl_peer_down(&c, f, leader);
        cl_run_until(&c, c.now + 300);
    }
    assert_int_equal(cl_leader(&c), leader);
    assert_int_equal(raft_term(cl_raft(&c, leader)), term);
    assert_int_equal(raft_term(cl_raft(&c, f)), term);
    assert_false(c.failed);
    cl_free(&c);
}

/* With lease reads on, a follower keeps the leader's lease whatever it is told: the hint is
 * ignored, so a wrong one can never let a second leader be elected while the first still serves
 * reads from its lease. */
static void test_raft_peer_down_hint_ignored_with_lease_reads(void **state)
{
    (void)state;
    struct cl_options o;
    cl_options_default(&o, 11);
    o.lease_reads = true;
    struct cluster c;
    assert_int_equal(cl_init(&c, &o), 0);
    assert_true(cl_run_until_pred(&c, has_leader, NULL, 5000));
    cl_run_until(&c, c.now + 500);
    uint64_t leader = cl_leader(&c);
    uint64_t f = leader == 1 ? 2 : 1;
    cl_peer_down(&c, f, leader);
    assert_int_equal(raft_leader(cl_raft(&c, f)), leader);
    assert_false(c.failed);
    cl_free(&c);
}

/* A single voter elects itself and commits its no-op once durable. */
static void test_raft_single_voter_leads_alone(void **state)
{
    (void)state;
    struct raft *r = drv_node(1, 1, 1, NULL, 0);
    struct raft_update u;
    uint64_t now = 0;
    for (int i = 0; i < 30 && raft_state(r) != RAFT_LEADER; i++) {
        now += 100;
        drv_tick(r, now, &u);
    }
    assert_int_equal(raft_state(r), RAFT_LEADER);
    assert_int_equal(u.n_messages, 0);
    drv_persisted(r, now, 2, raft_term(r), &u);
    assert_int_equal(raft_commit_index(r), 2);
    raft_destroy(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_raft_election_one_leader_emerges),
        cmocka_unit_test(test_raft_prevote_rejoining_node_keeps_leader),
        cmocka_unit_test(test_raft_check_quorum_isolated_leader_steps_down),
        cmocka_unit_test(test_raft_sticky_follower_ignores_vote_request),
        cmocka_unit_test(test_raft_vote_denied_to_less_up_to_date_log),
        cmocka_unit_test(test_raft_prevote_changes_no_state),
        cmocka_unit_test(test_raft_single_voter_leads_alone),
        cmocka_unit_test(test_raft_peer_down_hint_ends_the_leaders_lease),
        cmocka_unit_test(test_raft_peer_down_hints_elect_a_leader_fast),
        cmocka_unit_test(test_raft_wrong_peer_down_hint_keeps_the_leader),
        cmocka_unit_test(test_raft_peer_down_hint_ignored_with_lease_reads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
