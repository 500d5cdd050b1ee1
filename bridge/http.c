#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "metrics.h"

/* Bounds that keep a misbehaving client from costing the process more than
 * a few file descriptors: scrapers and probes open one or two connections
 * and finish within milliseconds. */
#define HTTP_CONNECTION_LIMIT 32
#define HTTP_CONNECTION_TIMEOUT_S 10

struct kpb_http_s {
    struct MHD_Daemon *daemon;
    int (*ready)(void *opaque);
    void *opaque;
    int port;
    /* While starting, libmicrohttpd's messages are kept for errstr instead
     * of being logged; the lock is there because its thread may already
     * log while MHD_start_daemon() has not returned yet. */
    atomic_int starting;
    pthread_mutex_t msg_lock;
    char start_msg[256];
};

/* ---- listen address ------------------------------------------------------ */

/*
 * "HOST:PORT" with an IPv4 HOST, "localhost", or an empty HOST for every
 * interface.  No name resolution: a health endpoint that waits on DNS at
 * startup, or binds to whatever a name resolves to today, surprises an
 * operator more than a refusal does.
 */
static int parse_listen(const char *listen, struct sockaddr_in *sin) {
    const char *colon = strrchr(listen, ':');
    if (!colon || colon[1] == '\0')
        return -1;
    size_t hlen = (size_t)(colon - listen);
    char host[INET_ADDRSTRLEN + 16];
    if (hlen >= sizeof(host))
        return -1;
    memcpy(host, listen, hlen);
    host[hlen] = '\0';

    long port = 0;
    for (const char *p = colon + 1; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        port = port * 10 + (*p - '0');
        if (port > 65535)
            return -1;
    }

    memset(sin, 0, sizeof(*sin));
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    if (hlen == 0 || strcmp(host, "*") == 0)
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (strcmp(host, "localhost") == 0)
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
        return -1;
    return 0;
}

/* ---- libmicrohttpd's log ------------------------------------------------- */

/* libmicrohttpd hands over a printf format: saying so keeps clang's
 * -Wformat-nonliteral (the fuzz build) quiet about the vsnprintf below. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
    KPB_PRINTF(2, 0);

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
    kpb_http_t *http = cls;
    char msg[256];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    if (atomic_load(&http->starting)) {
        pthread_mutex_lock(&http->msg_lock);
        snprintf(http->start_msg, sizeof(http->start_msg), "%s", msg);
        pthread_mutex_unlock(&http->msg_lock);
        return;
    }
    /* Routed through our logger so the line has the configured format. */
    kpb_warn("http: %s", msg);
}

/* ---- requests ------------------------------------------------------------ */

