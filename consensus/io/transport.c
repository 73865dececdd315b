/*
 * TCP transport over libuv: listener, one outgoing connection per peer with reconnect backoff,
 * incoming connections, two-class bounded send queues, frame parsing and validation. The
 * contract is in transport.h and the byte layout in wire.h. Owns every handle and buffer it
 * allocates; runs on the loop thread only.
 */
#include "consensus/io/transport.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "consensus/io/logging.h"

#define QUEUE_BYTES_MAX_DEFAULT ((size_t)64 * 1024 * 1024)
#define BACKOFF_MIN_MS_DEFAULT 50u
#define BACKOFF_MAX_MS_DEFAULT 2000u
#define HANDSHAKE_TIMEOUT_MS_DEFAULT 5000u
#define READ_CHUNK (64u * 1024u)
#define BATCH_MAX 16                    /* messages in one write */
#define BATCH_BYTES (64u * 1024u)       /* a write takes more messages until it holds this much */
#define PAYLOAD_KEEP_MAX (256u * 1024u) /* read buffers above this are freed after each frame */
#define LISTEN_BACKLOG 128
#define REMOTE_MAX (IO_WIRE_ADDR_MAX + 1)
#define INCOMING_MAX 1024 /* incoming connections at once: each holds a 64 KiB read buffer */

/* One queued frame. Copies keep the payload inline after the struct. */
struct io_msg {
    struct io_msg *next;
    uint8_t header[IO_WIRE_HEADER_SIZE];
    void *buf;
    size_t len;
    io_transport_free_cb free_cb; /* NULL: buf is inline */
    uint16_t type;
    uint8_t cls;
    unsigned char inline_data[];
};

struct io_queue {
    struct io_msg *head[2];
    struct io_msg *tail[2];
    size_t bytes[2]; /* queued plus being written, frame headers included */
};

struct io_peer {
    struct io_peer *next;
    struct io_transport *t;
    uint64_t id; /* 0: an anonymous destination known by address only */
    char addr[IO_WIRE_ADDR_MAX + 1];
    struct sockaddr_storage sa;
    bool has_addr;
    bool removed;
    enum { TIMER_IDLE, TIMER_BACKOFF, TIMER_HANDSHAKE } timer_mode;
    struct io_queue q;
    struct io_conn *conn; /* our outgoing connection, or NULL */
    uv_timer_t timer;
    uint32_t backoff_ms;
    uint64_t attempts;
    struct io_transport_peer_stats stats;
};

enum conn_state { CONN_CONNECTING, CONN_OPEN, CONN_CLOSING };

struct io_conn {
    struct io_conn *prev;
    struct io_conn *next;
    struct io_transport *t;
    uint64_t id;
    bool outgoing;
    bool counted; /* in t->incoming */
    uint64_t opened_ms;
    enum conn_state state;
    struct io_peer *peer;  /* outgoing only; NULL once detached */
    struct io_queue own_q; /* incoming only: replies */
    char remote[REMOTE_MAX];
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_write_t write_req;
    /* Writing: one uv_write at a time. */
    bool writing;
    bool hs_sent;
    struct io_msg *inflight;
    struct io_queue *inflight_q; /* queue whose byte count includes inflight, or NULL */
    uint8_t hs_frame[IO_WIRE_HEADER_SIZE + IO_WIRE_HANDSHAKE_MAX];
    size_t hs_frame_len;
    /* Reading. */
    bool hs_received;
    uint64_t remote_id;
    char advertised[IO_WIRE_ADDR_MAX + 1]; /* the remote node's listening address, as it said */
    uint8_t hdr[IO_WIRE_HEADER_SIZE];
    size_t hdr_have;
    bool in_payload;
    struct io_wire_header h;
    uint8_t *payload;
    size_t payload_cap;
    size_t payload_have;
    uint8_t rbuf[READ_CHUNK];
};

/* --- small helpers -----------------------------------------------------------------------------
 */

static uint64_t rng_next(struct io_transport *t)
{
    /* splitmix64: good enough for jitter, and reproducible from the seed. */
    uint64_t z = (t->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Parses "a.b.c.d:port", "[v6]:port" or "localhost:port". `host_out` gets the host part. */
static int parse_addr(const char *s, struct sockaddr_storage *out, char *host_out, size_t host_cap)
{
    char host[IO_WIRE_ADDR_MAX + 1];
    const char *port_str;
    bool v6 = false;

    if (s == NULL || strlen(s) > IO_WIRE_ADDR_MAX) {
        return IO_TRANSPORT_EADDR;
    }
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (end == NULL || end[1] != ':') {
            return IO_TRANSPORT_EADDR;
        }
        memcpy(host, s + 1, (size_t)(end - s - 1));
        host[end - s - 1] = '\0';
        port_str = end + 2;
        v6 = true;
    } else {
        const char *colon = strrchr(s, ':');
        if (colon == NULL || memchr(s, ':', (size_t)(colon - s)) != NULL) {
            return IO_TRANSPORT_EADDR;
        }
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = '\0';
        port_str = colon + 1;
    }
    if (port_str[0] == '\0' || strlen(port_str) > 5) {
        return IO_TRANSPORT_EADDR;
    }
    unsigned long port = 0;
    for (const char *p = port_str; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') {
            return IO_TRANSPORT_EADDR;
        }
        port = port * 10 + (unsigned long)(*p - '0');
    }
    if (port > 65535) {
        return IO_TRANSPORT_EADDR;
    }
    memset(out, 0, sizeof *out);
    if (v6) {
        if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)out) != 0) {
            return IO_TRANSPORT_EADDR;
        }
    } else {
        if (strcmp(host, "localhost") == 0) {
            strcpy(host, "127.0.0.1");
        }
        if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)out) != 0) {
            return IO_TRANSPORT_EADDR;
        }
    }
    if (host_out != NULL) {
        snprintf(host_out, host_cap, "%s", host);
    }
    return 0;
}

