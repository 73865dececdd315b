/*
 * The TCP transport between walraft nodes, over libuv. It carries opaque payloads tagged with a
 * 16-bit type (1..65535) in the frames of wire.h; what a payload means is the business of the
 * Raft message codec above it.
 *
 * Threads. Everything runs on the ONE loop thread given to io_transport_init: every function of
 * this header must be called on that thread, and every callback runs on it. No locks inside.
 *
 * Connections. Each node dials one outgoing connection per peer it sends to, and accepts
 * incoming connections; it sends to a peer only on its own outgoing connection (so messages to
 * one peer are sent in order) and receives on every connection. When two nodes dial each other
 * there are simply two connections, each carrying one direction, so there is nothing to dedupe.
 * The first frame each way is the handshake (cluster id, node id, advertised address). A node id
 * of 0 is an anonymous client (e.g. `walraft status ADDR`): its messages are delivered with
 * from_id 0 and the id of the connection they came on; answer with io_transport_reply, which
 * queues on that same connection. Anonymous connections are unauthenticated requests: whatever
 * they send must never be taken for Raft traffic. An outsider that does not know the cluster id
 * uses cluster id 0 and node id 0: any node accepts it, and it accepts whichever node it dials.
 *
 * Queues. Each peer has two send queues: CONTROL (votes, heartbeats, small appends) and BULK
 * (snapshot chunks, large appends). Messages are written whole, several small ones per write
 * (at most 16, adding more until 64 KiB); each write takes CONTROL messages before BULK ones, so
 * a control message waits at most for the write already under way (under 64 KiB plus one message).
 * Each queue is bounded in bytes (queued + being written): a send that would pass the bound fails
 * with IO_TRANSPORT_EQUEUEFULL, except that a message is always accepted into an empty queue, so
 * one message larger than the bound (a 50 MB entry) can still go. Messages stay queued while the
 * peer is unreachable and go out after the reconnect; a message being written when a connection
 * breaks is lost (Raft retransmits).
 *
 * Reconnects. A broken or refused outgoing connection is retried while messages are queued,
 * after a delay that doubles from backoff_min_ms to backoff_max_ms, each delay scaled by a random
 * factor in [0.5, 1.0] from a PRNG seeded with config.seed; the delay returns to the minimum once
 * a connection completes its handshake. An outgoing connection writes nothing but its own
 * handshake until the peer's handshake has arrived and names the node id we dialled (so a stale
 * address never delivers messages to another node); connect plus that handshake must complete
 * within handshake_timeout_ms.
 *
 * Failures. Bytes from the network are validated, never trusted: garbage, a bad magic, an
 * unknown version, an oversized length, a bad checksum, a foreign cluster id, a missing or
 * repeated handshake, a frame larger than a handshake before the handshake, a request above
 * 1 MiB from an anonymous client, silence instead of a handshake for handshake_timeout_ms: each
 * closes that one connection with a WARN log line naming the remote address and the reason.
 * Other connections are unaffected. At most 1024 accepted connections are open at once.
 *
 * Addresses are numeric: "1.2.3.4:7001", "[::1]:7001", and "localhost:7001" for 127.0.0.1.
 */
#ifndef WALRAFT_IO_TRANSPORT_H
#define WALRAFT_IO_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "consensus/io/wire.h"

struct io_transport;

enum io_transport_class {
    IO_TRANSPORT_CONTROL = 0, /* overtakes queued bulk messages */
    IO_TRANSPORT_BULK = 1,
};

enum io_transport_dir {
    IO_TRANSPORT_OUT = 0, /* a message about to be queued for sending */
    IO_TRANSPORT_IN = 1,  /* a message received, about to be delivered */
};

/*
 * A message arrived from node `from_id` (0: anonymous) on connection `conn_id`. `buf` (len
 * bytes) is valid during the callback only. The callback may call any function of this header,
 * including io_transport_close.
 */
typedef void (*io_transport_message_cb)(struct io_transport *t, uint64_t from_id, uint16_t type,
                                        const void *buf, size_t len, uint64_t conn_id);

/*
 * A connection with node `id` (named by its handshake) was closed by the remote end: end of
 * stream or reset. A process that exits closes all its connections at once, so this is the
 * first sign of a crashed peer; a live peer also closes a connection now and then (a bad frame,
 * a changed address). Called after the connection is closed; may call any function here.
 */
typedef void (*io_transport_closed_cb)(struct io_transport *t, uint64_t id);

/* Releases a buffer given to io_transport_send_owned once it has been written or dropped. */
typedef void (*io_transport_free_cb)(void *buf);

/* Fault hook for tests: return false to drop the message (silently, as a lossy network). */
typedef bool (*io_transport_filter_fn)(void *ctx, enum io_transport_dir dir, uint64_t peer_id,
                                       uint16_t type);

/* Called once every handle of the transport is closed; `t` may be freed from then on. */
typedef void (*io_transport_close_cb)(struct io_transport *t);

struct io_transport_config {
    uint64_t cluster_id;
    uint64_t self_id;              /* 0: anonymous client */
    const char *listen_addr;       /* "host:port" (port 0: any free port) or NULL: do not listen */
    const char *advertise_addr;    /* sent in the handshake; NULL: the bound listen address */
    uint32_t payload_max;          /* 0: IO_WIRE_PAYLOAD_MAX_DEFAULT (256 MiB); applies both ways */
    size_t queue_bytes_max;        /* per peer and class; 0: 64 MiB */
    uint32_t backoff_min_ms;       /* 0: 50 */
    uint32_t backoff_max_ms;       /* 0: 2000 */
    uint32_t handshake_timeout_ms; /* connect + handshake, either direction; 0: 5000 */
    uint64_t seed;                 /* reconnect jitter */
    io_transport_message_cb on_message; /* required */
    io_transport_closed_cb on_closed;   /* optional */
    void *data;                         /* for the caller; copied into t->data */
};

