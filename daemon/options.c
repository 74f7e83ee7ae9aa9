/*
 * options.c: chand's command line. Every flag takes "--flag value" or
 * "--flag=value"; anything unknown or out of range ends in exactly one
 * line on stderr naming it, and exit status 2, so scripts can tell a typo
 * from a runtime failure.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"

#define DEFAULT_PORT 7070
#define DEFAULT_MAX_MSG 1048576
#define DEFAULT_MAX_CONNS 10000
/* A frame length is 32 bits and must also hold WIRE_HDR_MAX. */
#define MAX_MAX_MSG ((size_t)1 << 30)
#define MAX_MAX_CONNS 10000000

static void options_usage(FILE *f)
{
    fprintf(f,
            "usage: chand [options]\n"
            "  --port N          TCP port to listen on (default %d; 0 picks a free one)\n"
            "  --bind ADDR       address to listen on (default 127.0.0.1; IPv6 too)\n"
            "  --port-file F     write the port to F once listening\n"
            "  --max-msg BYTES   largest message (default %d; K, M, G suffixes)\n"
            "  --max-conns N     most client connections at once (default %d)\n"
            "  --log-level L     error, warn, info or debug (default info)\n"
            "  --version         print the version and exit\n"
            "  --help            print this and exit\n",
            DEFAULT_PORT, DEFAULT_MAX_MSG, DEFAULT_MAX_CONNS);
}

/*
 * Parse a decimal count in [lo, hi]; with suffixes, K/M/G multiply by
 * 1024^1..3. Returns 0, or -1 for anything else (signs, spaces, overflow).
 */
static int options_number(const char *s, int suffixes, unsigned long long lo,
                          unsigned long long hi, unsigned long long *out)
{
    unsigned long long v;
    char *end;

    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0)
        return -1;
    if (suffixes && *end != '\0' && end[1] == '\0') {
        int shift = *end == 'K' || *end == 'k' ? 10 : *end == 'M' || *end == 'm' ? 20
                  : *end == 'G' || *end == 'g' ? 30 : -1;
        if (shift < 0 || v > (ULLONG_MAX >> shift))
            return -1;
        v <<= shift;
        end++;
    }
    if (*end != '\0' || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int options_bad(const char *value, const char *flag)
{
    fprintf(stderr, "chand: bad value '%s' for %s\n", value, flag);
    return 2;
}

void options_defaults(struct options *o)
{
    *o = (struct options){
        .bind = "127.0.0.1",
        .port = DEFAULT_PORT,
        .max_msg = DEFAULT_MAX_MSG,
        .max_conns = DEFAULT_MAX_CONNS,
        .log_level = LL_INFO,
    };
}

int options_parse(struct options *o, int argc, char **argv)
{
    options_defaults(o);

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value = NULL;
        char flag[32];
        const char *eq;
        unsigned long long v;

        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            options_usage(stdout);
            return 1;
        }
        if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0) {
            printf("chand %s\n", PACKAGE_VERSION);
            return 1;
        }
        if (strncmp(arg, "--", 2) != 0) {
            fprintf(stderr, "chand: unexpected argument '%s'\n", arg);
            return 2;
        }
        /* --flag=value or --flag value */
        eq = strchr(arg, '=');
        if (eq != NULL) {
            if ((size_t)(eq - arg) >= sizeof flag)
                goto unknown;
            memcpy(flag, arg, (size_t)(eq - arg));
            flag[eq - arg] = '\0';
            value = eq + 1;
        } else {
            if (strlen(arg) >= sizeof flag)
                goto unknown;
            strcpy(flag, arg);
        }
        if (strcmp(flag, "--port") != 0 && strcmp(flag, "--bind") != 0 &&
            strcmp(flag, "--port-file") != 0 && strcmp(flag, "--max-msg") != 0 &&
            strcmp(flag, "--max-conns") != 0 && strcmp(flag, "--log-level") != 0)
            goto unknown;
        if (value == NULL) {
            if (i + 1 >= argc) {
                fprintf(stderr, "chand: option '%s' needs a value\n", flag);
                return 2;
            }
            value = argv[++i];
        }

        if (strcmp(flag, "--port") == 0) {
            if (options_number(value, 0, 0, 65535, &v) < 0)
                return options_bad(value, flag);
            o->port = (long)v;
        } else if (strcmp(flag, "--bind") == 0) {
            if (*value == '\0')
                return options_bad(value, flag);
            o->bind = value;
        } else if (strcmp(flag, "--port-file") == 0) {
            if (*value == '\0')
                return options_bad(value, flag);
            o->port_file = value;
        } else if (strcmp(flag, "--max-msg") == 0) {
            if (options_number(value, 1, 0, MAX_MAX_MSG, &v) < 0)
                return options_bad(value, flag);
            o->max_msg = (size_t)v;
        } else if (strcmp(flag, "--max-conns") == 0) {
            if (options_number(value, 0, 1, MAX_MAX_CONNS, &v) < 0)
                return options_bad(value, flag);
            o->max_conns = (size_t)v;
        } else {
            int level = log_level_parse(value);
            if (level < 0)
                return options_bad(value, flag);
            o->log_level = level;
        }
        continue;
unknown:
        fprintf(stderr, "chand: unknown option '%.*s'\n",
                (int)(eq != NULL ? (size_t)(eq - arg) : strlen(arg)), arg);
        return 2;
    }
    return 0;
}