static void sockaddr_format(const struct sockaddr_storage *sa, char *out, size_t cap)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        uv_ip6_name(a, ip, sizeof ip);
        snprintf(out, cap, "[%s]:%u", ip, (unsigned)ntohs(a->sin6_port));
    } else if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        uv_ip4_name(a, ip, sizeof ip);
        snprintf(out, cap, "%s:%u", ip, (unsigned)ntohs(a->sin_port));
    } else {
        snprintf(out, cap, "?");
    }
}

static void handle_closed(struct io_transport *t)
{
    assert(t->handles > 0);
    t->handles--;
    if (t->closing && t->handles == 0 && t->close_cb != NULL) {
        io_transport_close_cb cb = t->close_cb;
        t->close_cb = NULL;
        cb(t);
    }
}

static struct io_peer *peer_find(const struct io_transport *t, uint64_t id, const char *addr)
{
    for (struct io_peer *p = t->peers; p != NULL; p = p->next) {
        if (p->id != id) {
            continue;
        }
        if (id != 0 || (addr != NULL && strcmp(p->addr, addr) == 0)) {
            return p;
        }
    }
    return NULL;
}

static struct io_conn *conn_find(const struct io_transport *t, uint64_t conn_id)
{
    for (struct io_conn *c = t->conns; c != NULL; c = c->next) {
        if (c->id == conn_id) {
            return c;
        }
    }
    return NULL;
}

/* --- messages and queues -----------------------------------------------------------------------
 */

static size_t msg_bytes(const struct io_msg *m)
{
    return IO_WIRE_HEADER_SIZE + m->len;
}

static void msg_free(struct io_msg *m)
{
    if (m->free_cb != NULL) {
        m->free_cb(m->buf);
    }
    free(m);
}

static void queue_push(struct io_queue *q, struct io_msg *m)
{
    m->next = NULL;
    if (q->tail[m->cls] != NULL) {
        q->tail[m->cls]->next = m;
    } else {
        q->head[m->cls] = m;
    }
    q->tail[m->cls] = m;
    q->bytes[m->cls] += msg_bytes(m);
}

/* Control first: a control message overtakes every queued bulk message. */
static struct io_msg *queue_pop(struct io_queue *q)
{
    for (int cls = IO_TRANSPORT_CONTROL; cls <= IO_TRANSPORT_BULK; cls++) {
        struct io_msg *m = q->head[cls];
        if (m != NULL) {
            q->head[cls] = m->next;
            if (q->head[cls] == NULL) {
                q->tail[cls] = NULL;
            }
            m->next = NULL;
            return m; /* still counted in bytes until written */
        }
    }
    return NULL;
}

static bool queue_empty(const struct io_queue *q)
{
    return q->head[0] == NULL && q->head[1] == NULL;
}

static void queue_drop_all(struct io_queue *q)
{
    struct io_msg *m;
    while ((m = queue_pop(q)) != NULL) {
        q->bytes[m->cls] -= msg_bytes(m);
        msg_free(m);
    }
}

/* --- connections -------------------------------------------------------------------------------
 */

static void peer_schedule(struct io_peer *p);
static void conn_flush(struct io_conn *c);
static void on_peer_timer(uv_timer_t *timer);

static const char *conn_name(const struct io_conn *c, char *buf, size_t cap)
{
    if (c->hs_received && c->remote_id != 0) {
        snprintf(buf, cap, "%s (node %llu)", c->remote, (unsigned long long)c->remote_id);
    } else if (c->hs_received) {
        snprintf(buf, cap, "%s (anonymous)", c->remote);
    } else {
        snprintf(buf, cap, "%s", c->remote);
    }
    return buf;
}

static void on_conn_closed(uv_handle_t *h)
{
    struct io_conn *c = h->data;
    struct io_transport *t = c->t;
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        t->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    if (c->counted) {
        t->incoming--;
    }
    queue_drop_all(&c->own_q);
    free(c->payload);
    free(c);
    handle_closed(t);
}

/* The messages being written no longer count against their queue's bound. */
static void inflight_uncount(struct io_conn *c)
{
    if (c->inflight_q != NULL) {
        for (struct io_msg *m = c->inflight; m != NULL; m = m->next) {
            c->inflight_q->bytes[m->cls] -= msg_bytes(m);
        }
    }
    c->inflight_q = NULL;
}

/* The write of the in-flight batch ended: count it if `sent`, and release it. */
static void inflight_release(struct io_conn *c, bool sent)
{
    inflight_uncount(c);
    struct io_msg *m = c->inflight;
    c->inflight = NULL;
    while (m != NULL) {
        struct io_msg *next = m->next;
        if (sent && c->peer != NULL) {
            c->peer->stats.bytes_sent += msg_bytes(m);
            c->peer->stats.msgs_sent++;
        }
        msg_free(m);
        m = next;
    }
}

static void conn_close(struct io_conn *c)
{
    if (c->state == CONN_CLOSING) {
        return;
    }
    c->state = CONN_CLOSING;
    if (c->inflight_q != NULL && c->inflight_q != &c->own_q) {
        /* The peer's queue outlives this connection: lost messages stop counting now. */
        inflight_uncount(c);
    }
    struct io_peer *p = c->peer;
    c->peer = NULL;
    if (p != NULL && p->conn == c) {
        p->conn = NULL;
        p->stats.connected = false;
        if (p->timer_mode == TIMER_HANDSHAKE) {
            uv_timer_stop(&p->timer);
            p->timer_mode = TIMER_IDLE;
        }
        peer_schedule(p);
    }
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

/* Closes `c` because of a protocol violation or I/O error, with a log line naming both. */
static void conn_fail(struct io_conn *c, int rc, const char *detail)
{
    char name[REMOTE_MAX + 40];
    io_logf(IO_LOG_WARN, "transport", "closing %s connection %s %s: %s%s%s",
            c->outgoing ? "outgoing" : "incoming", c->outgoing ? "to" : "from",
            conn_name(c, name, sizeof name), io_transport_strerror(rc), detail != NULL ? ": " : "",
            detail != NULL ? detail : "");
    conn_close(c);
}

static struct io_conn *conn_new(struct io_transport *t, bool outgoing)
{
    struct io_conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return NULL;
    }
    c->t = t;
    c->id = ++t->next_conn_id;
    c->outgoing = outgoing;
    c->state = CONN_CONNECTING;
    c->opened_ms = uv_now(t->loop);
    c->tcp.data = c;
    c->connect_req.data = c;
    c->write_req.data = c;
    io_wire_frame_header(IO_WIRE_TYPE_HANDSHAKE, t->handshake, (uint32_t)t->handshake_len,
                         c->hs_frame);
    memcpy(c->hs_frame + IO_WIRE_HEADER_SIZE, t->handshake, t->handshake_len);
    c->hs_frame_len = IO_WIRE_HEADER_SIZE + t->handshake_len;
    if (uv_tcp_init(t->loop, &c->tcp) != 0) {
        free(c);
        return NULL;
    }
    t->handles++;
    c->next = t->conns;
    if (t->conns != NULL) {
        t->conns->prev = c;
    }
    t->conns = c;
    return c;
}

