/* The fetch nudger (consumer.h).  librdkafka 2.0 stops fetching while its
 * prefetch queue is full and refills it only when the broker thread next
 * wakes up, about once a second when nothing else happens; the nudger wakes
 * it.  Both drains below read the same partition, one with the nudger and
 * one without, so the test shows the stall it removes as well as its
 * absence.  Every message set is larger than the whole queue
 * (queued.max.messages.kbytes 1) and the mock cluster returns one set per
 * partition and fetch, so each set needs a refill of its own. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "consumer.h"
#include "harness.h"

/* One record per message set: a set cannot then be split or merged on its
 * way, and 4,000 bytes alone overfill a 1 KiB queue. */
enum { SETS = 12, PER_SET = 1, VALUE = 4000 };

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void conf_set(rd_kafka_conf_t *c, const char *k, const char *v) {
    char err[256];
    cr_assert(rd_kafka_conf_set(c, k, v, err, sizeof(err)) ==
                  RD_KAFKA_CONF_OK,
              "%s: %s", k, err);
}

/* Reads the whole partition; returns the median wait, in seconds, between
 * the last record of one message set and the first of the next: the time a
 * refill takes.  A median, because librdkafka's own requests (the group
 * coordinator's, at start-up) wake the broker thread now and then too. */
static double drain(const char *bootstrap, int nudge) {
    char err[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    conf_set(c, "bootstrap.servers", bootstrap);
    conf_set(c, "group.id", nudge ? "nudged" : "stalled");
    conf_set(c, "enable.auto.commit", "false");
    conf_set(c, "queued.max.messages.kbytes", "1");
    conf_set(c, "log_level", "3");
    /* What kpbridge does, by librdkafka version (consumer.c). */
    if (nudge && !kpb_consumer_needs_nudger())
        conf_set(c, "fetch.queue.backoff.ms", "20");
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof(err));
    cr_assert(rk, "consumer: %s", err);
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, "nudge", 0)->offset =
        RD_KAFKA_OFFSET_BEGINNING;
    cr_assert(rd_kafka_assign(rk, l) == RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_topic_partition_list_destroy(l);

    kpb_nudger_t *n = NULL;
    if (nudge && kpb_consumer_needs_nudger()) {
        n = kpb_nudger_start(rk, 20);
        cr_assert(n, "the nudger did not start");
    }
    int got = 0;
    double t0 = kpbt_now(), last = 0, gaps[SETS - 1];
    while (got < SETS * PER_SET && kpbt_now() - t0 < 90) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        if (!m->err) {
            cr_assert_eq(m->offset, got, "offset %lld, expected %d",
                         (long long)m->offset, got);
            double now = kpbt_now();
            if (got && got % PER_SET == 0)
                gaps[got / PER_SET - 1] = now - last;
            last = now;
            got++;
            kpb_nudger_active(n);
            /* Work on it a little, as the bridge does: a consumer faster
             * than the fetcher empties the queue before the broker thread
             * looks and never sees it full. */
            nanosleep(&(struct timespec){0, 50000000L}, NULL);
        }
        rd_kafka_message_destroy(m);
    }
    kpb_nudger_stop(n);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    cr_assert_eq(got, SETS * PER_SET, "read %d of %d records", got,
                 SETS * PER_SET);
    qsort(gaps, SETS - 1, sizeof(gaps[0]), cmp_double);
    return gaps[(SETS - 1) / 2];
}

