/*
 * harness.h: the part of every load-test program that does not depend on
 * the broker under test. harness.c parses the command line, forks the
 * producer, consumer, ping and echo processes, releases them at once,
 * verifies that every message arrived exactly once and prints one result
 * line of key=value pairs for run.sh. Each peer_*.c file supplies a struct
 * bench_peer: how to produce, consume, ping and echo with that broker.
 *
 * A message starts with a 16-byte header: its sequence number and the
 * sequence number's complement (both little-endian 64-bit); the rest is
 * filler. Sequence numbers 0..n-1 are split among the producers, so the
 * count, sum and xor of those received prove exactly-once delivery.
 */
#ifndef BENCH_HARNESS_H
#define BENCH_HARNESS_H

#include <stddef.h>
#include <stdint.h>

#define BENCH_HDR 16          /* bytes of header every message carries */
#define BENCH_MAX_PROCS 64    /* producers + consumers */
#define BENCH_POLL_MS 50      /* consumers' receive timeout, to look for the end */

/* The command line, shared read-only by every process of one run. */
struct bench_opts {
    const char *workload;     /* "queue" (also fan, large) or "rtt" */
    const char *variant;      /* "one" (one op per call) or "batch"; printed */
    const char *label;        /* printed as workload= (queue, fan, large64k...) */
    const char *addr;         /* broker "host:port" */
    const char *name;         /* channel, list, subject or tube name */
    long n;                   /* messages (queue) or measured round trips (rtt) */
    long warmup;              /* rtt: round trips before measuring */
    size_t size;              /* bytes per message, >= BENCH_HDR */
    int producers;            /* producer processes */
    int consumers;            /* consumer processes */
    int conc;                 /* coroutines per process (chand); 1 elsewhere */
    int batch;                /* messages per batched call or pipeline */
    long cap;                 /* channel capacity (chand) */
    int timeout_s;            /* the whole run's bound; past it, children die */
    const char *latfile;      /* rtt: write sorted latencies (µs) here, or NULL */
};

/*
 * What a peer does in each role. Each returns 0, or -1 after printing why
 * to stderr. They run in a child process of their own.
 * produce: connect, call bench_wait_go(), then send the messages whose
 *   sequence numbers are first..first+count-1 (bench_fill makes them).
 * consume: connect and subscribe, call bench_ready(), then hand every
 *   message to bench_take(); when a receive times out, stop once
 *   bench_finished() says all n arrived.
 * ping: connect, bench_wait_go(), then bench_rtt_run() with send and
 *   receive callbacks (see below).
 * echo: connect and subscribe, bench_ready(), then send back each message
 *   of channel A on channel B unchanged until bench_finished().
 */
struct bench_peer {
    const char *name;         /* printed as peer= */
    int (*produce)(const struct bench_opts *o, int idx, uint64_t first, uint64_t count);
    int (*consume)(const struct bench_opts *o, int idx);
    int (*ping)(const struct bench_opts *o);
    int (*echo)(const struct bench_opts *o);
};

/* Parse argv, run the workload with peer, print the result line; exit code. */
int bench_main(int argc, char **argv, const struct bench_peer *peer);

/* Producer or ping: mark this process ready and block until every process is. */
void bench_wait_go(void);

/* Consumer or echo: mark this process ready (subscribed); does not block. */
void bench_ready(void);

/* Write the header of message seq into buf (size >= BENCH_HDR). */
void bench_fill(void *buf, uint64_t seq);

/* Sequence number of a received message, or -1 when len or header is wrong. */
int64_t bench_seq(const void *data, size_t len, size_t want_len);

/*
 * Count one received message in this consumer's tally. Returns 0, or -1
 * (after printing why) when its length or header is wrong.
 */
int bench_take(const void *data, size_t len);

/*
 * Nonzero once the run is over: for queue workloads, all n messages have
 * been counted by the consumers together; for rtt, the ping side is done.
 */
int bench_finished(void);

/*
 * Producer: note that this process sent all its messages. Returns 1 for the
 * last producer to finish (which may then close the channel, so that
 * consumers see the end the way a user's program would), 0 otherwise.
 */
int bench_producer_done(void);

/* Nanoseconds on CLOCK_MONOTONIC. */
uint64_t bench_ns(void);

/*
 * The ping loop: for warmup + n round trips, send message i (send(ctx, buf,
 * len) returns 0/-1), receive the echo (recv(ctx) returns a pointer to the
 * payload and its length through *len, valid until the next call, or NULL),
 * check it, and time it. Computes the percentiles for the result line.
 */
int bench_rtt_run(const struct bench_opts *o, void *ctx,
                  int (*send)(void *ctx, const void *buf, size_t len),
                  const void *(*recv)(void *ctx, size_t *len));

/* Parse "host:port" into host (NUL-terminated, size hostsz) and port. */
int bench_split_addr(const char *addr, char *host, size_t hostsz, int *port);

/*
 * Connect to "host:port" over TCP with Nagle off; a blocking fd, or -1
 * after printing why.
 */
int bench_dial(const char *addr);

/* Write all n bytes at p to fd; 0 or -1. */
int bench_write_all(int fd, const void *p, size_t n);

/* "name.a" / "name.b": the rtt channels' names, into a static buffer each. */
const char *bench_name_a(const struct bench_opts *o);
const char *bench_name_b(const struct bench_opts *o);

#endif /* BENCH_HARNESS_H */
