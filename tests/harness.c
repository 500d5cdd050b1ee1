#include "harness.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "migrate.h"

char *kpbt_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf) {
        buf[n] = '\0';
        if (len)
            *len = (size_t)n;
    }
    fclose(f);
    return buf;
}

double kpbt_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

PGconn *kpbt_pg(const char *conninfo) {
    PGconn *conn = PQconnectdb(conninfo);
    cr_assert(PQstatus(conn) == CONNECTION_OK, "cannot connect: %s",
              PQerrorMessage(conn));
    PQclear(PQexec(conn, "SET client_min_messages = warning"));
    return conn;
}

void kpbt_exec(PGconn *conn, const char *sql) {
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    cr_assert(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK,
              "%s: %s", sql, PQresultErrorMessage(res));
    PQclear(res);
}

long long kpbt_int(PGconn *conn, const char *sql) {
    PGresult *res = PQexec(conn, sql);
    cr_assert(PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0,
              "%s: %s", sql, PQresultErrorMessage(res));
    long long v = PQgetisnull(res, 0, 0) ? -1
                                         : strtoll(PQgetvalue(res, 0, 0),
                                                   NULL, 10);
    PQclear(res);
    return v;
}

long long kpbt_intf(PGconn *conn, const char *fmt, ...) {
    char sql[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof(sql), fmt, ap);
    va_end(ap);
    return kpbt_int(conn, sql);
}

char *kpbt_db_new(const char *tag, int migrate) {
    const char *base = getenv("KPB_TEST_PG");
    cr_assert(base && *base,
              "KPB_TEST_PG is not set: run the tests with scripts/test, "
              "which starts a throwaway PostgreSQL");
    char name[128];
    snprintf(name, sizeof(name), "kpbt_%s_%d", tag, (int)getpid());
    PGconn *conn = kpbt_pg(base);
    char sql[256];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", name);
    kpbt_exec(conn, sql);
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s TEMPLATE template0", name);
    kpbt_exec(conn, sql);
    PQfinish(conn);
    size_t n = strlen(base) + strlen(name) + 16;
    char *ci = malloc(n);
    snprintf(ci, n, "%s dbname=%s", base, name);
    if (migrate) {
        kpb_log_setup(KPB_LOG_WARN, KPB_LOG_TEXT);
        conn = kpbt_pg(ci);
        char err[1024];
        int applied = 0;
        cr_assert(kpb_migrate_apply(conn, &applied, err, sizeof(err)) == 0,
                  "migrate: %s", err);
        /* The bridge under test logs in with the least-privilege role. */
        kpbt_exec(conn, "DO $$ BEGIN CREATE ROLE " KPBT_BRIDGE_USER
                        " LOGIN IN ROLE kpbridge_writer; EXCEPTION WHEN"
                        " duplicate_object OR unique_violation THEN NULL;"
                        " END $$");
        PQfinish(conn);
    }
    return ci;
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm,
                  void *opaque) {
    (void)rk;
    (void)opaque;
    if (rkm->err) {
        int *failed = rkm->_private;
        if (failed)
            (*failed)++;
        fprintf(stderr, "delivery failed: %s\n", rd_kafka_err2str(rkm->err));
    }
}

static int delivery_failures;

