/*
 * The Raft core: a deterministic state machine with no I/O, no clock, no threads and no randomness
 * of its own. It follows Ongaro's thesis ("Consensus: Bridging Theory and Practice", 2014) with the
 * protections of etcd/raft and canonical/raft: pre-vote, check-quorum, leader stickiness,
 * single-server membership changes with non-voting catch-up, leader transfer, ReadIndex.
 *
 * DRIVING THE CORE
 *
 * The caller (the libuv runtime, the simulator, a scenario test) owns time, the disk and the
 * network. It feeds the core events with raft_step() -- a tick, a message received, entries made
 * durable, a snapshot sent or installed, the applied floor -- and calls raft_propose(),
 * raft_add() ... raft_read_index() on behalf of clients. Every one of these entry points takes a
 * `struct raft_update *out` and fills it with everything the call produced. The caller handles an
 * update completely, in this order, before it calls into the same `struct raft` again:
 *
 *   1. If out->hard_state_changed: make out->term and out->vote durable. This MUST complete before
 *      any message of the same update is sent (a vote or a term must never be forgotten once
 *      another server may have seen it).
 *   2. If out->snapshot_index != 0: the log was reset by an installed snapshot; drop every entry
 *      and record (snapshot_index, snapshot_term) as the log's base.
 *   3. If out->truncate_from != 0: delete entries with index >= truncate_from from the log.
 *   4. Start appending out->entries (in order, after the truncation). Appending may proceed in
 *      parallel with sending messages; report durability with RAFT_EVENT_PERSISTED once it is done
 *      (the leader counts itself towards a quorum, and a follower acknowledges entries, only then).
 *   5. Send out->messages (after step 1 completed).
 *   6. Apply out->committed in order. They are committed (a quorum holds them durably); on a
 *      follower they are also durable locally, while a leader may receive entries a quorum of
 *      followers holds before its own append is durable (Raft thesis §10.2.1).
 *   7. Stream out->snapshots; report each with RAFT_EVENT_SNAPSHOT_SENT.
 *   8. If out->compact_to != 0: the log prefix up to and including compact_to may be dropped.
 *   9. Deliver out->proposals and out->reads to the waiting clients.
 *
 * MEMORY
 *
 * Everything an update points to (arrays of entries, messages, results, configurations) is owned
 * by the core and stays valid until the next call that takes `out` on the same `struct raft`, or
 * raft_destroy(). Payloads are different: they live in reference-counted `struct raft_buf`s. A
 * caller that keeps a payload beyond that point (to hand it to a disk thread, a network send, an
 * apply thread) takes its own reference with raft_buf_ref() and drops it with raft_buf_unref().
 * Buffers the caller passes INTO the core (raft_propose, entries of a received message, entries
 * given to raft_create) are never stolen: the core takes its own reference when it keeps one, so
 * the caller still owns, and must still release, every reference it had.
 *
 * SNAPSHOTS
 *
 * The leader's core asks for a snapshot (out->snapshots) when a follower needs entries it has
 * compacted. The caller streams an image of its state machine that contains at least the entries
 * up to `index` (RAFT_MSG_INSTALL_SNAPSHOT is a suitable header for the stream), and reports the
 * end with RAFT_EVENT_SNAPSHOT_SENT (ok only once the receiver has installed it durably). The
 * receiving caller installs the image only if it is newer than its own state machine, and in
 * either case makes its state machine durable (applied floor >= the snapshot's index: checkpoint
 * if it kept its own, newer state), then steps RAFT_EVENT_SNAPSHOT_INSTALLED; the core resets or
 * trims its log (out->snapshot_index / out->compact_to) and acknowledges to the leader.
 *
 * PROPOSAL OUTCOMES
 *
 * A proposal is decided when this node's commit index passes its index: COMMITTED if the entry
 * there is still ours, FAILED/RAFT_ENOTCOMMITTED if another entry was committed there (final).
 * A leader deposed before that keeps watching for two election timeouts, then reports
 * FAILED/RAFT_EUNKNOWN: the entry may still commit under a later leader, so never retry it blindly.
 *
 * Calls that reject their request (raft_propose on a follower, a second membership change ...)
 * return a RAFT_E* code, change nothing, and leave `out` empty.
 *
 * Time: every event and call carries `now_ms`, a monotonic millisecond clock; it must never go
 * backwards. Randomness: the election timeout is drawn from a PRNG seeded with options.seed.
 */
