/**
 * @file http.h
 * @brief The operator's HTTP endpoint (`http.listen`): `GET /metrics`,
 *        `GET /healthz` and `GET /readyz`, served by libmicrohttpd from its
 *        own thread.
 *
 * The server never touches the consumer's state: /metrics renders the
 * lock-free registry of metrics.h and /readyz asks a callback that must only
 * read atomics.  So a slow or stuck scraper can never block consumption.
 *
 * | request          | answer                                               |
 * |------------------|------------------------------------------------------|
 * | GET /metrics     | 200, `text/plain; version=0.0.4`, kpb_metrics_render |
 * | GET /healthz     | 200 `ok` while the process runs                      |
 * | GET /readyz      | 200 `ready` when ready() is nonzero, else 503        |
 * | other path       | 404                                                  |
 * | other method     | 405 with `Allow: GET, HEAD`                          |
 *
 * HEAD is answered like GET, without the body.  A query string is ignored.
 */
#ifndef KPB_HTTP_H
#define KPB_HTTP_H

#include <stddef.h>

#include "util.h"

typedef struct kpb_http_s kpb_http_t;

/**
 * @brief Binds @p listen and starts serving in a background thread.
 *
 * @param listen  "HOST:PORT": HOST an IPv4 address, `localhost`, or empty
 *                or `*` for every interface (":9187"); PORT 0..65535, where
 *                0 picks a free port (read it back with kpb_http_port()).
 * @param ready   readiness for /readyz, or NULL for "always ready".
 *                @remark Called from the HTTP thread, concurrently with the
 *                consumer loop: it must only read atomics (for example
 *                kpb_metrics_gauge()), never take a lock the consumer holds,
 *                and return at once.
 * @param opaque  passed to @p ready.
 * @param errstr  on failure, why, e.g.
 *                `http.listen 127.0.0.1:9187: cannot listen: Address already
 *                in use`.
 * @returns the running server, or NULL on failure (a bad @p listen, the
 *          port in use, no permission to bind).
 */
kpb_http_t *kpb_http_start(const char *listen, int (*ready)(void *opaque),
                           void *opaque, char *errstr,
                           size_t errstr_size) KPB_MUSTCHECK;

/** @brief The port actually bound (the chosen one when started on port 0). */
int kpb_http_port(const kpb_http_t *http);

/**
 * @brief Stops accepting, closes every connection, joins the HTTP thread and
 *        frees @p http.  NULL is a no-op.  After it returns, ready() is
 *        no longer called.
 */
void kpb_http_stop(kpb_http_t *http);

#endif