static struct io_queue *conn_queue(struct io_conn *c)
{
    if (c->outgoing) {
        return c->peer != NULL ? &c->peer->q : NULL;
    }
    return &c->own_q;
}

static void on_write(uv_write_t *req, int status)
{
    struct io_conn *c = req->data;
    c->writing = false;
    if (c->inflight != NULL) {
        inflight_release(c, status == 0);
    } else if (status == 0) {
        c->hs_sent = true;
    }
    if (c->state == CONN_CLOSING) {
        return;
    }
    if (status != 0) {
        char name[REMOTE_MAX + 40];
        io_logf(IO_LOG_INFO, "transport", "write to %s failed: %s", conn_name(c, name, sizeof name),
                uv_strerror(status));
        conn_close(c);
        return;
    }
    conn_flush(c);
}

/*
 * Starts the next write: the handshake first, then queued messages, control before bulk. Small
 * messages go out together in one write (up to BATCH_MAX of them, until BATCH_BYTES are
 * reached), so a control message queued meanwhile waits for at most one batch.
 */
static void conn_flush(struct io_conn *c)
{
    uv_buf_t bufs[2 * BATCH_MAX];
    unsigned n = 0;
    if (c->state != CONN_OPEN || c->writing) {
        return;
    }
    if (!c->hs_sent) {
        bufs[0] = uv_buf_init((char *)c->hs_frame, (unsigned)c->hs_frame_len);
        n = 1;
    } else {
        /* An outgoing connection sends nothing until the peer proved to be the node we meant:
         * a stale address must not deliver our messages to some other node. */
        if (c->outgoing && !c->hs_received) {
            return;
        }
        struct io_queue *q = conn_queue(c);
        if (q == NULL) {
            return;
        }
        struct io_msg **tail = &c->inflight;
        size_t bytes = 0;
        for (unsigned count = 0; count < BATCH_MAX && bytes < BATCH_BYTES; count++) {
            struct io_msg *m = queue_pop(q);
            if (m == NULL) {
                break;
            }
            *tail = m;
            tail = &m->next;
            bytes += msg_bytes(m);
            bufs[n++] = uv_buf_init((char *)m->header, IO_WIRE_HEADER_SIZE);
            if (m->len > 0) {
                bufs[n++] = uv_buf_init(m->buf, (unsigned)m->len);
            }
        }
        if (c->inflight == NULL) {
            return;
        }
        c->inflight_q = q;
    }
    c->writing = true;
    int rv = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, bufs, n, on_write);
    if (rv != 0) {
        c->writing = false;
        char name[REMOTE_MAX + 40];
        io_logf(IO_LOG_INFO, "transport", "write to %s failed: %s", conn_name(c, name, sizeof name),
                uv_strerror(rv));
        conn_close(c);
        inflight_release(c, false); /* no write callback follows a refused write */
    }
}

/* --- reading -----------------------------------------------------------------------------------
 */

static int payload_reserve(struct io_conn *c, size_t need)
{
    if (c->payload_cap >= need) {
        return 0;
    }
    size_t cap = c->payload_cap > 0 ? c->payload_cap : READ_CHUNK;
    while (cap < need) {
        cap *= 2;
    }
    if (cap > c->h.length) {
        cap = c->h.length;
    }
    uint8_t *p = realloc(c->payload, cap);
    if (p == NULL) {
        return IO_TRANSPORT_ENOMEM;
    }
    c->payload = p;
    c->payload_cap = cap;
    return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct io_conn *c = h->data;
    (void)suggested;
    if (c->in_payload) {
        size_t remaining = c->h.length - c->payload_have;
        if (remaining >= READ_CHUNK) {
            /* Large payloads are read in place; the buffer grows with the data received. */
            if (payload_reserve(c, c->payload_have + READ_CHUNK) != 0) {
                *buf = uv_buf_init(NULL, 0); /* read callback gets UV_ENOBUFS */
                return;
            }
            size_t room = c->payload_cap - c->payload_have;
            if (room > remaining) {
                room = remaining;
            }
            *buf = uv_buf_init((char *)c->payload + c->payload_have, (unsigned)room);
            return;
        }
    }
    *buf = uv_buf_init((char *)c->rbuf, sizeof c->rbuf);
}

static void read_reset(struct io_conn *c)
{
    c->hdr_have = 0;
    c->in_payload = false;
    c->payload_have = 0;
    if (c->payload_cap > PAYLOAD_KEEP_MAX) {
        free(c->payload);
        c->payload = NULL;
        c->payload_cap = 0;
    }
}

/*
 * Same cluster, or an outsider that cannot know the cluster id yet: an anonymous client (node 0,
 * cluster 0) asking to join or for status is accepted by any node, and a transport whose own
 * cluster id is 0 accepts the cluster id of whichever node it dialled.
 */
static bool cluster_accepts(const struct io_transport *t, const struct io_conn *c,
                            const struct io_wire_handshake *hs)
{
    if (hs->cluster_id == t->cfg.cluster_id) {
        return true;
    }
    if (!c->outgoing) {
        return hs->cluster_id == 0 && hs->node_id == 0;
    }
    return t->cfg.cluster_id == 0;
}

