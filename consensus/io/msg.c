/*
 * Codec of the Raft core's messages for the wire. See msg.h for the layout.
 */
#include "consensus/io/msg.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

struct writer {
    uint8_t *p;
    size_t left;
};

static void w64(struct writer *w, uint64_t v)
{
    assert(w->left >= 8);
    io_put64(w->p, v);
    w->p += 8;
    w->left -= 8;
}
static void w32(struct writer *w, uint32_t v)
{
    assert(w->left >= 4);
    io_put32(w->p, v);
    w->p += 4;
    w->left -= 4;
}
static void w8(struct writer *w, uint8_t v)
{
    assert(w->left >= 1);
    *w->p++ = v;
    w->left--;
}
static void wbytes(struct writer *w, const void *src, size_t n)
{
    assert(w->left >= n);
    if (n > 0) {
        memcpy(w->p, src, n);
    }
    w->p += n;
    w->left -= n;
}

static size_t body_size(const struct raft_message *m)
{
    size_t n = 0;
    switch (m->type) {
    case RAFT_MSG_REQUEST_VOTE:
        return 8 + 8 + 1 + 1;
    case RAFT_MSG_REQUEST_VOTE_RESULT:
        return 1 + 1;
    case RAFT_MSG_APPEND_ENTRIES:
        n = 8 + 8 + 8 + 4;
        for (uint32_t i = 0; i < m->append_entries.n_entries; i++) {
            const struct raft_entry *e = &m->append_entries.entries[i];
            n += 8 + 8 + 1 + 4 + (e->buf != NULL ? e->buf->len : 0);
        }
        return n;
    case RAFT_MSG_APPEND_ENTRIES_RESULT:
        return 1 + 8 * 4;
    case RAFT_MSG_HEARTBEAT:
        return 8 + 8;
    case RAFT_MSG_HEARTBEAT_RESULT:
        return 8;
    case RAFT_MSG_INSTALL_SNAPSHOT:
        return 8 + 8 + 4 + RAFT_CONFIG_ENCODED_MAX;
    case RAFT_MSG_TIMEOUT_NOW:
        return 8;
    case RAFT_MSG_READ_INDEX:
        return 8;
    case RAFT_MSG_READ_INDEX_RESULT:
        return 8 + 8 + 4;
    default:
        return 0;
    }
}

size_t io_msg_size(const struct raft_message *m)
{
    return IO_MSG_HEADER_BYTES + body_size(m);
}

size_t io_msg_encode(const struct raft_message *m, uint8_t *buf, size_t cap)
{
    struct writer w = {buf, cap};
    assert(cap >= io_msg_size(m));
    w8(&w, IO_MSG_VERSION);
    w8(&w, m->type);
    w64(&w, m->from);
    w64(&w, m->to);
    w64(&w, m->term);
    switch (m->type) {
    case RAFT_MSG_REQUEST_VOTE:
        w64(&w, m->request_vote.last_log_index);
        w64(&w, m->request_vote.last_log_term);
        w8(&w, m->request_vote.pre_vote ? 1 : 0);
        w8(&w, m->request_vote.transfer ? 1 : 0);
        break;
    case RAFT_MSG_REQUEST_VOTE_RESULT:
        w8(&w, m->request_vote_result.granted ? 1 : 0);
        w8(&w, m->request_vote_result.pre_vote ? 1 : 0);
        break;
    case RAFT_MSG_APPEND_ENTRIES: {
        const struct raft_append_entries *a = &m->append_entries;
        w64(&w, a->prev_index);
        w64(&w, a->prev_term);
        w64(&w, a->commit);
        w32(&w, a->n_entries);
        for (uint32_t i = 0; i < a->n_entries; i++) {
            const struct raft_entry *e = &a->entries[i];
            size_t len = e->buf != NULL ? e->buf->len : 0;
            assert(len <= UINT32_MAX);
            w64(&w, e->term);
            w64(&w, e->index);
            w8(&w, e->type);
            w32(&w, (uint32_t)len);
            wbytes(&w, e->buf != NULL ? e->buf->base : NULL, len);
        }
        break;
    }
    case RAFT_MSG_APPEND_ENTRIES_RESULT: {
        const struct raft_append_entries_result *a = &m->append_entries_result;
        w8(&w, a->success ? 1 : 0);
        w64(&w, a->match_index);
        w64(&w, a->reject_index);
        w64(&w, a->hint_index);
        w64(&w, a->hint_term);
        break;
    }
    case RAFT_MSG_HEARTBEAT:
        w64(&w, m->heartbeat.commit);
        w64(&w, m->heartbeat.ctx);
        break;
    case RAFT_MSG_HEARTBEAT_RESULT:
        w64(&w, m->heartbeat_result.ctx);
        break;
    case RAFT_MSG_INSTALL_SNAPSHOT: {
        uint8_t cfg[RAFT_CONFIG_ENCODED_MAX];
        size_t cfg_len = 0;
        int rc = raft_config_encode(&m->install_snapshot.config, cfg, &cfg_len);
        assert(rc == 0);
        (void)rc;
        w64(&w, m->install_snapshot.last_index);
        w64(&w, m->install_snapshot.last_term);
        w32(&w, (uint32_t)cfg_len);
        wbytes(&w, cfg, cfg_len);
        break;
    }
    case RAFT_MSG_TIMEOUT_NOW:
        w64(&w, m->timeout_now.last_log_index);
        break;
    case RAFT_MSG_READ_INDEX:
        w64(&w, m->read_index.ctx);
        break;
    case RAFT_MSG_READ_INDEX_RESULT:
        w64(&w, m->read_index_result.ctx);
        w64(&w, m->read_index_result.index);
        w32(&w, (uint32_t)m->read_index_result.status);
        break;
    default:
        assert(0 && "unknown message type");
    }
    return cap - w.left;
}

