#include "writer.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "heads.h"
#include "insert.h"

typedef struct qname_s {
    const char *name; /* the config's string: compared by pointer first */
    char *quoted;
    /* Prepared INSERTs on this connection, a bit per size (see size_bit),
     * plain [0] and versioned [1]; pending: sent in this pipeline, not
     * confirmed yet. */
    uint32_t prepared[2], pending[2];
} qname_t;

/* A stream head a versioned INSERT returned, cached once COMMIT succeeds. */
typedef struct pending_head_s {
    const char *table;
    const char *sid; /* in pend_arena */
    size_t sid_len;
    int64_t head;
} pending_head_t;

struct kpb_writer_s {
    const kpb_config_t *conf;
    PGconn *conn;
    qname_t *tables;
    size_t table_cnt;
    char *dl_quoted;
    kpb_buf_t sql;
    kpb_buf_t aux;
    kpb_buf_t aux2;
    /* parameter arrays, sized for the largest statement */
    const char **values;
    int *lengths;
    int *formats;
    size_t param_cap;
    /* rows of the statement being written: item and stream numbers */
    uint32_t *rows;
    uint32_t *row_streams;
    uint32_t *row_place; /* 1-based place in its stream batch */
    unsigned char (*row_int8)[2][8]; /* binary place and head */
    size_t row_cap;
    /* postgres.versioning: statement */
    kpb_heads_t *heads;
    int versioned; /* this try numbers rows itself (no expectations) */
    pending_head_t *pend;
    size_t pend_cnt, pend_cap;
    kpb_arena_t pend_arena;
    uint32_t *stamp; /* per stream, for expectations */
    size_t stamp_cap;
    int careful;     /* replaying with savepoints after a data error */
    kpb_stmt_t *stmts; /* the current flush's statements */
    uint32_t nstmt;
    int send_rc;       /* kpb_writer_send(): -1 sent, else why not */
    int awaiting;      /* a sent pipeline's results are unread */
    uint32_t sent_dead;
    int has_expect;  /* the flush carries expected versions */
    uint32_t expect_gen;
    kpb_writer_hook_t *hook;
    void *hook_opaque;
    /* pipeline mode: statements are sent, their results read at the end */
    int pipelined;
    struct sent_s {
        int kind;          /* SENT_OTHER, SENT_OFFSETS, SENT_INSERT, ... */
        uint32_t arg;      /* partition index, rows, or SENT_PREPARE's bit */
        const char *table; /* SENT_VINSERT: whose heads it returns */
        qname_t *qt;       /* SENT_PREPARE: whose statement */
        int versioned;     /* SENT_PREPARE: which kind */
    } *sent, tag;
    size_t sent_cnt, sent_cap;
    char errmsg[1024];
    const char *errstate;
    char errstate_buf[6];
};

enum { SENT_OTHER = 0, SENT_OFFSETS, SENT_INSERT, SENT_VINSERT, SENT_PREPARE };

/*
 * Which statement sizes are prepared: the full one (max_events rows) and
 * every power of two below it.  A statement of another size is sent as
 * chunks of those sizes (insert_chunks), because an unprepared multi-row
 * INSERT is parsed and planned each time with its values inlined into the
 * plan: with 16 KiB payloads that planning (jsonb parsing, copying the
 * values) took 63% of the backend's time (perf, large workload).
 */
static int size_bit(uint32_t rows, uint32_t max_rows) {
    if (rows == max_rows)
        return 31;
    if (rows & (rows - 1))
        return -1;
    int bit = 0;
    while ((1u << bit) < rows)
        bit++;
    return bit;
}

/* Streams whose heads kpbridge caches, at most: about 100 bytes each. */
#define KPB_HEADS_MAX 131072

kpb_sql_class_t kpb_sqlstate_class(const char *s) {
    if (!s || !*s)
        return KPB_SQL_TRANSIENT;
    if (!strncmp(s, "08", 2) || !strncmp(s, "53", 2) ||
        !strncmp(s, "57P0", 4) || !strcmp(s, "40001") ||
        !strcmp(s, "40P01") || !strcmp(s, "57014") || !strcmp(s, "55P03"))
        return KPB_SQL_TRANSIENT;
    if (!strncmp(s, "22", 2) || !strncmp(s, "23", 2) || !strcmp(s, "P0001") ||
        !strncmp(s, "54", 2))
        return KPB_SQL_DATA;
    return KPB_SQL_FATAL;
}

kpb_writer_t *kpb_writer_new(const kpb_config_t *conf) {
    kpb_writer_t *w = kpb_xcalloc(1, sizeof(*w));
    w->conf = conf;
    kpb_buf_init(&w->sql);
    kpb_buf_init(&w->aux);
    kpb_buf_init(&w->aux2);
    if (conf->versioning == KPB_VERSIONS_STATEMENT)
        w->heads = kpb_heads_new(KPB_HEADS_MAX);
    kpb_arena_init(&w->pend_arena);
    return w;
}

char *kpb_quote_table(PGconn *conn, const char *name) {
    /* "schema.table" is two identifiers; each is quoted on its own, so a
     * name is used exactly as configured (case included). */
    kpb_buf_t out;
    kpb_buf_init(&out);
    const char *part = name;
    for (;;) {
        const char *dot = strchr(part, '.');
        size_t n = dot ? (size_t)(dot - part) : strlen(part);
        char *q = PQescapeIdentifier(conn, part, n);
        if (!q) {
            kpb_buf_fini(&out);
            return NULL;
        }
        kpb_buf_puts(&out, q);
        PQfreemem(q);
        if (!dot)
            break;
        kpb_buf_putc(&out, '.');
        part = dot + 1;
    }
    return out.data;
}

static void drop_names(kpb_writer_t *w) {
    for (size_t i = 0; i < w->table_cnt; i++)
        free(w->tables[i].quoted);
    free(w->tables);
    w->tables = NULL;
    w->table_cnt = 0;
    free(w->dl_quoted);
    w->dl_quoted = NULL;
}

