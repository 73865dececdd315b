/*
 * The durable log under random faults: a seeded run of appends, syncs, truncations, compactions
 * and restarts while pwrite fills the disk or writes short, fdatasync, fsync, ftruncate, rename
 * and unlink fail, and new files cannot be created. Checked against a model of what the log must
 * hold: everything a successful sync covered (and not later truncated on purpose) survives every
 * restart with its exact term and payload, and after each fault is cleared the log accepts appends
 * again.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "consensus/io/log.h"
#include "consensus/io/sys.h"

#define MAX_INDEX 20000

static uint64_t rng_state;
static int trace;       /* WALRAFT_LOG_TRACE=1: print every operation */
static int maybe_extra; /* a broken log since the last restart: forgotten records may return */

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static uint64_t below(uint64_t n)
{
    return n == 0 ? 0 : rnd() % n;
}

/* --- faults ---------------------------------------------------------------------------------- */

static int faults_on;
static unsigned write_fail_pct, sync_fail_pct, trunc_fail_pct, create_fail_pct, name_fail_pct;

static void note_write(int fd, off_t off, size_t len);

static ssize_t f_pwrite(int fd, const void *buf, size_t len, off_t off)
{
    if (faults_on && below(100) < write_fail_pct) {
        if (len > 1 && below(2) == 0) {
            return pwrite(fd, buf, 1 + below(len - 1), off); /* short */
        }
        errno = below(3) == 0 ? EIO : ENOSPC;
        return -1;
    }
    ssize_t n = pwrite(fd, buf, len, off);
    if (n > 0) {
        note_write(fd, off, (size_t)n);
    }
    return n;
}

/* What a power cut keeps of each file: the size at its last successful fdatasync, by inode, and
 * the range written since then inside that size (overwrites of a preallocated segment's zeros). */
#define SYNCED_MAX 4096
static struct {
    ino_t ino;
    off_t size;
    off_t dirty_from, dirty_to; /* dirty_to == 0: nothing overwritten since the sync */
} synced[SYNCED_MAX];
static int nsynced;

static int synced_slot(ino_t ino)
{
    int i = 0;
    while (i < nsynced && synced[i].ino != ino) {
        i++;
    }
    if (i == nsynced) {
        if (nsynced == SYNCED_MAX) {
            return -1;
        }
        nsynced++;
        synced[i].ino = ino;
        synced[i].size = 0;
        synced[i].dirty_to = 0;
    }
    return i;
}

static void note_write(int fd, off_t off, size_t len)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        return;
    }
    int i = synced_slot(st.st_ino);
    if (i < 0 || off >= synced[i].size) {
        return; /* an append past the synced size: the size model covers it */
    }
    off_t end = off + (off_t)len < synced[i].size ? off + (off_t)len : synced[i].size;
    if (synced[i].dirty_to == 0 || off < synced[i].dirty_from) {
        synced[i].dirty_from = off;
    }
    if (end > synced[i].dirty_to) {
        synced[i].dirty_to = end;
    }
}

static off_t synced_size(ino_t ino)
{
    for (int i = 0; i < nsynced; i++) {
        if (synced[i].ino == ino) {
            return synced[i].size;
        }
    }
    return 0;
}

static int f_fdatasync(int fd)
{
    if (faults_on && below(100) < sync_fail_pct) {
        errno = below(2) == 0 ? EIO : ENOSPC;
        return -1;
    }
    int rc = fdatasync(fd);
    struct stat st;
    if (rc == 0 && fstat(fd, &st) == 0) {
        int i = synced_slot(st.st_ino);
        if (i >= 0) {
            synced[i].size = st.st_size;
            synced[i].dirty_to = 0;
        }
    }
    return rc;
}

static int f_ftruncate(int fd, off_t len)
{
    if (faults_on && below(100) < trunc_fail_pct) {
        errno = EIO;
        return -1;
    }
    return ftruncate(fd, len);
}

