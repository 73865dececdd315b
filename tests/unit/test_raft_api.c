/* The public API's contracts: the configuration codec rejects malformed bytes, buffers are
 * reference-counted, rejected calls return a code and change nothing, recovery. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "consensus/raft.h"
#include "tests/sim/drive.h"

static struct raft_config three(void)
{
    struct raft_config c;
    memset(&c, 0, sizeof c);
    for (unsigned i = 1; i <= 3; i++) {
        struct raft_server *s = &c.servers[c.n++];
        s->id = i;
        s->role = i == 3 ? RAFT_REPLICA : RAFT_VOTER;
        snprintf(s->name, sizeof s->name, "n%u", i);
        snprintf(s->addr, sizeof s->addr, "10.0.0.%u:7001", i);
    }
    return c;
}

static void test_raft_config_roundtrip(void **state)
{
    (void)state;
    struct raft_config c = three(), d;
    uint8_t buf[RAFT_CONFIG_ENCODED_MAX];
    size_t len = 0;
    assert_int_equal(raft_config_encode(&c, buf, &len), 0);
    assert_int_equal(raft_config_decode(buf, len, &d), 0);
    assert_int_equal(d.n, 3);
    assert_string_equal(d.servers[2].addr, "10.0.0.3:7001");
    assert_int_equal(d.servers[2].role, RAFT_REPLICA);
    assert_int_equal(raft_config_voters(&d), 2);
    assert_non_null(raft_config_get(&d, 2));
    assert_null(raft_config_get(&d, 4));
}

/* Every truncation, every trailing byte and every single-byte corruption that breaks the layout
 * is rejected with RAFT_EMALFORMED -- never a crash. */
static void test_raft_config_decode_rejects_malformed(void **state)
{
    (void)state;
    struct raft_config c = three(), d;
    uint8_t buf[RAFT_CONFIG_ENCODED_MAX + 1];
    size_t len = 0;
    assert_int_equal(raft_config_encode(&c, buf, &len), 0);
    for (size_t k = 0; k < len; k++) {
        assert_int_equal(raft_config_decode(buf, k, &d), RAFT_EMALFORMED);
    }
    buf[len] = 0;
    assert_int_equal(raft_config_decode(buf, len + 1, &d), RAFT_EMALFORMED);
    uint8_t bad[RAFT_CONFIG_ENCODED_MAX];
    memcpy(bad, buf, len);
    bad[0] = 2; /* version */
    assert_int_equal(raft_config_decode(bad, len, &d), RAFT_EMALFORMED);
    memcpy(bad, buf, len);
    bad[1] = 0; /* no servers */
    assert_int_equal(raft_config_decode(bad, len, &d), RAFT_EMALFORMED);
    memcpy(bad, buf, len);
    bad[2 + 8] = 7; /* unknown role */
    assert_int_equal(raft_config_decode(bad, len, &d), RAFT_EMALFORMED);
    memcpy(bad, buf, len);
    bad[2 + 9] = 200; /* name longer than the buffer */
    assert_int_equal(raft_config_decode(bad, len, &d), RAFT_EMALFORMED);
    /* Random bytes never crash the decoder. */
    srand(1);
    for (int i = 0; i < 20000; i++) {
        size_t n = (size_t)(rand() % 64);
        for (size_t k = 0; k < n; k++) {
            bad[k] = (uint8_t)rand();
        }
        int rc = raft_config_decode(bad, n, &d);
        assert_true(rc == 0 || rc == RAFT_EMALFORMED);
    }
    /* Duplicate ids and no voter are invalid configurations. */
    c.servers[1].id = 1;
    assert_int_equal(raft_config_encode(&c, buf, &len), RAFT_ECONFIG);
    c = three();
    c.servers[0].role = RAFT_REPLICA;
    c.servers[1].role = RAFT_LEARNER;
    assert_int_equal(raft_config_check(&c), RAFT_ECONFIG);
}

static int released;
static void on_release(void *base, size_t len, void *arg)
{
    (void)len;
    (void)arg;
    free(base);
    released++;
}

