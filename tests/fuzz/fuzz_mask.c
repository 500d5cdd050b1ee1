/*
 * fuzz_mask.c - libFuzzer target for kpb_mask_conninfo(), the function that
 * stands between postgres.conninfo and every message that shows it.
 *
 * libpq itself is the oracle.  When PQconninfoParse() takes the input, the
 * masked text must parse too, to the same options except the password,
 * which must read "****" whenever the input sets a non-empty one.  Every
 * byte of a conninfo belongs to some option, so equal options mean the
 * password cannot hide anywhere else in the masked text.
 *
 * libpq refuses the input (say "host=db junk password=x"): the bridge then
 * prints the masked text in "cannot connect to ...", so it must still hide
 * what follows a `password =` that starts a key.  Checked for runs of 4+
 * letters and digits after it that occur only once in the input (a run found
 * elsewhere, say as the user name, may well be printed), and only before any
 * quote or backslash, where it is plain which words are keys.
 *
 * Short output buffers are tried too: the result must be cut, never overrun.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "util.h"

static void fm_die(const char *what, const char *in, const char *out) {
    fprintf(stderr,
            "fuzz_mask: invariant broken: %s\ninput:  [%s]\nmasked: [%s]\n",
            what, in, out);
    abort();
}

static const char *fm_opt(const PQconninfoOption *opts, const char *kw) {
    for (; opts && opts->keyword; opts++)
        if (strcmp(opts->keyword, kw) == 0)
            return opts->val;
    return NULL;
}

static int fm_alnum(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9');
}

static int fm_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
           c == '\v';
}

static size_t fm_count(const char *hay, const char *needle, size_t n) {
    size_t cnt = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++)
        if (strncmp(p, needle, n) == 0)
            cnt++;
    return cnt;
}

/* The refused-input check: see the comment at the top. */
static void fm_check_refused(const char *in, const char *out) {
    int uri = strncmp(in, "postgresql://", 13) == 0 ||
              strncmp(in, "postgres://", 11) == 0;
    /* libpq's query starts at the first '?' after any user@ */
    const char *auth = uri ? strstr(in, "://") + 3 : in;
    const char *at = strpbrk(auth, "@/");
    const char *query = strchr(at && *at == '@' ? at : auth, '?');

    for (const char *p = strstr(in, "password"); p;
         p = strstr(p + 1, "password")) {
        const char *v = p + 8;
        char run[64];
        size_t n = 0;

        /* A key of its own: "xpassword" is another (unknown) key, and
         * in a URI only the first '?' and a '&' after it start a key,
         * elsewhere only spaces. */
        if (uri ? !(p - 1 == query || (query && p > query && p[-1] == '&'))
                : p > in && !fm_space(p[-1]))
            continue;
        /* Past a quote or backslash, where a word ends is libpq's call:
         * leave those to the valid-conninfo check. */
        if (strcspn(in, "'\\") < (size_t)(p - in))
            continue;
        /* "dbname= password=x" is dbname's value to libpq, not a key. */
        {
            const char *q = p;
            while (q > in && fm_space(q[-1]))
                q--;
            if (q > in && q < p && q[-1] == '=')
                continue;
        }
        while (!uri && fm_space(*v))
            v++; /* "password = x" in key=value form; not in a URI */
        if (*v != '=')
            continue;
        v++;
        while (!uri && fm_space(*v))
            v++;
        if (*v == '\'')
            v++;
        while (fm_alnum(v[n]) && n < sizeof(run) - 1)
            n++;
        if (n < 4)
            continue;
        memcpy(run, v, n);
        run[n] = '\0';
        if (fm_count(in, run, n) == 1 && strstr(out, run))
            fm_die("a refused conninfo's password is shown", in, out);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *in, *out, small[8];
    size_t out_size;
    PQconninfoOption *opts_in, *opts_out;
    char *err = NULL;

    in = malloc(size + 1);
    if (!in)
        abort();
    memcpy(in, data, size);
    in[size] = '\0';
    /* Each byte may become "****" at most once per password; ample room. */
    out_size = 5 * size + 64;
    out = malloc(out_size);
    if (!out)
        abort();
    kpb_mask_conninfo(in, out, out_size);
    if (strlen(out) >= out_size - 1)
        fm_die("the masked text filled the whole buffer", in, out);
    for (size_t n = 1; n <= sizeof(small); n++) {
        memset(small, 'X', sizeof(small));
        kpb_mask_conninfo(in, small, n);
        if (strnlen(small, n) != (strlen(out) < n - 1 ? strlen(out) : n - 1) ||
            strncmp(small, out, n - 1) != 0)
            fm_die("a short buffer does not get a prefix", in, out);
    }

    opts_in = PQconninfoParse(in, &err);
    PQfreemem(err);
    err = NULL;
    if (!opts_in) {
        fm_check_refused(in, out);
        goto done;
    }
    opts_out = PQconninfoParse(out, &err);
    PQfreemem(err);
    if (!opts_out)
        fm_die("masking made a valid conninfo invalid", in, out);
    for (const PQconninfoOption *o = opts_in; o->keyword; o++) {
        const char *a = o->val, *b = fm_opt(opts_out, o->keyword);
        if (strcmp(o->keyword, "password") == 0) {
            if (a && *a && (!b || strcmp(b, "****") != 0))
                fm_die("the password is not masked", in, out);
            continue;
        }
        if ((a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0)) {
            fprintf(stderr, "fuzz_mask: %s: [%s] became [%s]\n", o->keyword,
                    a ? a : "(unset)", b ? b : "(unset)");
            fm_die("masking changed another option", in, out);
        }
    }
    PQconninfoFree(opts_out);
    PQconninfoFree(opts_in);
done:
    free(out);
    free(in);
    return 0;
}
