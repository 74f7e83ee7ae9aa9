/*
 * broker_badinput_test.c: what chand does with input a correct client never
 * sends. A broken stream gets one PROTOCOL frame with a reason and is
 * closed while another client goes on being served; a bad request (too big
 * a message, an unknown channel) fails that request only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "testclient.h"

/* A ClientFrame field number no request uses. */
#define UNKNOWN_FIELD 30

/* Append a protobuf varint to p; returns its length. */
static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t i = 0;

    while (v >= 0x80) {
        p[i++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[i++] = (uint8_t)v;
    return i;
}

/* Write a frame whose body is the raw bytes b[0..n). */
static void write_raw_frame(struct tc_conn *c, const uint8_t *b, size_t n)
{
    uint8_t len[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};

    ck_assert_int_eq(tc_write_raw(c, len, sizeof len), 0);
    if (n > 0)
        ck_assert_int_eq(tc_write_raw(c, b, n), 0);
}

static void write_length_only(struct tc_conn *c, uint32_t n)
{
    uint8_t len[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};

    ck_assert_int_eq(tc_write_raw(c, len, sizeof len), 0);
}

static void write_open_named(struct tc_conn *c, const char *name, size_t len)
{
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Open o = CHANWIRE__OPEN__INIT;
    char *copy = malloc(len + 1);

    ck_assert_ptr_nonnull(copy);
    memcpy(copy, name, len);
    copy[len] = '\0';
    o.name = copy;
    o.cap = 1;
    f.id = tc_next_id(c);
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_OPEN;
    f.open = &o;
    ck_assert_int_eq(tc_write_frame(c, &f, NULL, 0), 0);
    free(copy);
}

/* ---- the bad inputs -------------------------------------------------- */

static void bad_oversized_length(struct tc_conn *c)
{
    /* default --max-msg is 1 MiB; a frame may be that plus WIRE_HDR_MAX */
    write_length_only(c, (1u << 20) + WIRE_HDR_MAX + 1);
}

static void bad_huge_length(struct tc_conn *c)
{
    write_length_only(c, 0xffffffffu);
}

static void bad_wire_type(struct tc_conn *c)
{
    /* field 1 with wire type 7, which protobuf does not have */
    static const uint8_t b[] = {0x0f, 0x01, 0x02, 0x03};
    write_raw_frame(c, b, sizeof b);
}

static void bad_then_more_bytes(struct tc_conn *c)
{
    /* the error frame must survive input the broker never reads */
    static const uint8_t b[] = {0x0f, 0x01, 0x02, 0x03};
    static uint8_t junk[65536];
    write_raw_frame(c, b, sizeof b);
    memset(junk, 0x5a, sizeof junk);
    (void)tc_write_raw(c, junk, sizeof junk);
}

static void bad_truncated_varint(struct tc_conn *c)
{
    static const uint8_t b[] = {0x08, 0xff, 0xff};
    write_raw_frame(c, b, sizeof b);
}

static void bad_no_request(struct tc_conn *c)
{
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;

    f.id = tc_next_id(c);
    ck_assert_int_eq(tc_write_frame(c, &f, NULL, 0), 0);
}

static void bad_unknown_request(struct tc_conn *c)
{
    uint8_t b[32];
    size_t n = 0;

    /* id, then an empty message in a field this protocol version lacks */
    n += put_varint(b + n, (1 << 3) | 0);
    n += put_varint(b + n, tc_next_id(c));
    n += put_varint(b + n, (UNKNOWN_FIELD << 3) | 2);
    n += put_varint(b + n, 0);
    write_raw_frame(c, b, n);
}

static void bad_header_over_limit(struct tc_conn *c)
{
    /* a PING whose data alone is WIRE_HDR_MAX bytes: a header no reply can echo */
    static uint8_t data[WIRE_HDR_MAX];
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Ping p = CHANWIRE__PING__INIT;
    uint8_t *buf;
    size_t n;

    p.data.data = data;
    p.data.len = sizeof data;
    f.id = tc_next_id(c);
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_PING;
    f.ping = &p;
    n = protobuf_c_message_get_packed_size(&f.base);
    buf = malloc(n);
    ck_assert_ptr_nonnull(buf);
    protobuf_c_message_pack(&f.base, buf);
    write_raw_frame(c, buf, n);
    free(buf);
}

static void bad_request_before_hello(struct tc_conn *c)
{
    write_open_named(c, "early", 5);
}

static void bad_second_hello(struct tc_conn *c)
{
    tc_hello_start(c);
}

static void bad_name_space(struct tc_conn *c)
{
    write_open_named(c, "a b", 3);
}

static void bad_name_empty(struct tc_conn *c)
{
    write_open_named(c, "", 0);
}

static void bad_name_256_bytes(struct tc_conn *c)
{
    char name[256];

    memset(name, 'x', sizeof name);
    write_open_named(c, name, sizeof name);
}

static void bad_name_control_byte(struct tc_conn *c)
{
    write_open_named(c, "a\x01z", 3);
}

static void bad_name_not_utf8(struct tc_conn *c)
{
    write_open_named(c, "a\xff", 2);
}

static void bad_reused_pending_id(struct tc_conn *c)
{
    Chanwire__ClientFrame f = CHANWIRE__CLIENT_FRAME__INIT;
    Chanwire__Recv rv = CHANWIRE__RECV__INIT;
    uint64_t ch;

    TC_ASSERT_STATUS(tc_open(c, "pending", 0, &ch), ST(OK));
    rv.chan = ch;
    rv.timeout_ms = -1;
    f.id = 4242;
    f.body_case = CHANWIRE__CLIENT_FRAME__BODY_RECV;
    f.recv = &rv;
    ck_assert_int_eq(tc_write_frame(c, &f, NULL, 0), 0);
    ck_assert_int_eq(tc_write_frame(c, &f, NULL, 0), 0);
}

static const struct bad_input {
    const char *what;
    int hello_first;                   /* 1: HELLO succeeds before the bad input */
    void (*write)(struct tc_conn *c);
} bad_inputs[] = {
    {"oversized length", 1, bad_oversized_length},
    {"length 0xffffffff", 1, bad_huge_length},
    {"undecodable bytes (wire type 7)", 1, bad_wire_type},
    {"undecodable bytes (cut varint)", 1, bad_truncated_varint},
    {"undecodable bytes, then 64 KiB more", 1, bad_then_more_bytes},
    {"frame with no request", 1, bad_no_request},
    {"unknown request", 1, bad_unknown_request},
    {"header over WIRE_HDR_MAX", 1, bad_header_over_limit},
    {"request before HELLO", 0, bad_request_before_hello},
    {"second HELLO", 1, bad_second_hello},
    {"channel name with a space", 1, bad_name_space},
    {"empty channel name", 1, bad_name_empty},
    {"256-byte channel name", 1, bad_name_256_bytes},
    {"channel name with a control byte", 1, bad_name_control_byte},
    {"channel name not UTF-8", 1, bad_name_not_utf8},
    {"reused pending request id", 1, bad_reused_pending_id},
};

#define NBAD ((int)(sizeof bad_inputs / sizeof bad_inputs[0]))

/* A send and a recv on the healthy connection: it is still served. */
static void healthy_round_trip(struct tc_conn *h, uint64_t chan, const char *text)
{
    struct tc_msg m;

    TC_ASSERT_STATUS(tc_send_str(h, chan, text), ST(OK));
    TC_ASSERT_STATUS(tc_recv(h, chan, 2000, &m), ST(OK));
    ck_assert_msg(m.len == strlen(text) && memcmp(m.data, text, m.len) == 0, "healthy client got the wrong bytes");
    TC_ASSERT_STATUS(tc_ack(h, m.tag), ST(OK));
    tc_msg_free(&m);
}

START_TEST(test_bad_input_closes_only_that_connection)
{
    const struct bad_input *bad = &bad_inputs[_i];
    struct tc_server srv;
    struct tc_conn *h, *x;
    struct tc_reply r;
    struct tc_msg m;
    uint64_t hc, hheld = 0, xheld;
    int rc;

    fprintf(stderr, "bad input %d: %s\n", _i, bad->what);
    tc_server_start(&srv, NULL);
    h = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(h, "ok", 1, &hc), ST(OK));
    x = tc_connect(srv.port);
    if (bad->hello_first) {
        TC_ASSERT_STATUS(tc_hello(x), ST(OK));
        /* x holds one unacked message, which its end must give back */
        TC_ASSERT_STATUS(tc_open(h, "held", 1, &hheld), ST(OK));
        TC_ASSERT_STATUS(tc_send_str(h, hheld, "held"), ST(OK));
        TC_ASSERT_STATUS(tc_open(x, "held", 1, &xheld), ST(OK));
        TC_ASSERT_STATUS(tc_recv(x, xheld, 2000, &m), ST(OK));
        tc_msg_free(&m);
    }
    healthy_round_trip(h, hc, "before");

    bad->write(x);
    rc = tc_read(x, TC_REPLY_MS, &r);
    ck_assert_msg(rc == 1, "%s: %s instead of an error frame", bad->what, rc == 0 ? "silence" : "close");
    ck_assert_msg(r.f->status == ST(PROTOCOL), "%s: status %s, want STATUS_PROTOCOL", bad->what,
                  tc_status_name(r.f->status));
    ck_assert_msg(r.f->error != NULL && r.f->error[0] != '\0', "%s: error frame without a reason", bad->what);
    fprintf(stderr, "%s: chand said \"%s\"\n", bad->what, r.f->error);
    tc_reply_free(&r);
    ck_assert_msg(tc_closed_within(x, TC_REPLY_MS), "%s: connection still open after the error", bad->what);

    healthy_round_trip(h, hc, "after");
    if (bad->hello_first) {
        TC_ASSERT_STATUS(tc_recv(h, hheld, 2000, &m), ST(OK));
        ck_assert_msg(m.len == 4 && memcmp(m.data, "held", 4) == 0, "requeued message changed");
        ck_assert_uint_eq(m.deliveries, 2);
        TC_ASSERT_STATUS(tc_ack(h, m.tag), ST(OK));
        tc_msg_free(&m);
    }

    tc_conn_free(x);
    tc_conn_free(h);
    tc_server_stop_ok(&srv);
}
END_TEST