static void handshake_done(struct io_conn *c)
{
    struct io_transport *t = c->t;
    struct io_wire_handshake hs;
    char detail[128];
    int rc = io_wire_handshake_decode(c->payload, c->h.length, &hs);
    if (rc != 0) {
        conn_fail(c, rc, NULL);
        return;
    }
    if (!cluster_accepts(t, c, &hs)) {
        snprintf(detail, sizeof detail, "theirs %llu, ours %llu", (unsigned long long)hs.cluster_id,
                 (unsigned long long)t->cfg.cluster_id);
        conn_fail(c, IO_TRANSPORT_ECLUSTER, detail);
        return;
    }
    if (c->outgoing && c->peer != NULL && c->peer->id != 0 && hs.node_id != c->peer->id) {
        snprintf(detail, sizeof detail, "expected node %llu, found node %llu",
                 (unsigned long long)c->peer->id, (unsigned long long)hs.node_id);
        conn_fail(c, IO_TRANSPORT_EPEERID, detail);
        return;
    }
    c->hs_received = true;
    c->remote_id = hs.node_id;
    snprintf(c->advertised, sizeof c->advertised, "%s", hs.addr);
    if (c->outgoing && c->peer != NULL) {
        c->peer->backoff_ms = t->cfg.backoff_min_ms;
        c->peer->stats.connected = true;
        if (c->peer->timer_mode == TIMER_HANDSHAKE) {
            uv_timer_stop(&c->peer->timer);
            c->peer->timer_mode = TIMER_IDLE;
        }
    }
    char name[REMOTE_MAX + 40];
    io_logf(IO_LOG_INFO, "transport", "%s connection %s %s, advertising \"%s\"",
            c->outgoing ? "outgoing" : "incoming", c->outgoing ? "to" : "from",
            conn_name(c, name, sizeof name), hs.addr);
    conn_flush(c);
}

/* A whole frame is in: header in c->hdr/c->h, payload in c->payload. */
static void frame_done(struct io_conn *c)
{
    struct io_transport *t = c->t;
    int rc = io_wire_frame_verify(c->hdr, c->payload, c->h.length);
    if (rc != 0) {
        conn_fail(c, rc, NULL);
        return;
    }
    if (c->h.type == IO_WIRE_TYPE_HANDSHAKE) {
        handshake_done(c);
        return;
    }
    if (c->remote_id != 0) {
        struct io_peer *p = peer_find(t, c->remote_id, NULL);
        if (p != NULL) {
            p->stats.bytes_received += IO_WIRE_HEADER_SIZE + c->h.length;
            p->stats.msgs_received++;
        }
    }
    if (t->filter != NULL && !t->filter(t->filter_ctx, IO_TRANSPORT_IN, c->remote_id, c->h.type)) {
        return;
    }
    t->cfg.on_message(t, c->remote_id, c->h.type, c->payload, c->h.length, c->id);
}

/* The 24 header bytes are in: validate them before anything is allocated. */
static void header_done(struct io_conn *c)
{
    struct io_transport *t = c->t;
    char detail[64] = "";
    /* Before its handshake a connection is a stranger: it may not make us allocate more than a
     * handshake; anonymous clients send small requests only. */
    uint32_t limit = !c->hs_received     ? IO_WIRE_HANDSHAKE_MAX
                     : c->remote_id == 0 ? IO_WIRE_ANON_PAYLOAD_MAX
                                         : t->cfg.payload_max;
    if (limit > t->cfg.payload_max && c->hs_received) {
        limit = t->cfg.payload_max;
    }
    int rc = io_wire_header_decode(c->hdr, limit, &c->h);
    if ((rc == 0 || rc == IO_TRANSPORT_ELENGTH) && !c->hs_received &&
        c->h.type != IO_WIRE_TYPE_HANDSHAKE) {
        rc = IO_TRANSPORT_ENOHANDSHAKE;
    } else if (rc == 0 && c->hs_received && c->h.type == IO_WIRE_TYPE_HANDSHAKE) {
        rc = IO_TRANSPORT_EREHANDSHAKE;
    } else if (rc == IO_TRANSPORT_ELENGTH && !c->hs_received) {
        rc = IO_TRANSPORT_EHANDSHAKE;
        snprintf(detail, sizeof detail, "%lu bytes, at most %u", (unsigned long)c->h.length,
                 IO_WIRE_HANDSHAKE_MAX);
    } else if (rc == IO_TRANSPORT_ELENGTH) {
        snprintf(detail, sizeof detail, "%lu bytes, maximum %lu%s", (unsigned long)c->h.length,
                 (unsigned long)limit, c->remote_id == 0 ? " from an anonymous client" : "");
    } else if (rc == IO_TRANSPORT_EVERSION) {
        snprintf(detail, sizeof detail, "version %u, this node speaks version %u",
                 (unsigned)c->h.version, IO_WIRE_VERSION);
    }
    if (rc != 0) {
        conn_fail(c, rc, detail[0] != '\0' ? detail : NULL);
        return;
    }
    c->in_payload = true;
    c->payload_have = 0;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct io_conn *c = s->data;
    if (c->state != CONN_OPEN) {
        return;
    }
    if (nread < 0) {
        char name[REMOTE_MAX + 40];
        struct io_transport *t = c->t;
        uint64_t closed_by =
            (nread == UV_EOF || nread == UV_ECONNRESET) && c->hs_received ? c->remote_id : 0;
        if (nread == UV_ENOBUFS) {
            conn_fail(c, IO_TRANSPORT_ENOMEM, "no memory for the payload");
        } else if (c->hdr_have > 0 || c->in_payload) {
            conn_fail(c, IO_TRANSPORT_ETRUNCATED,
                      nread == UV_EOF ? "connection ended inside a frame"
                                      : uv_strerror((int)nread));
        } else {
            io_logf(IO_LOG_INFO, "transport", "connection %s %s closed: %s",
                    c->outgoing ? "to" : "from", conn_name(c, name, sizeof name),
                    uv_strerror((int)nread));
            conn_close(c);
        }
        if (closed_by != 0 && !t->closing && t->cfg.on_closed != NULL) {
            t->cfg.on_closed(t, closed_by);
        }
        return;
    }
    if (buf->base != (char *)c->rbuf) {
        /* Read straight into the payload buffer (see on_alloc). */
        if (nread > 0) {
            c->payload_have += (size_t)nread;
            if (c->payload_have == c->h.length) {
                frame_done(c);
                if (c->state == CONN_OPEN) {
                    read_reset(c);
                }
            }
        }
        return;
    }
    const uint8_t *p = c->rbuf;
    size_t n = (size_t)nread;
    while (c->state == CONN_OPEN && !c->t->closing) {
        if (!c->in_payload) {
            if (n == 0) {
                break;
            }
            size_t take = IO_WIRE_HEADER_SIZE - c->hdr_have;
            take = take < n ? take : n;
            memcpy(c->hdr + c->hdr_have, p, take);
            c->hdr_have += take;
            p += take;
            n -= take;
            if (c->hdr_have < IO_WIRE_HEADER_SIZE) {
                break;
            }
            header_done(c);
            continue; /* a zero-length payload completes below without more bytes */
        }
        size_t remaining = c->h.length - c->payload_have;
        size_t take = remaining < n ? remaining : n;
        if (take > 0) {
            if (payload_reserve(c, c->payload_have + take) != 0) {
                conn_fail(c, IO_TRANSPORT_ENOMEM, "no memory for the payload");
                break;
            }
            memcpy(c->payload + c->payload_have, p, take);
            c->payload_have += take;
            p += take;
            n -= take;
        }
        if (c->payload_have < c->h.length) {
            break;
        }
        frame_done(c);
        if (c->state == CONN_OPEN) {
            read_reset(c);
        }
    }
}

