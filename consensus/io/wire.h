/*
 * The transport's wire format: the frame header and the handshake, and the transport's error
 * codes. Pure functions over byte buffers; no I/O. transport.c is the only user inside walraft,
 * but the format is written down here so that any other program (a status client, a packet
 * dissector) can speak it.
 *
 * All integers are LITTLE-ENDIAN. A connection is a sequence of frames in each direction:
 *
 *   frame header (IO_WIRE_HEADER_SIZE = 24 bytes)
 *     offset  size  field
 *       0      4    magic      0x57524654 ("TFRW" in memory order: 54 46 52 57)
 *       4      2    version    IO_WIRE_VERSION (1); anything else is refused
 *       6      2    type       0 = handshake (transport); 1..65535 = payload types of the user
 *       8      4    length     payload bytes that follow the header; at most the receiver's
 *                              payload maximum (default 256 MiB), else the frame is refused
 *      12      4    reserved   zero; a non-zero value is refused (room for future flags)
 *      16      8    checksum   XXH64(payload, length, seed = XXH64(header bytes 0..15, 16, 0))
 *                              i.e. covers every header field above and the payload
 *   payload (length bytes)
 *
 *   handshake payload (type 0), the FIRST frame in each direction of every connection:
 *     offset  size  field
 *       0      8    cluster id  the receiver refuses a cluster id other than its own, except
 *                               0 from an anonymous sender (node id 0: an outsider asking to
 *                               join or for status cannot know it yet)
 *       8      8    node id     the sender's id; 0 = anonymous (a client asking for status)
 *      16      2    addr length 0..IO_WIRE_ADDR_MAX
 *      18      2    reserved    zero
 *      20      n    address     the sender's advertised "host:port", not NUL-terminated
 *
 *   Before the handshake has arrived a receiver accepts no length above 20 + IO_WIRE_ADDR_MAX, and
 *   from an anonymous sender none above IO_WIRE_ANON_PAYLOAD_MAX (1 MiB).
 *   A handshake anywhere but first, a first frame that is not a handshake, or a handshake with a
 *   length other than 20 + addr length is refused: the connection is closed.
 */
#ifndef WALRAFT_IO_WIRE_H
#define WALRAFT_IO_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* Error codes of the transport module (wire.c and transport.c): 0 is success. */
#define IO_TRANSPORT_ERRORS(X)                                                                     \
    X(IO_TRANSPORT_OK, "success")                                                                  \
    X(IO_TRANSPORT_ENOMEM, "out of memory")                                                        \
    X(IO_TRANSPORT_EINVAL, "invalid argument")                                                     \
    X(IO_TRANSPORT_EADDR, "address is not \"ipv4:port\" or \"[ipv6]:port\"")                       \
    X(IO_TRANSPORT_ELISTEN, "cannot listen on the address")                                        \
    X(IO_TRANSPORT_ESYS, "system call failed")                                                     \
    X(IO_TRANSPORT_EQUEUEFULL, "send queue to the peer is full; retry later")                      \
    X(IO_TRANSPORT_ETOOBIG, "payload larger than the configured maximum")                          \
    X(IO_TRANSPORT_ENOADDR, "no address known for the peer")                                       \
    X(IO_TRANSPORT_ENOCONN, "connection no longer open")                                           \
    X(IO_TRANSPORT_ECLOSING, "transport is closing")                                               \
    X(IO_TRANSPORT_ETRUNCATED, "input too short")                                                  \
    X(IO_TRANSPORT_EMAGIC, "bad magic: not a walraft peer")                                        \
    X(IO_TRANSPORT_EVERSION, "unsupported wire version")                                           \
    X(IO_TRANSPORT_ERESERVED, "reserved header field is not zero")                                 \
    X(IO_TRANSPORT_ELENGTH, "payload length above the maximum")                                    \
    X(IO_TRANSPORT_ECHECKSUM, "checksum mismatch")                                                 \
    X(IO_TRANSPORT_EHANDSHAKE, "malformed handshake")                                              \
    X(IO_TRANSPORT_ECLUSTER, "peer belongs to another cluster")                                    \
    X(IO_TRANSPORT_ENOHANDSHAKE, "first frame is not a handshake")                                 \
    X(IO_TRANSPORT_EREHANDSHAKE, "handshake that is not the first frame")                          \
    X(IO_TRANSPORT_EPEERID, "peer answered with an unexpected node id")                            \
    X(IO_TRANSPORT_ETIMEDOUT, "peer did not complete the handshake in time")

