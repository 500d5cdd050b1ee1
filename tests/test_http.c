/*
 * Tests of bridge/http.c over real loopback TCP: a tiny HTTP/1.1 client in
 * this file talks to the server started on 127.0.0.1:0.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "http.h"
#include "metrics.h"
#include "util.h"

/* ---- a tiny HTTP client -------------------------------------------------- */

typedef struct reply_s {
    int status;
    char *head; /* status line and headers, NUL-terminated */
    char *body; /* NUL-terminated */
    size_t body_len;
} reply_t;

static void reply_fini(reply_t *r) {
    free(r->head);
    free(r->body);
}

static int connect_to(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0, "socket: %s", strerror(errno));
    /* Never let a broken server hang the suite. */
    struct timeval tv = {.tv_sec = 5, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0,
                 "connect to port %d: %s", port, strerror(errno));
    return fd;
}

/* Sends @p request verbatim and reads the whole reply (until the server
 * closes: every request here says Connection: close). */
static reply_t raw_request(int port, const char *request) {
    int fd = connect_to(port);
    size_t len = strlen(request), off = 0;
    while (off < len) {
        ssize_t n = send(fd, request + off, len - off, MSG_NOSIGNAL);
        cr_assert_gt(n, 0, "send: %s", strerror(errno));
        off += (size_t)n;
    }
    kpb_buf_t in;
    kpb_buf_init(&in);
    char chunk[4096];
    for (;;) {
        ssize_t n = recv(fd, chunk, sizeof(chunk), 0);
        if (n == 0)
            break;
        cr_assert_gt(n, 0, "recv: %s", strerror(errno));
        kpb_buf_append(&in, chunk, (size_t)n);
    }
    close(fd);

    reply_t r = {0};
    cr_assert_not_null(in.data, "empty reply");
    char *sep = strstr(in.data, "\r\n\r\n");
    cr_assert_not_null(sep, "no end of headers in:\n%s", in.data);
    r.head = kpb_xstrndup(in.data, (size_t)(sep - in.data));
    r.body_len = in.len - (size_t)(sep + 4 - in.data);
    r.body = kpb_xstrndup(sep + 4, r.body_len);
    cr_assert_eq(sscanf(r.head, "HTTP/1.1 %d ", &r.status), 1, "%s", r.head);
    kpb_buf_fini(&in);
    return r;
}

static reply_t request(int port, const char *method, const char *path) {
    char req[512];
    snprintf(req, sizeof(req),
             "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
             method, path);
    return raw_request(port, req);
}

/* A header's value (case-insensitive name) copied into @p out, or NULL. */
static const char *header(const reply_t *r, const char *name, char *out,
                          size_t out_size) {
    size_t n = strlen(name);
    for (const char *p = strstr(r->head, "\r\n"); p; p = strstr(p, "\r\n")) {
        p += 2;
        if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 1;
            while (*v == ' ')
                v++;
            const char *eol = strstr(v, "\r\n");
            size_t vlen = eol ? (size_t)(eol - v) : strlen(v);
            snprintf(out, out_size, "%.*s", (int)vlen, v);
            return out;
        }
    }
    return NULL;
}

/* ---- the server under test ----------------------------------------------- */

static atomic_int ready_flag;
static atomic_int ready_calls;
static atomic_int ready_bad_opaque;

/* Runs on the HTTP thread: records, and leaves asserting to the test. */
static int is_ready(void *opaque) {
    if (opaque != &ready_flag)
        atomic_store(&ready_bad_opaque, 1);
    atomic_fetch_add(&ready_calls, 1);
    return atomic_load(&ready_flag);
}

static kpb_http_t *start_ok(void) {
    char errstr[256] = "";
    kpb_http_t *http = kpb_http_start("127.0.0.1:0", is_ready, &ready_flag,
                                      errstr, sizeof(errstr));
    cr_assert_not_null(http, "start: %s", errstr);
    int port = kpb_http_port(http);
    cr_assert(port > 0 && port <= 65535, "port %d", port);
    return http;
}

static void setup(void) {
    kpb_metrics_init();
    atomic_store(&ready_flag, 0);
    atomic_store(&ready_calls, 0);
    atomic_store(&ready_bad_opaque, 0);
}

static void teardown(void) { kpb_metrics_reset(); }

