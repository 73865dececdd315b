/* The wal-index (shm): header read and publish, checkpoint info, hash-block append, lookup,
 * cleanup above a rolled-back mxFrame, and the log restart. Layout: wal/wal.h. Every access to
 * shared memory goes through a volatile pointer: other processes change it under us, and the
 * only ordering we rely on is the explicit fence between the two header copies. */
#include <assert.h>
#include <stdatomic.h>
#include <string.h>

#include "wal/bytes.h"
#include "wal/wal.h"

#define HDR_WORDS 12u      /* one index header, in u32 words */
#define CKPT_OFFSET 96u    /* checkpoint info, bytes from the start of region 0 */
#define HASH_OFFSET 16384u /* the u16 hash table, bytes from the start of every region */

_Static_assert(WAL_INDEX_HDR_BYTES ==
                   2 * sizeof(struct wal_index_hdr) + sizeof(struct wal_ckpt_info),
               "index header bytes");
_Static_assert(WAL_INDEX_HDR_BYTES + WAL_INDEX_NPAGE_ONE * 4 == HASH_OFFSET, "block 0 map size");
_Static_assert(WAL_INDEX_NPAGE * 4 == HASH_OFFSET, "block map size");
_Static_assert(HASH_OFFSET + WAL_INDEX_NSLOT * 2 == WAL_INDEX_REGION_SIZE, "region size");

/* One hash block, located in its mapped region. */
struct block {
    volatile uint32_t *pgno; /* page map: pgno[j-1] for the block's j-th frame */
    volatile uint16_t *hash; /* WAL_INDEX_NSLOT slots */
    uint32_t zero;           /* frame number before the block's first frame */
    uint32_t n;              /* frames the block holds */
};

static int host_big_endian(void)
{
    return __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__;
}

static int map_region(const struct wal_shm *shm, uint32_t region, int extend,
                      volatile uint8_t **out)
{
    volatile void *p = NULL;
    if (shm->map(shm->ctx, region, extend, &p) != 0 || p == NULL) {
        return WAL_EMAP;
    }
    *out = (volatile uint8_t *)p;
    return WAL_OK;
}

static uint32_t block_of(uint32_t frame)
{
    assert(frame >= 1);
    return (uint32_t)(((uint64_t)frame + WAL_INDEX_NPAGE - WAL_INDEX_NPAGE_ONE - 1) /
                      WAL_INDEX_NPAGE);
}

static int block_get(const struct wal_shm *shm, uint32_t b, int extend, struct block *out)
{
    volatile uint8_t *base;
    int rc = map_region(shm, b, extend, &base);
    if (rc != WAL_OK) {
        return rc;
    }
    out->hash = (volatile uint16_t *)(base + HASH_OFFSET);
    if (b == 0) {
        out->pgno = (volatile uint32_t *)(base + WAL_INDEX_HDR_BYTES);
        out->zero = 0;
        out->n = WAL_INDEX_NPAGE_ONE;
    } else {
        out->pgno = (volatile uint32_t *)base;
        out->zero = WAL_INDEX_NPAGE_ONE + (b - 1) * WAL_INDEX_NPAGE;
        out->n = WAL_INDEX_NPAGE;
    }
    return WAL_OK;
}

static uint32_t hash_key(uint32_t pgno)
{
    return (pgno * WAL_INDEX_HASH_MUL) & (WAL_INDEX_NSLOT - 1);
}

uint32_t wal_index_page_size(const struct wal_index_hdr *h)
{
    return (uint32_t)(h->page_size & 0xfe00u) + ((uint32_t)(h->page_size & 1u) << 16);
}

static uint16_t encode_page_size(uint32_t page_size)
{
    return (uint16_t)((page_size & 0xff00u) | (page_size >> 16));
}

uint32_t wal_index_salt(const struct wal_index_hdr *h, int i)
{
    assert(i == 0 || i == 1);
    uint8_t b[4];
    memcpy(b, &h->salt[i], 4);
    return wal_get_be32(b);
}

static void set_salt(struct wal_index_hdr *h, int i, uint32_t v)
{
    uint8_t b[4];
    wal_put_be32(b, v);
    memcpy(&h->salt[i], b, 4);
}

static void hdr_checksum(const struct wal_index_hdr *h, uint32_t out[2])
{
    uint8_t b[sizeof *h];
    memcpy(b, h, sizeof *h);
    out[0] = 0;
    out[1] = 0;
    wal_cksum(host_big_endian(), b, offsetof(struct wal_index_hdr, cksum), out);
}