#ifndef WALRAFT_CONSENSUS_RAFT_H
#define WALRAFT_CONSENSUS_RAFT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------------------------------------
 * Error codes. 0 is success; every code is positive. */
#define RAFT_ERRORS(X)                                                                           \
    X(RAFT_ENOMEM, 1, "out of memory")                                                           \
    X(RAFT_ENOTLEADER, 2, "not the leader")                                                      \
    X(RAFT_EBUSY, 3, "busy: the leader has not yet committed an entry of its term")              \
    X(RAFT_ECHANGE, 4, "a configuration change is already in progress")                          \
    X(RAFT_ETRANSFER, 5, "a leadership transfer is in progress")                                 \
    X(RAFT_EUNKNOWNNODE, 6, "no such server in the configuration")                               \
    X(RAFT_EDUPLICATE, 7, "the server is already in the configuration")                          \
    X(RAFT_EBADARG, 8, "invalid argument")                                                       \
    X(RAFT_ESHUTDOWN, 9, "the node is shutting down")                                            \
    X(RAFT_ETOOBIG, 10, "too big: a limit was exceeded")                                         \
    X(RAFT_EMALFORMED, 11, "malformed bytes")                                                    \
    X(RAFT_ENOTCOMMITTED, 12, "not committed: the entry was discarded and will never commit")    \
    X(RAFT_EUNKNOWN, 13, "leadership lost: the entry may or may not commit (outcome unknown)")  \
    X(RAFT_ETIMEOUT, 14, "timed out")                                                            \
    X(RAFT_ELEADERSHIPLOST, 15, "leadership lost before the request completed")                  \
    X(RAFT_ENOQUORUM, 16, "the leader has not heard from a quorum recently")                     \
    X(RAFT_ECONFIG, 17, "invalid configuration")

enum {
#define RAFT_ERROR_ENUM(name, value, msg) name = value,
    RAFT_ERRORS(RAFT_ERROR_ENUM)
#undef RAFT_ERROR_ENUM
};

/* A static message for `rc` ("success" for 0, "unknown error" for codes not in the table). */
const char *raft_strerror(int rc);

/* ---------------------------------------------------------------------------------------------
 * Limits. */
#define RAFT_SERVERS_MAX 16        /* servers in one configuration */
#define RAFT_NAME_MAX 32           /* bytes of server name, NUL included */
#define RAFT_ADDR_MAX 64           /* bytes of server address, NUL included */
#define RAFT_ENTRIES_PER_MSG_MAX 1024

/* ---------------------------------------------------------------------------------------------
 * Reference-counted payload buffers.
 *
 * A buffer is created once from memory the creator owns; raft_buf_new() takes ownership of that
 * memory. Each holder of a reference calls raft_buf_unref() exactly once; the last one frees the
 * memory (with `release`, or free() when release is NULL) and the struct. The count is atomic, so
 * references may be dropped on any thread; the bytes themselves are immutable once shared. */
struct raft_buf {
    atomic_uint refs;
    void *base;
    size_t len;
    void (*release)(void *base, size_t len, void *arg); /* NULL: free(base) */
    void *arg;
};

/* A new buffer over `base` (malloc'd, or any memory if `release` is given) of `len` bytes, with
 * one reference owned by the caller. Takes ownership of `base` on success; NULL if out of memory
 * (then `base` still belongs to the caller). */
struct raft_buf *raft_buf_new(void *base, size_t len);
struct raft_buf *raft_buf_wrap(void *base, size_t len,
                               void (*release)(void *base, size_t len, void *arg), void *arg);
/* A new buffer holding a copy of `len` bytes at `src`; NULL if out of memory. */
struct raft_buf *raft_buf_copy(const void *src, size_t len);
/* Takes one more reference; returns `b`. NULL-safe. */
struct raft_buf *raft_buf_ref(struct raft_buf *b);
/* Drops one reference. NULL-safe. */
void raft_buf_unref(struct raft_buf *b);

/* ---------------------------------------------------------------------------------------------
 * Servers and configurations. Names and addresses are opaque to the core: it stores and
 * replicates them. */