Test(consumer, nudger_refills_a_full_prefetch_queue_at_once,
     .timeout = 180) {
    kpbt_kafka_t *k = kpbt_kafka_new(1);
    kpbt_topic(k, "nudge", 1);
    char value[VALUE];
    memset(value, 'x', sizeof(value));
    for (int s = 0; s < SETS; s++) {
        for (int i = 0; i < PER_SET; i++)
            kpbt_produce(k, "nudge", 0, NULL, value, sizeof(value), NULL, 0);
        kpbt_flush(k); /* one message set per flush */
    }
    cr_assert_eq(kpbt_end_offset(k, "nudge", 0), SETS * PER_SET);

    double stalled = drain(k->bootstrap, 0);
    double nudged = drain(k->bootstrap, 1);
    fprintf(stderr, "median refill over %d message sets: %.3f s without the "
            "nudger, %.3f s with it\n", SETS, stalled, nudged);
    /* The premise: without a wake-up a refill waits for the broker
     * thread's one-second timeout.  If a librdkafka release stops doing
     * that, this fails and the nudger can go. */
    cr_expect(stalled > 0.5, "without the nudger a refill took only %.3f s",
              stalled);
    cr_expect(nudged < 0.3, "with the nudger a refill took %.3f s", nudged);
    kpbt_kafka_destroy(k);
}

/* kpbridge sets message.max.bytes to 262144 only so that its 256 KiB
 * fetches are allowed; a smaller fetch.max.bytes of the user's must not make
 * librdkafka refuse a value the user never wrote. */
static rd_kafka_conf_t *consumer_conf(const char *props) {
    char yaml[1024], err[512];
    snprintf(yaml, sizeof(yaml),
             "kafka:\n  brokers: \"127.0.0.1:1\"\n  group_id: g\n%s"
             "postgres:\n  conninfo: \"dbname=x\"\n"
             "topics:\n  - name: t\n    event_type: header:event-type\n",
             props);
    kpb_config_t *conf = NULL;
    cr_assert_eq(kpb_config_parse(yaml, strlen(yaml), "test.yaml", &conf, err,
                                  sizeof(err)),
                 0, "%s", err);
    rd_kafka_conf_t *kc = kpb_consumer_conf(conf, err, sizeof(err));
    cr_assert(kc, "%s", err);
    kpb_config_destroy(conf);
    return kc;
}

static void expect_prop(rd_kafka_conf_t *kc, const char *key,
                        const char *want) {
    char v[64];
    size_t n = sizeof(v);
    cr_assert_eq(rd_kafka_conf_get(kc, key, v, &n), RD_KAFKA_CONF_OK, "%s",
                 key);
    cr_expect_str_eq(v, want, "%s", key);
}

/* Creating the consumer is where librdkafka checks the pair. */
static int creates(rd_kafka_conf_t *kc, char *err, size_t err_size) {
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, err, err_size);
    if (!rk) {
        rd_kafka_conf_destroy(kc);
        return 0;
    }
    rd_kafka_destroy(rk);
    return 1;
}

Test(consumer, a_smaller_fetch_takes_message_max_bytes_down) {
    char err[512];
    rd_kafka_conf_t *kc = consumer_conf("");
    expect_prop(kc, "fetch.max.bytes", "262144");
    expect_prop(kc, "message.max.bytes", "262144");
    cr_expect(creates(kc, err, sizeof(err)), "defaults refused: %s", err);

    kc = consumer_conf("  properties:\n    fetch.max.bytes: \"100000\"\n");
    expect_prop(kc, "message.max.bytes", "100000");
    cr_expect(creates(kc, err, sizeof(err)), "fetch.max.bytes 100000: %s",
              err);

    /* A larger fetch leaves kpbridge's value alone. */
    kc = consumer_conf("  properties:\n    fetch.max.bytes: \"4194304\"\n");
    expect_prop(kc, "message.max.bytes", "262144");
    cr_expect(creates(kc, err, sizeof(err)), "fetch.max.bytes 4194304: %s",
              err);

    /* Both written by the user: librdkafka's own check, by name. */
    kc = consumer_conf("  properties:\n    fetch.max.bytes: \"100000\"\n"
                       "    message.max.bytes: \"1000000\"\n");
    cr_expect(!creates(kc, err, sizeof(err)), "an impossible pair accepted");
    cr_expect(strstr(err, "fetch.max.bytes") != NULL, "%s", err);
}
