/* Log replication (thesis §3.5, §3.6): commitment rules, durable acknowledgements, back-off. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "consensus/raft.h"
#include "tests/sim/cluster.h"
#include "tests/sim/drive.h"

/* Figure 8 / §3.6.2: a leader must not commit an entry of an earlier term by counting replicas.
 * S1 leads term 4 with entry 2 from term 2; S2 and S3 acknowledge index 2: a majority of 5 holds
 * it, yet it must stay uncommitted until the leader's own no-op (index 3, term 4) is replicated. */
static void test_raft_figure8_no_commit_by_counting_old_term(void **state)
{
    (void)state;
    uint64_t terms[] = {2};
    struct raft *r = drv_node(1, 5, 3, terms, 1);
    uint64_t now = 0;
    struct raft_update u;
    assert_int_equal(drv_elect(r, 5, &now), RAFT_LEADER);
    assert_int_equal(raft_term(r), 4);
    assert_int_equal(raft_last_index(r), 3); /* the no-op */
    struct raft_message m2 = drv_append_ok(2, 1, 4, 2);
    struct raft_message m3 = drv_append_ok(3, 1, 4, 2);
    drv_recv(r, now, &m2, &u);
    drv_recv(r, now, &m3, &u);
    assert_int_equal(raft_commit_index(r), 0);
    /* The leader's own no-op becomes durable and reaches S2 and S3: now 2 and 3 commit. */
    drv_persisted(r, now, 3, 4, &u);
    m2 = drv_append_ok(2, 1, 4, 3);
    drv_recv(r, now, &m2, &u);
    assert_int_equal(raft_commit_index(r), 0);
    m3 = drv_append_ok(3, 1, 4, 3);
    drv_recv(r, now, &m3, &u);
    assert_int_equal(raft_commit_index(r), 3);
    assert_int_equal(u.n_committed, 3);
    raft_destroy(r);
}

/* The leader appends in parallel with sending, but counts itself only once PERSISTED. */
static void test_raft_leader_counts_itself_only_when_persisted(void **state)
{
    (void)state;
    struct raft *r = drv_node(1, 3, 1, NULL, 0);
    uint64_t now = 0;
    struct raft_update u;
    assert_int_equal(drv_elect(r, 3, &now), RAFT_LEADER);
    /* One follower acknowledges the no-op; with the leader not yet durable that is 1 of 3. */
    struct raft_message m = drv_append_ok(2, 1, raft_term(r), 2);
    drv_recv(r, now, &m, &u);
    assert_int_equal(raft_commit_index(r), 0);
    drv_persisted(r, now, 2, raft_term(r), &u);
    assert_int_equal(raft_commit_index(r), 2);
    raft_destroy(r);
}

/* From §10.2.1: a quorum of followers commits an entry before the leader's own copy is durable,
 * and the leader then applies it at once; compaction still waits for the leader's own copy. */
static void test_raft_leader_applies_what_followers_made_durable(void **state)
{
    (void)state;
    struct raft_options o;
    drv_options(&o, 1);
    o.trailing_entries = 0; /* compact right up to the applied floor */
    struct raft *r = drv_node_with(&o, 3, 1, NULL, 0);
    uint64_t now = 0;
    struct raft_update u;
    assert_int_equal(drv_elect(r, 3, &now), RAFT_LEADER);
    assert_int_equal(raft_last_index(r), 2); /* the no-op, not durable here */
    struct raft_message m2 = drv_append_ok(2, 1, raft_term(r), 2);
    struct raft_message m3 = drv_append_ok(3, 1, raft_term(r), 2);
    drv_recv(r, now, &m2, &u);
    assert_int_equal(raft_commit_index(r), 0);
    drv_recv(r, now, &m3, &u);
    assert_int_equal(raft_commit_index(r), 2);
    assert_int_equal(raft_persisted_index(r), 1); /* our own copy of 2: not yet */
    assert_int_equal(u.n_committed, 2);
    assert_int_equal(u.committed[1].index, 2);
    /* The state machine holds both durably, but the log must keep them until they are durable
     * here too: no compaction past our persisted index. */
    struct raft_event ev = {.type = RAFT_EVENT_APPLIED_FLOOR, .now_ms = now};
    ev.applied_floor.index = 2;
    assert_int_equal(raft_step(r, &ev, &u), 0);
    assert_int_equal(u.compact_to, 1); /* up to our persisted index, not the floor */
    drv_persisted(r, now, 2, raft_term(r), &u);
    assert_int_equal(u.n_committed, 0); /* applied already */
    assert_int_equal(raft_step(r, &ev, &u), 0);
    assert_int_equal(u.compact_to, 2);
    raft_destroy(r);
}

