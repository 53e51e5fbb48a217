/* misuse.c: every misuse returns an error code and nothing crashes (run under ASan/UBSan). */
#include <btcore.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

#define EXPECT(call, want)                                                                \
    do {                                                                                  \
        btcore_result got_ = (call);                                                      \
        if (got_ != (want)) {                                                             \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s\n", __FILE__, __LINE__,   \
                    #call, btcore_result_name(got_), btcore_result_name(want));           \
            failures++;                                                                   \
        }                                                                                 \
    } while (0)

int main(void) {
    char ver[32];
    snprintf(ver, sizeof ver, "%d.%d.%d", BTCORE_VERSION_MAJOR, BTCORE_VERSION_MINOR, BTCORE_VERSION_PATCH);
    if (strcmp(ver, btcore_version()) != 0) { fprintf(stderr, "version mismatch\n"); failures++; }
    if (strcmp(btcore_result_name(BTCORE_IO), "BTCORE_IO") != 0) failures++;
    if (strcmp(btcore_result_name(12345), "BTCORE_UNKNOWN") != 0) failures++;
    if (btcore_result_message(0) == NULL) failures++;

    /* NULL everywhere. */
    EXPECT(btcore_settings_default(NULL), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_session_new(NULL, NULL), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_session_poll(NULL, 0), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_session_start(NULL), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_session_stop(NULL), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_session_add_magnet(NULL, "magnet:?", NULL, NULL), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_sansio_new(NULL, NULL), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_sansio_recv(NULL, 1, NULL, 0, 0), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_sha1(NULL, 5, NULL), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_create_torrent(NULL, NULL, NULL, 0, NULL), BTCORE_NULL_PARAMETER);
    btcore_session_free(NULL);
    btcore_sansio_free(NULL);

    /* A session on 127.0.0.1, any port. */
    btcore_settings s;
    EXPECT(btcore_settings_default(&s), BTCORE_OK);
    s.listen_address = "not an address";
    btcore_session *session = (btcore_session *)0x1; /* must stay untouched on failure */
    EXPECT(btcore_session_new(&s, &session), BTCORE_INVALID_PARAMETER);
    if (session != (btcore_session *)0x1) { fprintf(stderr, "out written on failure\n"); failures++; }
    s.listen_address = "127.0.0.1";
    if (s.encryption != BTCORE_ENCRYPTION_PREFERRED) { fprintf(stderr, "encryption default\n"); failures++; }
    s.encryption = 99;
    EXPECT(btcore_session_new(&s, &session), BTCORE_INVALID_PARAMETER);
    s.encryption = BTCORE_ENCRYPTION_REQUIRED;
    s.listen_port = 0;
    s.use_trackers = false;
    s.download_dir = "misuse-dl";
    session = NULL;
    EXPECT(btcore_session_new(&s, &session), BTCORE_OK);
    if (!session) return 1;
    uint16_t port = 0;
    EXPECT(btcore_session_listen_port(session, &port), BTCORE_OK);
    if (port == 0) failures++;

    uint32_t id = 77;
    EXPECT(btcore_session_add_torrent_file(session, NULL, NULL, &id), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_session_add_torrent_file(session, "/nonexistent.torrent", NULL, &id), BTCORE_IO);
    EXPECT(btcore_session_add_torrent_bytes(session, (const uint8_t *)"d4:infoe", 8, NULL, &id), BTCORE_INVALID_TORRENT);
    EXPECT(btcore_session_add_torrent_bytes(session, NULL, 10, NULL, &id), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_session_add_magnet(session, "magnet:?xt=urn:btih:zz", NULL, &id), BTCORE_INVALID_MAGNET);
    if (id != 77) { fprintf(stderr, "out written on failure\n"); failures++; }
    const char *magnet = "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567&dn=x";
    EXPECT(btcore_session_add_magnet(session, magnet, NULL, &id), BTCORE_OK);
    EXPECT(btcore_session_add_magnet(session, magnet, NULL, &id), BTCORE_DUPLICATE_TORRENT);
    EXPECT(btcore_session_add_peer(session, id, "no port"), BTCORE_INVALID_PARAMETER);
    EXPECT(btcore_session_add_peer(session, 9999, "127.0.0.1:1"), BTCORE_NOT_FOUND);
    EXPECT(btcore_session_pause(session, id), BTCORE_OK);
    EXPECT(btcore_session_pause(session, 9999), BTCORE_NOT_FOUND);
    {
        btcore_torrent_status ps;
        EXPECT(btcore_session_torrent_status(session, id, &ps), BTCORE_OK);
        if (ps.state != BTCORE_STATE_PAUSED) { fprintf(stderr, "not paused\n"); failures++; }
    }
    EXPECT(btcore_session_resume(session, id), BTCORE_OK);
    EXPECT(btcore_session_resume(session, 9999), BTCORE_NOT_FOUND);
    EXPECT(btcore_session_remove(session, 9999, true), BTCORE_NOT_FOUND);

    btcore_torrent_status st;
    EXPECT(btcore_session_torrent_status(session, 9999, &st), BTCORE_NOT_FOUND);
    EXPECT(btcore_session_torrent_status(session, id, NULL), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_session_torrent_status(session, id, &st), BTCORE_OK);
    if (st.state != BTCORE_STATE_FETCHING_METADATA || st.eta_seconds != -1) failures++;

    size_t n = 0;
    uint32_t ids[1];
    EXPECT(btcore_session_torrents(session, NULL, 0, &n), BTCORE_BUFFER_TOO_SMALL);
    if (n != 1) failures++;
    EXPECT(btcore_session_torrents(session, NULL, 5, &n), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_session_torrents(session, ids, 1, &n), BTCORE_OK);
    char name[4];
    EXPECT(btcore_session_torrent_name(session, id, name, sizeof name, &n), BTCORE_BUFFER_TOO_SMALL);
    if (n != 40) failures++; /* the info-hash in hex until the metadata arrives */
    btcore_event ev[1];
    EXPECT(btcore_session_events(session, ev, 0, &n), BTCORE_BUFFER_TOO_SMALL);
    EXPECT(btcore_session_events(session, ev, 1, &n), BTCORE_OK);
    if (n != 1 || ev[0].kind != BTCORE_EVENT_TORRENT_ADDED) failures++;

    EXPECT(btcore_session_poll(session, 10), BTCORE_OK);
    EXPECT(btcore_session_stop(session), BTCORE_WRONG_STATE);
    EXPECT(btcore_session_start(session), BTCORE_OK);
    EXPECT(btcore_session_start(session), BTCORE_WRONG_STATE);
    EXPECT(btcore_session_poll(session, 0), BTCORE_WRONG_STATE);
    EXPECT(btcore_session_stop(session), BTCORE_OK);
    EXPECT(btcore_session_save_resume(session), BTCORE_OK);
    EXPECT(btcore_session_remove(session, id, false), BTCORE_OK);
    EXPECT(btcore_session_remove(session, id, false), BTCORE_NOT_FOUND);
    EXPECT(btcore_session_torrents(session, NULL, 0, &n), BTCORE_OK);
    if (n != 0) failures++;

    /* Sans-IO handle. */
    btcore_sansio *h = NULL;
    EXPECT(btcore_sansio_new(NULL, &h), BTCORE_OK);
    /* Wrong handle type either way. */
    EXPECT(btcore_session_poll((btcore_session *)h, 0), BTCORE_WRONG_HANDLE);
    EXPECT(btcore_sansio_handle_timeout((btcore_sansio *)session, 0), BTCORE_WRONG_HANDLE);
    btcore_action act[2];
    EXPECT(btcore_sansio_poll_actions(h, act, 0, &n), BTCORE_BUFFER_TOO_SMALL);
    EXPECT(btcore_sansio_poll_actions(h, act, 2, &n), BTCORE_OK);
    if (n != 0) failures++;
    unsigned char buf[8];
    EXPECT(btcore_sansio_take_write_data(h, 42, buf, sizeof buf, &n), BTCORE_NOT_FOUND);
    EXPECT(btcore_sansio_write_done(h, 42, BTCORE_DISK_OK, 0), BTCORE_NOT_FOUND);
    EXPECT(btcore_sansio_write_done(h, 42, 99, 0), BTCORE_INVALID_PARAMETER);
    EXPECT(btcore_sansio_verified(h, 42, true, 0), BTCORE_NOT_FOUND);
    EXPECT(btcore_sansio_verified_blocks(h, 42, false, NULL, 0, 0), BTCORE_NOT_FOUND);
    EXPECT(btcore_sansio_verified_blocks(NULL, 42, false, NULL, 0, 0), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_sansio_read_done(h, 42, NULL, 0, BTCORE_DISK_IO_ERROR, 0), BTCORE_NOT_FOUND);
    bool queued = true;
    EXPECT(btcore_sansio_read_held(h, 42, 7, 0, &queued), BTCORE_NOT_FOUND);
    EXPECT(btcore_sansio_read_held(h, 42, 7, 0, NULL), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_sansio_read_held(NULL, 42, 7, 0, &queued), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_sansio_add_torrent(h, buf, sizeof buf, NULL, 0, 0, &id), BTCORE_INVALID_TORRENT);
    btcore_addr bad;
    memset(&bad, 0, sizeof bad);
    EXPECT(btcore_sansio_add_peer(h, 1, &bad, 0), BTCORE_INVALID_PARAMETER);
    bad.family = BTCORE_ADDR_IPV6;
    bad.ip[15] = 1;
    bad.port = 6881;
    EXPECT(btcore_sansio_add_peer(h, 1, &bad, 0), BTCORE_NOT_FOUND);
    EXPECT(btcore_sansio_transmit(h, 5, 0, buf, 0, &n), BTCORE_BUFFER_TOO_SMALL);
    EXPECT(btcore_sansio_transmit(h, 5, 0, buf, sizeof buf, &n), BTCORE_OK);
    btcore_transmit t = {1, 2, 3};
    EXPECT(btcore_sansio_transmit_held(h, 5, 0, buf, 0, &t), BTCORE_BUFFER_TOO_SMALL);
    EXPECT(btcore_sansio_transmit_held(h, 5, 0, buf, sizeof buf, NULL), BTCORE_NULL_PARAMETER);
    EXPECT(btcore_sansio_transmit_held(h, 5, 0, buf, sizeof buf, &t), BTCORE_OK); /* unknown conn: nothing */
    if (t.len != 0 || t.held_len != 0) failures++;
    EXPECT(btcore_sansio_recv(h, 5, (const uint8_t *)"junk", 4, 0), BTCORE_OK); /* unknown conn: ignored */
    EXPECT(btcore_sansio_have(h, 1, buf, sizeof buf, &n), BTCORE_NOT_FOUND);
    uint64_t due = 0;
    EXPECT(btcore_sansio_next_timeout(h, &due), BTCORE_OK);
    if (due != UINT64_MAX) failures++;
    uint32_t conn = 0;
    EXPECT(btcore_sansio_incoming(h, &bad, 0, &conn), BTCORE_OK);
    EXPECT(btcore_sansio_recv(h, conn, (const uint8_t *)"\x13garbage-handshake!!", 20, 1), BTCORE_OK);
    EXPECT(btcore_sansio_poll_actions(h, act, 2, &n), BTCORE_OK);
    EXPECT(btcore_sansio_disconnected(h, conn, 2), BTCORE_OK);
    btcore_sansio_free(h);
    /* A freed handle is refused without its memory being read, and a second free is
     * a no-op (the library keeps the set of live handles). */
    EXPECT(btcore_sansio_handle_timeout(h, 3), BTCORE_WRONG_HANDLE);
    btcore_sansio_free(h);

    /* A torrent the application checks before it starts: no announce until checked. */
    {
        static unsigned char content[40000];
        FILE *f = fopen("check.bin", "wb");
        if (!f || fwrite(content, 1, sizeof content, f) != sizeof content) failures++;
        if (f) fclose(f);
        btcore_create_options co;
        btcore_create_options_default(&co);
        co.threads = 1;
        co.creation_date = 0;
        co.piece_length = 16384; /* 3 pieces */
        /* Two tiers of one tracker each: the library names one per ANNOUNCE. */
        const char *trk[] = {"http://a.invalid/announce", "udp://b.invalid:80"};
        co.trackers = trk;
        co.trackers_len = 2;
        unsigned char tor[1024];
        size_t tl = 0;
        EXPECT(btcore_create_torrent("check.bin", &co, tor, sizeof tor, &tl), BTCORE_OK);
        btcore_sansio *c = NULL;
        EXPECT(btcore_sansio_new(NULL, &c), BTCORE_OK);
        uint32_t cid = 0;
        EXPECT(btcore_sansio_add_torrent_checking(c, tor, tl, 0, &cid), BTCORE_OK);
        EXPECT(btcore_sansio_add_torrent_checking(c, tor, tl, 0, &cid), BTCORE_DUPLICATE_TORRENT);
        btcore_torrent_status cs;
        EXPECT(btcore_sansio_torrent_status(c, cid, 0, &cs), BTCORE_OK);
        if (cs.state != BTCORE_STATE_CHECKING || cs.pieces_have != 0) failures++;
        btcore_action ca[8];
        EXPECT(btcore_sansio_poll_actions(c, ca, 8, &n), BTCORE_OK);
        for (size_t i = 0; i < n; i++)
            if (ca[i].kind == BTCORE_ACTION_ANNOUNCE) { fprintf(stderr, "announced while checking\n"); failures++; }
        unsigned char bits[2] = {0xe0, 0};
        EXPECT(btcore_sansio_checked(c, cid + 1, bits, 1, 1), BTCORE_NOT_FOUND);
        EXPECT(btcore_sansio_checked(c, cid, bits, 2, 1), BTCORE_INVALID_PARAMETER);
        EXPECT(btcore_sansio_checked(c, cid, bits, 1, 1), BTCORE_OK);
        EXPECT(btcore_sansio_checked(c, cid, bits, 1, 1), BTCORE_WRONG_STATE);
        EXPECT(btcore_sansio_torrent_status(c, cid, 1, &cs), BTCORE_OK);
        if (cs.state != BTCORE_STATE_SEEDING || cs.pieces_have != 3) { fprintf(stderr, "not seeding after the check\n"); failures++; }
        EXPECT(btcore_sansio_poll_actions(c, ca, 8, &n), BTCORE_OK);
        int announced = 0;
        uint64_t started_id = 0;
        for (size_t i = 0; i < n; i++)
            if (ca[i].kind == BTCORE_ACTION_ANNOUNCE) {
                announced = 1;
                started_id = ca[i].id;
                if (ca[i].tracker_len != strlen(trk[0]) || memcmp(ca[i].tracker, trk[0], ca[i].tracker_len) != 0) {
                    fprintf(stderr, "announce not to the first tier\n");
                    failures++;
                }
            }
        if (!announced || started_id == 0) { fprintf(stderr, "no announce once checked\n"); failures++; }
        /* The first tier's tracker fails: the library names the next tier's. */
        EXPECT(btcore_sansio_announced(c, cid, started_id, BTCORE_ANNOUNCED_FAILED, 0, 0, 1), BTCORE_OK);
        EXPECT(btcore_sansio_poll_actions(c, ca, 8, &n), BTCORE_OK);
        announced = 0;
        for (size_t i = 0; i < n; i++)
            if (ca[i].kind == BTCORE_ACTION_ANNOUNCE) {
                announced = 1;
                started_id = ca[i].id;
                if (ca[i].announce_event != BTCORE_ANNOUNCE_STARTED || ca[i].tracker_len != strlen(trk[1]) ||
                    memcmp(ca[i].tracker, trk[1], ca[i].tracker_len) != 0) {
                    fprintf(stderr, "no started to the second tier\n");
                    failures++;
                }
            }
        if (!announced) { fprintf(stderr, "no walk to the next tier\n"); failures++; }
        /* The tracker's interval and min interval rule the next announces: an early
         * request waits for the min interval, and a late answer is refused. */
        EXPECT(btcore_sansio_announced(c, cid, started_id, 9, 1800, 900, 1), BTCORE_INVALID_PARAMETER);
        EXPECT(btcore_sansio_announced(c, cid, started_id + 1, BTCORE_ANNOUNCED_OK, 1800, 900, 1), BTCORE_NOT_FOUND);
        EXPECT(btcore_sansio_announced(c, cid, started_id, BTCORE_ANNOUNCED_OK, 1800, 900, 1), BTCORE_OK);
        EXPECT(btcore_sansio_announced(c, cid, started_id, BTCORE_ANNOUNCED_OK, 1800, 900, 1), BTCORE_NOT_FOUND);
        EXPECT(btcore_sansio_reannounce(c, cid, 2), BTCORE_OK);
        EXPECT(btcore_sansio_reannounce(c, cid + 1, 2), BTCORE_NOT_FOUND);
        uint64_t ms[] = {2, 899000, 900001}; /* timers run at most once a second */
        for (int k = 0; k < 3; k++) {
            EXPECT(btcore_sansio_handle_timeout(c, ms[k]), BTCORE_OK);
            EXPECT(btcore_sansio_poll_actions(c, ca, 8, &n), BTCORE_OK);
            announced = 0;
            for (size_t i = 0; i < n; i++) announced |= ca[i].kind == BTCORE_ACTION_ANNOUNCE;
            if (announced != (k == 2)) { fprintf(stderr, "reannounce at %llu: %d\n", (unsigned long long)ms[k], announced); failures++; }
        }
        btcore_sansio_free(c);
        remove("check.bin");
    }

    unsigned char digest[20];
    EXPECT(btcore_sha1((const uint8_t *)"abc", 3, digest), BTCORE_OK);
    if (digest[0] != 0xa9 || digest[19] != 0x9d) failures++;
    EXPECT(btcore_create_torrent("/nonexistent/path", NULL, buf, sizeof buf, &n), BTCORE_IO);

    btcore_session_free(session);
    EXPECT(btcore_session_poll(session, 0), BTCORE_WRONG_HANDLE);
    btcore_session_free(session);
    if (failures) fprintf(stderr, "%d failures\n", failures);
    else printf("misuse: all checks passed\n");
    return failures ? 1 : 0;
}
