// download.cpp: download a torrent with the C++ wrapper, stepping the session from this
// program's own loop (btcore_session_poll) instead of the session's thread.
//
//   download_cpp FILE.torrent OUTPUT_DIR [HOST:PORT]
#include "btcore.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4) {
        std::fprintf(stderr, "usage: %s FILE.torrent OUTPUT_DIR [HOST:PORT]\n", argv[0]);
        return 2;
    }
    const char *timeout_env = std::getenv("BTCORE_TIMEOUT_S");
    auto deadline = std::chrono::steady_clock::now() +
                    std::chrono::seconds(timeout_env ? std::atol(timeout_env) : 120);
    try {
        btcore_settings s = btcore::default_settings();
        s.download_dir = argv[2];
        s.listen_address = "127.0.0.1";
        s.listen_port = 0;
        s.use_trackers = argc < 4;
        btcore::session session(s);
        uint32_t id = session.add_torrent_file(argv[1]);
        if (argc == 4) session.add_peer(id, argv[3]);
        std::printf("downloading %s\n", session.name(id).c_str());
        auto last = std::chrono::steady_clock::now();
        while (std::chrono::steady_clock::now() < deadline) {
            session.poll(50);
            for (const btcore_event &e : session.events())
                if (e.kind == BTCORE_EVENT_FILE_ERROR) throw btcore::error(e.error, "disk");
            btcore_torrent_status st = session.status(id);
            if (st.state == BTCORE_STATE_SEEDING) {
                std::printf("complete\n");
                return 0;
            }
            if (std::chrono::steady_clock::now() - last > std::chrono::milliseconds(500)) {
                last = std::chrono::steady_clock::now();
                std::printf("%5.1f%% %u peers\n", st.progress_ppm / 10000.0, unsigned(st.peers));
            }
        }
        std::fprintf(stderr, "timed out\n");
        return 3;
    } catch (const btcore::error &e) {
        std::fprintf(stderr, "%s (%s)\n", e.what(), btcore_result_name(e.code()));
        return 1;
    }
}
