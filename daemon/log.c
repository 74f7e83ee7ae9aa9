/*
 * log.c: chand's log, one timestamped line per event on stderr. The level
 * is set once from --log-level; callers on hot paths check log_enabled
 * before building their arguments.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "daemon.h"

static int log_level = LL_INFO;

static const char *const level_names[LL_MAX] = {
    [LL_ERROR] = "error",
    [LL_WARN] = "warn",
    [LL_INFO] = "info",
    [LL_DEBUG] = "debug",
};

void log_set_level(int level)
{
    log_level = level;
}

int log_enabled(int level)
{
    return level <= log_level;
}

int log_level_parse(const char *s)
{
    for (int i = 0; i < LL_MAX; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

void log_msg(int level, const char *fmt, ...)
{
    struct timespec ts;
    struct tm tm;
    char stamp[32];
    char line[1024];
    va_list ap;

    if (!log_enabled(level))
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* One fprintf per line, so lines from a crash dump never interleave mid-line. */
    fprintf(stderr, "%s.%03ldZ %s %s\n", stamp, ts.tv_nsec / 1000000, level_names[level], line);
}