START_TEST(test_message_over_max_msg_fails_only_that_send)
{
    static uint8_t big[1025];
    struct tc_server srv;
    struct tc_conn *a;
    struct tc_reply r;
    struct tc_msg m;
    uint64_t ch, id;

    tc_server_start(&srv, "--max-msg", "1024", NULL);
    a = tc_connect(srv.port);
    id = tc_hello_start(a);
    TC_ASSERT_STATUS(tc_must_wait(a, id, &r), ST(OK));
    ck_assert_msg(r.f->body_case == CHANWIRE__SERVER_FRAME__BODY_HELLO, "HELLO reply without HelloReply");
    ck_assert_uint_eq(r.f->hello->max_msg, 1024);
    ck_assert_uint_eq(r.f->hello->version, WIRE_VERSION);
    tc_reply_free(&r);

    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7);
    TC_ASSERT_STATUS(tc_open(a, "big", 2, &ch), ST(OK));
    TC_ASSERT_STATUS(tc_send(a, ch, big, 1025, -1), ST(MSGSIZE));
    TC_ASSERT_STATUS(tc_send(a, ch, big, 1024, -1), ST(OK));
    TC_ASSERT_STATUS(tc_recv(a, ch, 2000, &m), ST(OK));
    ck_assert_uint_eq(m.len, 1024);
    ck_assert_int_eq(memcmp(m.data, big, 1024), 0);
    TC_ASSERT_STATUS(tc_ack(a, m.tag), ST(OK));
    tc_msg_free(&m);
    /* the refused message went nowhere */
    TC_ASSERT_STATUS(tc_recv(a, ch, 0, &m), ST(AGAIN));

    tc_conn_free(a);
    tc_server_stop_ok(&srv);
}
END_TEST

