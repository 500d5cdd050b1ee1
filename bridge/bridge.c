#include "bridge.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "batcher.h"
#include "consumer.h"
#include "decode.h"
#include "metrics.h"
#include "offsets.h"
#include "util.h"
#include "writer.h"

typedef struct kpb_bridge_s {
    const kpb_config_t *conf;
    rd_kafka_t *rk;
    rd_kafka_t *dlp; /* dead-letter topic producer, when configured */
    int dl_failed;   /* delivery failures of the current dead-letter batch */
    kpb_writer_t *writer;
    kpb_batcher_t *batcher;
    kpb_offsets_t offsets;
    kpb_hdrvec_t hdrs;
    kpb_nudger_t *nudger; /* wakes the fetchers while draining */
    volatile sig_atomic_t *stop;
    int cooperative;
    int failed; /* a fatal error: stop with exit code 1 */
    int paused; /* every partition paused while the database is away */
    kpb_flush_t *inflight; /* the flush being written or retried */
    kpb_flush_t *sent;     /* a flush whose write is under way, unread */
    int64_t *sent_from;    /* its partitions' stored offsets when sent */
    int64_t sent_t0;
    int64_t failing_since; /* monotonic ms of the first failure, or -1 */
    uint64_t consumed, written, dead, flushes, retries, fenced;
    int64_t progress_at;       /* when progress was last reported */
    uint64_t progress_written; /* written + dead at that time */
    int progress_drawn;        /* a progress line is on the terminal */
    int assigned_once;  /* the group gave this member an assignment */
    int rebalancing;    /* between an eager revoke and the next assign */
    int64_t started_ms;
} kpb_bridge_t;

