/*
 * kvnode: one Raft node per process over an in-memory key-value state machine, driven by
 * commands on standard input (one reply line each on standard output). It exercises the runtime
 * of consensus/io/ without SQLite; tests/e2e/test_runtime.py runs clusters of it.
 *
 *   kvnode --dir D [--name N --listen ADDR (--bootstrap | --join ADDR [--replica])]
 *          [--election-ms MS] [--heartbeat-ms MS] [--trailing N] [--lazy-sync]
 *          [--snapshot-read-ms MS] [--refuse-snapshots] [--install-ms MS]
 *
 * --snapshot-read-ms makes every read of a snapshot being sent take that long (a slow disk);
 * --refuse-snapshots makes this node refuse every snapshot sent to it (a full disk);
 * --install-ms makes installing a received snapshot take that long (a large image).
 *
 * Commands:
 *   put K V            propose K=V; "ok INDEX" or "err CODE MESSAGE"
 *   get K              local read: "val V" or "none"
 *   barrier            ReadIndex: "ok INDEX" once applied
 *   load N T           N puts from T threads (keys t<thread>-<i>): "ok OKS ERRS UNKNOWNS"
 *   seq                "seq APPLIED COUNT HASH": the applied index, the number of entries applied
 *                      and a hash chained over them in order (equal on nodes that applied the
 *                      same history)
 *   checkpoint         save the state to DIR/kv.state and report the applied floor
 *   add N ADDR [replica] | remove N | promote N | demote N | transfer [N]
 *   status             the node's status JSON
 *   role               "leader", "follower", ...
 *   partition [N] IN OUT   drop messages from/to N (or everyone) when IN/OUT are 1
 *   quit               stop the node and exit 0
 *
 * The state machine keeps its own applied index, so entries replayed after a snapshot or a
 * restart that it already holds are skipped (the runtime may hand them out again).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "consensus/io/node.h"

#define BUCKETS 4096

struct kv_item {
    char *key;
    char *value;
    struct kv_item *next;
};

struct kv {
    pthread_mutex_t mu;
    struct kv_item *b[BUCKETS];
    uint64_t applied; /* last index in the state */
    uint64_t count;   /* entries applied */
    uint64_t hash;    /* chained over (index, payload) of every applied entry */
    /* snapshot being installed */
    char *inst;
    size_t inst_len, inst_cap;
    char dir[4096];
};

static struct kv kv;
static struct io_node *node;

static unsigned bucket(const char *key)
{
    return (unsigned)(XXH64(key, strlen(key), 0) % BUCKETS);
}

/* Sets key to value; caller holds kv.mu. */
static void kv_set(const char *key, size_t klen, const char *value, size_t vlen)
{
    char *k = strndup(key, klen);
    unsigned h = bucket(k);
    for (struct kv_item *it = kv.b[h]; it != NULL; it = it->next) {
        if (strcmp(it->key, k) == 0) {
            free(it->value);
            it->value = strndup(value, vlen);
            free(k);
            return;
        }
    }
    struct kv_item *it = malloc(sizeof *it);
    it->key = k;
    it->value = strndup(value, vlen);
    it->next = kv.b[h];
    kv.b[h] = it;
}

static void kv_clear(void)
{
    for (unsigned h = 0; h < BUCKETS; h++) {
        struct kv_item *it = kv.b[h];
        while (it != NULL) {
            struct kv_item *next = it->next;
            free(it->key);
            free(it->value);
            free(it);
            it = next;
        }
        kv.b[h] = NULL;
    }
}

/* io_fsm.state_index: the state loaded at start. */
static uint64_t fsm_state_index(void *ctx)
{
    (void)ctx;
    pthread_mutex_lock(&kv.mu);
    uint64_t applied = kv.applied;
    pthread_mutex_unlock(&kv.mu);
    return applied;
}