static int f_open(const char *path, int flags, mode_t mode)
{
    if (faults_on && (flags & O_CREAT) && below(100) < create_fail_pct) {
        errno = ENOSPC;
        return -1;
    }
    return open(path, flags, mode);
}

static int f_rename(const char *from, const char *to)
{
    if (faults_on && below(100) < name_fail_pct) {
        errno = EIO;
        return -1;
    }
    return rename(from, to);
}

static int f_unlink(const char *path)
{
    if (faults_on && below(100) < name_fail_pct) {
        errno = EIO;
        return -1;
    }
    return unlink(path);
}

static int f_fsync(int fd)
{
    if (faults_on && below(100) < sync_fail_pct) {
        errno = EIO;
        return -1;
    }
    return fsync(fd);
}

/* --- model ----------------------------------------------------------------------------------- */

struct model {
    uint64_t term[MAX_INDEX + 2]; /* term[i] of entry i as appended, 0: none */
    uint64_t first, last;         /* what the log says it holds */
    uint64_t durable;             /* entries 1..durable (>= first) must survive a restart */
    uint64_t cur_term;
};

static size_t plen(uint64_t index, uint64_t term)
{
    return (size_t)((index * 7 + term * 13) % 600) + ((index % 11) == 0 ? 2000 : 0);
}

static void pfill(uint64_t index, uint64_t term, unsigned char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = index % 3 == 0 ? (unsigned char)"abcd"[(i / 64) % 4]
                                : (unsigned char)(i * 31 + index + term);
    }
}

struct check {
    struct model *m;
    uint64_t next;
    int bad;
};

static int on_load(void *arg, const struct io_entry *e)
{
    struct check *c = arg;
    static unsigned char want[4096];
    if (c->next != 0 && e->index != c->next) {
        c->bad++;
    }
    c->next = e->index + 1;
    if (e->index > MAX_INDEX || e->term != c->m->term[e->index] ||
        e->len != plen(e->index, e->term)) {
        if (trace) {
            printf("load: entry %" PRIu64 " term %" PRIu64 ", model says term %" PRIu64 "\n",
                   e->index, e->term, e->index <= MAX_INDEX ? c->m->term[e->index] : 0);
        }
        c->bad++;
        return 0;
    }
    pfill(e->index, e->term, want, e->len);
    if (e->len > 0 && memcmp(want, e->buf, e->len) != 0) {
        c->bad++;
    }
    return 0;
}

