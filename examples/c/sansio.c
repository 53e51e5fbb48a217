/*
 * sansio.c: a single-file download with libbtcore's sans-IO API. This program owns
 * everything the library does not: the sockets (non-blocking, with poll()), the file
 * (pwrite/pread), the clock (CLOCK_MONOTONIC) and piece verification (btcore_sha1).
 *
 *   sansio FILE.torrent OUTPUT_FILE IPV4:PORT
 *
 * Exit status: 0 complete, 1 error, 2 usage, 3 timed out (BTCORE_TIMEOUT_S, default 120).
 */
#define _POSIX_C_SOURCE 200809L
#include <btcore.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 16
#define OUT_CAP (64 * 1024)

struct conn {
    int fd;          /* -1: free slot */
    uint32_t id;     /* the library's connection id */
    int connecting;  /* non-blocking connect in progress */
    unsigned char out[OUT_CAP];
    size_t out_len, out_pos; /* bytes taken from the library, not yet sent */
};

static struct conn conns[MAX_CONNS];
static btcore_sansio *h;
static int file_fd = -1;

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int check(btcore_result r, const char *what) {
    if (r != BTCORE_OK) {
        fprintf(stderr, "%s: %s (%s)\n", what, btcore_result_message(r), btcore_result_name(r));
        return 0;
    }
    return 1;
}

static struct conn *find(uint32_t id) {
    for (int i = 0; i < MAX_CONNS; i++)
        if (conns[i].fd >= 0 && conns[i].id == id) return &conns[i];
    return NULL;
}

static void drop(struct conn *c, int tell) {
    if (tell) btcore_sansio_disconnected(h, c->id, now_ms());
    close(c->fd);
    c->fd = -1;
}

/* Sends what is queued, then asks the library for more, until it has nothing or the
 * socket would block. */
static void flush(struct conn *c) {
    while (c->fd >= 0 && !c->connecting) {
        if (c->out_pos == c->out_len) {
            size_t n = 0;
            if (btcore_sansio_transmit(h, c->id, now_ms(), c->out, OUT_CAP, &n) != BTCORE_OK || n == 0)
                return;
            c->out_len = n;
            c->out_pos = 0;
        }
        ssize_t w = send(c->fd, c->out + c->out_pos, c->out_len - c->out_pos, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) { drop(c, 1); return; }
        c->out_pos += (size_t)w;
    }
}

static void do_connect(const btcore_action *a) {
    struct conn *c = NULL;
    for (int i = 0; i < MAX_CONNS; i++)
        if (conns[i].fd < 0) { c = &conns[i]; break; }
    if (!c || a->addr.family != BTCORE_ADDR_IPV4) {
        btcore_sansio_connect_failed(h, a->conn, now_ms());
        return;
    }
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons(a->addr.port);
    memcpy(&sa.sin_addr, a->addr.ip, 4);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) { btcore_sansio_connect_failed(h, a->conn, now_ms()); return; }
    /* TCP_NODELAY: small messages would otherwise wait up to 40 ms each (Nagle). */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        close(fd);
        btcore_sansio_connect_failed(h, a->conn, now_ms());
        return;
    }
    c->fd = fd;
    c->id = a->conn;
    c->connecting = 1;
    c->out_len = c->out_pos = 0;
}

