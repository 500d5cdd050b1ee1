/*
 * bench_produce: writes a benchmark workload (bench_workload.h) into a
 * Kafka topic, either as a backlog, as fast as the broker takes it, or at a
 * steady rate for the latency measurement.
 *
 *   bench_produce --brokers B --topic T [workload options]
 *                 [--rate EVENTS_PER_S] [--linger-ms MS] [--batch-bytes B]
 *                 [--warmup]
 *
 * Backlog (no --rate): lz4 and large batches, as `kpbridge-devkafka load`,
 * because the mock cluster keeps only about 5 MiB or 100,000 message sets per
 * partition and drops the oldest without a word.  So after the flush every
 * partition's watermarks are checked: a low watermark above 0 means records
 * were dropped, and the run fails (exit 1) rather than measure a smaller
 * workload than it claims.
 *
 * Steady (--rate R): the events are produced in 1 ms slices so that, at any
 * moment, R * elapsed events have been handed to librdkafka; each record's
 * timestamp (CreateTime) is taken by librdkafka when it is produced, which
 * is where the latency measurement starts.  linger.ms defaults to 0 here so
 * the producer adds as little as it can.
 *
 * --batch-bytes: the producer's batch.size (default 1000000, librdkafka's
 * own).  It sets how large a message set a consumer decompresses and keeps
 * alive while any record of it is held, so it moves the consumer's peak RSS
 * (README, Benchmarks).
 *
 * --warmup: one record (event type "Warmup", key "warmup-<p>") into every
 * partition, so a consumer can be seen to own them all before the steady
 * run starts.
 *
 * Prints one line: "produced N records in S s (R/s)".
 */
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_workload.h"
#include "util.h"

typedef struct dr_state_s {
    uint64_t ok;
    uint64_t failed;
    char first_error[256];
} dr_state_t;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque) {
    dr_state_t *st = opaque;
    (void)rk;
    if (!rkm->err) {
        st->ok++;
        return;
    }
    if (!st->failed++)
        snprintf(st->first_error, sizeof(st->first_error), "%s",
                 rd_kafka_err2str(rkm->err));
}

static int conf_set(rd_kafka_conf_t *conf, const char *name, const char *val) {
    char errstr[256];
    if (rd_kafka_conf_set(conf, name, val, errstr, sizeof(errstr)) !=
        RD_KAFKA_CONF_OK) {
        fprintf(stderr, "bench_produce: %s=%s: %s\n", name, val, errstr);
        return -1;
    }
    return 0;
}