enum raft_role {
    RAFT_VOTER = 0,   /* counts towards elections and commitment */
    RAFT_REPLICA = 1, /* non-voter that stays one (a read replica) */
    RAFT_LEARNER = 2  /* non-voter catching up; the leader promotes it to voter when close */
};

struct raft_server {
    uint64_t id;               /* never 0 */
    uint8_t role;              /* enum raft_role */
    char name[RAFT_NAME_MAX];  /* NUL-terminated, e.g. "n1" */
    char addr[RAFT_ADDR_MAX];  /* NUL-terminated, e.g. "127.0.0.1:7001" */
};

struct raft_config {
    uint32_t n;
    struct raft_server servers[RAFT_SERVERS_MAX];
};

/* Validates a configuration: ids non-zero and distinct, roles known, strings terminated, at least
 * one voter. Returns 0 or RAFT_ECONFIG. */
int raft_config_check(const struct raft_config *c);
/* The server with `id`, or NULL. */
const struct raft_server *raft_config_get(const struct raft_config *c, uint64_t id);
/* Number of voters. */
unsigned raft_config_voters(const struct raft_config *c);

/* Config entry codec. Layout (little endian): u8 version (=1), u8 count, then per server:
 * u64 id, u8 role, u8 name_len, name bytes, u8 addr_len, addr bytes. No trailing bytes. */
#define RAFT_CONFIG_ENCODED_MAX (2 + RAFT_SERVERS_MAX * (8 + 1 + 1 + RAFT_NAME_MAX + 1 + RAFT_ADDR_MAX))
/* Encodes `c` into `buf` (at least RAFT_CONFIG_ENCODED_MAX bytes); *len receives the size.
 * Returns 0, or RAFT_ECONFIG when `c` is invalid. */
int raft_config_encode(const struct raft_config *c, uint8_t *buf, size_t *len /* OUT */);
/* Decodes `len` bytes. Returns 0, or RAFT_EMALFORMED for any malformed input (bounds, version,
 * unterminated or oversized strings, duplicates, no voter, trailing bytes). */
int raft_config_decode(const void *buf, size_t len, struct raft_config *c /* OUT */);

/* ---------------------------------------------------------------------------------------------
 * Log entries. */
enum raft_entry_type {
    RAFT_NORMAL = 1, /* application data: payload in `buf` */
    RAFT_NOOP = 2,   /* appended by a new leader; no payload */
    RAFT_CONFIG = 3  /* payload is an encoded configuration; takes effect when appended */
};

struct raft_entry {
    uint64_t term;
    uint64_t index;
    uint8_t type;         /* enum raft_entry_type */
    struct raft_buf *buf; /* payload; NULL when empty */
};

/* ---------------------------------------------------------------------------------------------
 * Messages. Plain structs so a wire codec can be written for them; `entries` of an AppendEntries
 * point to core-owned structs whose bufs are referenced (see MEMORY above). */
enum raft_message_type {
    RAFT_MSG_REQUEST_VOTE = 1,
    RAFT_MSG_REQUEST_VOTE_RESULT = 2,
    RAFT_MSG_APPEND_ENTRIES = 3,
    RAFT_MSG_APPEND_ENTRIES_RESULT = 4,
    RAFT_MSG_HEARTBEAT = 5,
    RAFT_MSG_HEARTBEAT_RESULT = 6,
    RAFT_MSG_INSTALL_SNAPSHOT = 7, /* metadata heading a snapshot stream; the core emits none */
    RAFT_MSG_TIMEOUT_NOW = 8,
    RAFT_MSG_READ_INDEX = 9,
    RAFT_MSG_READ_INDEX_RESULT = 10
};

struct raft_request_vote {
    uint64_t last_log_index;
    uint64_t last_log_term;
    bool pre_vote;  /* From §9.6: a trial election that changes no state */
    bool transfer;  /* sent because of TimeoutNow: receivers ignore leader stickiness */
};

struct raft_request_vote_result {
    bool granted;
    bool pre_vote;
};

struct raft_append_entries {
    uint64_t prev_index;
    uint64_t prev_term;
    uint64_t commit;
    uint32_t n_entries;
    struct raft_entry *entries;
};

