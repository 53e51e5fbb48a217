/* trackers.c: a torrent's trackers through the C API (run under ASan/UBSan from
 * c_api.rs).
 *
 * usage: trackers <scratch dir> <refusing tracker port> <answering tracker port>
 *
 * The scratch directory holds content/data.bin, the torrent's data (so it seeds: only
 * the application's reannounce makes it announce before the interval). 127.0.0.1:<refusing port> is an HTTP
 * tracker that answers every announce with the failure reason "go away";
 * 127.0.0.1:<answering port> answers with 3 seeders, 2 leechers, no peer, interval
 * 1800 s and min interval 30 s.
 *
 * Checks: the status of each tracker (the failure reason of the first tier, the counts
 * and intervals of the second), the buffer sizes, a reannounce held by the answering
 * tracker's min interval and then made, tracker list edits (a bad URL refused whole,
 * a tracker that stays keeps its record), and the errors of unknown and paused
 * torrents. */
#include <btcore.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int failures = 0;

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);      \
            failures++;                                                                   \
        }                                                                                 \
    } while (0)

#define EXPECT(call, want)                                                                \
    do {                                                                                  \
        btcore_result got_ = (call);                                                      \
        if (got_ != (want)) {                                                             \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s\n", __FILE__, __LINE__,   \
                    #call, btcore_result_name(got_), btcore_result_name(want));           \
            failures++;                                                                   \
        }                                                                                 \
    } while (0)

#define MAX_TRACKERS 8

static btcore_tracker_status st[MAX_TRACKERS];
static char text[8192];
static size_t n_trackers;

/* Reads the trackers of torrent `id` into `st`/`text`. */
static btcore_result load(btcore_session *s, uint32_t id) {
    size_t n = 0, tl = 0;
    btcore_result r = btcore_torrent_trackers(s, id, st, MAX_TRACKERS, text, sizeof text, &n, &tl);
    n_trackers = r == BTCORE_OK ? n : 0;
    return r;
}

/* The record of the tracker whose URL is `url`, or NULL. */
static const btcore_tracker_status *find(const char *url) {
    for (size_t i = 0; i < n_trackers; i++) {
        if (st[i].url_len == strlen(url) && memcmp(text + st[i].url_offset, url, st[i].url_len) == 0)
            return &st[i];
    }
    return NULL;
}

static int result_is(const btcore_tracker_status *t, const char *want) {
    return t && t->result_len == strlen(want) &&
           strcmp(text + t->result_offset, want) == 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: trackers <dir> <refusing port> <answering port>\n");
        return 2;
    }
    const char *dir = argv[1];
    char path[1024], bad[256], good[256];
    snprintf(bad, sizeof bad, "http://127.0.0.1:%d/announce", atoi(argv[2]));
    snprintf(good, sizeof good, "http://127.0.0.1:%d/announce", atoi(argv[3]));

    btcore_settings set;
    EXPECT(btcore_settings_default(&set), BTCORE_OK);
    snprintf(path, sizeof path, "%s/content", dir);
    set.download_dir = path;
    set.listen_address = "127.0.0.1";
    set.listen_port = 0;
    set.use_trackers = true;
    set.enable_dht = 0;
    set.enable_lsd = 0;
    set.disk_threads = 1;
    btcore_session *s = NULL;
    EXPECT(btcore_session_new(&set, &s), BTCORE_OK);
    if (!s) return 1;

    /* A torrent with two tiers: the refusing tracker first, then the answering one. */
    const char *urls[2] = {bad, good};
    btcore_create_options co;
    EXPECT(btcore_create_options_default(&co), BTCORE_OK);
    co.trackers = urls;
    co.trackers_len = 2;
    co.piece_length = 16384;
    co.creation_date = 1;
    static uint8_t torrent[65536];
    size_t tlen = 0;
    char content[1024];
    snprintf(content, sizeof content, "%s/content/data.bin", dir);
    EXPECT(btcore_create_torrent(content, &co, torrent, sizeof torrent, &tlen), BTCORE_OK);
    uint32_t id = 0;
    EXPECT(btcore_session_add_torrent_bytes(s, torrent, tlen, NULL, &id), BTCORE_OK);

    /* Too small buffers: both sizes needed, nothing else. */
    size_t n = 0, tl = 0;
    EXPECT(btcore_torrent_trackers(s, id, NULL, 0, NULL, 0, &n, &tl), BTCORE_BUFFER_TOO_SMALL);
    CHECK(n == 2);
    CHECK(tl >= strlen(bad) + strlen(good) + 4);
    EXPECT(btcore_torrent_trackers(s, id, st, 2, text, 4, &n, &tl), BTCORE_BUFFER_TOO_SMALL);
    EXPECT(btcore_torrent_trackers(s, id, st, 2, text, sizeof text, NULL, &tl),
           BTCORE_NULL_PARAMETER);
    EXPECT(btcore_torrent_trackers(s, 9999, st, 2, text, sizeof text, &n, &tl), BTCORE_NOT_FOUND);

    /* The refusing tracker fails, the walk goes on to the answering one. */
    time_t end = time(NULL) + 30;
    const btcore_tracker_status *b = NULL, *g = NULL;
    while (time(NULL) < end) {
        EXPECT(btcore_session_poll(s, 50), BTCORE_OK);
        EXPECT(load(s, id), BTCORE_OK);
        b = find(bad);
        g = find(good);
        if (b && g && b->last_announce != 0 && g->last_announce != 0) break;
    }
    CHECK(n_trackers == 2);
    if (!b || !g) {
        fprintf(stderr, "trackers not listed\n");
        return 1;
    }
    printf("refusing: tier %u, result \"%s\", failures %u\n", (unsigned)b->tier,
           text + b->result_offset, (unsigned)b->failures);
    CHECK(b->tier == 0 && g->tier == 1);
    CHECK(b->last_announce > 1000000000);
    CHECK(!(b->flags & BTCORE_TRACKER_LAST_OK));
    CHECK(result_is(b, "go away"));
    CHECK(b->failures == 1);
    CHECK(b->seeders == -1 && b->leechers == -1 && b->interval == 0);
    printf("answering: seeders %d, leechers %d, interval %u, min interval %u\n",
           (int)g->seeders, (int)g->leechers, (unsigned)g->interval,
           (unsigned)g->min_interval);
    CHECK(g->flags & BTCORE_TRACKER_LAST_OK);
    CHECK(result_is(g, ""));
    CHECK(g->seeders == 3 && g->leechers == 2 && g->downloaded == -1);
    CHECK(g->interval == 1800 && g->min_interval == 30);
    CHECK(g->last_peers == 0 && g->failures == 0 && g->reserved == 0);
    CHECK(g->next_announce >= g->last_announce + 1799 && g->next_announce <= g->last_announce + 1801);

    /* A reannounce: held until the answering tracker's min interval has passed. */
    int64_t first = g->last_announce;
    EXPECT(btcore_torrent_reannounce(s, id), BTCORE_OK);
    EXPECT(load(s, id), BTCORE_OK);
    g = find(good);
    CHECK(g && g->last_announce == first);
    CHECK(g && !(g->flags & BTCORE_TRACKER_ANNOUNCING));
    CHECK(g && g->next_announce >= first + 29 && g->next_announce <= first + 31);
    end = time(NULL) + 60;
    while (time(NULL) < end) {
        EXPECT(btcore_session_poll(s, 100), BTCORE_OK);
        EXPECT(load(s, id), BTCORE_OK);
        g = find(good);
        if (g && g->last_announce != first) break;
    }
    CHECK(g && g->last_announce >= first + 29);
    CHECK(g && (g->flags & BTCORE_TRACKER_LAST_OK));
    printf("reannounced %lld s after the first answer\n",
           g ? (long long)(g->last_announce - first) : -1LL);

    /* Tracker list edits: a bad URL refuses the whole list. */
    const char *edit_bad[2] = {good, "ftp://127.0.0.1/announce"};
    uint32_t tiers_bad[2] = {0, 1};
    EXPECT(btcore_torrent_set_trackers(s, id, edit_bad, tiers_bad, 2), BTCORE_INVALID_PARAMETER);
    EXPECT(load(s, id), BTCORE_OK);
    CHECK(n_trackers == 2 && find(bad) && find(good));
    EXPECT(btcore_torrent_set_trackers(s, id, NULL, tiers_bad, 1), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_torrent_set_trackers(s, 9999, edit_bad, tiers_bad, 1), BTCORE_NOT_FOUND);
    /* The answering tracker in tier 0 (given last, in tier 5: tiers sort), a new UDP
     * one in tier 1, the refusing one removed, a repeat dropped. */
    const char *edit[3] = {"udp://127.0.0.1:9/announce", good, good};
    uint32_t tiers[3] = {7, 5, 5};
    EXPECT(btcore_torrent_set_trackers(s, id, edit, tiers, 3), BTCORE_OK);
    EXPECT(load(s, id), BTCORE_OK);
    CHECK(n_trackers == 2);
    CHECK(find(bad) == NULL);
    g = find(good);
    const btcore_tracker_status *u = find("udp://127.0.0.1:9/announce");
    CHECK(g && g->tier == 0 && (g->flags & BTCORE_TRACKER_LAST_OK) && g->seeders == 3);
    CHECK(u && u->tier == 1 && u->last_announce == 0);

    /* A paused torrent does not announce. */
    EXPECT(btcore_session_pause(s, id), BTCORE_OK);
    EXPECT(btcore_torrent_reannounce(s, id), BTCORE_WRONG_STATE);
    EXPECT(btcore_torrent_reannounce(s, 9999), BTCORE_NOT_FOUND);
    EXPECT(load(s, id), BTCORE_OK);
    g = find(good);
    CHECK(g && g->next_announce == 0);
    /* Every tracker removed. */
    EXPECT(btcore_torrent_set_trackers(s, id, NULL, NULL, 0), BTCORE_OK);
    EXPECT(load(s, id), BTCORE_OK);
    CHECK(n_trackers == 0);

    btcore_session_free(s);
    if (failures) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
