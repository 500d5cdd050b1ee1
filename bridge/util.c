#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void *kpb_xmalloc(size_t size) {
    void *p = malloc(size ? size : 1);
    if (!p) {
        fputs("kpbridge: out of memory\n", stderr);
        abort();
    }
    return p;
}

void *kpb_xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        fputs("kpbridge: out of memory\n", stderr);
        abort();
    }
    return p;
}

void *kpb_xrealloc(void *p, size_t size) {
    void *q = realloc(p, size ? size : 1);
    if (!q) {
        fputs("kpbridge: out of memory\n", stderr);
        abort();
    }
    return q;
}

char *kpb_xstrdup(const char *s) {
    return s ? kpb_xstrndup(s, strlen(s)) : NULL;
}

char *kpb_xstrndup(const char *s, size_t n) {
    char *d = kpb_xmalloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

void kpb_buf_init(kpb_buf_t *buf) {
    buf->data = NULL;
    buf->len = 0;
    buf->cap = 0;
}

void kpb_buf_fini(kpb_buf_t *buf) {
    free(buf->data);
    kpb_buf_init(buf);
}

void kpb_buf_reset(kpb_buf_t *buf) {
    buf->len = 0;
    if (buf->data)
        buf->data[0] = '\0';
}

void kpb_buf_reserve(kpb_buf_t *buf, size_t extra) {
    size_t need = buf->len + extra + 1;
    if (need <= buf->cap)
        return;
    size_t cap = buf->cap ? buf->cap : 64;
    while (cap < need)
        cap *= 2;
    buf->data = kpb_xrealloc(buf->data, cap);
    buf->cap = cap;
}

void kpb_buf_append(kpb_buf_t *buf, const void *p, size_t n) {
    kpb_buf_reserve(buf, n);
    if (n)
        memcpy(buf->data + buf->len, p, n);
    buf->len += n;
    buf->data[buf->len] = '\0';
}

void kpb_buf_puts(kpb_buf_t *buf, const char *s) {
    kpb_buf_append(buf, s, strlen(s));
}

void kpb_buf_putc(kpb_buf_t *buf, char c) {
    kpb_buf_reserve(buf, 1);
    buf->data[buf->len++] = c;
    buf->data[buf->len] = '\0';
}

void kpb_buf_printf(kpb_buf_t *buf, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(small)) {
        kpb_buf_append(buf, small, (size_t)n);
        return;
    }
    kpb_buf_reserve(buf, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(buf->data + buf->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    buf->len += (size_t)n;
}

void kpb_buf_json_escape(kpb_buf_t *buf, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    kpb_buf_reserve(buf, n + 2);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"':
            kpb_buf_append(buf, "\\\"", 2);
            break;
        case '\\':
            kpb_buf_append(buf, "\\\\", 2);
            break;
        case '\n':
            kpb_buf_append(buf, "\\n", 2);
            break;
        case '\r':
            kpb_buf_append(buf, "\\r", 2);
            break;
        case '\t':
            kpb_buf_append(buf, "\\t", 2);
            break;
        default:
            if (c < 0x20) {
                char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                kpb_buf_append(buf, esc, 6);
            } else {
                kpb_buf_putc(buf, (char)c);
            }
        }
    }
}

