/* Delivery under faults (DESIGN §5), through the real binary: crashes,
 * database restarts and outages, killed backends, Kafka broker outages and
 * request errors, rebalances, and a zombie writer.  Each ends with the four
 * checks of kpbt_expect_exactly_once().  These tests restart the shared
 * PostgreSQL, so the executable runs its tests one at a time. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define GROUP "kpbt"
#define TOPIC_MAPPING                                                          \
    "  - name: events\n"                                                       \
    "    event_type: header:event-type\n"

static void nap(double secs) {
    struct timespec ts = {(time_t)secs, (long)((secs - (time_t)secs) * 1e9)};
    nanosleep(&ts, NULL);
}

static long long rows(const char *ci) {
    PGconn *conn = PQconnectdb(ci);
    long long n = -1;
    if (PQstatus(conn) == CONNECTION_OK) {
        PGresult *res = PQexec(conn, "SELECT count(*) FROM eventcore_events");
        if (PQresultStatus(res) == PGRES_TUPLES_OK)
            n = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
    }
    PQfinish(conn);
    return n;
}

/* Waits until more than @p min rows are written (or @p pid exited). */
static void wait_rows(const char *ci, long long min, pid_t pid, double secs) {
    double until = kpbt_now() + secs;
    while (kpbt_now() < until) {
        if (rows(ci) > min)
            return;
        if (pid > 0 && waitpid(pid, NULL, WNOHANG) == pid)
            cr_assert_fail("kpbridge exited before %lld rows", min);
        nap(0.05);
    }
    cr_assert_fail("fewer than %lld rows after %.0f s", min, secs);
}

static pid_t spawn_run(const char *conf, const char *log, int to_end) {
    const char *args[] = {"run", "-c", conf, to_end ? "--exit-at-end" : NULL,
                          NULL};
    return kpbt_spawn(log, args);
}

typedef struct {
    char *ci;
    kpbt_kafka_t *k;
    char *conf;
    char *log;
    int partitions;
    int events;
} fixture_t;

/* KPBT_QUICK (the sanitizer pass of scripts/test) runs every fault at a
 * third of the size: the same code paths, in less time. */
static int quick(void) {
    const char *q = getenv("KPBT_QUICK");
    return q && *q && strcmp(q, "0");
}

static int scaled(int n) {
    return quick() ? n / 3 : n;
}

static void setup(fixture_t *fx, const char *tag, int partitions, int events,
                  const char *props) {
    events = scaled(events);
    fx->ci = kpbt_db_new(tag, 1);
    fx->k = kpbt_kafka_new(1);
    fx->partitions = partitions;
    fx->events = events;
    kpbt_topic(fx->k, "events", partitions);
    kpbt_produce_streams(fx->k, "events", events, 1000, 777);
    fx->conf = kpbt_config_props(tag, fx->k->bootstrap, fx->ci, TOPIC_MAPPING,
                                 NULL, props);
    fx->log = kpbt_log_path(tag);
}

static void finish(fixture_t *fx) {
    PGconn *conn = kpbt_pg(fx->ci);
    kpbt_expect_exactly_once(conn, fx->k, GROUP, "events", fx->partitions,
                             fx->events);
    PQfinish(conn);
    kpbt_kafka_destroy(fx->k);
    unlink(fx->conf);
    free(fx->conf);
    free(fx->log);
    free(fx->ci);
}

static void run_to_end(fixture_t *fx, pid_t pid) {
    int rc = kpbt_wait(pid, 300);
    if (rc)
        kpbt_show_log(fx->log);
    cr_assert_eq(rc, 0, "kpbridge exited %d", rc);
}

Test(faults, loses_and_duplicates_nothing_across_ten_sigkills,
     .timeout = 900) {
    fixture_t fx;
    setup(&fx, "f_kill", 8, 100000, NULL);
    unsigned rnd = 4242;
    int kills = 0;
    const int rounds = quick() ? 3 : 10;
    for (int i = 0; i < rounds; i++) {
        long long before = rows(fx.ci);
        pid_t pid = spawn_run(fx.conf, fx.log, 1);
        /* Kill mid-stream: once this run has written something, at a
         * pseudo-random moment of the next 1.5 s. */
        double until = kpbt_now() + 60;
        int exited = 0;
        while (rows(fx.ci) <= before && kpbt_now() < until) {
            if (waitpid(pid, NULL, WNOHANG) == pid) {
                exited = 1;
                break;
            }
            nap(0.02);
        }
        if (exited)
            break;
        rnd = rnd * 1103515245u + 12345u;
        nap((double)((rnd >> 8) % 1500) / 1000.0);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        kills++;
    }
    fprintf(stderr, "faults: %d SIGKILLs, %lld rows before the last run\n",
            kills, rows(fx.ci));
    cr_expect_geq(kills, rounds / 2, "too few kills landed mid-stream");
    run_to_end(&fx, spawn_run(fx.conf, fx.log, 1));
    finish(&fx);
}

