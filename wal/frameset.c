/* The frame set codec (layout in wal/frameset.h). Trust nothing in the input: every length is
 * checked against the others, against the input size and against the caller's limit before any
 * allocation or copy, and the xxh64 is checked before the body is decompressed. */
#include <assert.h>
#include <lz4.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "wal/bytes.h"
#include "wal/frameset.h"

/* Body length for n pages, or 0 when it overflows what lz4 can handle. */
static size_t body_len(uint32_t page_size, uint32_t n)
{
    uint64_t len = (uint64_t)n * ((uint64_t)page_size + 4);
    if (len > (uint64_t)LZ4_MAX_INPUT_SIZE) {
        return 0;
    }
    return (size_t)len;
}

/* Non-zero when the n page numbers are all non-zero and distinct. Sorting a copy keeps it
 * O(n log n) for any n. */
static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a;
    uint32_t y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static int pgnos_valid(uint32_t *sorted, uint32_t n)
{
    qsort(sorted, n, sizeof *sorted, cmp_u32);
    for (uint32_t i = 0; i < n; i++) {
        if (sorted[i] == 0 || (i > 0 && sorted[i] == sorted[i - 1])) {
            return 0;
        }
    }
    return 1;
}

/* xxh64 over header bytes 0..31 and the stored body, chained through the seed so that no
 * streaming state (and no allocation) is needed. */
static uint64_t digest(const uint8_t *hdr, const uint8_t *body, size_t body_stored)
{
    return XXH64(body, body_stored, XXH64(hdr, 32, 0));
}

int wal_frameset_encode(const struct wal_frameset *fs, uint8_t **out, size_t *out_len)
{
    assert(fs != NULL);
    assert(out != NULL && out_len != NULL);
    *out = NULL;
    *out_len = 0;
    if (!wal_page_size_valid(fs->page_size) || fs->n_pages == 0 || fs->commit_pages == 0 ||
        fs->pages == NULL) {
        return WAL_EINVAL;
    }
    size_t blen = body_len(fs->page_size, fs->n_pages);
    if (blen == 0) {
        return WAL_ETOOBIG;
    }
    int rc = WAL_OK;
    uint32_t *sorted = malloc((size_t)fs->n_pages * sizeof *sorted);
    uint8_t *body = malloc(blen);
    uint8_t *enc = NULL;
    if (sorted == NULL || body == NULL) {
        rc = WAL_ENOMEM;
        goto err_after_alloc;
    }
    for (uint32_t i = 0; i < fs->n_pages; i++) {
        if (fs->pages[i].data == NULL) {
            rc = WAL_EINVAL;
            goto err_after_alloc;
        }
        sorted[i] = fs->pages[i].pgno;
        wal_put_le32(body + (size_t)i * 4, fs->pages[i].pgno);
        memcpy(body + (size_t)fs->n_pages * 4 + (size_t)i * fs->page_size, fs->pages[i].data,
               fs->page_size);
    }
    if (!pgnos_valid(sorted, fs->n_pages)) {
        rc = WAL_EINVAL;
        goto err_after_alloc;
    }

    int bound = LZ4_compressBound((int)blen);
    size_t cap = WAL_FRAMESET_HDR_SIZE + ((size_t)bound > blen ? (size_t)bound : blen);
    enc = malloc(cap);
    if (enc == NULL || bound <= 0) {
        rc = enc == NULL ? WAL_ENOMEM : WAL_ETOOBIG;
        goto err_after_alloc;
    }
    int clen = LZ4_compress_default((const char *)body, (char *)enc + WAL_FRAMESET_HDR_SIZE,
                                    (int)blen, bound);
    uint16_t flags = 0;
    size_t stored = blen;
    if (clen > 0 && (size_t)clen < blen) {
        flags = WAL_FRAMESET_FLAG_LZ4;
        stored = (size_t)clen;
    } else {
        memcpy(enc + WAL_FRAMESET_HDR_SIZE, body, blen);
    }
    uint8_t *h = enc;
    wal_put_le32(h + 0, WAL_FRAMESET_MAGIC);
    h[4] = (uint8_t)WAL_FRAMESET_VERSION;
    h[5] = 0;
    h[6] = (uint8_t)flags;
    h[7] = 0;
    wal_put_le32(h + 8, fs->page_size);
    wal_put_le32(h + 12, fs->commit_pages);
    wal_put_le32(h + 16, fs->n_pages);
    wal_put_le32(h + 20, (uint32_t)blen);
    wal_put_le32(h + 24, (uint32_t)stored);
    wal_put_le32(h + 28, 0);
    wal_put_le64(h + 32, digest(h, enc + WAL_FRAMESET_HDR_SIZE, stored));
    free(sorted);
    free(body);
    *out = enc;
    *out_len = WAL_FRAMESET_HDR_SIZE + stored;
    return WAL_OK;

err_after_alloc:
    free(enc);
    free(body);
    free(sorted);
    return rc;
}