/* A commit no message has carried to a follower is flagged (raft_update.commit_untold), and
 * RAFT_EVENT_TELL_COMMIT sends it: a heartbeat of context 0 to that follower only, saying no
 * more than it holds. An AppendEntries that carries it clears the flag: no extra message. */
static void test_raft_leader_tells_untold_commits(void **state)
{
    (void)state;
    struct raft *r = drv_node(1, 3, 1, NULL, 0);
    uint64_t now = 0;
    struct raft_update u;
    assert_int_equal(drv_elect(r, 3, &now), RAFT_LEADER);
    uint64_t t = raft_term(r);
    drv_persisted(r, now, 2, t, &u);
    assert_false(u.commit_untold); /* nothing committed yet */
    /* n2 acknowledges the no-op: committed, and nobody was told. */
    struct raft_message m = drv_append_ok(2, 1, t, 2);
    drv_recv(r, now, &m, &u);
    assert_int_equal(raft_commit_index(r), 2);
    assert_true(u.commit_untold);
    struct raft_event ev = {.type = RAFT_EVENT_TELL_COMMIT, .now_ms = now};
    assert_int_equal(raft_step(r, &ev, &u), 0);
    assert_int_equal(u.n_messages, 1); /* n3 holds nothing acknowledged: told nothing */
    const struct raft_message *hb = drv_find(&u, RAFT_MSG_HEARTBEAT, 2);
    assert_non_null(hb);
    assert_int_equal(hb->heartbeat.commit, 2);
    assert_int_equal(hb->heartbeat.ctx, 0);
    assert_false(u.commit_untold);
    assert_int_equal(raft_step(r, &ev, &u), 0);
    assert_int_equal(u.n_messages, 0); /* told once */
    /* n3 catches up: told at the next step; a proposal's AppendEntries then carries the commit
     * to both, and leaves nothing untold. */
    m = drv_append_ok(3, 1, t, 2);
    drv_recv(r, now, &m, &u);
    assert_true(u.commit_untold);
    struct raft_buf *b = raft_buf_copy("12345678", 8);
    assert_non_null(b);
    assert_int_equal(raft_propose(r, now, RAFT_NORMAL, b, 7, &u), 0);
    raft_buf_unref(b);
    const struct raft_message *ae = drv_find(&u, RAFT_MSG_APPEND_ENTRIES, 3);
    assert_non_null(ae);
    assert_int_equal(ae->append_entries.commit, 2);
    assert_false(u.commit_untold);
    assert_int_equal(raft_step(r, &ev, &u), 0);
    assert_int_equal(u.n_messages, 0);
    raft_destroy(r);
}

/* A big entry out to a follower is not sent again at every heartbeat while it may still be on
 * its way: the retransmission waits for the time its bytes take (16 KiB/ms assumed). */
