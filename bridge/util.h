/**
 * @file util.h
 * @brief Allocation, growable buffers, clocks and the logger shared by every
 *        stage.  Out-of-memory is not a recoverable condition for a bridge
 *        that holds only re-readable data: the allocators abort.
 */
#ifndef KPB_UTIL_H
#define KPB_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define KPB_MUSTCHECK __attribute__((warn_unused_result))
#define KPB_PRINTF(a, b) __attribute__((format(printf, a, b)))

/** @brief malloc that aborts on failure. */
void *kpb_xmalloc(size_t size);
/** @brief calloc that aborts on failure. */
void *kpb_xcalloc(size_t n, size_t size);
/** @brief realloc that aborts on failure. */
void *kpb_xrealloc(void *p, size_t size);
/** @brief strdup that aborts on failure; NULL in, NULL out. */
char *kpb_xstrdup(const char *s);
/** @brief strndup that aborts on failure. */
char *kpb_xstrndup(const char *s, size_t n);

/** @brief A growable byte buffer, always NUL-terminated after data[len]. */
typedef struct kpb_buf_s {
    char *data;
    size_t len;
    size_t cap;
} kpb_buf_t;

void kpb_buf_init(kpb_buf_t *buf);
void kpb_buf_fini(kpb_buf_t *buf);
/** @brief Empties the buffer, keeping its memory. */
void kpb_buf_reset(kpb_buf_t *buf);
void kpb_buf_reserve(kpb_buf_t *buf, size_t extra);
void kpb_buf_append(kpb_buf_t *buf, const void *p, size_t n);
void kpb_buf_puts(kpb_buf_t *buf, const char *s);
void kpb_buf_putc(kpb_buf_t *buf, char c);
void kpb_buf_printf(kpb_buf_t *buf, const char *fmt, ...) KPB_PRINTF(2, 3);
/** @brief Appends s[0..n) as the body of a JSON string (no quotes), escaped. */
void kpb_buf_json_escape(kpb_buf_t *buf, const char *s, size_t n);

/** @brief Monotonic clock in milliseconds. */
int64_t kpb_now_ms(void);
/** @brief Wall clock in milliseconds since the epoch. */
int64_t kpb_wall_ms(void);

/** @brief Checks s[0..n) is well-formed UTF-8 with no NUL byte. */
int kpb_utf8_valid(const char *s, size_t n);

typedef enum {
    KPB_LOG_ERROR = 0,
    KPB_LOG_WARN = 1,
    KPB_LOG_INFO = 2,
    KPB_LOG_DEBUG = 3,
} kpb_log_level_t;

typedef enum {
    KPB_LOG_TEXT = 0,
    KPB_LOG_JSON = 1,
} kpb_log_format_t;

/** @brief Sets the process-wide log threshold and line format. */
void kpb_log_setup(kpb_log_level_t level, kpb_log_format_t format);
/** @brief Whether a message at @p level would be written. */
int kpb_log_enabled(kpb_log_level_t level);
/** @brief Writes one line to stderr (text or JSON), if @p level is enabled. */
void kpb_log(kpb_log_level_t level, const char *fmt, ...) KPB_PRINTF(2, 3);
void kpb_vlog(kpb_log_level_t level, const char *fmt, va_list ap);

#define kpb_error(...) kpb_log(KPB_LOG_ERROR, __VA_ARGS__)
#define kpb_warn(...) kpb_log(KPB_LOG_WARN, __VA_ARGS__)
#define kpb_info(...) kpb_log(KPB_LOG_INFO, __VA_ARGS__)
#define kpb_debug(...)                                                         \
    do {                                                                       \
        if (kpb_log_enabled(KPB_LOG_DEBUG))                                    \
            kpb_log(KPB_LOG_DEBUG, __VA_ARGS__);                               \
    } while (0)

/**
 * @brief Copies @p conninfo into @p out with any password replaced by "****"
 *        (URI user:password@ and key=value password=...), for messages.
 */
void kpb_mask_conninfo(const char *conninfo, char *out, size_t out_size);



/**
 * @brief A bump allocator for the bytes of one flush (metadata, extracted
 *        fields): everything is freed at once after COMMIT.
 */
typedef struct kpb_arena_block_s kpb_arena_block_t;
typedef struct kpb_arena_s {
    kpb_arena_block_t *head;
    size_t used; /**< bytes handed out, for back-pressure accounting */
} kpb_arena_t;

void kpb_arena_init(kpb_arena_t *arena);
void kpb_arena_fini(kpb_arena_t *arena);
/** @brief Frees every block but the first, so a steady load allocates once. */
void kpb_arena_reset(kpb_arena_t *arena);
void *kpb_arena_alloc(kpb_arena_t *arena, size_t size);
/** @brief Copies s[0..n) and a NUL into the arena. */
char *kpb_arena_strndup(kpb_arena_t *arena, const char *s, size_t n);
/** @brief Hashes a stream, (table name, stream id), for open addressing. */
uint64_t kpb_stream_hash(const char *table, const char *s, size_t n);

#endif