TestSuite(http, .init = setup, .fini = teardown);

Test(http, serves_metrics_in_the_prometheus_text_format) {
    kpb_metrics_add(KPB_METRIC_EVENTS_CONSUMED, 41);
    kpb_metrics_add(KPB_METRIC_EVENTS_CONSUMED, 1);
    kpb_metrics_dead_letter("too_large");
    kpb_metrics_lag("orders", 3, 17);
    kpb_http_t *http = start_ok();

    reply_t r = request(kpb_http_port(http), "GET", "/metrics");
    cr_assert_eq(r.status, 200, "%s", r.head);
    char ct[128];
    cr_assert_not_null(header(&r, "Content-Type", ct, sizeof(ct)), "%s",
                       r.head);
    cr_assert_eq(strncmp(ct, "text/plain; version=0.0.4", 25), 0, "%s", ct);

    /* The body is exactly what the registry renders. */
    kpb_buf_t want;
    kpb_buf_init(&want);
    kpb_metrics_render(&want);
    cr_assert_eq(r.body_len, want.len);
    cr_assert_str_eq(r.body, want.data);
    kpb_buf_fini(&want);

    cr_assert_not_null(strstr(r.body, "\nkpbridge_events_consumed_total 42\n"));
    cr_assert_not_null(strstr(
        r.body, "\nkpbridge_dead_letters_total{reason=\"too_large\"} 1\n"));
    cr_assert_not_null(strstr(
        r.body,
        "\nkpbridge_consumer_lag{topic=\"orders\",partition=\"3\"} 17\n"));
    cr_assert_not_null(strstr(r.body, "\nkpbridge_up 1\n"));
    reply_fini(&r);

    /* A later scrape sees later values: nothing is cached. */
    kpb_metrics_add(KPB_METRIC_EVENTS_CONSUMED, 8);
    r = request(kpb_http_port(http), "GET", "/metrics?x=1");
    cr_assert_eq(r.status, 200);
    cr_assert_not_null(strstr(r.body, "\nkpbridge_events_consumed_total 50\n"));
    reply_fini(&r);
    kpb_http_stop(http);
}

Test(http, healthz_answers_ok_whatever_the_readiness) {
    kpb_http_t *http = start_ok();
    reply_t r = request(kpb_http_port(http), "GET", "/healthz");
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "ok\n");
    reply_fini(&r);
    kpb_http_stop(http);
}

Test(http, readyz_follows_the_callback) {
    kpb_http_t *http = start_ok();
    int port = kpb_http_port(http);

    reply_t r = request(port, "GET", "/readyz");
    cr_assert_eq(r.status, 503, "%s", r.head);
    cr_assert_str_eq(r.body, "not ready\n");
    reply_fini(&r);

    atomic_store(&ready_flag, 1);
    r = request(port, "GET", "/readyz");
    cr_assert_eq(r.status, 200, "%s", r.head);
    cr_assert_str_eq(r.body, "ready\n");
    reply_fini(&r);

    atomic_store(&ready_flag, 0);
    r = request(port, "GET", "/readyz");
    cr_assert_eq(r.status, 503);
    reply_fini(&r);

    cr_assert_eq(atomic_load(&ready_calls), 3);
    cr_assert_eq(atomic_load(&ready_bad_opaque), 0, "opaque not passed");
    kpb_http_stop(http);
}

Test(http, a_null_ready_callback_means_always_ready) {
    char errstr[256] = "";
    kpb_http_t *http =
        kpb_http_start("127.0.0.1:0", NULL, NULL, errstr, sizeof(errstr));
    cr_assert_not_null(http, "%s", errstr);
    reply_t r = request(kpb_http_port(http), "GET", "/readyz");
    cr_assert_eq(r.status, 200);
    reply_fini(&r);
    kpb_http_stop(http);
}

Test(http, unknown_paths_are_404) {
    kpb_http_t *http = start_ok();
    static const char *paths[] = {"/", "/metric", "/metrics/", "/healthz/x",
                                  "/READYZ"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        reply_t r = request(kpb_http_port(http), "GET", paths[i]);
        cr_assert_eq(r.status, 404, "%s: %s", paths[i], r.head);
        reply_fini(&r);
    }
    kpb_http_stop(http);
}

