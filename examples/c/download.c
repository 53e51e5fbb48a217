/*
 * download.c: download a torrent with libbtcore's session API, printing progress.
 *
 *   download FILE.torrent OUTPUT_DIR [HOST:PORT]
 *
 * The optional peer is dialed directly (for a swarm without trackers). The session's
 * loop runs on its own thread (btcore_session_start); this program sleeps, drains
 * events and prints the torrent's status until it is complete.
 * Exit status: 0 complete, 1 error, 2 usage, 3 timed out (BTCORE_TIMEOUT_S, default 120).
 */
#define _POSIX_C_SOURCE 200809L
#include <btcore.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int check(btcore_result r, const char *what) {
    if (r != BTCORE_OK) {
        fprintf(stderr, "%s: %s (%s)\n", what, btcore_result_message(r), btcore_result_name(r));
        return 0;
    }
    return 1;
}

static void sleep_ms(long ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s FILE.torrent OUTPUT_DIR [HOST:PORT]\n", argv[0]);
        return 2;
    }
    const char *timeout_env = getenv("BTCORE_TIMEOUT_S");
    long timeout_s = timeout_env ? atol(timeout_env) : 120;

    btcore_settings settings;
    btcore_settings_default(&settings);
    settings.download_dir = argv[2];
    settings.listen_address = "127.0.0.1";
    settings.listen_port = 0;       /* any free port */
    settings.use_trackers = argc < 4; /* a peer given by hand: no trackers, */
    settings.enable_dht = argc < 4;   /* and no DHT */

    btcore_session *session = NULL;
    if (!check(btcore_session_new(&settings, &session), "btcore_session_new")) return 1;

    int status = 1;
    uint32_t id = 0;
    if (!check(btcore_session_add_torrent_file(session, argv[1], NULL, &id), argv[1])) goto out;
    if (argc == 4 && !check(btcore_session_add_peer(session, id, argv[3]), argv[3])) goto out;
    if (!check(btcore_session_start(session), "btcore_session_start")) goto out;

    char name[256];
    size_t name_len = 0;
    if (btcore_session_torrent_name(session, id, name, sizeof name, &name_len) != BTCORE_OK)
        snprintf(name, sizeof name, "torrent %u", (unsigned)id);
    printf("downloading %s into %s\n", name, argv[2]);

    int done = 0;
    for (long ticks = 0; !done && ticks < timeout_s * 5; ticks++) {
        sleep_ms(200);
        btcore_event events[32];
        size_t n = 0;
        while (btcore_session_events(session, events, 32, &n) == BTCORE_OK && n > 0) {
            for (size_t i = 0; i < n; i++) {
                switch (events[i].kind) {
                case BTCORE_EVENT_TORRENT_FINISHED: done = 1; break;
                case BTCORE_EVENT_FILE_ERROR:
                    fprintf(stderr, "file error: %s\n", btcore_result_message(events[i].error));
                    goto out;
                case BTCORE_EVENT_PEER_BANNED: fprintf(stderr, "a peer was banned\n"); break;
                default: break;
                }
            }
        }
        btcore_torrent_status st;
        if (!check(btcore_session_torrent_status(session, id, &st), "status")) goto out;
        if (st.state == BTCORE_STATE_SEEDING) done = 1;
        printf("%5.1f%%%s  %u/%u pieces  %u peers  down %llu B/s  eta %llds\n",
               st.progress_ppm / 10000.0,
               st.state == BTCORE_STATE_CHECKING ? " (checking)" : "", (unsigned)st.pieces_have, (unsigned)st.num_pieces,
               (unsigned)st.peers, (unsigned long long)st.download_rate,
               (long long)st.eta_seconds);
        fflush(stdout);
    }
    if (done) {
        printf("complete\n");
        status = 0;
    } else {
        fprintf(stderr, "timed out\n");
        status = 3;
    }
out:
    btcore_session_free(session); /* stops the thread, writes resume data */
    return status;
}
