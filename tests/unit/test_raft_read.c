/* Linearizable reads (thesis §6.4): ReadIndex on the leader, forwarded from followers, across a
 * leader change; lease reads (§6.4.1) only when enabled. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "consensus/raft.h"
#include "tests/sim/cluster.h"
#include "tests/sim/drive.h"

/* A leader of 3 that has committed its no-op (index 2). */
static struct raft *ready_leader(uint64_t *now)
{
    struct raft *r = drv_node(1, 3, 1, NULL, 0);
    struct raft_update u;
    assert_int_equal(drv_elect(r, 3, now), RAFT_LEADER);
    drv_persisted(r, *now, 2, raft_term(r), &u);
    struct raft_message m = drv_append_ok(2, 1, raft_term(r), 2);
    drv_recv(r, *now, &m, &u);
    assert_int_equal(raft_commit_index(r), 2);
    return r;
}

static struct raft_message hb_result(uint64_t from, uint64_t term, uint64_t ctx)
{
    struct raft_message m;
    memset(&m, 0, sizeof m);
    m.type = RAFT_MSG_HEARTBEAT_RESULT;
    m.from = from;
    m.to = 1;
    m.term = term;
    m.heartbeat_result.ctx = ctx;
    return m;
}

/* The read is released only after a majority acknowledged a heartbeat sent after it. */
static void test_raft_read_index_confirms_leadership(void **state)
{
    (void)state;
    uint64_t now = 0;
    struct raft *r = ready_leader(&now);
    struct raft_update u;
    assert_int_equal(raft_read_index(r, now, 77, &u), 0);
    assert_int_equal(u.n_reads, 0);
    const struct raft_message *hb = drv_find(&u, RAFT_MSG_HEARTBEAT, 2);
    assert_non_null(hb);
    uint64_t ctx = hb->heartbeat.ctx;
    struct raft_message old = hb_result(2, raft_term(r), ctx - 1); /* an earlier round */
    drv_recv(r, now, &old, &u);
    assert_int_equal(u.n_reads, 0);
    struct raft_message m = hb_result(3, raft_term(r), ctx);
    drv_recv(r, now, &m, &u);
    assert_int_equal(u.n_reads, 1);
    assert_int_equal(u.reads[0].cookie, 77);
    assert_int_equal(u.reads[0].status, 0);
    assert_int_equal(u.reads[0].index, 2);
    raft_destroy(r);
}

/* §6.4: before its first commit of the term a new leader does not know the commit index: the
 * read waits for the no-op. */
static void test_raft_read_index_waits_for_commit_in_term(void **state)
{
    (void)state;
    struct raft *r = drv_node(1, 3, 1, NULL, 0);
    uint64_t now = 0;
    struct raft_update u;
    assert_int_equal(drv_elect(r, 3, &now), RAFT_LEADER);
    assert_int_equal(raft_read_index(r, now, 5, &u), 0);
    assert_null(drv_find(&u, RAFT_MSG_HEARTBEAT, 0));
    drv_persisted(r, now, 2, raft_term(r), &u);
    struct raft_message m = drv_append_ok(2, 1, raft_term(r), 2);
    drv_recv(r, now, &m, &u);
    const struct raft_message *hb = drv_find(&u, RAFT_MSG_HEARTBEAT, 2);
    assert_non_null(hb);
    struct raft_message ack = hb_result(2, raft_term(r), hb->heartbeat.ctx);
    drv_recv(r, now, &ack, &u);
    assert_int_equal(u.n_reads, 1);
    assert_int_equal(u.reads[0].index, 2);
    raft_destroy(r);
}

/* Across a leader change: a pending read on a deposed leader fails, never released stale. */
static void test_raft_read_index_fails_across_leader_change(void **state)
{
    (void)state;
    uint64_t now = 0;
    struct raft *r = ready_leader(&now);
    struct raft_update u;
    assert_int_equal(raft_read_index(r, now, 9, &u), 0);
    struct raft_message ae;
    memset(&ae, 0, sizeof ae);
    ae.type = RAFT_MSG_HEARTBEAT;
    ae.from = 2;
    ae.to = 1;
    ae.term = raft_term(r) + 1;
    drv_recv(r, now + 10, &ae, &u);
    assert_int_equal(raft_state(r), RAFT_FOLLOWER);
    assert_int_equal(u.n_reads, 1);
    assert_int_equal(u.reads[0].cookie, 9);
    assert_int_equal(u.reads[0].status, RAFT_ELEADERSHIPLOST);
    raft_destroy(r);
}

