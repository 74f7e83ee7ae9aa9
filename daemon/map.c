/*
 * map.c: the one hash table chand needs three times: channels by handle,
 * deliveries by tag, blocked requests by id. Keys are u64s the broker or a
 * client chose, so they are mixed before use; entries live in one array
 * (no allocation per entry), kept at most 3/4 full.
 */
#include <stdlib.h>
#include <string.h>

#include "daemon.h"

#define MAP_MIN_CAP 16

/* Fibonacci hashing: the high bits of key * 2^64/phi spread sequential keys. */
static size_t map_home(const struct map *m, uint64_t key)
{
    return (size_t)((key * 0x9e3779b97f4a7c15ULL) >> 32) & (m->cap - 1);
}

void map_init(struct map *m)
{
    *m = (struct map){0};
}

void map_free(struct map *m)
{
    free(m->ents);
    *m = (struct map){0};
}

static void map_insert(struct map *m, uint64_t key, void *val, void *aux)
{
    size_t i = map_home(m, key);

    while (m->ents[i].key != 0)
        i = (i + 1) & (m->cap - 1);
    m->ents[i] = (struct map_ent){key, val, aux};
    m->n++;
}

static int map_grow(struct map *m)
{
    struct map old = *m;
    size_t cap = old.cap ? old.cap * 2 : MAP_MIN_CAP;
    struct map_ent *ents = calloc(cap, sizeof *ents);

    if (ents == NULL)
        return -1;
    m->ents = ents;
    m->cap = cap;
    m->n = 0;
    for (size_t i = 0; i < old.cap; i++)
        if (old.ents[i].key != 0)
            map_insert(m, old.ents[i].key, old.ents[i].val, old.ents[i].aux);
    free(old.ents);
    return 0;
}

int map_put(struct map *m, uint64_t key, void *val, void *aux)
{
    DAEMON_ASSERT(key != 0);
    if ((m->n + 1) * 4 > m->cap * 3 && map_grow(m) < 0)
        return -1;
    map_insert(m, key, val, aux);
    return 0;
}

struct map_ent *map_get(const struct map *m, uint64_t key)
{
    if (m->cap == 0 || key == 0)
        return NULL;
    for (size_t i = map_home(m, key);; i = (i + 1) & (m->cap - 1)) {
        if (m->ents[i].key == key)
            return &m->ents[i];
        if (m->ents[i].key == 0)
            return NULL;
    }
}

void map_del(struct map *m, uint64_t key)
{
    struct map_ent *e = map_get(m, key);
    size_t mask = m->cap - 1;
    size_t hole, j;

    if (e == NULL)
        return;
    /*
     * Backward shift: pull later entries of the probe run into the hole
     * when the hole lies on their way from home, so lookups never need
     * tombstones.
     */
    hole = (size_t)(e - m->ents);
    for (j = (hole + 1) & mask; m->ents[j].key != 0; j = (j + 1) & mask) {
        size_t home = map_home(m, m->ents[j].key);
        /* distance home->j versus home->hole, both walking forward */
        if (((j - home) & mask) >= ((j - hole) & mask)) {
            m->ents[hole] = m->ents[j];
            hole = j;
        }
    }
    m->ents[hole] = (struct map_ent){0};
    m->n--;
}
