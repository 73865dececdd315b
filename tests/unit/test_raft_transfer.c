/* Leadership transfer (thesis §3.10): proposals stop, the target is caught up, TimeoutNow, and
 * the transfer is abandoned after an election timeout. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "consensus/raft.h"
#include "tests/sim/cluster.h"

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

static bool leader_is(struct cluster *c, void *arg)
{
    return cl_leader(c) == *(uint64_t *)arg;
}

static void start(struct cluster *c, uint64_t seed)
{
    struct cl_options o;
    cl_options_default(&o, seed);
    o.voters = 3;
    assert_int_equal(cl_init(c, &o), 0);
    assert_true(cl_run_until_pred(c, leader_ready, NULL, 5000));
}

/* The target lags far behind (it was partitioned); the leader brings it up to date first. */
static void test_raft_transfer_to_lagging_node(void **state)
{
    (void)state;
    struct cluster c;
    start(&c, 31);
    uint64_t l = cl_leader(&c);
    uint64_t t = l == 1 ? 2 : 1;
    cl_isolate(&c, t);
    for (int i = 0; i < 100; i++) {
        cl_propose(&c, l, 64, NULL);
        cl_run_until(&c, c.now + 10);
    }
    cl_heal(&c);
    assert_int_equal(cl_transfer(&c, l, t), 0);
    assert_int_equal(raft_transfer_target(cl_raft(&c, l)), t);
    uint64_t ck = 0;
    assert_int_equal(cl_propose(&c, l, 8, &ck), RAFT_ETRANSFER);
    assert_true(cl_run_until_pred(&c, leader_is, &t, 3000));
    struct raft *nr = cl_raft(&c, t);
    assert_true(raft_commit_index(nr) >= 100);
    cl_run_until(&c, c.now + 500);
    cl_check_final(&c);
    assert_false(c.failed);
    cl_free(&c);
}

/* Transfer to the best voter (0), then errors. */
static void test_raft_transfer_to_best_and_errors(void **state)
{
    (void)state;
    struct cluster c;
    start(&c, 32);
    uint64_t l = cl_leader(&c);
    uint64_t f = l == 1 ? 2 : 1;
    assert_int_equal(cl_transfer(&c, f, 0), RAFT_ENOTLEADER);
    assert_int_equal(cl_transfer(&c, l, l), RAFT_EBADARG);
    assert_int_equal(cl_transfer(&c, l, 9), RAFT_EUNKNOWNNODE);
    assert_int_equal(cl_transfer(&c, l, 0), 0);
    assert_int_equal(cl_transfer(&c, l, 0), RAFT_ETRANSFER);
    cl_run_until(&c, c.now + 2000);
    uint64_t nl = cl_leader(&c);
    assert_int_not_equal(nl, 0);
    assert_int_not_equal(nl, l);
    assert_false(c.failed);
    cl_free(&c);
}

/* A target that cannot be reached: the transfer is abandoned after an election timeout and the
 * leader accepts proposals again. */
static void test_raft_transfer_aborts_after_election_timeout(void **state)
{
    (void)state;
    struct cluster c;
    start(&c, 33);
    uint64_t l = cl_leader(&c);
    uint64_t t = l == 1 ? 2 : 1;
    cl_crash(&c, t);
    assert_int_equal(cl_transfer(&c, l, t), 0);
    cl_run_until(&c, c.now + c.o.election_timeout_ms + 50);
    assert_int_equal(cl_leader(&c), l);
    assert_int_equal(raft_transfer_target(cl_raft(&c, l)), 0);
    assert_int_equal(cl_propose(&c, l, 8, NULL), 0);
    assert_false(c.failed);
    cl_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_raft_transfer_to_lagging_node),
        cmocka_unit_test(test_raft_transfer_to_best_and_errors),
        cmocka_unit_test(test_raft_transfer_aborts_after_election_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