void kpb_writer_destroy(kpb_writer_t *w) {
    if (!w)
        return;
    drop_names(w);
    if (w->conn)
        PQfinish(w->conn);
    kpb_buf_fini(&w->sql);
    kpb_buf_fini(&w->aux);
    kpb_buf_fini(&w->aux2);
    free(w->values);
    free(w->lengths);
    free(w->formats);
    free(w->rows);
    free(w->row_streams);
    free(w->row_place);
    free(w->row_int8);
    kpb_heads_destroy(w->heads);
    free(w->pend);
    kpb_arena_fini(&w->pend_arena);
    free(w->stamp);
    free(w->sent);
    free(w->stmts);
    free(w);
}

void kpb_writer_set_hook(kpb_writer_t *w, kpb_writer_hook_t *hook,
                         void *opaque) {
    w->hook = hook;
    w->hook_opaque = opaque;
}

int kpb_writer_awaiting(const kpb_writer_t *w) { return w->awaiting; }

int kpb_writer_ping(kpb_writer_t *w) {
    char err[512];
    if (w->awaiting)
        return 1; /* busy with a write: connected */
    if (kpb_writer_connected(w)) {
        PGresult *res = PQexec(w->conn, "SELECT 1");
        PQclear(res);
    }
    if (!kpb_writer_connected(w) && kpb_writer_connect(w, err, sizeof(err)))
        return 0;
    return 1;
}

void kpb_writer_forget_heads(kpb_writer_t *w) {
    if (w->heads)
        kpb_heads_clear(w->heads);
}

int kpb_writer_connected(const kpb_writer_t *w) {
    return w->conn && PQstatus(w->conn) == CONNECTION_OK;
}

static void trim_nl(char *s) {
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == ' '))
        s[--n] = '\0';
}

/* Server notices (e.g. a ROLLBACK after the server already ended a failed
 * pipeline's transaction) are not worth a line on stderr. */
static void on_notice(void *arg, const char *message) {
    (void)arg;
    kpb_debug("postgres: %s", message);
}

int kpb_writer_connect(kpb_writer_t *w, char *errstr, size_t errstr_size) {
    if (kpb_writer_connected(w))
        return 0;
    drop_names(w);
    if (w->conn)
        PQfinish(w->conn);
    w->conn = PQconnectdb(w->conf->conninfo);
    if (PQstatus(w->conn) != CONNECTION_OK) {
        /* libpq's messages name host and port, never the password. */
        snprintf(errstr, errstr_size, "cannot connect to PostgreSQL: %s",
                 PQerrorMessage(w->conn));
        trim_nl(errstr);
        PQfinish(w->conn);
        w->conn = NULL;
        return -1;
    }
    PQsetNoticeProcessor(w->conn, on_notice, NULL);
    /* Names from the configuration are identifiers, quoted by libpq. */
    w->tables = kpb_xcalloc(w->conf->topic_cnt, sizeof(*w->tables));
    for (size_t i = 0; i < w->conf->topic_cnt; i++) {
        const char *t = w->conf->topics[i].table;
        w->tables[i].name = t;
        w->tables[i].quoted = kpb_quote_table(w->conn, t);
        w->table_cnt++;
        if (!w->tables[i].quoted)
            goto oom;
    }
    w->dl_quoted = kpb_quote_table(w->conn, w->conf->dl_table);
    if (!w->dl_quoted)
        goto oom;
    return 0;
oom:
    snprintf(errstr, errstr_size, "cannot quote a table name: %s",
             PQerrorMessage(w->conn));
    trim_nl(errstr);
    drop_names(w);
    PQfinish(w->conn);
    w->conn = NULL;
    return -1;
}

static qname_t *table_of(kpb_writer_t *w, const char *table) {
    for (size_t i = 0; i < w->table_cnt; i++)
        if (w->tables[i].name == table || !strcmp(w->tables[i].name, table))
            return &w->tables[i];
    return NULL;
}

/* Judges a result: on failure keeps the server's message and SQLSTATE in the
 * writer and returns the failure's class; on success -1 (and the result in
 * *out when asked for; the caller clears it). */
static int check_res(kpb_writer_t *w, PGresult *res, ExecStatusType want,
                     PGresult **out) {
    if (PQresultStatus(res) == want) {
        if (out)
            *out = res;
        else
            PQclear(res);
        return -1;
    }
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(w->errstate_buf, sizeof(w->errstate_buf), "%s",
             state ? state : "");
    w->errstate = state ? w->errstate_buf : NULL;
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)
                          : NULL;
    snprintf(w->errmsg, sizeof(w->errmsg), "%s",
             msg ? msg : PQerrorMessage(w->conn));
    trim_nl(w->errmsg);
    PQclear(res);
    if (PQstatus(w->conn) != CONNECTION_OK)
        return KPB_SQL_TRANSIENT;
    return (int)kpb_sqlstate_class(w->errstate);
}

static int check(kpb_writer_t *w, PGresult *res, ExecStatusType want) {
    return check_res(w, res, want, NULL);
}

/* In pipeline mode a statement is only sent; its result is judged later
 * by pipeline_collect(), which needs to know what each one was. */
static int sent(kpb_writer_t *w, int ok) {
    struct sent_s tag = w->tag;
    w->tag.kind = SENT_OTHER;
    w->tag.arg = 0;
    w->tag.table = NULL;
    w->tag.qt = NULL;
    if (!ok) {
        snprintf(w->errmsg, sizeof(w->errmsg), "%s",
                 PQerrorMessage(w->conn));
        trim_nl(w->errmsg);
        w->errstate = NULL;
        return KPB_SQL_TRANSIENT;
    }
    if (w->sent_cnt == w->sent_cap) {
        w->sent_cap = w->sent_cap ? w->sent_cap * 2 : 64;
        w->sent = kpb_xrealloc(w->sent, w->sent_cap * sizeof(*w->sent));
    }
    w->sent[w->sent_cnt++] = tag;
    return -1;
}