int64_t kpb_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t kpb_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int kpb_utf8_valid(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c == 0)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0) {
            len = 2;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + len > n)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        /* Overlong forms, surrogates and code points past U+10FFFF are not
         * UTF-8, and PostgreSQL rejects them. */
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
            (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

static kpb_log_level_t log_level = KPB_LOG_INFO;
static kpb_log_format_t log_format = KPB_LOG_TEXT;

void kpb_log_setup(kpb_log_level_t level, kpb_log_format_t format) {
    log_level = level;
    log_format = format;
}

int kpb_log_enabled(kpb_log_level_t level) {
    return level <= log_level;
}

/* Says that fmt is a printf format, so clang's -Wformat-nonliteral (part of
 * -Wformat=2; gcc does not warn for va_list functions) accepts the
 * vsnprintf below.  Belongs in util.h; repeated here to keep -Werror
 * builds with clang (the fuzz targets) working. */
void kpb_vlog(kpb_log_level_t level, const char *fmt, va_list ap)
    KPB_PRINTF(2, 0);

void kpb_vlog(kpb_log_level_t level, const char *fmt, va_list ap) {
    static const char *names[] = {"error", "warn", "info", "debug"};
    if (!kpb_log_enabled(level))
        return;
    char msg[2048];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char stamp[64];
    snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (int)(ts.tv_nsec / 1000000));
    kpb_buf_t line;
    kpb_buf_init(&line);
    if (log_format == KPB_LOG_JSON) {
        /* Trailing "key=value" words of a message become JSON fields
         * (numbers as numbers), so log shippers can index topic, partition,
         * offset, rows, duration_ms, sqlstate without parsing text. */
        size_t end = strlen(msg), msg_end = end;
        kpb_buf_t fields;
        kpb_buf_init(&fields);
        while (msg_end > 0) {
            size_t start = msg_end;
            while (start > 0 && msg[start - 1] != ' ')
                start--;
            const char *eq = memchr(msg + start, '=', msg_end - start);
            if (!eq || eq == msg + start)
                break;
            int key_ok = 1;
            for (const char *k = msg + start; k < eq; k++)
                key_ok &= (*k >= 'a' && *k <= 'z') || *k == '_';
            if (!key_ok)
                break;
            const char *val = eq + 1;
            size_t vlen = (size_t)(msg + msg_end - val);
            char *num_end = NULL;
            char tmp[64];
            int numeric = 0;
            int is_code = eq - (msg + start) == 8 &&
                          !memcmp(msg + start, "sqlstate", 8);
            if (vlen && vlen < sizeof(tmp) && !is_code) {
                memcpy(tmp, val, vlen);
                tmp[vlen] = '\0';
                (void)strtod(tmp, &num_end);
                numeric = *num_end == '\0' && (tmp[0] == '-' ||
                                               (tmp[0] >= '0' && tmp[0] <= '9'));
            }
            kpb_buf_printf(&fields, ",\"%.*s\":", (int)(eq - msg - start),
                           msg + start);
            if (numeric) {
                kpb_buf_append(&fields, val, vlen);
            } else {
                kpb_buf_putc(&fields, '"');
                kpb_buf_json_escape(&fields, val, vlen);
                kpb_buf_putc(&fields, '"');
            }
            msg_end = start ? start - 1 : 0;
        }
        kpb_buf_printf(&line, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"",
                       stamp, names[level]);
        kpb_buf_json_escape(&line, msg, msg_end);
        kpb_buf_putc(&line, '"');
        if (fields.len)
            kpb_buf_append(&line, fields.data, fields.len);
        kpb_buf_puts(&line, "}\n");
        kpb_buf_fini(&fields);
    } else {
        kpb_buf_printf(&line, "%s %-5s %s\n", stamp, names[level], msg);
    }
    /* One write per line keeps lines whole when several threads log. */
    fwrite(line.data, 1, line.len, stderr);
    kpb_buf_fini(&line);
}

void kpb_log(kpb_log_level_t level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    kpb_vlog(level, fmt, ap);
    va_end(ap);
}

static int conn_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
           c == '\v';
}

/*
 * The key=value form is read the way libpq's conninfo_parse reads it, so that
 * what counts as the password here is exactly what libpq takes as one: any
 * whitespace separates pairs and may surround '=', and a value is either
 * single-quoted or runs to the next whitespace, with backslash escapes in
 * both.  A searching approach ("password" then '=') misses "\tpassword=" and
 * stops an unquoted value at an escaped space, printing the rest of it.
 */