struct raft_append_entries_result {
    bool success;
    uint64_t match_index;  /* success: the follower holds (durably) the leader's log up to here */
    uint64_t reject_index; /* failure: the prev_index that was rejected */
    uint64_t hint_index;   /* failure: the leader should retry with prev_index <= hint_index ... */
    uint64_t hint_term;    /* ... the follower's term at hint_index (fast back-off, §5.3) */
};

struct raft_heartbeat {
    uint64_t commit;  /* min(leader commit, follower match) */
    uint64_t ctx;     /* read-index round; echoed back */
};

struct raft_heartbeat_result {
    uint64_t ctx;
};

struct raft_install_snapshot {
    uint64_t last_index;
    uint64_t last_term;
    struct raft_config config; /* configuration at last_index */
};

struct raft_timeout_now {
    uint64_t last_log_index;
};

struct raft_read_index {
    uint64_t ctx; /* the follower's request id */
};

struct raft_read_index_result {
    uint64_t ctx;
    uint64_t index;  /* serve the read once applied >= index */
    int status;      /* 0, or RAFT_ENOTLEADER */
};

struct raft_message {
    uint8_t type; /* enum raft_message_type */
    uint64_t from;
    uint64_t to;
    uint64_t term;
    union {
        struct raft_request_vote request_vote;
        struct raft_request_vote_result request_vote_result;
        struct raft_append_entries append_entries;
        struct raft_append_entries_result append_entries_result;
        struct raft_heartbeat heartbeat;
        struct raft_heartbeat_result heartbeat_result;
        struct raft_install_snapshot install_snapshot;
        struct raft_timeout_now timeout_now;
        struct raft_read_index read_index;
        struct raft_read_index_result read_index_result;
    };
};

/* ---------------------------------------------------------------------------------------------
 * Events. */
enum raft_event_type {
    RAFT_EVENT_TICK = 1,               /* time passed; call at least every heartbeat/4 */
    RAFT_EVENT_RECEIVE = 2,            /* a message arrived */
    RAFT_EVENT_PERSISTED = 3,          /* every entry up to (index, term) is durable */
    RAFT_EVENT_SNAPSHOT_SENT = 4,      /* a snapshot stream to a peer finished or failed */
    RAFT_EVENT_SNAPSHOT_INSTALLED = 5, /* this node installed a snapshot it received */
    RAFT_EVENT_APPLIED_FLOOR = 6,      /* entries up to index are durably in the state machine */
    RAFT_EVENT_PEER_DOWN = 7,          /* a hint that server `id` has stopped (see below) */
    RAFT_EVENT_TELL_COMMIT = 8         /* leader: tell peers the commit index (commit_untold) */
};

struct raft_event {
    uint8_t type; /* enum raft_event_type */
    uint64_t now_ms;
    union {
        struct raft_message message; /* RECEIVE; the caller keeps ownership of entry bufs */
        struct {
            uint64_t index;
            uint64_t term;
        } persisted;
        struct {
            uint64_t to;
            uint64_t index;
            bool ok;
        } snapshot_sent;
        struct {
            uint64_t from;       /* the leader that streamed it */
            uint64_t term;       /* that leader's term */
            uint64_t index;      /* the snapshot's last included index ... */
            uint64_t last_term;  /* ... and its term */
            struct raft_config config;
        } snapshot_installed;
        struct {
            uint64_t index;
        } applied_floor;
        /* PEER_DOWN: the caller saw server `id`'s host close its connections (its process
         * exited: a crash closes every socket at once). A follower whose leader that is forgets
         * it (so it grants votes at once instead of keeping the leader's lease) and campaigns
         * after (1 + k) heartbeats, k = the voters other than `id` with a smaller id than its
         * own, plus up to half a heartbeat at random, instead of a whole election timeout. Only
         * a hint: safety never depends on it, and with pre-vote a wrong one costs a refused
         * pre-vote round, because the other voters still hear from the leader. Ignored when
         * lease_reads is on (leases assume no follower votes early). */
        struct {
            uint64_t id;
        } peer_down;
    };
};

/* ---------------------------------------------------------------------------------------------
 * Output bundle. */
enum raft_state { RAFT_FOLLOWER = 1, RAFT_PRECANDIDATE = 2, RAFT_CANDIDATE = 3, RAFT_LEADER = 4 };