struct io_transport_peer_stats {
    uint64_t id;
    bool connected;          /* outgoing connection up and the peer's handshake accepted */
    uint64_t bytes_sent;     /* frame bytes written (headers included) */
    uint64_t bytes_received; /* frame bytes received from this node on any connection */
    uint64_t msgs_sent;
    uint64_t msgs_received;
    uint64_t reconnects; /* outgoing connections attempted after the first */
    uint64_t drops_full; /* sends refused with IO_TRANSPORT_EQUEUEFULL */
    size_t queued_bytes; /* both classes, including a message being written */
};

struct io_peer;
struct io_conn;

/* Caller-allocated; the fields are private except `data`. */
struct io_transport {
    void *data;
    uv_loop_t *loop;
    struct io_transport_config cfg;
    char advertise[IO_WIRE_ADDR_MAX + 1];
    uint8_t handshake[IO_WIRE_HANDSHAKE_MAX]; /* our encoded handshake payload */
    size_t handshake_len;
    int port;
    bool listening;
    bool closing;
    uv_tcp_t listener;
    uv_timer_t sweep;      /* closes accepted connections that never send a handshake */
    struct io_peer *peers; /* singly linked */
    struct io_conn *conns; /* doubly linked, every open connection */
    uint64_t next_conn_id;
    uint64_t rng;
    unsigned handles;  /* handles open or closing */
    unsigned incoming; /* accepted connections open */
    io_transport_filter_fn filter;
    void *filter_ctx;
    io_transport_close_cb close_cb;
};

/*
 * Starts a transport on `loop` and, if cfg->listen_addr is set, listens on it. Sets SIGPIPE to
 * ignored if it has its default action (a peer's reset must not kill the process). Returns 0 or
 * EINVAL, EADDR, ELISTEN (address in use, ...), ENOMEM. On error nothing is left open and `t`
 * may be freed, except after ESYS (libuv refused a socket it had just been given, which should
 * not happen): then run the loop once before freeing `t`.
 */
int io_transport_init(struct io_transport *t, uv_loop_t *loop,
                      const struct io_transport_config *cfg);

/* The bound port (useful with port 0), or 0 when not listening. */
int io_transport_port(const struct io_transport *t);

/* The address this node advertises in its handshakes ("" when none). */
const char *io_transport_address(const struct io_transport *t);

/* The listening address node `node_id` advertised in the handshake of a connection open now (in
 * either direction), copied into out[n]; false if none. For answering a node this one has no
 * address for: a leader added to the cluster while this node was away reaches it before the
 * configuration entry that names the leader does. */
bool io_transport_advertised(const struct io_transport *t, uint64_t node_id, char *out, size_t n);

/*
 * Records or replaces the address of peer `id` (id != 0). A changed address closes the current
 * outgoing connection; queued messages go to the new address.
 */
int io_transport_set_peer(struct io_transport *t, uint64_t id, const char *addr);

/* Forgets peer `id`: closes its outgoing connection and drops its queued messages. */
void io_transport_remove_peer(struct io_transport *t, uint64_t id);

/*
 * Queues a copy of `buf` (len bytes) for peer `peer_id`. `addr` may be NULL once the address is
 * known (io_transport_set_peer or an earlier send); a different address replaces the old one.
 * peer_id 0 sends anonymously to the node at `addr` (required then): a client's request.
 * Returns 0 (queued, or dropped by the filter), or EQUEUEFULL, ETOOBIG, ENOADDR, EADDR, EINVAL
 * (type 0), ECLOSING, ENOMEM. Delivery is never confirmed: a message can be lost if a
 * connection breaks.
 */
int io_transport_send(struct io_transport *t, uint64_t peer_id, const char *addr, uint16_t type,
                      enum io_transport_class cls, const void *buf, size_t len);

/*
 * As io_transport_send without the copy: on success takes ownership of `buf` and releases it
 * with `free_cb` (NULL: free()) once written or dropped, possibly before returning. On error
 * `buf` stays the caller's.
 */
int io_transport_send_owned(struct io_transport *t, uint64_t peer_id, const char *addr,
                            uint16_t type, enum io_transport_class cls, void *buf, size_t len,
                            io_transport_free_cb free_cb);

/*
 * Queues a copy of `buf` on connection `conn_id` (from the message callback): the way to answer
 * an anonymous client. Returns 0, ENOCONN when that connection has closed, or as send.
 */
int io_transport_reply(struct io_transport *t, uint64_t conn_id, uint16_t type,
                       enum io_transport_class cls, const void *buf, size_t len);

/* Installs (fn != NULL) or removes the fault hook, consulted on every send and delivery. */
void io_transport_set_filter(struct io_transport *t, io_transport_filter_fn fn, void *ctx);

/* Statistics of peer `id`; 0, or ENOADDR when the transport has no record of that peer. */
int io_transport_peer_stats(const struct io_transport *t, uint64_t id,
                            struct io_transport_peer_stats *out /* OUT */);

/*
 * Closes every connection, the listener and the timers, drops every queued message (owned
 * buffers are released), and calls `cb` once all handles are closed (at once, before returning,
 * when the transport holds none: a client that never sent). Call once; after it no other
 * function may be called, and no message callback runs.
 */
void io_transport_close(struct io_transport *t, io_transport_close_cb cb);

#endif