static void test_raft_big_entry_is_not_resent_while_in_flight(void **state)
{
    (void)state;
    struct raft *r = drv_node(1, 3, 1, NULL, 0);
    uint64_t now = 0;
    struct raft_update u;
    assert_int_equal(drv_elect(r, 3, &now), RAFT_LEADER);
    drv_persisted(r, now, 2, raft_term(r), &u);
    struct raft_message ok2 = drv_append_ok(2, 1, raft_term(r), 2);
    drv_recv(r, now, &ok2, &u); /* n2 replicates from here on */
    size_t big = 8u << 20;      /* 8 MiB: 512 ms at 16 KiB/ms */
    char *payload = calloc(1, big);
    assert_non_null(payload);
    struct raft_buf *b = raft_buf_copy(payload, big);
    free(payload);
    assert_int_equal(raft_propose(r, now, RAFT_NORMAL, b, 7, &u), 0);
    raft_buf_unref(b);
    assert_non_null(drv_find(&u, RAFT_MSG_APPEND_ENTRIES, 2));
    struct raft_message hb;
    memset(&hb, 0, sizeof hb);
    hb.type = RAFT_MSG_HEARTBEAT_RESULT;
    hb.from = 2;
    hb.to = 1;
    hb.term = raft_term(r);
    /* Three heartbeats later nothing advanced: the old rule (two heartbeats) sent 8 MiB again. */
    now += 300;
    assert_int_equal(drv_recv(r, now, &hb, &u), 0);
    assert_null(drv_find(&u, RAFT_MSG_APPEND_ENTRIES, 2));
    drv_tick(r, now, &u);
    assert_null(drv_find(&u, RAFT_MSG_APPEND_ENTRIES, 2));
    /* Past two heartbeats plus 512 ms it is taken as lost and sent again, once. */
    now += 450;
    assert_int_equal(drv_recv(r, now, &hb, &u), 0);
    const struct raft_message *m = drv_find(&u, RAFT_MSG_APPEND_ENTRIES, 2);
    assert_non_null(m);
    assert_int_equal(m->append_entries.n_entries, 1);
    assert_int_equal(m->append_entries.entries[0].index, 3);
    now += 50;
    assert_int_equal(drv_recv(r, now, &hb, &u), 0);
    assert_null(drv_find(&u, RAFT_MSG_APPEND_ENTRIES, 2));
    raft_destroy(r);
}

/* A follower acknowledges AppendEntries only for entries it has made durable. */
static void test_raft_follower_acks_only_persisted_entries(void **state)
{
    (void)state;
    struct raft *r = drv_node(2, 3, 1, NULL, 0);
    struct raft_update u;
    struct raft_entry e = {.term = 2, .index = 2, .type = RAFT_NORMAL,
                           .buf = raft_buf_copy("abcdefgh", 8)};
    struct raft_message m;
    memset(&m, 0, sizeof m);
    m.type = RAFT_MSG_APPEND_ENTRIES;
    m.from = 1;
    m.to = 2;
    m.term = 2;
    m.append_entries.prev_index = 1;
    m.append_entries.prev_term = 1;
    m.append_entries.commit = 1;
    m.append_entries.n_entries = 1;
    m.append_entries.entries = &e;
    assert_int_equal(drv_recv(r, 10, &m, &u), 0);
    assert_true(u.hard_state_changed); /* term 2 must be durable first */
    assert_int_equal(u.n_entries, 1);
    assert_null(drv_find(&u, RAFT_MSG_APPEND_ENTRIES_RESULT, 1));
    raft_buf_unref(e.buf); /* the core keeps its own reference */
    drv_persisted(r, 20, 2, 2, &u);
    const struct raft_message *ack = drv_find(&u, RAFT_MSG_APPEND_ENTRIES_RESULT, 1);
    assert_non_null(ack);
    assert_true(ack->append_entries_result.success);
    assert_int_equal(ack->append_entries_result.match_index, 2);
    assert_int_equal(raft_commit_index(r), 1);
    raft_destroy(r);
}

/* §3.5: a conflicting suffix is truncated and the caller told where; the rejection carries a
 * hint that skips the whole conflicting term. */
static void test_raft_conflict_truncates_and_hints(void **state)
{
    (void)state;
    uint64_t terms[] = {2, 2, 2, 2}; /* indexes 2..5 of term 2, uncommitted */
    struct raft *r = drv_node(2, 3, 3, terms, 4);
    struct raft_update u;
    struct raft_message m;
    memset(&m, 0, sizeof m);
    m.type = RAFT_MSG_APPEND_ENTRIES;
    m.from = 1;
    m.to = 2;
    m.term = 4;
    m.append_entries.prev_index = 5;
    m.append_entries.prev_term = 3; /* the leader has term 3 at 5: mismatch */
    drv_recv(r, 10, &m, &u);
    const struct raft_message *rej = drv_find(&u, RAFT_MSG_APPEND_ENTRIES_RESULT, 1);
    assert_non_null(rej);
    assert_false(rej->append_entries_result.success);
    assert_int_equal(rej->append_entries_result.reject_index, 5);
    /* Term 2 <= 3, so our entry at 5 might match an earlier prefix: hint 5 with term 2. */
    assert_int_equal(rej->append_entries_result.hint_index, 5);
    assert_int_equal(rej->append_entries_result.hint_term, 2);
    /* The leader retries from 2 with entries of term 3 that conflict from index 3. */
    struct raft_entry es[2] = {
        {.term = 3, .index = 3, .type = RAFT_NOOP},
        {.term = 3, .index = 4, .type = RAFT_NOOP},
    };
    uint64_t v = 7;
    struct raft_buf *b = raft_buf_copy(&v, sizeof v);
    es[0].buf = NULL;
    es[1].buf = b;
    es[1].type = RAFT_NORMAL;
    m.append_entries.prev_index = 2;
    m.append_entries.prev_term = 2;
    m.append_entries.n_entries = 2;
    m.append_entries.entries = es;
    drv_recv(r, 20, &m, &u);
    raft_buf_unref(b);
    assert_int_equal(u.truncate_from, 3);
    assert_int_equal(u.n_entries, 2);
    assert_int_equal(raft_last_index(r), 4);
    assert_int_equal(raft_term_at(r, 4), 3);
    raft_destroy(r);
}