/* Carries out every pending action. Returns 0 on a fatal error. */
static int run_actions(void) {
    static unsigned char block[16 * 1024 * 64];
    btcore_action actions[16];
    size_t n = 0;
    while (btcore_sansio_poll_actions(h, actions, 16, &n) == BTCORE_OK && n > 0) {
        for (size_t i = 0; i < n; i++) {
            const btcore_action *a = &actions[i];
            struct conn *c;
            size_t len = 0;
            switch (a->kind) {
            case BTCORE_ACTION_CONNECT: do_connect(a); break;
            case BTCORE_ACTION_SEND:
                if ((c = find(a->conn))) flush(c);
                break;
            case BTCORE_ACTION_CLOSE:
                if ((c = find(a->conn))) drop(c, 0);
                break;
            case BTCORE_ACTION_WRITE: {
                uint32_t status = BTCORE_DISK_OK;
                if (!check(btcore_sansio_take_write_data(h, a->id, block, sizeof block, &len), "take"))
                    return 0;
                if (pwrite(file_fd, block, len, (off_t)a->torrent_offset) != (ssize_t)len)
                    status = errno == ENOSPC ? BTCORE_DISK_NO_SPACE : BTCORE_DISK_IO_ERROR;
                if (!check(btcore_sansio_write_done(h, a->id, status, now_ms()), "write_done")) return 0;
                break;
            }
            case BTCORE_ACTION_READ: {
                ssize_t r = a->length <= sizeof block
                    ? pread(file_fd, block, a->length, (off_t)a->torrent_offset) : -1;
                if (r == (ssize_t)a->length)
                    btcore_sansio_read_done(h, a->id, block, a->length, BTCORE_DISK_OK, now_ms());
                else
                    btcore_sansio_read_done(h, a->id, NULL, 0, BTCORE_DISK_IO_ERROR, now_ms());
                break;
            }
            case BTCORE_ACTION_VERIFY: {
                /* The digest of each 16 KiB block, when the piece fails (or the engine
                 * asks): they tell which peer sent the bad block. */
                static unsigned char blocks[sizeof block / (16 * 1024) * 20];
                unsigned char digest[20];
                size_t nblocks = 0;
                int ok = 0, read = 0;
                if (a->length <= sizeof block &&
                    pread(file_fd, block, a->length, (off_t)a->torrent_offset) == (ssize_t)a->length &&
                    btcore_sha1(block, a->length, digest) == BTCORE_OK) {
                    read = 1;
                    ok = memcmp(digest, a->expected_hash, 20) == 0;
                }
                if (read && (!ok || a->block_digests)) {
                    for (size_t at = 0; at < a->length; at += 16 * 1024, nblocks++) {
                        size_t n = a->length - at < 16 * 1024 ? a->length - at : 16 * 1024;
                        if (btcore_sha1(block + at, n, blocks + 20 * nblocks) != BTCORE_OK) {
                            nblocks = 0;
                            break;
                        }
                    }
                }
                if (!check(btcore_sansio_verified_blocks(h, a->id, ok, blocks, 20 * nblocks, now_ms()),
                           "verified"))
                    return 0;
                break;
            }
            case BTCORE_ACTION_ANNOUNCE:
                /* One exchange with the tracker at a->tracker (a->tracker_len bytes).
                 * No tracker client here: say so, and the library stops asking. A real
                 * host would answer OK with the tracker's interval, or FAILED, and the
                 * library would then name the next tracker of the torrent's tiers. */
                if (a->announce_event != BTCORE_ANNOUNCE_STOPPED)
                    btcore_sansio_announced(h, a->torrent, a->id, BTCORE_ANNOUNCED_NO_TRACKERS, 0, 0,
                                            now_ms());
                break;
            case BTCORE_ACTION_DHT_LOOKUP: /* settings.dht is 0: never asked */ break;
            }
        }
    }
    return 1;
}