static int run_res(kpb_writer_t *w, const char *sql, int nparams,
                   const char *const *values, const int *lengths,
                   const int *formats, ExecStatusType want, PGresult **out) {
    if (w->pipelined)
        return sent(w, PQsendQueryParams(w->conn, sql, nparams, NULL, values,
                                         lengths, formats, 0));
    PGresult *res =
        nparams ? PQexecParams(w->conn, sql, nparams, NULL, values, lengths,
                               formats, 0)
                : PQexec(w->conn, sql);
    return check_res(w, res, want, out);
}

static int run(kpb_writer_t *w, const char *sql, int nparams,
               const char *const *values, const int *lengths,
               const int *formats, ExecStatusType want) {
    return run_res(w, sql, nparams, values, lengths, formats, want, NULL);
}

static void need_params(kpb_writer_t *w, size_t n) {
    if (n <= w->param_cap)
        return;
    w->values = kpb_xrealloc(w->values, n * sizeof(*w->values));
    w->lengths = kpb_xrealloc(w->lengths, n * sizeof(*w->lengths));
    w->formats = kpb_xrealloc(w->formats, n * sizeof(*w->formats));
    w->param_cap = n;
}

static void rollback(kpb_writer_t *w) {
    if (w->conn && PQstatus(w->conn) == CONNECTION_OK)
        PQclear(PQexec(w->conn, "ROLLBACK"));
}

int kpb_writer_positions(kpb_writer_t *w, const char *topic,
                         const int32_t *partitions, int cnt, int64_t *next,
                         char *errstr, size_t errstr_size) {
    const char *params[2] = {w->conf->group_id, topic};
    if (w->awaiting) {
        snprintf(errstr, errstr_size, "a write is under way");
        return -1;
    }
    PGresult *res = PQexecParams(
        w->conn,
        "SELECT partition, next_offset FROM kpbridge_offsets"
        " WHERE group_id = $1 AND topic = $2",
        2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(errstr, errstr_size, "cannot read kpbridge_offsets: %s",
                 PQresultErrorMessage(res));
        trim_nl(errstr);
        PQclear(res);
        return -1;
    }
    for (int i = 0; i < cnt; i++)
        next[i] = -1;
    for (int r = 0; r < PQntuples(res); r++) {
        int32_t p = (int32_t)atoi(PQgetvalue(res, r, 0));
        for (int i = 0; i < cnt; i++)
            if (partitions[i] == p)
                next[i] = strtoll(PQgetvalue(res, r, 1), NULL, 10);
    }
    PQclear(res);
    return 0;
}

/* Moves each partition's row from its expected value, or finds it moved:
 * kpbridge_advance_offset() raises KB001 when the row is not where this
 * writer last saw it (another instance owns the partition now). */
static int write_offsets(kpb_writer_t *w, const kpb_flush_t *f,
                         const int64_t *from, uint32_t *fenced) {
    static const char *sql =
        "SELECT kpbridge_advance_offset($1, $2, $3::int, $4::bigint,"
        " $5::bigint)";
    for (uint32_t i = 0; i < f->part_cnt; i++) {
        char part[16], next[24], prev[24];
        snprintf(part, sizeof(part), "%d", (int)f->parts[i].partition);
        snprintf(prev, sizeof(prev), "%lld", (long long)from[i]);
        snprintf(next, sizeof(next), "%lld",
                 (long long)f->parts[i].next_offset);
        const char *params[5] = {w->conf->group_id, f->parts[i].topic, part,
                                 prev, next};
        w->tag.kind = SENT_OFFSETS;
        w->tag.arg = i;
        int rc = run(w, sql, 5, params, NULL, NULL, PGRES_TUPLES_OK);
        if (rc == -1)
            continue;
        if (w->errstate && !strcmp(w->errstate, "KB001")) {
            *fenced = i;
            return -2;
        }
        return rc;
    }
    return -1;
}

/* Sets eventcore.expected_versions for rows [lo, hi): a stream whose first
 * row here carries an expectation gets it; any other stream of the range
 * loses its key, since its rows follow rows this transaction already
 * wrote (or dead-lettered) and so have nothing left to check. */
static int set_expectations(kpb_writer_t *w, const kpb_flush_t *f,
                            uint32_t lo, uint32_t hi, uint32_t gen) {
    kpb_buf_t *set = &w->aux, *drop = &w->aux2;
    kpb_buf_reset(set);
    kpb_buf_reset(drop);
    kpb_buf_putc(set, '{');
    kpb_buf_putc(drop, '[');
    for (uint32_t r = lo; r < hi; r++) {
        uint32_t s = w->row_streams[r];
        if (w->stamp[s] == gen)
            continue;
        w->stamp[s] = gen;
        const kpb_event_t *ev = &f->items[w->rows[r]].ev;
        kpb_buf_t *b = ev->expected_version >= 0 ? set : drop;
        if (b->len > 1)
            kpb_buf_putc(b, ',');
        kpb_buf_putc(b, '"');
        kpb_buf_json_escape(b, ev->stream_id, ev->stream_id_len);
        kpb_buf_putc(b, '"');
        if (b == set)
            kpb_buf_printf(b, ":%lld", (long long)ev->expected_version);
    }
    kpb_buf_putc(set, '}');
    kpb_buf_putc(drop, ']');
    const char *params[2] = {drop->data, set->data};
    return run(w,
               "SELECT set_config('eventcore.expected_versions',"
               " ((coalesce(nullif(current_setting("
               "'eventcore.expected_versions', true), ''), '{}')::jsonb"
               " - ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))"
               " || $2::jsonb)::text, true)",
               2, params, NULL, NULL, PGRES_TUPLES_OK);
}

static void put_int8(unsigned char *out, int64_t v) {
    for (int b = 0; b < 8; b++)
        out[b] = (unsigned char)((uint64_t)v >> (56 - 8 * b));
}

