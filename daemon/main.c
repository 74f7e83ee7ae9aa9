/*
 * main.c: the broker process around broker.c: the command line, the
 * listener, the port file, the signals. One libevent loop owns everything.
 * SIGTERM and SIGINT stop accepting and hand over to broker_shutdown
 * (answer every blocked request with SHUTDOWN, flush, leave the loop); a
 * timer makes sure the exit happens within a second whatever the peers do.
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <event2/listener.h>

#include "daemon.h"

/* How long shutdown waits for outputs to drain, ms. */
#define SHUTDOWN_GRACE_MS 800
/* Pause before accepting again after the fd table filled up, ms. */
#define ACCEPT_RETRY_MS 100

static struct evconnlistener *listener;
static struct event *sigterm_ev;
static struct event *sigint_ev;
static struct event *exit_ev;        /* forces the exit after SHUTDOWN_GRACE_MS */
static struct event *accept_retry_ev;

static void main_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *addr,
                           int addrlen, void *arg)
{
    (void)l, (void)arg;
    if (broker.stopping) {
        close(fd);
        return;
    }
    conn_accept(fd, addr, addrlen, broker.nconns >= broker.opt.max_conns);
}

static void main_accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    if (!broker.stopping)
        evconnlistener_enable(listener);
}

static void main_accept_error_cb(struct evconnlistener *l, void *arg)
{
    int err = EVUTIL_SOCKET_ERROR();
    struct timeval tv = {0, ACCEPT_RETRY_MS * 1000};

    (void)arg;
    log_msg(LL_WARN, "accept: %s", evutil_socket_error_to_string(err));
    /* Out of descriptors or memory: the pending connection would wake us at once, forever. */
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        evconnlistener_disable(l);
        evtimer_add(accept_retry_ev, &tv);
    }
}

static void main_exit_cb(evutil_socket_t fd, short what, void *arg)
{
    size_t n = 0;
    struct conn *c;

    (void)fd, (void)what, (void)arg;
    TAILQ_FOREACH(c, &broker.conns, link)
        n++;
    log_msg(LL_WARN, "shutdown: %zu connections still flushing; exiting anyway", n);
    event_base_loopbreak(broker.base);
}

static void main_signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct timeval tv = {SHUTDOWN_GRACE_MS / 1000, (SHUTDOWN_GRACE_MS % 1000) * 1000};

    (void)what, (void)arg;
    if (broker.stopping)
        return;
    log_msg(LL_INFO, "signal %d: shutting down (%zu connections, %zu channels)",
            (int)sig, broker.nconns, registry_count());
    evconnlistener_disable(listener);
    evtimer_add(exit_ev, &tv);
    broker_shutdown();
}

/* Soft fd limit up to the hard one: every connection is a descriptor. */
static void main_raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == rl.rlim_max)
        return;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        log_msg(LL_WARN, "cannot raise the descriptor limit: %s", strerror(errno));
}

/* "addr:port", IPv6 in brackets. */
static void main_format_addr(const struct sockaddr_storage *ss, char *dst, size_t size)
{
    char host[INET6_ADDRSTRLEN];

    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(dst, size, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else {
        const struct sockaddr_in *in = (const void *)ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(dst, size, "%s:%u", host, ntohs(in->sin_port));
    }
}

/* Write the port so that a reader never sees half of it: a temp file, then rename. */
static int main_write_port_file(const char *path, unsigned port)
{
    size_t len = strlen(path) + 32;
    char *tmp = malloc(len);
    FILE *f;
    int rc = -1;

    if (tmp == NULL)
        return -1;
    snprintf(tmp, len, "%s.tmp.%ld", path, (long)getpid());
    f = fopen(tmp, "w");
    if (f == NULL)
        goto out;
    fprintf(f, "%u\n", port);
    if (fclose(f) != 0 || rename(tmp, path) < 0) {
        unlink(tmp);
        goto out;
    }
    rc = 0;
out:
    free(tmp);
    return rc;
}

/* 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104: reachable from this host only. */
static int main_is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a))
            return 1;
        return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
    }
    return 0;
}