static enum MHD_Result respond(struct MHD_Connection *conn, unsigned status,
                               const char *content_type, const char *body,
                               size_t len) {
    /* MUST_COPY: the body may be a buffer we free right after this call. */
    struct MHD_Response *res = MHD_create_response_from_buffer(
        len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!res)
        return MHD_NO; /* closes the connection */
    MHD_add_response_header(res, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    /* Probes and scrapes must see the live state, never a proxy's copy. */
    MHD_add_response_header(res, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(res, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(conn, status, res);
    MHD_destroy_response(res);
    return ret;
}

static enum MHD_Result respond_text(struct MHD_Connection *conn,
                                    unsigned status, const char *text) {
    return respond(conn, status, "text/plain; charset=utf-8", text,
                   strlen(text));
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls) {
    static int seen; /* marks a request whose first call has passed */
    kpb_http_t *http = cls;
    (void)version;
    (void)upload_data;

    /*
     * libmicrohttpd calls this once when the headers are in, then per chunk
     * of body, then once more with no data.  A method we do not serve is
     * refused on the first call, so its body is never read (the connection
     * is closed after the answer).  GET and HEAD are answered on the last
     * call, which lets the connection stay open for the next scrape; a body
     * sent with them is discarded.
     */
    int get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
              strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    if (!get)
        return respond_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
                            "method not allowed\n");
    if (*req_cls == NULL) {
        *req_cls = &seen;
        return MHD_YES;
    }
    if (*upload_data_size != 0) {
        *upload_data_size = 0;
        return MHD_YES;
    }

    if (strcmp(url, "/metrics") == 0) {
        kpb_buf_t buf;
        kpb_buf_init(&buf);
        kpb_metrics_render(&buf);
        enum MHD_Result ret = respond(
            conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
            buf.data ? buf.data : "", buf.len);
        kpb_buf_fini(&buf);
        return ret;
    }
    if (strcmp(url, "/healthz") == 0)
        return respond_text(conn, MHD_HTTP_OK, "ok\n");
    if (strcmp(url, "/readyz") == 0) {
        if (!http->ready || http->ready(http->opaque))
            return respond_text(conn, MHD_HTTP_OK, "ready\n");
        return respond_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "not ready\n");
    }
    return respond_text(conn, MHD_HTTP_NOT_FOUND, "not found\n");
}

/* ---- lifecycle ----------------------------------------------------------- */

static void http_free(kpb_http_t *http) {
    pthread_mutex_destroy(&http->msg_lock);
    free(http);
}

kpb_http_t *kpb_http_start(const char *listen, int (*ready)(void *opaque),
                           void *opaque, char *errstr, size_t errstr_size) {
    if (!listen || !*listen) {
        snprintf(errstr, errstr_size, "http.listen: empty address");
        return NULL;
    }
    struct sockaddr_in sin;
    if (parse_listen(listen, &sin) != 0) {
        snprintf(errstr, errstr_size,
                 "http.listen %s: expected HOST:PORT with an IPv4 HOST "
                 "and a PORT 0-65535, e.g. 127.0.0.1:9187",
                 listen);
        return NULL;
    }

    kpb_http_t *http = kpb_xcalloc(1, sizeof(*http));
    http->ready = ready;
    http->opaque = opaque;
    pthread_mutex_init(&http->msg_lock, NULL);
    atomic_init(&http->starting, 1);

    /*
     * MHD_USE_AUTO picks epoll on Linux instead of select(): librdkafka and
     * libpq may well have pushed our descriptors past FD_SETSIZE by the time
     * a connection arrives.  The external logger must be the first option,
     * or libmicrohttpd prints its early messages to stderr itself.
     */
    errno = 0;
    http->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG,
        ntohs(sin.sin_port), NULL, NULL, on_request, http,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, http, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&sin, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)HTTP_CONNECTION_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)HTTP_CONNECTION_TIMEOUT_S, MHD_OPTION_END);
    int err = errno;
    atomic_store(&http->starting, 0);

    if (!http->daemon) {
        /* libmicrohttpd keeps the bind()/listen() errno; its own message
         * is the fallback for failures that have none. */
        pthread_mutex_lock(&http->msg_lock);
        if (err != 0)
            snprintf(errstr, errstr_size, "http.listen %s: cannot listen: %s",
                     listen, strerror(err));
        else if (http->start_msg[0])
            snprintf(errstr, errstr_size, "http.listen %s: cannot listen: %s",
                     listen, http->start_msg);
        else
            snprintf(errstr, errstr_size,
                     "http.listen %s: cannot start the HTTP server", listen);
        pthread_mutex_unlock(&http->msg_lock);
        http_free(http);
        return NULL;
    }

    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(http->daemon, MHD_DAEMON_INFO_BIND_PORT);
    http->port = info && info->port ? (int)info->port : ntohs(sin.sin_port);
    return http;
}

int kpb_http_port(const kpb_http_t *http) { return http ? http->port : 0; }

void kpb_http_stop(kpb_http_t *http) {
    if (!http)
        return;
    MHD_stop_daemon(http->daemon);
    http_free(http);
}
