/* The Raft message codec: every type round-trips; truncated, padded or corrupt input is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "consensus/io/msg.h"

static struct raft_message sample(uint8_t type, struct raft_entry *entries)
{
    struct raft_message m;
    memset(&m, 0, sizeof m);
    m.type = type;
    m.from = 0x0102030405060708u;
    m.to = 42;
    m.term = 7;
    switch (type) {
    case RAFT_MSG_REQUEST_VOTE:
        m.request_vote = (struct raft_request_vote){10, 6, true, false};
        break;
    case RAFT_MSG_REQUEST_VOTE_RESULT:
        m.request_vote_result = (struct raft_request_vote_result){true, true};
        break;
    case RAFT_MSG_APPEND_ENTRIES:
        m.append_entries = (struct raft_append_entries){9, 6, 8, 3, entries};
        break;
    case RAFT_MSG_APPEND_ENTRIES_RESULT:
        m.append_entries_result = (struct raft_append_entries_result){false, 0, 12, 9, 5};
        break;
    case RAFT_MSG_HEARTBEAT:
        m.heartbeat = (struct raft_heartbeat){8, 99};
        break;
    case RAFT_MSG_HEARTBEAT_RESULT:
        m.heartbeat_result.ctx = 99;
        break;
    case RAFT_MSG_INSTALL_SNAPSHOT:
        m.install_snapshot.last_index = 100;
        m.install_snapshot.last_term = 3;
        m.install_snapshot.config.n = 2;
        m.install_snapshot.config.servers[0] = (struct raft_server){1, RAFT_VOTER, "n1", "127.0.0.1:7001"};
        m.install_snapshot.config.servers[1] = (struct raft_server){2, RAFT_REPLICA, "n2", "127.0.0.1:7002"};
        break;
    case RAFT_MSG_TIMEOUT_NOW:
        m.timeout_now.last_log_index = 77;
        break;
    case RAFT_MSG_READ_INDEX:
        m.read_index.ctx = 5;
        break;
    case RAFT_MSG_READ_INDEX_RESULT:
        m.read_index_result = (struct raft_read_index_result){5, 66, RAFT_ENOTLEADER};
        break;
    }
    return m;
}

static void make_entries(struct raft_entry *e)
{
    static const char payload[] = "a page image, more or less";
    e[0] = (struct raft_entry){6, 10, RAFT_NORMAL, raft_buf_copy(payload, sizeof payload)};
    e[1] = (struct raft_entry){7, 11, RAFT_NOOP, NULL};
    e[2] = (struct raft_entry){7, 12, RAFT_NORMAL, raft_buf_copy("x", 1)};
}

static void free_entries(struct raft_entry *e)
{
    for (int i = 0; i < 3; i++) {
        raft_buf_unref(e[i].buf);
    }
}

static void test_io_msg_every_type_round_trips(void **state)
{
    (void)state;
    struct raft_entry entries[3];
    make_entries(entries);
    for (uint8_t type = RAFT_MSG_REQUEST_VOTE; type <= RAFT_MSG_READ_INDEX_RESULT; type++) {
        struct raft_message m = sample(type, entries), d;
        size_t cap = io_msg_size(&m);
        uint8_t *buf = malloc(cap);
        size_t len = io_msg_encode(&m, buf, cap);
        assert_true(len <= cap);
        assert_int_equal(io_msg_decode(buf, len, 1 << 20, &d), 0);
        assert_int_equal(d.type, m.type);
        assert_true(d.from == m.from && d.to == m.to && d.term == m.term);
        if (type == RAFT_MSG_APPEND_ENTRIES) {
            assert_int_equal(d.append_entries.n_entries, 3);
            assert_true(d.append_entries.commit == 8 && d.append_entries.prev_term == 6);
            for (int i = 0; i < 3; i++) {
                struct raft_entry *a = &entries[i], *b = &d.append_entries.entries[i];
                assert_true(a->term == b->term && a->index == b->index && a->type == b->type);
                assert_int_equal(a->buf ? a->buf->len : 0, b->buf ? b->buf->len : 0);
                if (a->buf) {
                    assert_memory_equal(a->buf->base, b->buf->base, a->buf->len);
                }
            }
        } else if (type == RAFT_MSG_INSTALL_SNAPSHOT) {
            assert_int_equal(d.install_snapshot.config.n, 2);
            assert_string_equal(d.install_snapshot.config.servers[1].addr, "127.0.0.1:7002");
            assert_int_equal(d.install_snapshot.last_index, 100);
        } else {
            /* Every other body is plain data: the structs compare equal field by field. */
            struct raft_message a = m, b = d;
            a.append_entries.entries = b.append_entries.entries = NULL;
            assert_int_equal(io_msg_size(&a), io_msg_size(&b));
            uint8_t *again = malloc(cap);
            assert_int_equal(io_msg_encode(&d, again, cap), len);
            assert_memory_equal(buf, again, len);
            free(again);
        }
        io_msg_release(&d);
        free(buf);
    }
    free_entries(entries);
}