/*
 * A peer that vanished without closing (power loss, partition) is noticed within about
 * DEAD_PEER_S seconds rather than the kernel's defaults (minutes): keepalive probes on an idle
 * connection, and a limit on how long written data may stay unacknowledged. Best effort.
 */
#define DEAD_PEER_S 15
static void conn_tune(struct io_conn *c)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0) {
        return;
    }
    int idle = DEAD_PEER_S / 3, intvl = DEAD_PEER_S / 3 / 3 + 1, cnt = 3;
    unsigned user_timeout_ms = DEAD_PEER_S * 1000;
    /* Both directions: messages go out on the sender's own outgoing connection, where Nagle's
     * algorithm would hold a small AppendEntries or acknowledgement back until the previous
     * segment is acknowledged (up to the peer's 40 ms delayed ACK). */
    uv_tcp_nodelay(&c->tcp, 1);
    uv_tcp_keepalive(&c->tcp, 1, (unsigned)idle);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
    (void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
}

static void conn_start(struct io_conn *c)
{
    c->state = CONN_OPEN;
    conn_tune(c);
    int rv = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rv != 0) {
        char name[REMOTE_MAX + 40];
        io_logf(IO_LOG_WARN, "transport", "cannot read from %s: %s",
                conn_name(c, name, sizeof name), uv_strerror(rv));
        conn_close(c);
        return;
    }
    conn_flush(c);
}

/* --- outgoing connections ----------------------------------------------------------------------
 */

static void on_connect(uv_connect_t *req, int status)
{
    struct io_conn *c = req->data;
    if (c->state == CONN_CLOSING) {
        return;
    }
    if (status != 0) {
        io_logf(IO_LOG_DEBUG, "transport", "cannot connect to %s: %s", c->remote,
                uv_strerror(status));
        conn_close(c);
        return;
    }
    conn_start(c);
}

static void peer_connect(struct io_peer *p)
{
    struct io_transport *t = p->t;
    if (p->conn != NULL || p->removed || t->closing || !p->has_addr) {
        return;
    }
    struct io_conn *c = conn_new(t, true);
    if (c == NULL) {
        io_logf(IO_LOG_WARN, "transport", "cannot connect to %s: out of memory", p->addr);
        peer_schedule(p);
        return;
    }
    if (p->attempts++ > 0) {
        p->stats.reconnects++;
    }
    c->peer = p;
    p->conn = c;
    snprintf(c->remote, sizeof c->remote, "%s", p->addr);
    int rv = uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&p->sa, on_connect);
    if (rv != 0) {
        io_logf(IO_LOG_DEBUG, "transport", "cannot connect to %s: %s", p->addr, uv_strerror(rv));
        conn_close(c);
        return;
    }
    /* The whole of connect and handshake is bounded: a black-holed address or a server that
     * never speaks would otherwise hold the queue forever. */
    p->timer_mode = TIMER_HANDSHAKE;
    uv_timer_start(&p->timer, on_peer_timer, t->cfg.handshake_timeout_ms, 0);
}

/* Either the backoff delay ended, or the peer did not complete its handshake in time. */
static void on_peer_timer(uv_timer_t *timer)
{
    struct io_peer *p = timer->data;
    int mode = p->timer_mode;
    p->timer_mode = TIMER_IDLE;
    if (mode == TIMER_HANDSHAKE) {
        if (p->conn != NULL && !p->conn->hs_received) {
            char detail[64];
            snprintf(detail, sizeof detail, "nothing within %u ms",
                     (unsigned)p->t->cfg.handshake_timeout_ms);
            conn_fail(p->conn, IO_TRANSPORT_ETIMEDOUT, detail);
        }
        return;
    }
    if (!queue_empty(&p->q)) {
        peer_connect(p);
    }
}

/* Arranges a reconnect after the backoff delay, if there is anything to send. */
static void peer_schedule(struct io_peer *p)
{
    struct io_transport *t = p->t;
    if (t->closing || p->removed || p->timer_mode != TIMER_IDLE || p->conn != NULL ||
        queue_empty(&p->q)) {
        return;
    }
    uint32_t base = p->backoff_ms;
    uint64_t delay = base / 2 + rng_next(t) % (base / 2 + 1);
    uint32_t next = base * 2;
    p->backoff_ms = next > t->cfg.backoff_max_ms ? t->cfg.backoff_max_ms : next;
    p->timer_mode = TIMER_BACKOFF;
    uv_timer_start(&p->timer, on_peer_timer, delay, 0);
}