static void sleep_ms(int64_t ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void message_free(void *ref) {
    rd_kafka_message_destroy(ref);
}

static const kpb_topic_t *topic_of(const kpb_config_t *conf,
                                   const char *name) {
    return kpb_config_topic(conf, name);
}

/* Retry policy for transient database failures: 100 ms doubling to 30 s,
 * with jitter so that several instances do not reconnect in lock step.  The
 * whole flush is retried; nothing is skipped, so memory stays bounded only
 * because nothing more is consumed meanwhile (this loop does not poll). */
static int64_t backoff_ms(int attempt) {
    int64_t ms = 100;
    for (int i = 0; i < attempt && ms < 30000; i++)
        ms *= 2;
    if (ms > 30000)
        ms = 30000;
    return ms / 2 + (int64_t)(rand() % (int)(ms / 2 + 1));
}

static void commit_kafka(kpb_bridge_t *b, const kpb_flush_t *f, int async) {
    rd_kafka_topic_partition_list_t *list =
        rd_kafka_topic_partition_list_new((int)f->part_cnt);
    for (uint32_t i = 0; i < f->part_cnt; i++)
        rd_kafka_topic_partition_list_add(list, f->parts[i].topic,
                                          f->parts[i].partition)
            ->offset = f->parts[i].next_offset;
    /* The database already holds these positions; the Kafka commit is for
     * lag tools and for a fallback, so its failure is only logged. */
    rd_kafka_resp_err_t err = rd_kafka_commit(b->rk, list, async);
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        kpb_warn("kafka offset commit failed: %s (positions are safe in "
                 "PostgreSQL)",
                 rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(list);
}

/* Re-reads a fenced partition's stored position and starts over from it. */
static void refetch_position(kpb_bridge_t *b, const char *topic,
                             int32_t partition) {
    char err[512];
    int64_t next = -1;
    if (kpb_writer_positions(b->writer, topic, &partition, 1, &next, err,
                             sizeof(err))) {
        kpb_warn("%s", err);
        return;
    }
    kpb_pos_t *p = kpb_offsets_find(&b->offsets, topic, partition);
    if (!p)
        return;
    p->from = next;
    p->read = -1;
    p->at_end = 0;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(list, topic, partition)->offset =
        next >= 0 ? next : RD_KAFKA_OFFSET_STORED;
    rd_kafka_error_t *error = rd_kafka_seek_partitions(b->rk, list, 5000);
    if (error) {
        kpb_warn("seek %s [%d]: %s", topic, (int)partition,
                 rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
    rd_kafka_topic_partition_list_destroy(list);
}

static void count_flush(const kpb_flush_t *f, const kpb_write_stats_t *st,
                        int64_t ms) {
    kpb_metrics_add(KPB_METRIC_EVENTS_WRITTEN, st->events);
    kpb_metrics_add(KPB_METRIC_FLUSHES, 1);
    kpb_metrics_observe(KPB_METRIC_FLUSH_DURATION, (double)ms / 1000.0);
    kpb_metrics_observe(KPB_METRIC_BATCH_EVENTS, (double)st->events);
    kpb_metrics_set(KPB_METRIC_DB_CONNECTED, 1);
    for (uint32_t i = 0; i < f->item_cnt; i++)
        if (f->items[i].reason != KPB_REASON_NONE)
            kpb_metrics_dead_letter(kpb_reason_name(f->items[i].reason));
}

/* Consumer lag per partition: the high watermark librdkafka last saw minus
 * the stored position (what a restart would resume from). */
static int64_t update_lag(kpb_bridge_t *b) {
    int64_t total = 0;
    for (uint32_t i = 0; i < b->offsets.cnt; i++) {
        const kpb_pos_t *p = &b->offsets.pos[i];
        int64_t lo = -1, hi = -1;
        if (rd_kafka_get_watermark_offsets(b->rk, p->topic, p->partition, &lo,
                                           &hi) ||
            hi < 0)
            continue;
        int64_t pos = p->from >= 0 ? p->from : (lo >= 0 ? lo : 0);
        kpb_metrics_lag(p->topic, p->partition, hi > pos ? hi - pos : 0);
        total += hi > pos ? hi - pos : 0;
    }
    kpb_metrics_set(KPB_METRIC_KAFKA_ASSIGNED_PARTITIONS, b->offsets.cnt);
    kpb_metrics_set(KPB_METRIC_PENDING_EVENTS, kpb_batcher_count(b->batcher));
    return total;
}

/* Progress: on a terminal during --exit-at-end, one line redrawn each
 * second; otherwise a log line every 10 s.  The rate is over the last
 * report interval, so the ETA follows the current speed. */
static void report_progress(kpb_bridge_t *b, int64_t lag, int in_place) {
    int64_t now = kpb_now_ms();
    int64_t every = in_place ? 1000 : 10000;
    if (now < b->progress_at + every)
        return;
    double secs = (double)(now - b->progress_at) / 1000.0;
    double rate = b->progress_at ? (double)(b->written + b->dead -
                                            b->progress_written) /
                                       secs
                                 : 0.0;
    b->progress_at = now;
    b->progress_written = b->written + b->dead;
    char eta[32] = "?";
    if (rate > 0)
        snprintf(eta, sizeof(eta), "%.0f", (double)lag / rate);
    if (in_place) {
        fprintf(stderr,
                "\r\033[K%llu events written, %.0f events/s, lag %lld, "
                "ETA %s s",
                (unsigned long long)b->written, rate, (long long)lag, eta);
        fflush(stderr);
        b->progress_drawn = 1;
    } else {
        kpb_info("progress written=%llu dead_letters=%llu rate=%.0f lag=%lld "
                 "eta_s=%s",
                 (unsigned long long)b->written, (unsigned long long)b->dead,
                 rate, (long long)lag, eta);
    }
}

/* How a flush may wait out a database outage. */
typedef enum {
    FLUSH_RUN,    /* from the consume loop: keep polling Kafka meanwhile */
    FLUSH_REVOKE, /* inside a rebalance callback: no polling, bounded */
    FLUSH_FINAL,  /* shutdown or end: no polling, until written or given up */
} flush_mode_t;

/* The longest a revoke waits for the database before it lets the partitions
 * go unwritten; their next owner reads the records again. */
#define KPB_REVOKE_WAIT_MS 15000

static void pause_assigned(kpb_bridge_t *b, int pause) {
    rd_kafka_topic_partition_list_t *list = NULL;
    if (rd_kafka_assignment(b->rk, &list) || !list)
        return;
    if (pause)
        rd_kafka_pause_partitions(b->rk, list);
    else
        rd_kafka_resume_partitions(b->rk, list);
    rd_kafka_topic_partition_list_destroy(list);
    b->paused = pause;
}

static void handle_message(kpb_bridge_t *b, rd_kafka_message_t *rkm);
static int handle_error(kpb_bridge_t *b, rd_kafka_message_t *rkm);

/* Waits @p ms before the next try; in FLUSH_RUN mode it keeps polling so the
 * group membership survives a long outage and rebalances are served, with
 * every partition paused so that memory stays bounded by what was already
 * fetched. */
static void retry_wait(kpb_bridge_t *b, flush_mode_t mode, int64_t ms) {
    int64_t until = kpb_now_ms() + ms;
    if (mode == FLUSH_RUN && !b->paused)
        pause_assigned(b, 1);
    for (int64_t left; (left = until - kpb_now_ms()) > 0;) {
        int slice = left > 100 ? 100 : (int)left;
        if (mode != FLUSH_RUN || *b->stop) {
            sleep_ms(slice);
            continue;
        }
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(b->rk, slice);
        if (!rkm)
            continue;
        if (!rkm->err) {
            handle_message(b, rkm);
            continue;
        }
        if (handle_error(b, rkm))
            b->failed = 1;
        rd_kafka_message_destroy(rkm);
    }
}

/* After a flush was abandoned unwritten, nothing read after it may be
 * written either, or the stored offset would jump over it: drop what is
 * buffered for its partitions and read them again from the stored offset. */
static void rewind_partitions(kpb_bridge_t *b, const kpb_flush_t *f) {
    for (uint32_t i = 0; i < f->part_cnt; i++) {
        kpb_batcher_drop_partition(b->batcher, f->parts[i].topic,
                                   f->parts[i].partition);
        if (kpb_offsets_find(&b->offsets, f->parts[i].topic,
                             f->parts[i].partition))
            refetch_position(b, f->parts[i].topic, f->parts[i].partition);
    }
}

static int64_t *stored_from(kpb_bridge_t *b, const kpb_flush_t *f) {
    int64_t *from = kpb_xmalloc((f->part_cnt ? f->part_cnt : 1) *
                                sizeof(*from));
    for (uint32_t i = 0; i < f->part_cnt; i++)
        from[i] = kpb_offsets_find(&b->offsets, f->parts[i].topic,
                                   f->parts[i].partition)
                      ->from;
    return from;
}

/* Writes @p f in one transaction, retrying transient failures, and frees
 * it.  With @p sent_from, its write was sent already (kpb_writer_send())
 * with those positions, and the first try reads its outcome.  Returns 0
 * when written (or nothing was left), -1 when not written: b->failed is
 * then set unless the caller may carry on. */
static int write_flush(kpb_bridge_t *b, kpb_flush_t *f, flush_mode_t mode,
                       int64_t *sent_from, int64_t t0) {
    b->inflight = f;
    int attempt = 0, rc = -1;
    char err[1024] = "", last_err[1024] = "";
    for (;;) {
        /* Partitions revoked while this flush waited are not ours to
         * write any more (a write already sent had them all). */
        for (uint32_t i = 0; !sent_from && i < f->part_cnt;) {
            if (kpb_offsets_find(&b->offsets, f->parts[i].topic,
                                 f->parts[i].partition)) {
                i++;
                continue;
            }
            kpb_flush_drop_partition(f, f->parts[i].topic,
                                     f->parts[i].partition,
                                     b->conf->max_events);
        }
        if (!sent_from && f->item_cnt == 0) {
            rc = 0;
            break;
        }
        int64_t *from = sent_from ? sent_from : stored_from(b, f);
        kpb_write_stats_t st;
        uint32_t fenced = 0;
        kpb_write_rc_t wrc = KPB_WRITE_TRANSIENT;
        if (sent_from)
            wrc = kpb_writer_finish(b->writer, f, from, &fenced, &st, err,
                                    sizeof(err));
        else if (kpb_writer_connect(b->writer, err, sizeof(err)) == 0)
            wrc = kpb_writer_write(b->writer, f, from, &fenced, &st, err,
                                   sizeof(err));
        free(from);
        sent_from = NULL;
        if (wrc == KPB_WRITE_OK) {
            for (uint32_t i = 0; i < f->part_cnt; i++)
                kpb_offsets_written(&b->offsets, f->parts[i].topic,
                                    f->parts[i].partition,
                                    f->parts[i].next_offset);
            commit_kafka(b, f, mode == FLUSH_RUN);
            b->written += st.events;
            b->dead += st.dead;
            b->flushes++;
            count_flush(f, &st, kpb_now_ms() - t0);
            kpb_debug("flushed events=%u dead_letters=%u statements=%u "
                      "partitions=%u duration_ms=%lld",
                      st.events, st.dead, st.statements, f->part_cnt,
                      (long long)(kpb_now_ms() - t0));
            if (attempt)
                kpb_info("database write succeeded after %d retries",
                         attempt);
            rc = 0;
            break;
        }
        if (wrc == KPB_WRITE_FENCED) {
            kpb_fpart_t part = f->parts[fenced];
            kpb_warn("fenced, another instance owns the partition now; "
                     "dropping its buffered records topic=%s partition=%d",
                     part.topic, (int)part.partition);
            uint32_t n = kpb_flush_drop_partition(f, part.topic,
                                                  part.partition,
                                                  b->conf->max_events);
            n += kpb_batcher_drop_partition(b->batcher, part.topic,
                                            part.partition);
            b->fenced++;
            kpb_metrics_add(KPB_METRIC_FENCED, 1);
            kpb_info("dropped records that its owner reads again "
                     "topic=%s partition=%d records=%u",
                     part.topic, (int)part.partition, n);
            refetch_position(b, part.topic, part.partition);
            continue;
        }
        if (wrc == KPB_WRITE_FATAL) {
            kpb_error("database write failed: %s", err);
            b->failed = 1;
            break;
        }
        /* Transient: retry the whole flush; log each distinct cause once. */
        int64_t now = kpb_now_ms();
        if (b->failing_since < 0)
            b->failing_since = now;
        if (strcmp(err, last_err)) {
            kpb_warn("database write failed, will retry: %s", err);
            snprintf(last_err, sizeof(last_err), "%s", err);
        }
        b->retries++;
        kpb_metrics_add(KPB_METRIC_DB_RETRIES, 1);
        kpb_metrics_set(KPB_METRIC_DB_CONNECTED,
                        kpb_writer_connected(b->writer));
        if (b->conf->give_up_after_s &&
            now - b->failing_since >= b->conf->give_up_after_s * 1000LL) {
            kpb_error("giving up after %d s of database failures: %s",
                      b->conf->give_up_after_s, err);
            b->failed = 1;
            break;
        }
        if (mode == FLUSH_REVOKE && now - t0 >= KPB_REVOKE_WAIT_MS) {
            kpb_warn("revoke: the database stayed unreachable; releasing "
                     "the partitions unwritten (the next owner reads them "
                     "again)");
            rewind_partitions(b, f);
            break;
        }
        retry_wait(b, mode, backoff_ms(attempt++));
        if (b->failed)
            break;
    }
    if (rc == 0) {
        b->failing_since = -1;
        if (b->paused)
            pause_assigned(b, 0);
    }
    b->inflight = NULL;
    kpb_flush_destroy(f);
    return rc;
}

/* Reads the outcome of the write under way, if any (see flush()). */
static int finish_sent(kpb_bridge_t *b, flush_mode_t mode) {
    kpb_flush_t *f = b->sent;
    if (!f)
        return 0;
    int64_t *from = b->sent_from;
    b->sent = NULL;
    b->sent_from = NULL;
    return write_flush(b, f, mode, from, b->sent_t0);
}

/* Writes everything buffered in one transaction.  While running, the write
 * is only sent: the loop reads the next flush from Kafka while PostgreSQL
 * works, and this write's outcome is read when the next flush is due, when
 * a poll comes back empty, or before anything else needs the connection
 * (rebalance, shutdown).  One write is under way at most, so positions
 * still advance strictly in order.  Returns as write_flush(). */
static int flush(kpb_bridge_t *b, flush_mode_t mode) {
    if (finish_sent(b, mode))
        return -1;
    kpb_flush_t *f = kpb_batcher_take(b->batcher);
    if (!f)
        return 0;
    int64_t t0 = kpb_now_ms();
    if (mode == FLUSH_RUN && kpb_writer_connected(b->writer)) {
        int64_t *from = stored_from(b, f);
        if (kpb_writer_send(b->writer, f, from)) {
            b->sent = f;
            b->sent_from = from;
            b->sent_t0 = t0;
            return 0;
        }
        free(from);
    }
    return write_flush(b, f, mode, NULL, t0);
}

static void on_assign(kpb_bridge_t *b,
                      rd_kafka_topic_partition_list_t *parts) {
    b->assigned_once = 1;
    b->rebalancing = 0;
    char err[512];
    int attempt = 0;
    /* The new partitions' streams may have grown under another owner. */
    kpb_writer_forget_heads(b->writer);
    /* Positions are read on the writer's connection: the write under way
     * goes first (at most the revoke wait, then it is read again). */
    finish_sent(b, FLUSH_REVOKE);
    /* Positions come from the database: block until it answers, since
     * starting anywhere else could write twice.  librdkafka allows
     * max.poll.interval.ms for this. */
    for (;;) {
        int ok = kpb_writer_connect(b->writer, err, sizeof(err)) == 0;
        for (int i = 0; ok && i < parts->cnt; i++) {
            rd_kafka_topic_partition_t *tp = &parts->elems[i];
            const kpb_topic_t *t = topic_of(b->conf, tp->topic);
            int64_t next = -1;
            if (!t)
                continue;
            if (kpb_writer_positions(b->writer, t->name, &tp->partition, 1,
                                     &next, err, sizeof(err))) {
                ok = 0;
                break;
            }
            /* No row: Kafka's committed offset, then auto.offset.reset. */
            tp->offset = next >= 0 ? next : RD_KAFKA_OFFSET_INVALID;
            kpb_offsets_assign(&b->offsets, t->name, tp->partition, next);
            kpb_info("assigned, starting at the %s topic=%s partition=%d "
                     "offset=%lld",
                     next >= 0 ? "stored offset" : "Kafka position",
                     t->name, (int)tp->partition, (long long)next);
        }
        if (ok)
            break;
        kpb_warn("reading positions failed, will retry: %s", err);
        if (*b->stop) {
            b->failed = 1;
            break;
        }
        sleep_ms(backoff_ms(attempt++));
    }
    kpb_metrics_set(KPB_METRIC_KAFKA_ASSIGNED_PARTITIONS, b->offsets.cnt);
    if (b->cooperative) {
        rd_kafka_error_t *error = rd_kafka_incremental_assign(b->rk, parts);
        if (error) {
            kpb_error("incremental assign: %s", rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
        }
    } else {
        rd_kafka_assign(b->rk, parts);
    }
}

static void on_revoke(kpb_bridge_t *b,
                      rd_kafka_topic_partition_list_t *parts) {
    if (b->inflight || rd_kafka_assignment_lost(b->rk)) {
        /* Lost partitions belong to someone else already, and a flush that
         * is waiting for the database cannot be finished from here: drop
         * what is buffered for them.  Fencing keeps a late write out. */
        for (int i = 0; i < parts->cnt; i++)
            kpb_batcher_drop_partition(b->batcher, parts->elems[i].topic,
                                       parts->elems[i].partition);
    } else if (flush(b, FLUSH_REVOKE)) {
        /* Everything buffered is written before the partitions go, so the
         * next owner starts exactly where this one stopped. */
        kpb_warn("revoke: buffered records were not written; the next "
                 "owner reads them again");
    }
    for (int i = 0; i < parts->cnt; i++) {
        kpb_info("revoked topic=%s partition=%d", parts->elems[i].topic,
                 (int)parts->elems[i].partition);
        kpb_metrics_lag_remove(parts->elems[i].topic,
                               parts->elems[i].partition);
        kpb_offsets_revoke(&b->offsets, parts->elems[i].topic,
                           parts->elems[i].partition);
    }
    kpb_metrics_set(KPB_METRIC_KAFKA_ASSIGNED_PARTITIONS, b->offsets.cnt);
    if (b->cooperative) {
        rd_kafka_error_t *error = rd_kafka_incremental_unassign(b->rk, parts);
        if (error) {
            kpb_error("incremental unassign: %s",
                      rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
        }
    } else {
        rd_kafka_assign(b->rk, NULL);
        b->rebalancing = 1; /* an eager assign follows */
    }
}

/* --exit-at-end: every assigned partition is at its end.  A member left
 * with no partition (more members than partitions, or its partitions moved
 * to others) has nothing to read either, once no rebalance is under way. */
static int caught_up(const kpb_bridge_t *b) {
    if (!b->assigned_once || b->rebalancing)
        return 0;
    return b->offsets.cnt == 0 || kpb_offsets_all_at_end(&b->offsets);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts,
                         void *opaque) {
    kpb_bridge_t *b = opaque;
    (void)rk;
    b->cooperative = !strcmp(rd_kafka_rebalance_protocol(b->rk),
                             "COOPERATIVE");
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
        on_assign(b, parts);
    else if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
        on_revoke(b, parts);
    else {
        kpb_error("rebalance failed: %s", rd_kafka_err2str(err));
        rd_kafka_assign(b->rk, NULL);
    }
}

static void dl_delivered(rd_kafka_t *rk, const rd_kafka_message_t *rkm,
                         void *opaque) {
    kpb_bridge_t *b = opaque;
    (void)rk;
    if (rkm->err) {
        b->dl_failed++;
        kpb_warn("dead-letter topic: delivery failed: %s",
                 rd_kafka_err2str(rkm->err));
    }
}

static void add_header(rd_kafka_headers_t *h, const char *name,
                       const char *value) {
    if (value)
        rd_kafka_header_add(h, name, -1, value, -1);
}

/* Before COMMIT: the flush's dead letters are produced to the dead-letter
 * topic and confirmed, so that no offset covering them commits while they
 * could still be lost.  A retried flush produces them again: the topic is
 * at-least-once. */
static int produce_dead_letters(void *opaque, const kpb_flush_t *f,
                                char *errstr, size_t errstr_size) {
    kpb_bridge_t *b = opaque;
    int n = 0;
    b->dl_failed = 0;
    for (uint32_t i = 0; i < f->item_cnt; i++) {
        const kpb_item_t *it = &f->items[i];
        if (it->reason == KPB_REASON_NONE)
            continue;
        rd_kafka_headers_t *src = NULL, *h;
        if (it->src &&
            !rd_kafka_message_headers((const rd_kafka_message_t *)it->src,
                                      &src) &&
            src)
            h = rd_kafka_headers_copy(src);
        else
            h = rd_kafka_headers_new(8);
        char part[16], off[24];
        snprintf(part, sizeof(part), "%d", (int)it->partition);
        snprintf(off, sizeof(off), "%lld", (long long)it->offset);
        add_header(h, "kpbridge-reason", kpb_reason_name(it->reason));
        add_header(h, "kpbridge-sqlstate", it->sqlstate);
        add_header(h, "kpbridge-detail", it->detail);
        add_header(h, "kpbridge-topic", it->topic);
        add_header(h, "kpbridge-partition", part);
        add_header(h, "kpbridge-offset", off);
        rd_kafka_resp_err_t err;
        for (;;) {
            err = rd_kafka_producev(
                b->dlp, RD_KAFKA_V_TOPIC(b->conf->dl_topic),
                RD_KAFKA_V_KEY((void *)it->key, it->key ? it->key_len : 0),
                RD_KAFKA_V_VALUE((void *)it->value,
                                 it->value ? it->value_len : 0),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
            if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
                break;
            rd_kafka_poll(b->dlp, 100);
        }
        if (err) {
            rd_kafka_headers_destroy(h);
            snprintf(errstr, errstr_size, "dead-letter topic %s: %s",
                     b->conf->dl_topic, rd_kafka_err2str(err));
            rd_kafka_purge(b->dlp, RD_KAFKA_PURGE_F_QUEUE);
            rd_kafka_flush(b->dlp, 1000);
            return -1;
        }
        n++;
    }
    if (!n)
        return 0;
    rd_kafka_resp_err_t err = rd_kafka_flush(b->dlp, 30000);
    if (err || b->dl_failed) {
        snprintf(errstr, errstr_size,
                 "dead-letter topic %s: %d of %d deliveries not confirmed",
                 b->conf->dl_topic, err ? n : b->dl_failed, n);
        return -1;
    }
    return 0;
}

static rd_kafka_t *dl_producer(kpb_bridge_t *b) {
    char err[512];
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    /* The consumer's properties (security, SASL, ...) apply here too, minus
     * what only a consumer understands. */
    for (size_t i = 0; i < b->conf->kafka_prop_cnt; i++)
        (void)rd_kafka_conf_set(kc, b->conf->kafka_props[i].key,
                                b->conf->kafka_props[i].value, err,
                                sizeof(err));
    static const char *fixed[][2] = {
        {"enable.idempotence", "true"},
        {"acks", "all"},
        {"linger.ms", "5"},
        {"client.id", "kpbridge-dead-letters"},
    };
    rd_kafka_conf_set(kc, "bootstrap.servers", b->conf->brokers, err,
                      sizeof(err));
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        rd_kafka_conf_set(kc, fixed[i][0], fixed[i][1], err, sizeof(err));
    rd_kafka_conf_set_log_cb(kc, kpb_consumer_log_cb);
    rd_kafka_conf_set_opaque(kc, b);
    rd_kafka_conf_set_dr_msg_cb(kc, dl_delivered);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, sizeof(err));
    if (!rk) {
        rd_kafka_conf_destroy(kc);
        kpb_error("cannot create the dead-letter producer: %s", err);
    }
    return rk;
}

static void handle_message(kpb_bridge_t *b, rd_kafka_message_t *rkm) {
    const char *name = rd_kafka_topic_name(rkm->rkt);
    const kpb_topic_t *t = topic_of(b->conf, name);
    if (!t || !kpb_offsets_find(&b->offsets, t->name, rkm->partition)) {
        /* Not ours (any more): a late message of a revoked partition. */
        rd_kafka_message_destroy(rkm);
        return;
    }
    kpb_record_t rec;
    kpb_consumer_record(rkm, t->name, &b->hdrs, &rec);
    kpb_item_t item;
    memset(&item, 0, sizeof(item));
    char detail[512];
    item.reason = kpb_decode(t, &rec, (size_t)b->conf->max_record_bytes,
                             kpb_batcher_arena(b->batcher), &item.ev, detail,
                             sizeof(detail));
    item.topic = t->name;
    item.table = t->table;
    item.partition = rkm->partition;
    item.offset = rkm->offset;
    item.key = rkm->key;
    item.key_len = rkm->key_len;
    item.value = rkm->payload;
    item.value_len = rkm->len;
    item.src = rkm;
    if (item.reason != KPB_REASON_NONE) {
        item.detail = kpb_arena_strndup(kpb_batcher_arena(b->batcher),
                                        detail, strlen(detail));
        kpb_warn("dead letter: %s topic=%s partition=%d offset=%lld "
                 "reason=%s",
                 detail, t->name, (int)rkm->partition,
                 (long long)rkm->offset, kpb_reason_name(item.reason));
    }
    kpb_offsets_read(&b->offsets, t->name, rkm->partition, rkm->offset);
    b->consumed++;
    kpb_metrics_add(KPB_METRIC_EVENTS_CONSUMED, 1);
    kpb_batcher_add(b->batcher, &item, kpb_now_ms());
    kpb_batcher_keep(b->batcher, rkm);
}

static int handle_error(kpb_bridge_t *b, rd_kafka_message_t *rkm) {
    if (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        const char *name = rkm->rkt ? rd_kafka_topic_name(rkm->rkt) : "";
        const kpb_topic_t *t = topic_of(b->conf, name);
        if (t)
            kpb_offsets_eof(&b->offsets, t->name, rkm->partition,
                            rkm->offset);
        return 0;
    }
    rd_kafka_resp_err_t err = rkm->err;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char reason[512];
        err = rd_kafka_fatal_error(b->rk, reason, sizeof(reason));
        kpb_error("fatal kafka error: %s: %s", rd_kafka_err2name(err),
                  reason);
        return -1;
    }
    kpb_warn("kafka: %s", rd_kafka_message_errstr(rkm));
    return 0;
}

int kpb_bridge_run(const kpb_config_t *conf, int exit_at_end,
                   volatile sig_atomic_t *stop) {
    kpb_bridge_t b;
    char err[1024];
    memset(&b, 0, sizeof(b));
    b.conf = conf;
    b.stop = stop;
    b.started_ms = kpb_now_ms();
    b.failing_since = -1;
    /* The backoff's jitter must differ between instances, or they retry a
     * recovering database in lock step. */
    srand((unsigned)getpid() ^ (unsigned)kpb_wall_ms());
    kpb_offsets_init(&b.offsets);
    b.writer = kpb_writer_new(conf);
    b.batcher = kpb_batcher_new(conf->max_events, conf->flush_events,
                                conf->linger_ms, message_free);
    int code = 1;

    rd_kafka_conf_t *kc = kpb_consumer_conf(conf, err, sizeof(err));
    if (!kc) {
        kpb_error("%s", err);
        goto out;
    }
    rd_kafka_conf_set_opaque(kc, &b);
    rd_kafka_conf_set_rebalance_cb(kc, rebalance_cb);
    b.rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, err, sizeof(err));
    if (!b.rk) {
        rd_kafka_conf_destroy(kc);
        kpb_error("cannot create the Kafka consumer: %s", err);
        goto out;
    }
    rd_kafka_poll_set_consumer(b.rk);
    if (conf->dl_topic) {
        if (!(b.dlp = dl_producer(&b)))
            goto out;
        kpb_writer_set_hook(b.writer, produce_dead_letters, &b);
    }

    /* Connect early so a wrong conninfo fails fast, before joining. */
    int attempt = 0;
    while (kpb_writer_connect(b.writer, err, sizeof(err))) {
        kpb_metrics_set(KPB_METRIC_DB_CONNECTED, 0);
        kpb_warn("%s; will retry", err);
        if (*stop)
            goto out;
        sleep_ms(backoff_ms(attempt++));
    }

    rd_kafka_topic_partition_list_t *subs =
        rd_kafka_topic_partition_list_new((int)conf->topic_cnt);
    for (size_t i = 0; i < conf->topic_cnt; i++)
        rd_kafka_topic_partition_list_add(subs, conf->topics[i].name,
                                          RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t rerr = rd_kafka_subscribe(b.rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (rerr) {
        kpb_error("subscribe: %s", rd_kafka_err2str(rerr));
        goto out;
    }
    kpb_metrics_set(KPB_METRIC_DB_CONNECTED, 1);
    if (kpb_consumer_needs_nudger() &&
        !(b.nudger = kpb_nudger_start(b.rk, KPB_NUDGE_MS)))
        kpb_warn("cannot start the fetch nudger: a backlog drains slower");
    kpb_info("kpbridge %s consuming %zu topic(s) as group %s", KPB_VERSION,
             conf->topic_cnt, conf->group_id);
    int64_t next_lag = 0;
    int in_place = exit_at_end && isatty(STDERR_FILENO);

    while (!*stop && !b.failed) {
        int64_t now = kpb_now_ms();
        int64_t wait = kpb_batcher_wait_ms(b.batcher, now);
        int timeout = wait < 0 || wait > 100 ? 100 : (int)wait;
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(b.rk, timeout);
        /* Nothing more to read for now: take the write under way to its
         * end, so its Kafka commit and figures do not wait. */
        if (!rkm && b.sent && finish_sent(&b, FLUSH_RUN) && b.failed)
            break;
        if (rkm) {
            if (rkm->err) {
                int fatal = handle_error(&b, rkm);
                rd_kafka_message_destroy(rkm);
                if (fatal) {
                    b.failed = 1;
                    break;
                }
            } else {
                kpb_nudger_active(b.nudger);
                handle_message(&b, rkm);
            }
        }
        if (kpb_batcher_due(b.batcher, kpb_now_ms()) && flush(&b, FLUSH_RUN))
            break;
        if (kpb_now_ms() >= next_lag) {
            int64_t lag = update_lag(&b);
            if (b.offsets.cnt)
                report_progress(&b, lag, in_place);
            /* Idle, nothing else would notice the database going away. */
            if (kpb_batcher_count(b.batcher) == 0 && !b.sent)
                kpb_metrics_set(KPB_METRIC_DB_CONNECTED,
                                kpb_writer_ping(b.writer));
            next_lag = kpb_now_ms() + 1000;
        }
        if (exit_at_end && caught_up(&b)) {
            if (flush(&b, FLUSH_FINAL))
                break;
            if (kpb_batcher_count(b.batcher) == 0 && caught_up(&b)) {
                kpb_info("every assigned partition is at its end");
                break;
            }
        }
    }

    /* Shutdown order: stop polling, flush what is buffered, final
     * synchronous commit (inside flush), leave the group, destroy. */
    if (!b.failed && flush(&b, FLUSH_FINAL))
        b.failed = 1;
    code = b.failed ? 1 : 0;
    if (b.progress_drawn)
        fputc('\n', stderr);
    kpb_info("stopping: consumed=%llu written=%llu dead_letters=%llu "
             "flushes=%llu seconds=%.1f",
             (unsigned long long)b.consumed, (unsigned long long)b.written,
             (unsigned long long)b.dead, (unsigned long long)b.flushes,
             (double)(kpb_now_ms() - b.started_ms) / 1000.0);
out:
    /* A write left under way by a fatal error: unread, it commits or not
     * on its own; the stored positions say which. */
    kpb_flush_destroy(b.sent);
    free(b.sent_from);
    kpb_nudger_stop(b.nudger);
    if (b.rk) {
        rd_kafka_consumer_close(b.rk);
        kpb_batcher_destroy(b.batcher);
        b.batcher = NULL;
        rd_kafka_destroy(b.rk);
    }
    if (b.dlp) {
        rd_kafka_flush(b.dlp, 10000);
        rd_kafka_destroy(b.dlp);
    }
    kpb_batcher_destroy(b.batcher);
    kpb_writer_destroy(b.writer);
    kpb_offsets_fini(&b.offsets);
    kpb_hdrvec_fini(&b.hdrs);
    return code;
}
