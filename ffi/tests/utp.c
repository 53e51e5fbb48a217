/*
 * uTP from C (btcore_utp): two endpoints on real UDP sockets on 127.0.0.1 carry a few
 * MiB each way at once, compared byte for byte, and close cleanly (both FINs
 * acknowledged); garbage, truncated and crafted datagrams come back as typed results;
 * misuse gives error codes; events name confirmed, changed and dropped connections, a
 * forged SYN never confirmed is dropped, a released connection closes and goes; the sans-IO session's CONNECT names its transport after
 * settings.transport. Prints "all checks passed" on success.
 */
#define _POSIX_C_SOURCE 200809L
#include <btcore.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int failures;

#define EXPECT(call, code)                                                                \
    do {                                                                                  \
        btcore_result r_ = (call);                                                        \
        if (r_ != (code)) {                                                               \
            if (failures < 30) fprintf(stderr, "%s:%d: %s gave %s, expected %s\n", __FILE__, __LINE__, #call, \
                    btcore_result_name(r_), btcore_result_name(code));                    \
            failures++;                                                                   \
        }                                                                                 \
    } while (0)

#define CHECK(cond)                                                             \
    do {                                                                        \
        if (!(cond)) {                                                          \
            if (failures < 30) fprintf(stderr, "%s:%d: %s is false\n", __FILE__, __LINE__, #cond); \
            failures++;                                                         \
        }                                                                       \
    } while (0)

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static btcore_addr v4(uint16_t port) {
    btcore_addr a;
    memset(&a, 0, sizeof a);
    a.family = BTCORE_ADDR_IPV4;
    a.port = port;
    a.ip[0] = 127;
    a.ip[3] = 1;
    return a;
}

/* A 20-byte uTP header: type, extension, connection id, sequence number. */
static void header(unsigned char *p, int type, int ext, uint16_t conn_id, uint16_t seq) {
    memset(p, 0, 20);
    p[0] = (unsigned char)(type << 4 | 1);
    p[1] = (unsigned char)ext;
    p[2] = (unsigned char)(conn_id >> 8);
    p[3] = (unsigned char)conn_id;
    p[12] = 0;
    p[13] = 4; /* window 256 KiB */
    p[16] = (unsigned char)(seq >> 8);
    p[17] = (unsigned char)seq;
}

static btcore_utp_incoming feed(btcore_utp *u, const btcore_addr *from, const void *d, size_t len) {
    btcore_utp_incoming in;
    memset(&in, 0xee, sizeof in);
    EXPECT(btcore_utp_recv(u, from, (const uint8_t *)d, len, now_ms(), &in), BTCORE_OK);
    return in;
}

/* The headers and destinations of the first datagrams of the last drain. */
static unsigned char sent_hdr[8][20];
static uint16_t sent_port[8];

/* Every datagram queued, each checked to go to `to` (when not NULL); returns how many. */
static int drain(btcore_utp *u, const btcore_addr *to, unsigned char *first_byte) {
    unsigned char buf[1500];
    size_t len = 0;
    btcore_addr dst;
    int n = 0;
    while (btcore_utp_poll_transmit(u, now_ms(), buf, sizeof buf, &len, &dst) == BTCORE_OK && len) {
        if (to) CHECK(dst.port == to->port && memcmp(dst.ip, to->ip, 4) == 0);
        if (n == 0 && first_byte) *first_byte = buf[0];
        if (n < 8 && len >= 20) {
            memcpy(sent_hdr[n], buf, 20);
            sent_port[n] = dst.port;
        }
        if (++n > 10000) break;
    }
    return n;
}

static void misuse(void) {
    btcore_utp_settings s;
    btcore_utp *u = NULL;
    EXPECT(btcore_utp_settings_default(NULL), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_utp_settings_default(&s), BTCORE_OK);
    CHECK(s.max_packet_size == 0 && s.send_buffer == 0 && s.low_memory == 0);
    s.max_packet_size = 10;
    EXPECT(btcore_utp_new(&s, &u), BTCORE_INVALID_PARAMETER);
    CHECK(u == NULL);
    char msg[256];
    btcore_error_detail d;
    EXPECT(btcore_last_error(&d, msg, sizeof msg, NULL, 0), BTCORE_OK);
    CHECK(d.code == BTCORE_INVALID_PARAMETER && strstr(msg, "max_packet_size") != NULL);
    s.max_packet_size = 0;
    s.send_buffer = 100;
    EXPECT(btcore_utp_new(&s, &u), BTCORE_INVALID_PARAMETER);
    s.send_buffer = 0;
    s.max_packets_in_flight = 20000;
    EXPECT(btcore_utp_new(&s, &u), BTCORE_INVALID_PARAMETER);
    s.max_packets_in_flight = 0;
    EXPECT(btcore_utp_new(&s, NULL), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_utp_new(NULL, &u), BTCORE_OK); /* NULL settings: the defaults */
    btcore_utp_free(u);
    s.low_memory = 1;
    s.random_seed = 7;
    EXPECT(btcore_utp_new(&s, &u), BTCORE_OK);

    uint32_t kind = 99;
    EXPECT(btcore_utp_classify((const uint8_t *)"d1:ad2:id20:", 12, &kind), BTCORE_OK);
    CHECK(kind == BTCORE_DATAGRAM_DHT);
    unsigned char p[64];
    header(p, 4, 0, 1, 1);
    EXPECT(btcore_utp_classify(p, 20, &kind), BTCORE_OK);
    CHECK(kind == BTCORE_DATAGRAM_UTP);
    EXPECT(btcore_utp_classify(p, 19, &kind), BTCORE_OK);
    CHECK(kind == BTCORE_DATAGRAM_OTHER);
    EXPECT(btcore_utp_classify(NULL, 0, &kind), BTCORE_OK);
    CHECK(kind == BTCORE_DATAGRAM_OTHER);
    EXPECT(btcore_utp_classify(NULL, 4, &kind), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_utp_classify(p, 20, NULL), BTCORE_NULL_PARAMETER);

    btcore_addr a = v4(6881);
    btcore_utp_incoming in;
    uint64_t conn = 0, ms = 0;
    size_t n = 0;
    unsigned char buf[2048];
    btcore_utp_conn_status st;
    /* NULL, foreign and freed handles. */
    EXPECT(btcore_utp_recv(NULL, &a, p, 20, now_ms(), &in), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_utp_recv((btcore_utp *)buf, &a, p, 20, now_ms(), &in), BTCORE_WRONG_HANDLE);
    btcore_sansio *other = NULL;
    EXPECT(btcore_sansio_new(NULL, &other), BTCORE_OK);
    EXPECT(btcore_utp_handle_timeout((btcore_utp *)other, now_ms()), BTCORE_WRONG_HANDLE);
    EXPECT(btcore_sansio_handle_timeout((btcore_sansio *)u, now_ms()), BTCORE_WRONG_HANDLE);
    btcore_sansio_free(other);
    btcore_utp *gone = NULL;
    EXPECT(btcore_utp_new(NULL, &gone), BTCORE_OK);
    btcore_utp_free(gone);
    EXPECT(btcore_utp_next_timeout(gone, &ms), BTCORE_WRONG_HANDLE);
    btcore_utp_free(gone); /* a second free is a no-op */
    btcore_utp_free(NULL);
    /* NULL arguments, bad addresses, oversized datagrams. */
    EXPECT(btcore_utp_recv(u, NULL, p, 20, now_ms(), &in), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_utp_recv(u, &a, p, 20, now_ms(), NULL), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_utp_recv(u, &a, NULL, 20, now_ms(), &in), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_utp_recv(u, &a, p, 70000, now_ms(), &in), BTCORE_INVALID_PARAMETER);
    btcore_addr bad = a;
    bad.family = 77;
    EXPECT(btcore_utp_recv(u, &bad, p, 20, now_ms(), &in), BTCORE_INVALID_PARAMETER);
    EXPECT(btcore_utp_connect(u, &bad, now_ms(), &conn), BTCORE_INVALID_PARAMETER);
    EXPECT(btcore_utp_connect(u, &a, now_ms(), NULL), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_utp_next_timeout(u, NULL), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_utp_next_timeout(u, &ms), BTCORE_OK);
    CHECK(ms == UINT64_MAX); /* no connection: no timer */
    /* A buffer smaller than a packet: the size needed comes back. */
    btcore_addr to;
    EXPECT(btcore_utp_poll_transmit(u, now_ms(), buf, 100, &n, &to), BTCORE_BUFFER_TOO_SMALL);
    CHECK(n == 1404);
    EXPECT(btcore_utp_poll_transmit(u, now_ms(), NULL, 2000, &n, &to), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_utp_poll_transmit(u, now_ms(), buf, sizeof buf, NULL, &to), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_utp_poll_transmit(u, now_ms(), buf, sizeof buf, &n, &to), BTCORE_OK);
    CHECK(n == 0);
    /* Unknown connections. */
    EXPECT(btcore_utp_read(u, 0, buf, sizeof buf, &n), BTCORE_NOT_FOUND);
    EXPECT(btcore_utp_write(u, 12345, buf, 10, &n), BTCORE_NOT_FOUND);
    EXPECT(btcore_utp_close(u, 12345), BTCORE_NOT_FOUND);
    EXPECT(btcore_utp_remove(u, 12345), BTCORE_NOT_FOUND);
    EXPECT(btcore_utp_status(u, 12345, &st), BTCORE_NOT_FOUND);

    /* A dial: connecting, its SYN out to the address, a timer set; writes queue. */
    EXPECT(btcore_utp_connect(u, &a, now_ms(), &conn), BTCORE_OK);
    CHECK(conn != 0);
    EXPECT(btcore_utp_status(u, conn, NULL), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_utp_status(u, conn, &st), BTCORE_OK);
    CHECK(st.state == BTCORE_UTP_STATE_CONNECTING && st.outgoing == 1 && st.addr.port == 6881);
    CHECK(st.writable == 64 * 1024); /* the low-memory send buffer */
    EXPECT(btcore_utp_write(u, conn, NULL, 5, &n), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_utp_write(u, conn, buf, 5, NULL), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_utp_write(u, conn, (const uint8_t *)"hello", 5, &n), BTCORE_OK);
    CHECK(n == 5);
    EXPECT(btcore_utp_read(u, conn, NULL, 10, &n), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_utp_read(u, conn, buf, sizeof buf, &n), BTCORE_OK);
    CHECK(n == 0);
    unsigned char first = 0;
    CHECK(drain(u, &a, &first) == 1);
    CHECK(first == (4 << 4 | 1)); /* ST_SYN */
    EXPECT(btcore_utp_next_timeout(u, &ms), BTCORE_OK);
    CHECK(ms != UINT64_MAX && ms > now_ms());
    /* Removing an open connection tells the peer with a RESET; the id is gone. */
    EXPECT(btcore_utp_remove(u, conn), BTCORE_OK);
    CHECK(drain(u, &a, &first) == 1);
    CHECK(first == (3 << 4 | 1)); /* ST_RESET */
    EXPECT(btcore_utp_remove(u, conn), BTCORE_NOT_FOUND);
    EXPECT(btcore_utp_write(u, conn, buf, 1, &n), BTCORE_NOT_FOUND);
    btcore_utp_free(u);
}

static void garbage(void) {
    btcore_utp_settings s;
    btcore_utp_settings_default(&s);
    s.max_connections = 2;
    s.random_seed = 99;
    btcore_utp *u = NULL;
    EXPECT(btcore_utp_new(&s, &u), BTCORE_OK);
    btcore_addr a = v4(7000), b = v4(7001), c = v4(7002);
    unsigned char p[600];
    btcore_utp_incoming in;
    unsigned char first = 0;

    in = feed(u, &a, p, 0);
    CHECK(in.kind == BTCORE_UTP_NOT_UTP && in.conn == 0);
    in = feed(u, &a, "d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe", 56);
    CHECK(in.kind == BTCORE_UTP_NOT_UTP);
    header(p, 4, 0, 100, 1);
    in = feed(u, &a, p, 12); /* a truncated header */
    CHECK(in.kind == BTCORE_UTP_NOT_UTP);
    p[0] = 0x42; /* version 2 */
    in = feed(u, &a, p, 20);
    CHECK(in.kind == BTCORE_UTP_NOT_UTP);
    header(p, 4, 1, 100, 1); /* a selective ACK announced, nothing follows */
    in = feed(u, &a, p, 20);
    CHECK(in.kind == BTCORE_UTP_INVALID && in.invalid == BTCORE_UTP_PACKET_TRUNCATED_EXTENSION);
    header(p, 2, 1, 100, 1);
    p[20] = 0;
    p[21] = 0; /* a SACK of 0 bytes (any length from 1 is taken: libtorrent sends 5) */
    in = feed(u, &a, p, 22);
    CHECK(in.kind == BTCORE_UTP_INVALID && in.invalid == BTCORE_UTP_PACKET_BAD_SACK);
    header(p, 2, 1, 100, 1);
    p[20] = 1; p[21] = 4; memset(p + 22, 0, 4); /* SACK, then another SACK */
    p[26] = 0; p[27] = 4; memset(p + 28, 0, 4);
    in = feed(u, &a, p, 32);
    CHECK(in.kind == BTCORE_UTP_INVALID && in.invalid == BTCORE_UTP_PACKET_DUPLICATE_SACK);
    header(p, 2, 2, 100, 1); /* 17 empty extensions */
    for (int i = 0; i < 17; i++) {
        p[20 + 2 * i] = i == 16 ? 0 : 2;
        p[21 + 2 * i] = 0;
    }
    in = feed(u, &a, p, 20 + 34);
    CHECK(in.kind == BTCORE_UTP_INVALID && in.invalid == BTCORE_UTP_PACKET_TOO_MANY_EXTENSIONS);
    CHECK(drain(u, NULL, NULL) == 0); /* nothing answers garbage */

    /* A STATE for no connection: UNKNOWN, answered with a RESET. */
    header(p, 2, 0, 777, 1);
    in = feed(u, &a, p, 20);
    CHECK(in.kind == BTCORE_UTP_UNKNOWN && in.conn == 0);
    CHECK(drain(u, &a, &first) == 1 && first == (3 << 4 | 1));
    /* A RESET for no connection: UNKNOWN, no answer. */
    header(p, 3, 0, 777, 1);
    in = feed(u, &a, p, 20);
    CHECK(in.kind == BTCORE_UTP_UNKNOWN);
    CHECK(drain(u, NULL, NULL) == 0);

    /* A SYN: accepted, answered with a STATE; the same SYN again reaches it. */
    header(p, 4, 0, 100, 1);
    in = feed(u, &a, p, 20);
    CHECK(in.kind == BTCORE_UTP_ACCEPTED && in.conn != 0 && in.evicted == 0);
    uint64_t first_conn = in.conn;
    CHECK(drain(u, &a, &first) == 1 && first == (2 << 4 | 1));
    btcore_utp_conn_status st;
    EXPECT(btcore_utp_status(u, first_conn, &st), BTCORE_OK);
    CHECK(st.state == BTCORE_UTP_STATE_CONNECTED && st.outgoing == 0 && st.addr.port == 7000);
    in = feed(u, &a, p, 20);
    CHECK(in.kind == BTCORE_UTP_DELIVERED && in.conn == first_conn);
    drain(u, NULL, NULL);
    /* The socket holds 2: a third SYN evicts the oldest half-open one. */
    in = feed(u, &b, p, 20);
    CHECK(in.kind == BTCORE_UTP_ACCEPTED && in.evicted == 0);
    uint64_t second = in.conn;
    in = feed(u, &c, p, 20);
    CHECK(in.kind == BTCORE_UTP_ACCEPTED && in.evicted == first_conn);
    CHECK(in.conn != first_conn && in.conn != second);
    EXPECT(btcore_utp_status(u, first_conn, &st), BTCORE_NOT_FOUND);
    drain(u, NULL, NULL);
    btcore_utp_free(u);

    /* Full of our own dials (never evicted for a SYN): a SYN is REFUSED with a RESET;
       another dial is WRONG_STATE. */
    EXPECT(btcore_utp_new(&s, &u), BTCORE_OK);
    uint64_t d1 = 0, d2 = 0, d3 = 0;
    size_t n_written = 0;
    EXPECT(btcore_utp_connect(u, &b, now_ms(), &d1), BTCORE_OK);
    EXPECT(btcore_utp_connect(u, &c, now_ms(), &d2), BTCORE_OK);
    CHECK(d1 != d2);
    EXPECT(btcore_utp_connect(u, &c, now_ms(), &d3), BTCORE_WRONG_STATE);
    CHECK(drain(u, NULL, NULL) == 2);
    unsigned char syn_to_b[20] = {0};
    for (int i = 0; i < 2; i++)
        if (sent_port[i] == b.port) memcpy(syn_to_b, sent_hdr[i], 20);
    CHECK(syn_to_b[0] == (4 << 4 | 1));
    in = feed(u, &a, p, 20);
    CHECK(in.kind == BTCORE_UTP_REFUSED && in.conn == 0);
    CHECK(drain(u, &a, &first) == 1 && first == (3 << 4 | 1));
    /* A RESET from the dialed peer (with the id of its SYN) ends that dial. */
    btcore_utp_conn_status s1;
    EXPECT(btcore_utp_status(u, d1, &s1), BTCORE_OK);
    CHECK(s1.state == BTCORE_UTP_STATE_CONNECTING);
    header(p, 3, 0, (uint16_t)(syn_to_b[2] << 8 | syn_to_b[3]), 1);
    in = feed(u, &b, p, 20);
    CHECK(in.kind == BTCORE_UTP_DELIVERED && in.conn == d1);
    EXPECT(btcore_utp_status(u, d1, &s1), BTCORE_OK);
    CHECK(s1.state == BTCORE_UTP_STATE_CLOSED && s1.close_reason == BTCORE_UTP_CLOSE_RESET);
    EXPECT(btcore_utp_write(u, d1, p, 1, &n_written), BTCORE_WRONG_STATE);
    /* Closed with nothing to read: a new dial may take its slot. */
    EXPECT(btcore_utp_connect(u, &a, now_ms(), &d3), BTCORE_OK);
    EXPECT(btcore_utp_status(u, d1, &s1), BTCORE_NOT_FOUND);
    CHECK(d3 != d1 && d3 != d2);
    btcore_utp_free(u);

    /* Random bytes, the first byte often a uTP one: typed results, no crash. */
    s.max_connections = 4;
    EXPECT(btcore_utp_new(&s, &u), BTCORE_OK);
    unsigned seed = 12345;
    int kinds[6] = {0};
    for (int i = 0; i < 20000; i++) {
        size_t len = (size_t)(rand_r(&seed) % 80);
        for (size_t k = 0; k < len; k++) p[k] = (unsigned char)rand_r(&seed);
        if (len && rand_r(&seed) % 2) p[0] = (unsigned char)((rand_r(&seed) % 5) << 4 | 1);
        if (len > 1 && rand_r(&seed) % 2) p[1] = (unsigned char)(rand_r(&seed) % 3);
        btcore_addr from = v4((uint16_t)(9000 + rand_r(&seed) % 8));
        in = feed(u, &from, p, len);
        if (in.kind > BTCORE_UTP_UNKNOWN) {
            fprintf(stderr, "datagram %d: kind %u\n", i, in.kind);
            failures++;
            break;
        }
        kinds[in.kind]++;
        CHECK((in.kind == BTCORE_UTP_INVALID) == (in.invalid != 0));
        CHECK((in.kind == BTCORE_UTP_DELIVERED || in.kind == BTCORE_UTP_ACCEPTED) == (in.conn != 0));
        if (in.invalid > BTCORE_UTP_PACKET_OTHER) failures++;
        if (i % 16 == 0) btcore_utp_handle_timeout(u, now_ms() + (uint64_t)i * 100);
        drain(u, NULL, NULL);
    }
    printf("random datagrams: %d not uTP, %d invalid, %d delivered, %d accepted, %d refused, %d unknown\n",
           kinds[0], kinds[1], kinds[2], kinds[3], kinds[4], kinds[5]);
    CHECK(kinds[BTCORE_UTP_NOT_UTP] > 0 && kinds[BTCORE_UTP_INVALID] > 0);
    CHECK(kinds[BTCORE_UTP_ACCEPTED] > 0 && kinds[BTCORE_UTP_UNKNOWN] > 0);
    btcore_utp_free(u);
}

/* ---- two endpoints over real UDP sockets ---- */

struct end {
    btcore_utp *u;
    int fd;
    btcore_addr addr;
    uint64_t conn;
    const unsigned char *out;
    size_t out_len, sent;
    unsigned char *in;
    size_t in_len, got;
    int closed;
    unsigned long datagrams_out, datagrams_in;
};

static int open_end(struct end *e, uint64_t seed) {
    memset(e, 0, sizeof *e);
    e->fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (e->fd < 0) return 0;
    int big = 1 << 21;
    setsockopt(e->fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    setsockopt(e->fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    if (bind(e->fd, (struct sockaddr *)&sa, sizeof sa) != 0) return 0;
    if (getsockname(e->fd, (struct sockaddr *)&sa, &sl) != 0) return 0;
    fcntl(e->fd, F_SETFL, fcntl(e->fd, F_GETFL) | O_NONBLOCK);
    e->addr = v4(ntohs(sa.sin_port));
    btcore_utp_settings s;
    btcore_utp_settings_default(&s);
    s.random_seed = seed;
    EXPECT(btcore_utp_new(&s, &e->u), BTCORE_OK);
    return e->u != NULL;
}

static void fill(unsigned char *p, size_t n, uint32_t x) {
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        p[i] = (unsigned char)x;
    }
}

/* Sends every datagram the endpoint has queued. */
static void flush(struct end *e) {
    unsigned char buf[1500];
    size_t len = 0;
    btcore_addr to;
    while (btcore_utp_poll_transmit(e->u, now_ms(), buf, sizeof buf, &len, &to) == BTCORE_OK && len) {
        struct sockaddr_in sa;
        memset(&sa, 0, sizeof sa);
        sa.sin_family = AF_INET;
        sa.sin_port = htons(to.port);
        memcpy(&sa.sin_addr, to.ip, 4);
        if (sendto(e->fd, buf, len, 0, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EAGAIN) {
            perror("sendto");
            failures++;
        }
        e->datagrams_out++;
    }
}

/* One turn of an endpoint, in the poll order: each datagram in, then what it makes go
   out; due timers, then what they make go out; writes and reads, then what they make
   go out. */
static void turn(struct end *e) {
    unsigned char buf[1500];
    for (int i = 0; i < 256; i++) {
        struct sockaddr_in sa;
        socklen_t sl = sizeof sa;
        ssize_t r = recvfrom(e->fd, buf, sizeof buf, 0, (struct sockaddr *)&sa, &sl);
        if (r < 0) break;
        btcore_addr from;
        memset(&from, 0, sizeof from);
        from.family = BTCORE_ADDR_IPV4;
        from.port = ntohs(sa.sin_port);
        memcpy(from.ip, &sa.sin_addr, 4);
        btcore_utp_incoming in = feed(e->u, &from, buf, (size_t)r);
        e->datagrams_in++;
        if (in.kind == BTCORE_UTP_ACCEPTED) {
            CHECK(e->conn == 0);
            e->conn = in.conn;
        } else if (in.kind != BTCORE_UTP_DELIVERED) {
            fprintf(stderr, "port %u: datagram %lu gave kind %u\n", e->addr.port, e->datagrams_in, in.kind);
            failures++;
        }
        flush(e);
    }
    uint64_t due = 0;
    EXPECT(btcore_utp_next_timeout(e->u, &due), BTCORE_OK);
    if (due <= now_ms()) {
        EXPECT(btcore_utp_handle_timeout(e->u, now_ms()), BTCORE_OK);
        flush(e);
    }
    if (e->conn) {
        size_t n = 0;
        while (e->sent < e->out_len) {
            size_t want = e->out_len - e->sent;
            if (want > 50000) want = 50000;
            EXPECT(btcore_utp_write(e->u, e->conn, e->out + e->sent, want, &n), BTCORE_OK);
            if (n == 0) break;
            e->sent += n;
        }
        if (e->sent == e->out_len && !e->closed) {
            EXPECT(btcore_utp_close(e->u, e->conn), BTCORE_OK);
            e->closed = 1;
        }
        for (;;) {
            size_t room = e->in_len - e->got;
            unsigned char extra[1];
            /* Past the expected length the test reads into a 1-byte spare: too many
               bytes must fail, not overrun. */
            EXPECT(btcore_utp_read(e->u, e->conn, room ? e->in + e->got : extra, room ? room : 1, &n), BTCORE_OK);
            if (n == 0) break;
            if (!room) {
                fprintf(stderr, "port %u: more bytes than were sent\n", e->addr.port);
                failures++;
                break;
            }
            e->got += n;
        }
        flush(e);
    }
}

static int finished(struct end *e) {
    btcore_utp_conn_status st;
    if (!e->conn || e->got != e->in_len) return 0;
    if (btcore_utp_status(e->u, e->conn, &st) != BTCORE_OK) return 0;
    return st.state == BTCORE_UTP_STATE_CLOSED && st.eof;
}

static void transfer(size_t size_a, size_t size_b) {
    struct end a, b;
    if (!open_end(&a, 1) || !open_end(&b, 2)) {
        perror("UDP socket on 127.0.0.1");
        failures++;
        return;
    }
    unsigned char *a_out = malloc(size_a), *b_out = malloc(size_b);
    unsigned char *a_in = malloc(size_b), *b_in = malloc(size_a);
    if (!a_out || !b_out || !a_in || !b_in) abort();
    fill(a_out, size_a, 0x12345678u);
    fill(b_out, size_b, 0x9abcdef1u);
    a.out = a_out; a.out_len = size_a; a.in = a_in; a.in_len = size_b;
    b.out = b_out; b.out_len = size_b; b.in = b_in; b.in_len = size_a;
    memset(a_in, 0, size_b);
    memset(b_in, 0, size_a);

    uint64_t start = now_ms();
    EXPECT(btcore_utp_connect(a.u, &b.addr, start, &a.conn), BTCORE_OK);
    uint64_t deadline = start + 60000;
    while (now_ms() < deadline && !(finished(&a) && finished(&b))) {
        turn(&a);
        turn(&b);
        fd_set rd;
        FD_ZERO(&rd);
        FD_SET(a.fd, &rd);
        FD_SET(b.fd, &rd);
        uint64_t ta = 0, tb = 0, now = now_ms();
        btcore_utp_next_timeout(a.u, &ta);
        btcore_utp_next_timeout(b.u, &tb);
        uint64_t next = ta < tb ? ta : tb, wait = 10;
        if (next <= now) wait = 0;
        else if (next - now < wait) wait = next - now;
        struct timeval tv = {0, (suseconds_t)(wait * 1000)};
        int maxfd = a.fd > b.fd ? a.fd : b.fd;
        if (select(maxfd + 1, &rd, NULL, NULL, &tv) < 0 && errno != EINTR) break;
    }
    uint64_t took = now_ms() - start;
    CHECK(finished(&a) && finished(&b));
    CHECK(a.got == size_b && b.got == size_a);
    CHECK(memcmp(a_in, b_out, size_b) == 0);
    CHECK(memcmp(b_in, a_out, size_a) == 0);
    btcore_utp_conn_status sa, sb;
    EXPECT(btcore_utp_status(a.u, a.conn, &sa), BTCORE_OK);
    EXPECT(btcore_utp_status(b.u, b.conn, &sb), BTCORE_OK);
    CHECK(sa.state == BTCORE_UTP_STATE_CLOSED && sa.close_reason == BTCORE_UTP_CLOSE_NORMAL);
    CHECK(sb.state == BTCORE_UTP_STATE_CLOSED && sb.close_reason == BTCORE_UTP_CLOSE_NORMAL);
    CHECK(sa.outgoing == 1 && sb.outgoing == 0);
    CHECK(sa.addr.port == b.addr.port && sb.addr.port == a.addr.port);
    CHECK(sa.unacked == 0 && sb.unacked == 0 && sa.eof == 1 && sb.eof == 1);
    size_t n = 0;
    EXPECT(btcore_utp_write(a.u, a.conn, a_out, 1, &n), BTCORE_WRONG_STATE);
    printf("uTP over UDP: %zu bytes one way, %zu the other, in %llu ms (%lu/%lu datagrams out), rtt %u ms\n",
           size_a, size_b, (unsigned long long)took, a.datagrams_out, b.datagrams_out, sa.rtt_ms);
    EXPECT(btcore_utp_remove(a.u, a.conn), BTCORE_OK);
    EXPECT(btcore_utp_remove(b.u, b.conn), BTCORE_OK);
    EXPECT(btcore_utp_remove(a.u, a.conn), BTCORE_NOT_FOUND);
    btcore_utp_free(a.u);
    btcore_utp_free(b.u);
    close(a.fd);
    close(b.fd);
    free(a_out); free(b_out); free(a_in); free(b_in);
}

/* ---- the sans-IO session's dial policy ---- */

/* A single-file torrent of 32 KiB (two pieces). */
static size_t torrent(unsigned char *t) {
    const char *head = "d4:infod6:lengthi32768e4:name1:x12:piece lengthi16384e6:pieces40:";
    size_t n = strlen(head);
    memcpy(t, head, n);
    memset(t + n, 7, 40);
    memcpy(t + n + 40, "ee", 2);
    return n + 42;
}

/* The first CONNECT after a peer is added, under `policy`. */
static int first_connect(btcore_sansio *h, btcore_action *out) {
    btcore_action acts[16];
    size_t n = 0;
    for (int round = 0; round < 8; round++) {
        EXPECT(btcore_sansio_poll_actions(h, acts, 16, &n), BTCORE_OK);
        for (size_t i = 0; i < n; i++)
            if (acts[i].kind == BTCORE_ACTION_CONNECT) {
                *out = acts[i];
                return 1;
            }
        if (!n) break;
    }
    return 0;
}

static void dial_policy(void) {
    unsigned char t[128];
    size_t tl = torrent(t);
    btcore_sansio_settings ss;
    EXPECT(btcore_sansio_settings_default(&ss), BTCORE_OK);
    CHECK(ss.transport == BTCORE_TRANSPORT_POLICY_TCP_ONLY && ss.utp_connect_timeout_ms == 0);
    btcore_sansio *h = NULL;
    ss.transport = 9;
    EXPECT(btcore_sansio_new(&ss, &h), BTCORE_INVALID_PARAMETER);
    uint32_t policies[3] = {BTCORE_TRANSPORT_POLICY_TCP_ONLY, BTCORE_TRANSPORT_POLICY_BOTH,
                            BTCORE_TRANSPORT_POLICY_UTP_ONLY};
    uint8_t want[3] = {BTCORE_TRANSPORT_TCP, BTCORE_TRANSPORT_UTP, BTCORE_TRANSPORT_UTP};
    for (int i = 0; i < 3; i++) {
        ss.transport = policies[i];
        ss.random_seed = 5;
        ss.encryption = BTCORE_ENCRYPTION_ALLOWED; /* plain dials: no handshake in the way */
        EXPECT(btcore_sansio_new(&ss, &h), BTCORE_OK);
        uint32_t id = 0;
        EXPECT(btcore_sansio_add_torrent(h, t, tl, NULL, 0, 1000, &id), BTCORE_OK);
        btcore_addr peer = v4(51413);
        EXPECT(btcore_sansio_add_peer(h, id, &peer, 1000), BTCORE_OK);
        btcore_action c;
        CHECK(first_connect(h, &c));
        CHECK(c.transport == want[i] && c.addr.port == 51413);
        if (policies[i] == BTCORE_TRANSPORT_POLICY_BOTH) {
            /* The uTP dial refused: the same conn is dialed over TCP. */
            EXPECT(btcore_sansio_connect_failed(h, c.conn, 1100), BTCORE_OK);
            btcore_action again;
            CHECK(first_connect(h, &again));
            CHECK(again.conn == c.conn && again.transport == BTCORE_TRANSPORT_TCP);
        }
        /* A uTP connection accepted by the host's btcore_utp endpoint. */
        uint32_t in = 0;
        btcore_addr from = v4(40000);
        EXPECT(btcore_sansio_incoming_over(h, &from, BTCORE_TRANSPORT_UTP, 1200, &in), BTCORE_OK);
        EXPECT(btcore_sansio_incoming_over(h, &from, 7, 1200, &in), BTCORE_INVALID_PARAMETER);
        EXPECT(btcore_sansio_incoming_over(h, NULL, BTCORE_TRANSPORT_UTP, 1200, &in), BTCORE_NULL_PARAMETER);
        btcore_sansio_free(h);
    }
    /* Under BOTH, a uTP dial unanswered for utp_connect_timeout_ms: a CLOSE of it, then
       the same conn over TCP. */
    ss.transport = BTCORE_TRANSPORT_POLICY_BOTH;
    ss.utp_connect_timeout_ms = 1500;
    EXPECT(btcore_sansio_new(&ss, &h), BTCORE_OK);
    uint32_t id = 0;
    EXPECT(btcore_sansio_add_torrent(h, t, tl, NULL, 0, 1000, &id), BTCORE_OK);
    btcore_addr peer = v4(51414);
    EXPECT(btcore_sansio_add_peer(h, id, &peer, 1000), BTCORE_OK);
    btcore_action c;
    CHECK(first_connect(h, &c));
    CHECK(c.transport == BTCORE_TRANSPORT_UTP);
    int closed = 0, redialed = 0;
    for (uint64_t t_ms = 1000; t_ms <= 5000 && !redialed; t_ms += 250) {
        EXPECT(btcore_sansio_handle_timeout(h, t_ms), BTCORE_OK);
        btcore_action acts[16];
        size_t n = 0;
        EXPECT(btcore_sansio_poll_actions(h, acts, 16, &n), BTCORE_OK);
        for (size_t i = 0; i < n; i++) {
            if (acts[i].kind == BTCORE_ACTION_CLOSE && acts[i].conn == c.conn) closed = 1;
            if (acts[i].kind == BTCORE_ACTION_CONNECT && acts[i].conn == c.conn) {
                CHECK(closed && acts[i].transport == BTCORE_TRANSPORT_TCP);
                CHECK(t_ms >= 2500);
                redialed = 1;
            }
        }
    }
    CHECK(closed && redialed);
    btcore_sansio_free(h);
}

/* Every datagram queued by `from` (at address `fa`) handed to `to`; returns how many. */
static int shuttle(btcore_utp *from, const btcore_addr *fa, btcore_utp *to, uint64_t t) {
    unsigned char buf[1500];
    size_t len = 0;
    btcore_addr dst;
    int n = 0;
    while (btcore_utp_poll_transmit(from, t, buf, sizeof buf, &len, &dst) == BTCORE_OK && len) {
        btcore_utp_incoming in;
        if (to) EXPECT(btcore_utp_recv(to, fa, buf, len, t, &in), BTCORE_OK);
        if (++n > 10000) break;
    }
    return n;
}

static uint32_t next_event(btcore_utp *u, uint64_t *conn) {
    uint32_t kind = 99;
    *conn = 99;
    EXPECT(btcore_utp_poll_event(u, &kind, conn), BTCORE_OK);
    return kind;
}

static void events(void) {
    btcore_utp_settings s;
    btcore_utp_settings_default(&s);
    s.random_seed = 5;
    s.confirm_timeout_ms = 2000;
    s.linger_ms = 3000;
    btcore_utp *a = NULL, *b = NULL;
    EXPECT(btcore_utp_new(&s, &a), BTCORE_OK);
    s.random_seed = 6;
    EXPECT(btcore_utp_new(&s, &b), BTCORE_OK);
    s.confirm_timeout_ms = 50; /* below 100 ms */
    btcore_utp *bad = NULL;
    EXPECT(btcore_utp_new(&s, &bad), BTCORE_INVALID_PARAMETER);
    btcore_addr aa = v4(7100), ba = v4(7200), forged = v4(7300);
    uint64_t t = 1000000, conn = 0, dial = 0, peer = 0;
    EXPECT(btcore_utp_poll_event(a, NULL, &conn), BTCORE_NULL_PARAMETER);
    CHECK(next_event(a, &conn) == BTCORE_UTP_EVENT_NONE && conn == 0);

    /* a dials b: b's socket opens the connection, but no peer yet (not confirmed). */
    EXPECT(btcore_utp_connect(a, &ba, t, &dial), BTCORE_OK);
    CHECK(shuttle(a, &aa, b, t) == 1);
    CHECK(next_event(b, &conn) == BTCORE_UTP_EVENT_NONE);
    CHECK(shuttle(b, &ba, a, t) == 1); /* b's STATE */
    CHECK(next_event(a, &conn) == BTCORE_UTP_EVENT_CHANGED && conn == dial);
    CHECK(next_event(a, &conn) == BTCORE_UTP_EVENT_NONE);
    btcore_utp_conn_status st;
    EXPECT(btcore_utp_status(a, dial, &st), BTCORE_OK);
    CHECK(st.state == BTCORE_UTP_STATE_CONNECTED);
    size_t n = 0;
    EXPECT(btcore_utp_write(a, dial, (const uint8_t *)"hello", 5, &n), BTCORE_OK);
    CHECK(shuttle(a, &aa, b, t) >= 1);
    /* Its first data acknowledges b's STATE: confirmed, a peer, "hello" readable. */
    CHECK(next_event(b, &peer) == BTCORE_UTP_EVENT_ACCEPTED && peer != 0);
    unsigned char buf[64];
    EXPECT(btcore_utp_read(b, peer, buf, sizeof buf, &n), BTCORE_OK);
    CHECK(n == 5 && memcmp(buf, "hello", 5) == 0);
    CHECK(next_event(b, &conn) == BTCORE_UTP_EVENT_NONE);

    /* A SYN from a forged address: opened, never confirmed, dropped after 2 s. */
    unsigned char p[20];
    header(p, 4, 0, 4242, 1);
    btcore_utp_incoming in;
    EXPECT(btcore_utp_recv(b, &forged, p, 20, t, &in), BTCORE_OK);
    CHECK(in.kind == BTCORE_UTP_ACCEPTED);
    uint64_t ghost = in.conn;
    shuttle(b, &ba, NULL, t);
    uint64_t due = 0;
    EXPECT(btcore_utp_next_timeout(b, &due), BTCORE_OK);
    CHECK(due <= t + 2000);
    EXPECT(btcore_utp_handle_timeout(b, t + 1999), BTCORE_OK);
    EXPECT(btcore_utp_status(b, ghost, &st), BTCORE_OK);
    EXPECT(btcore_utp_handle_timeout(b, t + 2000), BTCORE_OK);
    EXPECT(btcore_utp_status(b, ghost, &st), BTCORE_NOT_FOUND);
    CHECK(next_event(b, &conn) == BTCORE_UTP_EVENT_NONE);
    shuttle(b, &ba, NULL, t + 2000);

    /* b releases its peer: a FIN goes out, the id is gone at once, no event names it;
       a hears the end of the stream. */
    EXPECT(btcore_utp_release(b, peer, t + 2000, 0), BTCORE_OK);
    EXPECT(btcore_utp_status(b, peer, &st), BTCORE_NOT_FOUND);
    EXPECT(btcore_utp_release(b, peer, t + 2000, 0), BTCORE_NOT_FOUND);
    CHECK(shuttle(b, &ba, a, t + 2000) >= 1);
    CHECK(next_event(a, &conn) == BTCORE_UTP_EVENT_CHANGED && conn == dial);
    EXPECT(btcore_utp_read(a, dial, buf, sizeof buf, &n), BTCORE_OK);
    EXPECT(btcore_utp_status(a, dial, &st), BTCORE_OK);
    CHECK(st.eof == 1);
    /* a never answers: b drops the released connection after its linger (3 s). */
    EXPECT(btcore_utp_handle_timeout(b, t + 2000 + 2999), BTCORE_OK);
    uint64_t held = 0;
    EXPECT(btcore_utp_next_timeout(b, &held), BTCORE_OK);
    CHECK(held != UINT64_MAX);
    EXPECT(btcore_utp_handle_timeout(b, t + 2000 + 3000), BTCORE_OK);
    EXPECT(btcore_utp_next_timeout(b, &held), BTCORE_OK);
    CHECK(held == UINT64_MAX); /* nothing held any more */
    CHECK(next_event(b, &conn) == BTCORE_UTP_EVENT_NONE);
    btcore_utp_free(a);
    btcore_utp_free(b);
}

int main(void) {
    misuse();
    garbage();
    events();
    transfer(4u << 20, 3u << 20);
    dial_policy();
    if (failures) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
