/*
 * settings.c: the session's settings from C, run by ffi/tests/c_api.rs.
 *
 *   settings rate  FILE.torrent OUT_DIR HOST:PORT
 *       a download limit changed while the session's thread runs: the measured rate
 *       follows it within 2 s, up and down; the reported rate tracks the measured one.
 *   settings burst FILE.torrent OUT_DIR HOST:PORT
 *       under a limit (poll mode), the first second after the first byte moves at
 *       most 1.25 times the limit, and the whole download stays within a few % of it.
 *   settings apply DHT_PORT LISTEN_PORT BUSY_PORT
 *       btcore_session_apply_settings turns the DHT on (it answers a ping on
 *       DHT_PORT) and off (it stops answering), moves the listen socket to
 *       LISTEN_PORT, and keeps it there when BUSY_PORT cannot be bound.
 *   settings dht MAGNET OUT_DIR BOOTSTRAP
 *       a trackerless magnet link downloaded through the DHT only.
 *
 * Prints "settings: ok" and exits 0 on success; every wait has a deadline.
 */
#define _POSIX_C_SOURCE 200809L
#include <btcore.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define FAIL(...)                                                                      \
    do {                                                                               \
        fprintf(stderr, "settings: " __VA_ARGS__);                                     \
        fprintf(stderr, "\n");                                                         \
        exit(1);                                                                       \
    } while (0)

static void ok(btcore_result r, const char *what) {
    if (r != BTCORE_OK) FAIL("%s: %s", what, btcore_result_name(r));
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

static btcore_torrent_status status(btcore_session *s, uint32_t id) {
    btcore_torrent_status st;
    ok(btcore_session_torrent_status(s, id, &st), "status");
    return st;
}

static void base_settings(btcore_settings *st, const char *dir) {
    ok(btcore_settings_default(st), "defaults");
    st->download_dir = dir;
    st->listen_address = "127.0.0.1";
    st->listen_port = 0;
    st->use_trackers = false;
    st->enable_dht = 0; /* never the public routers from a test */
}

static btcore_session *session_with_torrent(btcore_settings *st, const char *torrent,
                                            const char *peer, uint32_t *id) {
    btcore_session *s = NULL;
    ok(btcore_session_new(st, &s), "btcore_session_new");
    ok(btcore_session_add_torrent_file(s, torrent, NULL, id), "add");
    ok(btcore_session_add_peer(s, *id, peer), "add_peer");
    return s;
}

/* Waits (the session's thread runs) until something is downloaded. */
static void wait_first_byte(btcore_session *s, uint32_t id) {
    double end = now_s() + 60;
    while (status(s, id).downloaded == 0) {
        if (now_s() > end) FAIL("nothing downloaded in 60 s");
        sleep_ms(5);
    }
}

/* Bytes per second over `secs` seconds from now (the session's thread runs). */
static double measure(btcore_session *s, uint32_t id, double secs) {
    uint64_t a = status(s, id).downloaded;
    double t0 = now_s();
    sleep_ms((long)(secs * 1000));
    uint64_t b = status(s, id).downloaded;
    return (double)(b - a) / (now_s() - t0);
}

static void within(double got, double limit, double lo, double hi, const char *what) {
    printf("%s: %.0f B/s under a limit of %.0f B/s (%.2fx)\n", what, got, limit, got / limit);
    if (got < lo * limit || got > hi * limit)
        FAIL("%s: %.0f B/s, want %.2f to %.2f times %.0f", what, got, lo, hi, limit);
}

static int rate_test(const char *torrent, const char *dir, const char *peer) {
    const double a = 512 * 1024, b = 2048 * 1024, c = 256 * 1024;
    btcore_settings st;
    base_settings(&st, dir);
    st.download_rate_limit = (uint64_t)a;
    uint32_t id;
    btcore_session *s = session_with_torrent(&st, torrent, peer, &id);
    ok(btcore_session_start(s), "start");
    wait_first_byte(s, id);
    sleep_ms(500);
    within(measure(s, id, 2.0), a, 0.7, 1.25, "limit A");

    /* Up: the 2 s after the change move at the new rate. */
    st.download_rate_limit = (uint64_t)b;
    ok(btcore_session_apply_settings(s, &st), "apply B");
    within(measure(s, id, 2.0), b, 0.7, 1.25, "limit B, first 2 s");
    /* The reported rate tracks the measured one. */
    double reported = (double)status(s, id).download_rate;
    within(reported, b, 0.7, 1.3, "limit B, reported");

    /* Down. */
    st.download_rate_limit = (uint64_t)c;
    ok(btcore_session_apply_settings(s, &st), "apply C");
    within(measure(s, id, 2.0), c, 0.5, 1.3, "limit C, first 2 s");
    btcore_session_free(s);
    return 0;
}

static int burst_test(const char *torrent, const char *dir, const char *peer) {
    const double limit = 1024 * 1024;
    btcore_settings st;
    base_settings(&st, dir);
    st.download_rate_limit = (uint64_t)limit;
    uint32_t id;
    btcore_session *s = session_with_torrent(&st, torrent, peer, &id);
    /* Poll mode: the application's loop runs the session. */
    double end = now_s() + 120, t0 = 0, first_second = -1;
    uint64_t total = 0;
    for (;;) {
        if (now_s() > end) FAIL("not complete in 120 s");
        ok(btcore_session_poll(s, 5), "poll");
        btcore_torrent_status t = status(s, id);
        double t_now = now_s();
        if (t0 == 0 && t.downloaded > 0) t0 = t_now;
        if (t0 != 0 && first_second < 0 && t_now >= t0 + 1.0)
            first_second = (double)t.downloaded / (t_now - t0);
        if (t.state == BTCORE_STATE_SEEDING) {
            total = t.downloaded;
            break;
        }
    }
    double whole = (double)total / (now_s() - t0);
    btcore_session_free(s);
    if (first_second < 0) FAIL("finished within a second: the limit did not hold");
    within(first_second, limit, 0.5, 1.25, "first second");
    within(whole, limit, 0.8, 1.06, "whole download");
    return 0;
}

/* Whether a DHT node answers a KRPC ping on 127.0.0.1:port within 500 ms. */
static int dht_ping(uint16_t port) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) FAIL("socket");
    struct timeval tv = {0, 500000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in to;
    memset(&to, 0, sizeof to);
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    static const char q[] = "d1:ad2:id20:btcore-settings-teste1:q4:ping1:t2:pp1:y1:qe";
    sendto(fd, q, sizeof q - 1, 0, (struct sockaddr *)&to, sizeof to);
    char buf[1500];
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    close(fd);
    for (ssize_t i = 0; i + 6 <= n; i++)
        if (memcmp(buf + i, "1:y1:r", 6) == 0) return 1;
    return 0;
}