Test(http, other_methods_are_405_with_allow) {
    kpb_http_t *http = start_ok();
    static const char *methods[] = {"POST", "PUT", "DELETE", "PATCH"};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        reply_t r = request(kpb_http_port(http), methods[i], "/metrics");
        cr_assert_eq(r.status, 405, "%s: %s", methods[i], r.head);
        char allow[64];
        cr_assert_not_null(header(&r, "Allow", allow, sizeof(allow)), "%s",
                           r.head);
        cr_assert_str_eq(allow, "GET, HEAD");
        reply_fini(&r);
    }
    /* A body that nobody reads does not confuse the server. */
    reply_t r =
        raw_request(kpb_http_port(http),
                    "POST /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                    "Content-Length: 5\r\n\r\nhello");
    cr_assert_eq(r.status, 405, "%s", r.head);
    reply_fini(&r);
    kpb_http_stop(http);
}

Test(http, head_answers_like_get_without_a_body) {
    kpb_http_t *http = start_ok();
    reply_t r = request(kpb_http_port(http), "HEAD", "/healthz");
    cr_assert_eq(r.status, 200, "%s", r.head);
    cr_assert_eq(r.body_len, 0);
    reply_fini(&r);
    kpb_http_stop(http);
}

Test(http, keeps_serving_one_connection_after_another) {
    kpb_http_t *http = start_ok();
    for (int i = 0; i < 50; i++) {
        reply_t r = request(kpb_http_port(http), "GET",
                            i % 2 ? "/healthz" : "/metrics");
        cr_assert_eq(r.status, 200, "request %d", i);
        reply_fini(&r);
    }
    kpb_http_stop(http);
}

/* Reads one reply by its Content-Length, leaving the connection open. */
static reply_t read_one_reply(int fd) {
    kpb_buf_t in;
    kpb_buf_init(&in);
    char c;
    while (!in.data || !strstr(in.data, "\r\n\r\n")) {
        ssize_t n = recv(fd, &c, 1, 0);
        cr_assert_eq(n, 1, "recv: %s", n == 0 ? "closed" : strerror(errno));
        kpb_buf_putc(&in, c);
    }
    reply_t r = {0};
    r.head = kpb_xstrndup(in.data, in.len - 4);
    cr_assert_eq(sscanf(r.head, "HTTP/1.1 %d ", &r.status), 1, "%s", r.head);
    char cl[32];
    cr_assert_not_null(header(&r, "Content-Length", cl, sizeof(cl)), "%s",
                       r.head);
    r.body_len = (size_t)strtoul(cl, NULL, 10);
    r.body = kpb_xmalloc(r.body_len + 1);
    for (size_t off = 0; off < r.body_len;) {
        ssize_t n = recv(fd, r.body + off, r.body_len - off, 0);
        cr_assert_gt(n, 0, "recv body: %s", strerror(errno));
        off += (size_t)n;
    }
    r.body[r.body_len] = '\0';
    kpb_buf_fini(&in);
    return r;
}

static void send_all(int fd, const char *s) {
    size_t len = strlen(s), off = 0;
    while (off < len) {
        ssize_t n = send(fd, s + off, len - off, MSG_NOSIGNAL);
        cr_assert_gt(n, 0, "send: %s", strerror(errno));
        off += (size_t)n;
    }
}

