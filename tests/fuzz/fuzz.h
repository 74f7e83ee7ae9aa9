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
 * four scale the dribble piece size under FUZZ_DRIBBLE, and otherwise hold
 * FUZZ_AUTH. Inputs are short (-max_len=4096), so every setting stays cheap.
 */
#define FUZZ_HELLO 0x01     /* a valid HELLO frame goes before the bytes: reach the dispatcher */
#define FUZZ_CHANNELS 0x02  /* a healthy client first opens "a" (cap 0, handle 1) and "b" (cap 2,
                             * handle 2) and leaves one message in "b" */
#define FUZZ_DRIBBLE 0x04   /* the bytes arrive in pieces, the loop running between them */
#define FUZZ_TIGHT 0x08     /* tight limits (FUZZ_TIGHT_*): the refusal paths are reachable */
#define FUZZ_PIECE_SHIFT 4  /* piece bytes: ((mode >> FUZZ_PIECE_SHIFT) + 1) * FUZZ_PIECE_UNIT */
#define FUZZ_PIECE_UNIT 7
#define FUZZ_AUTH 0x10      /* without FUZZ_DRIBBLE: HELLO must carry FUZZ_TOKEN */

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
