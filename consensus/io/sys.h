/*
 * The system calls the durable log and the metadata file make, reachable through one table so
 * tests can replace a call to inject ENOSPC, EIO or short writes (in the spirit of SQLite's
 * aSyscall[] in os_unix.c). Production code never changes the table.
 *
 * The table is a process-wide global. Replace its members only while no other thread is doing disk
 * I/O through it (in practice: in single-threaded unit tests), and put it back with
 * io_sys_restore().
 */
#ifndef WALRAFT_IO_SYS_H
#define WALRAFT_IO_SYS_H

#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

struct io_sys {
    int (*open)(const char *path, int flags, mode_t mode);
    int (*close)(int fd);
    ssize_t (*pread)(int fd, void *buf, size_t len, off_t offset);
    ssize_t (*pwrite)(int fd, const void *buf, size_t len, off_t offset);
    int (*fdatasync)(int fd);
    int (*fsync)(int fd);
    int (*ftruncate)(int fd, off_t len);
    int (*rename)(const char *from, const char *to);
    int (*unlink)(const char *path);
    int (*fstat)(int fd, struct stat *st);
    int (*mkdir)(const char *path, mode_t mode);
};

/* The table every disk call of consensus/io/log.c and meta.c goes through. */
extern struct io_sys io_sys;

/* Puts the real system calls back into io_sys. */
void io_sys_restore(void);

/* Writes all `len` bytes at `offset`, retrying short writes and EINTR. Returns 0, or -1 with errno
 * set (a write that makes no progress reports ENOSPC, as the kernel would on the retry). */
int io_sys_pwrite_all(int fd, const void *buf, size_t len, off_t offset);

/* Reads up to `len` bytes at `offset`, retrying short reads and EINTR until end of file. Returns
 * the number of bytes read (less than `len` only at end of file), or -1 with errno set. */
ssize_t io_sys_pread_all(int fd, void *buf, size_t len, off_t offset);

#endif