/* A snapshot the caller must stream to `to`: an image of the state machine containing AT LEAST
 * the entries up to `index` (page images make a newer image valid too; see DESIGN §4), labelled
 * (index, term) with the configuration `config` that was in effect at `index`. */
struct raft_snapshot_send {
    uint64_t to;
    uint64_t index;
    uint64_t term;
    struct raft_config config;
};

enum raft_proposal_outcome {
    RAFT_PROPOSAL_APPENDED = 1,  /* in the leader's log at (index, term) */
    RAFT_PROPOSAL_COMMITTED = 2, /* committed at (index, term) */
    RAFT_PROPOSAL_FAILED = 3     /* see status: RAFT_ENOTCOMMITTED (definitely not committed) or
                                    RAFT_EUNKNOWN (deposed after appending; may still commit) */
};

struct raft_proposal_result {
    uint64_t cookie;
    uint64_t index;
    uint64_t term;
    uint8_t outcome; /* enum raft_proposal_outcome */
    int status;      /* 0 unless FAILED */
};

/* A linearizable read may be served once the state machine has applied `index`; or it failed
 * (status RAFT_ENOTLEADER, RAFT_ELEADERSHIPLOST, RAFT_ETIMEOUT). */
struct raft_read {
    uint64_t cookie;
    uint64_t index;
    int status;
};

struct raft_update {
    /* 1. Persist before sending any message of this update. */
    bool hard_state_changed;
    uint64_t term;
    uint64_t vote;

    /* 2. Log reset by an installed snapshot (0: none). */
    uint64_t snapshot_index;
    uint64_t snapshot_term;

    /* 3./4. Log changes. */
    uint64_t truncate_from; /* 0: none */
    const struct raft_entry *entries;
    uint32_t n_entries;

    /* 5. Messages. */
    const struct raft_message *messages;
    uint32_t n_messages;

    /* 6. Entries to apply, in order; commit_index is the core's commit index after the call. */
    const struct raft_entry *committed;
    uint32_t n_committed;
    uint64_t commit_index;

    /* 7. Snapshots to stream. */
    const struct raft_snapshot_send *snapshots;
    uint32_t n_snapshots;

    /* 8. The log prefix up to here may be dropped (0: none). */
    uint64_t compact_to;

    /* 9. Client results. */
    const struct raft_proposal_result *proposals;
    uint32_t n_proposals;
    const struct raft_read *reads;
    uint32_t n_reads;

    /* A leader: some peer holds entries up to an index now committed but no message to it has
     * said so yet. The next AppendEntries to it will; where none may follow soon (no further
     * proposal), step RAFT_EVENT_TELL_COMMIT a moment later, which sends the commit index to each
     * such peer (a heartbeat to it alone, no new round). Without it a follower -- a read
     * replica -- learns of its last commits only with the next entries or the next heartbeat. */
    bool commit_untold;

    /* Role, leader or configuration changed during the call (informational). */
    bool state_changed;
    uint8_t state; /* enum raft_state */
    uint64_t leader;
    bool config_changed;
};

/* ---------------------------------------------------------------------------------------------
 * Creating a node. */
struct raft_options {
    uint64_t id;                  /* this server, != 0 */
    uint64_t seed;                /* PRNG seed (election timeouts, request ids); use a fresh
                                     one at every start, or ids may repeat across restarts */
    uint32_t election_timeout_ms; /* base; the actual timeout is random in [base, 2*base) */
    uint32_t heartbeat_ms;
    uint32_t batch_entries_max;   /* entries per AppendEntries */
    uint64_t batch_bytes_max;     /* payload bytes per AppendEntries (at least one entry is sent) */
    uint32_t inflight_msgs_max;   /* AppendEntries in flight per follower in pipeline mode */
    uint64_t inflight_bytes_max;  /* payload bytes in flight per follower */
    uint64_t trailing_entries;    /* entries kept below the applied floor for slow followers ... */
    uint64_t trailing_bytes_max;  /* ... unless they hold more payload bytes than this */
    uint64_t promote_lag_max;     /* a learner within this many entries of the leader is promoted */
    uint64_t entry_bytes_max;     /* largest proposal payload */
    uint32_t pending_max;         /* proposals appended but not committed (leader) */
    bool pre_vote;
    bool check_quorum;
    bool lease_reads;             /* allow raft_read_lease() */
};

