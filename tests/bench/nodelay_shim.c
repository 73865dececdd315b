/*
 * Diagnostic shim (LD_PRELOAD): sets TCP_NODELAY on every TCP socket right after connect(), to
 * test whether a latency tail comes from Nagle's algorithm on outgoing connections:
 *
 *   LD_PRELOAD=$BUILD/bench/nodelay_shim.so $BUILD/bench/raftbench
 *
 * Not linked into anything; the benchmarks never use it by default.
 */
#include <dlfcn.h>
#include <stddef.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

int connect(int fd, const struct sockaddr *addr, socklen_t len);

int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    static int (*real)(int, const struct sockaddr *, socklen_t);
    if (real == NULL) {
        real = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
    }
    int one = 1;
    if (addr != NULL && (addr->sa_family == AF_INET || addr->sa_family == AF_INET6)) {
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return real(fd, addr, len);
}