static int fsm_apply(void *ctx, uint64_t index, const void *buf, size_t len)
{
    (void)ctx;
    pthread_mutex_lock(&kv.mu);
    if (index <= kv.applied) {
        pthread_mutex_unlock(&kv.mu);
        return 0;
    }
    const char *p = buf;
    const char *eq = memchr(p, '=', len);
    if (eq != NULL) {
        kv_set(p, (size_t)(eq - p), eq + 1, len - (size_t)(eq - p) - 1);
    }
    uint64_t h[2] = {kv.hash, index};
    kv.hash = XXH64(buf, len, XXH64(h, sizeof h, 0));
    kv.applied = index;
    kv.count++;
    pthread_mutex_unlock(&kv.mu);
    return 0;
}

/* Serialises the state: "applied count hash\n" then "key\tvalue\n" lines. */
static char *kv_serialise(size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *out = malloc(cap);
    pthread_mutex_lock(&kv.mu);
    n += (size_t)snprintf(out, cap, "%" PRIu64 " %" PRIu64 " %" PRIu64 "\n", kv.applied, kv.count,
                          kv.hash);
    for (unsigned h = 0; h < BUCKETS; h++) {
        for (struct kv_item *it = kv.b[h]; it != NULL; it = it->next) {
            size_t need = strlen(it->key) + strlen(it->value) + 2;
            while (n + need + 1 > cap) {
                cap *= 2;
                out = realloc(out, cap);
            }
            n += (size_t)sprintf(out + n, "%s\t%s\n", it->key, it->value);
        }
    }
    pthread_mutex_unlock(&kv.mu);
    *len = n;
    return out;
}

/* Replaces the state with a serialised one; caller holds kv.mu. */
static int kv_load(const char *buf, size_t len)
{
    const char *end = buf + len;
    const char *nl = memchr(buf, '\n', len);
    uint64_t applied, count, hash;
    if (nl == NULL || sscanf(buf, "%" SCNu64 " %" SCNu64 " %" SCNu64, &applied, &count, &hash) != 3) {
        return -1;
    }
    kv_clear();
    kv.applied = applied;
    kv.count = count;
    kv.hash = hash;
    for (const char *p = nl + 1; p < end;) {
        const char *e = memchr(p, '\n', (size_t)(end - p));
        const char *tab = e ? memchr(p, '\t', (size_t)(e - p)) : NULL;
        if (e == NULL || tab == NULL) {
            return -1;
        }
        kv_set(p, (size_t)(tab - p), tab + 1, (size_t)(e - tab - 1));
        p = e + 1;
    }
    return 0;
}

struct snap_handle {
    char *buf;
    size_t len, off;
};

static int fsm_snapshot_open(void *ctx, void **handle, uint64_t *size)
{
    (void)ctx;
    struct snap_handle *s = malloc(sizeof *s);
    s->buf = kv_serialise(&s->len);
    s->off = 0;
    *handle = s;
    *size = s->len;
    return 0;
}

static unsigned snapshot_read_ms; /* --snapshot-read-ms */
static bool refuse_snapshots;     /* --refuse-snapshots */
static unsigned install_ms;       /* --install-ms */

