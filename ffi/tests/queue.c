/* queue.c: the download queue and the per-torrent limits through the C API, two
 * sessions in one process on 127.0.0.1 (run under AddressSanitizer and UBSan from
 * c_api.rs):
 *
 *   queue PACK_PARENT LEECH_DIR   a seed serves "pack" and "pack2"; a leecher with a
 *                                 download queue of 1 adds both: the second waits,
 *                                 queued with no connection, until the first
 *                                 finishes, then downloads by itself.
 *
 * Along the way: queue places and moves, start-now, the idle and peer limits, the
 * alternative speed switch, and the refusals of bad values. Every wait has a deadline;
 * a failure prints why and exits non-zero. */
#include <btcore.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEADLINE_S 60
#define CHECK(call)                                                                     \
    do {                                                                                \
        btcore_result r_ = (call);                                                      \
        if (r_ != BTCORE_OK) {                                                          \
            fprintf(stderr, "%s:%d: %s -> %s\n", __FILE__, __LINE__, #call,             \
                    btcore_result_name((uint32_t)r_));                                  \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)
#define EXPECT(cond)                                                                    \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond);         \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

static btcore_settings settings(const char *dir) {
    btcore_settings s;
    CHECK(btcore_settings_default(&s));
    s.listen_address = "127.0.0.1";
    s.listen_port = 0;
    s.use_trackers = false;
    s.download_dir = dir;
    s.disk_threads = 1;
    s.enable_dht = 0;
    return s;
}

/* The torrent of PARENT/NAME, 16 KiB pieces, into a malloc'd buffer. */
static unsigned char *make_torrent(const char *parent, const char *name, size_t *len) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", parent, name);
    btcore_create_options o;
    CHECK(btcore_create_options_default(&o));
    o.threads = 1;
    o.creation_date = 1;
    o.piece_length = 16384;
    EXPECT(btcore_create_torrent(path, &o, NULL, 0, len) == BTCORE_BUFFER_TOO_SMALL);
    unsigned char *t = malloc(*len);
    EXPECT(t != NULL);
    CHECK(btcore_create_torrent(path, &o, t, *len, len));
    return t;
}

static btcore_torrent_status status(btcore_session *s, uint32_t id) {
    btcore_torrent_status st;
    CHECK(btcore_session_torrent_status(s, id, &st));
    return st;
}

/* seen[kind][id - 1]: how many events of each kind torrents 1 and 2 had. */
static int seen[64][2];
static void drain(btcore_session *s) {
    btcore_event ev[32];
    size_t n = 0;
    do {
        CHECK(btcore_session_events(s, ev, 32, &n));
        for (size_t i = 0; i < n; i++) {
            if (ev[i].kind < 64 && ev[i].torrent >= 1 && ev[i].torrent <= 2)
                seen[ev[i].kind][ev[i].torrent - 1]++;
        }
    } while (n == 32);
}

