/* The WAL file codec: checksums, the 32-byte WAL header, 24-byte frame headers and the walk of
 * a whole WAL image to its valid, committed prefix. Byte layouts: wal/wal.h. */
#include <assert.h>
#include <string.h>

#include "wal/bytes.h"
#include "wal/wal.h"

void wal_cksum(int big_endian, const uint8_t *data, size_t n, uint32_t s[2])
{
    assert(n % 8 == 0);
    assert(s != NULL);
    uint32_t s0 = s[0];
    uint32_t s1 = s[1];
    if (big_endian) {
        for (size_t i = 0; i < n; i += 8) {
            s0 += wal_get_be32(data + i) + s1;
            s1 += wal_get_be32(data + i + 4) + s0;
        }
    } else {
        for (size_t i = 0; i < n; i += 8) {
            s0 += wal_get_le32(data + i) + s1;
            s1 += wal_get_le32(data + i + 4) + s0;
        }
    }
    s[0] = s0;
    s[1] = s1;
}

int wal_page_size_valid(uint32_t page_size)
{
    return page_size >= WAL_PAGE_SIZE_MIN && page_size <= WAL_PAGE_SIZE_MAX &&
           (page_size & (page_size - 1)) == 0;
}

void wal_hdr_build(struct wal_hdr *h, int big_endian, uint32_t page_size, uint32_t ckpt_seq,
                   uint32_t salt1, uint32_t salt2, uint8_t out[WAL_HDR_SIZE])
{
    assert(wal_page_size_valid(page_size));
    h->magic = big_endian ? WAL_MAGIC_BE : WAL_MAGIC_LE;
    h->version = WAL_VERSION;
    h->page_size = page_size;
    h->ckpt_seq = ckpt_seq;
    h->salt1 = salt1;
    h->salt2 = salt2;
    wal_put_be32(out + 0, h->magic);
    wal_put_be32(out + 4, h->version);
    wal_put_be32(out + 8, h->page_size);
    wal_put_be32(out + 12, h->ckpt_seq);
    wal_put_be32(out + 16, h->salt1);
    wal_put_be32(out + 20, h->salt2);
    uint32_t s[2] = {0, 0};
    wal_cksum(big_endian, out, 24, s);
    h->cksum1 = s[0];
    h->cksum2 = s[1];
    wal_put_be32(out + 24, s[0]);
    wal_put_be32(out + 28, s[1]);
}

int wal_hdr_decode(const uint8_t in[WAL_HDR_SIZE], struct wal_hdr *h)
{
    struct wal_hdr d;
    d.magic = wal_get_be32(in + 0);
    d.version = wal_get_be32(in + 4);
    d.page_size = wal_get_be32(in + 8);
    d.ckpt_seq = wal_get_be32(in + 12);
    d.salt1 = wal_get_be32(in + 16);
    d.salt2 = wal_get_be32(in + 20);
    d.cksum1 = wal_get_be32(in + 24);
    d.cksum2 = wal_get_be32(in + 28);
    if (d.magic != WAL_MAGIC_LE && d.magic != WAL_MAGIC_BE) {
        return WAL_EMAGIC;
    }
    if (d.version != WAL_VERSION) {
        return WAL_EVERSION;
    }
    if (!wal_page_size_valid(d.page_size)) {
        return WAL_EPAGESIZE;
    }
    uint32_t s[2] = {0, 0};
    wal_cksum((int)(d.magic & 1u), in, 24, s);
    if (s[0] != d.cksum1 || s[1] != d.cksum2) {
        return WAL_ECHECKSUM;
    }
    *h = d;
    return WAL_OK;
}

void wal_chain_init(struct wal_chain *c, const struct wal_hdr *h)
{
    assert(h->magic == WAL_MAGIC_LE || h->magic == WAL_MAGIC_BE);
    c->big_endian = (int)(h->magic & 1u);
    c->page_size = h->page_size;
    c->salt1 = h->salt1;
    c->salt2 = h->salt2;
    c->cksum[0] = h->cksum1;
    c->cksum[1] = h->cksum2;
}

uint64_t wal_frame_offset(uint32_t page_size, uint32_t frame)
{
    assert(frame >= 1);
    return WAL_HDR_SIZE + (uint64_t)(frame - 1) * ((uint64_t)page_size + WAL_FRAME_HDR_SIZE);
}

void wal_frame_encode(struct wal_chain *c, uint32_t pgno, uint32_t commit, const uint8_t *page,
                      uint8_t out[WAL_FRAME_HDR_SIZE])
{
    assert(pgno != 0);
    assert(wal_page_size_valid(c->page_size));
    wal_put_be32(out + 0, pgno);
    wal_put_be32(out + 4, commit);
    wal_put_be32(out + 8, c->salt1);
    wal_put_be32(out + 12, c->salt2);
    wal_cksum(c->big_endian, out, 8, c->cksum);
    wal_cksum(c->big_endian, page, c->page_size, c->cksum);
    wal_put_be32(out + 16, c->cksum[0]);
    wal_put_be32(out + 20, c->cksum[1]);
}

int wal_frame_decode(struct wal_chain *c, const uint8_t hdr[WAL_FRAME_HDR_SIZE],
                     const uint8_t *page, struct wal_frame_hdr *out)
{
    if (wal_get_be32(hdr + 8) != c->salt1 || wal_get_be32(hdr + 12) != c->salt2) {
        return WAL_ESALT;
    }
    uint32_t pgno = wal_get_be32(hdr + 0);
    if (pgno == 0) {
        return WAL_EPGNO;
    }
    uint32_t s[2] = {c->cksum[0], c->cksum[1]};
    wal_cksum(c->big_endian, hdr, 8, s);
    wal_cksum(c->big_endian, page, c->page_size, s);
    if (s[0] != wal_get_be32(hdr + 16) || s[1] != wal_get_be32(hdr + 20)) {
        return WAL_ECHECKSUM;
    }
    c->cksum[0] = s[0];
    c->cksum[1] = s[1];
    out->pgno = pgno;
    out->commit = wal_get_be32(hdr + 4);
    return WAL_OK;
}

int wal_scan_image(const uint8_t *wal, size_t len, struct wal_scan *out, wal_frame_cb on_frame,
                   void *arg)
{
    assert(out != NULL);
    memset(out, 0, sizeof *out);
    if (wal == NULL || len < WAL_HDR_SIZE) {
        return WAL_ETRUNCATED;
    }
    int rc = wal_hdr_decode(wal, &out->hdr);
    if (rc != WAL_OK) {
        return rc;
    }
    struct wal_chain c;
    wal_chain_init(&c, &out->hdr);
    out->chain = c;
    size_t frame_size = (size_t)out->hdr.page_size + WAL_FRAME_HDR_SIZE;
    size_t off = WAL_HDR_SIZE;
    uint32_t n_commits = 0;
    while (len - off >= frame_size && out->n_valid < UINT32_MAX) {
        struct wal_frame_hdr fh;
        if (wal_frame_decode(&c, wal + off, wal + off + WAL_FRAME_HDR_SIZE, &fh) != WAL_OK) {
            break;
        }
        out->n_valid++;
        if (on_frame != NULL) {
            rc = on_frame(arg, out->n_valid, &fh, wal + off + WAL_FRAME_HDR_SIZE);
            if (rc != 0) {
                return rc;
            }
        }
        if (fh.commit != 0) {
            n_commits++;
            out->mx_frame = out->n_valid;
            out->n_page = fh.commit;
            out->n_commits = n_commits;
            out->chain = c;
        }
        off += frame_size;
    }
    return WAL_OK;
}
