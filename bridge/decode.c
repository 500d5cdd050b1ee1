#include "decode.h"

#include <errno.h>
#include <pthread.h>
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

/*
 * Random bytes for event ids come from a per-thread pool refilled with one
 * getrandom() per 409 ids: a syscall per event cost a fifth of kpbridge's
 * CPU (measured with perf on the uniform workload).  A forked child must
 * not hand out its parent's bytes again, so fork empties every pool.
 */
#define RND_POOL 4096
static _Thread_local unsigned char rnd_pool[RND_POOL];
static _Thread_local size_t rnd_left;
static volatile unsigned rnd_generation; /* bumped in a forked child */
static _Thread_local unsigned rnd_seen;
static pthread_once_t rnd_once = PTHREAD_ONCE_INIT;

static void rnd_forked(void) { rnd_generation++; }
static void rnd_register(void) { pthread_atfork(NULL, NULL, rnd_forked); }

static void rnd_bytes(unsigned char *out, size_t n) {
    pthread_once(&rnd_once, rnd_register);
    if (rnd_seen != rnd_generation) {
        rnd_seen = rnd_generation;
        rnd_left = 0;
    }
    if (rnd_left < n) {
        size_t got = 0;
        while (got < RND_POOL) {
            ssize_t r = getrandom(rnd_pool + got, RND_POOL - got, 0);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                abort(); /* the kernel's CSPRNG does not fail once booted */
            got += (size_t)r;
        }
        rnd_left = RND_POOL;
    }
    memcpy(out, rnd_pool + RND_POOL - rnd_left, n);
    /* used bytes are wiped: nothing keeps a copy of an id's randomness */
    memset(rnd_pool + RND_POOL - rnd_left, 0, n);
    rnd_left -= n;
}

