/**
 * @file decode.h
 * @brief Turns one Kafka record into one event row by its topic's mapping,
 *        or says why it cannot be one.  Pure: no I/O, no librdkafka types,
 *        so every rule is unit-tested without servers.
 */
#ifndef KPB_DECODE_H
#define KPB_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "util.h"

/** @brief One Kafka header; value NULL means a null header value. */
typedef struct kpb_header_s {
    const char *name;
    const void *value;
    size_t len;
} kpb_header_t;

/** @brief A Kafka record as decode sees it; every pointer is borrowed. */
typedef struct kpb_record_s {
    const char *topic;
    int32_t partition;
    int64_t offset;
    int64_t timestamp; /**< ms since the epoch, -1 if none */
    const void *key;   /**< NULL when the key is null */
    size_t key_len;
    const void *value; /**< NULL when the value is null */
    size_t value_len;
    const kpb_header_t *headers;
    size_t header_cnt;
} kpb_record_t;

/** @brief Why a record became a dead letter; the names are stored as is. */
typedef enum {
    KPB_REASON_NONE = 0,
    KPB_REASON_NO_STREAM_ID,        /**< "no_stream_id" */
    KPB_REASON_BAD_STREAM_ID,       /**< "bad_stream_id" */
    KPB_REASON_NO_EVENT_TYPE,       /**< "no_event_type" */
    KPB_REASON_NO_PAYLOAD,          /**< "no_payload" */
    KPB_REASON_INVALID_UTF8,        /**< "invalid_utf8" */
    KPB_REASON_NUL_BYTE,            /**< "nul_byte" */
    KPB_REASON_INVALID_JSON,        /**< "invalid_json" */
    KPB_REASON_BAD_EVENT_ID,        /**< "bad_event_id" */
    KPB_REASON_BAD_EXPECTED_VERSION, /**< "bad_expected_version" */
    KPB_REASON_TOO_LARGE,           /**< "too_large" */
    KPB_REASON_VERSION_CONFLICT,    /**< "version_conflict" (database) */
    KPB_REASON_REJECTED,            /**< "rejected_by_database" */
    KPB_REASON__CNT
} kpb_reason_t;

/** @brief The stored name of a reason, e.g. "invalid_json". */
const char *kpb_reason_name(kpb_reason_t reason);

/** @brief Byte limits of eventcore's stream ids. */
#define KPB_STREAM_ID_MAX 255

/**
 * @brief An event row.  Fields point into the record's bytes where they can
 *        and into the arena otherwise; all stay valid while both do.
 */
typedef struct kpb_event_s {
    const char *stream_id;
    size_t stream_id_len;
    const char *event_type;
    size_t event_type_len;
    unsigned char event_id[16]; /**< binary UUID */
    const char *payload;        /**< JSON text */
    size_t payload_len;
    const char *metadata; /**< JSON text, in the arena */
    size_t metadata_len;
    int64_t expected_version; /**< -1 when the record carries none */
} kpb_event_t;

/**
 * @brief Decodes @p rec by @p topic's mapping.
 *        ev->metadata is set even when the record is refused.
 * @param arena   where extracted or built bytes go
 * @param ev      filled on success
 * @param detail  on failure, a human explanation ("header event-id is not a
 *                UUID"); never holds record bytes beyond 64 characters
 * @returns KPB_REASON_NONE on success, else the dead-letter reason.
 */
kpb_reason_t kpb_decode(const kpb_topic_t *topic, const kpb_record_t *rec,
                        size_t max_record_bytes, kpb_arena_t *arena,
                        kpb_event_t *ev, char *detail, size_t detail_size);

/**
 * @brief Builds the JSON object of a record's headers into @p buf: text
 *        values as strings, null as null, anything that is not UTF-8 text
 *        as {"base64": "..."} so no header byte is lost.
 */
void kpb_headers_json(kpb_buf_t *buf, const kpb_header_t *headers,
                      size_t cnt);

/** @brief Fills @p out with a fresh UUIDv7 (RFC 9562): time-ordered ids keep
 *         the primary-key index append-mostly. */
void kpb_uuid7(unsigned char out[16]);

#endif