/* Inserts rows [lo, hi) of the current statement.  Versioned, the rows are
 * a whole statement and each carries its place in its stream batch and
 * the stream's cached head (NULL where none is cached). */
static int insert_rows(kpb_writer_t *w, const kpb_flush_t *f, qname_t *qt,
                       uint32_t lo, uint32_t hi) {
    if (w->has_expect) {
        int rc = set_expectations(w, f, lo, hi, ++w->expect_gen);
        if (rc != -1)
            return rc;
    }
    const int versioned = w->versioned;
    const unsigned per_row =
        versioned ? KPB_INSERT_VERSIONED_PARAMS : KPB_INSERT_PARAMS;
    uint32_t n = hi - lo;
    need_params(w, (size_t)n * per_row);
    int64_t head = -1, base = 0;
    for (uint32_t r = 0; r < n; r++) {
        const kpb_event_t *ev = &f->items[w->rows[lo + r]].ev;
        size_t p = (size_t)r * per_row;
        w->values[p] = (const char *)ev->event_id;
        w->lengths[p] = 16;
        w->values[p + 1] = ev->stream_id;
        w->lengths[p + 1] = (int)ev->stream_id_len;
        w->values[p + 2] = ev->event_type;
        w->lengths[p + 2] = (int)ev->event_type_len;
        w->values[p + 3] = ev->payload;
        w->lengths[p + 3] = (int)ev->payload_len;
        w->values[p + 4] = ev->metadata;
        w->lengths[p + 4] = (int)ev->metadata_len;
        if (versioned) {
            /* A batch may span chunks (insert_chunks): numbered from the
             * chunk's first row of the stream, whose head is the cached
             * one plus the rows before it, or, uncached, what the
             * statement finds (earlier chunks included). */
            uint32_t place = w->row_place[lo + r];
            if (r == 0 || w->row_streams[lo + r] != w->row_streams[lo + r - 1]) {
                base = place - 1;
                head = kpb_heads_get(w->heads, qt->name, ev->stream_id,
                                     ev->stream_id_len);
                if (head >= 0)
                    head += base;
            }
            unsigned char(*b)[8] = w->row_int8[lo + r];
            put_int8(b[0], (int64_t)place - base);
            put_int8(b[1], head);
            w->values[p + 5] = (const char *)b[0];
            w->lengths[p + 5] = 8;
            w->values[p + 6] = head >= 0 ? (const char *)b[1] : NULL;
            w->lengths[p + 6] = 8;
        }
        for (unsigned k = 0; k < per_row; k++)
            w->formats[p + k] = 1;
    }
    int64_t t0 = kpb_now_ms();
    int rc;
    const int nparams = (int)(n * per_row);
    const int bit = size_bit(n, (uint32_t)w->conf->max_events);
    if (bit >= 0) {
        /* Parsed once per connection: parsing 1000 rows of VALUES with
         * 5000 parameters costs about as much as inserting them. */
        char name[48];
        snprintf(name, sizeof(name), "kpb_%sinsert_%zu_%u",
                 versioned ? "v" : "", (size_t)(qt - w->tables), n);
        uint32_t mask = 1u << bit;
        if (!((qt->prepared[versioned] | qt->pending[versioned]) & mask)) {
            if (versioned)
                kpb_insert_versioned_sql(&w->sql, qt->quoted, n);
            else
                kpb_insert_sql(&w->sql, qt->quoted, n);
            if (w->pipelined) {
                /* confirmed by its result (pipeline_collect): a pipeline
                 * that fails before it skips it */
                w->tag.kind = SENT_PREPARE;
                w->tag.arg = (uint32_t)bit;
                w->tag.qt = qt;
                w->tag.versioned = versioned;
                rc = sent(w, PQsendPrepare(w->conn, name, w->sql.data, nparams,
                                           NULL));
                if (rc != -1)
                    return rc;
                qt->pending[versioned] |= mask;
            } else {
                rc = check(w,
                           PQprepare(w->conn, name, w->sql.data, nparams, NULL),
                           PGRES_COMMAND_OK);
                if (rc != -1)
                    return rc;
                qt->prepared[versioned] |= mask;
            }
        }
        w->tag.kind = versioned ? SENT_VINSERT : SENT_INSERT;
        w->tag.arg = n;
        w->tag.table = qt->name;
        if (w->pipelined) {
            kpb_debug("insert table=%s rows=%u (pipelined)", qt->name, n);
            return sent(w, PQsendQueryPrepared(w->conn, name, nparams,
                                               w->values, w->lengths,
                                               w->formats, 0));
        }
        w->tag.kind = SENT_OTHER;
        PGresult *res = PQexecPrepared(w->conn, name, nparams, w->values,
                                       w->lengths, w->formats, 0);
        rc = check(w, res, versioned ? PGRES_TUPLES_OK : PGRES_COMMAND_OK);
    } else {
        if (versioned)
            kpb_insert_versioned_sql(&w->sql, qt->quoted, n);
        else
            kpb_insert_sql(&w->sql, qt->quoted, n);
        w->tag.kind = versioned ? SENT_VINSERT : SENT_INSERT;
        w->tag.arg = n;
        w->tag.table = qt->name;
        if (w->pipelined)
            kpb_debug("insert table=%s rows=%u (pipelined)", qt->name, n);
        else
            w->tag.kind = SENT_OTHER;
        rc = run(w, w->sql.data, nparams, w->values, w->lengths, w->formats,
                 versioned ? PGRES_TUPLES_OK : PGRES_COMMAND_OK);
        if (w->pipelined)
            return rc;
    }
    if (rc == -1)
        kpb_debug("insert table=%s rows=%u duration_ms=%lld", qt->name, n,
                  (long long)(kpb_now_ms() - t0));
    return rc;
}

/* Inserts the @p n rows of the current statement as prepared statements:
 * all at once when they fill it, else in power-of-two chunks, largest
 * first.  Order is kept: chunks run in order, each seeing those before. */
