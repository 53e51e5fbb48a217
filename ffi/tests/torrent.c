/* torrent.c: per-torrent controls through the C API, two sessions in one process on
 * 127.0.0.1 (run under AddressSanitizer and UBSan from c_api.rs):
 *
 *   torrent finished PACK_PARENT         a download already complete on disk gets
 *                                        BTCORE_EVENT_TORRENT_FINISHED after its check
 *   torrent skip PACK_PARENT LEECH_DIR   a multi-file download with its second file
 *                                        skipped: the others arrive, that one does not
 *   torrent magnet PACK_PARENT LEECH_DIR OUT.torrent
 *                                        a magnet link's metadata saved as a .torrent,
 *                                        added back: same info-hash
 *   torrent url URL BAD_URL LEECH_DIR   a .torrent added by its URL (downloaded
 *                                        by the library); one that cannot be
 *                                        downloaded says why
 *   torrent v2hash TORRENT V1_HEX V2_HEX DIR
 *                                        a hybrid torrent (BEP 52) added from its file
 *                                        names both info-hashes; a v1 one has no v2
 *   torrent recheck PACK_PARENT EMPTY_DIR
 *                                        a seed's data checked again (whole), then
 *                                        pointed at an empty folder (nothing found)
 *
 * PACK_PARENT holds the folder "pack" (a.bin, b.bin, c.bin) the seed serves. Every wait
 * has a deadline; a failure prints why and exits non-zero. */
#include <btcore.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEADLINE_S 60
#define CHECK(call)                                                                     \
    do {                                                                                \
        btcore_result r_ = (call);                                                 \
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

static btcore_session *new_session(const char *dir) {
    btcore_settings s;
    CHECK(btcore_settings_default(&s));
    s.listen_address = "127.0.0.1";
    s.listen_port = 0;
    s.use_trackers = false;
    s.download_dir = dir;
    s.disk_threads = 1;
    btcore_session *session = NULL;
    CHECK(btcore_session_new(&s, &session));
    return session;
}

/* The torrent of PACK_PARENT/pack, 16 KiB pieces, into a malloc'd buffer. */
static unsigned char *make_torrent(const char *parent, size_t *len) {
    char path[4096];
    snprintf(path, sizeof path, "%s/pack", parent);
    btcore_create_options o;
    CHECK(btcore_create_options_default(&o));
    o.threads = 1;
    o.creation_date = 1;
    o.piece_length = 16384;
    const char *trackers[] = {"http://127.0.0.1:1/announce"};
    o.trackers = trackers;
    o.trackers_len = 1;
    EXPECT(btcore_create_torrent(path, &o, NULL, 0, len) == BTCORE_BUFFER_TOO_SMALL);
    unsigned char *t = malloc(*len);
    EXPECT(t != NULL);
    CHECK(btcore_create_torrent(path, &o, t, *len, len));
    return t;
}

/* Polls both sessions (b may be NULL) until `session` reports an event of `kind` for
 * torrent `id`, or the deadline passes. */
static int wait_event(btcore_session *session, btcore_session *other, uint32_t id,
                      btcore_event_kind kind) {
    time_t end = time(NULL) + DEADLINE_S;
    btcore_event ev[32];
    size_t n = 0;
    while (time(NULL) < end) {
        CHECK(btcore_session_poll(session, 5));
        if (other) CHECK(btcore_session_poll(other, 5));
        CHECK(btcore_session_events(session, ev, 32, &n));
        for (size_t i = 0; i < n; i++)
            if (ev[i].kind == kind && ev[i].torrent == id) return 1;
    }
    return 0;
}

/* A seed session for the pack, checked and finished. */
static btcore_session *seed(const char *parent, const unsigned char *t, size_t len,
                            uint16_t *port) {
    btcore_session *s = new_session(parent);
    uint32_t id = 0;
    CHECK(btcore_session_add_torrent_bytes(s, t, len, NULL, &id));
    /* The check finds every piece: the finished event comes (it never came before). */
    EXPECT(wait_event(s, NULL, id, BTCORE_EVENT_TORRENT_FINISHED));
    btcore_torrent_status st;
    CHECK(btcore_session_torrent_status(s, id, &st));
    EXPECT(st.state == BTCORE_STATE_SEEDING);
    CHECK(btcore_session_listen_port(s, port));
    return s;
}

static int finished(const char *parent) {
    size_t len = 0;
    unsigned char *t = make_torrent(parent, &len);
    uint16_t port = 0;
    btcore_session *s = seed(parent, t, len, &port);
    btcore_session_free(s);
    free(t);
    printf("finished: ok\n");
    return 0;
}

static int skip(const char *parent, const char *leech_dir) {
    size_t len = 0;
    unsigned char *t = make_torrent(parent, &len);
    uint16_t port = 0;
    btcore_session *s = seed(parent, t, len, &port);
    btcore_session *l = new_session(leech_dir);
    uint32_t id = 0, count = 0;
    CHECK(btcore_session_add_torrent_bytes(l, t, len, NULL, &id));
    CHECK(btcore_session_file_count(l, id, &count));
    EXPECT(count == 3);
    const uint8_t bad[] = {4, 0};
    EXPECT(btcore_session_set_file_priorities(l, id, bad, 2) == BTCORE_INVALID_PARAMETER);
    const uint8_t too_high[] = {4, 8, 4};
    EXPECT(btcore_session_set_file_priorities(l, id, too_high, 3) == BTCORE_INVALID_PARAMETER);
    EXPECT(btcore_session_set_file_priorities(l, id + 100, too_high, 3) == BTCORE_NOT_FOUND);
    const uint8_t prio[] = {BTCORE_PRIORITY_DEFAULT, BTCORE_PRIORITY_SKIP, BTCORE_PRIORITY_MAX};
    CHECK(btcore_session_set_file_priorities(l, id, prio, 3));
    CHECK(btcore_session_set_sequential(l, id, true));
    CHECK(btcore_session_set_torrent_limits(l, id, 0, 0));
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)port);
    CHECK(btcore_session_add_peer(l, id, addr));
    EXPECT(wait_event(l, s, id, BTCORE_EVENT_TORRENT_FINISHED));
    btcore_torrent_status st;
    CHECK(btcore_session_torrent_status(l, id, &st));
    EXPECT(st.progress_ppm == 1000000);
    EXPECT(st.state == BTCORE_STATE_DOWNLOADING);
    EXPECT(st.bytes_have < st.total_size);
    EXPECT(st.finished == 1 && st.wanted_have == st.wanted_size && st.wanted_size < st.total_size);
    btcore_file_info files[3];
    size_t n = 0;
    EXPECT(btcore_session_files(l, id, files, 1, &n) == BTCORE_BUFFER_TOO_SMALL && n == 3);
    CHECK(btcore_session_files(l, id, files, 3, &n));
    EXPECT(files[0].done == files[0].size && files[2].done == files[2].size);
    EXPECT(files[1].priority == 0 && files[1].done < files[1].size);
    char name[256];
    CHECK(btcore_session_file_name(l, id, 1, name, sizeof name, &n));
    EXPECT(strcmp(name, "pack/b.bin") == 0 && n == strlen(name));
    EXPECT(btcore_session_file_name(l, id, 3, name, sizeof name, &n) == BTCORE_INVALID_PARAMETER);
    /* Names that would leave the folder are refused. */
    EXPECT(btcore_session_rename_file(l, id, 0, "../escape") == BTCORE_INVALID_PARAMETER);
    EXPECT(btcore_session_rename_file(l, id, 0, "..") == BTCORE_INVALID_PARAMETER);
    EXPECT(btcore_session_rename_folder(l, id, "a/b") == BTCORE_INVALID_PARAMETER);
    btcore_session_free(l);
    btcore_session_free(s);
    free(t);
    printf("skip: ok\n");
    return 0;
}

