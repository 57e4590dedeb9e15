#ifndef BREAKWATER_CLINUXNAMESPACE_SHIM_H
#define BREAKWATER_CLINUXNAMESPACE_SHIM_H

// Linux calls JournalTestKit needs that Swift's Glibc module does not import: glibc declares unshare(2) and the
// CLONE_* flags only under _GNU_SOURCE. The `bw_` prefix keeps these apart from libc's own symbols.

#ifdef __linux__
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sched.h>
#include <errno.h>

/// Gives the calling thread (only it, and threads and processes it starts afterwards) its own copy of the mount
/// table: unshare(CLONE_NEWNS), which implies CLONE_FS and so works in a multithreaded process. Returns 0, or
/// -1 with errno set.
static inline int bw_unshare_mount_namespace(void) {
    return unshare(CLONE_NEWNS);
}
#endif

#endif /* BREAKWATER_CLINUXNAMESPACE_SHIM_H */
