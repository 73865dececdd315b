/* The wal/ module's error table: one message per code of WAL_ERRORS (wal/wal.h). */
#include "wal/wal.h"

const char *wal_strerror(int rc)
{
    switch (rc) {
#define WAL_ERROR_CASE(name, value, msg)                                                           \
    case value:                                                                                    \
        return msg;
        WAL_ERRORS(WAL_ERROR_CASE)
#undef WAL_ERROR_CASE
    default:
        return "unknown wal error";
    }
}
