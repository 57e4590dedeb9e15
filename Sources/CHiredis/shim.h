#ifndef BREAKWATER_CHIREDIS_SHIM_H
#define BREAKWATER_CHIREDIS_SHIM_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <sys/time.h>

// Typed wrappers around hiredis' blocking API (Debian 12's libhiredis 0.14). `redisCommand` is variadic, which
// Swift cannot call, so commands go through `redisCommandArgv`; these wrappers give its `void *` reply a type and
// read the context's fields Swift imports awkwardly (`errstr` is a fixed array). The `bw_redis_` prefix keeps
// them apart from hiredis' own symbols.

/// Connects over TCP, giving up after `timeout_ms`. Never NULL unless out of memory; check `bw_redis_error`.
static inline redisContext *bw_redis_connect_tcp(const char *host, int port, long timeout_ms) {
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
    return redisConnectWithTimeout(host, port, tv);
}

/// Connects over a Unix socket, giving up after `timeout_ms`.
static inline redisContext *bw_redis_connect_unix(const char *path, long timeout_ms) {
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
    return redisConnectUnixWithTimeout(path, tv);
}

/// Every read and write on the connection gives up after `timeout_ms` (SO_RCVTIMEO/SO_SNDTIMEO).
static inline int bw_redis_set_timeout(redisContext *c, long timeout_ms) {
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
    return redisSetTimeout(c, tv);
}

/// The context's error code (REDIS_ERR_IO, REDIS_ERR_EOF, ...), 0 when it is usable.
static inline int bw_redis_error(const redisContext *c) { return c->err; }

/// The context's error text, empty when there is none.
static inline const char *bw_redis_error_text(const redisContext *c) { return c->errstr; }

/// One command, its arguments as byte strings; NULL when the connection failed (see `bw_redis_error`).
static inline redisReply *bw_redis_command(redisContext *c, int argc, const char **argv, const size_t *lengths) {
    return (redisReply *)redisCommandArgv(c, argc, argv, lengths);
}

/// The element `i` of an array reply.
static inline redisReply *bw_redis_element(const redisReply *r, size_t i) { return r->element[i]; }

#endif