Test(http, serves_several_requests_on_one_connection) {
    /* Prometheus keeps its scrape connection open between scrapes. */
    kpb_http_t *http = start_ok();
    int fd = connect_to(kpb_http_port(http));
    send_all(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    reply_t r = read_one_reply(fd);
    cr_assert_eq(r.status, 200, "%s", r.head);
    cr_assert_str_eq(r.body, "ok\n");
    reply_fini(&r);

    send_all(fd, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    r = read_one_reply(fd);
    cr_assert_eq(r.status, 200, "%s", r.head);
    cr_assert_not_null(strstr(r.body, "\nkpbridge_up 1\n"));
    reply_fini(&r);

    /* A body sent with a GET is read and ignored. */
    send_all(fd, "GET /readyz HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                 "\r\nabc");
    r = read_one_reply(fd);
    cr_assert_eq(r.status, 503, "%s", r.head);
    reply_fini(&r);
    close(fd);
    kpb_http_stop(http);
}

Test(http, stop_closes_an_idle_keep_alive_connection) {
    kpb_http_t *http = start_ok();
    int fd = connect_to(kpb_http_port(http));
    send_all(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    reply_t r = read_one_reply(fd);
    cr_assert_eq(r.status, 200);
    reply_fini(&r);
    kpb_http_stop(http); /* must not wait for the client to go away */
    char c;
    cr_assert_leq(recv(fd, &c, 1, 0), 0, "connection still open after stop");
    close(fd);
}

Test(http, bad_listen_strings_are_refused_with_a_reason) {
    static const char *bad[] = {
        "nonsense",      "127.0.0.1",
        "127.0.0.1:",    "127.0.0.1:70000",
        "127.0.0.1:80x", "127.0.0.1:-1",
        "300.1.1.1:80",  "example.com:9187",
        "[::1]:9187",    "127.0.0.1:99999999999999999999",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char errstr[256] = "";
        kpb_http_t *http = kpb_http_start(bad[i], is_ready, &ready_flag, errstr,
                                          sizeof(errstr));
        cr_assert_null(http, "%s was accepted", bad[i]);
        char want[128];
        snprintf(want, sizeof(want), "http.listen %s: expected HOST:PORT",
                 bad[i]);
        cr_assert_eq(strncmp(errstr, want, strlen(want)), 0, "%s: '%s'", bad[i],
                     errstr);
    }
    char errstr[256] = "";
    cr_assert_null(kpb_http_start("", NULL, NULL, errstr, sizeof(errstr)));
    cr_assert_str_eq(errstr, "http.listen: empty address");
    cr_assert_null(kpb_http_start(NULL, NULL, NULL, errstr, sizeof(errstr)));

    /* A short errstr is truncated, never overrun. */
    char tiny[12];
    memset(tiny, 'Z', sizeof(tiny));
    cr_assert_null(kpb_http_start("x", NULL, NULL, tiny, 8));
    cr_assert_str_eq(tiny, "http.li");
    cr_assert_eq(tiny[8], 'Z');
}

Test(http, a_port_in_use_is_an_error_naming_the_address) {
    kpb_http_t *first = start_ok();
    char listen[64];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", kpb_http_port(first));

    char errstr[256] = "";
    kpb_http_t *second =
        kpb_http_start(listen, NULL, NULL, errstr, sizeof(errstr));
    cr_assert_null(second, "bound %s twice", listen);
    char want[160];
    snprintf(want, sizeof(want), "http.listen %s: cannot listen: %s", listen,
             strerror(EADDRINUSE));
    cr_assert_str_eq(errstr, want);

    /* The first server is unharmed. */
    reply_t r = request(kpb_http_port(first), "GET", "/healthz");
    cr_assert_eq(r.status, 200);
    reply_fini(&r);
    kpb_http_stop(first);
}

Test(http, an_address_not_on_this_host_is_an_error) {
    /* 192.0.2.0/24 is TEST-NET-1: never a local address. */
    char errstr[256] = "";
    kpb_http_t *http =
        kpb_http_start("192.0.2.1:9187", NULL, NULL, errstr, sizeof(errstr));
    cr_assert_null(http);
    char want[160];
    snprintf(want, sizeof(want),
             "http.listen 192.0.2.1:9187: cannot listen: %s",
             strerror(EADDRNOTAVAIL));
    cr_assert_str_eq(errstr, want);
}

Test(http, a_fixed_port_is_reported_back) {
    /* Find a free port, release it, and ask for it by number. */
    kpb_http_t *probe = start_ok();
    int port = kpb_http_port(probe);
    kpb_http_stop(probe);

    char listen[64], errstr[256] = "";
    snprintf(listen, sizeof(listen), "localhost:%d", port);
    kpb_http_t *http =
        kpb_http_start(listen, NULL, NULL, errstr, sizeof(errstr));
    cr_assert_not_null(http, "%s", errstr);
    cr_assert_eq(kpb_http_port(http), port);
    reply_t r = request(port, "GET", "/healthz");
    cr_assert_eq(r.status, 200);
    reply_fini(&r);
    kpb_http_stop(http);
}

Test(http, stop_accepts_null_and_port_of_null_is_zero) {
    kpb_http_stop(NULL);
    cr_assert_eq(kpb_http_port(NULL), 0);
}