static int fsm_snapshot_read(void *ctx, void *handle, void *buf, size_t cap, size_t *n)
{
    (void)ctx;
    struct snap_handle *s = handle;
    if (snapshot_read_ms > 0) {
        struct timespec ts = {.tv_sec = snapshot_read_ms / 1000,
                              .tv_nsec = (long)(snapshot_read_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    size_t k = s->len - s->off < cap ? s->len - s->off : cap;
    memcpy(buf, s->buf + s->off, k);
    s->off += k;
    *n = k;
    return 0;
}

static void fsm_snapshot_close(void *ctx, void *handle)
{
    (void)ctx;
    struct snap_handle *s = handle;
    free(s->buf);
    free(s);
}

static int fsm_install_begin(void *ctx, uint64_t index)
{
    (void)ctx;
    (void)index;
    if (refuse_snapshots) {
        return -1;
    }
    free(kv.inst);
    kv.inst = NULL;
    kv.inst_len = kv.inst_cap = 0;
    return 0;
}

static int fsm_install_chunk(void *ctx, const void *buf, size_t len)
{
    (void)ctx;
    if (kv.inst_len + len > kv.inst_cap) {
        kv.inst_cap = (kv.inst_len + len) * 2;
        kv.inst = realloc(kv.inst, kv.inst_cap);
    }
    memcpy(kv.inst + kv.inst_len, buf, len);
    kv.inst_len += len;
    return 0;
}

static int save_state(uint64_t *applied_out);

/* io_fsm's contract: the installed image must be durable when this returns (the node then records
 * it as its log's base and drops the log before it); an image holding no more than the state
 * does is not installed (the state never goes back), but the state is made durable. */
static int fsm_install_end(void *ctx, uint64_t index, bool ok)
{
    (void)ctx;
    (void)index;
    int rc = 0;
    if (ok && install_ms > 0) {
        struct timespec ts = {.tv_sec = install_ms / 1000,
                              .tv_nsec = (long)(install_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (ok) {
        uint64_t image = 0;
        pthread_mutex_lock(&kv.mu);
        if (kv.inst == NULL || sscanf(kv.inst, "%" SCNu64, &image) != 1) {
            rc = -1;
        } else if (image > kv.applied) {
            rc = kv_load(kv.inst, kv.inst_len);
        } else {
            fprintf(stderr, "kvnode: snapshot %" PRIu64 " not installed: it holds %" PRIu64
                            ", the state %" PRIu64 "\n", index, image, kv.applied);
        }
        pthread_mutex_unlock(&kv.mu);
        uint64_t held;
        if (rc == 0) {
            rc = save_state(&held);
        }
    }
    free(kv.inst);
    kv.inst = NULL;
    kv.inst_len = kv.inst_cap = 0;
    return rc;
}

/* Writes the state durably (a new file, fsync'ed, renamed over the old one); *applied is the
 * index it holds. */
static int save_state(uint64_t *applied_out)
{
    size_t len;
    char *buf = kv_serialise(&len);
    uint64_t applied;
    sscanf(buf, "%" SCNu64, &applied);
    char path[4200], tmp[4210];
    snprintf(path, sizeof path, "%s/kv.state", kv.dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int rc = -1;
    if (fd >= 0 && write(fd, buf, len) == (ssize_t)len && fsync(fd) == 0 && rename(tmp, path) == 0) {
        rc = 0;
    }
    if (fd >= 0) {
        close(fd);
    }
    free(buf);
    *applied_out = applied;
    return rc;
}

static int checkpoint(uint64_t *floor /* OUT */)
{
    uint64_t applied;
    int rc = save_state(&applied);
    if (rc == 0) {
        io_node_set_applied_floor(node, applied);
        *floor = applied;
    }
    return rc;
}

static void load_state(void)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/kv.state", kv.dir);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return;
    }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    if (fread(buf, 1, (size_t)len, f) == (size_t)len) {
        kv_load(buf, (size_t)len);
    }
    fclose(f);
    free(buf);
}

static void reply_rc(int rc, uint64_t index)
{
    if (rc == 0) {
        printf("ok %" PRIu64 "\n", index);
    } else {
        char name[RAFT_NAME_MAX], addr[RAFT_ADDR_MAX];
        io_node_leader(node, name, addr);
        printf("err %d %s (leader %s at %s)\n", rc, io_node_strerror(rc), name[0] ? name : "-",
               addr[0] ? addr : "-");
    }
}

struct load_arg {
    int thread;
    int n;
    int ok, err, unknown;
};

static void *load_main(void *arg)
{
    struct load_arg *a = arg;
    for (int i = 0; i < a->n; i++) {
        char buf[64];
        int len = snprintf(buf, sizeof buf, "t%d-%d=%d", a->thread, i, i);
        int rc = io_node_propose(node, buf, (size_t)len, 10000, NULL);
        if (rc == 0) {
            a->ok++;
        } else if (rc == RAFT_EUNKNOWN) {
            a->unknown++;
        } else {
            a->err++;
        }
    }
    return NULL;
}

static const char *arg_value(int argc, char **argv, const char *flag)
{
    for (int i = 1; i < argc - 1; i++) {
        if (strcmp(argv[i], flag) == 0) {
            return argv[i + 1];
        }
    }
    return NULL;
}

static bool has_flag(int argc, char **argv, const char *flag)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], flag) == 0) {
            return true;
        }
    }
    return false;
}