static void on_peer_timer_closed(uv_handle_t *h)
{
    struct io_peer *p = h->data;
    struct io_transport *t = p->t;
    free(p);
    handle_closed(t);
}

static int peer_new(struct io_transport *t, uint64_t id, struct io_peer **out)
{
    struct io_peer *p = calloc(1, sizeof *p);
    if (p == NULL) {
        return IO_TRANSPORT_ENOMEM;
    }
    p->t = t;
    p->id = id;
    p->stats.id = id;
    p->backoff_ms = t->cfg.backoff_min_ms;
    if (uv_timer_init(t->loop, &p->timer) != 0) {
        free(p);
        return IO_TRANSPORT_ESYS;
    }
    p->timer.data = p;
    t->handles++;
    p->next = t->peers;
    t->peers = p;
    *out = p;
    return 0;
}

/* Gives `p` the address `addr` (already parsed into `sa`); reconnects if it changed. */
static void peer_set_addr(struct io_peer *p, const char *addr, const struct sockaddr_storage *sa)
{
    if (p->has_addr && strcmp(p->addr, addr) == 0) {
        return;
    }
    snprintf(p->addr, sizeof p->addr, "%s", addr);
    p->sa = *sa;
    p->has_addr = true;
    if (p->conn != NULL) {
        conn_close(p->conn); /* reconnects to the new address through peer_schedule */
    }
}

/* --- incoming connections ----------------------------------------------------------------------
 */

static void on_connection(uv_stream_t *server, int status)
{
    struct io_transport *t = server->data;
    if (status != 0) {
        io_logf(IO_LOG_WARN, "transport", "accept failed: %s", uv_strerror(status));
        return;
    }
    if (t->closing) {
        return;
    }
    struct io_conn *c = conn_new(t, false);
    if (c != NULL && t->incoming >= INCOMING_MAX) {
        /* Accept and close at once: leaving it in the backlog would wake us again and again. */
        io_logf(IO_LOG_WARN, "transport", "refusing a connection: %d incoming already open",
                INCOMING_MAX);
        (void)uv_accept(server, (uv_stream_t *)&c->tcp); /* the close releases it either way */
        conn_close(c);
        return;
    }
    if (c == NULL) {
        io_logf(IO_LOG_WARN, "transport", "cannot accept a connection: out of memory");
        return;
    }
    int rv = uv_accept(server, (uv_stream_t *)&c->tcp);
    if (rv != 0) {
        io_logf(IO_LOG_WARN, "transport", "accept failed: %s", uv_strerror(rv));
        conn_close(c);
        return;
    }
    struct sockaddr_storage sa;
    int len = sizeof sa;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &len) == 0) {
        sockaddr_format(&sa, c->remote, sizeof c->remote);
    } else {
        snprintf(c->remote, sizeof c->remote, "?");
    }
    t->incoming++;
    c->counted = true;
    conn_start(c);
}

/* Closes accepted connections that have not sent their handshake in time (idle strangers). */
static void on_sweep(uv_timer_t *timer)
{
    struct io_transport *t = timer->data;
    uint64_t now = uv_now(t->loop);
    for (struct io_conn *c = t->conns; c != NULL; c = c->next) {
        if (!c->outgoing && !c->hs_received && c->state == CONN_OPEN &&
            now - c->opened_ms >= t->cfg.handshake_timeout_ms) {
            char detail[64];
            snprintf(detail, sizeof detail, "nothing within %u ms",
                     (unsigned)t->cfg.handshake_timeout_ms);
            conn_fail(c, IO_TRANSPORT_ETIMEDOUT, detail);
        }
    }
}

/* Binds and listens with plain system calls first, so a failure leaves no libuv handle behind. */
static int listen_socket(const struct sockaddr_storage *sa, int *fd_out, int *port_out)
{
    int fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return IO_TRANSPORT_ESYS;
    }
    int one = 1;
    socklen_t sl =
        sa->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    struct sockaddr_storage bound;
    socklen_t bl = sizeof bound;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (const struct sockaddr *)sa, sl) != 0 || listen(fd, LISTEN_BACKLOG) != 0 ||
        getsockname(fd, (struct sockaddr *)&bound, &bl) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return IO_TRANSPORT_ELISTEN;
    }
    *port_out = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                            : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    *fd_out = fd;
    return 0;
}

/*
 * A write to a connection the peer has reset raises SIGPIPE, whose default action kills the
 * process: a node must survive its peers. Only the default disposition is changed; a handler
 * the host installed is left alone.
 */
static void ignore_sigpipe(void)
{
    struct sigaction old;
    if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL &&
        (old.sa_flags & SA_SIGINFO) == 0) {
        signal(SIGPIPE, SIG_IGN);
    }
}

/* --- public API --------------------------------------------------------------------------------
 */

