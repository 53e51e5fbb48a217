/* errors.c: a failure says what happened (run under ASan/UBSan from c_api.rs).
 *
 * usage: errors <scratch dir> <busy port> <tracker port>
 *
 * The scratch directory holds content/data.bin (the data to share) and afile (a
 * regular file, so that afile/sub can never be a directory, even for root). Something
 * listens on 127.0.0.1:<busy port>; 127.0.0.1:<tracker port> is an HTTP tracker that
 * answers every announce with `d14:failure reason4:nopee`.
 *
 * Checks: the detail of a port in use (EADDRINUSE and the address), of an unwritable
 * download folder (ENOTDIR and the path), of a missing .torrent file (ENOENT and the
 * path), of a truncated torrent (the byte offset and the cause); a tracker error event
 * with the tracker's URL and message; and one file-error event, with its errno and
 * path, for a torrent whose folder cannot be written. */
#include <btcore.h>

#include <errno.h>
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

static char msg[512];
static char subject[512];

static void show(const char *what, const btcore_error_detail *d) {
    printf("%s: %s (code %s, os_error %d, offset %lld, subject %u \"%s\")\n", what, msg,
           btcore_result_name(d->code), (int)d->os_error,
           d->offset == BTCORE_NO_OFFSET ? -1LL : (long long)d->offset,
           (unsigned)d->subject_kind, subject);
}

static double now_s(void) { return (double)time(NULL); }

/* Drains a session's events, counting those of kind `a` and `b` (the last of each in
 * `*la` and `*lb`). */