void kpb_uuid7(unsigned char out[16]) {
    uint64_t ms = (uint64_t)kpb_wall_ms();
    unsigned char rnd[10];
    rnd_bytes(rnd, sizeof(rnd));
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

/*
 * JSON is checked and walked on the record's own bytes rather than through a
 * parsed tree.  A tree library would do for checking, except that jansson
 * refuses numbers that jsonb takes (integers past int64, reals past double:
 * valid events would become dead letters) and prints back the ones it keeps
 * differently (0.1 as 0.10000000000000001, 1E2 as 100.0): a payload taken
 * with json:/pointer must reach the database as the producer wrote it.  So
 * the value is checked against RFC 8259 as PostgreSQL's json parser does
 * (no \u0000, no unpaired surrogate escapes), and a pointer resolves to the
 * byte range of its value in the original text.
 */
#define KPB_JSON_MAX_DEPTH 2048

typedef struct {
    const char *p, *start, *end;
    kpb_reason_t bad;
    const char *err;
} jscan_t;

static void j_ws(jscan_t *s) {
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' ||
                             *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int j_fail(jscan_t *s, kpb_reason_t why, const char *err) {
    s->bad = why;
    s->err = err;
    return -1;
}

static int j_hex4(const char *p, const char *end, unsigned *out) {
    if (end - p < 4)
        return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* A string at s->p (its opening quote); the bytes are valid UTF-8 already. */
static int j_string(jscan_t *s) {
    s->p++;
    while (s->p < s->end) {
        unsigned char c = (unsigned char)*s->p;
        if (c == '"') {
            s->p++;
            return 0;
        }
        if (c < 0x20)
            return j_fail(s, KPB_REASON_INVALID_JSON,
                          "unescaped control character in a string");
        if (c != '\\') {
            s->p++;
            continue;
        }
        if (s->end - s->p < 2)
            break;
        c = (unsigned char)s->p[1];
        if (c == 'u') {
            unsigned cp, lo;
            if (j_hex4(s->p + 2, s->end, &cp))
                return j_fail(s, KPB_REASON_INVALID_JSON,
                              "invalid \\u escape");
            s->p += 6;
            if (cp == 0)
                return j_fail(s, KPB_REASON_NUL_BYTE,
                              "\\u0000 is not allowed (jsonb refuses it)");
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return j_fail(s, KPB_REASON_INVALID_JSON,
                              "unpaired low surrogate escape");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (s->end - s->p < 6 || s->p[0] != '\\' || s->p[1] != 'u' ||
                    j_hex4(s->p + 2, s->end, &lo) || lo < 0xDC00 ||
                    lo > 0xDFFF)
                    return j_fail(s, KPB_REASON_INVALID_JSON,
                                  "unpaired high surrogate escape");
                s->p += 6;
            }
        } else if (c && strchr("\"\\/bfnrt", c)) {
            s->p += 2;
        } else {
            return j_fail(s, KPB_REASON_INVALID_JSON, "invalid escape");
        }
    }
    return j_fail(s, KPB_REASON_INVALID_JSON, "unterminated string");
}

/*
 * jsonb keeps numbers as numeric, which refuses some that RFC 8259 allows,
 * with "value overflows numeric format" (SQLSTATE 22003).  Letting them
 * through costs a failed statement and a bisection per record, so they are
 * refused here, at exactly numeric's limits, measured with 'X'::jsonb on
 * PostgreSQL 15.18:
 *   - the first significant digit sits at 10^131071 at most (the weight is
 *     an int16 count of base-10000 digits): 1e131071, 9.999e131071,
 *     10e131070, 0.5e131072 and a 131072-digit integer are taken; 1e131072,
 *     10e131071, 0.5e131073 and a 131073-digit integer are refused;
 *   - the digits after the point as written (trailing zeros count), less
 *     the exponent, are 16383 at most (the display scale is 14 bits), zero
 *     included: 1e-16383, 1.000e-16380, 0e-16383 and a 16383-digit fraction
 *     are taken; 1e-16384, 1.000e-16381, 10e-16384, 0e-16384 and a
 *     16384-digit fraction are refused;
 *   - an exponent of INT_MAX / 2 or more either way is refused before
 *     either check: 0e1073741822 is taken, 0e1073741823 refused.
 */
#define J_NUMERIC_MAX_WEIGHT 131071
#define J_NUMERIC_MAX_SCALE 16383
#define J_NUMERIC_MAX_EXPONENT 1073741822

#define J_DIGIT(p, e) ((p) < (e) && *(p) >= '0' && *(p) <= '9')

/* The exponent's digits at *pp, as many as the record holds: past
 * numeric's limit the value stays one above it, which is refused alike. */
static int64_t j_exponent(const char **pp, const char *e) {
    const char *p = *pp;
    int64_t exp = 0;
    while (J_DIGIT(p, e)) {
        if (exp <= J_NUMERIC_MAX_EXPONENT)
            exp = exp * 10 + (*p - '0');
        p++;
    }
    *pp = p;
    return exp > J_NUMERIC_MAX_EXPONENT ? J_NUMERIC_MAX_EXPONENT + 1 : exp;
}

/* Whether numeric takes the digits ip[0..in).fp[0..fn) times 10^exp; see
 * above.  in >= 1, and ip is "0" or starts with a significant digit. */
static int j_numeric_fits(const char *ip, size_t in, const char *fp, size_t fn,
                          int64_t exp) {
    if (exp > J_NUMERIC_MAX_EXPONENT || exp < -J_NUMERIC_MAX_EXPONENT)
        return 0;
    /* digit counts are sizes of one buffer: far below 2^63, no overflow */
    if ((int64_t)fn - exp > J_NUMERIC_MAX_SCALE)
        return 0;
    int64_t lead; /* the power of ten of the first significant digit */
    if (*ip != '0') {
        lead = (int64_t)in - 1;
    } else {
        size_t i = 0;
        while (i < fn && fp[i] == '0')
            i++;
        if (i == fn)
            return 1; /* zero has no weight */
        lead = -(int64_t)i - 1;
    }
    return lead + exp <= J_NUMERIC_MAX_WEIGHT;
}

static int j_number(jscan_t *s) {
    const char *p = s->p, *e = s->end;
    if (p < e && *p == '-')
        p++;
    const char *ip = p;
    if (J_DIGIT(p, e) && *p == '0') {
        p++;
    } else if (J_DIGIT(p, e)) {
        while (J_DIGIT(p, e))
            p++;
    } else {
        return j_fail(s, KPB_REASON_INVALID_JSON, "invalid number");
    }
    size_t in = (size_t)(p - ip), fn = 0;
    const char *fp = p;
    if (p < e && *p == '.') {
        fp = ++p;
        if (!J_DIGIT(p, e))
            return j_fail(s, KPB_REASON_INVALID_JSON, "invalid number");
        while (J_DIGIT(p, e))
            p++;
        fn = (size_t)(p - fp);
    }
    int64_t exp = 0;
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        int neg = p < e && *p == '-';
        if (p < e && (*p == '+' || *p == '-'))
            p++;
        if (!J_DIGIT(p, e))
            return j_fail(s, KPB_REASON_INVALID_JSON, "invalid number");
        exp = j_exponent(&p, e);
        if (neg)
            exp = -exp;
    }
    if (!j_numeric_fits(ip, in, fp, fn, exp))
        return j_fail(s, KPB_REASON_INVALID_JSON,
                      "number out of jsonb's (numeric's) range");
    s->p = p;
    return 0;
}

static int j_literal(jscan_t *s, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n))
        return j_fail(s, KPB_REASON_INVALID_JSON, "invalid literal");
    s->p += n;
    return 0;
}

