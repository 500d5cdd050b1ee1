#include "decode.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <uuid/uuid.h>

static const char *reason_names[KPB_REASON__CNT] = {
    [KPB_REASON_NONE] = "none",
    [KPB_REASON_NO_STREAM_ID] = "no_stream_id",
    [KPB_REASON_BAD_STREAM_ID] = "bad_stream_id",
    [KPB_REASON_NO_EVENT_TYPE] = "no_event_type",
    [KPB_REASON_NO_PAYLOAD] = "no_payload",
    [KPB_REASON_INVALID_UTF8] = "invalid_utf8",
    [KPB_REASON_NUL_BYTE] = "nul_byte",
    [KPB_REASON_INVALID_JSON] = "invalid_json",
    [KPB_REASON_BAD_EVENT_ID] = "bad_event_id",
    [KPB_REASON_BAD_EXPECTED_VERSION] = "bad_expected_version",
    [KPB_REASON_TOO_LARGE] = "too_large",
    [KPB_REASON_VERSION_CONFLICT] = "version_conflict",
    [KPB_REASON_REJECTED] = "rejected_by_database",
};

const char *kpb_reason_name(kpb_reason_t reason) {
    if ((int)reason < 0 || reason >= KPB_REASON__CNT)
        return "unknown";
    return reason_names[reason];
}

