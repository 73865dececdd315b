/*
 * Two-slot files (see meta.h for the layout): the node's metadata and the log's anchor.
 */
#include "consensus/io/meta.h"
#include "consensus/io/bytes.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "consensus/io/sys.h"

_Static_assert(IO_SLOT_HEADER_BYTES + IO_SLOT_PAYLOAD_MAX + 8 == IO_SLOT_BYTES,
               "slot layout adds up");
_Static_assert(7 * 8 <= IO_SLOT_PAYLOAD_MAX, "metadata payload fits a slot");

#define META_PAYLOAD_BYTES 56

static int errno_code(int e)
{
    switch (e) {
    case ENOSPC:
    case EDQUOT:
        return IO_LOG_ENOSPC;
    case ENOMEM:
        return IO_LOG_ENOMEM;
    default:
        return IO_LOG_EIO;
    }
}

/* Records a failed system call in s->errmsg and returns its code. */
static int sys_fail(struct io_slots *s, const char *what, const char *path)
{
    int e = errno;
    snprintf(s->errmsg, sizeof s->errmsg, "%s %s: %s", what, path, strerror(e));
    return errno_code(e);
}

static void encode_slot(const struct io_slots *s, uint64_t seq, const void *payload,
                        unsigned char *slot)
{
    memset(slot, 0, IO_SLOT_BYTES);
    io_put32(slot, s->magic);
    io_put32(slot + 4, s->version);
    io_put64(slot + 8, seq);
    io_put32(slot + 16, (uint32_t)s->payload_len);
    memcpy(slot + IO_SLOT_HEADER_BYTES, payload, s->payload_len);
    io_put64(slot + IO_SLOT_BYTES - 8, XXH64(slot, IO_SLOT_BYTES - 8, 0));
}

/* Why slot bytes are not a valid copy, or NULL when they are. Sets *newer_version when the only
 * fault is a format version this code does not know. */
static const char *check_slot(const struct io_slots *s, const unsigned char *slot,
                              int *newer_version)
{
    if (io_get64(slot + IO_SLOT_BYTES - 8) != XXH64(slot, IO_SLOT_BYTES - 8, 0)) {
        return "checksum mismatch";
    }
    if (io_get32(slot) != s->magic) {
        return "wrong magic";
    }
    if (io_get32(slot + 4) != s->version) {
        *newer_version = io_get32(slot + 4) > s->version;
        return "unknown format version";
    }
    if (io_get32(slot + 16) != s->payload_len) {
        return "wrong payload length";
    }
    return NULL;
}

static int fsync_parent(struct io_slots *s, const char *path)
{
    char copy[sizeof s->path];
    snprintf(copy, sizeof copy, "%s", path);
    const char *dir = dirname(copy);
    int fd = io_sys.open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0) {
        return sys_fail(s, "open directory", dir);
    }
    int rc = 0;
    if (io_sys.fsync(fd) != 0) {
        rc = sys_fail(s, "fsync directory", dir);
    }
    io_sys.close(fd);
    return rc;
}

/* Writes a new file with both slots holding `initial` (slot 0 with sequence 1, slot 1 with 0)
 * under a temporary name and renames it into place, so the file never exists half-written. */
static int create_file(struct io_slots *s, const void *initial)
{
    char tmp[sizeof s->path + 8];
    unsigned char buf[2 * IO_SLOT_BYTES];
    int rc;

    snprintf(tmp, sizeof tmp, "%s.tmp", s->path);
    encode_slot(s, 1, initial, buf);
    encode_slot(s, 0, initial, buf + IO_SLOT_BYTES);
    int fd = io_sys.open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return sys_fail(s, "create", tmp);
    }
    if (io_sys_pwrite_all(fd, buf, sizeof buf, 0) != 0) {
        rc = sys_fail(s, "write", tmp);
        goto err_after_open;
    }
    if (io_sys.fdatasync(fd) != 0) {
        rc = sys_fail(s, "fdatasync", tmp);
        goto err_after_open;
    }
    if (io_sys.rename(tmp, s->path) != 0) {
        rc = sys_fail(s, "rename to", s->path);
        goto err_after_open;
    }
    rc = fsync_parent(s, s->path);
    if (rc != 0) {
        goto err_after_open;
    }
    s->fd = fd;
    s->seq = 1;
    s->newest = 0;
    return 0;

err_after_open:
    io_sys.close(fd);
    io_sys.unlink(tmp);
    return rc;
}