static void load_words(volatile const uint32_t *src, uint32_t *dst, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        dst[i] = src[i];
    }
}

static void store_words(volatile uint32_t *dst, const uint32_t *src, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        dst[i] = src[i];
    }
}

int wal_index_hdr_read(const struct wal_shm *shm, struct wal_index_hdr *out)
{
    volatile uint8_t *base;
    int rc = map_region(shm, 0, 0, &base);
    if (rc != WAL_OK) {
        return rc;
    }
    volatile const uint32_t *w = (volatile const uint32_t *)base;
    uint32_t h1[HDR_WORDS];
    uint32_t h2[HDR_WORDS];
    load_words(w, h1, HDR_WORDS);
    atomic_thread_fence(memory_order_seq_cst);
    load_words(w + HDR_WORDS, h2, HDR_WORDS);
    if (memcmp(h1, h2, sizeof h1) != 0) {
        return WAL_EINDEX_HDR;
    }
    struct wal_index_hdr h;
    memcpy(&h, h1, sizeof h);
    uint32_t ck[2];
    hdr_checksum(&h, ck);
    if (h.is_init == 0 || h.version != WAL_INDEX_VERSION || ck[0] != h.cksum[0] ||
        ck[1] != h.cksum[1]) {
        return WAL_EINDEX_HDR;
    }
    *out = h;
    return WAL_OK;
}

int wal_index_hdr_publish(const struct wal_shm *shm, struct wal_index_hdr *h)
{
    volatile uint8_t *base;
    int rc = map_region(shm, 0, 1, &base);
    if (rc != WAL_OK) {
        return rc;
    }
    h->version = WAL_INDEX_VERSION;
    h->is_init = 1;
    h->change++;
    hdr_checksum(h, h->cksum);
    uint32_t words[HDR_WORDS];
    memcpy(words, h, sizeof words);
    volatile uint32_t *w = (volatile uint32_t *)base;
    /* Copy 2 first: a reader that sees the new copy 1 and an old copy 2 retries. */
    store_words(w + HDR_WORDS, words, HDR_WORDS);
    atomic_thread_fence(memory_order_seq_cst);
    store_words(w, words, HDR_WORDS);
    atomic_thread_fence(memory_order_seq_cst);
    return WAL_OK;
}

static volatile uint32_t *ckpt_words(volatile uint8_t *base)
{
    return (volatile uint32_t *)(base + CKPT_OFFSET);
}

int wal_ckpt_info_read(const struct wal_shm *shm, struct wal_ckpt_info *out)
{
    volatile uint8_t *base;
    int rc = map_region(shm, 0, 0, &base);
    if (rc != WAL_OK) {
        return rc;
    }
    uint32_t words[sizeof *out / 4];
    load_words(ckpt_words(base), words, (uint32_t)(sizeof words / 4));
    memcpy(out, words, sizeof *out);
    return WAL_OK;
}

int wal_ckpt_backfill(const struct wal_shm *shm, uint32_t *out)
{
    volatile uint8_t *base;
    int rc = map_region(shm, 0, 0, &base);
    if (rc != WAL_OK) {
        return rc;
    }
    *out = ckpt_words(base)[0];
    return WAL_OK;
}

int wal_ckpt_read_mark(const struct wal_shm *shm, uint32_t i, uint32_t *out)
{
    if (i >= WAL_NREADER) {
        return WAL_EINVAL;
    }
    volatile uint8_t *base;
    int rc = map_region(shm, 0, 0, &base);
    if (rc != WAL_OK) {
        return rc;
    }
    *out = ckpt_words(base)[1 + i];
    return WAL_OK;
}

int wal_index_cleanup(const struct wal_shm *shm, uint32_t mx_frame)
{
    if (mx_frame == 0) {
        /* Block 0 is zeroed when frame 1 is written again. */
        return WAL_OK;
    }
    struct block b;
    int rc = block_get(shm, block_of(mx_frame), 0, &b);
    if (rc != WAL_OK) {
        return rc;
    }
    uint32_t limit = mx_frame - b.zero;
    assert(limit >= 1);
    assert(limit <= b.n);
    for (uint32_t i = 0; i < WAL_INDEX_NSLOT; i++) {
        if (b.hash[i] > limit) {
            b.hash[i] = 0;
        }
    }
    for (uint32_t j = limit; j < b.n; j++) {
        b.pgno[j] = 0;
    }
    return WAL_OK;
}