static void test_raft_buf_refcount(void **state)
{
    (void)state;
    released = 0;
    struct raft_buf *b = raft_buf_wrap(malloc(16), 16, on_release, NULL);
    raft_buf_ref(b);
    raft_buf_unref(b);
    assert_int_equal(released, 0);
    raft_buf_unref(b);
    assert_int_equal(released, 1);
    raft_buf_unref(NULL);
    assert_null(raft_buf_ref(NULL));
}

static void test_raft_strerror_table(void **state)
{
    (void)state;
    assert_string_equal(raft_strerror(0), "success");
    assert_string_equal(raft_strerror(RAFT_ENOTLEADER), "not the leader");
    assert_non_null(strstr(raft_strerror(RAFT_EUNKNOWN), "unknown"));
    assert_string_equal(raft_strerror(12345), "unknown error");
}

/* Rejected calls return a code, leave the update empty and change nothing; a follower names
 * the leader it knows. */
static void test_raft_rejected_calls_change_nothing(void **state)
{
    (void)state;
    struct raft *r = drv_node(2, 3, 1, NULL, 0);
    struct raft_update u;
    struct raft_message hb;
    memset(&hb, 0, sizeof hb);
    hb.type = RAFT_MSG_HEARTBEAT;
    hb.from = 1;
    hb.to = 2;
    hb.term = 2;
    drv_recv(r, 10, &hb, &u);
    struct raft_buf *b = raft_buf_copy("x", 1);
    assert_int_equal(raft_propose(r, 20, RAFT_NORMAL, b, 1, &u), RAFT_ENOTLEADER);
    assert_int_equal(u.n_entries + u.n_messages + u.n_proposals, 0);
    assert_int_equal(raft_leader(r), 1);
    assert_int_equal(raft_last_index(r), 1);
    raft_buf_unref(b);
    assert_int_equal(raft_transfer(r, 20, 0, &u), RAFT_ENOTLEADER);
    assert_int_equal(raft_remove(r, 20, 3, 0, &u), RAFT_ENOTLEADER);
    struct raft_progress_info pi;
    assert_int_equal(raft_progress(r, 1, &pi), RAFT_ENOTLEADER);
    /* A message addressed to someone else is refused. */
    hb.to = 3;
    assert_int_equal(drv_recv(r, 30, &hb, &u), RAFT_EMALFORMED);
    raft_destroy(r);
}

static void test_raft_leader_rejects_bad_proposals(void **state)
{
    (void)state;
    struct raft *r = drv_node(1, 3, 1, NULL, 0);
    uint64_t now = 0;
    struct raft_update u;
    assert_int_equal(drv_elect(r, 3, &now), RAFT_LEADER);
    assert_int_equal(raft_propose(r, now, RAFT_CONFIG, NULL, 1, &u), RAFT_EBADARG);
    assert_int_equal(raft_propose(r, now, 77, NULL, 1, &u), RAFT_EBADARG);
    struct raft_buf *b = raft_buf_copy("payload!", 8);
    assert_int_equal(raft_propose(r, now, RAFT_NORMAL, b, 42, &u), 0);
    assert_int_equal(u.n_proposals, 1);
    assert_int_equal(u.proposals[0].cookie, 42);
    assert_int_equal(u.proposals[0].outcome, RAFT_PROPOSAL_APPENDED);
    assert_int_equal(u.proposals[0].index, 3);
    assert_int_equal(u.n_entries, 1);
    assert_ptr_equal(u.entries[0].buf, b); /* shared, not copied */
    raft_buf_unref(b);
    /* Deposed after appending: the outcome is unknown after a grace period, unless the
     * commit index passes the entry first. */
    struct raft_message hb;
    memset(&hb, 0, sizeof hb);
    hb.type = RAFT_MSG_HEARTBEAT;
    hb.from = 2;
    hb.to = 1;
    hb.term = raft_term(r) + 1;
    drv_recv(r, now, &hb, &u);
    assert_int_equal(raft_state(r), RAFT_FOLLOWER);
    drv_tick(r, now + 5000, &u);
    assert_int_equal(u.n_proposals, 1);
    assert_int_equal(u.proposals[0].outcome, RAFT_PROPOSAL_FAILED);
    assert_int_equal(u.proposals[0].status, RAFT_EUNKNOWN);
    raft_destroy(r);
}

