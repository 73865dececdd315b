/*
 * The TCP transport (consensus/io/transport.h), end to end over 127.0.0.1 on one libuv loop.
 * Every wait is bounded by a timer so a hang fails the test instead of blocking it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "consensus/io/transport.h"

#define CLUSTER 0xC1C1C1C1ull
#define WAIT_MS 10000
#define MAX_NODES 8
#define NO_CLUSTER UINT64_MAX /* in a test config: cluster id 0, an outsider */

/* --- harness -----------------------------------------------------------------------------------
 */

struct rx {
    uint64_t from;
    uint16_t type;
    uint32_t seq;
    size_t len;
    uint64_t conn;
};

struct node {
    struct io_transport t;
    uint64_t id;
    bool closed;
    struct rx *rx;
    size_t n_rx;
    size_t cap_rx;
    unsigned corrupt;  /* payloads whose pattern did not match */
    unsigned reorders; /* messages from a sender that arrived out of sequence */
    uint32_t next_seq[MAX_NODES];
    bool echo_replies; /* answer every message with a reply on its connection */
    bool close_on_message;
    void (*hook)(struct node *n, const struct rx *r);
    void *hook_ctx;
    uint64_t closed_by[4]; /* ids passed to on_closed, first four */
    unsigned n_closed_by;
};

static uv_loop_t loop;
static struct node *live[MAX_NODES * 2]; /* started and not yet stopped, for teardown */
static int saved_stderr = -1;            /* set while stderr is captured */
static uv_timer_t deadline;
static uv_timer_t ticker; /* wakes the loop so predicates on raw sockets are re-checked */
static bool timed_out;

static void on_deadline(uv_timer_t *h)
{
    (void)h;
    timed_out = true;
}

static void on_tick(uv_timer_t *h)
{
    (void)h;
}