/* Fills `o` with defaults for server `id`: election 1000 ms, heartbeat 100 ms, 64 entries or
 * 1 MiB per message, 8 messages or 8 MiB in flight, 1024 trailing entries up to 16 MiB, promote
 * within 64 entries, entries up to 256 MiB, 4096 pending proposals, pre-vote and check-quorum on,
 * lease reads off. */
void raft_options_init(struct raft_options *o /* OUT */, uint64_t id, uint64_t seed);

/* What the caller loaded from disk (zeroes for a brand new server). `entries` are the log after
 * (snapshot_index, snapshot_term); they are treated as durable. `snapshot_config` is the
 * configuration at snapshot_index (n == 0 when none). A server that joins an existing cluster
 * starts with everything zero and waits for a leader. */
struct raft_initial_state {
    uint64_t term;
    uint64_t vote;
    uint64_t snapshot_index;
    uint64_t snapshot_term;
    struct raft_config snapshot_config;
    const struct raft_entry *entries;
    uint32_t n_entries;
    uint64_t commit_index; /* a known lower bound (e.g. the applied floor); 0 if unknown */
    uint64_t now_ms;
};

struct raft;

/* Creates a node. Returns 0, RAFT_EBADARG (bad options or state) or RAFT_ENOMEM. Entries
 * already committed (up to initial->commit_index) are not handed out again. */
int raft_create(const struct raft_options *opts, const struct raft_initial_state *initial,
                struct raft **r /* OUT */);
/* Frees the node and every reference it holds. Outputs of the last update become invalid. */
void raft_destroy(struct raft *r);

/* The first entry of a new cluster: index 1, term 1, type RAFT_CONFIG holding `c`. The caller
 * persists it on every initial member (or on one, then adds the others) and passes it to
 * raft_create(). On success *entry->buf holds one reference owned by the caller. */
int raft_bootstrap_entry(const struct raft_config *c, struct raft_entry *entry /* OUT */);

/* ---------------------------------------------------------------------------------------------
 * Events and calls. Each fills `out` (see DRIVING THE CORE). */
int raft_step(struct raft *r, const struct raft_event *ev, struct raft_update *out /* OUT */);

/* Proposes an entry (RAFT_NORMAL, or RAFT_NOOP as a barrier). On success the entry is appended
 * and out->proposals reports APPENDED with its index and term; later updates report COMMITTED or
 * FAILED for `cookie`. `buf` may be NULL; the core takes its own reference.
 * Errors: RAFT_ENOTLEADER (see raft_leader()), RAFT_ETRANSFER, RAFT_ETOOBIG, RAFT_EBUSY (too many
 * pending), RAFT_EBADARG, RAFT_ESHUTDOWN. */
int raft_propose(struct raft *r, uint64_t now_ms, uint8_t type, struct raft_buf *buf,
                 uint64_t cookie, struct raft_update *out /* OUT */);

/* Membership changes, one server at a time (From §4.1: "the leader ... only allows one change at
 * a time"). Each appends a RAFT_CONFIG entry that takes effect at once and reports on `cookie`
 * like a proposal. Errors: RAFT_ENOTLEADER, RAFT_ECHANGE (an uncommitted change exists, or the
 * leader has not committed an entry of its term yet), RAFT_ETRANSFER, RAFT_EUNKNOWNNODE,
 * RAFT_EDUPLICATE, RAFT_EBADARG, RAFT_ETOOBIG (configuration full).
 *
 * raft_add: `s->role` RAFT_VOTER joins as RAFT_LEARNER and is promoted once caught up;
 * RAFT_REPLICA stays a non-voter. raft_promote: a replica becomes a learner (promoted when caught
 * up), or a voter at once if already caught up. raft_demote: a voter becomes a replica (a leader
 * may demote itself; it steps down once that commits). raft_remove: the server leaves (a leader
 * removing itself steps down once that commits). */
int raft_add(struct raft *r, uint64_t now_ms, const struct raft_server *s, uint64_t cookie,
             struct raft_update *out /* OUT */);
int raft_remove(struct raft *r, uint64_t now_ms, uint64_t id, uint64_t cookie,
                struct raft_update *out /* OUT */);
