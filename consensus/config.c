/*
 * Configurations: validation and the codec of RAFT_CONFIG entries. The byte layout is in raft.h.
 * Decoding treats its input as hostile: every length is bounds-checked and any defect is
 * RAFT_EMALFORMED, never an assertion.
 */
#include <assert.h>
#include <string.h>

#include "consensus/raft.h"

#define CONFIG_VERSION 1

static bool string_ok(const char *s, size_t cap)
{
    return memchr(s, '\0', cap) != NULL;
}

int raft_config_check(const struct raft_config *c)
{
    assert(c != NULL);
    if (c->n == 0 || c->n > RAFT_SERVERS_MAX) {
        return RAFT_ECONFIG;
    }
    for (uint32_t i = 0; i < c->n; i++) {
        const struct raft_server *s = &c->servers[i];
        if (s->id == 0 || s->role > RAFT_LEARNER) {
            return RAFT_ECONFIG;
        }
        if (!string_ok(s->name, sizeof s->name) || !string_ok(s->addr, sizeof s->addr)) {
            return RAFT_ECONFIG;
        }
        for (uint32_t j = 0; j < i; j++) {
            if (c->servers[j].id == s->id) {
                return RAFT_ECONFIG;
            }
        }
    }
    if (raft_config_voters(c) == 0) {
        return RAFT_ECONFIG;
    }
    return 0;
}

const struct raft_server *raft_config_get(const struct raft_config *c, uint64_t id)
{
    for (uint32_t i = 0; i < c->n && i < RAFT_SERVERS_MAX; i++) {
        if (c->servers[i].id == id) {
            return &c->servers[i];
        }
    }
    return NULL;
}

unsigned raft_config_voters(const struct raft_config *c)
{
    unsigned n = 0;
    for (uint32_t i = 0; i < c->n && i < RAFT_SERVERS_MAX; i++) {
        n += c->servers[i].role == RAFT_VOTER;
    }
    return n;
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (unsigned i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < 8; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

int raft_config_encode(const struct raft_config *c, uint8_t *buf, size_t *len)
{
    int rc = raft_config_check(c);
    if (rc != 0) {
        return rc;
    }
    size_t off = 0;
    buf[off++] = CONFIG_VERSION;
    buf[off++] = (uint8_t)c->n;
    for (uint32_t i = 0; i < c->n; i++) {
        const struct raft_server *s = &c->servers[i];
        size_t nl = strlen(s->name);
        size_t al = strlen(s->addr);
        put_u64(buf + off, s->id);
        off += 8;
        buf[off++] = s->role;
        buf[off++] = (uint8_t)nl;
        memcpy(buf + off, s->name, nl);
        off += nl;
        buf[off++] = (uint8_t)al;
        memcpy(buf + off, s->addr, al);
        off += al;
    }
    assert(off <= RAFT_CONFIG_ENCODED_MAX);
    *len = off;
    return 0;
}

int raft_config_decode(const void *buf, size_t len, struct raft_config *c)
{
    const uint8_t *p = buf;
    size_t off = 0;
    memset(c, 0, sizeof *c);
    if (p == NULL || len < 2 || p[0] != CONFIG_VERSION) {
        return RAFT_EMALFORMED;
    }
    uint32_t n = p[1];
    off = 2;
    if (n == 0 || n > RAFT_SERVERS_MAX) {
        return RAFT_EMALFORMED;
    }
    for (uint32_t i = 0; i < n; i++) {
        struct raft_server *s = &c->servers[i];
        if (len - off < 8 + 1 + 1) {
            return RAFT_EMALFORMED;
        }
        s->id = get_u64(p + off);
        off += 8;
        s->role = p[off++];
        size_t nl = p[off++];
        if (nl >= RAFT_NAME_MAX || len - off < nl + 1) {
            return RAFT_EMALFORMED;
        }
        memcpy(s->name, p + off, nl);
        off += nl;
        size_t al = p[off++];
        if (al >= RAFT_ADDR_MAX || len - off < al) {
            return RAFT_EMALFORMED;
        }
        memcpy(s->addr, p + off, al);
        off += al;
        if (memchr(s->name, '\0', nl) != NULL || memchr(s->addr, '\0', al) != NULL) {
            return RAFT_EMALFORMED;
        }
    }
    if (off != len) {
        return RAFT_EMALFORMED;
    }
    c->n = n;
    if (raft_config_check(c) != 0) {
        memset(c, 0, sizeof *c);
        return RAFT_EMALFORMED;
    }
    return 0;
}
