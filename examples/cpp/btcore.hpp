// btcore.hpp: a small RAII wrapper over libbtcore's session API (C++17, header-only).
// Errors become btcore::error exceptions carrying the btcore_result.
#pragma once

#include <btcore.h>

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace btcore {

class error : public std::runtime_error {
public:
    explicit error(btcore_result code, const std::string &what)
        : std::runtime_error(what + ": " + btcore_result_message(code)), code_(code) {}
    btcore_result code() const noexcept { return code_; }

private:
    btcore_result code_;
};

inline void check(btcore_result r, const char *what) {
    if (r != BTCORE_OK) throw error(r, what);
}

inline btcore_settings default_settings() {
    btcore_settings s;
    check(btcore_settings_default(&s), "btcore_settings_default");
    return s;
}

// Owns a btcore_session; movable, not copyable.
class session {
public:
    explicit session(const btcore_settings &s) { check(btcore_session_new(&s, &h_), "btcore_session_new"); }
    ~session() { btcore_session_free(h_); }
    session(session &&o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
    session &operator=(session &&o) noexcept {
        if (this != &o) {
            btcore_session_free(h_);
            h_ = std::exchange(o.h_, nullptr);
        }
        return *this;
    }
    session(const session &) = delete;
    session &operator=(const session &) = delete;

    uint32_t add_torrent_file(const std::string &path) {
        uint32_t id = 0;
        check(btcore_session_add_torrent_file(h_, path.c_str(), nullptr, &id), path.c_str());
        return id;
    }
    uint32_t add_magnet(const std::string &uri) {
        uint32_t id = 0;
        check(btcore_session_add_magnet(h_, uri.c_str(), nullptr, &id), "btcore_session_add_magnet");
        return id;
    }
    void add_peer(uint32_t id, const std::string &addr) {
        check(btcore_session_add_peer(h_, id, addr.c_str()), addr.c_str());
    }
    // Runs the loop once from the caller's thread.
    void poll(uint32_t timeout_ms) { check(btcore_session_poll(h_, timeout_ms), "btcore_session_poll"); }
    btcore_torrent_status status(uint32_t id) const {
        btcore_torrent_status s;
        check(btcore_session_torrent_status(h_, id, &s), "btcore_session_torrent_status");
        return s;
    }
    std::string name(uint32_t id) const {
        std::string n(64, '\0');
        size_t len = 0;
        btcore_result r = btcore_session_torrent_name(h_, id, &n[0], n.size(), &len);
        if (r == BTCORE_BUFFER_TOO_SMALL) {
            n.resize(len + 1);
            r = btcore_session_torrent_name(h_, id, &n[0], n.size(), &len);
        }
        check(r, "btcore_session_torrent_name");
        n.resize(len);
        return n;
    }
    std::vector<btcore_event> events() {
        std::vector<btcore_event> out;
        btcore_event buf[64];
        size_t n = 0;
        do {
            check(btcore_session_events(h_, buf, 64, &n), "btcore_session_events");
            out.insert(out.end(), buf, buf + n);
        } while (n == 64);
        return out;
    }
    btcore_session *get() const noexcept { return h_; }

private:
    btcore_session *h_ = nullptr;
};

} // namespace btcore