int wal_index_append(const struct wal_shm *shm, uint32_t frame, uint32_t pgno)
{
    if (frame == 0 || pgno == 0) {
        return WAL_EINVAL;
    }
    struct block b;
    int rc = block_get(shm, block_of(frame), 1, &b);
    if (rc != WAL_OK) {
        return rc;
    }
    uint32_t idx = frame - b.zero;
    assert(idx >= 1);
    assert(idx <= b.n);
    if (idx == 1) {
        for (uint32_t j = 0; j < b.n; j++) {
            b.pgno[j] = 0;
        }
        for (uint32_t i = 0; i < WAL_INDEX_NSLOT; i++) {
            b.hash[i] = 0;
        }
    }
    if (b.pgno[idx - 1] != 0) {
        /* Left behind by a writer that rolled back: clear everything from this frame on. */
        rc = wal_index_cleanup(shm, frame - 1);
        if (rc != WAL_OK) {
            return rc;
        }
    }
    uint32_t key = hash_key(pgno);
    uint32_t collide = idx;
    while (b.hash[key] != 0) {
        if (collide-- == 0) {
            return WAL_EINDEX_CORRUPT;
        }
        key = (key + 1) & (WAL_INDEX_NSLOT - 1);
    }
    b.pgno[idx - 1] = pgno;
    b.hash[key] = (uint16_t)idx;
    return WAL_OK;
}

int wal_index_lookup(const struct wal_shm *shm, uint32_t pgno, uint32_t min_frame,
                     uint32_t mx_frame, uint32_t *frame_out)
{
    *frame_out = 0;
    if (pgno == 0) {
        return WAL_EINVAL;
    }
    if (min_frame == 0) {
        min_frame = 1;
    }
    if (mx_frame < min_frame) {
        return WAL_OK;
    }
    uint32_t first = block_of(min_frame);
    for (uint32_t bi = block_of(mx_frame) + 1; bi-- > first;) {
        struct block b;
        int rc = block_get(shm, bi, 0, &b);
        if (rc != WAL_OK) {
            return rc;
        }
        uint32_t found = 0;
        uint32_t collide = WAL_INDEX_NSLOT;
        uint32_t key = hash_key(pgno);
        uint16_t slot;
        while ((slot = b.hash[key]) != 0) {
            uint32_t frame = b.zero + slot;
            if (slot <= b.n && frame <= mx_frame && frame >= min_frame &&
                b.pgno[slot - 1] == pgno && frame > found) {
                found = frame;
            }
            if (collide-- == 0) {
                return WAL_EINDEX_CORRUPT;
            }
            key = (key + 1) & (WAL_INDEX_NSLOT - 1);
        }
        if (found != 0) {
            *frame_out = found;
            return WAL_OK;
        }
    }
    return WAL_OK;
}

int wal_index_restart(const struct wal_shm *shm, struct wal_index_hdr *h, uint32_t salt2)
{
    volatile uint8_t *base;
    int rc = map_region(shm, 0, 0, &base);
    if (rc != WAL_OK) {
        return rc;
    }
    h->mx_frame = 0;
    set_salt(h, 0, wal_index_salt(h, 0) + 1);
    set_salt(h, 1, salt2);
    rc = wal_index_hdr_publish(shm, h);
    if (rc != WAL_OK) {
        return rc;
    }
    volatile uint32_t *ck = ckpt_words(base);
    ck[0] = 0; /* nBackfill */
    ck[8] = 0; /* nBackfillAttempted */
    ck[1] = 0; /* read mark 0 is always 0 */
    ck[2] = 0;
    for (uint32_t i = 2; i < WAL_NREADER; i++) {
        ck[1 + i] = WAL_READMARK_UNUSED;
    }
    atomic_thread_fence(memory_order_seq_cst);
    return WAL_OK;
}

void wal_index_hdr_set_salts(struct wal_index_hdr *h, uint32_t salt1, uint32_t salt2)
{
    set_salt(h, 0, salt1);
    set_salt(h, 1, salt2);
}

uint16_t wal_index_encode_page_size(uint32_t page_size)
{
    assert(wal_page_size_valid(page_size));
    return encode_page_size(page_size);
}
