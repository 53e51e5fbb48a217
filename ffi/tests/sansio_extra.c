/*
 * The sans-IO layer's encryption, tracker, file and DHT entry points from C:
 * misuse (NULL pointers, wrong and freed handles, bad values) gives error codes, and
 * three DHT nodes on real UDP sockets on 127.0.0.1 find the port one of them announced.
 * Prints "all checks passed" on success.
 */
#define _POSIX_C_SOURCE 200809L
#include <btcore.h>

#include <arpa/inet.h>
#include <errno.h>
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
            fprintf(stderr, "%s:%d: %s gave %s, expected %s\n", __FILE__, __LINE__, #call, \
                    btcore_result_name(r_), btcore_result_name(code));                    \
            failures++;                                                                   \
        }                                                                                 \
    } while (0)

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "%s:%d: %s is false\n", __FILE__, __LINE__, #cond);     \
            failures++;                                                             \
        }                                                                           \
    } while (0)

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void misuse(void) {
    btcore_sansio *h = NULL;
    btcore_sansio_settings ss;
    EXPECT(btcore_sansio_settings_default(&ss), BTCORE_OK);
    CHECK(ss.encryption == BTCORE_ENCRYPTION_PREFERRED);
    ss.encryption = 42;
    EXPECT(btcore_sansio_new(&ss, &h), BTCORE_INVALID_PARAMETER);
    CHECK(h == NULL);
    ss.encryption = BTCORE_ENCRYPTION_REQUIRED;
    EXPECT(btcore_sansio_new(&ss, &h), BTCORE_OK);

    unsigned char rnd[16] = {1, 2, 3};
    EXPECT(btcore_sansio_entropy(h, rnd, sizeof rnd), BTCORE_OK);
    EXPECT(btcore_sansio_entropy(h, NULL, 4), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_sansio_entropy(NULL, rnd, 4), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_sansio_entropy((btcore_sansio *)rnd, rnd, 4), BTCORE_WRONG_HANDLE);

    uint32_t count = 0, index = 0;
    uint64_t at = 0, left = 0;
    btcore_sansio_file_info fi;
    char path[64];
    EXPECT(btcore_sansio_file_count(h, 1, &count), BTCORE_NOT_FOUND);
    EXPECT(btcore_sansio_file_count(h, 1, NULL), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_sansio_file(h, 1, 0, &fi, path, sizeof path), BTCORE_NOT_FOUND);
    EXPECT(btcore_sansio_file(h, 1, 0, NULL, path, sizeof path), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_sansio_file_at(h, 1, 0, &index, &at, &left), BTCORE_NOT_FOUND);
    EXPECT(btcore_sansio_file_at(h, 1, 0, &index, NULL, &left), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_sansio_dht_done(h, 1, 1, BTCORE_DHT_REACHED, now_ms()), BTCORE_NOT_FOUND);
    EXPECT(btcore_sansio_dht_done(h, 1, 1, 9, now_ms()), BTCORE_INVALID_PARAMETER);

    /* Tracker helpers: no handle, checked arguments. */
    btcore_action a;
    memset(&a, 0, sizeof a);
    a.kind = BTCORE_ACTION_SEND;
    char url[256];
    size_t len = 0;
    EXPECT(btcore_tracker_announce_url(NULL, url, sizeof url, &len), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_tracker_announce_url(&a, url, sizeof url, &len), BTCORE_INVALID_PARAMETER);
    a.kind = BTCORE_ACTION_ANNOUNCE;
    a.tracker = (const uint8_t *)"http://t.example/announce";
    a.tracker_len = strlen((const char *)a.tracker);
    a.port = 6881;
    a.announce_event = 77;
    EXPECT(btcore_tracker_announce_url(&a, url, sizeof url, &len), BTCORE_INVALID_PARAMETER);
    a.announce_event = BTCORE_ANNOUNCE_STARTED;
    EXPECT(btcore_tracker_announce_url(&a, url, sizeof url, NULL), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_tracker_announce_url(&a, url, 4, &len), BTCORE_BUFFER_TOO_SMALL);
    CHECK(len > 4);
    EXPECT(btcore_tracker_announce_url(&a, url, sizeof url, &len), BTCORE_OK);
    CHECK(strlen(url) == len && strstr(url, "&port=6881&") != NULL);
    btcore_tracker_reply reply;
    btcore_addr peers[4];
    EXPECT(btcore_tracker_parse_announce((const uint8_t *)"garbage", 7, peers, 4, &reply), BTCORE_INVALID_PARAMETER);
    EXPECT(btcore_tracker_parse_announce(NULL, 7, peers, 4, &reply), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_tracker_parse_announce((const uint8_t *)"de", 2, NULL, 4, &reply), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_tracker_parse_announce((const uint8_t *)"de", 2, NULL, 0, &reply), BTCORE_OK);
    CHECK(reply.num_peers == 0 && reply.failure == 0);
    unsigned char pkt[128];
    uint64_t cid = 0;
    EXPECT(btcore_tracker_udp_connect_request(1, pkt, sizeof pkt, &len), BTCORE_OK);
    CHECK(len == 16);
    EXPECT(btcore_tracker_udp_parse_connect(pkt, 3, 1, &cid), BTCORE_INVALID_PARAMETER);
    EXPECT(btcore_tracker_udp_announce_request(&a, 5, 2, pkt, sizeof pkt, &len), BTCORE_OK);
    CHECK(len == 98);
    EXPECT(btcore_tracker_udp_announce_request(&a, 5, 2, pkt, 50, &len), BTCORE_BUFFER_TOO_SMALL);
    EXPECT(btcore_tracker_udp_parse_announce(pkt, 98, 2, 0, peers, 4, &reply), BTCORE_INVALID_PARAMETER);

    /* DHT handles. */
    btcore_dht *d = NULL;
    btcore_dht_settings ds;
    uint64_t ms = 0, lookup = 0;
    EXPECT(btcore_dht_settings_default(&ds), BTCORE_OK);
    EXPECT(btcore_dht_new(&ds, NULL, 0, now_ms(), &d), BTCORE_INVALID_PARAMETER); /* zero id */
    memset(ds.node_id, 7, 20);
    memset(ds.token_key, 9, 20);
    EXPECT(btcore_dht_new(&ds, NULL, 2, now_ms(), &d), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_dht_new(NULL, NULL, 0, now_ms(), &d), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_dht_new(&ds, NULL, 0, now_ms(), &d), BTCORE_OK);
    EXPECT(btcore_dht_next_timeout((btcore_dht *)h, &ms), BTCORE_WRONG_HANDLE);
    EXPECT(btcore_sansio_file_count((btcore_sansio *)d, 1, &count), BTCORE_WRONG_HANDLE);
    EXPECT(btcore_dht_lookup(d, NULL, 0, now_ms(), &lookup), BTCORE_NULL_PARAMETER);
    btcore_addr bad;
    memset(&bad, 0, sizeof bad);
    EXPECT(btcore_dht_recv(d, &bad, pkt, 10, now_ms()), BTCORE_INVALID_PARAMETER);
    EXPECT(btcore_dht_recv(d, NULL, pkt, 10, now_ms()), BTCORE_NULL_PARAMETER);
    btcore_dht_free(d);
    EXPECT(btcore_dht_next_timeout(d, &ms), BTCORE_WRONG_HANDLE);
    btcore_dht_free(d); /* freed twice: a no-op */
    btcore_sansio_free(h);
    EXPECT(btcore_sansio_entropy(h, rnd, 4), BTCORE_WRONG_HANDLE);
}