int raft_promote(struct raft *r, uint64_t now_ms, uint64_t id, uint64_t cookie,
                 struct raft_update *out /* OUT */);
int raft_demote(struct raft *r, uint64_t now_ms, uint64_t id, uint64_t cookie,
                struct raft_update *out /* OUT */);

/* Leader transfer (§3.10) to voter `target`, or (0) the most up-to-date other voter. Proposals
 * are refused with RAFT_ETRANSFER until it ends; it is abandoned after an election timeout.
 * Errors: RAFT_ENOTLEADER, RAFT_ETRANSFER, RAFT_EUNKNOWNNODE (not a voter / no other voter),
 * RAFT_EBADARG (target is self). */
int raft_transfer(struct raft *r, uint64_t now_ms, uint64_t target,
                  struct raft_update *out /* OUT */);

/* ReadIndex (§6.4). On the leader: confirms leadership with a heartbeat round, then releases
 * `cookie` in out->reads with the read index. On a follower: forwards to the leader. Failures are
 * reported through out->reads too. Errors returned directly: RAFT_ENOTLEADER (no known leader),
 * RAFT_EBUSY (too many reads pending). */
int raft_read_index(struct raft *r, uint64_t now_ms, uint64_t cookie,
                    struct raft_update *out /* OUT */);

/* Lease read (§6.4.1), only with options.lease_reads: if this leader heard from a quorum within
 * the last election timeout minus a clock-drift margin, *index receives the read index at once.
 * Relies on bounded clock drift; never the default. Errors: RAFT_ENOTLEADER, RAFT_EBADARG (lease
 * reads off), RAFT_EBUSY (no entry of this term committed), RAFT_ENOQUORUM (lease expired). */
int raft_read_lease(struct raft *r, uint64_t now_ms, uint64_t *index /* OUT */);

/* Disaster recovery: forces configuration `c` on this node. It moves to a new term, votes for
 * itself in it, and appends a RAFT_CONFIG entry holding `c` to its own log; the configuration
 * takes effect at once. Use it when a quorum is lost for good, on ONE survivor (the one with the
 * longest log), with `c` listing the survivors; the others then follow it as usual. Entries that
 * only the lost servers held are lost, and so may be entries this node holds uncommitted that the
 * lost servers never had -- nothing is known to be committed beyond raft_commit_index(). Errors:
 * RAFT_ECONFIG, RAFT_EBADARG (this node not a voter in `c`). */
int raft_recover(struct raft *r, uint64_t now_ms, const struct raft_config *c,
                 struct raft_update *out /* OUT */);

/* ---------------------------------------------------------------------------------------------
 * Status. */
enum raft_progress_state { RAFT_PROBE = 1, RAFT_REPLICATE = 2, RAFT_SNAPSHOT = 3 };

struct raft_progress_info {
    uint64_t id;
    uint64_t match_index;
    uint64_t next_index;
    uint8_t state; /* enum raft_progress_state */
    uint64_t last_contact_ms;
    uint64_t inflight_bytes;
    uint32_t inflight_msgs;
};

uint8_t raft_state(const struct raft *r); /* enum raft_state */
uint64_t raft_id(const struct raft *r);
uint64_t raft_term(const struct raft *r);
uint64_t raft_vote(const struct raft *r);
uint64_t raft_leader(const struct raft *r); /* 0 when unknown */
uint64_t raft_commit_index(const struct raft *r);
uint64_t raft_last_index(const struct raft *r);
uint64_t raft_last_term(const struct raft *r);
uint64_t raft_first_index(const struct raft *r);   /* first entry held in the log */
uint64_t raft_persisted_index(const struct raft *r);
uint64_t raft_applied_floor(const struct raft *r);
uint64_t raft_term_at(const struct raft *r, uint64_t index); /* 0 if unknown */
const struct raft_config *raft_configuration(const struct raft *r); /* latest (maybe uncommitted) */
uint64_t raft_transfer_target(const struct raft *r);               /* 0 when none */
/* Progress of peer `id` (leader only). Returns 0, RAFT_ENOTLEADER or RAFT_EUNKNOWNNODE. */
int raft_progress(const struct raft *r, uint64_t id, struct raft_progress_info *info /* OUT */);

#endif