void kpb_uuid7(unsigned char out[16]) {
    uint64_t ms = (uint64_t)kpb_wall_ms();
    unsigned char rnd[10];
    size_t got = 0;
    while (got < sizeof(rnd)) {
        ssize_t n = getrandom(rnd + got, sizeof(rnd) - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            abort(); /* the kernel's CSPRNG does not fail once booted */
        got += (size_t)n;
    }
    for (int i = 0; i < 6; i++)
        out[i] = (unsigned char)(ms >> (40 - 8 * i));
    out[6] = (unsigned char)(0x70 | (rnd[0] & 0x0F)); /* version 7 */
    out[7] = rnd[1];
    out[8] = (unsigned char)(0x80 | (rnd[2] & 0x3F)); /* variant 10 */
    memcpy(out + 9, rnd + 3, 7);
}

static const kpb_header_t *find_header(const kpb_record_t *rec,
                                       const char *name) {
    /* The last header of a name wins, as in most Kafka clients' lookups. */
    for (size_t i = rec->header_cnt; i-- > 0;)
        if (!strcmp(rec->headers[i].name, name))
            return &rec->headers[i];
    return NULL;
}

/* RFC 6901: "/a/0/b~1c" walks objects by key and arrays by index. */
static json_t *json_pointer(json_t *root, const char *ptr) {
    json_t *cur = root;
    const char *p = ptr;
    char token[256];
    while (cur && *p == '/') {
        p++;
        size_t n = 0;
        while (*p && *p != '/') {
            char c = *p++;
            if (c == '~') {
                if (*p == '0')
                    c = '~';
                else if (*p == '1')
                    c = '/';
                else
                    return NULL;
                p++;
            }
            if (n + 1 >= sizeof(token))
                return NULL;
            token[n++] = c;
        }
        token[n] = '\0';
        if (json_is_object(cur)) {
            cur = json_object_get(cur, token);
        } else if (json_is_array(cur)) {
            char *end;
            if (!n || (n > 1 && token[0] == '0'))
                return NULL;
            unsigned long idx = strtoul(token, &end, 10);
            if (*end)
                return NULL;
            cur = json_array_get(cur, idx);
        } else {
            return NULL;
        }
    }
    return *p ? NULL : cur;
}

typedef struct {
    const kpb_record_t *rec;
    json_t *doc;      /* the parsed value, when parsed */
    int parsed;       /* tried already */
    kpb_reason_t bad; /* why the value is not JSON */
    char *detail;
    size_t detail_size;
} decode_ctx_t;

static kpb_reason_t value_text_check(const char *s, size_t n) {
    if (memchr(s, '\0', n))
        return KPB_REASON_NUL_BYTE;
    if (!kpb_utf8_valid(s, n))
        return KPB_REASON_INVALID_UTF8;
    return KPB_REASON_NONE;
}

static json_t *value_json(decode_ctx_t *ctx) {
    if (ctx->parsed)
        return ctx->doc;
    ctx->parsed = 1;
    const kpb_record_t *rec = ctx->rec;
    if (!rec->value) {
        ctx->bad = KPB_REASON_NO_PAYLOAD;
        snprintf(ctx->detail, ctx->detail_size, "the record value is null");
        return NULL;
    }
    kpb_reason_t r = value_text_check(rec->value, rec->value_len);
    if (r) {
        ctx->bad = r;
        snprintf(ctx->detail, ctx->detail_size, "the record value %s",
                 r == KPB_REASON_NUL_BYTE ? "holds a NUL byte"
                                          : "is not valid UTF-8");
        return NULL;
    }
    json_error_t err;
    ctx->doc = json_loadb(rec->value, rec->value_len, JSON_DECODE_ANY, &err);
    if (!ctx->doc) {
        /* jansson refuses \u0000 (JSON_ALLOW_NUL is off), as jsonb does. */
        ctx->bad = strstr(err.text, "\\u0000") ? KPB_REASON_NUL_BYTE
                                               : KPB_REASON_INVALID_JSON;
        snprintf(ctx->detail, ctx->detail_size,
                 "the record value is not JSON: %s at position %d", err.text,
                 err.position);
    }
    return ctx->doc;
}

/* Resolves a text field.  Returns 1 found, 0 absent, -1 bad (ctx reason). */
static int field_text(decode_ctx_t *ctx, const kpb_src_t *src,
                      kpb_arena_t *arena, const char **out, size_t *len,
                      kpb_reason_t *why) {
    const kpb_record_t *rec = ctx->rec;
    switch (src->kind) {
    case KPB_SRC_NONE:
        return 0;
    case KPB_SRC_KEY:
        if (!rec->key)
            return 0;
        *out = rec->key;
        *len = rec->key_len;
        return 1;
    case KPB_SRC_VALUE:
        if (!rec->value)
            return 0;
        *out = rec->value;
        *len = rec->value_len;
        return 1;
    case KPB_SRC_CONST:
        *out = src->arg;
        *len = strlen(src->arg);
        return 1;
    case KPB_SRC_HEADER: {
        const kpb_header_t *h = find_header(rec, src->arg);
        if (!h || !h->value)
            return 0;
        *out = h->value;
        *len = h->len;
        return 1;
    }
    case KPB_SRC_JSON: {
        json_t *doc = value_json(ctx);
        if (!doc) {
            *why = ctx->bad;
            return -1;
        }
        json_t *v = json_pointer(doc, src->arg);
        if (!v || json_is_null(v))
            return 0;
        if (json_is_string(v)) {
            *out = kpb_arena_strndup(arena, json_string_value(v),
                                     json_string_length(v));
            *len = json_string_length(v);
            return 1;
        }
        if (json_is_integer(v)) {
            char num[32];
            int n = snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT,
                             json_integer_value(v));
            *out = kpb_arena_strndup(arena, num, (size_t)n);
            *len = (size_t)n;
            return 1;
        }
        *why = KPB_REASON_INVALID_JSON;
        snprintf(ctx->detail, ctx->detail_size,
                 "%s is not a string or an integer", src->arg);
        return -1;
    }
    }
    return 0;
}

static void src_name(const kpb_src_t *src, char *out, size_t size) {
    static const char *kinds[] = {"none", "key", "value", "header:",
                                  "json:", "const:"};
    snprintf(out, size, "%s%s", kinds[src->kind], src->arg ? src->arg : "");
}

