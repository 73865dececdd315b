/*
 * The in-memory log and the configuration history.
 *
 * The log holds entries snap_index+1 .. snap_index+n contiguously; entries at or below snap_index
 * were compacted away (their effect lives in the state machine's snapshot) and only the term of
 * snap_index itself is remembered, for the AppendEntries consistency check (From §3.5: "the
 * leader includes the index and term of the entry in its log that immediately precedes the new
 * entries"). Each held entry owns one reference to its payload buffer.
 *
 * The configuration history remembers every configuration still reachable by truncation: From
 * §4.1: "a server always uses the latest configuration in its log, regardless of whether the entry
 * is committed", so removing an uncommitted config entry must restore the previous one.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "consensus/internal.h"

int grow(void **arr, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap) {
        return 0;
    }
    size_t ncap = *cap == 0 ? 8 : *cap;
    while (ncap < need) {
        ncap *= 2;
    }
    void *p = realloc(*arr, ncap * size);
    if (p == NULL) {
        return RAFT_ENOMEM;
    }
    *arr = p;
    *cap = ncap;
    return 0;
}

uint64_t log_last_index(const struct log *l)
{
    return l->snap_index + l->n;
}

uint64_t log_last_term(const struct log *l)
{
    return l->n > 0 ? l->e[l->n - 1].term : l->snap_term;
}

uint64_t log_term(const struct log *l, uint64_t index)
{
    if (index == l->snap_index) {
        return l->snap_term;
    }
    if (index < l->snap_index || index > log_last_index(l)) {
        return 0;
    }
    return l->e[index - l->snap_index - 1].term;
}

const struct raft_entry *log_get(const struct log *l, uint64_t index)
{
    if (index <= l->snap_index || index > log_last_index(l)) {
        return NULL;
    }
    return &l->e[index - l->snap_index - 1];
}

int log_append(struct log *l, const struct raft_entry *e)
{
    assert(e->index == log_last_index(l) + 1);
    assert(e->term >= log_last_term(l));
    if (grow((void **)&l->e, &l->cap, l->n + 1, sizeof *l->e) != 0) {
        return RAFT_ENOMEM;
    }
    l->e[l->n] = *e;
    raft_buf_ref(e->buf);
    l->bytes += e->buf != NULL ? e->buf->len : 0;
    l->n++;
    return 0;
}

void log_truncate(struct log *l, uint64_t from)
{
    assert(from > l->snap_index);
    while (log_last_index(l) >= from) {
        struct raft_entry *e = &l->e[l->n - 1];
        l->bytes -= e->buf != NULL ? e->buf->len : 0;
        raft_buf_unref(e->buf);
        l->n--;
    }
}

void log_compact(struct log *l, uint64_t to)
{
    if (to <= l->snap_index) {
        return;
    }
    assert(to <= log_last_index(l));
    size_t k = (size_t)(to - l->snap_index);
    uint64_t term = log_term(l, to);
    for (size_t i = 0; i < k; i++) {
        l->bytes -= l->e[i].buf != NULL ? l->e[i].buf->len : 0;
        raft_buf_unref(l->e[i].buf);
    }
    memmove(l->e, l->e + k, (l->n - k) * sizeof *l->e);
    l->n -= k;
    l->snap_index = to;
    l->snap_term = term;
}

void log_reset(struct log *l, uint64_t index, uint64_t term)
{
    for (size_t i = 0; i < l->n; i++) {
        raft_buf_unref(l->e[i].buf);
    }
    l->n = 0;
    l->bytes = 0;
    l->snap_index = index;
    l->snap_term = term;
}

void log_free(struct log *l)
{
    log_reset(l, 0, 0);
    free(l->e);
    l->e = NULL;
    l->cap = 0;
}

uint64_t log_bytes_between(const struct log *l, uint64_t lo, uint64_t hi)
{
    uint64_t sum = 0;
    for (uint64_t i = lo + 1; i <= hi; i++) {
        const struct raft_entry *e = log_get(l, i);
        if (e != NULL && e->buf != NULL) {
            sum += e->buf->len;
        }
    }
    return sum;
}

int cfg_push(struct cfg_history *h, uint64_t index, const struct raft_config *c)
{
    assert(h->n == 0 || h->items[h->n - 1].index <= index);
    if (grow((void **)&h->items, &h->cap, h->n + 1, sizeof *h->items) != 0) {
        return RAFT_ENOMEM;
    }
    h->items[h->n].index = index;
    h->items[h->n].c = *c;
    h->n++;
    return 0;
}

void cfg_truncate(struct cfg_history *h, uint64_t from)
{
    /* item[0] is the base configuration and is never truncated away. */
    while (h->n > 1 && h->items[h->n - 1].index >= from) {
        h->n--;
    }
}

void cfg_compact(struct cfg_history *h, uint64_t to)
{
    size_t k = 0;
    while (k + 1 < h->n && h->items[k + 1].index <= to) {
        k++;
    }
    if (k > 0) {
        memmove(h->items, h->items + k, (h->n - k) * sizeof *h->items);
        h->n -= k;
    }
}

const struct raft_config *cfg_current(const struct cfg_history *h)
{
    assert(h->n > 0);
    return &h->items[h->n - 1].c;
}

uint64_t cfg_current_index(const struct cfg_history *h)
{
    return h->n > 0 ? h->items[h->n - 1].index : 0;
}

const struct cfg_item *cfg_at(const struct cfg_history *h, uint64_t index)
{
    const struct cfg_item *it = &h->items[0];
    for (size_t i = 1; i < h->n && h->items[i].index <= index; i++) {
        it = &h->items[i];
    }
    return it;
}