#define IO_TRANSPORT_ERROR_ENUM(name, msg) name,
enum io_transport_error { IO_TRANSPORT_ERRORS(IO_TRANSPORT_ERROR_ENUM) IO_TRANSPORT_ERROR_COUNT };
#undef IO_TRANSPORT_ERROR_ENUM

/* A static message for any code of the table; "unknown error" for anything else. */
const char *io_transport_strerror(int rc);

#define IO_WIRE_MAGIC 0x57524654u
#define IO_WIRE_VERSION 1u
#define IO_WIRE_HEADER_SIZE 24u
#define IO_WIRE_TYPE_HANDSHAKE 0u
#define IO_WIRE_PAYLOAD_MAX_DEFAULT (256u * 1024u * 1024u)
#define IO_WIRE_ADDR_MAX 255u
#define IO_WIRE_HANDSHAKE_FIXED 20u
#define IO_WIRE_HANDSHAKE_MAX (IO_WIRE_HANDSHAKE_FIXED + IO_WIRE_ADDR_MAX)
/* Largest payload a node accepts from an anonymous client (node id 0): requests are small. */
#define IO_WIRE_ANON_PAYLOAD_MAX (1024u * 1024u)

/* The decoded frame header. Field order mirrors the byte layout. */
struct io_wire_header {
    uint32_t magic;
    uint16_t version;
    uint16_t type;
    uint32_t length;
    uint32_t reserved;
    uint64_t checksum;
};
_Static_assert(sizeof(struct io_wire_header) == IO_WIRE_HEADER_SIZE, "header layout");

/* The decoded handshake. `addr` is NUL-terminated here (not on the wire). */
struct io_wire_handshake {
    uint64_t cluster_id;
    uint64_t node_id;
    char addr[IO_WIRE_ADDR_MAX + 1];
};

/* Checksum of a frame: `hdr16` is the first 16 encoded header bytes. */
uint64_t io_wire_checksum(const uint8_t *hdr16, const void *payload, size_t len);

/*
 * Encodes the header of a frame carrying `payload` (len bytes, len <= UINT32_MAX) into `out`
 * (IO_WIRE_HEADER_SIZE bytes), checksum included.
 */
void io_wire_frame_header(uint16_t type, const void *payload, uint32_t len,
                          uint8_t *out /* OUT: IO_WIRE_HEADER_SIZE bytes */);

/*
 * Decodes and validates a header (magic, version, reserved, length <= payload_max). The
 * checksum is only decoded: check it with io_wire_frame_verify once the payload is in.
 * Returns 0 or IO_TRANSPORT_EMAGIC / EVERSION / ERESERVED / ELENGTH.
 */
int io_wire_header_decode(const uint8_t *in /* IO_WIRE_HEADER_SIZE bytes */, uint32_t payload_max,
                          struct io_wire_header *out /* OUT */);

/* 0 when the checksum in `raw_header` matches the payload, else IO_TRANSPORT_ECHECKSUM. */
int io_wire_frame_verify(const uint8_t *raw_header, const void *payload, size_t len);

/* Bytes a handshake payload takes for `hs` (its addr must be at most IO_WIRE_ADDR_MAX long). */
size_t io_wire_handshake_size(const struct io_wire_handshake *hs);

/* Encodes the handshake payload into `out` (cap bytes). Returns 0, EINVAL or ETRUNCATED. */
int io_wire_handshake_encode(const struct io_wire_handshake *hs, uint8_t *out, size_t cap,
                             size_t *out_len /* OUT: bytes written */);

/* Decodes a handshake payload of exactly `len` bytes. Returns 0, ETRUNCATED or EHANDSHAKE. */
int io_wire_handshake_decode(const uint8_t *in, size_t len,
                             struct io_wire_handshake *out /* OUT */);

#endif