static int insert_chunks(kpb_writer_t *w, const kpb_flush_t *f, qname_t *qt,
                         uint32_t n) {
    const uint32_t max_rows = (uint32_t)w->conf->max_events;
    uint32_t lo = 0;
    while (lo < n) {
        uint32_t k = n - lo;
        if (k != max_rows)
            while (k & (k - 1))
                k &= k - 1; /* the highest power of two in it */
        int rc = insert_rows(w, f, qt, lo, lo + k);
        if (rc != -1)
            return rc;
        lo += k;
    }
    return -1;
}

static int savepoint(kpb_writer_t *w, const char *verb) {
    char sql[64];
    snprintf(sql, sizeof(sql), "%s kpb", verb);
    return run(w, sql, 0, NULL, NULL, NULL, PGRES_COMMAND_OK);
}

/* Whether @p ev's event id is stored already: 1, 0, or -1 on failure. */
static int event_id_taken(kpb_writer_t *w, qname_t *qt, const kpb_event_t *ev) {
    kpb_buf_reset(&w->aux);
    kpb_buf_printf(&w->aux, "SELECT 1 FROM %s WHERE event_id = $1::uuid",
                   qt->quoted);
    const char *v[1] = {(const char *)ev->event_id};
    const int len[1] = {16}, fmt[1] = {1};
    PGresult *res = NULL;
    if (run_res(w, w->aux.data, 1, v, len, fmt, PGRES_TUPLES_OK, &res) != -1)
        return -1;
    int taken = PQntuples(res) > 0;
    PQclear(res);
    return taken;
}

/* Finds the rows at fault in [lo, hi) by halving, each try in a savepoint:
 * a bad row costs about 2 log2(n) statements, and every good row around it
 * is still written, in order. */
static int isolate(kpb_writer_t *w, kpb_flush_t *f, qname_t *qtable,
                   uint32_t lo, uint32_t hi, kpb_write_stats_t *st) {
    int rc;
    if ((rc = savepoint(w, "SAVEPOINT")) != -1)
        return rc;
    rc = insert_rows(w, f, qtable, lo, hi);
    if (rc == -1) {
        st->events += hi - lo;
        return savepoint(w, "RELEASE SAVEPOINT");
    }
    if (rc != KPB_SQL_DATA)
        return rc;
    char state[6], msg[sizeof(w->errmsg)];
    snprintf(state, sizeof(state), "%s", w->errstate_buf);
    snprintf(msg, sizeof(msg), "%s", w->errmsg);
    if ((rc = savepoint(w, "ROLLBACK TO SAVEPOINT")) != -1)
        return rc;
    if (hi - lo == 1) {
        kpb_item_t *it = &f->items[w->rows[lo]];
        if (!strcmp(state, "23505")) {
            /* Either the event id is taken (the row is at fault) or another
             * writer took this stream's next version between our lookup
             * and our insert: a race, which the retried flush wins. */
            if ((rc = event_id_taken(w, qtable, &it->ev)) < 0)
                return KPB_SQL_TRANSIENT;
            if (!rc) {
                snprintf(w->errmsg, sizeof(w->errmsg),
                         "stream \"%.*s\": another writer appended first",
                         (int)it->ev.stream_id_len, it->ev.stream_id);
                w->errstate = NULL;
                return KPB_SQL_TRANSIENT;
            }
        }
        it->reason = !strncmp(msg, "version_conflict", 16)
                         ? KPB_REASON_VERSION_CONFLICT
                         : KPB_REASON_REJECTED;
        it->sqlstate = kpb_arena_strndup(&f->arena, state, strlen(state));
        it->detail = kpb_arena_strndup(&f->arena, msg, strlen(msg));
        kpb_warn("dead letter: %s topic=%s partition=%d offset=%lld "
                 "reason=%s sqlstate=%s",
                 msg, it->topic, (int)it->partition, (long long)it->offset,
                 kpb_reason_name(it->reason), state);
        return -1;
    }
    uint32_t mid = lo + (hi - lo) / 2;
    if ((rc = isolate(w, f, qtable, lo, mid, st)) != -1)
        return rc;
    return isolate(w, f, qtable, mid, hi, st);
}

static void need_rows(kpb_writer_t *w, const kpb_flush_t *f) {
    if (w->row_cap < f->item_cnt) {
        w->row_cap = f->item_cnt;
        w->rows = kpb_xrealloc(w->rows, w->row_cap * sizeof(*w->rows));
        w->row_streams =
            kpb_xrealloc(w->row_streams, w->row_cap * sizeof(*w->row_streams));
        w->row_place =
            kpb_xrealloc(w->row_place, w->row_cap * sizeof(*w->row_place));
        w->row_int8 =
            kpb_xrealloc(w->row_int8, w->row_cap * sizeof(*w->row_int8));
    }
    if (w->stamp_cap < f->stream_cnt) {
        w->stamp = kpb_xrealloc(w->stamp, f->stream_cnt * sizeof(*w->stamp));
        memset(w->stamp, 0, f->stream_cnt * sizeof(*w->stamp));
        w->stamp_cap = f->stream_cnt;
    }
}

/* Lays a statement's batches out as rows, stream by stream, in w->rows. */
static uint32_t flatten(kpb_writer_t *w, const kpb_flush_t *f,
                        const kpb_stmt_t *stmt) {
    uint32_t n = 0;
    const kpb_sbatch_t *sb0 = &f->batches[stmt->first];
    for (uint32_t b = 0; b < stmt->count; b++) {
        const kpb_sbatch_t *sb = &sb0[b];
        uint32_t place = 0;
        for (uint32_t k = sb->first; k != KPB_NONE; k = f->items[k].next) {
            w->rows[n] = k;
            w->row_place[n] = ++place;
            w->row_streams[n++] = sb->stream;
        }
    }
    return n;
}