Test(faults, rides_out_a_postgresql_restart, .timeout = 600) {
    fixture_t fx;
    setup(&fx, "f_restart", 8, 60000, NULL);
    pid_t pid = spawn_run(fx.conf, fx.log, 1);
    wait_rows(fx.ci, scaled(10000), pid, 120);
    kpbt_pg_ctl("restart");
    run_to_end(&fx, pid);
    finish(&fx);
}

Test(faults, rides_out_killed_backends, .timeout = 600) {
    fixture_t fx;
    setup(&fx, "f_terminate", 8, 60000, NULL);
    pid_t pid = spawn_run(fx.conf, fx.log, 1);
    wait_rows(fx.ci, scaled(10000), pid, 120);
    for (int i = 0; i < 3; i++) {
        PGconn *conn = kpbt_pg(fx.ci);
        kpbt_exec(conn, "SELECT pg_terminate_backend(pid) FROM"
                        " pg_stat_activity WHERE datname = current_database()"
                        " AND pid <> pg_backend_pid()");
        PQfinish(conn);
        nap(0.4);
    }
    run_to_end(&fx, pid);
    finish(&fx);
}

Test(faults, waits_out_20_seconds_without_postgresql, .timeout = 600) {
    fixture_t fx;
    setup(&fx, "f_outage", 8, 60000, NULL);
    pid_t pid = spawn_run(fx.conf, fx.log, 1);
    wait_rows(fx.ci, scaled(10000), pid, 120);
    kpbt_pg_ctl("halt");
    nap(20);
    cr_expect_eq(waitpid(pid, NULL, WNOHANG), 0,
                 "kpbridge must wait for the database, not exit");
    kpbt_pg_ctl("start");
    run_to_end(&fx, pid);
    char *log = kpbt_read_file(fx.log, NULL);
    cr_assert(log);
    int retries_logged = 0;
    for (char *p = log; (p = strstr(p, "will retry")); p++)
        retries_logged++;
    /* one line per distinct cause, not one per attempt */
    cr_expect(retries_logged >= 1 && retries_logged <= 6,
              "retry lines: %d", retries_logged);
    free(log);
    finish(&fx);
}

Test(faults, rides_out_a_kafka_broker_outage, .timeout = 600) {
    fixture_t fx;
    setup(&fx, "f_broker", 8, 60000, NULL);
    pid_t pid = spawn_run(fx.conf, fx.log, 1);
    wait_rows(fx.ci, scaled(10000), pid, 120);
    rd_kafka_mock_broker_set_down(fx.k->mcluster, 1);
    nap(4);
    rd_kafka_mock_broker_set_up(fx.k->mcluster, 1);
    run_to_end(&fx, pid);
    finish(&fx);
}

Test(faults, rides_out_kafka_request_errors, .timeout = 600) {
    fixture_t fx;
    setup(&fx, "f_reqerr", 8, 60000, NULL);
    pid_t pid = spawn_run(fx.conf, fx.log, 1);
    wait_rows(fx.ci, scaled(10000), pid, 120);
    rd_kafka_mock_push_request_errors(
        fx.k->mcluster, 1 /* Fetch */, 4,
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT);
    rd_kafka_mock_push_request_errors(
        fx.k->mcluster, 8 /* OffsetCommit */, 3,
        RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
        RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
        RD_KAFKA_RESP_ERR_NOT_COORDINATOR);
    rd_kafka_mock_push_request_errors(fx.k->mcluster, 12 /* Heartbeat */, 1,
                                      RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS);
    run_to_end(&fx, pid);
    finish(&fx);
}

static void rebalance_case(const char *tag, const char *props) {
    fixture_t fx;
    setup(&fx, tag, 12, 100000, props);
    char *log_b = kpbt_log_path("f_rb_b"), *log_c = kpbt_log_path("f_rb_c");
    pid_t a = spawn_run(fx.conf, fx.log, 0);
    pid_t b = spawn_run(fx.conf, log_b, 0);
    wait_rows(fx.ci, scaled(15000), a, 120);
    pid_t c = spawn_run(fx.conf, log_c, 0); /* a third joins */
    wait_rows(fx.ci, scaled(50000), c, 120);
    kill(a, SIGTERM); /* and one leaves */
    int rc = kpbt_wait(a, 60);
    if (rc)
        kpbt_show_log(fx.log);
    cr_expect_eq(rc, 0, "the leaver exits cleanly");
    wait_rows(fx.ci, fx.events - 1, b, 180);
    /* the survivors commit the last positions, then stop */
    nap(1.5);
    kill(b, SIGTERM);
    kill(c, SIGTERM);
    cr_expect_eq(kpbt_wait(b, 60), 0);
    cr_expect_eq(kpbt_wait(c, 60), 0);
    free(log_b);
    free(log_c);
    finish(&fx);
}

Test(faults, shares_partitions_through_joins_and_leaves_eager,
     .timeout = 600) {
    rebalance_case("f_rb_eager", NULL);
}

