/* Log compaction and snapshots (thesis §5): compaction below the applied floor, a follower
 * behind the first retained entry receives a snapshot, snapshots racing with appends. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "consensus/raft.h"
#include "tests/sim/cluster.h"
#include "tests/sim/drive.h"

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

static bool caught_up(struct cluster *c, void *arg)
{
    uint64_t id = *(uint64_t *)arg;
    uint64_t l = cl_leader(c);
    return l != 0 && cl_raft(c, id) != NULL &&
           c->nodes[id].sm_n >= raft_commit_index(cl_raft(c, l)) &&
           raft_last_index(cl_raft(c, id)) == raft_last_index(cl_raft(c, l));
}

static void traffic(struct cluster *c, int n, bool checkpoint)
{
    for (int i = 0; i < n; i++) {
        uint64_t l = cl_leader(c);
        if (l != 0) {
            cl_propose(c, l, 32, NULL);
        }
        cl_run_until(c, c->now + 10);
        if (checkpoint && i % 10 == 0) {
            for (uint64_t id = 1; id <= CL_MAX; id++) {
                cl_checkpoint(c, id);
            }
        }
    }
}

/* APPLIED_FLOOR never compacts into the trailing window kept for slow followers. */
static void test_raft_applied_floor_keeps_trailing_window(void **state)
{
    (void)state;
    struct raft_options o;
    drv_options(&o, 1);
    uint64_t terms[40];
    for (int i = 0; i < 40; i++) {
        terms[i] = 1;
    }
    struct raft *r = drv_node(1, 1, 1, terms, 40);
    uint64_t now = 0;
    struct raft_update u;
    for (int i = 0; i < 30 && raft_state(r) != RAFT_LEADER; i++) {
        now += 100;
        drv_tick(r, now, &u);
    }
    drv_persisted(r, now, raft_last_index(r), raft_term(r), &u);
    assert_int_equal(raft_commit_index(r), 42);
    struct raft_event ev = {.type = RAFT_EVENT_APPLIED_FLOOR, .now_ms = now};
    ev.applied_floor.index = 42;
    assert_int_equal(raft_step(r, &ev, &u), 0);
    assert_int_equal(u.compact_to, 0); /* 42 < default trailing window of 1024 */
    raft_destroy(r);
}

/* A follower down while the log was compacted past it gets a snapshot, then entries. */
static void test_raft_lagging_follower_gets_snapshot(void **state)
{
    (void)state;
    struct cluster c;
    struct cl_options o;
    cl_options_default(&o, 21);
    o.trailing_entries = 5;
    assert_int_equal(cl_init(&c, &o), 0);
    assert_true(cl_run_until_pred(&c, leader_ready, NULL, 5000));
    uint64_t l = cl_leader(&c);
    uint64_t f = l == 1 ? 2 : 1;
    cl_crash(&c, f);
    traffic(&c, 100, true);
    assert_true(raft_first_index(cl_raft(&c, l)) > 20);
    uint64_t snaps = c.snapshots;
    cl_restart(&c, f);
    assert_true(cl_run_until_pred(&c, caught_up, &f, 5000));
    assert_true(c.snapshots > snaps);
    cl_check_final(&c);
    assert_false(c.failed);
    cl_free(&c);
}

/* Snapshots racing with appends: while a slow snapshot streams, the leader keeps appending and
 * compacting; the follower installs an image older than the log's head and catches up. */
static void test_raft_snapshot_races_with_appends(void **state)
{
    (void)state;
    struct cluster c;
    struct cl_options o;
    cl_options_default(&o, 22);
    o.trailing_entries = 3;
    o.snap_ms = 400;
    assert_int_equal(cl_init(&c, &o), 0);
    assert_true(cl_run_until_pred(&c, leader_ready, NULL, 5000));
    uint64_t l = cl_leader(&c);
    uint64_t f = l == 3 ? 2 : 3;
    cl_isolate(&c, f);
    traffic(&c, 80, true);
    cl_heal(&c);
    traffic(&c, 150, true); /* keeps appending and compacting during the stream */
    assert_true(cl_run_until_pred(&c, caught_up, &f, 8000));
    assert_true(c.snapshots > 0);
    cl_check_final(&c);
    assert_false(c.failed);
    cl_free(&c);
}

/* A snapshot is labelled with the leader's applied floor, not its compaction point: the image
 * contains the floor, so the follower needs only the entries after it, not the whole trailing
 * window again. */
static void test_raft_snapshot_index_is_the_applied_floor(void **state)
{
    (void)state;
    struct cluster c;
    struct cl_options o;
    cl_options_default(&o, 23);
    o.trailing_entries = 40;
    assert_int_equal(cl_init(&c, &o), 0);
    assert_true(cl_run_until_pred(&c, leader_ready, NULL, 5000));
    uint64_t l = cl_leader(&c);
    uint64_t f = l == 1 ? 2 : 1;
    cl_crash(&c, f);
    traffic(&c, 150, true);
    uint64_t first = raft_first_index(cl_raft(&c, l));
    uint64_t floor = raft_applied_floor(cl_raft(&c, l));
    assert_true(first > 40);
    assert_true(floor >= first + 30); /* the trailing window lies between */
    uint64_t snaps = c.snapshots;
    cl_restart(&c, f);
    assert_true(cl_run_until_pred(&c, caught_up, &f, 5000));
    assert_true(c.snapshots > snaps);
    /* The follower's log starts right after the snapshot it installed. */
    assert_true(raft_first_index(cl_raft(&c, f)) > floor);
    cl_check_final(&c);
    assert_false(c.failed);
    cl_free(&c);
}

/* SNAPSHOT_INSTALLED with a malformed configuration is rejected, not asserted on. */
static void test_raft_snapshot_installed_rejects_bad_config(void **state)
{
    (void)state;
    struct raft *r = drv_node(2, 3, 1, NULL, 0);
    struct raft_update u;
    struct raft_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = RAFT_EVENT_SNAPSHOT_INSTALLED;
    ev.snapshot_installed.from = 1;
    ev.snapshot_installed.term = 2;
    ev.snapshot_installed.index = 10;
    ev.snapshot_installed.last_term = 2;
    ev.snapshot_installed.config.n = 1; /* id 0: invalid */
    assert_int_equal(raft_step(r, &ev, &u), RAFT_EMALFORMED);
    assert_int_equal(raft_last_index(r), 1);
    /* A valid one resets the log and acknowledges to the leader. */
    ev.snapshot_installed.config = *raft_configuration(r);
    assert_int_equal(raft_step(r, &ev, &u), 0);
    assert_int_equal(u.snapshot_index, 10);
    assert_int_equal(raft_first_index(r), 11);
    assert_int_equal(raft_commit_index(r), 10);
    const struct raft_message *ack = drv_find(&u, RAFT_MSG_APPEND_ENTRIES_RESULT, 1);
    assert_non_null(ack);
    assert_int_equal(ack->append_entries_result.match_index, 10);
    raft_destroy(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_raft_applied_floor_keeps_trailing_window),
        cmocka_unit_test(test_raft_lagging_follower_gets_snapshot),
        cmocka_unit_test(test_raft_snapshot_races_with_appends),
        cmocka_unit_test(test_raft_snapshot_index_is_the_applied_floor),
        cmocka_unit_test(test_raft_snapshot_installed_rejects_bad_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