static bool run_until(bool (*pred)(void *), void *ctx, uint64_t ms)
{
    timed_out = false;
    uv_timer_start(&deadline, on_deadline, ms, 0);
    while (!pred(ctx) && !timed_out) {
        uv_run(&loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&deadline);
    return pred(ctx);
}

/* Runs the loop for `ms` whatever happens. */
static bool never(void *ctx)
{
    (void)ctx;
    return false;
}

static void run_for(uint64_t ms)
{
    run_until(never, NULL, ms);
}

static int setup(void **state)
{
    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    uv_timer_init(&loop, &deadline);
    uv_timer_init(&loop, &ticker);
    uv_timer_start(&ticker, on_tick, 2, 2);
    return 0;
}

static bool all_closed(void *ctx)
{
    (void)ctx;
    for (size_t i = 0; i < sizeof live / sizeof live[0]; i++) {
        if (live[i] != NULL && !live[i]->closed) {
            return false;
        }
    }
    return true;
}

static void on_closed(struct io_transport *t);

static int teardown(void **state)
{
    (void)state;
    if (saved_stderr >= 0) {
        dup2(saved_stderr, 2);
        close(saved_stderr);
        saved_stderr = -1;
    }
    /* After a failed assertion: close whatever the test left open, so the loop can end. */
    for (size_t i = 0; i < sizeof live / sizeof live[0]; i++) {
        if (live[i] != NULL && !live[i]->closed && !live[i]->t.closing) {
            io_transport_close(&live[i]->t, on_closed);
        }
    }
    assert_true(run_until(all_closed, NULL, WAIT_MS));
    for (size_t i = 0; i < sizeof live / sizeof live[0]; i++) {
        if (live[i] != NULL) {
            free(live[i]->rx);
            live[i]->rx = NULL;
            live[i] = NULL;
        }
    }
    uv_close((uv_handle_t *)&deadline, NULL);
    uv_close((uv_handle_t *)&ticker, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    /* Every handle the transports opened must be closed: uv_loop_close fails otherwise. */
    assert_int_equal(uv_loop_close(&loop), 0);
    return 0;
}

static uint8_t pattern(uint32_t seq, size_t i)
{
    return (uint8_t)(seq * 31u + i * 7u + (i >> 8));
}

static uint8_t *make_payload(uint32_t seq, size_t len)
{
    uint8_t *p = malloc(len > 0 ? len : 1);
    assert_non_null(p);
    for (size_t i = 0; i < len; i++) {
        p[i] = pattern(seq, i);
    }
    if (len >= 4) {
        memcpy(p, &seq, 4);
    }
    return p;
}

static void on_message(struct io_transport *t, uint64_t from, uint16_t type, const void *buf,
                       size_t len, uint64_t conn)
{
    struct node *n = t->data;
    struct rx r = {.from = from, .type = type, .len = len, .conn = conn, .seq = UINT32_MAX};
    const uint8_t *b = buf;
    if (len >= 4) {
        memcpy(&r.seq, b, 4);
        for (size_t i = 4; i < len; i++) {
            if (b[i] != pattern(r.seq, i)) {
                n->corrupt++;
                break;
            }
        }
        if (from < MAX_NODES && type < 100) { /* types >= 100 are not sequenced */
            if (r.seq != n->next_seq[from]) {
                n->reorders++;
            }
            n->next_seq[from] = r.seq + 1;
        }
    }
    if (n->n_rx == n->cap_rx) {
        n->cap_rx = n->cap_rx ? 2 * n->cap_rx : 64;
        n->rx = realloc(n->rx, n->cap_rx * sizeof *n->rx);
        assert_non_null(n->rx);
    }
    n->rx[n->n_rx++] = r;
    if (n->echo_replies) {
        char answer[64];
        int k = snprintf(answer, sizeof answer, "....reply from %llu", (unsigned long long)n->id);
        memcpy(answer, &r.seq, 4);
        assert_int_equal(io_transport_reply(t, conn, 200, IO_TRANSPORT_CONTROL, answer, (size_t)k),
                         0);
    }
    if (n->hook != NULL) {
        n->hook(n, &r);
    }
}

static void on_closed(struct io_transport *t)
{
    struct node *n = t->data;
    n->closed = true;
}

static void track(struct node *n)
{
    for (size_t i = 0; i < sizeof live / sizeof live[0]; i++) {
        if (live[i] == n || live[i] == NULL) {
            live[i] = n;
            return;
        }
    }
    fail();
}

static void untrack(struct node *n)
{
    for (size_t i = 0; i < sizeof live / sizeof live[0]; i++) {
        if (live[i] == n) {
            live[i] = NULL;
        }
    }
}

static void node_start_cfg(struct node *n, uint64_t id, const char *listen,
                           struct io_transport_config *cfg)
{
    memset(n, 0, sizeof *n);
    n->id = id;
    cfg->cluster_id = cfg->cluster_id == NO_CLUSTER ? 0
                      : cfg->cluster_id             ? cfg->cluster_id
                                                    : CLUSTER;
    cfg->self_id = id;
    cfg->listen_addr = listen;
    cfg->seed = cfg->seed ? cfg->seed : id * 1000 + 7;
    cfg->on_message = on_message;
    cfg->data = n;
    if (cfg->backoff_min_ms == 0) {
        cfg->backoff_min_ms = 10;
        cfg->backoff_max_ms = 200;
    }
    assert_int_equal(io_transport_init(&n->t, &loop, cfg), 0);
    track(n);
}

static void node_start(struct node *n, uint64_t id, const char *listen)
{
    struct io_transport_config cfg = {0};
    node_start_cfg(n, id, listen, &cfg);
}

static bool is_closed(void *ctx)
{
    return ((struct node *)ctx)->closed;
}

static void node_stop(struct node *n)
{
    io_transport_close(&n->t, on_closed);
    assert_true(run_until(is_closed, n, WAIT_MS));
    free(n->rx);
    n->rx = NULL;
    untrack(n);
}

static const char *addr_of(struct node *n)
{
    return io_transport_address(&n->t);
}

struct count_wait {
    struct node *n;
    size_t want;
};

static bool has_count(void *ctx)
{
    struct count_wait *w = ctx;
    return w->n->n_rx >= w->want;
}

static bool wait_rx(struct node *n, size_t want)
{
    struct count_wait w = {n, want};
    return run_until(has_count, &w, WAIT_MS);
}

static void send_seq(struct node *from, struct node *to, uint32_t seq, size_t len, bool owned)
{
    uint8_t *p = make_payload(seq, len);
    int rc;
    if (owned) {
        rc = io_transport_send_owned(&from->t, to->id, addr_of(to), 1, IO_TRANSPORT_CONTROL, p, len,
                                     NULL);
    } else {
        rc = io_transport_send(&from->t, to->id, addr_of(to), 1, IO_TRANSPORT_CONTROL, p, len);
        free(p);
    }
    assert_int_equal(rc, 0);
}

/* Captures stderr (where io_logf writes) into a temporary file. */
struct capture {
    int saved;
    FILE *f;
};

static void capture_start(struct capture *c)
{
    fflush(stderr);
    c->f = tmpfile();
    assert_non_null(c->f);
    c->saved = dup(2);
    saved_stderr = c->saved;
    dup2(fileno(c->f), 2);
}

static char *capture_end(struct capture *c)
{
    fflush(stderr);
    dup2(c->saved, 2);
    close(c->saved);
    saved_stderr = -1;
    long size = ftell(c->f);
    char *s = calloc(1, (size_t)size + 1);
    rewind(c->f);
    size_t got = fread(s, 1, (size_t)size, c->f);
    s[got] = '\0';
    fclose(c->f);
    fputs(s, stderr); /* keep the lines visible in the test output */
    return s;
}

/* --- sizes -------------------------------------------------------------------------------------
 */

static size_t size_for(uint32_t seq)
{
    if (seq % 97 == 13) {
        return 3u * 1024 * 1024 + seq; /* a few MiB */
    }
    switch (seq % 5) {
    case 0:
        return 4;
    case 1:
        return 100 + seq % 300;
    case 2:
        return 4096 + seq;
    case 3:
        return 65536 + 3 * seq; /* around the read chunk */
    default:
        return 200000 + seq;
    }
}

/* --- tests -------------------------------------------------------------------------------------
 */

static void test_io_transport_two_nodes_exchange_in_order(void **state)
{
    (void)state;
    enum { N = 300 };
    static struct node a, b;
    node_start(&a, 1, "127.0.0.1:0");
    node_start(&b, 2, "127.0.0.1:0");
    assert_true(io_transport_port(&a.t) > 0);
    assert_true(io_transport_port(&b.t) != io_transport_port(&a.t));
    /* Both sides dial each other at once. */
    for (uint32_t i = 0; i < N; i++) {
        send_seq(&a, &b, i, size_for(i), i % 2 == 0);
        send_seq(&b, &a, i, size_for(i + 1), i % 3 == 0);
        if (i % 50 == 0) {
            run_for(1);
        }
    }
    assert_true(wait_rx(&b, N));
    assert_true(wait_rx(&a, N));
    assert_int_equal(a.corrupt + b.corrupt, 0);
    assert_int_equal(a.reorders + b.reorders, 0);
    for (uint32_t i = 0; i < N; i++) {
        assert_int_equal(b.rx[i].seq, i);
        assert_int_equal(b.rx[i].len, size_for(i));
        assert_true(b.rx[i].from == 1);
        assert_int_equal(a.rx[i].len, size_for(i + 1));
    }
    struct io_transport_peer_stats st;
    assert_int_equal(io_transport_peer_stats(&a.t, 2, &st), 0);
    assert_true(st.connected);
    assert_true(st.msgs_sent == N);
    assert_true(st.msgs_received == N);
    assert_true(st.bytes_sent > 3u * 1024 * 1024);
    assert_true(st.queued_bytes == 0);
    assert_int_equal(io_transport_peer_stats(&a.t, 99, &st), IO_TRANSPORT_ENOADDR);
    node_stop(&a);
    node_stop(&b);
}

/* One entry larger than the queue bound (a big transaction) goes whole; control still flows. */
static void test_io_transport_single_message_above_queue_bound(void **state)
{
    (void)state;
    static struct node a, b;
    node_start(&a, 1, "127.0.0.1:0");
    node_start(&b, 2, "127.0.0.1:0");
    const size_t big = 80u * 1024 * 1024; /* above the 64 MiB default bound */
    uint8_t *p = make_payload(0, big);
    assert_int_equal(
        io_transport_send_owned(&a.t, 2, addr_of(&b), 1, IO_TRANSPORT_BULK, p, big, NULL), 0);
    uint32_t seq = 1;
    assert_int_equal(io_transport_send(&a.t, 2, NULL, 1, IO_TRANSPORT_BULK, &seq, 4),
                     IO_TRANSPORT_EQUEUEFULL);
    assert_int_equal(io_transport_send(&a.t, 2, NULL, 2, IO_TRANSPORT_CONTROL, &seq, 4), 0);
    assert_true(wait_rx(&b, 2));
    assert_int_equal(b.corrupt, 0);
    assert_int_equal(b.rx[0].type, 2); /* queued together: control went first */
    assert_int_equal(b.rx[1].len, big);
    struct io_transport_peer_stats st;
    assert_int_equal(io_transport_peer_stats(&a.t, 2, &st), 0);
    assert_true(st.queued_bytes == 0);
    assert_true(st.bytes_sent == 2 * IO_WIRE_HEADER_SIZE + big + 4);
    node_stop(&a);
    node_stop(&b);
}

static void test_io_transport_three_nodes_in_order_per_peer(void **state)
{
    (void)state;
    enum { N = 150 };
    static struct node n[3];
    for (int i = 0; i < 3; i++) {
        node_start(&n[i], (uint64_t)i + 1, "127.0.0.1:0");
    }
    for (uint32_t s = 0; s < N; s++) {
        for (int i = 0; i < 3; i++) {
            for (int j = 0; j < 3; j++) {
                if (i != j) {
                    send_seq(&n[i], &n[j], s, size_for(s * 3 + (uint32_t)j), s % 2 == 1);
                }
            }
        }
    }
    for (int i = 0; i < 3; i++) {
        assert_true(wait_rx(&n[i], 2 * N));
        assert_int_equal(n[i].corrupt, 0);
        assert_int_equal(n[i].reorders, 0);
        for (int j = 0; j < 3; j++) {
            if (i != j) {
                assert_int_equal(n[i].next_seq[j + 1], N);
            }
        }
    }
    for (int i = 0; i < 3; i++) {
        node_stop(&n[i]);
    }
}

struct stats_wait {
    struct node *n;
    uint64_t peer;
    bool connected;
};

static bool has_connected(void *ctx)
{
    struct stats_wait *w = ctx;
    struct io_transport_peer_stats st;
    return io_transport_peer_stats(&w->n->t, w->peer, &st) == 0 && st.connected == w->connected;
}

static void test_io_transport_peer_restart_reconnects(void **state)
{
    (void)state;
    static struct node a, b;
    char b_addr[64];
    node_start(&a, 1, "127.0.0.1:0");
    node_start(&b, 2, "127.0.0.1:0");
    snprintf(b_addr, sizeof b_addr, "%s", addr_of(&b));
    for (uint32_t i = 0; i < 10; i++) {
        send_seq(&a, &b, i, 1000, false);
    }
    assert_true(wait_rx(&b, 10));
    node_stop(&b);
    struct stats_wait sw = {&a, 2, false};
    assert_true(run_until(has_connected, &sw, WAIT_MS)); /* a saw the connection end */

    /* Queued while b is down; a keeps retrying with backoff. */
    for (uint32_t i = 10; i < 20; i++) {
        send_seq(&a, &b, i, 8, false); /* b's old address: the same */
    }
    run_for(150);
    node_start(&b, 2, b_addr);
    b.next_seq[1] = 10;
    for (uint32_t i = 20; i < 30; i++) {
        send_seq(&a, &b, i, 5000, true);
    }
    assert_true(wait_rx(&b, 20));
    assert_int_equal(b.reorders, 0);
    assert_int_equal(b.corrupt, 0);
    assert_int_equal(b.rx[0].seq, 10); /* queued while b was down: none lost */
    assert_int_equal(b.rx[10].seq, 20);
    assert_int_equal(b.rx[19].seq, 29);
    struct io_transport_peer_stats st;
    assert_int_equal(io_transport_peer_stats(&a.t, 2, &st), 0);
    assert_true(st.reconnects >= 1);
    assert_true(st.connected);
    node_stop(&a);
    node_stop(&b);
}

/* --- misbehaving raw clients -------------------------------------------------------------------
 */

static int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static void raw_write(int fd, const void *buf, size_t len)
{
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
}

static size_t raw_frame(uint8_t *out, uint16_t type, const void *payload, uint32_t len)
{
    io_wire_frame_header(type, payload, len, out);
    memcpy(out + IO_WIRE_HEADER_SIZE, payload, len);
    return IO_WIRE_HEADER_SIZE + len;
}

static size_t raw_handshake(uint8_t *out, uint64_t cluster, uint64_t id)
{
    struct io_wire_handshake hs = {.cluster_id = cluster, .node_id = id};
    uint8_t p[IO_WIRE_HANDSHAKE_MAX];
    size_t n;
    strcpy(hs.addr, "127.0.0.1:1");
    assert_int_equal(io_wire_handshake_encode(&hs, p, sizeof p, &n), 0);
    return raw_frame(out, IO_WIRE_TYPE_HANDSHAKE, p, (uint32_t)n);
}

/* True once the server closed the raw connection (EOF or reset after draining). */
static bool raw_closed(void *ctx)
{
    int fd = *(int *)ctx;
    uint8_t buf[4096];
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r == 0) {
            return true;
        }
        if (r < 0) {
            return errno != EAGAIN && errno != EWOULDBLOCK;
        }
    }
}