int io_transport_init(struct io_transport *t, uv_loop_t *loop,
                      const struct io_transport_config *cfg)
{
    assert(t != NULL);
    assert(loop != NULL);
    void *data = cfg != NULL ? cfg->data : NULL;
    memset(t, 0, sizeof *t);
    t->data = data;
    if (cfg == NULL || cfg->on_message == NULL) {
        return IO_TRANSPORT_EINVAL;
    }
    t->loop = loop;
    t->cfg = *cfg;
    t->cfg.listen_addr = NULL; /* not kept: the caller's string need not outlive init */
    t->cfg.advertise_addr = NULL;
    if (t->cfg.payload_max == 0) {
        t->cfg.payload_max = IO_WIRE_PAYLOAD_MAX_DEFAULT;
    }
    if (t->cfg.queue_bytes_max == 0) {
        t->cfg.queue_bytes_max = QUEUE_BYTES_MAX_DEFAULT;
    }
    if (t->cfg.backoff_min_ms == 0) {
        t->cfg.backoff_min_ms = BACKOFF_MIN_MS_DEFAULT;
    }
    if (t->cfg.backoff_max_ms == 0) {
        t->cfg.backoff_max_ms = BACKOFF_MAX_MS_DEFAULT;
    }
    if (t->cfg.handshake_timeout_ms == 0) {
        t->cfg.handshake_timeout_ms = HANDSHAKE_TIMEOUT_MS_DEFAULT;
    }
    if (t->cfg.backoff_max_ms < t->cfg.backoff_min_ms) {
        return IO_TRANSPORT_EINVAL;
    }
    t->rng = cfg->seed;
    ignore_sigpipe();

    int fd = -1;
    if (cfg->listen_addr != NULL) {
        struct sockaddr_storage sa;
        char host[IO_WIRE_ADDR_MAX + 1];
        int rc = parse_addr(cfg->listen_addr, &sa, host, sizeof host);
        if (rc != 0) {
            return rc;
        }
        rc = listen_socket(&sa, &fd, &t->port);
        if (rc != 0) {
            io_logf(IO_LOG_ERROR, "transport", "cannot listen on %s: %s", cfg->listen_addr,
                    strerror(errno));
            return rc;
        }
        if (sa.ss_family == AF_INET6) {
            snprintf(t->advertise, sizeof t->advertise, "[%.200s]:%d", host, t->port);
        } else {
            snprintf(t->advertise, sizeof t->advertise, "%.200s:%d", host, t->port);
        }
    }
    if (cfg->advertise_addr != NULL) {
        if (strlen(cfg->advertise_addr) > IO_WIRE_ADDR_MAX) {
            if (fd >= 0) {
                close(fd);
            }
            return IO_TRANSPORT_EADDR;
        }
        snprintf(t->advertise, sizeof t->advertise, "%s", cfg->advertise_addr);
    }
    struct io_wire_handshake hs = {.cluster_id = cfg->cluster_id, .node_id = cfg->self_id};
    snprintf(hs.addr, sizeof hs.addr, "%s", t->advertise);
    int rc = io_wire_handshake_encode(&hs, t->handshake, sizeof t->handshake, &t->handshake_len);
    assert(rc == 0);
    (void)rc;

    if (fd >= 0) {
        if (uv_tcp_init(loop, &t->listener) != 0) {
            close(fd);
            return IO_TRANSPORT_ESYS;
        }
        t->listener.data = t;
        int rv = uv_tcp_open(&t->listener, fd);
        if (rv != 0) {
            close(fd); /* not adopted by the handle */
        } else {
            rv = uv_listen((uv_stream_t *)&t->listener, LISTEN_BACKLOG, on_connection);
        }
        if (rv != 0) {
            io_logf(IO_LOG_ERROR, "transport", "cannot listen on %s: %s", t->advertise,
                    uv_strerror(rv));
            uv_close((uv_handle_t *)&t->listener, NULL); /* and the adopted fd, if any */
            return IO_TRANSPORT_ESYS;
        }
        t->listening = true;
        t->handles++;
        /* uv_timer_init cannot fail: it only fills in the handle. */
        uv_timer_init(loop, &t->sweep);
        t->sweep.data = t;
        t->handles++;
        uint64_t every = t->cfg.handshake_timeout_ms / 2;
        every = every < 10 ? 10 : every > 1000 ? 1000 : every;
        uv_timer_start(&t->sweep, on_sweep, every, every);
    }
    return 0;
}

int io_transport_port(const struct io_transport *t)
{
    return t->listening ? t->port : 0;
}

bool io_transport_advertised(const struct io_transport *t, uint64_t node_id, char *out, size_t n)
{
    for (const struct io_conn *c = t->conns; c != NULL; c = c->next) {
        size_t len = strlen(c->advertised);
        if (node_id != 0 && c->remote_id == node_id && c->state == CONN_OPEN && len > 0 &&
            len < n) {
            memcpy(out, c->advertised, len + 1);
            return true;
        }
    }
    return false;
}

const char *io_transport_address(const struct io_transport *t)
{
    return t->advertise;
}

int io_transport_set_peer(struct io_transport *t, uint64_t id, const char *addr)
{
    struct sockaddr_storage sa;
    if (id == 0) {
        return IO_TRANSPORT_EINVAL;
    }
    if (t->closing) {
        return IO_TRANSPORT_ECLOSING;
    }
    int rc = parse_addr(addr, &sa, NULL, 0);
    if (rc != 0) {
        return rc;
    }
    struct io_peer *p = peer_find(t, id, NULL);
    if (p == NULL) {
        rc = peer_new(t, id, &p);
        if (rc != 0) {
            return rc;
        }
    }
    peer_set_addr(p, addr, &sa);
    return 0;
}

static void peer_unlink_and_close(struct io_transport *t, struct io_peer *p)
{
    struct io_peer **pp = &t->peers;
    while (*pp != p) {
        pp = &(*pp)->next;
    }
    *pp = p->next;
    p->removed = true;
    if (p->conn != NULL) {
        conn_close(p->conn);
    }
    queue_drop_all(&p->q);
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, on_peer_timer_closed);
}

void io_transport_remove_peer(struct io_transport *t, uint64_t id)
{
    struct io_peer *p;
    while ((p = peer_find(t, id, NULL)) != NULL && id != 0) {
        peer_unlink_and_close(t, p);
    }
}

static int queue_admit(struct io_transport *t, struct io_queue *q, enum io_transport_class cls,
                       size_t len)
{
    size_t bytes = IO_WIRE_HEADER_SIZE + len;
    if (q->bytes[cls] > 0 && q->bytes[cls] + bytes > t->cfg.queue_bytes_max) {
        return IO_TRANSPORT_EQUEUEFULL;
    }
    return 0;
}

