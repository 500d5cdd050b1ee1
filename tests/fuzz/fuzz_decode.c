/*
 * fuzz_decode.c - libFuzzer target for kpb_decode().
 *
 * Input layout (every part optional but the first three bytes):
 *
 *   byte 0   stream_id source (bits 0-2) and event_type source (bits 3-5)
 *   byte 1   event_id (bits 0-1), expected_version (bits 2-3), payload
 *            (bits 4-5) sources, header count 0..3 (bits 6-7)
 *   byte 2   flags: max_record_bytes (bits 0-1), null key (2), null value
 *            (3), null first header value (4), small detail buffer (5),
 *            no timestamp (6); bit 7 unused.  Records past the arena's
 *            64 KiB block are left to tests/test_util.c: under ASan they
 *            cost the fuzzer eight times its speed for a dozen edges
 *   rest     parts separated by 0xFF (never a byte of UTF-8):
 *            key, value, header 1 name, header 1 value, header 2 name,
 *            header 2 value, header 3 name, header 3 value, JSON pointer
 *
 * Each part is copied into a heap block of exactly its size, so ASan sees a
 * read one byte past any field.  The topic mapping uses the sources the
 * config allows (key, header:NAME, json:/pointer, const:TEXT, value); the
 * pointer part, when it is one config.c would accept, replaces the fixed
 * pointers of the selectors that ask for it.
 *
 * Invariants, on top of the sanitizers' (a violation aborts):
 *   - every run: metadata is non-empty JSON text; the reason is one decode
 *     may give; on failure detail is non-empty and NUL-terminated in its
 *     buffer;
 *   - on success: stream_id is 1..255 bytes of UTF-8 without NUL, not blank
 *     and without * ? [ ]; event_type is non-empty UTF-8 without NUL;
 *     payload is JSON text and, from `value`, the value itself;
 *   - the scanner agrees with an independent RFC 8259 checker below on
 *     whether the record value is JSON (decoded a second time with only
 *     constants and the whole value, so nothing else can fail).
 * The arena is initialised and freed by each run, so LeakSanitizer sees any
 * allocation decode forgets.
 *
 * tests/test_fuzz_regressions.c includes this file (with the entry point
 * renamed) to run tests/fuzz/regressions/fuzz_decode/ through this code.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"

#define FD_PARTS 9
#define FD_SEP 0xFF
/* kpb_decode refuses JSON nested deeper than this; see decode.c. */
#define FD_JSON_MAX_DEPTH 2048

static void fd_die(const char *what, const char *detail) {
    fprintf(stderr, "fuzz_decode: invariant broken: %s\ndetail: %s\n", what,
            detail ? detail : "(none)");
    abort();
}

/* ---- an independent checker, deliberately written apart from decode.c -- */

/* Well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF), no NUL. */
static int fd_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;

    while (i < n) {
        unsigned char c = s[i];
        size_t need;
        unsigned char lo = 0x80, hi = 0xBF;

        if (c == 0)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            if (c == 0xE0)
                lo = 0xA0;
            if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            if (c == 0xF0)
                lo = 0x90;
            if (c == 0xF4)
                hi = 0x8F;
        } else {
            return 0;
        }
        if (n - i - 1 < need)
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k <= need; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return 0;
        i += need + 1;
    }
    return 1;
}

typedef struct {
    const unsigned char *p, *e;
    int depth, max_depth;
} fd_json_t;