/* A deposed leader's proposal whose index is committed with another leader's entry is reported
 * definitely not committed (never "unknown"): a client may retry it safely. */
static void test_raft_overwritten_proposal_is_not_committed(void **state)
{
    (void)state;
    struct raft *r = drv_node(1, 3, 1, NULL, 0);
    uint64_t now = 0;
    struct raft_update u;
    assert_int_equal(drv_elect(r, 3, &now), RAFT_LEADER); /* term 2, no-op at 2 */
    uint64_t term = raft_term(r);
    struct raft_buf *b = raft_buf_copy("payload!", 8);
    assert_int_equal(raft_propose(r, now, RAFT_NORMAL, b, 5, &u), 0);
    raft_buf_unref(b);
    assert_int_equal(u.proposals[0].index, 3);
    /* Node 2 leads term 3 with the no-op at 2 but its own entry at 3, and commits it. */
    struct raft_entry e = {.term = term + 1, .index = 3, .type = RAFT_NOOP};
    struct raft_message m;
    memset(&m, 0, sizeof m);
    m.type = RAFT_MSG_APPEND_ENTRIES;
    m.from = 2;
    m.to = 1;
    m.term = term + 1;
    m.append_entries.prev_index = 2;
    m.append_entries.prev_term = term;
    m.append_entries.commit = 3;
    m.append_entries.n_entries = 1;
    m.append_entries.entries = &e;
    drv_recv(r, now + 10, &m, &u);
    assert_int_equal(raft_state(r), RAFT_FOLLOWER);
    assert_int_equal(u.truncate_from, 3);
    assert_int_equal(raft_commit_index(r), 3);
    assert_int_equal(u.n_proposals, 1);
    assert_int_equal(u.proposals[0].cookie, 5);
    assert_int_equal(u.proposals[0].outcome, RAFT_PROPOSAL_FAILED);
    assert_int_equal(u.proposals[0].status, RAFT_ENOTCOMMITTED);
    /* Committed entries are handed out only once durable here: just index 1 so far. */
    assert_int_equal(u.n_committed, 1);
    assert_int_equal(u.committed[0].index, 1);
    raft_destroy(r);
}

/* Disaster recovery: with two of three servers gone for good, the survivor forces a
 * configuration of itself alone, elects itself and commits. */
static void test_raft_recover_forces_configuration(void **state)
{
    (void)state;
    struct raft *r = drv_node(1, 3, 1, NULL, 0);
    struct raft_update u;
    struct raft_config c = three();
    c.n = 1;
    c.servers[0].role = RAFT_VOTER;
    struct raft_config bad = c;
    bad.servers[0].id = 2; /* does not contain this node */
    assert_int_equal(raft_recover(r, 10, &bad, &u), RAFT_EBADARG);
    assert_int_equal(raft_recover(r, 10, &c, &u), 0);
    assert_true(u.hard_state_changed);
    assert_int_equal(u.n_entries, 1);
    assert_int_equal(u.entries[0].type, RAFT_CONFIG);
    assert_int_equal(raft_configuration(r)->n, 1);
    drv_persisted(r, 10, u.entries[0].index, u.entries[0].term, &u);
    uint64_t now = 10;
    for (int i = 0; i < 30 && raft_state(r) != RAFT_LEADER; i++) {
        now += 100;
        drv_tick(r, now, &u);
    }
    assert_int_equal(raft_state(r), RAFT_LEADER);
    drv_persisted(r, now, raft_last_index(r), raft_term(r), &u);
    assert_int_equal(raft_commit_index(r), raft_last_index(r));
    raft_destroy(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_raft_config_roundtrip),
        cmocka_unit_test(test_raft_config_decode_rejects_malformed),
        cmocka_unit_test(test_raft_buf_refcount),
        cmocka_unit_test(test_raft_strerror_table),
        cmocka_unit_test(test_raft_rejected_calls_change_nothing),
        cmocka_unit_test(test_raft_leader_rejects_bad_proposals),
        cmocka_unit_test(test_raft_overwritten_proposal_is_not_committed),
        cmocka_unit_test(test_raft_recover_forces_configuration),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