enum misbehaviour {
    GARBAGE,
    TRUNCATED_THEN_EOF,
    WRONG_CLUSTER,
    OVERSIZED_LENGTH,
    BAD_CHECKSUM,
    NO_HANDSHAKE,
    BAD_VERSION,
    SECOND_HANDSHAKE,
    HUGE_HANDSHAKE,
    ANONYMOUS_OVERSIZED,
    MISBEHAVIOURS
};

static const char *const expected_reason[MISBEHAVIOURS] = {
    [GARBAGE] = "bad magic",
    [TRUNCATED_THEN_EOF] = "connection ended inside a frame",
    [WRONG_CLUSTER] = "another cluster",
    [OVERSIZED_LENGTH] = "payload length above the maximum",
    [BAD_CHECKSUM] = "checksum mismatch",
    [NO_HANDSHAKE] = "first frame is not a handshake",
    [BAD_VERSION] = "version 7, this node speaks version 1",
    [SECOND_HANDSHAKE] = "handshake that is not the first frame",
    [HUGE_HANDSHAKE] = "malformed handshake: 100000 bytes, at most 275",
    [ANONYMOUS_OVERSIZED] = "2000000 bytes, maximum 1048576 from an anonymous client",
};

static void misbehave(int fd, enum misbehaviour m)
{
    uint8_t buf[4096];
    uint8_t payload[64];
    size_t n = 0;
    memset(payload, 0x5a, sizeof payload);
    switch (m) {
    case GARBAGE:
        for (size_t i = 0; i < 200; i++) {
            buf[i] = (uint8_t)(i * 13 + 1);
        }
        raw_write(fd, buf, 200);
        return;
    case TRUNCATED_THEN_EOF:
        n = raw_handshake(buf, CLUSTER, 0);
        n += raw_frame(buf + n, 5, payload, sizeof payload);
        raw_write(fd, buf, n - 20);
        shutdown(fd, SHUT_WR);
        return;
    case WRONG_CLUSTER:
        n = raw_handshake(buf, CLUSTER + 1, 5);
        break;
    case OVERSIZED_LENGTH:
        n = raw_handshake(buf, CLUSTER, 5);
        io_wire_frame_header(5, payload, sizeof payload, buf + n);
        buf[n + 8] = 0xff, buf[n + 9] = 0xff, buf[n + 10] = 0xff, buf[n + 11] = 0xff;
        n += IO_WIRE_HEADER_SIZE;
        break;
    case BAD_CHECKSUM:
        n = raw_handshake(buf, CLUSTER, 5);
        n += raw_frame(buf + n, 5, payload, sizeof payload);
        buf[n - 1] ^= 0x10;
        break;
    case NO_HANDSHAKE:
        n = raw_frame(buf, 5, payload, sizeof payload);
        break;
    case BAD_VERSION:
        n = raw_handshake(buf, CLUSTER, 5);
        buf[4] = 7;
        break;
    case HUGE_HANDSHAKE: /* a stranger may not make us allocate much */
        io_wire_frame_header(IO_WIRE_TYPE_HANDSHAKE, payload, sizeof payload, buf);
        buf[8] = 0xa0, buf[9] = 0x86, buf[10] = 0x01; /* 100000 */
        n = IO_WIRE_HEADER_SIZE;
        break;
    case ANONYMOUS_OVERSIZED:
        n = raw_handshake(buf, CLUSTER, 0);
        io_wire_frame_header(5, payload, sizeof payload, buf + n);
        buf[n + 8] = 0x80, buf[n + 9] = 0x84, buf[n + 10] = 0x1e; /* 2000000 */
        n += IO_WIRE_HEADER_SIZE;
        break;
    case SECOND_HANDSHAKE:
        n = raw_handshake(buf, CLUSTER, 5);
        n += raw_handshake(buf + n, CLUSTER, 5);
        break;
    default:
        fail();
    }
    raw_write(fd, buf, n);
}

