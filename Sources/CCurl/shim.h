#ifndef PROGSYNC_CCURL_SHIM_H
#define PROGSYNC_CCURL_SHIM_H

/*
 * Swift cannot call C variadic functions, so the variadic parts of libcurl's
 * API (curl_easy_setopt, curl_easy_getinfo) are wrapped here in small typed
 * `static inline` helpers, one per argument type (the same approach GRDB's
 * GRDBSQLite takes for SQLite).
 *
 * Each helper passes exactly the C type libcurl expects for the option kind:
 * long for CURLOPTTYPE_LONG, char* for CURLOPTTYPE_STRINGPOINT, void* for
 * CURLOPTTYPE_OBJECTPOINT / CBPOINT, curl_off_t for CURLOPTTYPE_OFF_T and a
 * function pointer for CURLOPTTYPE_FUNCTIONPOINT.
 */

/* The GCC type-check macros are only meaningful for direct C callers. */
#ifndef CURL_DISABLE_TYPECHECK
#define CURL_DISABLE_TYPECHECK 1
#endif

#include <curl/curl.h>

/* curl_global_init(CURL_GLOBAL_DEFAULT): the macro is an OR of macros. */
static inline CURLcode progsync_curl_global_init_default(void) {
    return curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* MARK: curl_easy_setopt */

static inline CURLcode progsync_curl_easy_setopt_long(CURL *handle, CURLoption option, long value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode progsync_curl_easy_setopt_string(CURL *handle, CURLoption option, const char *value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode progsync_curl_easy_setopt_pointer(CURL *handle, CURLoption option, void *value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode progsync_curl_easy_setopt_off_t(CURL *handle, CURLoption option, curl_off_t value) {
    return curl_easy_setopt(handle, option, value);
}

static inline CURLcode progsync_curl_easy_setopt_slist(CURL *handle, CURLoption option, struct curl_slist *value) {
    return curl_easy_setopt(handle, option, value);
}

/* CURLOPT_WRITEFUNCTION */
static inline CURLcode progsync_curl_easy_setopt_write_callback(
    CURL *handle, size_t (*callback)(char *, size_t, size_t, void *)) {
    return curl_easy_setopt(handle, CURLOPT_WRITEFUNCTION, callback);
}

/* CURLOPT_HEADERFUNCTION (same signature as the write callback) */
static inline CURLcode progsync_curl_easy_setopt_header_callback(
    CURL *handle, size_t (*callback)(char *, size_t, size_t, void *)) {
    return curl_easy_setopt(handle, CURLOPT_HEADERFUNCTION, callback);
}

/* CURLOPT_XFERINFOFUNCTION: a non-zero return aborts the transfer. */
static inline CURLcode progsync_curl_easy_setopt_xferinfo_callback(
    CURL *handle, int (*callback)(void *, curl_off_t, curl_off_t, curl_off_t, curl_off_t)) {
    return curl_easy_setopt(handle, CURLOPT_XFERINFOFUNCTION, callback);
}

/* MARK: curl_easy_getinfo */

static inline CURLcode progsync_curl_easy_getinfo_long(CURL *handle, CURLINFO info, long *value) {
    return curl_easy_getinfo(handle, info, value);
}

static inline CURLcode progsync_curl_easy_getinfo_off_t(CURL *handle, CURLINFO info, curl_off_t *value) {
    return curl_easy_getinfo(handle, info, value);
}

static inline CURLcode progsync_curl_easy_getinfo_string(CURL *handle, CURLINFO info, char **value) {
    return curl_easy_getinfo(handle, info, value);
}

#endif /* PROGSYNC_CCURL_SHIM_H */
