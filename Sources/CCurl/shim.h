#ifndef BREAKWATER_CCURL_SHIM_H
#define BREAKWATER_CCURL_SHIM_H

#include <curl/curl.h>
#include <malloc.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

// Typed wrappers around libcurl's variadic entry points. Swift cannot call C variadic functions, so each
// argument kind curl accepts gets one `static inline` function here (the GRDBSQLite shim pattern).
// The `bw_curl_` prefix keeps them apart from libcurl's own symbols.

/// The signature of CURLOPT_WRITEFUNCTION and CURLOPT_HEADERFUNCTION callbacks.
typedef size_t (*bw_curl_data_callback)(char *buffer, size_t size, size_t nitems, void *userdata);

/// curl_easy_setopt with a `long` argument (flags, counts, millisecond timeouts); it is variadic.
static inline CURLcode bw_curl_easy_setopt_long(CURL *handle, CURLoption option, long value) {
    return curl_easy_setopt(handle, option, value);
}

/// curl_easy_setopt with a C string argument (curl copies it unless documented otherwise); it is variadic.
static inline CURLcode bw_curl_easy_setopt_string(CURL *handle, CURLoption option, const char *value) {
    return curl_easy_setopt(handle, option, value);
}

/// curl_easy_setopt with an opaque pointer argument (userdata, error buffer, private data); it is variadic.
static inline CURLcode bw_curl_easy_setopt_pointer(CURL *handle, CURLoption option, void *value) {
    return curl_easy_setopt(handle, option, value);
}

/// curl_easy_setopt with a header list (CURLOPT_HTTPHEADER); it is variadic.
static inline CURLcode bw_curl_easy_setopt_slist(CURL *handle, CURLoption option, struct curl_slist *value) {
    return curl_easy_setopt(handle, option, value);
}

/// curl_easy_setopt with a `curl_off_t` argument (the *_LARGE options); it is variadic.
static inline CURLcode bw_curl_easy_setopt_off_t(CURL *handle, CURLoption option, curl_off_t value) {
    return curl_easy_setopt(handle, option, value);
}

/// curl_easy_setopt with a write or header callback; it is variadic and the function pointer type must be exact.
static inline CURLcode bw_curl_easy_setopt_data_callback(CURL *handle, CURLoption option,
                                                         bw_curl_data_callback value) {
    return curl_easy_setopt(handle, option, value);
}

/// curl_easy_getinfo for `long` results (response code, counts); it is variadic.
static inline CURLcode bw_curl_easy_getinfo_long(CURL *handle, CURLINFO info, long *out) {
    return curl_easy_getinfo(handle, info, out);
}

/// curl_easy_getinfo for `double` results (the seconds-valued timings); it is variadic.
static inline CURLcode bw_curl_easy_getinfo_double(CURL *handle, CURLINFO info, double *out) {
    return curl_easy_getinfo(handle, info, out);
}

/// curl_easy_getinfo for `curl_off_t` results (the microsecond-valued *_T timings); it is variadic.
static inline CURLcode bw_curl_easy_getinfo_off_t(CURL *handle, CURLINFO info, curl_off_t *out) {
    return curl_easy_getinfo(handle, info, out);
}

/// curl_easy_getinfo for pointer results (CURLINFO_PRIVATE); it is variadic.
static inline CURLcode bw_curl_easy_getinfo_pointer(CURL *handle, CURLINFO info, void **out) {
    return curl_easy_getinfo(handle, info, out);
}

/// curl_multi_setopt with a `long` argument (pipelining mode, connection limits); it is variadic.
static inline CURLMcode bw_curl_multi_setopt_long(CURLM *handle, CURLMoption option, long value) {
    return curl_multi_setopt(handle, option, value);
}

/// The signature of CURLMOPT_SOCKETFUNCTION: which socket to watch for what (CURL_POLL_IN, _OUT, _INOUT, _REMOVE).
typedef int (*bw_curl_socket_callback)(CURL *easy, curl_socket_t socket, int what, void *userp, void *socketp);

