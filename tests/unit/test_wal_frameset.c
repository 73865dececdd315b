/* The frame set codec: round trips, lz4 only where it helps, and rejection of truncated,
 * oversized and corrupt input (bit flips everywhere, lying headers with valid digests). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <xxhash.h>

#include "wal/frameset.h"

#define MAX_BODY (64u << 20)

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

/* n pages of page_size bytes, page numbers 3, 8, 13, ...; random or repetitive content. */
static struct wal_page *make_pages(uint32_t page_size, uint32_t n, int random, uint8_t **store)
{
    *store = malloc((size_t)page_size * n);
    struct wal_page *p = calloc(n, sizeof *p);
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *d = *store + (size_t)i * page_size;
        for (uint32_t k = 0; k < page_size; k++) {
            d[k] = random ? (uint8_t)rnd() : (uint8_t)((k / 64) + i);
        }
        p[i].pgno = 3 + 5 * i;
        p[i].data = d;
    }
    return p;
}

static void roundtrip(uint32_t page_size, uint32_t n, int random, int expect_lz4)
{
    uint8_t *store;
    struct wal_page *pages = make_pages(page_size, n, random, &store);
    struct wal_frameset in = {page_size, 1000 + n, n, pages, NULL};
    uint8_t *enc;
    size_t len;
    assert_int_equal(wal_frameset_encode(&in, &enc, &len), WAL_OK);
    size_t raw = (size_t)n * (page_size + 4);
    assert_int_equal(enc[6] & WAL_FRAMESET_FLAG_LZ4, expect_lz4 ? 1 : 0);
    if (expect_lz4) {
        assert_true(len < raw / 2);
    } else {
        assert_int_equal(len, WAL_FRAMESET_HDR_SIZE + raw);
    }
    struct wal_frameset out;
    assert_int_equal(wal_frameset_decode(enc, len, MAX_BODY, &out), WAL_OK);
    assert_int_equal(out.page_size, page_size);
    assert_int_equal(out.commit_pages, 1000 + n);
    assert_int_equal(out.n_pages, n);
    for (uint32_t i = 0; i < n; i++) {
        assert_int_equal(out.pages[i].pgno, pages[i].pgno);
        assert_memory_equal(out.pages[i].data, pages[i].data, page_size);
    }
    wal_frameset_free(&out);
    assert_null(out.buf);
    /* A limit one byte below the body is refused before anything is allocated. */
    assert_int_equal(wal_frameset_decode(enc, len, raw - 1, &out), WAL_ETOOBIG);
    assert_int_equal(wal_frameset_decode(enc, len, raw, &out), WAL_OK);
    wal_frameset_free(&out);
    free(enc);
    free(pages);
    free(store);
}

static void test_wal_frameset_roundtrip(void **state)
{
    (void)state;
    roundtrip(512, 1, 0, 1);
    roundtrip(512, 1, 1, 0);
    roundtrip(4096, 37, 0, 1);
    roundtrip(4096, 37, 1, 0);
    roundtrip(65536, 5, 0, 1);
    roundtrip(65536, 3, 1, 0);
}

static void test_wal_frameset_encode_rejects_bad_input(void **state)
{
    (void)state;
    uint8_t *store;
    struct wal_page *pages = make_pages(1024, 4, 0, &store);
    uint8_t *enc;
    size_t len;
    struct wal_frameset fs = {1024, 10, 4, pages, NULL};
    fs.page_size = 1000;
    assert_int_equal(wal_frameset_encode(&fs, &enc, &len), WAL_EINVAL);
    fs.page_size = 1024;
    fs.commit_pages = 0;
    assert_int_equal(wal_frameset_encode(&fs, &enc, &len), WAL_EINVAL);
    fs.commit_pages = 10;
    fs.n_pages = 0;
    assert_int_equal(wal_frameset_encode(&fs, &enc, &len), WAL_EINVAL);
    fs.n_pages = 4;
    pages[2].pgno = pages[0].pgno; /* repeated page */
    assert_int_equal(wal_frameset_encode(&fs, &enc, &len), WAL_EINVAL);
    pages[2].pgno = 0;
    assert_int_equal(wal_frameset_encode(&fs, &enc, &len), WAL_EINVAL);
    assert_null(enc);
    free(pages);
    free(store);
}