static void on_peer_closed(struct io_transport *t, uint64_t id)
{
    struct node *n = t->data;
    if (n->n_closed_by < 4) {
        n->closed_by[n->n_closed_by] = id;
    }
    n->n_closed_by++;
}

static bool saw_close(void *ctx)
{
    return ((struct node *)ctx)->n_closed_by > 0;
}

/* A peer that goes away closes its connections: on_closed names it. A stranger that hangs up
 * names nobody. */
static void test_io_transport_remote_close_names_the_peer(void **state)
{
    (void)state;
    static struct node a, b;
    struct io_transport_config cfg = {.on_closed = on_peer_closed};
    node_start_cfg(&a, 1, "127.0.0.1:0", &cfg);
    node_start(&b, 2, "127.0.0.1:0");
    send_seq(&a, &b, 0, 100, false);
    send_seq(&b, &a, 0, 100, false);
    assert_true(wait_rx(&b, 1));
    assert_true(wait_rx(&a, 1));
    run_for(50);
    assert_int_equal(a.n_closed_by, 0);
    node_stop(&b);
    assert_true(run_until(saw_close, &a, WAIT_MS));
    run_for(50);
    assert_true(a.n_closed_by >= 1 && a.n_closed_by <= 2); /* its incoming and our outgoing */
    for (unsigned i = 0; i < a.n_closed_by; i++) {
        assert_int_equal(a.closed_by[i], 2);
    }
    unsigned before = a.n_closed_by;
    int fd = raw_connect(a.t.port);
    close(fd);
    run_for(100);
    assert_int_equal(a.n_closed_by, before);
    node_stop(&a);
}

static void test_io_transport_malformed_input_closes_only_that_connection(void **state)
{
    (void)state;
    static struct node a, b;
    node_start(&a, 1, "127.0.0.1:0");
    node_start(&b, 2, "127.0.0.1:0");
    /* A well-behaved connection stays open across all the bad ones. */
    send_seq(&b, &a, 0, 100, false);
    assert_true(wait_rx(&a, 1));
    for (int m = 0; m < MISBEHAVIOURS; m++) {
        struct capture cap;
        capture_start(&cap);
        int fd = raw_connect(io_transport_port(&a.t));
        misbehave(fd, (enum misbehaviour)m);
        bool closed = run_until(raw_closed, &fd, WAIT_MS);
        char *log = capture_end(&cap);
        assert_true(closed);
        if (strstr(log, expected_reason[m]) == NULL || strstr(log, "from 127.0.0.1:") == NULL) {
            print_error("case %d: no log line with \"%s\" in:\n%s\n", m, expected_reason[m], log);
            fail();
        }
        free(log);
        close(fd);
        send_seq(&b, &a, (uint32_t)m + 1, 1000 * (size_t)m + 4, false);
        assert_true(wait_rx(&a, (size_t)m + 2));
    }
    assert_int_equal(a.n_rx, MISBEHAVIOURS + 1); /* nothing from the raw clients was delivered */
    assert_int_equal(a.reorders + a.corrupt, 0);
    for (size_t i = 0; i < a.n_rx; i++) {
        assert_true(a.rx[i].from == 2);
    }
    /* And the node still accepts new well-behaved peers. */
    static struct node c;
    node_start(&c, 3, "127.0.0.1:0");
    send_seq(&c, &a, 0, 10, false);
    assert_true(wait_rx(&a, MISBEHAVIOURS + 2));
    node_stop(&c);
    node_stop(&a);
    node_stop(&b);
}

static bool incoming_at_most_one(void *ctx)
{
    return ((struct node *)ctx)->t.incoming <= 1;
}