static void test_io_msg_rejects_truncated_padded_and_corrupt(void **state)
{
    (void)state;
    struct raft_entry entries[3];
    make_entries(entries);
    for (uint8_t type = RAFT_MSG_REQUEST_VOTE; type <= RAFT_MSG_READ_INDEX_RESULT; type++) {
        struct raft_message m = sample(type, entries), d;
        size_t cap = io_msg_size(&m) + 1;
        uint8_t *buf = malloc(cap);
        size_t len = io_msg_encode(&m, buf, cap);
        for (size_t cut = 0; cut < len; cut++) {
            assert_int_not_equal(io_msg_decode(buf, cut, 1 << 20, &d), 0);
        }
        buf[len] = 0;
        assert_int_equal(io_msg_decode(buf, len + 1, 1 << 20, &d), RAFT_EMALFORMED);
        buf[0] = 2; /* unknown version */
        assert_int_equal(io_msg_decode(buf, len, 1 << 20, &d), RAFT_EMALFORMED);
        buf[0] = IO_MSG_VERSION;
        buf[1] = 200; /* unknown type */
        assert_int_equal(io_msg_decode(buf, len, 1 << 20, &d), RAFT_EMALFORMED);
        /* Random corruption never crashes (ASan watches); whatever decodes is released. */
        srand(type);
        for (int k = 0; k < 2000; k++) {
            buf[1] = type;
            size_t at = (size_t)rand() % len;
            uint8_t old = buf[at];
            buf[at] ^= (uint8_t)(1u << (rand() % 8));
            if (io_msg_decode(buf, len, 1 << 20, &d) == 0) {
                io_msg_release(&d);
            }
            buf[at] = old;
        }
        free(buf);
    }
    free_entries(entries);
}

static void test_io_msg_entry_bound_and_index_gaps(void **state)
{
    (void)state;
    struct raft_entry entries[3];
    make_entries(entries);
    struct raft_message m = sample(RAFT_MSG_APPEND_ENTRIES, entries), d;
    size_t cap = io_msg_size(&m);
    uint8_t *buf = malloc(cap);
    size_t len = io_msg_encode(&m, buf, cap);
    assert_int_equal(io_msg_decode(buf, len, 4, &d), RAFT_ETOOBIG);
    entries[2].index = 13; /* a gap */
    len = io_msg_encode(&m, buf, cap);
    assert_int_equal(io_msg_decode(buf, len, 1 << 20, &d), RAFT_EMALFORMED);
    free(buf);
    free_entries(entries);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_io_msg_every_type_round_trips),
        cmocka_unit_test(test_io_msg_rejects_truncated_padded_and_corrupt),
        cmocka_unit_test(test_io_msg_entry_bound_and_index_gaps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
