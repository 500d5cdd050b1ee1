#include "consumer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
        /* Bound the prefetch so memory stays flat under a backlog.
         * librdkafka's defaults (64 MiB queue, 50 MiB fetches) let a
         * 16-partition backlog reach 75-85 MiB of RSS.  The message count
         * must stay high, though: librdkafka 2.0 stops fetching while the
         * queue holds queued.min.messages and does not notice at once when
         * it drains, so 20,000 capped consumption at about 25,000
         * events/s (300,000 events, 16 partitions: 24,868/s at 20,000,
         * 46,942/s at 100,000 with 53 MiB RSS, 64,716/s with every
         * default at 85 MiB). */
        {"queued.max.messages.kbytes", "8192"},
        {"queued.min.messages", "100000"},
        {"fetch.max.bytes", "4194304"},
        {"client.id", "kpbridge"},
    };
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if (set(kc, fixed[i][0], fixed[i][1], errstr, errstr_size))
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
