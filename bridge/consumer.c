#include "consumer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void kpb_consumer_log_cb(const rd_kafka_t *rk, int level, const char *fac,
                         const char *buf) {
    (void)rk;
    /* syslog levels: 0-3 error, 4 warning, 5-6 info, 7 debug */
    kpb_log_level_t l = level <= 3   ? KPB_LOG_ERROR
                        : level == 4 ? KPB_LOG_WARN
                        : level <= 6 ? KPB_LOG_INFO
                                     : KPB_LOG_DEBUG;
    kpb_log(l, "kafka %s: %s", fac, buf);
}

static int set(rd_kafka_conf_t *kc, const char *key, const char *value,
               char *errstr, size_t errstr_size) {
    char err[512];
    if (rd_kafka_conf_set(kc, key, value, err, sizeof(err)) ==
        RD_KAFKA_CONF_OK)
        return 0;
    /* librdkafka's message may quote the value; name only the key. */
    snprintf(errstr, errstr_size, "kafka property %s: not accepted by "
             "librdkafka (unknown property or invalid value)", key);
    return -1;
}

rd_kafka_conf_t *kpb_consumer_conf(const kpb_config_t *conf, char *errstr,
                                   size_t errstr_size) {
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    static const char *fixed[][2] = {
        /* Offsets are stored in PostgreSQL and committed by hand after the
         * transaction; librdkafka must never commit on its own. */
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        /* --exit-at-end and the lag need to know where partitions end. */
        {"enable.partition.eof", "true"},
        /* A sink loses nothing by default: start where the log starts. */
        {"auto.offset.reset", "earliest"},
        /* Bound the prefetch so memory stays flat under a backlog.  Each
         * queued message costs about 370 bytes of librdkafka bookkeeping
         * besides its share of the decompressed message set it keeps
         * alive, so a queue counted in value bytes costs about three times
         * as much memory.  A small queue is enough only because it is
         * refilled at once (fetch.queue.backoff.ms, or the nudger on
         * librdkafka 2.0).  Draining 1,000,000 events of 200 bytes written
         * in 1 MB producer batches, an 8 MiB queue with 4 MiB fetches
         * peaked at 80 MiB of RSS; 2 MiB with 256 KiB fetches and the
         * nudger at 36 MiB, as fast.  The fetch size matters as much as
         * the queue: one fetch lands whole, and 256 KiB of lz4 can be
         * 2 MiB of records. */
        {"queued.max.messages.kbytes", "2048"},
        {"queued.min.messages", "20000"},
        {"fetch.max.bytes", "262144"},
        /* librdkafka wants fetch.max.bytes >= message.max.bytes, which for
         * a consumer bounds only its own requests (commits, group
         * membership), all far smaller.  A record batch larger than a
         * fetch still arrives whole. */
        {"message.max.bytes", "262144"},
        {"client.id", "kpbridge"},
    };
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if (set(kc, fixed[i][0], fixed[i][1], errstr, errstr_size))
            goto err;
    /* A full queue is looked at again after this long (2.1 and later; 2.0
     * needs the nudger instead).  The default, 1000 ms, starves a queue
     * that holds less than a second of work. */
    if (!kpb_consumer_needs_nudger() &&
        set(kc, "fetch.queue.backoff.ms", "20", errstr, errstr_size))
        goto err;
    if (set(kc, "bootstrap.servers", conf->brokers, errstr, errstr_size) ||
        set(kc, "group.id", conf->group_id, errstr, errstr_size))
        goto err;
    for (size_t i = 0; i < conf->kafka_prop_cnt; i++) {
        const kpb_kv_t *kv = &conf->kafka_props[i];
        if (!strcmp(kv->key, "enable.auto.commit") ||
            !strcmp(kv->key, "enable.auto.offset.store")) {
            snprintf(errstr, errstr_size,
                     "kafka property %s: kpbridge commits offsets itself, "
                     "after each database transaction; remove it",
                     kv->key);
            goto err;
        }
        if (set(kc, kv->key, kv->value, errstr, errstr_size))
            goto err;
    }
    /* message.max.bytes is set above only to allow 256 KiB fetches; a
     * smaller fetch.max.bytes of the user's takes it down too, or librdkafka
     * would refuse the pair over a value the user never wrote. */
    const char *fetch = NULL;
    int own_msg_max = 1;
    for (size_t i = 0; i < conf->kafka_prop_cnt; i++) {
        if (!strcmp(conf->kafka_props[i].key, "fetch.max.bytes"))
            fetch = conf->kafka_props[i].value;
        else if (!strcmp(conf->kafka_props[i].key, "message.max.bytes"))
            own_msg_max = 0;
    }
    if (fetch && own_msg_max) {
        long long v = strtoll(fetch, NULL, 10);
        if (v >= 1000 && v < 262144 &&
            set(kc, "message.max.bytes", fetch, errstr, errstr_size))
            goto err;
    }
    rd_kafka_conf_set_log_cb(kc, kpb_consumer_log_cb);
    return kc;
err:
    rd_kafka_conf_destroy(kc);
    return NULL;
}