static int magnet(const char *parent, const char *leech_dir, const char *out) {
    size_t len = 0;
    unsigned char *t = make_torrent(parent, &len);
    uint16_t port = 0;
    btcore_session *s = seed(parent, t, len, &port);
    btcore_torrent_status st;
    CHECK(btcore_session_torrent_status(s, 1, &st));
    char uri[128] = "magnet:?xt=urn:btih:";
    for (int i = 0; i < 20; i++) sprintf(uri + strlen(uri), "%02x", st.info_hash[i]);
    btcore_session *l = new_session(leech_dir);
    uint32_t id = 0;
    CHECK(btcore_session_add_magnet(l, uri, NULL, &id));
    EXPECT(btcore_session_save_torrent_file(l, id, out) == BTCORE_WRONG_STATE);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)port);
    CHECK(btcore_session_add_peer(l, id, addr));
    EXPECT(wait_event(l, s, id, BTCORE_EVENT_METADATA_RECEIVED));
    CHECK(btcore_session_save_torrent_file(l, id, out));
    btcore_session_free(l);
    /* Parsed back by a fresh session: the same torrent. */
    btcore_session *back = new_session(leech_dir);
    uint32_t id2 = 0;
    CHECK(btcore_session_add_torrent_file(back, out, NULL, &id2));
    btcore_torrent_status st2;
    CHECK(btcore_session_torrent_status(back, id2, &st2));
    EXPECT(memcmp(st.info_hash, st2.info_hash, 20) == 0);
    EXPECT(st2.total_size == st.total_size && st2.num_pieces == st.num_pieces);
    btcore_session_free(back);
    btcore_session_free(s);
    free(t);
    printf("magnet: ok\n");
    return 0;
}

/* Polls until torrent `id` of `s` is past its check; its status then. */
static btcore_torrent_status after_check(btcore_session *s, uint32_t id) {
    time_t end = time(NULL) + DEADLINE_S;
    btcore_torrent_status st;
    do {
        EXPECT(time(NULL) < end);
        CHECK(btcore_session_poll(s, 5));
        CHECK(btcore_session_torrent_status(s, id, &st));
    } while (st.state == BTCORE_STATE_CHECKING);
    return st;
}