START_TEST(test_missing_channels_fail_only_that_request)
{
    struct tc_server srv;
    struct tc_conn *a;
    struct tc_stat st;
    struct tc_msg m;
    uint64_t ch, ch2;
    const uint64_t never = 999999;

    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_send_str(a, never, "x"), ST(STALE));
    TC_ASSERT_STATUS(tc_recv(a, never, 0, &m), ST(STALE));
    TC_ASSERT_STATUS(tc_close(a, never), ST(STALE));
    TC_ASSERT_STATUS(tc_open(a, "missing", -1, &ch), ST(NOENT));
    TC_ASSERT_STATUS(tc_stat(a, "missing", &st), ST(NOENT));
    TC_ASSERT_STATUS(tc_delete(a, "missing"), ST(NOENT));
    TC_ASSERT_STATUS(tc_ack(a, 777777), ST(INVALID));

    TC_ASSERT_STATUS(tc_open(a, "e", 2, &ch), ST(OK));
    TC_ASSERT_STATUS(tc_open(a, "e", 3, &ch2), ST(EXIST));
    TC_ASSERT_STATUS(tc_open(a, "e", -1, &ch2), ST(OK));
    TC_ASSERT_STATUS(tc_stat(a, "e", &st), ST(OK));
    ck_assert_int_eq(st.cap, 2);
    TC_ASSERT_STATUS(tc_send_str(a, ch2, "still fine"), ST(OK));
    TC_ASSERT_STATUS(tc_recv(a, ch, 2000, &m), ST(OK));
    ck_assert_uint_eq(m.len, 10);
    TC_ASSERT_STATUS(tc_ack(a, m.tag), ST(OK));
    tc_msg_free(&m);

    tc_conn_free(a);
    tc_server_stop_ok(&srv);
}
END_TEST

