/* lifecycle.c: a full session lifecycle for valgrind --leak-check=full: create a torrent,
 * start a session, add it (as bytes and as a magnet), run, query, drain, stop, free. */
#include <btcore.h>

#include <stdio.h>
#include <stdlib.h>

static int notified = 0;
static void on_events(void *userdata) { (void)userdata; notified++; }

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: lifecycle CONTENT_PATH DOWNLOAD_DIR\n"); return 2; }
    size_t len = 0;
    btcore_create_options o;
    btcore_create_options_default(&o);
    o.threads = 1;
    o.creation_date = 0;
    if (btcore_create_torrent(argv[1], &o, NULL, 0, &len) != BTCORE_BUFFER_TOO_SMALL) return 1;
    unsigned char *t = malloc(len);
    if (!t || btcore_create_torrent(argv[1], &o, t, len, &len) != BTCORE_OK) return 1;

    btcore_settings s;
    btcore_settings_default(&s);
    s.listen_address = "127.0.0.1";
    s.listen_port = 0;
    s.use_trackers = false;
    s.download_dir = argv[2];
    s.state_dir = argv[2];
    s.disk_threads = 1;
    btcore_session *session = NULL;
    if (btcore_session_new(&s, &session) != BTCORE_OK) return 1;
    btcore_session_set_notify(session, on_events, NULL);
    uint32_t id = 0, id2 = 0;
    if (btcore_session_add_torrent_bytes(session, t, len, NULL, &id) != BTCORE_OK) return 1;
    btcore_session_add_magnet(session, "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567", NULL, &id2);
    btcore_session_add_peer(session, id2, "127.0.0.1:1");
    for (int i = 0; i < 5; i++) btcore_session_poll(session, 20);
    btcore_session_start(session);
    btcore_torrent_status st;
    btcore_peer_status peers[4];
    btcore_event ev[8];
    size_t n = 0;
    for (int i = 0; i < 20; i++) {
        btcore_session_torrent_status(session, id, &st);
        btcore_session_peers(session, id2, peers, 4, &n);
        btcore_session_events(session, ev, 8, &n);
    }
    btcore_session_stop(session);
    btcore_session_free(session);

    btcore_sansio *h = NULL;
    btcore_sansio_new(NULL, &h);
    btcore_sansio_add_torrent(h, t, len, NULL, 0, 1, &id);
    btcore_action a[8];
    btcore_sansio_poll_actions(h, a, 8, &n);
    btcore_sansio_free(h);
    free(t);
    printf("lifecycle: ok (%d notifications, seeding: %d)\n", notified, st.state == BTCORE_STATE_SEEDING);
    return notified > 0 ? 0 : 1;
}