kpbt_kafka_t *kpbt_kafka_new(int brokers) {
    char err[512];
    /* The cluster lives in a handle of its own; a second producer, bootstrapped
     * to it over TCP like any client, writes the test records. */
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", err, sizeof(err));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    cr_assert(rk, "mock handle: %s", err);
    kpbt_kafka_t *k = calloc(1, sizeof(*k));
    k->rk = rk;
    k->mcluster = rd_kafka_mock_cluster_new(rk, brokers);
    cr_assert(k->mcluster, "mock cluster");
    k->bootstrap = rd_kafka_mock_cluster_bootstraps(k->mcluster);

    conf = rd_kafka_conf_new();
    static const char *props[][2] = {
        {"bootstrap.servers", NULL},
        /* The mock keeps about 5 MiB per partition: compress and batch. */
        {"compression.type", "lz4"},
        {"linger.ms", "20"},
        {"batch.num.messages", "10000"},
        {"queue.buffering.max.messages", "2000000"},
        {"queue.buffering.max.kbytes", "2097151"},
        {"enable.idempotence", "false"},
        /* one request in flight keeps each partition's order on retries */
        {"max.in.flight", "1"},
        {"log_level", "3"},
    };
    for (size_t i = 0; i < sizeof(props) / sizeof(props[0]); i++)
        cr_assert(rd_kafka_conf_set(conf, props[i][0],
                                    props[i][1] ? props[i][1] : k->bootstrap,
                                    err, sizeof(err)) == RD_KAFKA_CONF_OK,
                  "%s", err);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    k->producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    cr_assert(k->producer, "producer: %s", err);
    return k;
}

void kpbt_kafka_destroy(kpbt_kafka_t *k) {
    if (!k)
        return;
    rd_kafka_flush(k->producer, 10000);
    rd_kafka_destroy(k->producer);
    rd_kafka_mock_cluster_destroy(k->mcluster);
    rd_kafka_destroy(k->rk);
    free(k);
}

void kpbt_topic(kpbt_kafka_t *k, const char *topic, int partitions) {
    cr_assert(rd_kafka_mock_topic_create(k->mcluster, topic, partitions, 1) ==
              RD_KAFKA_RESP_ERR_NO_ERROR);
}

static rd_kafka_t *producer_of(kpbt_kafka_t *k) {
    return k->producer;
}

void kpbt_produce(kpbt_kafka_t *k, const char *topic, int partition,
                  const char *key, const void *value, size_t value_len,
                  const kpbt_hdr_t *hdrs, int hdr_cnt) {
    rd_kafka_t *p = producer_of(k);
    rd_kafka_headers_t *h = NULL;
    if (hdr_cnt) {
        h = rd_kafka_headers_new((size_t)hdr_cnt);
        for (int i = 0; i < hdr_cnt; i++)
            rd_kafka_header_add(h, hdrs[i].name, -1, hdrs[i].value,
                                hdrs[i].value ? -1 : 0);
    }
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            p, RD_KAFKA_V_TOPIC(topic),
            RD_KAFKA_V_PARTITION(partition < 0 ? RD_KAFKA_PARTITION_UA
                                               : partition),
            RD_KAFKA_V_KEY(key, key ? strlen(key) : 0),
            RD_KAFKA_V_VALUE((void *)value, value_len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(&delivery_failures),
            RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(p, 50);
            continue;
        }
        cr_assert(err == RD_KAFKA_RESP_ERR_NO_ERROR, "produce: %s",
                  rd_kafka_err2str(err));
        break;
    }
    rd_kafka_poll(p, 0);
}

void kpbt_flush(kpbt_kafka_t *k) {
    rd_kafka_t *p = producer_of(k);
    cr_assert(rd_kafka_flush(p, 120000) == RD_KAFKA_RESP_ERR_NO_ERROR,
              "flush timed out");
    cr_assert(delivery_failures == 0, "%d deliveries failed",
              delivery_failures);
}

int64_t kpbt_end_offset(kpbt_kafka_t *k, const char *topic, int partition) {
    int64_t lo = -1, hi = -1;
    rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(
        producer_of(k), topic, partition, &lo, &hi, 10000);
    cr_assert(err == RD_KAFKA_RESP_ERR_NO_ERROR, "watermarks: %s",
              rd_kafka_err2str(err));
    return hi;
}

int64_t kpbt_committed(kpbt_kafka_t *k, const char *group, const char *topic,
                       int partition) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", k->bootstrap, err,
                      sizeof(err));
    rd_kafka_conf_set(conf, "group.id", group, err, sizeof(err));
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    cr_assert(c, "consumer: %s", err);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition);
    rd_kafka_resp_err_t e = rd_kafka_committed(c, l, 10000);
    cr_assert(e == RD_KAFKA_RESP_ERR_NO_ERROR, "committed: %s",
              rd_kafka_err2str(e));
    int64_t off = l->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(c);
    return off;
}

