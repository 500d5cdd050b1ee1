/*
 * The fuzzers' findings as ordinary tests.  Every file under
 * tests/fuzz/regressions/TARGET/ once crashed TARGET; each is run through
 * the fuzz target's own code (the .c file is included with its entry points
 * renamed), so the invariants the fuzzer checks hold here too and a
 * violation crashes the test.  The seed corpora run the same way, which keeps
 * the harnesses honest on the inputs that describe normal use.
 *
 * Each bug the fuzzer found also has a plain test below that states the
 * expected behaviour directly.
 */
#include <criterion/criterion.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "decode.h"
#include "harness.h"
#include "util.h"

#define LLVMFuzzerInitialize kpbt_fuzz_config_init
#define LLVMFuzzerTestOneInput kpbt_fuzz_config_one
#include "fuzz/fuzz_config.c"
#undef LLVMFuzzerInitialize
#undef LLVMFuzzerTestOneInput

#define LLVMFuzzerTestOneInput kpbt_fuzz_decode_one
#include "fuzz/fuzz_decode.c"
#undef LLVMFuzzerTestOneInput

#define LLVMFuzzerTestOneInput kpbt_fuzz_mask_one
#include "fuzz/fuzz_mask.c"
#undef LLVMFuzzerTestOneInput

#define FUZZ_DIR KPB_SOURCE_DIR "/tests/fuzz/"

typedef int (*one_input_fn)(const uint8_t *data, size_t size);

/* Runs every file of FUZZ_DIR/sub through fn; returns how many there were.
 * Each input gets a heap block of exactly its size, as libFuzzer gives it,
 * so ASan builds see a read past its end. */
static size_t run_dir(const char *sub, one_input_fn fn) {
    char dir[1024], path[2048];
    struct dirent *de;
    size_t cnt = 0;
    DIR *d;

    snprintf(dir, sizeof(dir), "%s%s", FUZZ_DIR, sub);
    d = opendir(dir);
    cr_assert_not_null(d, "cannot open %s", dir);
    while ((de = readdir(d))) {
        size_t len = 0;
        char *text;
        uint8_t *exact;

        if (de->d_name[0] == '.')
            continue; /* ., .. and .gitkeep */
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        text = kpbt_read_file(path, &len);
        cr_assert_not_null(text, "cannot read %s", path);
        exact = malloc(len ? len : 1);
        cr_assert_not_null(exact);
        memcpy(exact, text, len);
        free(text);
        cr_log_info("%s", path);
        cr_assert_eq(fn(exact, len), 0, "%s", path);
        free(exact);
        cnt++;
    }
    closedir(d);
    return cnt;
}

Test(fuzz_regressions, config_inputs_that_crashed_the_fuzzer_are_safe) {
    kpbt_fuzz_config_init(NULL, NULL);
    cr_log_info("%zu inputs",
                run_dir("regressions/fuzz_config", kpbt_fuzz_config_one));
}

Test(fuzz_regressions, decode_inputs_that_crashed_the_fuzzer_are_safe) {
    cr_log_info("%zu inputs",
                run_dir("regressions/fuzz_decode", kpbt_fuzz_decode_one));
}

Test(fuzz_regressions, config_seed_corpus_holds_the_fuzzer_invariants) {
    kpbt_fuzz_config_init(NULL, NULL);
    cr_assert_gt(run_dir("corpus/fuzz_config", kpbt_fuzz_config_one), 0);
}

Test(fuzz_regressions, decode_seed_corpus_holds_the_fuzzer_invariants) {
    cr_assert_gt(run_dir("corpus/fuzz_decode", kpbt_fuzz_decode_one), 0);
}

Test(fuzz_regressions, mask_inputs_that_crashed_the_fuzzer_are_safe) {
    cr_log_info("%zu inputs",
                run_dir("regressions/fuzz_mask", kpbt_fuzz_mask_one));
}

Test(fuzz_regressions, mask_seed_corpus_holds_the_fuzzer_invariants) {
    cr_assert_gt(run_dir("corpus/fuzz_mask", kpbt_fuzz_mask_one), 0);
}

/* ---- the bugs fuzz_mask found in kpb_mask_conninfo, stated plainly ------ */

static const char *masked(const char *conninfo) {
    static char out[256];
    kpb_mask_conninfo(conninfo, out, sizeof(out));
    return out;
}

/* libpq refuses the string, so the bridge prints it in "cannot connect to";
 * the mask used to print everything after the bad word as it was. */
Test(fuzz_regressions, mask_hides_a_password_after_a_word_without_equals) {
    cr_assert_str_eq(masked("host=db junk password=s3cret"),
                     "host=db junk password=****");
}

/* libpq decodes %XX in URI query keys as well as in values. */
Test(fuzz_regressions, mask_hides_a_uri_password_key_with_percent_escapes) {
    cr_assert_str_eq(masked("postgresql://db/events?%70assword=s3cret"),
                     "postgresql://db/events?%70assword=****");
    cr_assert_str_eq(masked("postgresql://db/e?sslmode=require&pass%77ord=x"),
                     "postgresql://db/e?sslmode=require&pass%77ord=****");
}

/* A quote left open swallows the rest of the string, password included. */
Test(fuzz_regressions, mask_hides_the_rest_of_an_unterminated_quoted_value) {
    cr_assert_str_eq(masked("host='db password=s3cret"), "host=****");
}

/* libpq's user info runs to the '@' met before any '/', '?' or not: the
 * query (and its password) starts after it. */
Test(fuzz_regressions,
     mask_finds_the_uri_query_after_a_user_with_a_question_mark) {
    cr_assert_str_eq(masked("postgresql://us?er@db/events?password=s3cret"),
                     "postgresql://us?er@db/events?password=****");
}

/* libpq reads "password='x'host=db" as two keys; an unquoted "****" must not
 * swallow the second. */
Test(fuzz_regressions, mask_keeps_the_key_after_a_quoted_password_apart) {
    cr_assert_str_eq(masked("password='s3cret'host=db"),
                     "password=**** host=db");
}
