/* The logger's line formats. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "util.h"

/* Logs one line with stderr sent to a file and returns that line. */
static char *capture(kpb_log_format_t format, const char *msg) {
    char path[] = "/tmp/kpbt_log_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    kpb_log_setup(KPB_LOG_INFO, format);
    kpb_info("%s", msg);
    kpb_debug("%s", "below the threshold");
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    char *text = kpbt_read_file(path, NULL);
    unlink(path);
    return text;
}

Test(log, writes_trailing_key_values_as_json_fields) {
    char *line = capture(KPB_LOG_JSON,
                         "flushed \"x\" events=1000 topic=orders "
                         "duration_ms=12.5 sqlstate=23505");
    json_error_t err;
    json_t *obj = json_loads(line, 0, &err);
    cr_assert(obj, "not JSON: %s: %s", err.text, line);
    cr_expect_str_eq(json_string_value(json_object_get(obj, "level")), "info");
    cr_expect_str_eq(json_string_value(json_object_get(obj, "msg")),
                     "flushed \"x\"");
    cr_expect_eq(json_integer_value(json_object_get(obj, "events")), 1000);
    cr_expect_str_eq(json_string_value(json_object_get(obj, "topic")),
                     "orders");
    cr_expect_float_eq(json_real_value(json_object_get(obj, "duration_ms")),
                       12.5, 1e-9);
    /* a SQLSTATE is a code even when it is all digits */
    cr_expect_str_eq(json_string_value(json_object_get(obj, "sqlstate")),
                     "23505");
    cr_expect(json_string_value(json_object_get(obj, "ts")));
    cr_expect_eq(strchr(line, '\n'), line + strlen(line) - 1, "one line");
    json_decref(obj);
    free(line);
}

Test(log, writes_text_lines_with_timestamp_and_level) {
    char *line = capture(KPB_LOG_TEXT, "revoked topic=t partition=3");
    cr_assert(line);
    cr_expect(strstr(line, " info  revoked topic=t partition=3\n"), "%s",
              line);
    cr_expect_eq(line[4], '-');
    cr_expect_eq(line[10], 'T');
    cr_expect_null(strstr(line, "below the threshold"));
    free(line);
}
