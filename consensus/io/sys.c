/*
 * The replaceable system-call table of sys.h and the loops that retry short reads and writes.
 */
#include "consensus/io/sys.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

static int sys_open(const char *path, int flags, mode_t mode)
{
    return open(path, flags, mode);
}

static int sys_mkdir(const char *path, mode_t mode)
{
    return mkdir(path, mode);
}

static const struct io_sys real = {
    .open = sys_open,
    .close = close,
    .pread = pread,
    .pwrite = pwrite,
    .fdatasync = fdatasync,
    .fsync = fsync,
    .ftruncate = ftruncate,
    .rename = rename,
    .unlink = unlink,
    .fstat = fstat,
    .mkdir = sys_mkdir,
};

struct io_sys io_sys = {
    .open = sys_open,
    .close = close,
    .pread = pread,
    .pwrite = pwrite,
    .fdatasync = fdatasync,
    .fsync = fsync,
    .ftruncate = ftruncate,
    .rename = rename,
    .unlink = unlink,
    .fstat = fstat,
    .mkdir = sys_mkdir,
};

void io_sys_restore(void)
{
    io_sys = real;
}

int io_sys_pwrite_all(int fd, const void *buf, size_t len, off_t offset)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = io_sys.pwrite(fd, p, len, offset);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        if (n == 0) {
            errno = ENOSPC;
            return -1;
        }
        p += n;
        len -= (size_t)n;
        offset += n;
    }
    return 0;
}

ssize_t io_sys_pread_all(int fd, void *buf, size_t len, off_t offset)
{
    char *p = buf;
    size_t done = 0;
    while (done < len) {
        ssize_t n = io_sys.pread(fd, p + done, len - done, offset + (off_t)done);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        if (n == 0) {
            break;
        }
        done += (size_t)n;
    }
    return (ssize_t)done;
}
