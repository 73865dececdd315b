/*
 * Logging for the runtime: one line per event on stderr, "walraft LEVEL [node] message".
 * The level comes from the environment variable WALRAFT_LOG (error, warn, info, debug; default
 * warn), read once. Thread-safe: each line is formatted into a buffer and written with one write(2).
 */
#ifndef WALRAFT_IO_LOGGING_H
#define WALRAFT_IO_LOGGING_H

enum io_log_level { IO_LOG_ERROR = 0, IO_LOG_WARN, IO_LOG_INFO, IO_LOG_DEBUG };

/* Is `level` enabled? Cheap; use it to skip building expensive messages. */
int io_log_enabled(enum io_log_level level);

/* Logs one line. `who` names the node or component ("n1", "transport"); may be NULL. */
void io_logf(enum io_log_level level, const char *who, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