/* One value, with the whitespace before it. */
static int j_value(jscan_t *s, int depth) {
    j_ws(s);
    if (s->p >= s->end)
        return j_fail(s, KPB_REASON_INVALID_JSON, "unexpected end of input");
    char open = *s->p;
    switch (open) {
    case '{':
    case '[': {
        char close = open == '{' ? '}' : ']';
        if (depth >= KPB_JSON_MAX_DEPTH)
            return j_fail(s, KPB_REASON_INVALID_JSON, "nested too deeply");
        s->p++;
        j_ws(s);
        if (s->p < s->end && *s->p == close) {
            s->p++;
            return 0;
        }
        for (;;) {
            if (open == '{') {
                j_ws(s);
                if (s->p >= s->end || *s->p != '"')
                    return j_fail(s, KPB_REASON_INVALID_JSON,
                                  "expected a member name");
                if (j_string(s))
                    return -1;
                j_ws(s);
                if (s->p >= s->end || *s->p != ':')
                    return j_fail(s, KPB_REASON_INVALID_JSON,
                                  "expected ':'");
                s->p++;
            }
            if (j_value(s, depth + 1))
                return -1;
            j_ws(s);
            if (s->p < s->end && *s->p == ',') {
                s->p++;
                continue;
            }
            if (s->p < s->end && *s->p == close) {
                s->p++;
                return 0;
            }
            return j_fail(s, KPB_REASON_INVALID_JSON,
                          open == '{' ? "expected ',' or '}'"
                                      : "expected ',' or ']'");
        }
    }
    case '"':
        return j_string(s);
    case 't':
        return j_literal(s, "true");
    case 'f':
        return j_literal(s, "false");
    case 'n':
        return j_literal(s, "null");
    default:
        if (open == '-' || (open >= '0' && open <= '9'))
            return j_number(s);
        return j_fail(s, KPB_REASON_INVALID_JSON, "unexpected character");
    }
}

/* The end of the (already checked) value that starts at p. */
static const char *j_skip(const char *p, const char *end) {
    jscan_t s = {.p = p, .start = p, .end = end};
    (void)j_value(&s, 0);
    return s.p;
}