int main(int argc, char **argv)
{
    const char *dir = arg_value(argc, argv, "--dir");
    if (dir == NULL) {
        fprintf(stderr, "usage: kvnode --dir D [--name N --listen ADDR (--bootstrap | --join ADDR "
                        "[--replica])] [--election-ms MS] [--heartbeat-ms MS] [--trailing N] [--lazy-sync] "
                        "[--snapshot-read-ms MS] [--refuse-snapshots] [--install-ms MS]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    pthread_mutex_init(&kv.mu, NULL);
    snprintf(kv.dir, sizeof kv.dir, "%s", dir);

    struct io_node_config cfg = {
        .dir = dir,
        .name = arg_value(argc, argv, "--name"),
        .listen_addr = arg_value(argc, argv, "--listen"),
        .fsm = {.ctx = NULL,
                .apply = fsm_apply,
                .snapshot_open = fsm_snapshot_open,
                .snapshot_read = fsm_snapshot_read,
                .snapshot_close = fsm_snapshot_close,
                .install_begin = fsm_install_begin,
                .install_chunk = fsm_install_chunk,
                .install_end = fsm_install_end,
                .state_index = fsm_state_index},
    };
    const char *v;
    if ((v = arg_value(argc, argv, "--election-ms")) != NULL) {
        cfg.election_timeout_ms = (uint32_t)atoi(v);
    }
    if ((v = arg_value(argc, argv, "--heartbeat-ms")) != NULL) {
        cfg.heartbeat_ms = (uint32_t)atoi(v);
    }
    if ((v = arg_value(argc, argv, "--trailing")) != NULL) {
        cfg.trailing_entries = (uint64_t)atoll(v);
    }
    if ((v = arg_value(argc, argv, "--snapshot-read-ms")) != NULL) {
        snapshot_read_ms = (unsigned)atoi(v);
    }
    refuse_snapshots = has_flag(argc, argv, "--refuse-snapshots");
    if ((v = arg_value(argc, argv, "--install-ms")) != NULL) {
        install_ms = (unsigned)atoi(v);
    }
    if (has_flag(argc, argv, "--lazy-sync")) {
        cfg.leader_sync = IO_LEADER_SYNC_LAZY; /* io_node_config.leader_sync */
    }
    enum io_node_start_mode mode = IO_NODE_RESTART;
    const char *join = arg_value(argc, argv, "--join");
    if (has_flag(argc, argv, "--bootstrap")) {
        mode = IO_NODE_BOOTSTRAP;
    } else if (join != NULL) {
        mode = IO_NODE_JOIN;
    }
    load_state();
    char err[512] = "";
    int rc = io_node_start(&cfg, mode, join,
                           has_flag(argc, argv, "--replica") ? RAFT_REPLICA : RAFT_VOTER, 20000,
                           &node, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "kvnode: %s (%s)\n", err, io_node_strerror(rc));
        printf("err %d %s\n", rc, err);
        return 1;
    }
    printf("ready\n");

    char line[4096];
    while (fgets(line, sizeof line, stdin) != NULL) {
        char a[1024] = "", b[1024] = "", c[64] = "";
        line[strcspn(line, "\n")] = '\0';
        int k = sscanf(line, "%*s %1023s %1023s %63s", a, b, c);
        uint64_t index = 0;
        if (strncmp(line, "put ", 4) == 0 && k >= 2) {
            char buf[2100];
            int len = snprintf(buf, sizeof buf, "%s=%s", a, b);
            rc = io_node_propose(node, buf, (size_t)len, 10000, &index);
            reply_rc(rc, index);
        } else if (strncmp(line, "get ", 4) == 0 && k >= 1) {
            pthread_mutex_lock(&kv.mu);
            const char *val = NULL;
            for (struct kv_item *it = kv.b[bucket(a)]; it != NULL; it = it->next) {
                if (strcmp(it->key, a) == 0) {
                    val = it->value;
                }
            }
            if (val != NULL) {
                printf("val %s\n", val);
            } else {
                printf("none\n");
            }
            pthread_mutex_unlock(&kv.mu);
        } else if (strcmp(line, "barrier") == 0) {
            rc = io_node_barrier(node, 10000, &index);
            reply_rc(rc, index);
        } else if (strncmp(line, "load ", 5) == 0 && k >= 2) {
            int total = atoi(a), threads = atoi(b);
            if (threads < 1 || threads > 64) {
                threads = 1;
            }
            pthread_t th[64];
            struct load_arg la[64];
            for (int i = 0; i < threads; i++) {
                la[i] = (struct load_arg){i, total / threads + (i < total % threads), 0, 0, 0};
                pthread_create(&th[i], NULL, load_main, &la[i]);
            }
            int ok = 0, errs = 0, unknown = 0;
            for (int i = 0; i < threads; i++) {
                pthread_join(th[i], NULL);
                ok += la[i].ok;
                errs += la[i].err;
                unknown += la[i].unknown;
            }
            printf("ok %d %d %d\n", ok, errs, unknown);
        } else if (strcmp(line, "seq") == 0) {
            pthread_mutex_lock(&kv.mu);
            printf("seq %" PRIu64 " %" PRIu64 " %016" PRIx64 "\n", kv.applied, kv.count, kv.hash);
            pthread_mutex_unlock(&kv.mu);
        } else if (strcmp(line, "checkpoint") == 0) {
            uint64_t floor = 0;
            rc = checkpoint(&floor);
            reply_rc(rc == 0 ? 0 : IO_NODE_EIO, floor);
        } else if (strncmp(line, "add ", 4) == 0 && k >= 2) {
            uint8_t role = strcmp(c, "replica") == 0 ? RAFT_REPLICA : RAFT_VOTER;
            reply_rc(io_node_add(node, a, b, role, 10000), 0);
        } else if (strncmp(line, "remove ", 7) == 0 && k >= 1) {
            reply_rc(io_node_remove(node, a, 10000), 0);
        } else if (strncmp(line, "promote ", 8) == 0 && k >= 1) {
            reply_rc(io_node_promote(node, a, 10000), 0);
        } else if (strncmp(line, "demote ", 7) == 0 && k >= 1) {
            reply_rc(io_node_demote(node, a, 10000), 0);
        } else if (strncmp(line, "transfer", 8) == 0) {
            reply_rc(io_node_transfer(node, k >= 1 ? a : NULL, 10000), 0);
        } else if (strcmp(line, "status") == 0 || strcmp(line, "role") == 0) {
            struct io_node_status *st = malloc(sizeof *st);
            rc = io_node_status(node, st);
            if (rc != 0) {
                reply_rc(rc, 0);
            } else if (strcmp(line, "role") == 0) {
                printf("%s\n", st->state == RAFT_LEADER ? "leader" : "follower");
            } else {
                char json[16384];
                io_node_status_json(st, json, sizeof json);
                printf("%s\n", json);
            }
            free(st);
        } else if (strncmp(line, "partition", 9) == 0) {
            /* partition [NAME] IN OUT */
            if (k == 3) {
                io_node_set_partition(node, a, atoi(b) != 0, atoi(c) != 0);
            } else {
                io_node_set_partition(node, NULL, atoi(a) != 0, atoi(b) != 0);
            }
            printf("ok 0\n");
        } else if (strcmp(line, "quit") == 0) {
            break;
        } else {
            printf("err 8 unknown command: %s\n", line);
        }
    }
    io_node_stop(node);
    pthread_mutex_lock(&kv.mu);
    kv_clear();
    pthread_mutex_unlock(&kv.mu);
    printf("bye\n");
    return 0;
}
