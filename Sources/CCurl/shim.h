#ifndef BREAKWATER_CCURL_SHIM_H
#define BREAKWATER_CCURL_SHIM_H

#include <curl/curl.h>

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

#endif /* BREAKWATER_CCURL_SHIM_H */