/* ---- three DHT nodes on UDP sockets ---- */

struct node {
    btcore_dht *d;
    int fd;
    btcore_addr addr;
};

static void open_node(struct node *n, const btcore_addr *bootstrap, uint8_t tag) {
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    n->fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (n->fd < 0 || bind(n->fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        getsockname(n->fd, (struct sockaddr *)&sa, &sl) < 0) {
        perror("udp");
        exit(1);
    }
    memset(&n->addr, 0, sizeof n->addr);
    n->addr.family = BTCORE_ADDR_IPV4;
    n->addr.port = ntohs(sa.sin_port);
    memcpy(n->addr.ip, &sa.sin_addr, 4);
    btcore_dht_settings ds;
    btcore_dht_settings_default(&ds);
    for (int i = 0; i < 20; i++) {
        ds.node_id[i] = (uint8_t)(tag * 37 + i * 11 + (int)(now_ms() & 0xff));
        ds.token_key[i] = (uint8_t)(rand() & 0xff);
    }
    ds.random_seed = now_ms() ^ tag;
    EXPECT(btcore_dht_new(&ds, bootstrap, bootstrap ? 1 : 0, now_ms(), &n->d), BTCORE_OK);
}

/* Sends what each node queued, reads what arrived, runs the timers, for `ms`
 * milliseconds; returns 1 as soon as node `want` reports peers with `port`. */
static int run(struct node *nodes, int count, uint64_t ms, int want, uint16_t port, uint64_t lookup,
               int *announced) {
    uint64_t end = now_ms() + ms;
    while (now_ms() < end) {
        fd_set rd;
        FD_ZERO(&rd);
        int maxfd = 0;
        for (int i = 0; i < count; i++) {
            unsigned char buf[1500];
            size_t len = 0;
            btcore_addr to;
            while (btcore_dht_poll_transmit(nodes[i].d, now_ms(), buf, sizeof buf, &len, &to) == BTCORE_OK && len) {
                struct sockaddr_in sa;
                memset(&sa, 0, sizeof sa);
                sa.sin_family = AF_INET;
                sa.sin_port = htons(to.port);
                memcpy(&sa.sin_addr, to.ip, 4);
                sendto(nodes[i].fd, buf, len, 0, (struct sockaddr *)&sa, sizeof sa);
            }
            FD_SET(nodes[i].fd, &rd);
            if (nodes[i].fd > maxfd) maxfd = nodes[i].fd;
        }
        struct timeval tv = {0, 20000};
        if (select(maxfd + 1, &rd, NULL, NULL, &tv) < 0 && errno != EINTR) return 0;
        for (int i = 0; i < count; i++) {
            if (FD_ISSET(nodes[i].fd, &rd)) {
                unsigned char buf[1500];
                struct sockaddr_in sa;
                socklen_t sl = sizeof sa;
                ssize_t r = recvfrom(nodes[i].fd, buf, sizeof buf, 0, (struct sockaddr *)&sa, &sl);
                if (r > 0) {
                    btcore_addr from;
                    memset(&from, 0, sizeof from);
                    from.family = BTCORE_ADDR_IPV4;
                    from.port = ntohs(sa.sin_port);
                    memcpy(from.ip, &sa.sin_addr, 4);
                    EXPECT(btcore_dht_recv(nodes[i].d, &from, buf, (size_t)r, now_ms()), BTCORE_OK);
                }
            }
            btcore_dht_handle_timeout(nodes[i].d, now_ms());
            btcore_dht_event ev;
            btcore_addr peers[200];
            uint8_t some = 0;
            while (btcore_dht_poll_event(nodes[i].d, &ev, peers, 200, &some) == BTCORE_OK && some) {
                if (ev.kind == BTCORE_DHT_EVENT_DONE && announced && ev.announced > 0) *announced = 1;
                if (i == want && ev.kind == BTCORE_DHT_EVENT_PEERS && ev.lookup == lookup)
                    for (uint32_t p = 0; p < ev.num_peers; p++)
                        if (peers[p].port == port) return 1;
            }
        }
        if (announced && *announced) return 1;
    }
    return 0;
}

static void dht_over_udp(void) {
    struct node nodes[3];
    open_node(&nodes[0], NULL, 1);
    open_node(&nodes[1], &nodes[0].addr, 2);
    open_node(&nodes[2], &nodes[0].addr, 3);
    run(nodes, 3, 500, -1, 0, 0, NULL);
    uint32_t known = 0;
    EXPECT(btcore_dht_node_count(nodes[1].d, now_ms(), &known), BTCORE_OK);
    CHECK(known >= 1);
    uint8_t ih[20];
    memset(ih, 0x5a, sizeof ih);
    uint64_t lookup = 0;
    int announced = 0;
    EXPECT(btcore_dht_lookup(nodes[1].d, ih, 5555, now_ms(), &lookup), BTCORE_OK);
    CHECK(run(nodes, 3, 10000, -1, 0, 0, &announced));
    EXPECT(btcore_dht_lookup(nodes[2].d, ih, 0, now_ms(), &lookup), BTCORE_OK);
    CHECK(run(nodes, 3, 10000, 2, 5555, lookup, NULL));
    for (int i = 0; i < 3; i++) {
        btcore_dht_free(nodes[i].d);
        close(nodes[i].fd);
    }
}

int main(void) {
    srand((unsigned)now_ms());
    misuse();
    dht_over_udp();
    if (failures) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