START_TEST(test_peer_vanishing_mid_frame_harms_no_one)
{
    struct tc_server srv;
    struct tc_conn *h, *x;
    struct tc_msg m;
    uint64_t hc, xc;
    static const uint8_t half[] = {0x00, 0x00, 0x10, 0x00, 0x08, 0x01};

    tc_server_start(&srv, NULL);
    h = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(h, "mid", 1, &hc), ST(OK));
    x = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(x, "mid", 1, &xc), ST(OK));
    TC_ASSERT_STATUS(tc_send_str(h, hc, "kept"), ST(OK));
    TC_ASSERT_STATUS(tc_recv(x, xc, 2000, &m), ST(OK));
    tc_msg_free(&m);
    /* a 4 KiB frame of which 2 bytes arrive, then the peer is gone */
    ck_assert_int_eq(tc_write_raw(x, half, sizeof half), 0);
    tc_conn_free(x);

    TC_ASSERT_STATUS(tc_recv(h, hc, 2000, &m), ST(OK));
    ck_assert_msg(m.len == 4 && memcmp(m.data, "kept", 4) == 0, "requeued message changed");
    ck_assert_uint_eq(m.deliveries, 2);
    TC_ASSERT_STATUS(tc_ack(h, m.tag), ST(OK));
    tc_msg_free(&m);
    healthy_round_trip(h, hc, "after");

    tc_conn_free(h);
    tc_server_stop_ok(&srv);
}
END_TEST

START_TEST(test_default_max_msg_is_one_mebibyte)
{
    struct tc_server srv;
    struct tc_conn *a;
    struct tc_msg m;
    uint64_t ch;
    size_t mib = 1u << 20;
    uint8_t *big = malloc(mib + 1);

    ck_assert_ptr_nonnull(big);
    for (size_t i = 0; i <= mib; i++)
        big[i] = (uint8_t)(i * 13 + (i >> 12));
    tc_server_start(&srv, NULL);
    a = tc_connect_hello(srv.port);
    TC_ASSERT_STATUS(tc_open(a, "mib", 1, &ch), ST(OK));
    TC_ASSERT_STATUS(tc_send(a, ch, big, mib + 1, -1), ST(MSGSIZE));
    TC_ASSERT_STATUS(tc_send(a, ch, big, mib, -1), ST(OK));
    TC_ASSERT_STATUS(tc_recv(a, ch, 2000, &m), ST(OK));
    ck_assert_uint_eq(m.len, mib);
    ck_assert_msg(memcmp(m.data, big, mib) == 0, "1 MiB message came back changed");
    TC_ASSERT_STATUS(tc_ack(a, m.tag), ST(OK));
    tc_msg_free(&m);
    free(big);

    tc_conn_free(a);
    tc_server_stop_ok(&srv);
}
END_TEST

static Suite *badinput_suite(void)
{
    Suite *s = suite_create("broker_badinput");
    TCase *tc;

    tc = tcase_create("stream");
    tcase_set_timeout(tc, 20);
    tcase_add_loop_test(tc, test_bad_input_closes_only_that_connection, 0, NBAD);
    suite_add_tcase(s, tc);

    tc = tcase_create("request");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_message_over_max_msg_fails_only_that_send);
    tcase_add_test(tc, test_missing_channels_fail_only_that_request);
    tcase_add_test(tc, test_default_max_msg_is_one_mebibyte);
    tcase_add_test(tc, test_peer_vanishing_mid_frame_harms_no_one);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(badinput_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