static void fd_ws(fd_json_t *j) {
    while (j->p < j->e &&
           (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
}

static int fd_hex(const unsigned char *p, const unsigned char *e,
                  unsigned *out) {
    unsigned v = 0;

    if (e - p < 4)
        return 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        unsigned d;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            d = (unsigned)((c | 0x20) - 'a' + 10);
        else
            return 0;
        v = v * 16 + d;
    }
    *out = v;
    return 1;
}

static int fd_string(fd_json_t *j) {
    j->p++; /* '"' */
    for (;;) {
        unsigned cp;

        if (j->p >= j->e)
            return 0;
        if (*j->p == '"') {
            j->p++;
            return 1;
        }
        if (*j->p < 0x20)
            return 0;
        if (*j->p != '\\') {
            j->p++;
            continue;
        }
        if (j->e - j->p < 2)
            return 0;
        switch (j->p[1]) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
            j->p += 2;
            continue;
        case 'u':
            break;
        default:
            return 0;
        }
        if (!fd_hex(j->p + 2, j->e, &cp) || cp == 0)
            return 0; /* jsonb refuses \u0000 */
        j->p += 6;
        if (cp >= 0xDC00 && cp <= 0xDFFF)
            return 0;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            unsigned lo;
            if (j->e - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u' ||
                !fd_hex(j->p + 2, j->e, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                return 0;
            j->p += 6;
        }
    }
}

static int fd_digits(fd_json_t *j) {
    const unsigned char *s = j->p;
    while (j->p < j->e && *j->p >= '0' && *j->p <= '9')
        j->p++;
    return j->p > s;
}

/* jsonb's numeric refuses a first significant digit past 10^131071, more
 * than 16383 fraction digits once the exponent is applied, and exponents of
 * 1073741823 or more either way (measured on PostgreSQL 15). */
static int fd_number(fd_json_t *j) {
    const unsigned char *ip, *fp = NULL, *fe = NULL, *xp;
    long long in, fn = 0, exp = 0, lead;
    int neg = 0;

    if (*j->p == '-')
        j->p++;
    ip = j->p;
    if (j->p < j->e && *j->p == '0')
        j->p++;
    else if (!fd_digits(j))
        return 0;
    in = j->p - ip;
    if (j->p < j->e && *j->p == '.') {
        fp = ++j->p;
        if (!fd_digits(j))
            return 0;
        fe = j->p;
        fn = fe - fp;
    }
    if (j->p < j->e && (*j->p == 'e' || *j->p == 'E')) {
        j->p++;
        if (j->p < j->e && (*j->p == '+' || *j->p == '-'))
            neg = *j->p++ == '-';
        xp = j->p;
        if (!fd_digits(j))
            return 0;
        while (xp < j->p - 1 && *xp == '0')
            xp++;
        if (j->p - xp > 10)
            return 0;
        for (; xp < j->p; xp++)
            exp = exp * 10 + (*xp - '0');
        if (exp >= 1073741823)
            return 0;
        if (neg)
            exp = -exp;
    }
    if (fn - exp > 16383)
        return 0;
    if (*ip != '0')
        lead = in - 1;
    else {
        const unsigned char *q = fp;
        while (q && q < fe && *q == '0')
            q++;
        if (!q || q == fe)
            return 1; /* zero */
        lead = -(q - fp) - 1;
    }
    return lead + exp <= 131071;
}

static int fd_word(fd_json_t *j, const char *w) {
    size_t n = strlen(w);
    if ((size_t)(j->e - j->p) < n || memcmp(j->p, w, n) != 0)
        return 0;
    j->p += n;
    return 1;
}

static int fd_value(fd_json_t *j) {
    fd_ws(j);
    if (j->p >= j->e)
        return 0;
    switch (*j->p) {
    case '{':
    case '[': {
        unsigned char close = *j->p == '{' ? '}' : ']';
        int ok = 1;

        if (++j->depth > j->max_depth)
            j->max_depth = j->depth;
        if (j->depth > FD_JSON_MAX_DEPTH + 8)
            return 0; /* far past decode's limit: stop recursing */
        j->p++;
        fd_ws(j);
        if (j->p < j->e && *j->p == close) {
            j->p++;
            j->depth--;
            return 1;
        }
        for (;;) {
            if (close == '}') {
                fd_ws(j);
                if (j->p >= j->e || *j->p != '"' || !fd_string(j)) {
                    ok = 0;
                    break;
                }
                fd_ws(j);
                if (j->p >= j->e || *j->p != ':') {
                    ok = 0;
                    break;
                }
                j->p++;
            }
            if (!fd_value(j)) {
                ok = 0;
                break;
            }
            fd_ws(j);
            if (j->p < j->e && *j->p == ',') {
                j->p++;
                continue;
            }
            if (j->p < j->e && *j->p == close)
                j->p++;
            else
                ok = 0;
            break;
        }
        j->depth--;
        return ok;
    }
    case '"':
        return fd_string(j);
    case 't':
        return fd_word(j, "true");
    case 'f':
        return fd_word(j, "false");
    case 'n':
        return fd_word(j, "null");
    default:
        if (*j->p == '-' || (*j->p >= '0' && *j->p <= '9'))
            return fd_number(j);
        return 0;
    }
}

/* 1 when s[0..n) is one JSON text jsonb takes; *depth gets its nesting. */
static int fd_json(const char *s, size_t n, int *depth) {
    fd_json_t j = {(const unsigned char *)s, (const unsigned char *)s + n, 0,
                   0};
    int ok;

    if (!fd_utf8((const unsigned char *)s, n))
        return 0;
    ok = fd_value(&j);
    fd_ws(&j);
    if (depth)
        *depth = j.max_depth;
    return ok && j.p == j.e;
}

/* ---- the target --------------------------------------------------------- */

/* A copy of a part in a heap block of exactly its size (ASan sees overreads);
 * *name is a NUL-terminated copy, for header names and pointers. */
static void *fd_dup(const uint8_t *p, size_t n) {
    void *d = malloc(n);
    if (!d)
        d = malloc(1); /* malloc(0) may say NULL; NULL means a null field */
    if (!d)
        abort();
    if (n)
        memcpy(d, p, n);
    return d;
}

static char *fd_cstr(const uint8_t *p, size_t n) {
    char *d = malloc(n + 1);
    if (!d)
        abort();
    if (n)
        memcpy(d, p, n);
    d[n] = '\0';
    return d;
}

/* As config.c's cfg_json_pointer_ok: decode only ever sees such pointers. */
static int fd_pointer_ok(const char *s) {
    if (s[0] != '/')
        return 0;
    for (; *s; s++)
        if (s[0] == '~' && s[1] != '0' && s[1] != '1')
            return 0;
    return 1;
}

static int fd_in(const void *p, size_t n, const void *base, size_t len) {
    const char *c = p, *b = base;
    return base && c >= b && n <= len && (size_t)(c - b) <= len - n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* Static so that kpb_src_t.arg, a char *, can point at them. */
    static char a_h[] = "h", a_type[] = "type", a_id[] = "id", a_v[] = "v";
    static char a_a[] = "/a", a_a0b[] = "/a/0/b", a_root[] = "/";
    static char a_t[] = "/t", a_jid[] = "/id", a_jv[] = "/v", a_p[] = "/p";
    static char a_const[] = "OrderPlaced";
    const uint8_t *part[FD_PARTS] = {0};
    size_t part_len[FD_PARTS] = {0};
    void *key = NULL, *value = NULL;
    kpb_header_t headers[3];
    char *hname[3] = {0};
    void *hvalue[3] = {0};
    char *ptr = NULL;
    size_t hcnt, max_bytes, detail_size;
    kpb_topic_t topic, probe;
    kpb_record_t rec, probe_rec;
    kpb_arena_t arena;
    kpb_event_t ev;
    kpb_reason_t why;
    char detail[256];
    char *uptr;
    int depth = 0, value_is_json;

    if (size < 3)
        return 0;
    unsigned s0 = data[0], s1 = data[1], fl = data[2];

    /* Split the rest at 0xFF. */
    {
        size_t i = 3, k = 0;
        part[0] = data + 3;
        for (; i < size && k < FD_PARTS; i++) {
            if (data[i] == FD_SEP) {
                part_len[k] = (size_t)(data + i - part[k]);
                if (++k < FD_PARTS)
                    part[k] = data + i + 1;
            }
        }
        if (k < FD_PARTS)
            part_len[k] = (size_t)(data + size - part[k]);
        for (k++; k < FD_PARTS; k++)
            part[k] = NULL;
    }

    ptr = fd_cstr(part[8] ? part[8] : (const uint8_t *)"", part_len[8]);
    uptr = fd_pointer_ok(ptr) ? ptr : a_a;

    memset(&topic, 0, sizeof(topic));
    topic.name = "orders";
    topic.table = "eventcore_events";
    switch (s0 & 7) {
    case 0:
    case 6:
        topic.stream_id = (kpb_src_t){KPB_SRC_KEY, NULL};
        break;
    case 1:
        topic.stream_id = (kpb_src_t){KPB_SRC_HEADER, a_h};
        break;
    case 2:
        topic.stream_id = (kpb_src_t){KPB_SRC_JSON, a_a};
        break;
    case 3:
        topic.stream_id = (kpb_src_t){KPB_SRC_JSON, a_a0b};
        break;
    case 4:
        topic.stream_id = (kpb_src_t){KPB_SRC_JSON, a_root};
        break;
    default:
        topic.stream_id = (kpb_src_t){KPB_SRC_JSON, uptr};
    }
    switch ((s0 >> 3) & 7) {
    case 0:
    case 5:
        topic.event_type = (kpb_src_t){KPB_SRC_CONST, a_const};
        break;
    case 1:
        topic.event_type = (kpb_src_t){KPB_SRC_HEADER, a_type};
        break;
    case 2:
        topic.event_type = (kpb_src_t){KPB_SRC_JSON, a_t};
        break;
    case 3:
        topic.event_type = (kpb_src_t){KPB_SRC_JSON, a_a0b};
        break;
    case 4:
        topic.event_type = (kpb_src_t){KPB_SRC_HEADER, a_h};
        break;
    default:
        topic.event_type = (kpb_src_t){KPB_SRC_JSON, uptr};
    }
    switch (s1 & 3) {
    case 0:
        topic.event_id = (kpb_src_t){KPB_SRC_NONE, NULL};
        break;
    case 1:
        topic.event_id = (kpb_src_t){KPB_SRC_HEADER, a_id};
        break;
    case 2:
        topic.event_id = (kpb_src_t){KPB_SRC_JSON, a_jid};
        break;
    default:
        topic.event_id = (kpb_src_t){KPB_SRC_JSON, uptr};
    }
    switch ((s1 >> 2) & 3) {
    case 0:
        topic.expected_version = (kpb_src_t){KPB_SRC_NONE, NULL};
        break;
    case 1:
        topic.expected_version = (kpb_src_t){KPB_SRC_HEADER, a_v};
        break;
    case 2:
        topic.expected_version = (kpb_src_t){KPB_SRC_JSON, a_jv};
        break;
    default:
        topic.expected_version = (kpb_src_t){KPB_SRC_JSON, a_a0b};
    }
    switch ((s1 >> 4) & 3) {
    case 0:
        topic.payload = (kpb_src_t){KPB_SRC_VALUE, NULL};
        break;
    case 1:
        topic.payload = (kpb_src_t){KPB_SRC_JSON, a_p};
        break;
    case 2:
        topic.payload = (kpb_src_t){KPB_SRC_JSON, a_a};
        break;
    default:
        topic.payload = (kpb_src_t){KPB_SRC_JSON, uptr};
    }
    hcnt = (s1 >> 6) & 3;

    switch (fl & 3) {
    case 0:
        max_bytes = 0; /* no limit */
        break;
    case 1:
        max_bytes = 1024 * 1024; /* the default */
        break;
    case 2:
        max_bytes = 1024; /* the config's minimum */
        break;
    default:
        max_bytes = 16; /* below it: most records are too large */
    }
    detail_size = (fl & 0x20) ? 12 : sizeof(detail);

    if (!(fl & 0x04) && part[0])
        key = fd_dup(part[0], part_len[0]);
    if (!(fl & 0x08) && part[1])
        value = fd_dup(part[1], part_len[1]);
    else if (!(fl & 0x08))
        value = fd_dup(data, 0); /* no value part: an empty value */
    for (size_t i = 0; i < hcnt; i++) {
        const uint8_t *n = part[2 + 2 * i], *v = part[3 + 2 * i];
        hname[i] = fd_cstr(n ? n : (const uint8_t *)"", part_len[2 + 2 * i]);
        size_t vlen = v ? part_len[3 + 2 * i] : 0;
        if (!(i == 0 && (fl & 0x10)))
            hvalue[i] = fd_dup(v ? v : data, vlen);
        headers[i].name = hname[i];
        headers[i].value = hvalue[i];
        headers[i].len = hvalue[i] ? vlen : 0;
    }

    memset(&rec, 0, sizeof(rec));
    rec.topic = "orders";
    rec.partition = (int32_t)(s0 >> 6);
    rec.offset = (int64_t)size * 1000003;
    rec.timestamp = (fl & 0x40) ? -1 : 1700000000000 + (int64_t)s1;
    rec.key = key;
    rec.key_len = key ? part_len[0] : 0;
    rec.value = value;
    rec.value_len = value ? part_len[1] : 0;
    rec.headers = hcnt ? headers : NULL;
    rec.header_cnt = hcnt;

    kpb_arena_init(&arena);
    memset(detail, 'X', sizeof(detail));
    why = kpb_decode(&topic, &rec, max_bytes, &arena, &ev, detail, detail_size);

    if (!memchr(detail, '\0', detail_size))
        fd_die("detail is not NUL-terminated in its buffer", NULL);
    if (!ev.metadata || ev.metadata_len == 0 ||
        strlen(ev.metadata) != ev.metadata_len ||
        !fd_json(ev.metadata, ev.metadata_len, NULL))
        fd_die("metadata is not JSON text", ev.metadata);
    if ((int)why < 0 || why >= KPB_REASON__CNT ||
        why == KPB_REASON_VERSION_CONFLICT || why == KPB_REASON_REJECTED)
        fd_die("decode gave a reason it must not give", kpb_reason_name(why));
    if (why != KPB_REASON_NONE && !detail[0])
        fd_die("a refused record without a detail", kpb_reason_name(why));

    if (why == KPB_REASON_NONE) {
        int is_blank = 1;

        if (detail[0])
            fd_die("detail set on success", detail);
        if (!ev.stream_id || ev.stream_id_len < 1 ||
            ev.stream_id_len > KPB_STREAM_ID_MAX ||
            !fd_utf8((const unsigned char *)ev.stream_id, ev.stream_id_len))
            fd_die("stream_id is not 1..255 bytes of UTF-8 without NUL", NULL);
        for (size_t i = 0; i < ev.stream_id_len; i++) {
            char c = ev.stream_id[i];
            if (c == '*' || c == '?' || c == '[' || c == ']')
                fd_die("stream_id holds a reserved character", NULL);
            if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
                is_blank = 0;
        }
        if (is_blank)
            fd_die("stream_id is blank", NULL);
        if (!ev.event_type || ev.event_type_len < 1 ||
            !fd_utf8((const unsigned char *)ev.event_type, ev.event_type_len))
            fd_die("event_type is not non-empty UTF-8 without NUL", NULL);
        if (!ev.payload || ev.payload_len < 1 ||
            !fd_json(ev.payload, ev.payload_len, NULL))
            fd_die("payload is not JSON text", NULL);
        if (topic.payload.kind == KPB_SRC_VALUE &&
            (ev.payload != rec.value || ev.payload_len != rec.value_len))
            fd_die("payload from value is not the value", NULL);
        if (topic.payload.kind == KPB_SRC_JSON &&
            !fd_in(ev.payload, ev.payload_len, rec.value, rec.value_len))
            fd_die("payload from json: is not inside the value", NULL);
        if (ev.expected_version < -1 ||
            (topic.expected_version.kind == KPB_SRC_NONE &&
             ev.expected_version != -1))
            fd_die("expected_version out of range", NULL);
        if (topic.event_id.kind == KPB_SRC_NONE &&
            ((ev.event_id[6] >> 4) != 7 || (ev.event_id[8] >> 6) != 2))
            fd_die("a generated event id is not a UUIDv7", NULL);
        if (max_bytes && rec.key_len + rec.value_len > max_bytes)
            fd_die("a record over max_record_bytes was taken", NULL);
    }

    /* The scanner against the checker above, on the whole value. */
    probe = topic;
    probe.stream_id = (kpb_src_t){KPB_SRC_CONST, a_const};
    probe.event_type = (kpb_src_t){KPB_SRC_CONST, a_const};
    probe.event_id = (kpb_src_t){KPB_SRC_NONE, NULL};
    probe.expected_version = (kpb_src_t){KPB_SRC_NONE, NULL};
    probe.payload = (kpb_src_t){KPB_SRC_VALUE, NULL};
    probe_rec = rec;
    probe_rec.headers = NULL; /* nothing to do with the value: saves time */
    probe_rec.header_cnt = 0;
    why =
        kpb_decode(&probe, &probe_rec, 0, &arena, &ev, detail, sizeof(detail));
    value_is_json = rec.value && fd_json(rec.value, rec.value_len, &depth);
    if (depth < FD_JSON_MAX_DEPTH - 2 &&
        (why == KPB_REASON_NONE) != value_is_json) {
        fprintf(stderr, "fuzz_decode: scanner says %s, checker says %s\n",
                kpb_reason_name(why), value_is_json ? "JSON" : "not JSON");
        fd_die("the scanner and the checker disagree", detail);
    }

    kpb_arena_reset(&arena);
    kpb_arena_fini(&arena);
    free(key);
    free(value);
    for (size_t i = 0; i < hcnt; i++) {
        free(hname[i]);
        free(hvalue[i]);
    }
    free(ptr);
    return 0;
}