char *kpbt_config(const char *tag, const char *brokers, const char *conninfo,
                  const char *topics, const char *extra) {
    return kpbt_config_props(tag, brokers, conninfo, topics, extra, NULL);
}

static const char *versioning_override;

void kpbt_set_versioning(const char *versioning) {
    versioning_override = versioning;
}

const char *kpbt_versioning(void) {
    if (versioning_override)
        return versioning_override;
    const char *env = getenv("KPBT_VERSIONING");
    return env && *env ? env : "trigger";
}

char *kpbt_config_props(const char *tag, const char *brokers,
                        const char *conninfo, const char *topics,
                        const char *extra, const char *props) {
    char *path = malloc(256);
    snprintf(path, 256, "/tmp/kpbt_%s_%d.yaml", tag, (int)getpid());
    FILE *f = fopen(path, "w");
    cr_assert(f, "cannot write %s", path);
    fprintf(f,
            "kafka:\n"
            "  brokers: \"%s\"\n"
            "  group_id: kpbt\n"
            "  properties:\n"
            "    session.timeout.ms: \"6000\"\n"
            "    log_level: \"4\"\n"
            "%s"
            "postgres:\n"
            "  conninfo: \"%s user=" KPBT_BRIDGE_USER "\"\n"
            "  versioning: %s\n"
            "http:\n"
            "  listen: \"\"\n"
            "topics:\n%s%s",
            brokers, props ? props : "", conninfo, kpbt_versioning(), topics,
            extra ? extra : "");
    fclose(f);
    return path;
}

pid_t kpbt_spawn(const char *log, const char *const *args) {
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
            close(fd);
        }
        char bin[512];
        snprintf(bin, sizeof(bin), "%s/kpbridge", KPB_BINARY_DIR);
        const char *argv[32];
        int n = 0;
        argv[n++] = bin;
        for (int i = 0; args[i] && n < 31; i++)
            argv[n++] = args[i];
        argv[n] = NULL;
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

int kpbt_exited(pid_t pid, double until, int *code) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) != pid) {
        if (kpbt_now() <= until)
            return 0;
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        cr_assert_fail("kpbridge did not finish in time");
    }
    *code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return 1;
}

int kpbt_wait(pid_t pid, int timeout_s) {
    double until = kpbt_now() + timeout_s;
    int code;
    while (!kpbt_exited(pid, until, &code))
        nanosleep(&(struct timespec){0, 20000000L}, NULL);
    return code;
}

int kpbt_run_to_end(const char *config, const char *log, int timeout_s) {
    const char *args[] = {"run", "-c", config, "--exit-at-end", NULL};
    return kpbt_wait(kpbt_spawn(log, args), timeout_s);
}

void kpbt_produce_streams(kpbt_kafka_t *k, const char *topic, int events,
                          int streams, unsigned seed) {
    int *seq = calloc((size_t)streams, sizeof(int));
    unsigned rnd = seed;
    char key[32], value[256];
    for (int i = 0; i < events; i++) {
        rnd = rnd * 1103515245u + 12345u;
        int s = (int)((rnd >> 8) % (unsigned)streams);
        snprintf(key, sizeof(key), "stream-%d", s);
        int n = snprintf(value, sizeof(value),
                         "{\"stream\":\"%s\",\"seq\":%d,\"n\":%d,"
                         "\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                         "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}",
                         key, ++seq[s], i);
        kpbt_hdr_t h[] = {
            {"event-type", (i & 1) ? "OrderPaid" : "OrderPlaced"}};
        kpbt_produce(k, topic, -1, key, value, (size_t)n, h, 1);
    }
    kpbt_flush(k);
    free(seq);
}