static int produce_one(rd_kafka_t *rk, rd_kafka_topic_t *rkt, int32_t part,
                       const char *key, size_t key_len, const char *type,
                       const char *value, size_t value_len) {
    for (;;) {
        rd_kafka_headers_t *hdrs = rd_kafka_headers_new(1);
        rd_kafka_header_add(hdrs, "event-type", -1, type, -1);
        rd_kafka_resp_err_t err = rd_kafka_producev(
            rk, RD_KAFKA_V_RKT(rkt), RD_KAFKA_V_PARTITION(part),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY(key, key_len),
            RD_KAFKA_V_VALUE((void *)value, value_len),
            RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
        if (!err)
            return 0;
        rd_kafka_headers_destroy(hdrs);
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(rk, 10);
            continue;
        }
        fprintf(stderr, "bench_produce: produce: %s\n", rd_kafka_err2str(err));
        return -1;
    }
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
    const char *brokers = NULL, *topic = NULL;
    double rate = 0;
    long linger = -1;
    const char *batch_bytes = "1000000";
    int warmup = 0;
    bw_spec_t spec;
    bw_spec_defaults(&spec);

    for (int i = 1; i < argc; i++) {
        int m = bw_parse_opt(argc, argv, &i, &spec);
        if (m < 0)
            return 2;
        if (m > 0)
            continue;
        if (!strcmp(argv[i], "--brokers") && i + 1 < argc)
            brokers = argv[++i];
        else if (!strcmp(argv[i], "--topic") && i + 1 < argc)
            topic = argv[++i];
        else if (!strcmp(argv[i], "--rate") && i + 1 < argc)
            rate = strtod(argv[++i], NULL);
        else if (!strcmp(argv[i], "--linger-ms") && i + 1 < argc)
            linger = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--batch-bytes") && i + 1 < argc)
            batch_bytes = argv[++i];
        else if (!strcmp(argv[i], "--warmup"))
            warmup = 1;
        else {
            fprintf(stderr,
                    "usage: bench_produce --brokers B --topic T [--shape S] "
                    "[--events N] [--streams S] [--payload-bytes B] "
                    "[--partitions P] [--seed X] [--rate R] [--linger-ms MS] "
                    "[--batch-bytes B] [--warmup]\n");
            return 2;
        }
    }
    if (!brokers || !topic) {
        fprintf(stderr, "bench_produce: --brokers and --topic are required\n");
        return 2;
    }
    if (linger < 0)
        linger = rate > 0 ? 0 : 5;
    signal(SIGPIPE, SIG_IGN);

    dr_state_t st;
    memset(&st, 0, sizeof(st));
    char lbuf[32], errstr[256];
    snprintf(lbuf, sizeof(lbuf), "%ld", linger);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (conf_set(conf, "bootstrap.servers", brokers) ||
        conf_set(conf, "client.id", "bench_produce") ||
        conf_set(conf, "compression.type", "lz4") ||
        conf_set(conf, "linger.ms", lbuf) ||
        conf_set(conf, "batch.num.messages", "10000") ||
        conf_set(conf, "batch.size", batch_bytes) ||
        conf_set(conf, "queue.buffering.max.messages", "1000000") ||
        conf_set(conf, "queue.buffering.max.kbytes", "1048576") ||
        conf_set(conf, "enable.idempotence", "false") ||
        conf_set(conf, "acks", "all")) {
        rd_kafka_conf_destroy(conf);
        return 1;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_opaque(conf, &st);
    rd_kafka_t *rk =
        rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "bench_produce: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        return 1;
    }
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);

    int rc = 1;
    uint64_t expected = 0;
    int64_t t0 = kpb_now_ms();
    bw_gen_t gen;
    memset(&gen, 0, sizeof(gen));
    bw_event_t ev;
    bw_event_init(&ev);

    if (warmup) {
        for (int32_t p = 0; p < spec.partitions; p++) {
            char key[32];
            int n = snprintf(key, sizeof(key), "warmup-%d", (int)p);
            const char *val = "{\"warmup\":true}";
            if (produce_one(rk, rkt, p, key, (size_t)n, "Warmup", val,
                            strlen(val)) != 0)
                goto out;
            expected++;
        }
    } else {
        if (bw_init(&gen, &spec) != 0)
            goto out;
        uint64_t sent = 0;
        while (bw_next(&gen, &ev)) {
            if (rate > 0) {
                /* Hold back until this event is due. */
                for (;;) {
                    double due = (double)sent * 1000.0 / rate;
                    if ((double)(kpb_now_ms() - t0) >= due)
                        break;
                    rd_kafka_poll(rk, 0);
                    sleep_ms(1);
                }
            }
            if (produce_one(rk, rkt, ev.partition, ev.key, ev.key_len, ev.type,
                            ev.value.data, ev.value.len) != 0)
                goto out;
            sent++;
            expected++;
            rd_kafka_poll(rk, 0);
        }
    }

    if (rd_kafka_flush(rk, 120000) == RD_KAFKA_RESP_ERR__TIMED_OUT) {
        fprintf(stderr, "bench_produce: %d records still queued after 120 s\n",
                rd_kafka_outq_len(rk));
        goto out;
    }
    double secs = (double)(kpb_now_ms() - t0) / 1000.0;
    if (st.failed || st.ok != expected) {
        fprintf(stderr,
                "bench_produce: %" PRIu64 " of %" PRIu64
                " deliveries failed; first error: %s\n",
                expected - st.ok, expected, st.first_error);
        goto out;
    }

    /* The mock drops old message sets silently: its low watermark is the
     * only trace, so a dropped record fails the run here. */
    int dropped = 0;
    for (int32_t p = 0; p < spec.partitions; p++) {
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t err =
            rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000);
        if (err) {
            fprintf(stderr, "bench_produce: watermarks of %s [%d]: %s\n",
                    topic, (int)p, rd_kafka_err2str(err));
            goto out;
        }
        if (lo > 0) {
            fprintf(stderr,
                    "bench_produce: %s [%d] starts at offset %" PRId64
                    " of %" PRId64
                    ": the mock cluster dropped records (it keeps about "
                    "5 MiB or 100,000 message sets per partition)\n",
                    topic, (int)p, lo, hi);
            dropped = 1;
        }
    }
    if (dropped)
        goto out;
    printf("produced %" PRIu64 " records in %.3f s (%.0f/s)\n", st.ok, secs,
           secs > 0 ? (double)st.ok / secs : 0.0);
    rc = 0;

out:
    bw_event_fini(&ev);
    bw_fini(&gen);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    return rc;
}