static int main_listen(void)
{
    struct addrinfo hints = {0}, *ai = NULL;
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof ss;
    char port[16], where[INET6_ADDRSTRLEN + 16];
    int rc;

    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(port, sizeof port, "%ld", broker.opt.port);
    rc = getaddrinfo(broker.opt.bind, port, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "chand: bad value '%s' for --bind\n", broker.opt.bind);
        return 2;
    }
    if (!main_is_loopback(ai->ai_addr) && broker.opt.token == NULL && !broker.opt.insecure) {
        fprintf(stderr, "chand: refusing to listen on %s without --auth-token-file "
                "(--insecure allows it)\n", broker.opt.bind);
        freeaddrinfo(ai);
        return 2;
    }
    listener = evconnlistener_new_bind(broker.base, main_accept_cb, NULL,
                                       LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                       LEV_OPT_CLOSE_ON_EXEC,
                                       4096, ai->ai_addr, (int)ai->ai_addrlen);
    freeaddrinfo(ai);
    if (listener == NULL) {
        fprintf(stderr, "chand: cannot listen on %s port %s: %s\n", broker.opt.bind, port,
                strerror(errno));
        return 1;
    }
    evconnlistener_set_error_cb(listener, main_accept_error_cb);
    if (getsockname(evconnlistener_get_fd(listener), (struct sockaddr *)&ss, &sslen) < 0) {
        fprintf(stderr, "chand: getsockname: %s\n", strerror(errno));
        return 1;
    }
    main_format_addr(&ss, where, sizeof where);
    printf("chand listening on %s\n", where);
    fflush(stdout);
    if (broker.opt.port_file != NULL) {
        unsigned p = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                              : ntohs(((struct sockaddr_in *)&ss)->sin_port);
        if (main_write_port_file(broker.opt.port_file, p) < 0) {
            fprintf(stderr, "chand: cannot write %s: %s\n", broker.opt.port_file, strerror(errno));
            return 1;
        }
    }
    log_msg(LL_INFO, "chand %s listening on %s (max-msg %zu, max-conns %zu, max-memory %" PRIu64
            ", %s)", PACKAGE_VERSION, where, broker.opt.max_msg, broker.opt.max_conns,
            broker.opt.max_memory, broker.opt.token ? "token required" : "no token");
    return 0;
}

static void main_teardown(struct event_base *base)
{
    broker_stop();
    if (listener != NULL)
        evconnlistener_free(listener);
    if (sigterm_ev != NULL)
        event_free(sigterm_ev);
    if (sigint_ev != NULL)
        event_free(sigint_ev);
    if (exit_ev != NULL)
        event_free(exit_ev);
    if (accept_retry_ev != NULL)
        event_free(accept_retry_ev);
    if (base != NULL)
        event_base_free(base);
    libevent_global_shutdown();
}

int main(int argc, char **argv)
{
    struct options opt;
    struct event_base *base;
    int rc = options_parse(&opt, argc, argv);

    if (rc != 0)
        return rc == 1 ? 0 : 2;
    log_set_level(opt.log_level);
    signal(SIGPIPE, SIG_IGN);
    /*
     * libevent puts back the disposition it found when the signal events
     * are freed at exit; ignoring is what it must find, or a second
     * SIGTERM from a supervisor would kill the process mid-teardown.
     */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    main_raise_nofile();
    stream_tune_malloc();

    base = event_base_new();
    if (base == NULL || broker_start(base, &opt) < 0) {
        fprintf(stderr, "chand: out of memory starting up\n");
        main_teardown(base);
        return 1;
    }
    exit_ev = evtimer_new(base, main_exit_cb, NULL);
    accept_retry_ev = evtimer_new(base, main_accept_retry_cb, NULL);
    sigterm_ev = evsignal_new(base, SIGTERM, main_signal_cb, NULL);
    sigint_ev = evsignal_new(base, SIGINT, main_signal_cb, NULL);
    if (exit_ev == NULL || accept_retry_ev == NULL || sigterm_ev == NULL || sigint_ev == NULL ||
        evsignal_add(sigterm_ev, NULL) < 0 || evsignal_add(sigint_ev, NULL) < 0) {
        fprintf(stderr, "chand: cannot set up the event loop\n");
        main_teardown(base);
        return 1;
    }
    rc = main_listen();
    if (rc != 0) {
        main_teardown(base);
        return rc;
    }

    broker_run();

    log_msg(LL_INFO, "exiting: %" PRIu64 " messages (%" PRIu64 " bytes) still held",
            msg_live_count(), msg_live_bytes());
    main_teardown(base);
    return 0;
}
