/* Operations through the real binary: /metrics after a known run, /healthz,
 * and /readyz following PostgreSQL down and up.  Stops the shared
 * PostgreSQL, so this executable runs its tests one at a time. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t n = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &n);
    close(fd);
    return ntohs(a.sin_port);
}

/* GET path; returns the status code (0: no answer) and the body (heap). */
static int http_get(int port, const char *path, char **body) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a))) {
        close(fd);
        return 0;
    }
    char req[256];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n", path);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return 0;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while ((r = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)r;
        if (len + 1 == cap)
            buf = realloc(buf, cap *= 2);
    }
    close(fd);
    buf[len] = '\0';
    int status = 0;
    sscanf(buf, "HTTP/%*s %d", &status);
    if (body) {
        char *b = strstr(buf, "\r\n\r\n");
        *body = strdup(b ? b + 4 : "");
    }
    free(buf);
    return status;
}

/* The value of one exact series line ("name{labels} value"), or -1. */
static double metric(const char *text, const char *series) {
    size_t n = strlen(series);
    for (const char *p = text; (p = strstr(p, series)); p += n)
        if ((p == text || p[-1] == '\n') && p[n] == ' ')
            return atof(p + n + 1);
    return -1;
}

static void nap(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static int wait_status(int port, const char *path, int want, double secs) {
    double until = kpbt_now() + secs;
    int st = 0;
    while (kpbt_now() < until) {
        if ((st = http_get(port, path, NULL)) == want)
            return st;
        nap(0.2);
    }
    return st;
}

Test(ops, serves_metrics_that_match_a_known_run_and_readiness,
     .timeout = 300) {
    char *ci = kpbt_db_new("ops", 1);
    kpbt_kafka_t *k = kpbt_kafka_new(1);
    kpbt_topic(k, "events", 3);
    int good = 0, bad = 0;
    char value[64], key[32];
    for (int i = 0; i < 3000; i++) {
        snprintf(key, sizeof(key), "s-%d", i % 50);
        int n = i % 30 == 0 ? snprintf(value, sizeof(value), "{broken")
                            : snprintf(value, sizeof(value), "{\"i\":%d}", i);
        (i % 30 == 0) ? bad++ : good++;
        kpbt_hdr_t h[] = {{"event-type", "T"}};
        kpbt_produce(k, "events", -1, key, value, (size_t)n, h, 1);
    }
    kpbt_flush(k);
    int port = free_port();
    char extra[128];
    snprintf(extra, sizeof(extra), "http:\n  listen: \"127.0.0.1:%d\"\n",
             port);
    /* the harness writes http.listen ""; a second http key would be a
     * duplicate, so write this config by hand */
    char *conf = kpbt_config("ops", k->bootstrap, ci,
                             "  - name: events\n"
                             "    event_type: header:event-type\n",
                             NULL);
    char *text = kpbt_read_file(conf, NULL);
    char *at = strstr(text, "http:\n  listen: \"\"\n");
    cr_assert(at);
    FILE *f = fopen(conf, "w");
    fwrite(text, 1, (size_t)(at - text), f);
    fputs(extra, f);
    fputs(at + strlen("http:\n  listen: \"\"\n"), f);
    fclose(f);
    free(text);

    char *log = kpbt_log_path("ops");
    const char *args[] = {"run", "-c", conf, NULL};
    pid_t pid = kpbt_spawn(log, args);
    cr_expect_eq(wait_status(port, "/healthz", 200, 30), 200);
    cr_expect_eq(wait_status(port, "/readyz", 200, 60), 200);

    /* wait until everything is written and the lag has been seen at 0 */
    PGconn *conn = kpbt_pg(ci);
    double until = kpbt_now() + 60;
    while (kpbt_now() < until &&
           kpbt_int(conn, "SELECT count(*) FROM eventcore_events") < good)
        nap(0.2);
    nap(2.5);
    char *body = NULL;
    cr_assert_eq(http_get(port, "/metrics", &body), 200);
    cr_expect_eq(metric(body, "kpbridge_events_written_total"),
                 (double)kpbt_int(conn, "SELECT count(*) FROM"
                                        " eventcore_events"));
    cr_expect_eq(metric(body, "kpbridge_events_written_total"), good);
    cr_expect_eq(metric(body, "kpbridge_events_consumed_total"), good + bad);
    cr_expect_eq(metric(body,
                        "kpbridge_dead_letters_total{reason=\"invalid_json\"}"),
                 bad);
    cr_expect_eq(metric(body, "kpbridge_flushes_total"),
                 metric(body, "kpbridge_flush_duration_seconds_count"));
    cr_expect_eq(metric(body, "kpbridge_batch_events_sum"), good);
    cr_expect_eq(metric(body, "kpbridge_pending_events"), 0);
    cr_expect_eq(metric(body, "kpbridge_kafka_assigned_partitions"), 3);
    for (int p = 0; p < 3; p++) {
        char series[128];
        snprintf(series, sizeof(series),
                 "kpbridge_consumer_lag{topic=\"events\",partition=\"%d\"}", p);
        cr_expect_eq(metric(body, series), 0, "%s", series);
    }
    fprintf(stderr, "---- /metrics excerpt ----\n%.*s\n", 1500, body);
    free(body);
    PQfinish(conn);

    /* readiness follows PostgreSQL */
    kpbt_pg_ctl("halt");
    cr_expect_eq(wait_status(port, "/readyz", 503, 20), 503);
    cr_expect_eq(http_get(port, "/healthz", NULL), 200, "alive regardless");
    kpbt_pg_ctl("start");
    cr_expect_eq(wait_status(port, "/readyz", 200, 30), 200);

    kill(pid, SIGTERM);
    cr_expect_eq(kpbt_wait(pid, 60), 0);
    kpbt_kafka_destroy(k);
    unlink(conf);
    free(conf);
    free(log);
    free(ci);
}