struct fx {
    char dir[256];
    struct io_log log;
    struct model m;
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    const char *tmp = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
    snprintf(f->dir, sizeof f->dir, "%s/walraft-logf-XXXXXX", tmp);
    if (mkdtemp(f->dir) == NULL) {
        return -1;
    }
    io_sys.pwrite = f_pwrite;
    io_sys.fdatasync = f_fdatasync;
    io_sys.ftruncate = f_ftruncate;
    io_sys.open = f_open;
    io_sys.rename = f_rename;
    io_sys.unlink = f_unlink;
    io_sys.fsync = f_fsync;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    io_sys_restore();
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* Even seeds run with preallocated segments (appends overwrite zeros), odd ones without. */
static struct io_log_config cfg = {.segment_bytes_max = 24 * 1024, .buffer_bytes = 8192};

/*
 * A power cut: every segment file keeps what its last fdatasync covered plus a random part of
 * what was written after it (cut anywhere, mid-record included). Directory operations are taken
 * as durable; the cut models lost and torn appends, the case acknowledgements depend on.
 */
static void power_cut(struct fx *f)
{
    DIR *d = opendir(f->dir);
    struct dirent *de;
    io_log_close(&f->log);
    while ((de = readdir(d)) != NULL) {
        char p[600];
        struct stat st;
        if (strncmp(de->d_name, "open-", 5) != 0 &&
            !(de->d_name[0] >= '0' && de->d_name[0] <= '9')) {
            continue;
        }
        snprintf(p, sizeof p, "%s/%s", f->dir, de->d_name);
        assert_int_equal(stat(p, &st), 0);
        off_t keep = synced_size(st.st_ino);
        if (keep > st.st_size) {
            keep = st.st_size;
        }
        int i = synced_slot(st.st_ino);
        if (i >= 0 && synced[i].dirty_to > synced[i].dirty_from &&
            synced[i].dirty_to <= st.st_size) {
            /* Writes since the sync are kept as a prefix: cut inside the overwritten zeros (they
             * are zeros again from there, and nothing written later survives), or keep them all
             * and cut in what was appended past the synced size. */
            off_t from = synced[i].dirty_from;
            off_t cut = from + (off_t)below((uint64_t)(st.st_size - from) + 1);
            if (cut < synced[i].dirty_to) {
                static const unsigned char zeros[4096];
                int fd = open(p, O_WRONLY);
                assert_true(fd >= 0);
                for (off_t o = cut; o < synced[i].dirty_to; o += (off_t)sizeof zeros) {
                    size_t n = (size_t)(synced[i].dirty_to - o);
                    n = n < sizeof zeros ? n : sizeof zeros;
                    assert_int_equal(pwrite(fd, zeros, n, o), (ssize_t)n);
                }
                close(fd);
                assert_int_equal(truncate(p, keep), 0);
                continue;
            }
            keep = cut > keep ? cut : keep;
            assert_int_equal(truncate(p, keep), 0);
            continue;
        }
        keep += (off_t)below((uint64_t)(st.st_size - keep) + 1);
        assert_int_equal(truncate(p, keep), 0);
    }
    closedir(d);
}

/* Restarts with faults off, checks the model, and adopts what the log holds. */
static void restart(struct fx *f, int after_broken)
{
    struct model *m = &f->m;
    struct check c = {.m = m};
    io_log_close(&f->log);
    faults_on = 0;
    int rc = io_log_open(&f->log, f->dir, &cfg, on_load, &c);
    if (rc != 0) {
        fail_msg("seed run: reopen: %s: %s", io_log_strerror(rc), io_log_errmsg(&f->log));
    }
    uint64_t last = io_log_last_index(&f->log), first = io_log_first_index(&f->log);
    assert_int_equal(c.bad, 0);
    if (last < m->durable) {
        fail_msg("lost acknowledged entries: last %" PRIu64 " < durable %" PRIu64, last,
                 m->durable);
    }
    assert_true(first >= m->first);
    /* A log broken by a failed clean-up may still hold complete records it had forgotten:
     * never acknowledged, harmless to Raft, and checked against their terms above. */
    if (!after_broken && !maybe_extra && last > m->last) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "ls -l %s >&2", f->dir);
        if (system(cmd) != 0) {
            printf("ls failed\n");
        }
        fail_msg("entries %" PRIu64 "..%" PRIu64 " came back after a clean rewind", m->last + 1,
                 last);
    }
    if (c.next != 0) {
        assert_int_equal(c.next, last + 1);
    }
    m->first = first;
    m->last = last;
    m->durable = last;
    maybe_extra = 0;
    m->cur_term = m->cur_term > io_log_last_term(&f->log) ? m->cur_term : io_log_last_term(&f->log);
}

/* After an error, the log says where it now ends; entries past it are gone. */
static void adopt(struct fx *f)
{
    struct model *m = &f->m;
    uint64_t last = io_log_last_index(&f->log);
    assert_true(last >= m->durable || last + 1 >= m->first);
    assert_true(last <= m->last);
    m->last = last;
    if (m->durable > last) {
        fail_msg("durable entries dropped by a failed call: %" PRIu64 " > %" PRIu64, m->durable,
                 last);
    }
    if (io_log_durable_index(&f->log) > m->durable) {
        fail_msg("a failed call reported entries durable");
    }
}

