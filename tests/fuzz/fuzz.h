/*
 * fuzz.h: what the broker fuzz harness (fuzz_broker.c) and the seed corpus
 * generator (mkcorpus.c) agree on: the meaning of an input's first byte.
 * The rest of an input is raw bytes for one client connection.
 */
#ifndef CHAN_FUZZ_H
#define CHAN_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/*
 * Bits of an input's first byte. The low four choose the setting; the high
 * four scale the dribble piece size under FUZZ_DRIBBLE, and otherwise are
 * FUZZ_AUTH .. FUZZ_WAIT. Inputs are short (-max_len=4096), so every
 * setting stays cheap.
 */
#define FUZZ_HELLO 0x01     /* a valid HELLO frame goes before the bytes: reach the dispatcher */
#define FUZZ_CHANNELS 0x02  /* a healthy client first opens "a" (cap 0, handle 1) and "b" (cap 2,
                             * handle 2) and leaves one message in "b" */
#define FUZZ_DRIBBLE 0x04   /* the bytes arrive in pieces, the loop running between them */
#define FUZZ_TIGHT 0x08     /* tight limits (FUZZ_TIGHT_*) and no session outlives its
                             * connection: the refusal and expiry paths are reachable */
#define FUZZ_PIECE_SHIFT 4  /* piece bytes: ((mode >> FUZZ_PIECE_SHIFT) + 1) * FUZZ_PIECE_UNIT */
#define FUZZ_PIECE_UNIT 7
#define FUZZ_AUTH 0x10      /* HELLO must carry FUZZ_TOKEN */
#define FUZZ_RESUME 0x20    /* the next two bytes (little endian) are the first part's length;
                             * the rest goes on a second connection that says HELLO with the
                             * first one's session, after the first closed */
#define FUZZ_TAKEOVER 0x40  /* with FUZZ_RESUME: while the first is still open */
#define FUZZ_WAIT 0x80      /* after each part the loop runs FUZZ_WAIT_MS of real time, so
                             * deadlines and leases of a few ms run out */

#define FUZZ_WAIT_MS 4

/* The limits under FUZZ_TIGHT. */
#define FUZZ_TIGHT_MSG 100        /* --max-msg, bytes */
#define FUZZ_TIGHT_MEMORY 300     /* --max-memory, bytes */
#define FUZZ_TIGHT_CHANNELS 4     /* --max-channels (the healthy client may take two) */
#define FUZZ_TIGHT_PENDING 4      /* blocked requests per connection */
#define FUZZ_TIGHT_OUTPUT 2048    /* reply bytes queued to one connection */

/* The auth token under FUZZ_AUTH. */
#define FUZZ_TOKEN "sesame"

/* The harness's entry points, also driven by replay.c outside libFuzzer. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif /* CHAN_FUZZ_H */