/* A follower forwards to its leader and releases with the leader's index; no leader: error. */
static void test_raft_read_index_forwarded_by_follower(void **state)
{
    (void)state;
    struct raft *f = drv_node(2, 3, 1, NULL, 0);
    struct raft_update u;
    assert_int_equal(raft_read_index(f, 10, 1, &u), RAFT_ENOTLEADER);
    struct raft_message hb;
    memset(&hb, 0, sizeof hb);
    hb.type = RAFT_MSG_HEARTBEAT;
    hb.from = 1;
    hb.to = 2;
    hb.term = 2;
    drv_recv(f, 20, &hb, &u);
    assert_int_equal(raft_read_index(f, 30, 4, &u), 0);
    const struct raft_message *fw = drv_find(&u, RAFT_MSG_READ_INDEX, 1);
    assert_non_null(fw);
    struct raft_message res;
    memset(&res, 0, sizeof res);
    res.type = RAFT_MSG_READ_INDEX_RESULT;
    res.from = 1;
    res.to = 2;
    res.term = 2;
    res.read_index_result.ctx = fw->read_index.ctx;
    res.read_index_result.index = 17;
    drv_recv(f, 40, &res, &u);
    assert_int_equal(u.n_reads, 1);
    assert_int_equal(u.reads[0].cookie, 4);
    assert_int_equal(u.reads[0].index, 17);
    /* A forwarded read that gets no answer times out. */
    assert_int_equal(raft_read_index(f, 50, 5, &u), 0);
    drv_tick(f, 50 + 1000, &u);
    assert_int_equal(u.n_reads, 1);
    assert_int_equal(u.reads[0].status, RAFT_ETIMEOUT);
    raft_destroy(f);
}

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

/* In a cluster, reads on every node during traffic and a leader change stay linearizable (the
 * harness checks each released index against the commits that preceded the read). */
static void test_raft_reads_linearizable_in_cluster(void **state)
{
    (void)state;
    struct cluster c;
    struct cl_options o;
    cl_options_default(&o, 41);
    o.lease_reads = true;
    assert_int_equal(cl_init(&c, &o), 0);
    assert_true(cl_run_until_pred(&c, leader_ready, NULL, 5000));
    for (int i = 0; i < 400; i++) {
        uint64_t l = cl_leader(&c);
        if (l != 0) {
            cl_propose(&c, l, 16, NULL);
            cl_lease_read(&c, l);
        }
        cl_read(&c, 1 + (uint64_t)i % 3, NULL);
        if (i == 150 && l != 0) {
            cl_isolate(&c, l); /* force a leader change mid-way */
        }
        if (i == 300) {
            cl_heal(&c);
        }
        cl_run_until(&c, c.now + 10);
    }
    cl_run_until(&c, c.now + 2000);
    size_t done = 0;
    for (size_t k = 0; k < c.nreads; k++) {
        done += c.reads[k].done;
    }
    assert_true(done > c.nreads / 2);
    assert_false(c.failed);
    cl_free(&c);
}

static void test_raft_lease_read_only_when_enabled(void **state)
{
    (void)state;
    uint64_t now = 0;
    struct raft *r = ready_leader(&now);
    uint64_t index = 0;
    assert_int_equal(raft_read_lease(r, now, &index), RAFT_EBADARG);
    raft_destroy(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_raft_read_index_confirms_leadership),
        cmocka_unit_test(test_raft_read_index_waits_for_commit_in_term),
        cmocka_unit_test(test_raft_read_index_fails_across_leader_change),
        cmocka_unit_test(test_raft_read_index_forwarded_by_follower),
        cmocka_unit_test(test_raft_reads_linearizable_in_cluster),
        cmocka_unit_test(test_raft_lease_read_only_when_enabled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