int main(int argc, char **argv) {
    if (argc < 4 || strcmp(argv[1], "queue") != 0) {
        fprintf(stderr, "usage: queue queue PACK_PARENT LEECH_DIR\n");
        return 2;
    }
    const char *parent = argv[2], *leech_dir = argv[3];
    size_t len1 = 0, len2 = 0;
    unsigned char *t1 = make_torrent(parent, "pack", &len1);
    unsigned char *t2 = make_torrent(parent, "pack2", &len2);

    /* The seed: both torrents, checked complete. */
    btcore_settings ss = settings(parent);
    btcore_session *s = NULL;
    CHECK(btcore_session_new(&ss, &s));
    uint32_t s1 = 0, s2 = 0;
    CHECK(btcore_session_add_torrent_bytes(s, t1, len1, NULL, &s1));
    CHECK(btcore_session_add_torrent_bytes(s, t2, len2, NULL, &s2));
    time_t end = time(NULL) + DEADLINE_S;
    while (status(s, s1).state != BTCORE_STATE_SEEDING ||
           status(s, s2).state != BTCORE_STATE_SEEDING) {
        EXPECT(time(NULL) < end);
        CHECK(btcore_session_poll(s, 10));
    }
    uint16_t port = 0;
    CHECK(btcore_session_listen_port(s, &port));

    /* The leecher: one download at a time, never stalled (the test is not timed). */
    btcore_settings ls = settings(leech_dir);
    ls.download_queue_size = 1;
    ls.queue_stalled_minutes = 0;
    ls.download_rate_limit = 256 * 1024; /* the first takes a while */
    btcore_session *l = NULL;
    CHECK(btcore_session_new(&ls, &l));
    uint32_t a = 0, b = 0;
    CHECK(btcore_session_add_torrent_bytes(l, t1, len1, NULL, &a));
    CHECK(btcore_session_add_torrent_bytes(l, t2, len2, NULL, &b));
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)port);
    CHECK(btcore_session_add_peer(l, a, addr));
    CHECK(btcore_session_add_peer(l, b, addr));

    /* Places, moves and refusals. */
    uint32_t pos = 99;
    CHECK(btcore_session_queue_position(l, a, &pos));
    EXPECT(pos == 0);
    CHECK(btcore_session_queue_position(l, b, &pos));
    EXPECT(pos == 1);
    EXPECT(btcore_session_queue_position(l, 77, &pos) == BTCORE_NOT_FOUND);
    EXPECT(btcore_session_queue_move(l, b, 9) == BTCORE_INVALID_PARAMETER);
    CHECK(btcore_session_queue_move(l, b, BTCORE_QUEUE_MOVE_TOP));
    CHECK(btcore_session_queue_position(l, b, &pos));
    EXPECT(pos == 0);
    CHECK(btcore_session_queue_move(l, b, BTCORE_QUEUE_MOVE_BOTTOM));
    CHECK(btcore_session_set_queue_position(l, a, 5));
    CHECK(btcore_session_set_queue_position(l, a, 0));
    CHECK(btcore_session_queue_position(l, a, &pos));
    EXPECT(pos == 0);
    EXPECT(btcore_session_set_idle_limit(l, a, 7, 1) == BTCORE_INVALID_PARAMETER);
    EXPECT(btcore_session_set_idle_limit(l, a, BTCORE_IDLE_LIMIT_SINGLE, 0) ==
           BTCORE_INVALID_PARAMETER);
    CHECK(btcore_session_set_idle_limit(l, a, BTCORE_IDLE_LIMIT_UNLIMITED, 0));
    CHECK(btcore_session_set_idle_limit(l, a, BTCORE_IDLE_LIMIT_GLOBAL, 0));
    EXPECT(btcore_session_set_peer_limit(l, 77, 3) == BTCORE_NOT_FOUND);
    CHECK(btcore_session_set_peer_limit(l, a, 3));
    uint32_t cap = 0;
    CHECK(btcore_session_peer_limit(l, a, &cap));
    EXPECT(cap == 3);
    CHECK(btcore_session_set_peer_limit(l, a, 0));
    CHECK(btcore_session_peer_limit(l, a, &cap));
    EXPECT(cap == 50);
    EXPECT(btcore_session_set_alt_speed(l, 2) == BTCORE_INVALID_PARAMETER);
    uint8_t on = 9;
    CHECK(btcore_session_alt_speed_enabled(l, &on));
    EXPECT(on == 0);
    btcore_settings bad = ls;
    bad.alt_speed_begin_minute = 1440;
    EXPECT(btcore_session_apply_settings(l, &bad) == BTCORE_INVALID_PARAMETER);

    /* The second waits, with no connection, while the first downloads. */
    EXPECT(status(l, b).state == BTCORE_STATE_QUEUED_DOWNLOAD);
    EXPECT(status(l, a).state == BTCORE_STATE_DOWNLOADING);
    end = time(NULL) + DEADLINE_S;
    int polls = 0;
    while (!seen[BTCORE_EVENT_TORRENT_FINISHED][a - 1]) {
        EXPECT(time(NULL) < end);
        CHECK(btcore_session_poll(l, 5));
        CHECK(btcore_session_poll(s, 5));
        drain(l);
        if (seen[BTCORE_EVENT_TORRENT_FINISHED][a - 1]) break;
        btcore_torrent_status st = status(l, b);
        EXPECT(st.state == BTCORE_STATE_QUEUED_DOWNLOAD);
        EXPECT(st.peers == 0 && st.connecting == 0 && st.bytes_have == 0);
        polls++;
    }
    EXPECT(polls > 3);
    EXPECT(seen[BTCORE_EVENT_TORRENT_QUEUED][b - 1] == 1);
    /* Then it starts by itself and finishes. */
    end = time(NULL) + DEADLINE_S;
    while (!seen[BTCORE_EVENT_TORRENT_FINISHED][b - 1]) {
        EXPECT(time(NULL) < end);
        CHECK(btcore_session_poll(l, 5));
        CHECK(btcore_session_poll(s, 5));
        drain(l);
    }
    EXPECT(seen[BTCORE_EVENT_TORRENT_DEQUEUED][b - 1] == 1);
    EXPECT(status(l, b).state == BTCORE_STATE_SEEDING);

    /* Start-now passes a full queue: a paused seed resumed with a seed queue of 1
     * waits, started now it runs. */
    ls.seed_queue_size = 1;
    CHECK(btcore_session_apply_settings(l, &ls));
    btcore_torrent_status sa = status(l, a), sb = status(l, b);
    EXPECT((sa.state == BTCORE_STATE_QUEUED_SEED) != (sb.state == BTCORE_STATE_QUEUED_SEED));
    uint32_t waiting = sa.state == BTCORE_STATE_QUEUED_SEED ? a : b;
    CHECK(btcore_session_start_now(l, waiting));
    EXPECT(status(l, waiting).state == BTCORE_STATE_SEEDING);
    EXPECT(status(l, a).state == BTCORE_STATE_SEEDING && status(l, b).state == BTCORE_STATE_SEEDING);

    btcore_session_free(l);
    btcore_session_free(s);
    free(t1);
    free(t2);
    printf("queue: ok\n");
    return 0;
}