static int write_dead(kpb_writer_t *w, kpb_flush_t *f, kpb_write_stats_t *st) {
    /* Dead letters of the flush: decode failures, then database refusals,
     * both already marked on their items. */
    uint32_t total = 0;
    for (uint32_t i = 0; i < f->item_cnt; i++)
        total += f->items[i].reason != KPB_REASON_NONE;
    if (!total)
        return -1;
    const uint32_t chunk = 1000;
    need_params(w, (size_t)chunk * KPB_DEAD_PARAMS);
    char(*nums)[2][24] = kpb_xmalloc(chunk * sizeof(*nums));
    uint32_t i = 0;
    int rc = -1;
    while (i < f->item_cnt && rc == -1) {
        uint32_t n = 0;
        for (; i < f->item_cnt && n < chunk; i++) {
            const kpb_item_t *it = &f->items[i];
            if (it->reason == KPB_REASON_NONE)
                continue;
            size_t p = (size_t)n * KPB_DEAD_PARAMS;
            snprintf(nums[n][0], 24, "%d", (int)it->partition);
            snprintf(nums[n][1], 24, "%lld", (long long)it->offset);
            const char *v[KPB_DEAD_PARAMS] = {
                it->topic, nums[n][0], nums[n][1], it->key, it->value,
                it->ev.metadata, kpb_reason_name(it->reason), it->sqlstate,
                it->detail};
            for (int k = 0; k < KPB_DEAD_PARAMS; k++) {
                w->values[p + k] = v[k];
                w->lengths[p + k] = 0;
                w->formats[p + k] = 0;
            }
            /* key and value go as raw bytes: binary bytea is the bytes */
            w->formats[p + 3] = w->formats[p + 4] = 1;
            w->lengths[p + 3] = (int)it->key_len;
            w->lengths[p + 4] = (int)it->value_len;
            n++;
        }
        if (!n)
            break;
        kpb_insert_dead_sql(&w->sql, w->dl_quoted, n);
        rc = run(w, w->sql.data, (int)(n * KPB_DEAD_PARAMS), w->values,
                 w->lengths, w->formats, PGRES_COMMAND_OK);
        if (rc == -1)
            st->dead += n;
    }
    free(nums);
    /* A dead letter the database refuses is a setup fault, not a data one:
     * retrying cannot help and skipping would lose the record. */
    return rc == KPB_SQL_DATA ? KPB_SQL_FATAL : rc;
}

static kpb_write_rc_t fail(kpb_writer_t *w, int cls, const char *what,
                           char *errstr, size_t errstr_size) {
    snprintf(errstr, errstr_size, "%s: %s%s%s%s", what, w->errmsg,
             w->errstate ? " (SQLSTATE " : "", w->errstate ? w->errstate : "",
             w->errstate ? ")" : "");
    rollback(w);
    return cls == KPB_SQL_TRANSIENT ? KPB_WRITE_TRANSIENT : KPB_WRITE_FATAL;
}

/* Notes the heads a versioned INSERT returned; they are cached only once
 * the transaction has committed. */
static void keep_heads(kpb_writer_t *w, const char *table,
                       const PGresult *res) {
    int n = PQntuples(res);
    if (w->pend_cnt + (size_t)n > w->pend_cap) {
        w->pend_cap = w->pend_cnt + (size_t)n + 64;
        w->pend = kpb_xrealloc(w->pend, w->pend_cap * sizeof(*w->pend));
    }
    for (int r = 0; r < n; r++) {
        pending_head_t *ph = &w->pend[w->pend_cnt++];
        ph->table = table;
        ph->sid_len = (size_t)PQgetlength(res, r, 0);
        ph->sid = kpb_arena_strndup(&w->pend_arena, PQgetvalue(res, r, 0),
                                    ph->sid_len);
        ph->head = strtoll(PQgetvalue(res, r, 1), NULL, 10);
    }
}

/* Forgets the heads of every stream of @p f: after a failed or
 * trigger-numbered write they may be behind the table. */
static void forget_heads(kpb_writer_t *w, const kpb_flush_t *f) {
    for (uint32_t i = 0; i < f->batch_cnt; i++) {
        const kpb_event_t *ev = &f->items[f->batches[i].first].ev;
        kpb_heads_put(w->heads, f->batches[i].table, ev->stream_id,
                      ev->stream_id_len, -1);
    }
}

/* Reads the results of everything sent in pipeline mode, in order.
 * Returns -1 when all succeeded, -2 when an offsets row was fenced (with
 * *fenced set), else the class of the first failure. */
static int pipeline_collect(kpb_writer_t *w, uint32_t *fenced,
                            kpb_write_stats_t *st) {
    int cls = -1;
    for (size_t i = 0; i < w->sent_cnt; i++) {
        PGresult *res = PQgetResult(w->conn);
        if (!res) {
            snprintf(w->errmsg, sizeof(w->errmsg), "%s",
                     PQerrorMessage(w->conn));
            trim_nl(w->errmsg);
            w->errstate = NULL;
            return KPB_SQL_TRANSIENT;
        }
        ExecStatusType status = PQresultStatus(res);
        if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) {
            if (w->sent[i].kind == SENT_INSERT ||
                w->sent[i].kind == SENT_VINSERT) {
                st->events += w->sent[i].arg;
                st->statements++;
            }
            if (w->sent[i].kind == SENT_VINSERT)
                keep_heads(w, w->sent[i].table, res);
            if (w->sent[i].kind == SENT_PREPARE)
                w->sent[i].qt->prepared[w->sent[i].versioned] |=
                    1u << w->sent[i].arg;
            PQclear(res);
        } else if (status == PGRES_PIPELINE_ABORTED || cls != -1) {
            PQclear(res);
        } else {
            cls = check_res(w, res, PGRES_COMMAND_OK, NULL);
            if (w->sent[i].kind == SENT_OFFSETS && w->errstate &&
                !strcmp(w->errstate, "KB001")) {
                *fenced = w->sent[i].arg;
                cls = -2;
            }
        }
        /* each statement's results end with a NULL */
        while ((res = PQgetResult(w->conn)))
            PQclear(res);
    }
    PGresult *res = PQgetResult(w->conn);
    int synced = res && PQresultStatus(res) == PGRES_PIPELINE_SYNC;
    PQclear(res);
    if (!synced && cls == -1) {
        snprintf(w->errmsg, sizeof(w->errmsg), "pipeline out of step: %s",
                 PQerrorMessage(w->conn));
        trim_nl(w->errmsg);
        w->errstate = NULL;
        cls = KPB_SQL_TRANSIENT;
    }
    return cls;
}