/*
 * Hundreds of raw connections with a valid handshake and frames, each damaged at random (a bit
 * flipped, cut short, a span overwritten) or not at all: nothing damaged is ever delivered, the
 * process survives, every bad connection is closed, and a good peer still gets through.
 */
static void test_io_transport_random_damage_is_never_delivered(void **state)
{
    (void)state;
    enum { CONNS = 300, FRAMES = 3 };
    static struct node a, b;
    node_start(&a, 1, "127.0.0.1:0");
    node_start(&b, 2, "127.0.0.1:0");
    send_seq(&b, &a, 0, 10, false);
    assert_true(wait_rx(&a, 1));
    uint64_t rng = 0x5EED;
    int fds[CONNS];
    unsigned intact = 0;
    struct capture cap;
    capture_start(&cap);
    for (int i = 0; i < CONNS; i++) {
        static uint8_t buf[4 * 70000];
        /* Every third one is an outsider: node id 0, cluster id 0. */
        size_t n = raw_handshake(buf, i % 3 == 0 ? 0 : CLUSTER, i % 3 == 0 ? 0 : 7);
        for (int f = 0; f < FRAMES; f++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            size_t len = 4 + (rng >> 33) % 66000;
            uint8_t *p = make_payload((uint32_t)(i * FRAMES + f), len);
            n += raw_frame(buf + n, 150, p, (uint32_t)len);
            free(p);
        }
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        size_t at = (size_t)(rng >> 24) % n;
        switch ((rng >> 8) % 4) {
        case 0:
            buf[at] ^= (uint8_t)(1u << ((rng >> 3) % 8));
            break;
        case 1:
            n = at;
            break;
        case 2:
            for (size_t k = at; k < n && k < at + 16; k++) {
                buf[k] = (uint8_t)(rng >> (k % 56));
            }
            break;
        default:
            intact++;
            break;
        }
        fds[i] = raw_connect(io_transport_port(&a.t));
        raw_write(fds[i], buf, n);
        shutdown(fds[i], SHUT_WR);
        for (int k = 0; k < 5; k++) {
            uv_run(&loop, UV_RUN_NOWAIT);
        }
    }
    bool drained = run_until(incoming_at_most_one, &a, WAIT_MS);
    char *log = capture_end(&cap);
    for (int i = 0; i < CONNS; i++) {
        close(fds[i]);
    }
    assert_true(drained);
    assert_non_null(strstr(log, "closing incoming connection from 127.0.0.1:"));
    free(log);
    assert_int_equal(a.corrupt, 0);
    size_t delivered = a.n_rx - 1;
    print_message("%u of %d connections intact; %zu frames delivered\n", intact, CONNS, delivered);
    assert_true(delivered >= intact * FRAMES);
    assert_true(delivered < (size_t)CONNS * FRAMES);
    send_seq(&b, &a, 1, 100, false);
    assert_true(wait_rx(&a, a.n_rx + 1));
    node_stop(&a);
    node_stop(&b);
}

/* A message larger than the payload maximum is refused at the sender too. */
static void test_io_transport_small_payload_max_refuses_both_ways(void **state)
{
    (void)state;
    static struct node a, b;
    struct io_transport_config cfg = {.payload_max = 1000};
    node_start_cfg(&a, 1, "127.0.0.1:0", &cfg);
    node_start(&b, 2, "127.0.0.1:0");
    uint8_t big[2000] = {0};
    assert_int_equal(io_transport_send(&a.t, 2, addr_of(&b), 1, IO_TRANSPORT_CONTROL, big, 1001),
                     IO_TRANSPORT_ETOOBIG);
    struct capture cap;
    capture_start(&cap);
    send_seq(&b, &a, 0, 1500, false); /* b allows it, a refuses it */
    struct stats_wait sw = {&b, 1, false};
    run_for(100);
    bool down = run_until(has_connected, &sw, WAIT_MS);
    char *log = capture_end(&cap);
    assert_true(down);
    assert_non_null(strstr(log, "1500 bytes, maximum 1000"));
    free(log);
    assert_int_equal(a.n_rx, 0);
    node_stop(&a);
    node_stop(&b);
}

/* --- queues ------------------------------------------------------------------------------------
 */

/* A port where nothing listens: connections are refused, so messages stay queued. */
static int dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

static void test_io_transport_queue_bound_returns_full(void **state)
{
    (void)state;
    static struct node a;
    struct io_transport_config cfg = {.queue_bytes_max = 1024 * 1024};
    node_start_cfg(&a, 1, NULL, &cfg);
    char dead[64];
    snprintf(dead, sizeof dead, "127.0.0.1:%d", dead_port());
    static uint8_t chunk[100 * 1024];
    int accepted = 0, rc;
    while ((rc = io_transport_send(&a.t, 2, dead, 1, IO_TRANSPORT_BULK, chunk, sizeof chunk)) ==
           0) {
        accepted++;
        assert_true(accepted < 100);
    }
    assert_int_equal(rc, IO_TRANSPORT_EQUEUEFULL);
    assert_int_equal(accepted, 10);
    /* Owned buffers stay the caller's on error. */
    uint8_t *owned = malloc(sizeof chunk);
    assert_int_equal(
        io_transport_send_owned(&a.t, 2, NULL, 1, IO_TRANSPORT_BULK, owned, sizeof chunk, NULL),
        IO_TRANSPORT_EQUEUEFULL);
    free(owned);
    /* Control traffic has its own bound: heartbeats still go while bulk is full. */
    assert_int_equal(io_transport_send(&a.t, 2, NULL, 1, IO_TRANSPORT_CONTROL, chunk, 100), 0);
    /* Retrying while the peer stays down never grows the queue. */
    for (int i = 0; i < 20; i++) {
        run_for(5);
        assert_int_equal(
            io_transport_send(&a.t, 2, NULL, 1, IO_TRANSPORT_BULK, chunk, sizeof chunk),
            IO_TRANSPORT_EQUEUEFULL);
    }
    struct io_transport_peer_stats st;
    assert_int_equal(io_transport_peer_stats(&a.t, 2, &st), 0);
    assert_true(st.queued_bytes <= 2 * cfg.queue_bytes_max);
    assert_true(st.drops_full >= 21);
    assert_true(st.reconnects >= 1); /* kept retrying */
    assert_false(st.connected);
    /* One message larger than the bound still goes into an empty queue. */
    uint8_t *huge = calloc(1, 3 * 1024 * 1024);
    assert_int_equal(
        io_transport_send_owned(&a.t, 3, dead, 1, IO_TRANSPORT_BULK, huge, 3 * 1024 * 1024, NULL),
        0);
    assert_int_equal(io_transport_send(&a.t, 3, NULL, 1, IO_TRANSPORT_BULK, chunk, 1),
                     IO_TRANSPORT_EQUEUEFULL);
    node_stop(&a); /* frees the queued copies and `huge` (ASan checks) */
}