/* Common to the three send functions: `m` has buf/len/free_cb set. On error `m` is not freed. */
static int send_msg(struct io_transport *t, uint64_t peer_id, const char *addr, uint64_t conn_id,
                    bool reply, uint16_t type, enum io_transport_class cls, struct io_msg *m)
{
    struct sockaddr_storage sa;
    struct io_queue *q;
    struct io_peer *p = NULL;
    struct io_conn *c = NULL;
    int rc;

    assert(cls == IO_TRANSPORT_CONTROL || cls == IO_TRANSPORT_BULK);
    if (t->closing) {
        return IO_TRANSPORT_ECLOSING;
    }
    if (type == IO_WIRE_TYPE_HANDSHAKE) {
        return IO_TRANSPORT_EINVAL;
    }
    if (m->len > t->cfg.payload_max) {
        return IO_TRANSPORT_ETOOBIG;
    }
    if (reply) {
        c = conn_find(t, conn_id);
        if (c == NULL || c->state == CONN_CLOSING) {
            return IO_TRANSPORT_ENOCONN;
        }
        q = conn_queue(c);
        if (q == NULL) {
            return IO_TRANSPORT_ENOCONN;
        }
        peer_id = c->remote_id;
    } else {
        if (addr != NULL) {
            rc = parse_addr(addr, &sa, NULL, 0);
            if (rc != 0) {
                return rc;
            }
        } else if (peer_id == 0) {
            return IO_TRANSPORT_ENOADDR;
        }
        p = peer_find(t, peer_id, addr);
        if (p == NULL && addr == NULL) {
            return IO_TRANSPORT_ENOADDR;
        }
        if (p != NULL && !p->has_addr && addr == NULL) {
            return IO_TRANSPORT_ENOADDR;
        }
        q = p != NULL ? &p->q : NULL;
        if (q != NULL) {
            rc = queue_admit(t, q, cls, m->len);
            if (rc != 0) {
                p->stats.drops_full++;
                return rc;
            }
        }
        if (p == NULL) {
            rc = peer_new(t, peer_id, &p);
            if (rc != 0) {
                return rc;
            }
            q = &p->q;
        }
        if (addr != NULL) {
            peer_set_addr(p, addr, &sa);
        }
    }
    if (reply) {
        rc = queue_admit(t, q, cls, m->len);
        if (rc != 0) {
            return rc;
        }
    }
    if (t->filter != NULL && !t->filter(t->filter_ctx, IO_TRANSPORT_OUT, peer_id, type)) {
        msg_free(m);
        return 0;
    }
    m->type = type;
    m->cls = (uint8_t)cls;
    io_wire_frame_header(type, m->buf, (uint32_t)m->len, m->header);
    queue_push(q, m);
    if (reply) {
        conn_flush(c);
    } else if (p->conn != NULL) {
        conn_flush(p->conn);
    } else if (p->timer_mode != TIMER_BACKOFF) {
        peer_connect(p);
    }
    return 0;
}

int io_transport_send(struct io_transport *t, uint64_t peer_id, const char *addr, uint16_t type,
                      enum io_transport_class cls, const void *buf, size_t len)
{
    assert(buf != NULL || len == 0);
    if (len > t->cfg.payload_max) {
        return IO_TRANSPORT_ETOOBIG;
    }
    struct io_msg *m = malloc(sizeof *m + len);
    if (m == NULL) {
        return IO_TRANSPORT_ENOMEM;
    }
    memset(m, 0, sizeof *m);
    if (len > 0) {
        memcpy(m->inline_data, buf, len);
    }
    m->buf = m->inline_data;
    m->len = len;
    int rc = send_msg(t, peer_id, addr, 0, false, type, cls, m);
    if (rc != 0) {
        free(m);
    }
    return rc;
}

static void free_default(void *buf)
{
    free(buf);
}

int io_transport_send_owned(struct io_transport *t, uint64_t peer_id, const char *addr,
                            uint16_t type, enum io_transport_class cls, void *buf, size_t len,
                            io_transport_free_cb free_cb)
{
    assert(buf != NULL);
    struct io_msg *m = calloc(1, sizeof *m);
    if (m == NULL) {
        return IO_TRANSPORT_ENOMEM;
    }
    m->buf = buf;
    m->len = len;
    m->free_cb = free_cb != NULL ? free_cb : free_default;
    int rc = send_msg(t, peer_id, addr, 0, false, type, cls, m);
    if (rc != 0) {
        free(m); /* not msg_free: the buffer stays the caller's */
    }
    return rc;
}

int io_transport_reply(struct io_transport *t, uint64_t conn_id, uint16_t type,
                       enum io_transport_class cls, const void *buf, size_t len)
{
    assert(buf != NULL || len == 0);
    if (len > t->cfg.payload_max) {
        return IO_TRANSPORT_ETOOBIG;
    }
    struct io_msg *m = malloc(sizeof *m + len);
    if (m == NULL) {
        return IO_TRANSPORT_ENOMEM;
    }
    memset(m, 0, sizeof *m);
    if (len > 0) {
        memcpy(m->inline_data, buf, len);
    }
    m->buf = m->inline_data;
    m->len = len;
    int rc = send_msg(t, 0, NULL, conn_id, true, type, cls, m);
    if (rc != 0) {
        free(m);
    }
    return rc;
}

void io_transport_set_filter(struct io_transport *t, io_transport_filter_fn fn, void *ctx)
{
    t->filter = fn;
    t->filter_ctx = ctx;
}

int io_transport_peer_stats(const struct io_transport *t, uint64_t id,
                            struct io_transport_peer_stats *out)
{
    const struct io_peer *p = peer_find(t, id, NULL);
    if (p == NULL || id == 0) {
        return IO_TRANSPORT_ENOADDR;
    }
    *out = p->stats;
    out->queued_bytes = p->q.bytes[0] + p->q.bytes[1];
    return 0;
}

/* The listener or the sweep timer. */
static void on_listener_closed(uv_handle_t *h)
{
    handle_closed(h->data);
}

void io_transport_close(struct io_transport *t, io_transport_close_cb cb)
{
    assert(!t->closing);
    t->closing = true;
    t->close_cb = cb;
    if (t->listening) {
        uv_close((uv_handle_t *)&t->listener, on_listener_closed);
        uv_close((uv_handle_t *)&t->sweep, on_listener_closed);
        t->listening = false;
    }
    while (t->peers != NULL) {
        peer_unlink_and_close(t, t->peers);
    }
    for (struct io_conn *c = t->conns; c != NULL; c = c->next) {
        conn_close(c);
    }
    if (t->handles == 0 && t->close_cb != NULL) {
        t->close_cb = NULL;
        cb(t);
    }
}