/* The common case in one round trip: BEGIN, the offsets, every statement,
 * the dead letters and COMMIT are sent as one pipeline, and the results are
 * read at the end (pipeline_finish), possibly while the caller reads the
 * next flush from Kafka.  Any failure aborts the rest of the pipeline, so
 * nothing commits; the caller then rolls back and takes the careful path.
 * Returns -1 when sent, else the failure's class (the connection is then
 * closed: it is unusable mid-pipeline). */
static int pipeline_send(kpb_writer_t *w, kpb_flush_t *f,
                         const int64_t *from) {
    int rc;
    uint32_t fenced_unused;
    if (!PQenterPipelineMode(w->conn)) {
        snprintf(w->errmsg, sizeof(w->errmsg), "%s", PQerrorMessage(w->conn));
        trim_nl(w->errmsg);
        w->errstate = NULL;
        return KPB_SQL_TRANSIENT;
    }
    w->pipelined = 1;
    w->sent_cnt = 0;
    w->pend_cnt = 0;
    kpb_arena_reset(&w->pend_arena);
    rc = run(w, "BEGIN", 0, NULL, NULL, NULL, PGRES_COMMAND_OK);
    /* The version trigger skips rows that bring a version only in a
     * transaction that says it numbers them itself (migration 005). */
    if (rc == -1 && w->versioned)
        rc = run(w, "SET LOCAL eventcore.explicit_versions = on", 0, NULL,
                 NULL, NULL, PGRES_COMMAND_OK);
    if (rc == -1)
        rc = write_offsets(w, f, from, &fenced_unused);
    for (uint32_t s = 0; s < w->nstmt && rc == -1; s++) {
        uint32_t n = flatten(w, f, &w->stmts[s]);
        rc = insert_chunks(w, f,
                           table_of(w, f->batches[w->stmts[s].first].table), n);
    }
    kpb_write_stats_t dead_st = {0};
    if (rc == -1)
        rc = write_dead(w, f, &dead_st);
    w->sent_dead = dead_st.dead;
    if (rc == -1)
        rc = run(w, "COMMIT", 0, NULL, NULL, NULL, PGRES_COMMAND_OK);
    w->pipelined = 0;
    if (rc != -1 || !PQpipelineSync(w->conn)) {
        PQfinish(w->conn);
        w->conn = NULL;
        drop_names(w);
        return KPB_SQL_TRANSIENT;
    }
    return -1;
}

/* Reads what pipeline_send() sent.  Returns as pipeline_collect(). */
static int pipeline_finish(kpb_writer_t *w, uint32_t *fenced,
                           kpb_write_stats_t *st) {
    int rc = pipeline_collect(w, fenced, st);
    /* What the pipeline prepared is known now (collect set the bits); a
     * Parse skipped after a failure must be sent again next time. */
    for (size_t t = 0; t < w->table_cnt; t++)
        w->tables[t].pending[0] = w->tables[t].pending[1] = 0;
    if (rc == -1) {
        st->dead = w->sent_dead;
        for (size_t i = 0; i < w->pend_cnt; i++)
            kpb_heads_put(w->heads, w->pend[i].table, w->pend[i].sid,
                          w->pend[i].sid_len, w->pend[i].head);
    }
    if (!PQexitPipelineMode(w->conn)) {
        PQfinish(w->conn);
        w->conn = NULL;
        drop_names(w);
        return rc == -1 ? KPB_SQL_TRANSIENT : rc;
    }
    return rc;
}

/* Forgets the refusals of an earlier try: a retried flush asks the database
 * again, and a refused row must not be written twice. */
static void forget_refusals(kpb_flush_t *f) {
    for (uint32_t i = 0; i < f->item_cnt; i++) {
        if (f->items[i].sqlstate) {
            f->items[i].reason = KPB_REASON_NONE;
            f->items[i].sqlstate = NULL;
            f->items[i].detail = NULL;
        }
    }
}

static void prepare(kpb_writer_t *w, kpb_flush_t *f) {
    need_rows(w, f);
    w->has_expect = 0;
    for (uint32_t i = 0; i < f->batch_cnt && !w->has_expect; i++)
        w->has_expect = f->items[f->batches[i].first].ev.expected_version >= 0;
    free(w->stmts);
    w->nstmt = kpb_insert_plan(f, (uint32_t)w->conf->max_events, &w->stmts);
    w->careful = 0;
    /* Expected versions are the trigger's to check: such a flush is
     * numbered by the trigger, as is every careful replay. */
    w->versioned = w->heads && !w->has_expect;
    forget_refusals(f);
}

/* The dead-letter topic must be confirmed before COMMIT, which a pipeline
 * sends up front: flushes with dead letters and that hook take the
 * statement-by-statement path. */
static int may_pipeline(const kpb_writer_t *w, const kpb_flush_t *f) {
    return !(w->hook && f->dead_cnt);
}

#define NOT_SENT (-3)

static kpb_write_rc_t complete(kpb_writer_t *w, kpb_flush_t *f,
                               const int64_t *from, int rc, uint32_t *fenced,
                               kpb_write_stats_t *stats, char *errstr,
                               size_t errstr_size);