static int stream_id_ok(const char *s, size_t n, char *detail, size_t size) {
    size_t a = 0, b = n;
    while (a < b && (s[a] == ' ' || s[a] == '\t' || s[a] == '\n' ||
                     s[a] == '\r'))
        a++;
    while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t' ||
                     s[b - 1] == '\n' || s[b - 1] == '\r'))
        b--;
    if (a == b) {
        snprintf(detail, size, "the stream id is empty");
        return 0;
    }
    if (n > KPB_STREAM_ID_MAX) {
        snprintf(detail, size, "the stream id is %zu bytes, over %d", n,
                 KPB_STREAM_ID_MAX);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (strchr("*?[]", s[i]) && s[i]) {
            snprintf(detail, size,
                     "the stream id holds '%c' (eventcore reserves * ? [ ])",
                     s[i]);
            return 0;
        }
    }
    return 1;
}

static int parse_version(const char *s, size_t n, int64_t *out) {
    if (n == 0 || n > 18)
        return -1;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

static size_t record_size(const kpb_record_t *rec) {
    size_t n = rec->key_len + rec->value_len;
    for (size_t i = 0; i < rec->header_cnt; i++)
        n += strlen(rec->headers[i].name) + rec->headers[i].len;
    return n;
}

kpb_reason_t kpb_decode(const kpb_topic_t *topic, const kpb_record_t *rec,
                        size_t max_record_bytes, kpb_arena_t *arena,
                        kpb_event_t *ev, char *detail, size_t detail_size) {
    decode_ctx_t ctx = {.rec = rec, .detail = detail,
                        .detail_size = detail_size};
    kpb_reason_t why = KPB_REASON_NONE;
    char what[300];
    const char *s = NULL;
    size_t n = 0;
    int found;

    memset(ev, 0, sizeof(*ev));
    ev->expected_version = -1;
    detail[0] = '\0';

    /* metadata first: a dead letter keeps the headers it carries */
    kpb_buf_t md;
    kpb_buf_init(&md);
    kpb_buf_puts(&md, "{\"kafka\":{\"topic\":\"");
    kpb_buf_json_escape(&md, rec->topic, strlen(rec->topic));
    kpb_buf_printf(&md, "\",\"partition\":%d,\"offset\":%lld",
                   (int)rec->partition, (long long)rec->offset);
    if (rec->timestamp >= 0)
        kpb_buf_printf(&md, ",\"timestamp\":%lld", (long long)rec->timestamp);
    kpb_buf_puts(&md, "},\"headers\":");
    kpb_headers_json(&md, rec->headers, rec->header_cnt);
    kpb_buf_putc(&md, '}');
    ev->metadata = kpb_arena_strndup(arena, md.data, md.len);
    ev->metadata_len = md.len;
    kpb_buf_fini(&md);

    size_t size = record_size(rec);
    if (max_record_bytes && size > max_record_bytes) {
        snprintf(detail, detail_size, "the record is %zu bytes, over %zu",
                 size, max_record_bytes);
        why = KPB_REASON_TOO_LARGE;
        goto out;
    }

    /* stream id */
    found = field_text(&ctx, &topic->stream_id, arena, &s, &n, &why);
    if (found < 0)
        goto out;
    if (!found) {
        src_name(&topic->stream_id, what, sizeof(what));
        snprintf(detail, detail_size, "no stream id at %s", what);
        why = KPB_REASON_NO_STREAM_ID;
        goto out;
    }
    if ((why = value_text_check(s, n))) {
        snprintf(detail, detail_size, "the stream id %s",
                 why == KPB_REASON_NUL_BYTE ? "holds a NUL byte"
                                            : "is not valid UTF-8");
        goto out;
    }
    if (!stream_id_ok(s, n, detail, detail_size)) {
        why = KPB_REASON_BAD_STREAM_ID;
        goto out;
    }
    ev->stream_id = s;
    ev->stream_id_len = n;

    /* event type */
    found = field_text(&ctx, &topic->event_type, arena, &s, &n, &why);
    if (found < 0)
        goto out;
    if (!found || n == 0) {
        src_name(&topic->event_type, what, sizeof(what));
        snprintf(detail, detail_size, "no event type at %s", what);
        why = KPB_REASON_NO_EVENT_TYPE;
        goto out;
    }
    if ((why = value_text_check(s, n))) {
        snprintf(detail, detail_size, "the event type %s",
                 why == KPB_REASON_NUL_BYTE ? "holds a NUL byte"
                                            : "is not valid UTF-8");
        goto out;
    }
    ev->event_type = s;
    ev->event_type_len = n;

    /* event id: a fresh UUIDv7 unless the record names one */
    found = field_text(&ctx, &topic->event_id, arena, &s, &n, &why);
    if (found < 0)
        goto out;
    if (found) {
        char text[40];
        if (n >= sizeof(text) || (memcpy(text, s, n), text[n] = '\0',
                                  uuid_parse(text, ev->event_id) != 0)) {
            snprintf(detail, detail_size, "the event id %.*s is not a UUID",
                     (int)(n > 64 ? 64 : n), s);
            why = KPB_REASON_BAD_EVENT_ID;
            goto out;
        }
    } else {
        kpb_uuid7(ev->event_id);
    }

    /* expected version */
    found = field_text(&ctx, &topic->expected_version, arena, &s, &n, &why);
    if (found < 0)
        goto out;
    if (found && parse_version(s, n, &ev->expected_version)) {
        snprintf(detail, detail_size,
                 "the expected version %.*s is not a non-negative integer",
                 (int)(n > 64 ? 64 : n), s);
        why = KPB_REASON_BAD_EXPECTED_VERSION;
        goto out;
    }

    /* payload: always checked to be JSON here, so that one bad value costs
     * a dead letter instead of a failed statement and a bisection. */
    json_t *doc = value_json(&ctx);
    if (!doc) {
        why = ctx.bad;
        goto out;
    }
    if (topic->payload.kind == KPB_SRC_JSON) {
        json_t *v = json_pointer(doc, topic->payload.arg);
        if (!v) {
            snprintf(detail, detail_size, "no payload at json:%s",
                     topic->payload.arg);
            why = KPB_REASON_NO_PAYLOAD;
            goto out;
        }
        char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        n = strlen(text);
        ev->payload = kpb_arena_strndup(arena, text, n);
        ev->payload_len = n;
        free(text);
    } else {
        ev->payload = rec->value;
        ev->payload_len = rec->value_len;
    }

out:
    if (ctx.doc)
        json_decref(ctx.doc);
    return why;
}

static void base64(kpb_buf_t *buf, const unsigned char *s, size_t n) {
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)s[i + 1] << 8;
        if (i + 2 < n)
            v |= s[i + 2];
        char out[4] = {tbl[(v >> 18) & 63], tbl[(v >> 12) & 63],
                       i + 1 < n ? tbl[(v >> 6) & 63] : '=',
                       i + 2 < n ? tbl[v & 63] : '='};
        kpb_buf_append(buf, out, 4);
    }
}

void kpb_headers_json(kpb_buf_t *buf, const kpb_header_t *headers,
                      size_t cnt) {
    kpb_buf_putc(buf, '{');
    for (size_t i = 0; i < cnt; i++) {
        const kpb_header_t *h = &headers[i];
        size_t nlen = strlen(h->name);
        if (i)
            kpb_buf_putc(buf, ',');
        kpb_buf_putc(buf, '"');
        if (kpb_utf8_valid(h->name, nlen))
            kpb_buf_json_escape(buf, h->name, nlen);
        else
            base64(buf, (const unsigned char *)h->name, nlen);
        kpb_buf_puts(buf, "\":");
        if (!h->value) {
            kpb_buf_puts(buf, "null");
        } else if (kpb_utf8_valid(h->value, h->len)) {
            kpb_buf_putc(buf, '"');
            kpb_buf_json_escape(buf, h->value, h->len);
            kpb_buf_putc(buf, '"');
        } else {
            kpb_buf_puts(buf, "{\"base64\":\"");
            base64(buf, h->value, h->len);
            kpb_buf_puts(buf, "\"}");
        }
    }
    kpb_buf_putc(buf, '}');
}