/* Retries back off exponentially to the cap: neither a busy loop nor an ever-growing delay. */
static void test_io_transport_backoff_grows_to_its_cap(void **state)
{
    (void)state;
    static struct node a;
    struct io_transport_config cfg = {.backoff_min_ms = 10, .backoff_max_ms = 50};
    node_start_cfg(&a, 1, NULL, &cfg);
    char dead[64];
    snprintf(dead, sizeof dead, "127.0.0.1:%d", dead_port());
    assert_int_equal(io_transport_send(&a.t, 2, dead, 1, IO_TRANSPORT_CONTROL, "abcd", 4), 0);
    run_for(1500);
    struct io_transport_peer_stats st;
    assert_int_equal(io_transport_peer_stats(&a.t, 2, &st), 0);
    /* Capped delays of 25..50 ms give about 30..60 attempts in 1.5 s; a fixed 10 ms would give
     * 150, delays doubling without a cap fewer than 10. */
    print_message("%llu reconnects in 1.5 s\n", (unsigned long long)st.reconnects);
    assert_true(st.reconnects >= 15);
    assert_true(st.reconnects <= 80);
    node_stop(&a);
}

struct overtake {
    struct node *a;
    struct node *b;
    bool sent_second;
};

enum { BULK_N = 40, BULK_TYPE = 110, CTL_TYPE = 120 };

static void overtake_hook(struct node *n, const struct rx *r)
{
    struct overtake *o = n->hook_ctx;
    if (r->type == BULK_TYPE && r->seq == 1 && !o->sent_second) {
        /* Bulk is streaming: a control message sent now jumps the queued chunks. */
        o->sent_second = true;
        uint32_t seq = 1000;
        assert_int_equal(
            io_transport_send(&o->a->t, 2, NULL, CTL_TYPE, IO_TRANSPORT_CONTROL, &seq, 4), 0);
    }
}

static void test_io_transport_control_overtakes_queued_bulk(void **state)
{
    (void)state;
    static struct node a, b;
    node_start(&a, 1, "127.0.0.1:0");
    node_start(&b, 2, "127.0.0.1:0");
    struct overtake o = {&a, &b, false};
    b.hook = overtake_hook;
    b.hook_ctx = &o;
    const size_t chunk = 1024 * 1024;
    for (uint32_t i = 0; i < BULK_N; i++) {
        uint8_t *p = make_payload(i, chunk);
        assert_int_equal(io_transport_send_owned(&a.t, 2, addr_of(&b), BULK_TYPE, IO_TRANSPORT_BULK,
                                                 p, chunk, NULL),
                         0);
    }
    uint32_t seq = 999;
    assert_int_equal(io_transport_send(&a.t, 2, NULL, CTL_TYPE, IO_TRANSPORT_CONTROL, &seq, 4), 0);
    assert_true(wait_rx(&b, BULK_N + 2));
    assert_int_equal(b.corrupt, 0);
    /* Queued before the connection was up: the control message is first on the wire. */
    assert_int_equal(b.rx[0].type, CTL_TYPE);
    assert_int_equal(b.rx[0].seq, 999);
    size_t second = 0, bulk_seen = 0;
    for (size_t i = 0; i < b.n_rx; i++) {
        if (b.rx[i].type == CTL_TYPE && b.rx[i].seq == 1000) {
            second = i;
            break;
        }
        if (b.rx[i].type == BULK_TYPE) {
            assert_int_equal(b.rx[i].seq, bulk_seen); /* bulk stays in order */
            bulk_seen++;
        }
    }
    /* Sent after chunk 1 arrived; only chunks already written (socket buffers) precede it. */
    print_message("second control message after %zu of %d bulk chunks\n", bulk_seen, BULK_N);
    assert_true(second > 0);
    assert_true(bulk_seen < BULK_N / 2);
    node_stop(&a);
    node_stop(&b);
}

/* --- anonymous clients, filters, membership ----------------------------------------------------
 */

static void test_io_transport_anonymous_client_gets_reply_on_same_connection(void **state)
{
    (void)state;
    static struct node server, client;
    node_start(&server, 1, "127.0.0.1:0");
    struct io_transport_config ccfg = {.cluster_id = NO_CLUSTER};
    node_start_cfg(&client, 0, NULL, &ccfg); /* an outsider: no id, no cluster, no listener */
    assert_int_equal(io_transport_port(&client.t), 0);
    assert_string_equal(io_transport_address(&client.t), "");
    server.echo_replies = true;
    uint32_t seq = 150;
    assert_int_equal(
        io_transport_send(&client.t, 0, addr_of(&server), 150, IO_TRANSPORT_CONTROL, &seq, 4), 0);
    assert_int_equal(io_transport_send(&client.t, 0, NULL, 150, IO_TRANSPORT_CONTROL, &seq, 4),
                     IO_TRANSPORT_ENOADDR);
    assert_true(wait_rx(&server, 1));
    assert_true(server.rx[0].from == 0);
    assert_int_equal(server.rx[0].seq, 150);
    assert_true(wait_rx(&client, 1));
    assert_true(client.rx[0].from == 1); /* the server's id, from its handshake */
    assert_int_equal(client.rx[0].type, 200);
    assert_int_equal(client.rx[0].seq, 150);
    assert_int_equal(client.rx[0].len, strlen("....reply from 1"));
    /* The client can answer on its own connection too, and a closed connection is refused. */
    assert_int_equal(
        io_transport_reply(&client.t, client.rx[0].conn, 150, IO_TRANSPORT_CONTROL, &seq, 4), 0);
    assert_true(wait_rx(&server, 2));
    assert_true(server.rx[1].conn == server.rx[0].conn);
    assert_int_equal(io_transport_reply(&server.t, 12345, 1, IO_TRANSPORT_CONTROL, &seq, 4),
                     IO_TRANSPORT_ENOCONN);
    node_stop(&client);

    /* Cluster id 0 is only for anonymous outsiders: a node claiming an id must know it. */
    static struct node rogue;
    struct io_transport_config rcfg = {.cluster_id = NO_CLUSTER};
    node_start_cfg(&rogue, 5, NULL, &rcfg);
    struct capture cap;
    capture_start(&cap);
    assert_int_equal(
        io_transport_send(&rogue.t, 1, addr_of(&server), 150, IO_TRANSPORT_CONTROL, &seq, 4), 0);
    run_for(100);
    char *log = capture_end(&cap);
    assert_non_null(strstr(log, "another cluster: theirs 0, ours"));
    free(log);
    assert_int_equal(server.n_rx, 2);
    node_stop(&rogue);

    /* The server notices the client is gone; replying then fails cleanly. */
    uint64_t conn = server.rx[0].conn;
    run_for(50);
    assert_int_equal(io_transport_reply(&server.t, conn, 1, IO_TRANSPORT_CONTROL, &seq, 4),
                     IO_TRANSPORT_ENOCONN);
    node_stop(&server);
}