int wal_frameset_decode(const uint8_t *in, size_t len, size_t max_body_bytes,
                        struct wal_frameset *fs)
{
    assert(fs != NULL);
    memset(fs, 0, sizeof *fs);
    if (in == NULL || len < WAL_FRAMESET_HDR_SIZE) {
        return WAL_ETRUNCATED;
    }
    if (wal_get_le32(in) != WAL_FRAMESET_MAGIC) {
        return WAL_EMAGIC;
    }
    uint32_t version = (uint32_t)in[4] | (uint32_t)in[5] << 8;
    uint32_t flags = (uint32_t)in[6] | (uint32_t)in[7] << 8;
    uint32_t page_size = wal_get_le32(in + 8);
    uint32_t commit = wal_get_le32(in + 12);
    uint32_t n = wal_get_le32(in + 16);
    uint32_t blen = wal_get_le32(in + 20);
    uint32_t stored = wal_get_le32(in + 24);
    if (version != WAL_FRAMESET_VERSION) {
        return WAL_EVERSION;
    }
    if ((flags & ~WAL_FRAMESET_FLAG_LZ4) != 0 || wal_get_le32(in + 28) != 0 || commit == 0 ||
        n == 0) {
        return WAL_ECORRUPT;
    }
    if (!wal_page_size_valid(page_size)) {
        return WAL_EPAGESIZE;
    }
    size_t expect = body_len(page_size, n);
    if (expect == 0 || expect > max_body_bytes) {
        return WAL_ETOOBIG;
    }
    if (blen != expect) {
        return WAL_ECORRUPT;
    }
    if ((flags & WAL_FRAMESET_FLAG_LZ4) ? stored >= blen : stored != blen) {
        return WAL_ECORRUPT;
    }
    if (len - WAL_FRAMESET_HDR_SIZE < stored) {
        return WAL_ETRUNCATED;
    }
    if (len - WAL_FRAMESET_HDR_SIZE > stored) {
        return WAL_ECORRUPT;
    }
    const uint8_t *src = in + WAL_FRAMESET_HDR_SIZE;
    if (digest(in, src, stored) != wal_get_le64(in + 32)) {
        return WAL_ECHECKSUM;
    }

    /* One allocation: the page table, then the body. n <= blen / 516, so this is bounded by
     * about 1.02 * max_body_bytes. */
    size_t table = (size_t)n * sizeof(struct wal_page);
    uint8_t *buf = malloc(table + blen);
    if (buf == NULL) {
        return WAL_ENOMEM;
    }
    uint8_t *body = buf + table;
    if (flags & WAL_FRAMESET_FLAG_LZ4) {
        int got = LZ4_decompress_safe((const char *)src, (char *)body, (int)stored, (int)blen);
        if (got < 0 || (uint32_t)got != blen) {
            free(buf);
            return WAL_ECORRUPT;
        }
    } else {
        memcpy(body, src, blen);
    }
    struct wal_page *pages = (struct wal_page *)(void *)buf;
    uint32_t *sorted = malloc((size_t)n * sizeof *sorted);
    if (sorted == NULL) {
        free(buf);
        return WAL_ENOMEM;
    }
    for (uint32_t i = 0; i < n; i++) {
        sorted[i] = wal_get_le32(body + (size_t)i * 4);
        pages[i].pgno = sorted[i];
        pages[i].data = body + (size_t)n * 4 + (size_t)i * page_size;
    }
    int ok = pgnos_valid(sorted, n);
    free(sorted);
    if (!ok) {
        free(buf);
        return WAL_EPGNO;
    }
    fs->page_size = page_size;
    fs->commit_pages = commit;
    fs->n_pages = n;
    fs->pages = pages;
    fs->buf = buf;
    return WAL_OK;
}

void wal_frameset_free(struct wal_frameset *fs)
{
    if (fs == NULL) {
        return;
    }
    free(fs->buf);
    memset(fs, 0, sizeof *fs);
}