static void run(struct fx *f, uint64_t seed, int steps)
{
    struct model *m = &f->m;
    static unsigned char bufs[16][4096];
    int errors = 0, restarts = 0, syncs_ok = 0, cuts = 0;
    nsynced = 0;
    cfg.preallocate = seed % 2 == 0;

    rng_state = seed * 0x9e3779b97f4a7c15ull + 1;
    memset(m, 0, sizeof *m);
    m->first = 1;
    m->cur_term = 1;
    write_fail_pct = 2 + (unsigned)below(10);
    sync_fail_pct = 2 + (unsigned)below(10);
    trunc_fail_pct = (unsigned)below(3);
    create_fail_pct = (unsigned)below(20);
    name_fail_pct = (unsigned)below(15);
    faults_on = 0;
    assert_int_equal(io_log_open(&f->log, f->dir, &cfg, NULL, NULL), 0);

    for (int step = 0; step < steps; step++) {
        faults_on = below(3) == 0;
        uint64_t op = below(100);
        int rc = 0;
        if (op < 55) {
            size_t n = 1 + below(16);
            struct io_entry es[16];
            if (m->last + n > MAX_INDEX) {
                rc = io_log_truncate_prefix(&f->log, m->durable);
                continue;
            }
            if (below(10) == 0) {
                m->cur_term++;
            }
            for (size_t k = 0; k < n; k++) {
                uint64_t i = m->last + 1 + k;
                size_t len = plen(i, m->cur_term);
                pfill(i, m->cur_term, bufs[k], len);
                es[k] = (struct io_entry){
                    .term = m->cur_term, .index = i, .type = 0, .buf = bufs[k], .len = len};
            }
            /* The latest attempt at an index is what any copy on disk can hold. */
            for (size_t k = 0; k < n; k++) {
                m->term[es[k].index] = es[k].term;
            }
            rc = io_log_append(&f->log, es, n);
            if (rc == 0) {
                m->last += n;
            } else if (io_log_last_index(&f->log) > m->last) {
                m->last = io_log_last_index(&f->log); /* kept up to the failure */
            }
        } else if (op < 85) {
            rc = io_log_sync(&f->log);
            if (rc == 0) {
                assert_int_equal(io_log_durable_index(&f->log), io_log_last_index(&f->log));
                m->durable = io_log_last_index(&f->log);
                m->last = m->durable;
                syncs_ok++;
            }
        } else if (op < 92) {
            if (m->last >= m->first) {
                uint64_t i = m->first + below(m->last - m->first + 2);
                rc = io_log_truncate_suffix(&f->log, i);
                if (rc == 0) {
                    assert_int_equal(io_log_last_index(&f->log), i - 1);
                    if (i <= m->last) {
                        m->durable = i - 1; /* a real truncation syncs everything before i */
                    }
                    m->last = i - 1;
                    if (below(2) == 0) {
                        m->cur_term++; /* a new leader's entries replace the old ones */
                    }
                } else if (m->durable > io_log_last_index(&f->log)) {
                    /* A partial truncation may have removed durable entries: that is allowed,
                     * the caller asked for them to go. */
                    m->durable = io_log_last_index(&f->log);
                }
            }
        } else if (op < 96) {
            if (m->durable >= m->first) {
                uint64_t i = m->first + below(m->durable - m->first + 1);
                rc = io_log_truncate_prefix(&f->log, i);
                if (rc == 0) {
                    m->first = i + 1;
                    assert_int_equal(io_log_first_index(&f->log), i + 1);
                }
            }
        } else if (op < 98) {
            /* Read a few entries back, across segments, files and the write buffer. */
            for (int k = 0; k < 8 && m->last >= m->first; k++) {
                uint64_t i = m->first + below(m->last - m->first + 1);
                struct io_entry e;
                rc = io_log_get(&f->log, i, &e);
                if (rc != 0) {
                    fail_msg("get %" PRIu64 ": %s: %s", i, io_log_strerror(rc),
                             io_log_errmsg(&f->log));
                }
                struct check c = {.m = m};
                on_load(&c, &e);
                assert_int_equal(c.bad, 0);
                io_log_entry_release(&e);
            }
        } else if (below(2) == 0) {
            power_cut(f);
            cuts++;
            restart(f, 1); /* records written but not synced may survive whole */
            restarts++;
            continue;
        } else {
            restart(f, 0);
            restarts++;
            continue;
        }
        if (trace) {
            printf("step %d op %" PRIu64 " faults %d rc %d last %" PRIu64 " durable %" PRIu64
                   " first %" PRIu64 " | model last %" PRIu64 " durable %" PRIu64 " %s\n",
                   step, op, faults_on, rc, io_log_last_index(&f->log),
                   io_log_durable_index(&f->log), io_log_first_index(&f->log), m->last, m->durable,
                   rc ? io_log_errmsg(&f->log) : "");
        }
        if (trace > 1) {
            char cmd[400];
            snprintf(cmd, sizeof cmd, "ls -l %s | tail -n +2 | awk '{print \"   \", $5, $9}'",
                     f->dir);
            fflush(stdout);
            if (system(cmd) != 0) {
                printf("ls failed\n");
            }
        }
        if (rc == IO_LOG_EBROKEN || f->log.broken) {
            maybe_extra = 1;
            if (below(2) == 0) {
                restart(f, 1);
                restarts++;
                continue;
            }
            /* Otherwise the next call repairs it (or reports EBROKEN while faults last). */
            if (rc == IO_LOG_EBROKEN) {
                adopt(f);
                continue;
            }
        }
        if (rc != 0) {
            errors++;
            if (rc != IO_LOG_ENOSPC && rc != IO_LOG_EIO) {
                fail_msg("seed %" PRIu64 " step %d op %" PRIu64 ": %s: %s", seed, step, op,
                         io_log_strerror(rc), io_log_errmsg(&f->log));
            }
            if (io_log_first_index(&f->log) > m->first) {
                m->first = io_log_first_index(&f->log);
            }
            adopt(f);
        }
    }
    restart(f, 0);
    /* With the faults gone, the log takes appends again. */
    faults_on = 0;
    uint64_t i = m->last + 1;
    size_t len = plen(i, m->cur_term);
    pfill(i, m->cur_term, bufs[0], len);
    struct io_entry e = {.term = m->cur_term, .index = i, .buf = bufs[0], .len = len};
    assert_int_equal(io_log_append(&f->log, &e, 1), 0);
    assert_int_equal(io_log_sync(&f->log), 0);
    m->term[i] = m->cur_term;
    m->last = m->durable = i;
    restart(f, 0);
    io_log_close(&f->log);
    printf("seed %3" PRIu64 "%s: %d steps, %d errors injected and survived, %d syncs, %d "
           "restarts (%d after power cuts), log %" PRIu64 "..%" PRIu64 "\n",
           seed, cfg.preallocate ? " (preallocated)" : "", steps, errors, syncs_ok, restarts, cuts,
           m->first, m->last);
}

static void test_io_log_survives_random_faults(void **state)
{
    struct fx *f = *state;
    const char *env = getenv("WALRAFT_LOG_SEEDS");
    uint64_t seeds = env != NULL ? strtoull(env, NULL, 10) : 12;
    const char *one = getenv("WALRAFT_LOG_SEED");
    trace = getenv("WALRAFT_LOG_TRACE") != NULL ? atoi(getenv("WALRAFT_LOG_TRACE")) : 0;
    for (uint64_t seed = one != NULL ? strtoull(one, NULL, 10) : 1;
         seed <= (one != NULL ? strtoull(one, NULL, 10) : seeds); seed++) {
        nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        assert_int_equal(mkdir(f->dir, 0755), 0);
        run(f, seed, 1500);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_io_log_survives_random_faults, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