Test(faults, shares_partitions_through_joins_and_leaves_cooperative,
     .timeout = 600) {
    rebalance_case("f_rb_coop",
                   "    partition.assignment.strategy: cooperative-sticky\n");
}

Test(faults, fences_a_zombie_that_wakes_after_its_partition_moved,
     .timeout = 600) {
    fixture_t fx;
    /* One partition: the zombie and its successor fight over the same one. */
    setup(&fx, "f_zombie", 1, 30000, NULL);
    char *log_b = kpbt_log_path("f_zombie_b");
    pid_t a = spawn_run(fx.conf, fx.log, 0);
    wait_rows(fx.ci, scaled(5000), a, 120);
    kill(a, SIGSTOP); /* a GC pause, a frozen VM: its session expires */
    pid_t b = spawn_run(fx.conf, log_b, 1);
    /* A frozen in mid-transaction holds the partition's offsets row: B then
     * waits on it, and wakes fenced once A's transaction ends. */
    double until = kpbt_now() + 40;
    int b_done = 0, status = 0;
    while (kpbt_now() < until && !(b_done = waitpid(b, &status, WNOHANG) == b))
        nap(0.1);
    kill(a, SIGCONT);
    int rc = b_done ? (WIFEXITED(status) ? WEXITSTATUS(status) : 128)
                    : kpbt_wait(b, 300);
    if (rc)
        kpbt_show_log(log_b);
    cr_expect_eq(rc, 0);
    /* whoever owns the partition now (the zombie may have it back) writes
     * the rest; then the zombie stops */
    wait_rows(fx.ci, fx.events - 1, a, 120);
    nap(1);
    kill(a, SIGTERM);
    cr_expect_eq(kpbt_wait(a, 60), 0);
    free(log_b);
    finish(&fx);
}

Test(faults, exits_1_on_a_fatal_consumer_error_and_resumes_exactly,
     .timeout = 600) {
    fixture_t fx;
    /* Static membership: a broker that says another consumer took this
     * group.instance.id fences this one, which librdkafka makes fatal. */
    setup(&fx, "f_fatal", 4, 40000, "    group.instance.id: kpbt-static\n");
    pid_t pid = spawn_run(fx.conf, fx.log, 0);
    wait_rows(fx.ci, scaled(5000), pid, 120);
    rd_kafka_mock_push_request_errors(fx.k->mcluster, 12 /* Heartbeat */, 3,
                                      RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID,
                                      RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID,
                                      RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID);
    int rc = kpbt_wait(pid, 120);
    if (rc != 1)
        kpbt_show_log(fx.log);
    cr_expect_eq(rc, 1, "a fatal Kafka error exits 1");
    char *log = kpbt_read_file(fx.log, NULL);
    cr_expect(log && strstr(log, "fatal kafka error"), "no fatal error logged");
    free(log);
    /* Nothing it had written is written again by its successor. */
    rd_kafka_mock_clear_request_errors(fx.k->mcluster, 12);
    run_to_end(&fx, spawn_run(fx.conf, fx.log, 1));
    finish(&fx);
}

Test(faults, gives_up_after_the_configured_time_without_committing,
     .timeout = 300) {
    fixture_t fx;
    setup(&fx, "f_giveup", 4, 30000, NULL);
    /* rewrite the config with a short give-up time */
    char *text = kpbt_read_file(fx.conf, NULL);
    char *at = strstr(text, "  conninfo:");
    cr_assert(at);
    FILE *f = fopen(fx.conf, "w");
    fwrite(text, 1, (size_t)(at - text), f);
    fputs("  give_up_after_s: 4\n", f);
    fputs(at, f);
    fclose(f);
    free(text);
    /* Not --exit-at-end: it must be the database, not the end of the
     * topic, that stops it.  Records arriving while the database is away
     * make a flush fail, which starts the give-up clock. */
    pid_t pid = spawn_run(fx.conf, fx.log, 0);
    wait_rows(fx.ci, fx.events - 1, pid, 180);
    kpbt_pg_ctl("halt");
    char key[32], value[64];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "late-%d", i % 10);
        int n = snprintf(value, sizeof(value), "{\"late\":%d}", i);
        kpbt_hdr_t h[] = {{"event-type", "T"}};
        kpbt_produce(fx.k, "events", -1, key, value, (size_t)n, h, 1);
    }
    kpbt_flush(fx.k);
    fx.events += 100;
    double t0 = kpbt_now();
    int rc = kpbt_wait(pid, 120);
    double waited = kpbt_now() - t0;
    kpbt_pg_ctl("start");
    cr_expect_eq(rc, 1, "giving up exits 1");
    cr_expect(waited >= 2.5 && waited < 60, "gave up after %.1f s", waited);
    char *log = kpbt_read_file(fx.log, NULL);
    cr_expect(log && strstr(log, "giving up after 4 s"), "no give-up line");
    free(log);
    /* nothing unwritten was committed: a successor finishes exactly */
    run_to_end(&fx, spawn_run(fx.conf, fx.log, 1));
    finish(&fx);
}