static int dht_answers(uint16_t port, int tries) {
    for (int i = 0; i < tries; i++)
        if (dht_ping(port)) return 1;
    return 0;
}

/* Whether something accepts TCP connections on 127.0.0.1:port. */
static int tcp_connects(uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in to;
    memset(&to, 0, sizeof to);
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int r = connect(fd, (struct sockaddr *)&to, sizeof to) == 0;
    close(fd);
    return r;
}

static int apply_test(uint16_t dht_port, uint16_t listen_port, uint16_t busy_port) {
    btcore_settings st;
    base_settings(&st, ".");
    btcore_session *s = NULL;
    ok(btcore_session_new(&st, &s), "btcore_session_new");
    uint16_t port0 = 0;
    ok(btcore_session_listen_port(s, &port0), "listen_port");
    ok(btcore_session_start(s), "start");
    if (dht_answers(dht_port, 1)) FAIL("a DHT answers on %u before it is on", dht_port);

    /* DHT on, on its own port, joining through a node that is not there. */
    char boot[32];
    snprintf(boot, sizeof boot, "127.0.0.1:%u", (unsigned)busy_port);
    st.enable_dht = 1;
    st.dht_port = dht_port;
    st.dht_bootstrap = boot;
    ok(btcore_session_apply_settings(s, &st), "apply: DHT on");
    if (!dht_answers(dht_port, 6)) FAIL("the DHT does not answer on %u once on", dht_port);
    st.enable_dht = 0;
    ok(btcore_session_apply_settings(s, &st), "apply: DHT off");
    if (dht_answers(dht_port, 2)) FAIL("the DHT still answers on %u once off", dht_port);

    /* Misuse: NULL arguments, a freed or foreign handle. */
    if (btcore_session_apply_settings(NULL, &st) != BTCORE_NULL_PARAMETER)
        FAIL("a NULL session accepted");
    if (btcore_session_apply_settings(s, NULL) != BTCORE_NULL_PARAMETER)
        FAIL("NULL settings accepted");
    if (btcore_session_apply_settings((btcore_session *)&st, &st) != BTCORE_WRONG_HANDLE)
        FAIL("a foreign handle accepted");

    /* Invalid values change nothing. */
    st.enable_pex = 2;
    if (btcore_session_apply_settings(s, &st) != BTCORE_INVALID_PARAMETER)
        FAIL("enable_pex = 2 accepted");
    st.enable_pex = 1;
    st.dht_bootstrap = "no-port";
    st.enable_dht = 1;
    if (btcore_session_apply_settings(s, &st) != BTCORE_INVALID_PARAMETER)
        FAIL("a bootstrap node without a port accepted");
    st.dht_bootstrap = boot;
    st.enable_dht = 0;
    if (dht_answers(dht_port, 1)) FAIL("a refused apply turned the DHT on");

    /* The listen port moves, in poll mode this time. */
    ok(btcore_session_stop(s), "stop");
    st.listen_port = listen_port;
    ok(btcore_session_apply_settings(s, &st), "apply: listen port");
    uint16_t port = 0;
    ok(btcore_session_listen_port(s, &port), "listen_port");
    if (port != listen_port) FAIL("listening on %u, want %u", port, listen_port);
    ok(btcore_session_poll(s, 0), "poll");
    if (!tcp_connects(listen_port)) FAIL("nothing listens on %u", listen_port);
    if (port0 != listen_port && tcp_connects(port0)) FAIL("the old port %u still listens", port0);

    /* A port in use: an error, and the old socket stays. */
    int busy = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(busy_port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(busy, (struct sockaddr *)&a, sizeof a) != 0 || listen(busy, 4) != 0)
        FAIL("cannot hold port %u", busy_port);
    st.listen_port = busy_port;
    btcore_result r = btcore_session_apply_settings(s, &st);
    if (r != BTCORE_IO) FAIL("binding a port in use gave %s", btcore_result_name(r));
    ok(btcore_session_listen_port(s, &port), "listen_port");
    if (port != listen_port) FAIL("listening on %u after a failed move", port);
    if (!tcp_connects(listen_port)) FAIL("the old socket was lost after a failed move");
    close(busy);
    btcore_session_free(s);
    return 0;
}