static int parse_addr(const char *s, btcore_addr *out) {
    char host[64];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host) return 0;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    memset(out, 0, sizeof *out);
    out->family = BTCORE_ADDR_IPV4;
    out->port = (uint16_t)atoi(colon + 1);
    return inet_pton(AF_INET, host, out->ip) == 1 && out->port != 0;
}

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = malloc(64u << 20);
    *len = buf ? fread(buf, 1, 64u << 20, f) : 0;
    fclose(f);
    return buf;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s FILE.torrent OUTPUT_FILE IPV4:PORT\n", argv[0]);
        return 2;
    }
    const char *timeout_env = getenv("BTCORE_TIMEOUT_S");
    uint64_t deadline = now_ms() + 1000u * (uint64_t)(timeout_env ? atol(timeout_env) : 120);
    for (int i = 0; i < MAX_CONNS; i++) conns[i].fd = -1;

    btcore_addr peer;
    if (!parse_addr(argv[3], &peer)) { fprintf(stderr, "bad address %s\n", argv[3]); return 2; }
    size_t torrent_len = 0;
    unsigned char *torrent = read_file(argv[1], &torrent_len);
    if (!torrent) { perror(argv[1]); return 1; }
    file_fd = open(argv[2], O_RDWR | O_CREAT, 0644);
    if (file_fd < 0) { perror(argv[2]); free(torrent); return 1; }

    btcore_sansio_settings settings;
    btcore_sansio_settings_default(&settings);
    settings.random_seed = now_ms() ^ (uint64_t)getpid();
    /* The secret behind the encryption handshakes (preferred by default). */
    int rnd = open("/dev/urandom", O_RDONLY);
    if (rnd < 0 || read(rnd, settings.entropy, sizeof settings.entropy) != (ssize_t)sizeof settings.entropy) {
        fprintf(stderr, "no random source\n");
        close(file_fd);
        free(torrent);
        return 1;
    }
    close(rnd);
    int status = 1;
    uint32_t id = 0;
    if (!check(btcore_sansio_new(&settings, &h), "btcore_sansio_new")) goto out;
    if (!check(btcore_sansio_add_torrent(h, torrent, torrent_len, NULL, 0, now_ms(), &id), argv[1])) goto out;
    if (!check(btcore_sansio_add_peer(h, id, &peer, now_ms()), "add_peer")) goto out;

    int done = 0;
    while (!done && now_ms() < deadline) {
        /* Actions, then events, until neither is left: the disk completions given in
         * run_actions make more of both, and sleeping on them stalls the download. */
        for (;;) {
            if (!run_actions()) goto out;
            btcore_event ev[16];
            size_t n = 0, got = 0;
            while (btcore_sansio_events(h, ev, 16, &n) == BTCORE_OK && n > 0) {
                got += n;
                for (size_t i = 0; i < n; i++) {
                    if (ev[i].kind == BTCORE_EVENT_TORRENT_FINISHED) done = 1;
                    if (ev[i].kind == BTCORE_EVENT_FILE_ERROR) { fprintf(stderr, "disk error\n"); goto out; }
                }
            }
            if (got == 0) break;
        }
        if (done) break;

        /* Sleep until a socket is ready or the next timer is due. */
        struct pollfd pfds[MAX_CONNS];
        struct conn *who[MAX_CONNS];
        nfds_t nfds = 0;
        for (int i = 0; i < MAX_CONNS; i++) {
            if (conns[i].fd < 0) continue;
            pfds[nfds].fd = conns[i].fd;
            pfds[nfds].events = POLLIN;
            if (conns[i].connecting || conns[i].out_pos < conns[i].out_len) pfds[nfds].events |= POLLOUT;
            pfds[nfds].revents = 0;
            who[nfds++] = &conns[i];
        }
        uint64_t due = UINT64_MAX, now = now_ms();
        btcore_sansio_next_timeout(h, &due);
        int wait = due <= now ? 0 : (due - now > 1000 ? 1000 : (int)(due - now));
        if (poll(pfds, nfds, wait) < 0 && errno != EINTR) { perror("poll"); goto out; }

        for (nfds_t i = 0; i < nfds; i++) {
            struct conn *c = who[i];
            if (c->fd < 0) continue;
            if (c->connecting && (pfds[i].revents & (POLLOUT | POLLERR | POLLHUP))) {
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err) {
                    uint32_t cid = c->id;
                    drop(c, 0);
                    btcore_sansio_connect_failed(h, cid, now_ms());
                    continue;
                }
                c->connecting = 0;
                btcore_sansio_connected(h, c->id, now_ms());
            }
            if (pfds[i].revents & POLLOUT) flush(c);
            if (c->fd >= 0 && (pfds[i].revents & (POLLIN | POLLHUP | POLLERR))) {
                unsigned char buf[64 * 1024];
                for (;;) {
                    /* Disk behind: leave the bytes in the kernel; poll() reports the
                     * socket again once the writes above have completed. */
                    bool backlogged = false;
                    btcore_sansio_disk_backlogged(h, &backlogged);
                    if (backlogged) break;
                    ssize_t r = recv(c->fd, buf, sizeof buf, 0);
                    if (r > 0) { btcore_sansio_recv(h, c->id, buf, (size_t)r, now_ms()); continue; }
                    if (r < 0 && errno == EINTR) continue;
                    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
                    drop(c, 1); /* closed or failed */
                    break;
                }
            }
        }
        btcore_sansio_handle_timeout(h, now_ms());
    }
    if (done) {
        btcore_torrent_status st;
        if (check(btcore_sansio_torrent_status(h, id, now_ms(), &st), "status"))
            printf("complete: %llu bytes in %u pieces\n", (unsigned long long)st.total_size,
                   (unsigned)st.num_pieces);
        status = 0;
    } else {
        fprintf(stderr, "timed out\n");
        status = 3;
    }
out:
    for (int i = 0; i < MAX_CONNS; i++)
        if (conns[i].fd >= 0) close(conns[i].fd);
    btcore_sansio_free(h);
    close(file_fd);
    free(torrent);
    return status;
}