/// The signature of CURLMOPT_TIMERFUNCTION: when libcurl next wants `curl_multi_socket_action(CURL_SOCKET_TIMEOUT)`
/// (-1: no timer).
typedef int (*bw_curl_timer_callback)(CURLM *multi, long timeout_ms, void *userp);

/// curl_multi_setopt with an opaque pointer (CURLMOPT_SOCKETDATA, CURLMOPT_TIMERDATA); it is variadic.
static inline CURLMcode bw_curl_multi_setopt_pointer(CURLM *handle, CURLMoption option, void *value) {
    return curl_multi_setopt(handle, option, value);
}

/// curl_multi_setopt(CURLMOPT_SOCKETFUNCTION); it is variadic and the function pointer type must be exact.
static inline CURLMcode bw_curl_multi_setopt_socket_callback(CURLM *handle, bw_curl_socket_callback value) {
    return curl_multi_setopt(handle, CURLMOPT_SOCKETFUNCTION, value);
}

/// curl_multi_setopt(CURLMOPT_TIMERFUNCTION); it is variadic and the function pointer type must be exact.
static inline CURLMcode bw_curl_multi_setopt_timer_callback(CURLM *handle, bw_curl_timer_callback value) {
    return curl_multi_setopt(handle, CURLMOPT_TIMERFUNCTION, value);
}

// The epoll set the engine drives libcurl's socket interface with (CurlTransport's SocketWatch). In C because
// Swift's Glibc module does not export <sys/epoll.h>, and `struct epoll_event` is packed on x86_64.

/// An epoll set, close-on-exec; -1 and errno on failure.
static inline int bw_epoll_create(void) {
    return epoll_create1(EPOLL_CLOEXEC);
}

/// A non-blocking, close-on-exec eventfd, for waking the engine loop; -1 and errno on failure.
static inline int bw_eventfd(void) {
    return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

/// Adds `fd` to the set (`add` non-zero) or changes what it is watched for: reading and/or writing.
static inline int bw_epoll_watch(int epfd, int fd, int add, int readable, int writable) {
    struct epoll_event event = {0};
    event.events = (readable ? EPOLLIN : 0) | (writable ? EPOLLOUT : 0);
    event.data.fd = fd;
    return epoll_ctl(epfd, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &event);
}

/// Takes `fd` out of the set.
static inline int bw_epoll_remove(int epfd, int fd) {
    return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
}

/// Waits up to `timeout_ms` for up to `capacity` (at most 256) ready descriptors; fills `fds` and `flags` (libcurl's
/// CURL_CSELECT_IN / _OUT / _ERR bits) and returns how many, or -1 (EINTR included).
static inline int bw_epoll_wait(int epfd, int *fds, int *flags, int capacity, int timeout_ms) {
    struct epoll_event events[256];
    if (capacity > 256) capacity = 256;
    int n = epoll_wait(epfd, events, capacity, timeout_ms);
    for (int i = 0; i < n; i++) {
        uint32_t e = events[i].events;
        fds[i] = events[i].data.fd;
        flags[i] = ((e & EPOLLIN) ? CURL_CSELECT_IN : 0) | ((e & EPOLLOUT) ? CURL_CSELECT_OUT : 0)
            | ((e & (EPOLLERR | EPOLLHUP)) ? CURL_CSELECT_ERR : 0);
    }
    return n;
}

/// Adds one to an eventfd's counter (wakes whoever waits on it).
static inline int bw_eventfd_signal(int fd) {
    uint64_t one = 1;
    return (int)write(fd, &one, sizeof one);
}

/// Empties an eventfd's counter.
static inline void bw_eventfd_drain(int fd) {
    uint64_t value;
    (void)read(fd, &value, sizeof value);
}

#endif /* BREAKWATER_CCURL_SHIM_H */