static int recheck(const char *parent, const char *empty) {
    size_t len = 0;
    unsigned char *t = make_torrent(parent, &len);
    uint16_t port = 0;
    btcore_session *s = seed(parent, t, len, &port);
    EXPECT(btcore_session_recheck(s, 99) == BTCORE_NOT_FOUND);
    CHECK(btcore_session_recheck(s, 1));
    btcore_torrent_status st = after_check(s, 1);
    EXPECT(st.state == BTCORE_STATE_SEEDING && st.bytes_have == st.total_size);
    EXPECT(btcore_session_set_location(s, 1, NULL) == BTCORE_NULL_PARAMETER);
    CHECK(btcore_session_set_location(s, 1, empty));
    st = after_check(s, 1);
    EXPECT(st.state == BTCORE_STATE_DOWNLOADING && st.bytes_have == 0 && st.finished == 0);
    btcore_session_free(s);
    free(t);
    printf("recheck: ok\n");
    return 0;
}

static int url(const char *good, const char *bad, const char *leech_dir) {
    btcore_session *l = new_session(leech_dir);
    uint32_t id = 0;
    CHECK(btcore_session_add_torrent_url(l, good, NULL, 10000, &id));
    btcore_torrent_status st;
    CHECK(btcore_session_torrent_status(l, id, &st));
    EXPECT(st.num_pieces > 0);
    EXPECT(btcore_session_add_torrent_url(l, "ftp://x/y.torrent", NULL, 0, &id) ==
           BTCORE_INVALID_PARAMETER);
    EXPECT(btcore_session_add_torrent_url(l, bad, NULL, 5000, &id) == BTCORE_IO);
    btcore_error_detail d;
    char msg[512], subject[256];
    CHECK(btcore_last_error(&d, msg, sizeof msg, subject, sizeof subject));
    EXPECT(d.code == BTCORE_IO && strstr(msg, bad) != NULL);
    btcore_session_free(l);
    printf("url: ok\n");
    return 0;
}

static void hex(const uint8_t *b, size_t n, char *out) {
    for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", b[i]);
}

static int v2hash(const char *torrent, const char *v1_hex, const char *v2_hex,
                  const char *dir) {
    btcore_session *s = new_session(dir);
    uint32_t id = 0;
    CHECK(btcore_session_add_torrent_file(s, torrent, NULL, &id));
    btcore_torrent_status st;
    CHECK(btcore_session_torrent_status(s, id, &st));
    char h1[41], h2[65];
    hex(st.info_hash, 20, h1);
    uint8_t v2[32];
    bool has_v2 = false;
    CHECK(btcore_session_torrent_info_hash_v2(s, id, v2, &has_v2));
    EXPECT(has_v2);
    hex(v2, 32, h2);
    printf("v1 %s\nv2 %s\n", h1, h2);
    EXPECT(strcmp(h1, v1_hex) == 0);
    EXPECT(strcmp(h2, v2_hex) == 0);
    /* Unknown ids and NULLs are refused. */
    EXPECT(btcore_session_torrent_info_hash_v2(s, id + 100, v2, &has_v2) == BTCORE_NOT_FOUND);
    EXPECT(btcore_session_torrent_info_hash_v2(s, id, NULL, &has_v2) == BTCORE_NULL_PARAMETER);
    EXPECT(btcore_session_torrent_info_hash_v2(s, id, v2, NULL) == BTCORE_NULL_PARAMETER);
    btcore_session_free(s);
    /* A v1 torrent has none. */
    size_t len = 0;
    unsigned char *t = make_torrent(dir, &len);
    btcore_session *s1 = new_session(dir);
    CHECK(btcore_session_add_torrent_bytes(s1, t, len, NULL, &id));
    has_v2 = true;
    memset(v2, 0xAB, sizeof v2);
    CHECK(btcore_session_torrent_info_hash_v2(s1, id, v2, &has_v2));
    EXPECT(!has_v2 && v2[0] == 0xAB && v2[31] == 0xAB);
    btcore_session_free(s1);
    free(t);
    printf("v2hash: ok\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "finished") == 0) return finished(argv[2]);
    if (argc >= 4 && strcmp(argv[1], "skip") == 0) return skip(argv[2], argv[3]);
    if (argc >= 5 && strcmp(argv[1], "magnet") == 0) return magnet(argv[2], argv[3], argv[4]);
    if (argc >= 6 && strcmp(argv[1], "v2hash") == 0)
        return v2hash(argv[2], argv[3], argv[4], argv[5]);
    if (argc >= 4 && strcmp(argv[1], "recheck") == 0) return recheck(argv[2], argv[3]);
    if (argc >= 5 && strcmp(argv[1], "url") == 0) return url(argv[2], argv[3], argv[4]);
    fprintf(stderr, "usage: torrent finished|skip|magnet|recheck|url ARGS [LEECH_DIR [OUT]]\n");
    return 2;
}