static void utf8_put(kpb_buf_t *b, unsigned cp) {
    char o[4];
    size_t n;
    if (cp < 0x80) {
        o[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        o[0] = (char)(0xF0 | (cp >> 18));
        o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    kpb_buf_append(b, o, n);
}

/* Appends the text of the (checked) string literal [qs, qe) to b. */
static void j_unescape(kpb_buf_t *b, const char *qs, const char *qe) {
    const char *p = qs + 1, *e = qe - 1;
    while (p < e) {
        const char *bs = memchr(p, '\\', (size_t)(e - p));
        if (!bs) {
            kpb_buf_append(b, p, (size_t)(e - p));
            break;
        }
        kpb_buf_append(b, p, (size_t)(bs - p));
        char c = bs[1];
        p = bs + 2;
        switch (c) {
        case 'b':
            kpb_buf_putc(b, '\b');
            break;
        case 'f':
            kpb_buf_putc(b, '\f');
            break;
        case 'n':
            kpb_buf_putc(b, '\n');
            break;
        case 'r':
            kpb_buf_putc(b, '\r');
            break;
        case 't':
            kpb_buf_putc(b, '\t');
            break;
        case 'u': {
            unsigned cp = 0, lo = 0;
            (void)j_hex4(p, e, &cp);
            p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                (void)j_hex4(p + 2, e, &lo);
                p += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            utf8_put(b, cp);
            break;
        }
        default: /* " \ / */
            kpb_buf_putc(b, c);
        }
    }
}

/*
 * RFC 6901 on the checked document: "/a/0/b~1c" walks objects by member
 * name (the last of duplicate names wins, as in jsonb) and arrays by index.
 * Returns the first byte of the value and sets *vend past it, or NULL.
 */
static const char *j_pointer(const char *doc, size_t len, const char *ptr,
                             const char **vend) {
    const char *end = doc + len, *v = NULL;
    jscan_t s = {.p = doc, .start = doc, .end = end};
    kpb_buf_t tok, key;
    kpb_buf_init(&tok);
    kpb_buf_init(&key);
    j_ws(&s);
    v = s.p;
    while (v && *ptr == '/') {
        ptr++;
        kpb_buf_reset(&tok);
        kpb_buf_reserve(&tok, 0);
        while (*ptr && *ptr != '/') {
            char c = *ptr++;
            if (c == '~') {
                if (*ptr != '0' && *ptr != '1') {
                    v = NULL;
                    goto out;
                }
                c = *ptr++ == '0' ? '~' : '/';
            }
            kpb_buf_putc(&tok, c);
        }
        const char *found = NULL;
        s.p = v;
        if (*v == '{') {
            s.p++;
            j_ws(&s);
            while (*s.p != '}') {
                j_ws(&s);
                const char *ks = s.p;
                (void)j_string(&s);
                kpb_buf_reset(&key);
                j_unescape(&key, ks, s.p);
                int match = key.len == tok.len &&
                            (!key.len || !memcmp(key.data, tok.data, key.len));
                j_ws(&s);
                s.p++; /* ':' */
                j_ws(&s);
                if (match)
                    found = s.p;
                s.p = j_skip(s.p, end);
                j_ws(&s);
                if (*s.p == ',')
                    s.p++;
            }
        } else if (*v == '[') {
            /* An index is "0" or digits without a leading zero. */
            size_t n = tok.len;
            unsigned long long idx = 0;
            if (!n || n > 19 || (n > 1 && tok.data[0] == '0')) {
                v = NULL;
                goto out;
            }
            for (size_t i = 0; i < n; i++) {
                if (tok.data[i] < '0' || tok.data[i] > '9') {
                    v = NULL;
                    goto out;
                }
                idx = idx * 10 + (unsigned)(tok.data[i] - '0');
            }
            s.p++;
            j_ws(&s);
            for (unsigned long long i = 0; *s.p != ']'; i++) {
                j_ws(&s);
                if (i == idx) {
                    found = s.p;
                    break;
                }
                s.p = j_skip(s.p, end);
                j_ws(&s);
                if (*s.p == ',')
                    s.p++;
            }
        }
        v = found;
    }
    if (v && *ptr)
        v = NULL; /* not a pointer: it must start with '/' */
    if (v)
        *vend = j_skip(v, end);
out:
    kpb_buf_fini(&tok);
    kpb_buf_fini(&key);
    return v;
}

typedef struct {
    const kpb_record_t *rec;
    int checked;      /* the value was checked already */
    int json_ok;      /* and is JSON */
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

/* Checks once that the record value is JSON jsonb takes; 1 when it is. */
static int value_json(decode_ctx_t *ctx) {
    if (ctx->checked)
        return ctx->json_ok;
    ctx->checked = 1;
    const kpb_record_t *rec = ctx->rec;
    if (!rec->value) {
        ctx->bad = KPB_REASON_NO_PAYLOAD;
        snprintf(ctx->detail, ctx->detail_size, "the record value is null");
        return 0;
    }
    kpb_reason_t r = value_text_check(rec->value, rec->value_len);
    if (r) {
        ctx->bad = r;
        snprintf(ctx->detail, ctx->detail_size, "the record value %s",
                 r == KPB_REASON_NUL_BYTE ? "holds a NUL byte"
                                          : "is not valid UTF-8");
        return 0;
    }
    jscan_t s = {.p = rec->value, .start = rec->value,
                 .end = (const char *)rec->value + rec->value_len};
    if (!j_value(&s, 0)) {
        j_ws(&s);
        if (s.p != s.end)
            j_fail(&s, KPB_REASON_INVALID_JSON,
                   "end of input expected after the value");
    }
    if (s.err) {
        ctx->bad = s.bad;
        snprintf(ctx->detail, ctx->detail_size,
                 "the record value is not JSON: %s at position %zu", s.err,
                 (size_t)(s.p - s.start));
        return 0;
    }
    ctx->json_ok = 1;
    return 1;
}

/* Resolves a text field.  Returns 1 found, 0 absent, -1 bad (*why set). */
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
        if (!value_json(ctx)) {
            *why = ctx->bad;
            return -1;
        }
        const char *ve = NULL;
        const char *v = j_pointer(rec->value, rec->value_len, src->arg, &ve);
        if (!v || *v == 'n')
            return 0; /* missing, or null */
        size_t vn = (size_t)(ve - v);
        if (*v == '"') {
            if (!memchr(v, '\\', vn)) {
                /* no escapes: the text is the record's own bytes */
                *out = v + 1;
                *len = vn - 2;
                return 1;
            }
            kpb_buf_t text;
            kpb_buf_init(&text);
            j_unescape(&text, v, ve);
            *out = kpb_arena_strndup(arena, text.data ? text.data : "",
                                     text.len);
            *len = text.len;
            kpb_buf_fini(&text);
            return 1;
        }
        if ((*v == '-' || (*v >= '0' && *v <= '9')) &&
            !memchr(v, '.', vn) && !memchr(v, 'e', vn) &&
            !memchr(v, 'E', vn)) {
            /* an integer, as written: any size, no float round trip */
            *out = v;
            *len = vn;
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
    if (!value_json(&ctx)) {
        why = ctx.bad;
        goto out;
    }
    if (topic->payload.kind == KPB_SRC_JSON) {
        const char *ve = NULL;
        const char *v = j_pointer(rec->value, rec->value_len,
                                  topic->payload.arg, &ve);
        if (!v) {
            snprintf(detail, detail_size, "no payload at json:%s",
                     topic->payload.arg);
            why = KPB_REASON_NO_PAYLOAD;
            goto out;
        }
        /* the producer's own text of the value, numbers untouched */
        ev->payload = v;
        ev->payload_len = (size_t)(ve - v);
    } else {
        ev->payload = rec->value;
        ev->payload_len = rec->value_len;
    }

out:
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