static int read_bool(struct io_reader *r, bool *out)
{
    uint8_t v = io_read8(r);
    if (v > 1) {
        return RAFT_EMALFORMED;
    }
    *out = v == 1;
    return 0;
}

void io_msg_release(struct raft_message *m)
{
    if (m->type == RAFT_MSG_APPEND_ENTRIES && m->append_entries.entries != NULL) {
        for (uint32_t i = 0; i < m->append_entries.n_entries; i++) {
            raft_buf_unref(m->append_entries.entries[i].buf);
        }
        free(m->append_entries.entries);
        m->append_entries.entries = NULL;
        m->append_entries.n_entries = 0;
    }
}

static int decode_entries(struct io_reader *r, uint64_t entry_bytes_max,
                          struct raft_append_entries *a)
{
    uint32_t n = io_read32(r);
    if (r->bad || n > RAFT_ENTRIES_PER_MSG_MAX) {
        return RAFT_EMALFORMED;
    }
    a->n_entries = 0;
    a->entries = NULL;
    if (n == 0) {
        return 0;
    }
    a->entries = calloc(n, sizeof *a->entries);
    if (a->entries == NULL) {
        return RAFT_ENOMEM;
    }
    for (uint32_t i = 0; i < n; i++) {
        struct raft_entry *e = &a->entries[i];
        e->term = io_read64(r);
        e->index = io_read64(r);
        e->type = io_read8(r);
        uint32_t len = io_read32(r);
        if (r->bad || e->type < RAFT_NORMAL || e->type > RAFT_CONFIG || e->term == 0 ||
            e->index != a->prev_index + 1 + i) {
            return RAFT_EMALFORMED;
        }
        if (len > entry_bytes_max) {
            return RAFT_ETOOBIG;
        }
        const uint8_t *p = io_read_bytes(r, len);
        if (p == NULL) {
            return RAFT_EMALFORMED;
        }
        if (len > 0) {
            e->buf = raft_buf_copy(p, len);
            if (e->buf == NULL) {
                return RAFT_ENOMEM;
            }
        }
        a->n_entries = i + 1;
    }
    return 0;
}

int io_msg_decode(const void *buf, size_t len, uint64_t entry_bytes_max, struct raft_message *m)
{
    struct io_reader r = {buf, len, 0};
    int rc = 0;

    memset(m, 0, sizeof *m);
    if (io_read8(&r) != IO_MSG_VERSION) {
        return RAFT_EMALFORMED;
    }
    m->type = io_read8(&r);
    m->from = io_read64(&r);
    m->to = io_read64(&r);
    m->term = io_read64(&r);
    if (r.bad) {
        return RAFT_EMALFORMED;
    }
    switch (m->type) {
    case RAFT_MSG_REQUEST_VOTE:
        m->request_vote.last_log_index = io_read64(&r);
        m->request_vote.last_log_term = io_read64(&r);
        rc = read_bool(&r, &m->request_vote.pre_vote);
        if (rc == 0) {
            rc = read_bool(&r, &m->request_vote.transfer);
        }
        break;
    case RAFT_MSG_REQUEST_VOTE_RESULT:
        rc = read_bool(&r, &m->request_vote_result.granted);
        if (rc == 0) {
            rc = read_bool(&r, &m->request_vote_result.pre_vote);
        }
        break;
    case RAFT_MSG_APPEND_ENTRIES:
        m->append_entries.prev_index = io_read64(&r);
        m->append_entries.prev_term = io_read64(&r);
        m->append_entries.commit = io_read64(&r);
        rc = r.bad ? RAFT_EMALFORMED : decode_entries(&r, entry_bytes_max, &m->append_entries);
        break;
    case RAFT_MSG_APPEND_ENTRIES_RESULT:
        rc = read_bool(&r, &m->append_entries_result.success);
        m->append_entries_result.match_index = io_read64(&r);
        m->append_entries_result.reject_index = io_read64(&r);
        m->append_entries_result.hint_index = io_read64(&r);
        m->append_entries_result.hint_term = io_read64(&r);
        break;
    case RAFT_MSG_HEARTBEAT:
        m->heartbeat.commit = io_read64(&r);
        m->heartbeat.ctx = io_read64(&r);
        break;
    case RAFT_MSG_HEARTBEAT_RESULT:
        m->heartbeat_result.ctx = io_read64(&r);
        break;
    case RAFT_MSG_INSTALL_SNAPSHOT: {
        m->install_snapshot.last_index = io_read64(&r);
        m->install_snapshot.last_term = io_read64(&r);
        uint32_t cfg_len = io_read32(&r);
        const uint8_t *cfg = r.bad ? NULL : io_read_bytes(&r, cfg_len);
        rc = cfg == NULL ? RAFT_EMALFORMED
                         : raft_config_decode(cfg, cfg_len, &m->install_snapshot.config);
        break;
    }
    case RAFT_MSG_TIMEOUT_NOW:
        m->timeout_now.last_log_index = io_read64(&r);
        break;
    case RAFT_MSG_READ_INDEX:
        m->read_index.ctx = io_read64(&r);
        break;
    case RAFT_MSG_READ_INDEX_RESULT:
        m->read_index_result.ctx = io_read64(&r);
        m->read_index_result.index = io_read64(&r);
        m->read_index_result.status = (int)io_read32(&r);
        break;
    default:
        return RAFT_EMALFORMED;
    }
    if (rc == 0 && (r.bad || r.left != 0)) {
        rc = RAFT_EMALFORMED;
    }
    if (rc != 0) {
        io_msg_release(m);
    }
    return rc;
}