/* Bytes from the network are validated: entries that do not follow prev_index are dropped. */
static void test_raft_malformed_append_is_ignored(void **state)
{
    (void)state;
    struct raft *r = drv_node(2, 3, 1, NULL, 0);
    struct raft_update u;
    struct raft_entry e = {.term = 2, .index = 7, .type = RAFT_NORMAL};
    struct raft_message m;
    memset(&m, 0, sizeof m);
    m.type = RAFT_MSG_APPEND_ENTRIES;
    m.from = 1;
    m.to = 2;
    m.term = 2;
    m.append_entries.prev_index = 1;
    m.append_entries.prev_term = 1;
    m.append_entries.n_entries = 1;
    m.append_entries.entries = &e;
    drv_recv(r, 10, &m, &u);
    assert_int_equal(u.n_entries, 0);
    assert_int_equal(raft_last_index(r), 1);
    e.index = 2;
    e.type = 99; /* unknown type */
    drv_recv(r, 10, &m, &u);
    assert_int_equal(u.n_entries, 0);
    raft_destroy(r);
}

static bool all_applied(struct cluster *c, void *arg)
{
    uint64_t index = *(uint64_t *)arg;
    for (uint64_t id = 1; id <= 3; id++) {
        if (c->nodes[id].sm_n < index) {
            return false;
        }
    }
    return true;
}

static bool has_leader(struct cluster *c, void *arg)
{
    (void)arg;
    return cl_leader(c) != 0;
}

/* Batching and pipelining under loss: 300 proposals reach every state machine. */
static void test_raft_pipelined_replication_under_loss(void **state)
{
    (void)state;
    struct cluster c;
    struct cl_options o;
    cl_options_default(&o, 7);
    o.drop_pct = 10;
    o.dup_pct = 5;
    assert_int_equal(cl_init(&c, &o), 0);
    assert_true(cl_run_until_pred(&c, has_leader, NULL, 5000));
    uint64_t committed = 0;
    for (int i = 0; i < 300; i++) {
        uint64_t l = cl_leader(&c);
        if (l != 0) {
            cl_propose(&c, l, 100, NULL);
        }
        cl_run_until(&c, c.now + 5);
    }
    c.o.drop_pct = 0;
    cl_run_until(&c, c.now + 2000);
    for (size_t k = 0; k < c.nprops; k++) {
        committed += c.props[k].state == RAFT_PROPOSAL_COMMITTED;
    }
    assert_true(committed > 250);
    uint64_t last = raft_commit_index(cl_raft(&c, cl_leader(&c)));
    assert_true(cl_run_until_pred(&c, all_applied, &last, 5000));
    cl_check_final(&c);
    assert_false(c.failed);
    cl_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_raft_figure8_no_commit_by_counting_old_term),
        cmocka_unit_test(test_raft_leader_tells_untold_commits),
        cmocka_unit_test(test_raft_leader_counts_itself_only_when_persisted),
        cmocka_unit_test(test_raft_leader_applies_what_followers_made_durable),
        cmocka_unit_test(test_raft_big_entry_is_not_resent_while_in_flight),
        cmocka_unit_test(test_raft_follower_acks_only_persisted_entries),
        cmocka_unit_test(test_raft_conflict_truncates_and_hints),
        cmocka_unit_test(test_raft_malformed_append_is_ignored),
        cmocka_unit_test(test_raft_pipelined_replication_under_loss),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