static int dht_test(const char *magnet, const char *dir, const char *bootstrap) {
    const char *timeout_env = getenv("BTCORE_TIMEOUT_S");
    double timeout = timeout_env ? atof(timeout_env) : 120;
    btcore_settings st;
    base_settings(&st, dir);
    st.enable_dht = 1;
    st.dht_bootstrap = bootstrap;
    btcore_session *s = NULL;
    ok(btcore_session_new(&st, &s), "btcore_session_new");
    uint32_t id;
    ok(btcore_session_add_magnet(s, magnet, NULL, &id), "add_magnet");
    ok(btcore_session_start(s), "start");
    double end = now_s() + timeout;
    for (;;) {
        if (now_s() > end) FAIL("the magnet link was not downloaded in %.0f s", timeout);
        btcore_torrent_status t = status(s, id);
        if (t.state == BTCORE_STATE_SEEDING) break;
        sleep_ms(100);
    }
    btcore_session_free(s);
    return 0;
}

int main(int argc, char **argv) {
    int r = 2;
    if (argc == 5 && strcmp(argv[1], "rate") == 0) r = rate_test(argv[2], argv[3], argv[4]);
    else if (argc == 5 && strcmp(argv[1], "burst") == 0) r = burst_test(argv[2], argv[3], argv[4]);
    else if (argc == 5 && strcmp(argv[1], "apply") == 0)
        r = apply_test((uint16_t)atoi(argv[2]), (uint16_t)atoi(argv[3]), (uint16_t)atoi(argv[4]));
    else if (argc == 5 && strcmp(argv[1], "dht") == 0) r = dht_test(argv[2], argv[3], argv[4]);
    else fprintf(stderr, "usage: settings rate|burst|apply|dht ...\n");
    if (r == 0) printf("settings: ok\n");
    return r;
}
