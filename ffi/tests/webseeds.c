/* webseeds.c: a torrent's web seeds (BEP 19) through the C API (run under ASan/UBSan
 * from c_api.rs).
 *
 * usage: webseeds <scratch dir> <serving port> <refused port>
 *
 * The scratch directory holds src/data.bin, the payload. 127.0.0.1:<serving port> is
 * an HTTP server answering Range requests from src/ (a web seed); nothing listens on
 * 127.0.0.1:<refused port>. The torrent has both web seeds in its url-list and no
 * tracker or peer: it completes from the serving web seed alone.
 *
 * Checks: the buffer sizes, both records (URL, state, bytes sent, failures, the
 * refused one's error and backoff), the data on disk, and an unknown torrent. */
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

#define MAX_SEEDS 4
#define SIZE (3 * 16384 + 1000)

static btcore_web_seed_status ws[MAX_SEEDS];
static char text[4096];
static size_t n_seeds;

static btcore_result load(btcore_session *s, uint32_t id) {
    size_t n = 0, tl = 0;
    btcore_result r = btcore_torrent_web_seeds(s, id, ws, MAX_SEEDS, text, sizeof text, &n, &tl);
    n_seeds = r == BTCORE_OK ? n : 0;
    return r;
}

static const btcore_web_seed_status *find(const char *url) {
    for (size_t i = 0; i < n_seeds; i++) {
        if (ws[i].url_len == strlen(url) && strcmp(text + ws[i].url_offset, url) == 0)
            return &ws[i];
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: webseeds <dir> <serving port> <refused port>\n");
        return 2;
    }
    const char *dir = argv[1];
    char good[256], bad[256], src[1024], dst[1024];
    snprintf(good, sizeof good, "http://127.0.0.1:%d/", atoi(argv[2]));
    snprintf(bad, sizeof bad, "http://127.0.0.1:%d/", atoi(argv[3]));
    snprintf(src, sizeof src, "%s/src/data.bin", dir);
    snprintf(dst, sizeof dst, "%s/dst", dir);

    btcore_settings set;
    EXPECT(btcore_settings_default(&set), BTCORE_OK);
    set.download_dir = dst;
    set.listen_address = "127.0.0.1";
    set.listen_port = 0;
    set.use_trackers = false;
    set.enable_dht = 0;
    set.enable_lsd = 0;
    set.disk_threads = 1;
    btcore_session *s = NULL;
    EXPECT(btcore_session_new(&set, &s), BTCORE_OK);
    if (!s) return 1;

    const char *seeds[2] = {bad, good};
    btcore_create_options co;
    EXPECT(btcore_create_options_default(&co), BTCORE_OK);
    co.web_seeds = seeds;
    co.web_seeds_len = 2;
    co.piece_length = 16384;
    co.creation_date = 1;
    static uint8_t torrent[65536];
    size_t tlen = 0;
    EXPECT(btcore_create_torrent(src, &co, torrent, sizeof torrent, &tlen), BTCORE_OK);
    uint32_t id = 0;
    EXPECT(btcore_session_add_torrent_bytes(s, torrent, tlen, NULL, &id), BTCORE_OK);

    /* Too small buffers: both sizes needed, nothing else. */
    size_t n = 0, tl = 0;
    EXPECT(btcore_torrent_web_seeds(s, id, NULL, 0, NULL, 0, &n, &tl), BTCORE_BUFFER_TOO_SMALL);
    CHECK(n == 2);
    CHECK(tl >= strlen(good) + strlen(bad) + 4);
    EXPECT(btcore_torrent_web_seeds(s, id, ws, 2, text, 3, &n, &tl), BTCORE_BUFFER_TOO_SMALL);
    EXPECT(btcore_torrent_web_seeds(s, id, ws, 2, text, sizeof text, &n, NULL),
           BTCORE_NULL_PARAMETER);
    EXPECT(btcore_torrent_web_seeds(s, 9999, ws, 2, text, sizeof text, &n, &tl),
           BTCORE_NOT_FOUND);

    /* The download, from the serving web seed alone; the refused one backs off. */
    time_t end = time(NULL) + 40;
    btcore_torrent_status ts;
    memset(&ts, 0, sizeof ts);
    const btcore_web_seed_status *g = NULL, *b = NULL;
    while (time(NULL) < end) {
        EXPECT(btcore_session_poll(s, 50), BTCORE_OK);
        EXPECT(btcore_session_torrent_status(s, id, &ts), BTCORE_OK);
        EXPECT(load(s, id), BTCORE_OK);
        g = find(good);
        b = find(bad);
        if (ts.state == BTCORE_STATE_SEEDING && b && b->failures > 0) break;
    }
    CHECK(ts.state == BTCORE_STATE_SEEDING);
    CHECK(n_seeds == 2);
    if (!g || !b) {
        fprintf(stderr, "web seeds not listed\n");
        return 1;
    }
    printf("serving: state %u, %llu bytes, %u failures\n", (unsigned)g->state,
           (unsigned long long)g->downloaded, (unsigned)g->failures);
    printf("refused: state %u, %u failures, retry in %llu ms, error \"%s\"\n",
           (unsigned)b->state, (unsigned)b->failures, (unsigned long long)b->retry_in_ms,
           text + b->error_offset);
    CHECK(g->downloaded == SIZE);
    CHECK(g->failures == 0 && g->error_len == 0 && text[g->error_offset] == 0);
    CHECK(g->state == BTCORE_WEB_SEED_IDLE || g->state == BTCORE_WEB_SEED_ACTIVE);
    CHECK(g->reserved == 0);
    CHECK(b->downloaded == 0);
    CHECK(b->failures >= 1);
    CHECK(b->error_len > 0 && strlen(text + b->error_offset) == b->error_len);
    CHECK(b->state == BTCORE_WEB_SEED_BACKOFF || b->state == BTCORE_WEB_SEED_IDLE);
    CHECK(b->state != BTCORE_WEB_SEED_BACKOFF || b->retry_in_ms > 0);

    btcore_session_free(s);
    if (failures == 0) printf("all checks passed\n");
    return failures ? 1 : 0;
}
