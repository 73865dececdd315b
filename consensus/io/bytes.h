/*
 * Little-endian byte helpers for everything consensus/io/ puts on disk or on the wire (log
 * records, slot files, messages), and a bounds-checked reader for decoding untrusted bytes.
 */
#ifndef WALRAFT_IO_BYTES_H
#define WALRAFT_IO_BYTES_H

#include <stddef.h>
#include <stdint.h>

static inline void io_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}
static inline uint64_t io_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}
static inline void io_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}
static inline uint32_t io_get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        v |= (uint32_t)p[i] << (8 * i);
    }
    return v;
}

/* A bounds-checked reader over a byte buffer: every get fails once the input runs out. */
struct io_reader {
    const uint8_t *p;
    size_t left;
    int bad; /* set on the first read past the end */
};

/* Returns a pointer to the next `n` bytes and skips them, or NULL (and bad) when short. */
static inline const uint8_t *io_read_bytes(struct io_reader *r, size_t n)
{
    if (r->left < n) {
        r->bad = 1;
        r->left = 0;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

static inline uint64_t io_read64(struct io_reader *r)
{
    const uint8_t *p = io_read_bytes(r, 8);
    return p != NULL ? io_get64(p) : 0;
}
static inline uint32_t io_read32(struct io_reader *r)
{
    const uint8_t *p = io_read_bytes(r, 4);
    return p != NULL ? io_get32(p) : 0;
}
static inline uint8_t io_read8(struct io_reader *r)
{
    const uint8_t *p = io_read_bytes(r, 1);
    return p != NULL ? p[0] : 0;
}

#endif
