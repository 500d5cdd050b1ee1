/**
 * @file consumer.h
 * @brief The librdkafka side: the consumer's configuration and the mapping
 *        from a Kafka message to the record that decode reads.
 */
#ifndef KPB_CONSUMER_H
#define KPB_CONSUMER_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

#include "config.h"
#include "decode.h"
#include "util.h"

/**
 * @brief Builds the consumer configuration: kafka.brokers, group_id, the
 *        bridge's fixed settings (manual offset commits, end-of-partition
 *        events, a bounded prefetch queue), then kafka.properties as given.
 * @returns a new conf, or NULL with errstr naming the property at fault
 *          (never its value: it may be a secret).
 */
rd_kafka_conf_t *kpb_consumer_conf(const kpb_config_t *conf, char *errstr,
                                   size_t errstr_size);

/** @brief Reusable storage for a message's headers. */
typedef struct kpb_hdrvec_s {
    kpb_header_t *v;
    size_t cap;
} kpb_hdrvec_t;

void kpb_hdrvec_fini(kpb_hdrvec_t *hv);

/**
 * @brief Fills @p rec from @p rkm; pointers stay valid while rkm lives
 *        (headers: while @p hv is not reused).
 */
void kpb_consumer_record(const rd_kafka_message_t *rkm, const char *topic,
                         kpb_hdrvec_t *hv, kpb_record_t *rec);

/** @brief Routes librdkafka's log lines through kpb_log. */
void kpb_consumer_log_cb(const rd_kafka_t *rk, int level, const char *fac,
                         const char *buf);

#endif