static void drain(btcore_session *s, btcore_event_kind a, int *na, btcore_event *la,
                  btcore_event_kind b, int *nb, btcore_event *lb) {
    btcore_event ev[64];
    size_t n = 0;
    do {
        EXPECT(btcore_session_events(s, ev, 64, &n), BTCORE_OK);
        for (size_t i = 0; i < n; i++) {
            if (ev[i].kind == a) {
                (*na)++;
                *la = ev[i];
            } else if (ev[i].kind == b) {
                (*nb)++;
                *lb = ev[i];
            }
        }
    } while (n == 64);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: errors <dir> <busy port> <tracker port>\n");
        return 2;
    }
    const char *dir = argv[1];
    int busy_port = atoi(argv[2]);
    int tracker_port = atoi(argv[3]);
    char path[1024], path2[1024], want[1024], url[256];
    btcore_error_detail d;
    btcore_settings st;

    /* Nothing failed yet on this thread. */
    memset(&d, 0xff, sizeof d);
    EXPECT(btcore_last_error(&d, msg, sizeof msg, subject, sizeof subject), BTCORE_OK);
    CHECK(d.code == BTCORE_OK);

    /* 1. The listen port is taken: EADDRINUSE and the address. */
    EXPECT(btcore_settings_default(&st), BTCORE_OK);
    snprintf(path, sizeof path, "%s/dl", dir);
    st.download_dir = path;
    st.listen_address = "127.0.0.1";
    st.listen_port = (uint16_t)busy_port;
    st.use_trackers = false;
    btcore_session *s = NULL;
    EXPECT(btcore_session_new(&st, &s), BTCORE_IO);
    CHECK(s == NULL);
    EXPECT(btcore_last_error(&d, msg, sizeof msg, subject, sizeof subject), BTCORE_OK);
    show("port in use", &d);
    CHECK(d.code == BTCORE_IO);
    CHECK(d.os_error == EADDRINUSE);
    CHECK(d.offset == BTCORE_NO_OFFSET);
    CHECK(d.subject_kind == BTCORE_SUBJECT_ADDRESS);
    snprintf(want, sizeof want, "127.0.0.1:%d", busy_port);
    CHECK(strcmp(subject, want) == 0);
    CHECK(d.subject_len == strlen(want));
    CHECK(d.message_len == strlen(msg));
    CHECK(strstr(msg, "in use") != NULL);
    /* A small buffer gets the start of the text, NUL-terminated; the length is whole. */
    char small[8];
    EXPECT(btcore_last_error(&d, small, sizeof small, NULL, 0), BTCORE_OK);
    CHECK(strlen(small) == 7 && strncmp(small, msg, 7) == 0);
    CHECK(d.message_len == strlen(msg));

    /* 2. The download folder cannot be made: ENOTDIR (root too) and the path. */
    snprintf(path, sizeof path, "%s/afile/sub", dir);
    st.listen_port = 0;
    EXPECT(btcore_session_new(&st, &s), BTCORE_IO);
    EXPECT(btcore_last_error(&d, msg, sizeof msg, subject, sizeof subject), BTCORE_OK);
    show("unwritable folder", &d);
    CHECK(d.code == BTCORE_IO);
    CHECK(d.os_error == ENOTDIR);
    CHECK(d.subject_kind == BTCORE_SUBJECT_PATH);
    CHECK(strcmp(subject, path) == 0);

    /* A session that works: trackers on. */
    snprintf(path, sizeof path, "%s/dl", dir);
    st.use_trackers = true;
    EXPECT(btcore_session_new(&st, &s), BTCORE_OK);
    if (!s) return 1;
    EXPECT(btcore_session_last_error(s, &d, msg, sizeof msg, NULL, 0), BTCORE_OK);
    CHECK(d.code == BTCORE_OK);

    /* 3. A missing .torrent file: ENOENT and the path, on the session and the thread. */
    snprintf(path2, sizeof path2, "%s/missing.torrent", dir);
    uint32_t id = 0;
    EXPECT(btcore_session_add_torrent_file(s, path2, NULL, &id), BTCORE_IO);
    EXPECT(btcore_session_last_error(s, &d, msg, sizeof msg, subject, sizeof subject),
           BTCORE_OK);
    show("missing file", &d);
    CHECK(d.code == BTCORE_IO);
    CHECK(d.os_error == ENOENT);
    CHECK(d.subject_kind == BTCORE_SUBJECT_PATH);
    CHECK(strcmp(subject, path2) == 0);
    EXPECT(btcore_last_error(&d, NULL, 0, NULL, 0), BTCORE_OK);
    CHECK(d.code == BTCORE_IO && d.os_error == ENOENT);

    /* 4. A truncated torrent: the byte offset and the cause. */
    snprintf(url, sizeof url, "http://127.0.0.1:%d/announce", tracker_port);
    const char *trackers[1] = {url};
    btcore_create_options co;
    EXPECT(btcore_create_options_default(&co), BTCORE_OK);
    co.trackers = trackers;
    co.trackers_len = 1;
    co.piece_length = 16384;
    co.creation_date = 0;
    static uint8_t torrent[65536];
    size_t tlen = 0;
    snprintf(path2, sizeof path2, "%s/content/data.bin", dir);
    EXPECT(btcore_create_torrent(path2, &co, torrent, sizeof torrent, &tlen), BTCORE_OK);
    CHECK(tlen > 100);
    size_t cut = tlen - 10;
    EXPECT(btcore_session_add_torrent_bytes(s, torrent, cut, NULL, &id), BTCORE_INVALID_TORRENT);
    EXPECT(btcore_session_last_error(s, &d, msg, sizeof msg, subject, sizeof subject),
           BTCORE_OK);
    show("truncated torrent", &d);
    CHECK(d.code == BTCORE_INVALID_TORRENT);
    CHECK(d.offset == cut);
    CHECK(d.os_error == 0);
    CHECK(strstr(msg, "unexpected end of input") != NULL);
    /* A missing file to create a torrent from: the thread's detail (no handle). */
    snprintf(path2, sizeof path2, "%s/content/nothing-here", dir);
    EXPECT(btcore_create_torrent(path2, &co, torrent + 0, 0, &tlen), BTCORE_IO);
    EXPECT(btcore_last_error(&d, msg, sizeof msg, subject, sizeof subject), BTCORE_OK);
    show("create from a missing file", &d);
    CHECK(d.os_error == ENOENT && strcmp(subject, path2) == 0);
    snprintf(path2, sizeof path2, "%s/content/data.bin", dir);
    EXPECT(btcore_create_torrent(path2, &co, torrent, sizeof torrent, &tlen), BTCORE_OK);
    /* The same on the sans-IO layer, on its handle. */
    btcore_sansio *h = NULL;
    EXPECT(btcore_sansio_new(NULL, &h), BTCORE_OK);
    if (!h) return 1;
    EXPECT(btcore_sansio_add_torrent(h, torrent, cut, NULL, 0, 0, &id), BTCORE_INVALID_TORRENT);
    EXPECT(btcore_sansio_last_error(h, &d, msg, sizeof msg, NULL, 0), BTCORE_OK);
    show("sans-IO truncated torrent", &d);
    CHECK(d.code == BTCORE_INVALID_TORRENT && d.offset == cut);
    /* A sans-IO host reports its tracker's failure reason: a tracker error event. */
    EXPECT(btcore_sansio_add_torrent(h, torrent, tlen, NULL, 0, 0, &id), BTCORE_OK);
    btcore_action act[16];
    size_t na = 0;
    uint64_t announce_id = 0;
    EXPECT(btcore_sansio_poll_actions(h, act, 16, &na), BTCORE_OK);
    for (size_t i = 0; i < na; i++)
        if (act[i].kind == BTCORE_ACTION_ANNOUNCE) announce_id = act[i].id;
    CHECK(announce_id != 0);
    EXPECT(btcore_sansio_announced_message(h, id, announce_id, BTCORE_ANNOUNCED_FAILED, 0, 0,
                                           (const uint8_t *)"go away", 7, 1),
           BTCORE_OK);
    btcore_event sev[16];
    size_t ne = 0;
    int sansio_tracker_errors = 0;
    EXPECT(btcore_sansio_events(h, sev, 16, &ne), BTCORE_OK);
    for (size_t i = 0; i < ne; i++) {
        if (sev[i].kind != BTCORE_EVENT_TRACKER_ERROR) continue;
        sansio_tracker_errors++;
        CHECK(sev[i].error == BTCORE_TRACKER && sev[i].detail != 0);
        EXPECT(btcore_sansio_event_detail(h, sev[i].detail, &d, msg, sizeof msg, subject,
                                          sizeof subject),
               BTCORE_OK);
        show("sans-IO tracker error event", &d);
        CHECK(strcmp(msg, "go away") == 0 && strcmp(subject, url) == 0);
    }
    CHECK(sansio_tracker_errors == 1);
    btcore_sansio_free(h);

    /* 5 and 6. The torrent goes to a folder under a regular file, and its tracker
     * refuses: one tracker error event with the URL and message, and, once a seeder
     * sends data, one file error event with ENOTDIR and the path. */
    btcore_settings ss;
    EXPECT(btcore_settings_default(&ss), BTCORE_OK);
    snprintf(path2, sizeof path2, "%s/content", dir);
    ss.download_dir = path2;
    ss.listen_address = "127.0.0.1";
    ss.listen_port = 0;
    ss.use_trackers = false;
    btcore_session *seeder = NULL;
    EXPECT(btcore_session_new(&ss, &seeder), BTCORE_OK);
    if (!seeder) return 1;
    uint32_t sid = 0;
    EXPECT(btcore_session_add_torrent_bytes(seeder, torrent, tlen, NULL, &sid), BTCORE_OK);
    /* A torrent's own folder under a regular file is refused at once, with the path. */
    char bad_dir[1024];
    snprintf(bad_dir, sizeof bad_dir, "%s/afile/sub", dir);
    EXPECT(btcore_session_add_torrent_bytes(s, torrent, tlen, bad_dir, &id), BTCORE_STORAGE);
    EXPECT(btcore_session_last_error(s, &d, msg, sizeof msg, subject, sizeof subject),
           BTCORE_OK);
    show("unwritable torrent folder", &d);
    CHECK(d.code == BTCORE_STORAGE);
    CHECK(d.subject_kind == BTCORE_SUBJECT_PATH);
    CHECK(strncmp(subject, bad_dir, strlen(bad_dir)) == 0);
    /* A folder that becomes a regular file after the torrent is added: its writes fail. */
    char later[1024];
    snprintf(later, sizeof later, "%s/later", dir);
    snprintf(bad_dir, sizeof bad_dir, "%s/later/sub", dir);
    EXPECT(btcore_session_add_torrent_bytes(s, torrent, tlen, bad_dir, &id), BTCORE_OK);
    FILE *block = fopen(later, "w");
    CHECK(block != NULL);
    if (block) fclose(block);

    btcore_event tracker_ev, file_ev;
    memset(&tracker_ev, 0, sizeof tracker_ev);
    memset(&file_ev, 0, sizeof file_ev);
    int tracker_errors = 0, file_errors = 0, peer_added = 0;
    double start = now_s(), file_error_at = 0;
    while (now_s() - start < 60) {
        EXPECT(btcore_session_poll(s, 10), BTCORE_OK);
        EXPECT(btcore_session_poll(seeder, 10), BTCORE_OK);
        int had = file_errors;
        drain(s, BTCORE_EVENT_TRACKER_ERROR, &tracker_errors, &tracker_ev,
              BTCORE_EVENT_FILE_ERROR, &file_errors, &file_ev);
        if (file_errors && !had) file_error_at = now_s();
        btcore_event other;
        int ignored = 0;
        drain(seeder, BTCORE_EVENT_FILE_ERROR, &ignored, &other, BTCORE_EVENT_FILE_ERROR,
              &ignored, &other);
        if (!peer_added) {
            btcore_torrent_status ts;
            EXPECT(btcore_session_torrent_status(seeder, sid, &ts), BTCORE_OK);
            if (ts.state == BTCORE_STATE_SEEDING) {
                uint16_t port = 0;
                EXPECT(btcore_session_listen_port(seeder, &port), BTCORE_OK);
                char addr[64];
                snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)port);
                EXPECT(btcore_session_add_peer(s, id, addr), BTCORE_OK);
                peer_added = 1;
            }
        }
        /* Done once both came and the blocks in flight had a second or two to fail. */
        if (tracker_errors && file_errors && now_s() - file_error_at >= 2.0) break;
    }
    printf("tracker errors: %d, file errors: %d, peer added: %d, after %.0f s\n",
           tracker_errors, file_errors, peer_added, now_s() - start);
    {
        btcore_torrent_status ts;
        EXPECT(btcore_session_torrent_status(s, id, &ts), BTCORE_OK);
        printf("leecher: state %d, pieces %u/%u, peers %u, error %s\n", (int)ts.state,
               (unsigned)ts.pieces_have, (unsigned)ts.num_pieces, (unsigned)ts.peers,
               btcore_result_name(ts.error));
        EXPECT(btcore_session_torrent_status(seeder, sid, &ts), BTCORE_OK);
        printf("seeder: state %d, pieces %u/%u, peers %u\n", (int)ts.state,
               (unsigned)ts.pieces_have, (unsigned)ts.num_pieces, (unsigned)ts.peers);
    }
    CHECK(tracker_errors >= 1);
    CHECK(file_errors == 1);

    CHECK(tracker_ev.torrent == id);
    CHECK(tracker_ev.error == BTCORE_TRACKER);
    CHECK(tracker_ev.detail != 0);
    EXPECT(btcore_session_event_detail(s, tracker_ev.detail, &d, msg, sizeof msg, subject,
                                       sizeof subject),
           BTCORE_OK);
    show("tracker error event", &d);
    CHECK(d.code == BTCORE_TRACKER);
    CHECK(d.subject_kind == BTCORE_SUBJECT_URL);
    CHECK(strcmp(subject, url) == 0);
    CHECK(strcmp(msg, "nope") == 0);

    CHECK(file_ev.torrent == id);
    CHECK(file_ev.error == BTCORE_IO);
    CHECK(file_ev.os_error == ENOTDIR);
    CHECK(file_ev.detail != 0);
    EXPECT(btcore_session_event_detail(s, file_ev.detail, &d, msg, sizeof msg, subject,
                                       sizeof subject),
           BTCORE_OK);
    show("file error event", &d);
    CHECK(d.code == BTCORE_IO);
    CHECK(d.os_error == ENOTDIR);
    CHECK(d.subject_kind == BTCORE_SUBJECT_PATH);
    CHECK(strncmp(subject, bad_dir, strlen(bad_dir)) == 0);
    CHECK(strstr(msg, "os error") != NULL);
    /* An unknown detail number. */
    EXPECT(btcore_session_event_detail(s, 999999, &d, NULL, 0, NULL, 0), BTCORE_NOT_FOUND);

    /* The readers check their handle like every call. */
    EXPECT(btcore_session_last_error(NULL, &d, NULL, 0, NULL, 0), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_sansio_last_error((btcore_sansio *)s, &d, NULL, 0, NULL, 0),
           BTCORE_WRONG_HANDLE);

    btcore_session_free(seeder);
    btcore_session_free(s);
    printf("freed after %.0f s\n", now_s() - start);
    if (failures) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
