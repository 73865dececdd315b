/*
 * Frame header and handshake codec of the transport; the byte layout is specified in wire.h.
 * Everything here validates bytes from the network and reports errors; nothing asserts on them.
 */
#include "consensus/io/wire.h"

#include "consensus/io/bytes.h"

#include <assert.h>
#include <string.h>
#include <xxhash.h>

#define IO_TRANSPORT_ERROR_MSG(name, msg) msg,
static const char *const messages[] = {IO_TRANSPORT_ERRORS(IO_TRANSPORT_ERROR_MSG)};
#undef IO_TRANSPORT_ERROR_MSG
_Static_assert(sizeof messages / sizeof messages[0] == IO_TRANSPORT_ERROR_COUNT, "error table");

const char *io_transport_strerror(int rc)
{
    if (rc < 0 || rc >= IO_TRANSPORT_ERROR_COUNT) {
        return "unknown error";
    }
    return messages[rc];
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

uint64_t io_wire_checksum(const uint8_t *hdr16, const void *payload, size_t len)
{
    uint64_t seed = XXH64(hdr16, 16, 0);
    return XXH64(payload, len, seed);
}

void io_wire_frame_header(uint16_t type, const void *payload, uint32_t len, uint8_t *out)
{
    assert(out != NULL);
    assert(payload != NULL || len == 0);
    io_put32(out + 0, IO_WIRE_MAGIC);
    put16(out + 4, IO_WIRE_VERSION);
    put16(out + 6, type);
    io_put32(out + 8, len);
    io_put32(out + 12, 0);
    io_put64(out + 16, io_wire_checksum(out, payload, len));
}

int io_wire_header_decode(const uint8_t *in, uint32_t payload_max, struct io_wire_header *out)
{
    out->magic = io_get32(in + 0);
    out->version = get16(in + 4);
    out->type = get16(in + 6);
    out->length = io_get32(in + 8);
    out->reserved = io_get32(in + 12);
    out->checksum = io_get64(in + 16);
    if (out->magic != IO_WIRE_MAGIC) {
        return IO_TRANSPORT_EMAGIC;
    }
    if (out->version != IO_WIRE_VERSION) {
        return IO_TRANSPORT_EVERSION;
    }
    if (out->reserved != 0) {
        return IO_TRANSPORT_ERESERVED;
    }
    if (out->length > payload_max) {
        return IO_TRANSPORT_ELENGTH;
    }
    return 0;
}

int io_wire_frame_verify(const uint8_t *raw_header, const void *payload, size_t len)
{
    if (io_wire_checksum(raw_header, payload, len) != io_get64(raw_header + 16)) {
        return IO_TRANSPORT_ECHECKSUM;
    }
    return 0;
}

size_t io_wire_handshake_size(const struct io_wire_handshake *hs)
{
    return IO_WIRE_HANDSHAKE_FIXED + strnlen(hs->addr, sizeof hs->addr);
}

int io_wire_handshake_encode(const struct io_wire_handshake *hs, uint8_t *out, size_t cap,
                             size_t *out_len)
{
    size_t alen = strnlen(hs->addr, sizeof hs->addr);
    if (alen > IO_WIRE_ADDR_MAX) {
        return IO_TRANSPORT_EINVAL;
    }
    if (cap < IO_WIRE_HANDSHAKE_FIXED + alen) {
        return IO_TRANSPORT_ETRUNCATED;
    }
    io_put64(out + 0, hs->cluster_id);
    io_put64(out + 8, hs->node_id);
    put16(out + 16, (uint16_t)alen);
    put16(out + 18, 0);
    memcpy(out + IO_WIRE_HANDSHAKE_FIXED, hs->addr, alen);
    *out_len = IO_WIRE_HANDSHAKE_FIXED + alen;
    return 0;
}

int io_wire_handshake_decode(const uint8_t *in, size_t len, struct io_wire_handshake *out)
{
    if (len < IO_WIRE_HANDSHAKE_FIXED) {
        return IO_TRANSPORT_ETRUNCATED;
    }
    uint16_t alen = get16(in + 16);
    if (alen > IO_WIRE_ADDR_MAX || get16(in + 18) != 0) {
        return IO_TRANSPORT_EHANDSHAKE;
    }
    if (len < IO_WIRE_HANDSHAKE_FIXED + (size_t)alen) {
        return IO_TRANSPORT_ETRUNCATED;
    }
    if (len != IO_WIRE_HANDSHAKE_FIXED + (size_t)alen) {
        return IO_TRANSPORT_EHANDSHAKE;
    }
    if (memchr(in + IO_WIRE_HANDSHAKE_FIXED, '\0', alen) != NULL) {
        return IO_TRANSPORT_EHANDSHAKE;
    }
    out->cluster_id = io_get64(in + 0);
    out->node_id = io_get64(in + 8);
    memcpy(out->addr, in + IO_WIRE_HANDSHAKE_FIXED, alen);
    out->addr[alen] = '\0';
    return 0;
}
