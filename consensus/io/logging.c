/*
 * One-line log records on stderr, level chosen by WALRAFT_LOG. See logging.h.
 */
#include "consensus/io/logging.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int threshold = -1; /* -1: not read from the environment yet */

static int read_threshold(void)
{
    const char *env = getenv("WALRAFT_LOG");
    if (env == NULL) {
        return IO_LOG_WARN;
    }
    if (strcmp(env, "error") == 0) {
        return IO_LOG_ERROR;
    }
    if (strcmp(env, "info") == 0) {
        return IO_LOG_INFO;
    }
    if (strcmp(env, "debug") == 0) {
        return IO_LOG_DEBUG;
    }
    return IO_LOG_WARN;
}

int io_log_enabled(enum io_log_level level)
{
    int t = atomic_load_explicit(&threshold, memory_order_relaxed);
    if (t < 0) {
        t = read_threshold();
        atomic_store_explicit(&threshold, t, memory_order_relaxed);
    }
    return (int)level <= t;
}

void io_logf(enum io_log_level level, const char *who, const char *fmt, ...)
{
    static const char *names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    char line[1024];
    struct timespec ts;
    struct tm tm;
    size_t n;
    va_list ap;
    int k;

    if (!io_log_enabled(level)) {
        return;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    k = snprintf(line, sizeof line, "%02d:%02d:%02d.%03ld walraft %s [%s] ", tm.tm_hour, tm.tm_min,
                 tm.tm_sec, ts.tv_nsec / 1000000, names[level], who != NULL ? who : "-");
    n = k > 0 ? (size_t)k : 0;
    va_start(ap, fmt);
    k = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    n += k > 0 ? (size_t)k : 0;
    if (n > sizeof line - 2) {
        n = sizeof line - 2;
    }
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}
