/*
 * Reference-counted payload buffers and the error table. A buffer's bytes are immutable once it
 * is shared; the count is atomic so the runtime may drop references on its disk and apply threads.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "consensus/raft.h"

const char *raft_strerror(int rc)
{
    switch (rc) {
    case 0:
        return "success";
#define RAFT_ERROR_CASE(name, value, msg)                                                        \
    case value:                                                                                  \
        return msg;
        RAFT_ERRORS(RAFT_ERROR_CASE)
#undef RAFT_ERROR_CASE
    default:
        return "unknown error";
    }
}

struct raft_buf *raft_buf_wrap(void *base, size_t len,
                               void (*release)(void *base, size_t len, void *arg), void *arg)
{
    struct raft_buf *b = malloc(sizeof *b);
    if (b == NULL) {
        return NULL;
    }
    atomic_init(&b->refs, 1u);
    b->base = base;
    b->len = len;
    b->release = release;
    b->arg = arg;
    return b;
}

struct raft_buf *raft_buf_new(void *base, size_t len)
{
    return raft_buf_wrap(base, len, NULL, NULL);
}

struct raft_buf *raft_buf_copy(const void *src, size_t len)
{
    void *base = malloc(len > 0 ? len : 1);
    if (base == NULL) {
        return NULL;
    }
    if (len > 0) {
        memcpy(base, src, len);
    }
    struct raft_buf *b = raft_buf_new(base, len);
    if (b == NULL) {
        free(base);
    }
    return b;
}

struct raft_buf *raft_buf_ref(struct raft_buf *b)
{
    if (b != NULL) {
        unsigned prev = atomic_fetch_add(&b->refs, 1u);
        assert(prev > 0);
        (void)prev;
    }
    return b;
}

void raft_buf_unref(struct raft_buf *b)
{
    if (b == NULL) {
        return;
    }
    unsigned prev = atomic_fetch_sub(&b->refs, 1u);
    assert(prev > 0);
    if (prev != 1) {
        return;
    }
    if (b->release != NULL) {
        b->release(b->base, b->len, b->arg);
    } else {
        free(b->base);
    }
    free(b);
}