struct filter_rules {
    uint64_t drop_out_to;  /* drop messages sent to this peer */
    uint64_t drop_in_from; /* drop messages received from this peer */
    unsigned calls;
};

static bool filter(void *ctx, enum io_transport_dir dir, uint64_t peer, uint16_t type)
{
    struct filter_rules *r = ctx;
    (void)type;
    r->calls++;
    if (dir == IO_TRANSPORT_OUT && peer == r->drop_out_to) {
        return false;
    }
    if (dir == IO_TRANSPORT_IN && peer == r->drop_in_from) {
        return false;
    }
    return true;
}

static void test_io_transport_filter_drops_one_way(void **state)
{
    (void)state;
    static struct node a, b, c;
    node_start(&a, 1, "127.0.0.1:0");
    node_start(&b, 2, "127.0.0.1:0");
    node_start(&c, 3, "127.0.0.1:0");
    struct filter_rules rules = {.drop_out_to = 2, .drop_in_from = 3};
    io_transport_set_filter(&a.t, filter, &rules);
    for (uint32_t i = 0; i < 5; i++) {
        send_seq(&a, &b, i, 10, i % 2 == 0); /* dropped on send (owned buffers released) */
        send_seq(&a, &c, i, 10, false);      /* delivered: a -> c is open */
        send_seq(&c, &a, i, 10, false);      /* dropped on a's receive */
        send_seq(&b, &a, i, 10, false);      /* delivered */
    }
    assert_true(wait_rx(&c, 5));
    assert_true(wait_rx(&a, 5));
    run_for(50);
    assert_int_equal(b.n_rx, 0);
    assert_int_equal(a.n_rx, 5);
    for (size_t i = 0; i < a.n_rx; i++) {
        assert_true(a.rx[i].from == 2);
    }
    assert_true(rules.calls >= 20);
    /* Healing the partition lets traffic through again. */
    io_transport_set_filter(&a.t, NULL, NULL);
    send_seq(&a, &b, 5, 10, false);
    assert_true(wait_rx(&b, 1));
    node_stop(&a);
    node_stop(&b);
    node_stop(&c);
}

static void test_io_transport_peer_address_change(void **state)
{
    (void)state;
    static struct node a, b, b2;
    node_start(&a, 1, "127.0.0.1:0");
    node_start(&b, 2, "127.0.0.1:0");
    send_seq(&a, &b, 0, 10, false);
    assert_true(wait_rx(&b, 1));
    node_stop(&b);
    node_start(&b2, 2, "127.0.0.1:0"); /* node 2 moved to another port */
    assert_int_equal(io_transport_set_peer(&a.t, 2, addr_of(&b2)), 0);
    b2.next_seq[1] = 1;
    for (uint32_t i = 1; i < 10; i++) {
        send_seq(&a, &b2, i, 8, i % 2 == 0);
    }
    assert_true(wait_rx(&b2, 9));
    /* Forgetting a peer drops what was queued for it. */
    io_transport_remove_peer(&a.t, 2);
    struct io_transport_peer_stats st;
    assert_int_equal(io_transport_peer_stats(&a.t, 2, &st), IO_TRANSPORT_ENOADDR);
    assert_int_equal(io_transport_send(&a.t, 2, NULL, 1, IO_TRANSPORT_CONTROL, "x", 1),
                     IO_TRANSPORT_ENOADDR);
    node_stop(&a);
    node_stop(&b2);
}

/* Addresses in the membership that point at the wrong node are refused, not trusted. */
static void test_io_transport_refuses_unexpected_node_id(void **state)
{
    (void)state;
    static struct node a, c;
    node_start(&a, 1, "127.0.0.1:0");
    node_start(&c, 3, "127.0.0.1:0");
    struct capture cap;
    capture_start(&cap);
    assert_int_equal(io_transport_send(&a.t, 2, addr_of(&c), 1, IO_TRANSPORT_CONTROL, "abcd", 4),
                     0);
    run_for(200);
    char *log = capture_end(&cap);
    assert_non_null(strstr(log, "expected node 2, found node 3"));
    free(log);
    node_stop(&a);
    assert_int_equal(c.n_rx, 0);
    node_stop(&c);
}

/* A server that accepts but never speaks (or a black hole) does not hold the queue forever. */
static void test_io_transport_silent_server_times_out_and_retries(void **state)
{
    (void)state;
    static struct node a;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(lfd, 16), 0); /* never accepts: the kernel completes connects */
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &len), 0);
    char silent[64];
    snprintf(silent, sizeof silent, "127.0.0.1:%d", ntohs(sa.sin_port));

    struct io_transport_config cfg = {.handshake_timeout_ms = 50};
    node_start_cfg(&a, 1, NULL, &cfg);
    struct capture cap;
    capture_start(&cap);
    assert_int_equal(io_transport_send(&a.t, 2, silent, 1, IO_TRANSPORT_CONTROL, "abcd", 4), 0);
    run_for(400);
    char *log = capture_end(&cap);
    close(lfd);
    assert_non_null(strstr(log, "did not complete the handshake in time: nothing within 50 ms"));
    free(log);
    struct io_transport_peer_stats st;
    assert_int_equal(io_transport_peer_stats(&a.t, 2, &st), 0);
    assert_false(st.connected);
    assert_true(st.reconnects >= 2);
    assert_true(st.msgs_sent == 0);
    assert_true(st.queued_bytes == IO_WIRE_HEADER_SIZE + 4); /* still waiting to go */
    node_stop(&a);
}