static void mask_keyvalue(kpb_buf_t *b, const char *s) {
    while (*s) {
        const char *start = s;
        while (conn_space(*s))
            s++;
        const char *name = s;
        while (*s && *s != '=' && !conn_space(*s))
            s++;
        size_t name_len = (size_t)(s - name);
        while (conn_space(*s))
            s++;
        if (*s != '=') {
            /* Not key=value: libpq refuses the string, and the bridge then
             * prints it in "cannot connect to ...".  Print this word as it
             * is and read on, so a password after it is still hidden. */
            kpb_buf_append(b, start, (size_t)(s - start));
            continue;
        }
        s++;
        while (conn_space(*s))
            s++;
        int secret = name_len == 8 && !strncmp(name, "password", 8);
        kpb_buf_append(b, start, (size_t)(s - start));
        const char *val = s;
        if (*s == '\'') {
            s++;
            while (*s && *s != '\'') {
                if (*s == '\\' && s[1])
                    s++;
                s++;
            }
            if (*s)
                s++;
            else
                secret = 1; /* unterminated: libpq refuses the string, and
                               the rest may well hold a password */
        } else {
            while (*s && !conn_space(*s)) {
                if (*s == '\\' && s[1])
                    s++;
                s++;
            }
        }
        if (secret) {
            kpb_buf_puts(b, "****");
            /* libpq needs no space after a closing quote ("password='x'host=
             * db"), but the mask is unquoted: keep the next key apart. */
            if (*s && !conn_space(*s))
                kpb_buf_putc(b, ' ');
        } else
            kpb_buf_append(b, val, (size_t)(s - val));
    }
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Whether the URI query key k[0..n) is "password" once libpq has decoded
 * its %XX escapes, as it does for keys too: "?%70assword=" is a password. */
static int uri_key_is_password(const char *k, size_t n) {
    static const char want[] = "password";
    size_t w = 0;
    for (size_t i = 0; i < n; i++, w++) {
        char c = k[i];
        if (c == '%') {
            int hi = i + 2 < n ? hex_digit(k[i + 1]) : -1;
            int lo = hi >= 0 ? hex_digit(k[i + 2]) : -1;
            if (lo < 0)
                return 0; /* libpq refuses a bad escape */
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if (w >= sizeof(want) - 1 || c != want[w])
            return 0;
    }
    return w == sizeof(want) - 1;
}

static int uri_prefixed(const char *s) {
    return !strncmp(s, "postgresql://", 13) || !strncmp(s, "postgres://", 11);
}

/* Masks a URI conninfo, s being all of it (any leading blanks included). */
static void mask_uri(kpb_buf_t *b, const char *s) {
    const char *auth = strstr(s, "://") + 3;
    /* As libpq: user info is whatever precedes an '@' met before the
     * first '/'; a '?' does not end it (a password may hold one). */
    const char *at = strpbrk(auth, "@/");
    const char *colon = NULL;
    if (at && *at == '@') {
        colon = memchr(auth, ':', (size_t)(at - auth));
    }
    if (colon) {
        kpb_buf_append(b, s, (size_t)(colon - s) + 1);
        kpb_buf_puts(b, "****");
        s = at;
    } else if (at && *at == '@') {
        /* A user name may hold a '?' too: the query starts after it. */
        kpb_buf_append(b, s, (size_t)(at - s));
        s = at;
    }
    /* A password can also hide in the query string. */
    const char *q = strchr(s, '?');
    if (!q) {
        kpb_buf_puts(b, s);
        return;
    }
    kpb_buf_append(b, s, (size_t)(q - s));
    s = q;
    while (*s) {
        const char *amp = strchr(s + 1, '&');
        size_t seg = amp ? (size_t)(amp - s) : strlen(s);
        const char *eq = memchr(s + 1, '=', seg ? seg - 1 : 0);
        if (eq && uri_key_is_password(s + 1, (size_t)(eq - s - 1))) {
            kpb_buf_append(b, s, (size_t)(eq - s) + 1);
            kpb_buf_puts(b, "****");
        } else {
            kpb_buf_append(b, s, seg);
        }
        s += seg;
    }
}

/*
 * libpq takes a URI only when its prefix opens the string: behind blanks it
 * reads key=value, meets one word without '=' and refuses the string, which
 * the bridge then prints in "cannot connect to ...".  A person still reads a
 * URI there, so it is masked as one; and as key=value masking finds no
 * password in that word, the masked text goes through it as well, hiding a
 * "password=" that follows the URI, as that reading would.
 */
void kpb_mask_conninfo(const char *conninfo, char *out, size_t out_size) {
    kpb_buf_t b;
    kpb_buf_init(&b);
    const char *s = conninfo ? conninfo : "";
    const char *t = s;
    while (conn_space(*t))
        t++;
    if (t == s && uri_prefixed(s)) {
        mask_uri(&b, s);
    } else if (uri_prefixed(t)) {
        kpb_buf_t uri;
        kpb_buf_init(&uri);
        mask_uri(&uri, s);
        mask_keyvalue(&b, uri.data ? uri.data : "");
        kpb_buf_fini(&uri);
    } else {
        mask_keyvalue(&b, s);
    }
    snprintf(out, out_size, "%s", b.data ? b.data : "");
    kpb_buf_fini(&b);
}

struct kpb_arena_block_s {
    kpb_arena_block_t *next;
    size_t size;
    size_t pos;
    max_align_t data[];
};

#define KPB_ARENA_BLOCK (64 * 1024)

void kpb_arena_init(kpb_arena_t *arena) {
    arena->head = NULL;
    arena->used = 0;
}

void kpb_arena_fini(kpb_arena_t *arena) {
    kpb_arena_block_t *b = arena->head;
    while (b) {
        kpb_arena_block_t *next = b->next;
        free(b);
        b = next;
    }
    kpb_arena_init(arena);
}

void kpb_arena_reset(kpb_arena_t *arena) {
    /* Keep one block of the default size, the oldest, and free the rest.
     * The oldest is not always the last of the list: an oversized block is
     * linked in behind the head, and may end up last. */
    kpb_arena_block_t *keep = NULL;
    kpb_arena_block_t *b = arena->head;
    while (b) {
        kpb_arena_block_t *next = b->next;
        if (b->size == KPB_ARENA_BLOCK) {
            free(keep);
            keep = b;
        } else {
            free(b);
        }
        b = next;
    }
    if (keep) {
        keep->next = NULL;
        keep->pos = 0;
    }
    arena->head = keep;
    arena->used = 0;
}

void *kpb_arena_alloc(kpb_arena_t *arena, size_t size) {
    size_t align = sizeof(max_align_t);
    size = (size + align - 1) & ~(align - 1);
    kpb_arena_block_t *b = arena->head;
    if (!b || b->size - b->pos < size) {
        size_t bsize = size > KPB_ARENA_BLOCK ? size : KPB_ARENA_BLOCK;
        kpb_arena_block_t *nb = kpb_xmalloc(sizeof(*nb) + bsize);
        nb->size = bsize;
        nb->pos = 0;
        if (b && size > KPB_ARENA_BLOCK) {
            /* An oversized block goes behind the current one, so the space
             * left in the current block is not wasted. */
            nb->next = b->next;
            b->next = nb;
            nb->pos = size;
            arena->used += size;
            return (char *)nb->data;
        }
        nb->next = b;
        arena->head = b = nb;
    }
    void *p = (char *)b->data + b->pos;
    b->pos += size;
    arena->used += size;
    return p;
}

char *kpb_arena_strndup(kpb_arena_t *arena, const char *s, size_t n) {
    char *d = kpb_arena_alloc(arena, n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

uint64_t kpb_stream_hash(const char *table, const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const char *t = table; *t; t++) {
        h ^= (unsigned char)*t;
        h *= 1099511628211ULL;
    }
    h ^= 0xff; /* the table name ends here */
    h *= 1099511628211ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}