int kpb_writer_send(kpb_writer_t *w, kpb_flush_t *f, const int64_t *from) {
    if (w->awaiting || !kpb_writer_connected(w) || !may_pipeline(w, f))
        return 0;
    prepare(w, f);
    w->send_rc = pipeline_send(w, f, from);
    w->awaiting = 1;
    return 1;
}

kpb_write_rc_t kpb_writer_finish(kpb_writer_t *w, kpb_flush_t *f,
                                 const int64_t *from, uint32_t *fenced,
                                 kpb_write_stats_t *stats, char *errstr,
                                 size_t errstr_size) {
    memset(stats, 0, sizeof(*stats));
    int rc = w->send_rc;
    w->awaiting = 0;
    if (rc == -1)
        rc = pipeline_finish(w, fenced, stats);
    return complete(w, f, from, rc, fenced, stats, errstr, errstr_size);
}

kpb_write_rc_t kpb_writer_write(kpb_writer_t *w, kpb_flush_t *f,
                                const int64_t *from, uint32_t *fenced,
                                kpb_write_stats_t *stats, char *errstr,
                                size_t errstr_size) {
    if (kpb_writer_send(w, f, from))
        return kpb_writer_finish(w, f, from, fenced, stats, errstr,
                                 errstr_size);
    memset(stats, 0, sizeof(*stats));
    if (!kpb_writer_connected(w)) {
        snprintf(errstr, errstr_size, "not connected to PostgreSQL");
        return KPB_WRITE_TRANSIENT;
    }
    prepare(w, f);
    return complete(w, f, from, NOT_SENT, fenced, stats, errstr, errstr_size);
}

/* Takes a write from the pipelined attempt's outcome @p rc (NOT_SENT: none
 * was made) to its end: done, fenced, failed, or replayed statement by
 * statement after a data error. */
static kpb_write_rc_t complete(kpb_writer_t *w, kpb_flush_t *f,
                               const int64_t *from, int rc, uint32_t *fenced,
                               kpb_write_stats_t *stats, char *errstr,
                               size_t errstr_size) {
    kpb_write_rc_t ret = KPB_WRITE_OK;
    int learned = 0;
    if (rc != NOT_SENT) {
        learned = rc == -1 && w->versioned;
        if (learned)
            stats->numbered = stats->events;
        if (rc == -1)
            goto out;
        if (rc == -2) {
            snprintf(errstr, errstr_size,
                     "%s partition %d: stored offset is no longer %lld "
                     "(another instance owns it now)",
                     f->parts[*fenced].topic,
                     (int)f->parts[*fenced].partition,
                     (long long)from[*fenced]);
            rollback(w);
            ret = KPB_WRITE_FENCED;
            goto out;
        }
        if (rc != KPB_SQL_DATA) {
            ret = fail(w, rc, "writing the flush", errstr, errstr_size);
            goto out;
        }
        kpb_info("flush refused (%s: %s); isolating the rows at fault",
                 w->errstate_buf, w->errmsg);
        rollback(w);
        w->careful = 1;
    }
again:
    memset(stats, 0, sizeof(*stats));
    forget_refusals(f);
    w->versioned = 0; /* the statement-by-statement path leaves it to the
                         trigger: it may drop rows out of a batch */
    if ((rc = run(w, "BEGIN", 0, NULL, NULL, NULL, PGRES_COMMAND_OK)) != -1) {
        ret = fail(w, rc, "BEGIN", errstr, errstr_size);
        goto out;
    }
    /* Offsets first: the row lock serialises two writers of one partition,
     * and a fenced writer learns it before it has written anything. */
    rc = write_offsets(w, f, from, fenced);
    if (rc == -2) {
        snprintf(errstr, errstr_size,
                 "%s partition %d: stored offset is no longer %lld (another "
                 "instance owns it now)",
                 f->parts[*fenced].topic, (int)f->parts[*fenced].partition,
                 (long long)from[*fenced]);
        rollback(w);
        ret = KPB_WRITE_FENCED;
        goto out;
    }
    if (rc != -1) {
        ret = fail(w, rc, "writing kpbridge_offsets", errstr, errstr_size);
        goto out;
    }

    for (uint32_t s = 0; s < w->nstmt; s++) {
        uint32_t n = flatten(w, f, &w->stmts[s]);
        const kpb_sbatch_t *sb0 = &f->batches[w->stmts[s].first];
        qname_t *qtable = table_of(w, sb0->table);
        if (!w->careful) {
            rc = insert_chunks(w, f, qtable, n);
            if (rc == -1) {
                stats->events += n;
                stats->statements++;
                continue;
            }
            if (rc == KPB_SQL_DATA) {
                /* Rare: replay the flush with savepoints, which cost two
                 * round trips per statement, only when a row is at fault. */
                kpb_info("statement of %u rows refused (%s: %s); isolating "
                         "the rows at fault",
                         n, w->errstate_buf, w->errmsg);
                rollback(w);
                w->careful = 1;
                goto again;
            }
            ret = fail(w, rc, "inserting events", errstr, errstr_size);
            goto out;
        }
        stats->isolations++;
        if ((rc = isolate(w, f, qtable, 0, n, stats)) != -1) {
            ret = fail(w, rc, "inserting events", errstr, errstr_size);
            goto out;
        }
        stats->statements++;
    }

    if ((rc = write_dead(w, f, stats)) != -1) {
        ret = fail(w, rc, "inserting dead letters", errstr, errstr_size);
        goto out;
    }
    if (w->hook && w->hook(w->hook_opaque, f, errstr, errstr_size)) {
        rollback(w);
        ret = KPB_WRITE_TRANSIENT;
        goto out;
    }
    if ((rc = run(w, "COMMIT", 0, NULL, NULL, NULL, PGRES_COMMAND_OK)) != -1) {
        ret = fail(w, rc, "COMMIT", errstr, errstr_size);
        goto out;
    }
out:
    w->versioned = 0;
    if (w->heads && !learned)
        forget_heads(w, f);
    return ret;
}