void kpb_hdrvec_fini(kpb_hdrvec_t *hv) {
    free(hv->v);
    hv->v = NULL;
    hv->cap = 0;
}

void kpb_consumer_record(const rd_kafka_message_t *rkm, const char *topic,
                         kpb_hdrvec_t *hv, kpb_record_t *rec) {
    rd_kafka_timestamp_type_t tstype;
    memset(rec, 0, sizeof(*rec));
    rec->topic = topic;
    rec->partition = rkm->partition;
    rec->offset = rkm->offset;
    rec->timestamp = rd_kafka_message_timestamp(rkm, &tstype);
    rec->key = rkm->key;
    rec->key_len = rkm->key_len;
    rec->value = rkm->payload;
    rec->value_len = rkm->len;

    rd_kafka_headers_t *hdrs = NULL;
    if (rd_kafka_message_headers(rkm, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        !hdrs)
        return;
    size_t n = rd_kafka_header_cnt(hdrs);
    if (n > hv->cap) {
        hv->cap = n;
        hv->v = kpb_xrealloc(hv->v, n * sizeof(*hv->v));
    }
    for (size_t i = 0; i < n; i++) {
        const char *name;
        const void *value;
        size_t size;
        if (rd_kafka_header_get_all(hdrs, i, &name, &value, &size))
            break;
        hv->v[i].name = name;
        hv->v[i].value = value;
        hv->v[i].len = size;
        rec->header_cnt = i + 1;
    }
    rec->headers = hv->v;
}

int kpb_consumer_needs_nudger(void) {
    return rd_kafka_version() < 0x02010000;
}

struct kpb_nudger_s {
    rd_kafka_t *rk;
    int interval_ms;
    atomic_int active;
    int stop;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
};

static void nudge(rd_kafka_t *rk) {
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (rd_kafka_assignment(rk, &parts) || !parts)
        return;
    if (parts->cnt) {
        /* Timestamp -1 asks for the end offset: the cheapest request a
         * leader answers, and the one that wakes its broker thread. */
        for (int i = 0; i < parts->cnt; i++)
            parts->elems[i].offset = RD_KAFKA_OFFSET_END;
        (void)rd_kafka_offsets_for_times(rk, parts, 1000);
    }
    rd_kafka_topic_partition_list_destroy(parts);
}

static void *nudger_main(void *arg) {
    kpb_nudger_t *n = arg;
    pthread_mutex_lock(&n->lock);
    while (!n->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += (long)n->interval_ms * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&n->cond, &n->lock, &ts);
        if (n->stop || !atomic_exchange(&n->active, 0))
            continue;
        pthread_mutex_unlock(&n->lock);
        nudge(n->rk);
        pthread_mutex_lock(&n->lock);
    }
    pthread_mutex_unlock(&n->lock);
    return NULL;
}

kpb_nudger_t *kpb_nudger_start(rd_kafka_t *rk, int interval_ms) {
    kpb_nudger_t *n = kpb_xcalloc(1, sizeof(*n));
    n->rk = rk;
    n->interval_ms = interval_ms;
    atomic_init(&n->active, 0);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&n->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&n->lock, NULL);
    if (pthread_create(&n->thread, NULL, nudger_main, n)) {
        pthread_cond_destroy(&n->cond);
        pthread_mutex_destroy(&n->lock);
        free(n);
        return NULL;
    }
    return n;
}

void kpb_nudger_active(kpb_nudger_t *n) {
    if (n)
        atomic_store_explicit(&n->active, 1, memory_order_relaxed);
}

void kpb_nudger_stop(kpb_nudger_t *n) {
    if (!n)
        return;
    pthread_mutex_lock(&n->lock);
    n->stop = 1;
    pthread_cond_signal(&n->cond);
    pthread_mutex_unlock(&n->lock);
    pthread_join(n->thread, NULL);
    pthread_cond_destroy(&n->cond);
    pthread_mutex_destroy(&n->lock);
    free(n);
}