void kpbt_expect_gap_free(PGconn *conn) {
    cr_expect_eq(kpbt_int(conn,
                          "SELECT count(*) FROM (SELECT stream_id, count(*) c,"
                          " min(stream_version) lo, max(stream_version) hi"
                          " FROM eventcore_events GROUP BY 1) x"
                          " WHERE lo <> 1 OR hi <> c"),
                 0, "streams with gaps in their versions");
}

void kpbt_expect_exactly_once(PGconn *conn, kpbt_kafka_t *k,
                              const char *group, const char *topic,
                              int partitions, long long events) {
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM eventcore_events"),
                 events, "rows written");
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM kpbridge_dead_letters"),
                 0, "dead letters");
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM (SELECT metadata->"
                                "'kafka'->'partition', metadata->'kafka'->"
                                "'offset' FROM eventcore_events GROUP BY 1, 2"
                                " HAVING count(*) > 1) x"),
                 0, "Kafka records written twice");
    kpbt_expect_gap_free(conn);
    cr_expect_eq(kpbt_int(conn,
                          "SELECT count(*) FROM (SELECT (metadata->'kafka'->>"
                          "'offset')::bigint o, lag((metadata->'kafka'->>"
                          "'offset')::bigint) OVER (PARTITION BY stream_id"
                          " ORDER BY stream_version) prev FROM"
                          " eventcore_events) x WHERE o <= prev"),
                 0, "rows whose version order differs from offset order");
    cr_expect_eq(kpbt_int(conn, "SELECT count(*) FROM eventcore_events"
                                " WHERE event_data ? 'seq' AND"
                                " (event_data->>'seq')::bigint <>"
                                " stream_version"),
                 0, "rows whose version is not the producer's sequence");
    for (int p = 0; p < partitions; p++) {
        int64_t end = kpbt_end_offset(k, topic, p);
        cr_expect_eq(kpbt_intf(conn,
                               "SELECT coalesce(max(next_offset), 0) FROM"
                               " kpbridge_offsets WHERE group_id = '%s' AND"
                               " topic = '%s' AND partition = %d",
                               group, topic, p),
                     end, "partition %d: stored offset vs end offset", p);
    }
}

void kpbt_pg_ctl(const char *verb) {
    const char *dir = getenv("KPB_TEST_PGDIR");
    cr_assert(dir && *dir, "KPB_TEST_PGDIR is not set: run scripts/test");
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s/scripts/pg %s '%s' >/dev/null",
             KPB_SOURCE_DIR, verb, dir);
    cr_assert_eq(system(cmd), 0, "%s failed", cmd);
}

char *kpbt_log_path(const char *tag) {
    char *p = malloc(256);
    snprintf(p, 256, "/tmp/kpbt_%s_%d.log", tag, (int)getpid());
    unlink(p);
    return p;
}

void kpbt_show_log(const char *path) {
    char *text = kpbt_read_file(path, NULL);
    if (text) {
        size_t n = strlen(text);
        fprintf(stderr, "---- %s (tail) ----\n%s\n", path,
                n > 6000 ? text + n - 6000 : text);
        free(text);
    }
}

int kpbt_count_header(kpbt_kafka_t *k, const char *topic, const char *name) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", k->bootstrap, err,
                      sizeof(err));
    rd_kafka_conf_set(conf, "group.id", "kpbt-reader", err, sizeof(err));
    rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof(err));
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof(err));
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    cr_assert(c, "consumer: %s", err);
    rd_kafka_poll_set_consumer(c);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, 0)->offset =
        RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(c, l);
    rd_kafka_topic_partition_list_destroy(l);
    int count = 0;
    double until = kpbt_now() + 60;
    while (kpbt_now() < until) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 200);
        if (!m)
            continue;
        int eof = m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;
        if (!m->err) {
            rd_kafka_headers_t *h = NULL;
            const void *v;
            size_t n;
            if (!rd_kafka_message_headers(m, &h) &&
                !rd_kafka_header_get_last(h, name, &v, &n))
                count++;
        }
        rd_kafka_message_destroy(m);
        if (eof)
            break;
    }
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    return count;
}