int io_slots_open(struct io_slots *s, const char *path, uint32_t magic, uint32_t version,
                  size_t payload_len, const void *initial, void *payload, int *found)
{
    unsigned char buf[2 * IO_SLOT_BYTES];
    const char *why[2];
    uint64_t seq[2];
    int newer[2] = {0, 0};
    int rc;

    assert(payload_len <= IO_SLOT_PAYLOAD_MAX);
    memset(s, 0, sizeof *s);
    s->fd = -1;
    s->magic = magic;
    s->version = version;
    s->payload_len = payload_len;
    if (strlen(path) >= sizeof s->path) {
        snprintf(s->errmsg, sizeof s->errmsg, "path too long: %.200s...", path);
        return IO_LOG_EINVAL;
    }
    snprintf(s->path, sizeof s->path, "%s", path);

    int fd = io_sys.open(path, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0 && errno == ENOENT) {
        rc = create_file(s, initial);
        if (rc == 0) {
            memcpy(payload, initial, payload_len);
            *found = 0;
        }
        return rc;
    }
    if (fd < 0) {
        return sys_fail(s, "open", path);
    }
    memset(buf, 0, sizeof buf);
    ssize_t n = io_sys_pread_all(fd, buf, sizeof buf, 0);
    if (n < 0) {
        rc = sys_fail(s, "read", path);
        goto err_after_open;
    }
    for (int k = 0; k < 2; k++) {
        const unsigned char *slot = buf + k * IO_SLOT_BYTES;
        if (n < (ssize_t)((k + 1) * IO_SLOT_BYTES)) {
            why[k] = "slot cut short";
        } else {
            why[k] = check_slot(s, slot, &newer[k]);
        }
        seq[k] = why[k] == NULL ? io_get64(slot + 8) : 0;
    }
    if (why[0] != NULL && why[1] != NULL) {
        rc = newer[0] || newer[1] ? IO_LOG_EVERSION : IO_LOG_ECORRUPT;
        snprintf(s->errmsg, sizeof s->errmsg,
                 "%s: no valid slot (slot 0 at offset 0: %s; slot 1 at offset %d: %s); "
                 "refusing to start from zeroed state",
                 path, why[0], IO_SLOT_BYTES, why[1]);
        goto err_after_open;
    }
    /* A copy whose write reported failure may sit in the page cache: whoever acts on what we
     * load (a vote sent again) must find it on disk after a power cut, so sync it first. */
    if (io_sys.fdatasync(fd) != 0) {
        rc = sys_fail(s, "fdatasync", path);
        goto err_after_open;
    }
    int k = why[0] != NULL ? 1 : why[1] != NULL ? 0 : seq[1] > seq[0] ? 1 : 0;
    memcpy(payload, buf + k * IO_SLOT_BYTES + IO_SLOT_HEADER_BYTES, payload_len);
    s->seq = seq[k];
    s->newest = k;
    s->fd = fd;
    *found = 1;
    return 0;

err_after_open:
    io_sys.close(fd);
    return rc;
}

int io_slots_write(struct io_slots *s, const void *payload)
{
    unsigned char slot[IO_SLOT_BYTES];
    int target = 1 - s->newest;

    assert(s->fd >= 0);
    encode_slot(s, s->seq + 1, payload, slot);
    if (io_sys_pwrite_all(s->fd, slot, sizeof slot, (off_t)target * IO_SLOT_BYTES) != 0) {
        return sys_fail(s, "write", s->path);
    }
    if (io_sys.fdatasync(s->fd) != 0) {
        return sys_fail(s, "fdatasync", s->path);
    }
    /* Only now is the new copy the newest: a failed write leaves `target` as the slot to retry,
     * so the previous copy is never overwritten. */
    s->seq++;
    s->newest = target;
    return 0;
}

void io_slots_close(struct io_slots *s)
{
    if (s->fd >= 0) {
        io_sys.close(s->fd);
        s->fd = -1;
    }
}

static void meta_encode(const struct io_meta *m, unsigned char *p)
{
    io_put64(p, m->term);
    io_put64(p + 8, m->voted_for);
    io_put64(p + 16, m->node_id);
    io_put64(p + 24, m->cluster_id);
    io_put64(p + 32, m->applied_floor);
    io_put64(p + 40, m->snapshot_index);
    io_put64(p + 48, m->snapshot_term);
}

static void meta_decode(const unsigned char *p, struct io_meta *m)
{
    m->term = io_get64(p);
    m->voted_for = io_get64(p + 8);
    m->node_id = io_get64(p + 16);
    m->cluster_id = io_get64(p + 24);
    m->applied_floor = io_get64(p + 32);
    m->snapshot_index = io_get64(p + 40);
    m->snapshot_term = io_get64(p + 48);
}

int io_meta_open(struct io_meta_file *f, const char *path, struct io_meta *out, int *created)
{
    unsigned char initial[META_PAYLOAD_BYTES];
    unsigned char payload[META_PAYLOAD_BYTES];
    struct io_meta zero;
    int found = 0;

    memset(&zero, 0, sizeof zero);
    meta_encode(&zero, initial);
    int rc = io_slots_open(&f->slots, path, IO_META_MAGIC, IO_META_VERSION, META_PAYLOAD_BYTES,
                           initial, payload, &found);
    if (rc != 0) {
        return rc;
    }
    meta_decode(payload, out);
    if (created != NULL) {
        *created = !found;
    }
    return 0;
}

int io_meta_store(struct io_meta_file *f, const struct io_meta *m)
{
    unsigned char payload[META_PAYLOAD_BYTES];
    meta_encode(m, payload);
    return io_slots_write(&f->slots, payload);
}

void io_meta_close(struct io_meta_file *f)
{
    io_slots_close(&f->slots);
}

const char *io_meta_errmsg(const struct io_meta_file *f)
{
    return f->slots.errmsg;
}