/* Rewrites the digest after editing a header, so the edit reaches the validation behind it. */
static void reseal(uint8_t *enc, size_t len)
{
    uint64_t h = XXH64(enc + WAL_FRAMESET_HDR_SIZE, len - WAL_FRAMESET_HDR_SIZE, XXH64(enc, 32, 0));
    for (int i = 0; i < 8; i++) {
        enc[32 + i] = (uint8_t)(h >> (8 * i));
    }
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void test_wal_frameset_decode_rejects_corrupt(void **state)
{
    (void)state;
    for (int random = 0; random <= 1; random++) {
        uint8_t *store;
        struct wal_page *pages = make_pages(512, 6, random, &store);
        struct wal_frameset in = {512, 9, 6, pages, NULL};
        uint8_t *enc;
        size_t len;
        assert_int_equal(wal_frameset_encode(&in, &enc, &len), WAL_OK);
        struct wal_frameset out;
        /* Every truncation, in a buffer of exactly that size (ASan sees any over-read). */
        for (size_t n = 0; n < len; n++) {
            uint8_t *t = malloc(n ? n : 1);
            memcpy(t, enc, n);
            int rc = wal_frameset_decode(t, n, MAX_BODY, &out);
            assert_int_not_equal(rc, WAL_OK);
            assert_null(out.buf);
            free(t);
        }
        /* Every single-bit flip. */
        uint8_t *w = malloc(len);
        for (size_t off = 0; off < len; off++) {
            for (int bit = 0; bit < 8; bit++) {
                memcpy(w, enc, len);
                w[off] ^= (uint8_t)(1u << bit);
                int rc = wal_frameset_decode(w, len, MAX_BODY, &out);
                assert_int_not_equal(rc, WAL_OK);
                assert_null(out.buf);
            }
        }
        /* One byte too many. */
        uint8_t *longer = calloc(1, len + 1);
        memcpy(longer, enc, len);
        assert_int_equal(wal_frameset_decode(longer, len + 1, MAX_BODY, &out), WAL_ECORRUPT);
        free(longer);

        /* Lying headers with a valid digest. */
        struct {
            size_t at;
            uint32_t value;
            int rc;
        } lies[] = {
            {4, 2, WAL_EVERSION},
            {8, 0, WAL_EPAGESIZE},
            {8, 513, WAL_EPAGESIZE},
            {8, 1u << 17, WAL_EPAGESIZE},
            {8, 1024, WAL_ECORRUPT},         /* body length no longer matches */
            {12, 0, WAL_ECORRUPT},           /* commit size 0 */
            {16, 0, WAL_ECORRUPT},           /* no pages */
            {16, 7, WAL_ECORRUPT},           /* body length no longer matches */
            {16, 0xffffffffu, WAL_ETOOBIG},  /* absurd page count */
            {16, 200000, WAL_ETOOBIG},       /* a 103 MB body, over the 50 MB limit */
            {20, 0xffffffffu, WAL_ECORRUPT}, /* absurd uncompressed length */
            {24, 0xffffffffu, WAL_ECORRUPT}, /* absurd stored length */
            {24, 1, WAL_ECORRUPT},           /* stored length != input */
            {28, 1, WAL_ECORRUPT},           /* reserved */
        };
        for (size_t i = 0; i < sizeof lies / sizeof lies[0]; i++) {
            memcpy(w, enc, len);
            if (lies[i].at == 4) {
                w[4] = (uint8_t)lies[i].value;
            } else {
                put32(w + lies[i].at, lies[i].value);
            }
            reseal(w, len);
            int rc = wal_frameset_decode(w, len, 50u << 20, &out);
            assert_int_equal(rc, lies[i].rc);
        }
        /* A flag bit nobody defined. */
        memcpy(w, enc, len);
        w[7] = 0x80;
        reseal(w, len);
        assert_int_equal(wal_frameset_decode(w, len, MAX_BODY, &out), WAL_ECORRUPT);
        /* Duplicate and zero page numbers inside a well-sealed body. */
        if (!(enc[6] & WAL_FRAMESET_FLAG_LZ4)) {
            memcpy(w, enc, len);
            memcpy(w + WAL_FRAMESET_HDR_SIZE + 4, w + WAL_FRAMESET_HDR_SIZE, 4);
            reseal(w, len);
            assert_int_equal(wal_frameset_decode(w, len, MAX_BODY, &out), WAL_EPGNO);
            memset(w + WAL_FRAMESET_HDR_SIZE + 8, 0, 4);
            reseal(w, len);
            assert_int_equal(wal_frameset_decode(w, len, MAX_BODY, &out), WAL_EPGNO);
        } else {
            /* Corrupt lz4 data with a valid digest: decompression must fail cleanly. */
            for (size_t off = WAL_FRAMESET_HDR_SIZE; off < len; off++) {
                memcpy(w, enc, len);
                w[off] ^= 0xff;
                reseal(w, len);
                int rc = wal_frameset_decode(w, len, MAX_BODY, &out);
                if (rc == WAL_OK) {
                    /* lz4 may decode a literal byte change to a different, valid body. */
                    wal_frameset_free(&out);
                } else {
                    assert_true(rc == WAL_ECORRUPT || rc == WAL_EPGNO);
                }
            }
        }
        assert_int_equal(wal_frameset_decode(NULL, 100, MAX_BODY, &out), WAL_ETRUNCATED);
        free(w);
        free(enc);
        free(pages);
        free(store);
    }
}

/* Random garbage of many sizes, with and without a plausible header: only errors. */
static void test_wal_frameset_decode_random_garbage(void **state)
{
    (void)state;
    struct wal_frameset out;
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = rnd() % 600;
        uint8_t *b = malloc(n ? n : 1);
        for (size_t i = 0; i < n; i++) {
            b[i] = (uint8_t)rnd();
        }
        if (n >= WAL_FRAMESET_HDR_SIZE && (iter & 1)) {
            put32(b, WAL_FRAMESET_MAGIC);
            b[4] = 1;
            b[5] = 0;
            b[6] = (uint8_t)(iter & 2 ? 1 : 0);
            b[7] = 0;
            put32(b + 8, 512);
            put32(b + 28, 0);
            if (iter & 4) {
                put32(b + 16, 1);
                put32(b + 20, 516);
                put32(b + 24, (uint32_t)(n - WAL_FRAMESET_HDR_SIZE));
            }
            reseal(b, n);
        }
        int rc = wal_frameset_decode(b, n, MAX_BODY, &out);
        if (rc == WAL_OK) {
            wal_frameset_free(&out);
        }
        free(b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wal_frameset_roundtrip),
        cmocka_unit_test(test_wal_frameset_encode_rejects_bad_input),
        cmocka_unit_test(test_wal_frameset_decode_rejects_corrupt),
        cmocka_unit_test(test_wal_frameset_decode_random_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
