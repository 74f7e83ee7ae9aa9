/*
 * semantic_test.c: runs the semantic suite (DESIGN.md section 1 and Go's
 * channel tests) against the channel kind CHAN_KIND selects: local (the
 * default) or remote, on a chand this program starts. make check runs it
 * once per kind through semantic_local.sh and semantic_remote.sh.
 */
#include <stdio.h>
#include <stdlib.h>

#include "semantic.h"

int main(void)
{
    Suite *s;
    SRunner *sr;
    int failed;

    sem_env_init();
    /* Remote runs pay a round trip per call; their counts are scaled down too. */
    double timeout = sem_remote ? 120 : 30;

    s = suite_create(sem_remote ? "semantic_remote" : "semantic_local");
    semantic_rules_add(s, timeout);
    semantic_waits_add(s, timeout);
    semantic_gochan_add(s, timeout);
    semantic_goruntime_add(s, timeout);
    semantic_powser_add(s, timeout);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