/* The other side: a stranger that connects and says nothing is closed after the timeout. */
static void test_io_transport_idle_stranger_is_closed(void **state)
{
    (void)state;
    static struct node a;
    struct io_transport_config cfg = {.handshake_timeout_ms = 60};
    node_start_cfg(&a, 1, "127.0.0.1:0", &cfg);
    struct capture cap;
    capture_start(&cap);
    int fd = raw_connect(io_transport_port(&a.t));
    bool closed = run_until(raw_closed, &fd, WAIT_MS);
    char *log = capture_end(&cap);
    close(fd);
    assert_true(closed);
    assert_non_null(strstr(log, "did not complete the handshake in time: nothing within 60 ms"));
    free(log);
    node_stop(&a);
}

static void test_io_transport_addresses_and_arguments(void **state)
{
    (void)state;
    static struct node a;
    struct io_transport t;
    struct io_transport_config cfg = {.cluster_id = 1, .self_id = 1, .on_message = on_message};
    const char *bad[] = {"127.0.0.1", "127.0.0.1:", "127.0.0.1:70000", "1.2.3:5",      "::1:5",
                         "[::1]5",    "[::1",       "host.example:5",  "127.0.0.1:5x", ":5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cfg.listen_addr = bad[i];
        assert_int_equal(io_transport_init(&t, &loop, &cfg), IO_TRANSPORT_EADDR);
    }
    cfg.listen_addr = NULL;
    cfg.on_message = NULL;
    assert_int_equal(io_transport_init(&t, &loop, &cfg), IO_TRANSPORT_EINVAL);

    node_start(&a, 1, "localhost:0");
    /* A port in use is refused with nothing left open (teardown checks the loop). */
    char used[64];
    snprintf(used, sizeof used, "127.0.0.1:%d", io_transport_port(&a.t));
    cfg.on_message = on_message;
    cfg.listen_addr = used;
    struct capture cap;
    capture_start(&cap);
    int rc = io_transport_init(&t, &loop, &cfg);
    free(capture_end(&cap));
    assert_int_equal(rc, IO_TRANSPORT_ELISTEN);

    assert_int_equal(io_transport_send(&a.t, 2, "nonsense", 1, IO_TRANSPORT_CONTROL, "x", 1),
                     IO_TRANSPORT_EADDR);
    assert_int_equal(io_transport_send(&a.t, 2, NULL, 1, IO_TRANSPORT_CONTROL, "x", 1),
                     IO_TRANSPORT_ENOADDR);
    assert_int_equal(
        io_transport_send(&a.t, 2, used, IO_WIRE_TYPE_HANDSHAKE, IO_TRANSPORT_CONTROL, "x", 1),
        IO_TRANSPORT_EINVAL);
    assert_int_equal(io_transport_set_peer(&a.t, 0, used), IO_TRANSPORT_EINVAL);
    assert_int_equal(io_transport_set_peer(&a.t, 2, "[::1"), IO_TRANSPORT_EADDR);

    /* IPv6, when the machine has it. */
    static struct node v6;
    struct io_transport_config c6 = {.cluster_id = CLUSTER,
                                     .self_id = 2,
                                     .listen_addr = "[::1]:0",
                                     .on_message = on_message,
                                     .data = &v6};
    memset(&v6, 0, sizeof v6);
    v6.id = 2;
    capture_start(&cap);
    rc = io_transport_init(&v6.t, &loop, &c6);
    free(capture_end(&cap));
    if (rc == 0) {
        track(&v6);
        assert_int_equal(strncmp(addr_of(&v6), "[::1]:", 6), 0);
        send_seq(&a, &v6, 0, 100, false);
        assert_true(wait_rx(&v6, 1));
        node_stop(&v6);
    } else {
        print_message("no IPv6 loopback here (%s); skipped\n", io_transport_strerror(rc));
    }
    node_stop(&a);
}

/* --- shutdown ----------------------------------------------------------------------------------
 */

static void close_hook(struct node *n, const struct rx *r)
{
    (void)r;
    if (!n->closed && n->close_on_message) {
        n->close_on_message = false;
        io_transport_close(&n->t, on_closed);
    }
}

static void test_io_transport_close_with_traffic_in_flight_leaks_nothing(void **state)
{
    (void)state;
    static struct node a, b;
    node_start(&a, 1, "127.0.0.1:0");
    node_start(&b, 2, "127.0.0.1:0");
    for (uint32_t i = 0; i < 40; i++) {
        send_seq(&a, &b, i, 512 * 1024, true);
        send_seq(&b, &a, i, 100, false);
    }
    run_for(5); /* some written, some queued, some half read */
    /* b closes from inside its own message callback. */
    b.close_on_message = true;
    b.hook = close_hook;
    assert_true(run_until(is_closed, &b, WAIT_MS));
    size_t got = b.n_rx;
    node_stop(&a);
    free(b.rx);
    b.rx = NULL;
    untrack(&b);
    print_message("b had received %zu of 40 before closing\n", got);
    run_for(20);
    /* teardown's uv_loop_close and LeakSanitizer at exit do the rest */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_io_transport_two_nodes_exchange_in_order, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_io_transport_single_message_above_queue_bound, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_io_transport_three_nodes_in_order_per_peer, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_io_transport_peer_restart_reconnects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_transport_remote_close_names_the_peer, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_io_transport_malformed_input_closes_only_that_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_transport_random_damage_is_never_delivered, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_io_transport_small_payload_max_refuses_both_ways,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_transport_queue_bound_returns_full, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_io_transport_backoff_grows_to_its_cap, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_io_transport_control_overtakes_queued_bulk, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_io_transport_anonymous_client_gets_reply_on_same_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_transport_filter_drops_one_way, setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_transport_peer_address_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_transport_refuses_unexpected_node_id, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_io_transport_silent_server_times_out_and_retries,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_transport_idle_stranger_is_closed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_io_transport_addresses_and_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_io_transport_close_with_traffic_in_flight_leaks_nothing, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
