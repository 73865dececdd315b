/* Byte-order helpers and small internals shared by the wal/ sources; not part of the API. */
#ifndef WALRAFT_WAL_BYTES_H
#define WALRAFT_WAL_BYTES_H

#include <stdint.h>

static inline uint32_t wal_get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static inline uint32_t wal_get_le32(const uint8_t *p)
{
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | (uint32_t)p[0];
}

static inline void wal_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline void wal_put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline uint64_t wal_get_le64(const uint8_t *p)
{
    return (uint64_t)wal_get_le32(p + 4) << 32 | wal_get_le32(p);
}

static inline void wal_put_le64(uint8_t *p, uint64_t v)
{
    wal_put_le32(p, (uint32_t)v);
    wal_put_le32(p + 4, (uint32_t)(v >> 32));
}

struct wal_index_hdr;

/* Non-zero for 512..65536, powers of two. */
int wal_page_size_valid(uint32_t page_size);

/* Stores salt values into an index header as the WAL header's big-endian bytes (index.c). */
void wal_index_hdr_set_salts(struct wal_index_hdr *h, uint32_t salt1, uint32_t salt2);

/* The index header's szPage encoding of a valid page size: 65536 is 1 (index.c). */
uint16_t wal_index_encode_page_size(uint32_t page_size);

#endif /* WALRAFT_WAL_BYTES_H */
