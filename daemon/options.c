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
#define DEFAULT_MAX_MEMORY ((uint64_t)1 << 30)
#define DEFAULT_MAX_CHANNELS 1000000
#define DEFAULT_MAX_PENDING 4096
#define DEFAULT_MAX_OUTPUT ((size_t)64 << 20)
#define DEFAULT_IDLE_TIMEOUT 60
#define DEFAULT_SESSION_TTL 300
/* A frame length is 32 bits and must also hold WIRE_HDR_MAX. */
#define MAX_MAX_MSG ((size_t)1 << 30)
#define MAX_MAX_CONNS 10000000
/* Longest auth token, bytes; the file's first line must fit. */
#define TOKEN_MAX 4096
/* Seconds: ten years is "for ever" without overflowing a timeval. */
#define MAX_SECONDS 315360000ULL

/* The token read from --auth-token-file: one per process, like the options. */
static char token_buf[TOKEN_MAX + 1];

static void options_usage(FILE *f)
{
    fprintf(f,
            "usage: chand [options]\n"
            "  --port N          TCP port to listen on (default %d; 0 picks a free one)\n"
            "  --bind ADDR       address to listen on (default 127.0.0.1; IPv6 too)\n"
            "  --port-file F     write the port to F once listening\n"
            "  --max-msg BYTES   largest message (default %d; K, M, G suffixes)\n"
            "  --max-conns N     most client connections at once (default %d)\n"
            "  --max-memory BYTES  message bytes held at most (buffered, unacked, waiting\n"
            "                    in a full channel); sends over it wait (default 1G; 0 = no limit)\n"
            "  --max-channels N  most channels; OPEN that would create more: NOMEM\n"
            "                    (default %d; 0 = no limit)\n"
            "  --max-pending N   blocked requests per connection; one more: BUSY (default %d)\n"
            "  --max-output BYTES  replies queued to a client that does not read, at most;\n"
            "                    past it the client is dropped (default 64M; never under\n"
            "                    twice the largest frame)\n"
            "  --idle-timeout S  drop a client that holds an incomplete frame (or has not\n"
            "                    sent HELLO) for S seconds (default %d; 0 = never)\n"
            "  --session-ttl S   remember a session's sent seqs S seconds after its last\n"
            "                    connection closed (default %d)\n"
            "  --expire-closed S delete a closed, drained, unused channel after S seconds\n"
            "                    (default 0 = never)\n"
            "  --auth-token-file F  HELLO must carry the first line of F\n"
            "  --insecure        allow a non-loopback --bind without a token\n"
            "  --log-level L     error, warn, info or debug (default info)\n"
            "  --version         print the version and exit\n"
            "  --help            print this and exit\n",
            DEFAULT_PORT, DEFAULT_MAX_MSG, DEFAULT_MAX_CONNS, DEFAULT_MAX_CHANNELS,
            DEFAULT_MAX_PENDING, DEFAULT_IDLE_TIMEOUT, DEFAULT_SESSION_TTL);
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

/* The token is the file's first line without its line end; an empty one is refused. */
static int options_token(struct options *o, const char *path)
{
    FILE *f = fopen(path, "r");
    size_t len;

    if (f == NULL) {
        fprintf(stderr, "chand: cannot read --auth-token-file %s: %s\n", path, strerror(errno));
        return 2;
    }
    if (fgets(token_buf, sizeof token_buf, f) == NULL)
        token_buf[0] = '\0';
    fclose(f);
    len = strcspn(token_buf, "\r\n");
    if (len == TOKEN_MAX) {
        fprintf(stderr, "chand: the token in %s is longer than %d bytes\n", path, TOKEN_MAX);
        return 2;
    }
    token_buf[len] = '\0';
    if (len == 0) {
        fprintf(stderr, "chand: --auth-token-file %s: the first line is empty\n", path);
        return 2;
    }
    o->token = token_buf;
    o->token_len = len;
    return 0;
}

/* Flags that take a value. */
static const char *const options_valued[] = {
    "--port", "--bind", "--port-file", "--max-msg", "--max-conns", "--log-level",
    "--max-memory", "--max-channels", "--max-pending", "--max-output", "--idle-timeout",
    "--session-ttl", "--expire-closed", "--auth-token-file", NULL,
};

static int options_known(const char *flag)
{
    for (size_t i = 0; options_valued[i] != NULL; i++)
        if (strcmp(flag, options_valued[i]) == 0)
            return 1;
    return 0;
}

void options_defaults(struct options *o)
{
    *o = (struct options){
        .bind = "127.0.0.1",
        .port = DEFAULT_PORT,
        .max_msg = DEFAULT_MAX_MSG,
        .max_conns = DEFAULT_MAX_CONNS,
        .max_memory = DEFAULT_MAX_MEMORY,
        .max_channels = DEFAULT_MAX_CHANNELS,
        .max_pending = DEFAULT_MAX_PENDING,
        .max_output = DEFAULT_MAX_OUTPUT,
        .idle_timeout = DEFAULT_IDLE_TIMEOUT,
        .session_ttl = DEFAULT_SESSION_TTL,
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
        if (strcmp(arg, "--insecure") == 0) {
            o->insecure = 1;
            continue;
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
        if (!options_known(flag))
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
        } else if (strcmp(flag, "--max-memory") == 0) {
            if (options_number(value, 1, 0, UINT64_MAX, &v) < 0)
                return options_bad(value, flag);
            o->max_memory = v;
        } else if (strcmp(flag, "--max-channels") == 0) {
            if (options_number(value, 0, 0, SIZE_MAX, &v) < 0)
                return options_bad(value, flag);
            o->max_channels = (size_t)v;
        } else if (strcmp(flag, "--max-pending") == 0) {
            if (options_number(value, 0, 1, MAX_MAX_CONNS, &v) < 0)
                return options_bad(value, flag);
            o->max_pending = (size_t)v;
        } else if (strcmp(flag, "--max-output") == 0) {
            if (options_number(value, 1, 1, SIZE_MAX, &v) < 0)
                return options_bad(value, flag);
            o->max_output = (size_t)v;
        } else if (strcmp(flag, "--idle-timeout") == 0) {
            if (options_number(value, 0, 0, MAX_SECONDS, &v) < 0)
                return options_bad(value, flag);
            o->idle_timeout = (long)v;
        } else if (strcmp(flag, "--session-ttl") == 0) {
            if (options_number(value, 0, 0, MAX_SECONDS, &v) < 0)
                return options_bad(value, flag);
            o->session_ttl = (long)v;
        } else if (strcmp(flag, "--expire-closed") == 0) {
            if (options_number(value, 0, 0, MAX_SECONDS, &v) < 0)
                return options_bad(value, flag);
            o->expire_closed = (long)v;
        } else if (strcmp(flag, "--auth-token-file") == 0) {
            int rc = options_token(o, value);
            if (rc != 0)
                return rc;
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
