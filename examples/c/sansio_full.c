/*
 * sansio_full.c: a download with libbtcore's sans-IO API and a select() loop, as
 * firmware with its own sockets and storage would write it. The library decides
 * everything BitTorrent (which peer, which block, the encryption handshakes and RC4,
 * the tracker's URL and answer, which file a byte belongs to); this program owns the
 * sockets, the files, the clock and the random source:
 *
 *   - peers come from the torrent's HTTP tracker (BTCORE_ACTION_ANNOUNCE, with
 *     btcore_tracker_announce_url and btcore_tracker_parse_announce) and from
 *     connections accepted on a listening socket;
 *   - every connection is encrypted (BTCORE_ENCRYPTION_REQUIRED): raw socket bytes go
 *     to btcore_sansio_recv and come from btcore_sansio_transmit;
 *   - a multi-file torrent is written file by file (btcore_sansio_file,
 *     btcore_sansio_file_at), under OUTPUT_DIR.
 *
 *   sansio_full FILE.torrent OUTPUT_DIR
 *
 * Exit status: 0 complete, 1 error, 2 usage, 3 timed out (BTCORE_TIMEOUT_S, default 120).
 * The tracker exchange is a blocking one with a 5 s limit, to keep the example short; a
 * product runs it in its loop like the peer sockets.
 */
#define _POSIX_C_SOURCE 200809L
#include <btcore.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 32
#define OUT_CAP (64 * 1024)
#define MAX_FILES 256
#define MAX_PIECE (4u << 20)

struct conn {
    int fd;          /* -1: free slot */
    uint32_t id;     /* the library's connection id */
    int connecting;  /* non-blocking connect in progress */
    unsigned char out[OUT_CAP];
    size_t out_len, out_pos; /* bytes taken from the library, not yet sent */
};

static struct conn conns[MAX_CONNS];
static btcore_sansio *h;
static int listen_fd = -1;
static uint32_t torrent_id;
static int file_fds[MAX_FILES]; /* -1: a pad file (zeros, never written) */
static uint32_t num_files;

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

static void nonblocking_nodelay(int fd) {
    /* TCP_NODELAY: the library hands out small messages (requests, haves) and waits
     * for answers; with Nagle's algorithm they sit in the kernel up to 40 ms each. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static struct conn *find(uint32_t id) {
    for (int i = 0; i < MAX_CONNS; i++)
        if (conns[i].fd >= 0 && conns[i].id == id) return &conns[i];
    return NULL;
}

static struct conn *free_slot(void) {
    for (int i = 0; i < MAX_CONNS; i++)
        if (conns[i].fd < 0) return &conns[i];
    return NULL;
}

static void drop(struct conn *c, int tell) {
    int fd = c->fd;
    uint32_t id = c->id;
    c->fd = -1;
    close(fd);
    /* The library may answer with a CONNECT for the same id (a plain-text redial
     * under BTCORE_ENCRYPTION_PREFERRED): the slot is free for it already. */
    if (tell) btcore_sansio_disconnected(h, id, now_ms());
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
    struct conn *c = free_slot();
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
    if (fd < 0 || fd >= FD_SETSIZE) {
        if (fd >= 0) close(fd);
        btcore_sansio_connect_failed(h, a->conn, now_ms());
        return;
    }
    nonblocking_nodelay(fd);
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

/* ---- storage: the torrent's files under the output directory ---- */

static int mkdirs_for(char *path) {
    for (char *p = strchr(path + 1, '/'); p; p = strchr(p + 1, '/')) {
        *p = 0;
        int r = mkdir(path, 0755);
        *p = '/';
        if (r < 0 && errno != EEXIST) return 0;
    }
    return 1;
}

static int open_files(const char *dir) {
    if (!check(btcore_sansio_file_count(h, torrent_id, &num_files), "file_count")) return 0;
    if (num_files > MAX_FILES) { fprintf(stderr, "too many files\n"); return 0; }
    for (uint32_t i = 0; i < num_files; i++) {
        char rel[1024], path[2048];
        btcore_sansio_file_info f;
        if (!check(btcore_sansio_file(h, torrent_id, i, &f, rel, sizeof rel), "file")) return 0;
        file_fds[i] = -1;
        if (f.pad) continue;
        snprintf(path, sizeof path, "%s/%s", dir, rel);
        if (!mkdirs_for(path)) { perror(path); return 0; }
        file_fds[i] = open(path, O_RDWR | O_CREAT, 0644);
        if (file_fds[i] < 0) { perror(path); return 0; }
    }
    return 1;
}

/* Reads or writes `len` bytes at `offset` of the torrent's data, across files. */
static int torrent_io(int write, unsigned char *buf, size_t len, uint64_t offset) {
    while (len > 0) {
        uint32_t index;
        uint64_t at, left;
        if (btcore_sansio_file_at(h, torrent_id, offset, &index, &at, &left) != BTCORE_OK) return 0;
        size_t n = left < len ? (size_t)left : len;
        int fd = file_fds[index];
        if (fd < 0) {
            if (!write) memset(buf, 0, n); /* a pad file: zeros */
        } else {
            ssize_t r = write ? pwrite(fd, buf, n, (off_t)at) : pread(fd, buf, n, (off_t)at);
            if (r != (ssize_t)n) return 0;
        }
        buf += n;
        len -= n;
        offset += n;
    }
    return 1;
}

/* ---- the tracker: one HTTP announce ---- */

static void announce(const btcore_action *a) {
    static char url[4096];
    static unsigned char resp[64 * 1024];
    size_t url_len = 0;
    uint32_t status = BTCORE_ANNOUNCED_FAILED, interval = 0, min_interval = 0;
    int fd = -1;
    if (a->tracker_len < 7 || memcmp(a->tracker, "http://", 7) != 0 ||
        btcore_tracker_announce_url(a, url, sizeof url, &url_len) != BTCORE_OK)
        goto done; /* no UDP or HTTPS client here: the library tries the next tracker */
    /* http://HOST[:PORT]/PATH?QUERY */
    char host[256], port[8] = "80";
    const char *hp = url + 7, *path = strchr(hp, '/');
    if (!path) goto done;
    const char *colon = memchr(hp, ':', (size_t)(path - hp));
    size_t hl = (size_t)((colon ? colon : path) - hp);
    if (hl >= sizeof host) goto done;
    memcpy(host, hp, hl);
    host[hl] = 0;
    if (colon) {
        size_t pl = (size_t)(path - colon - 1);
        if (pl == 0 || pl >= sizeof port) goto done;
        memcpy(port, colon + 1, pl);
        port[pl] = 0;
    }
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &ai) != 0 || !ai) goto done;
    fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {5, 0};
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    int ok = fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0;
    freeaddrinfo(ai);
    if (!ok) goto done;
    char req[4400];
    int rl = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host);
    if (rl < 0 || (size_t)rl >= sizeof req || send(fd, req, (size_t)rl, MSG_NOSIGNAL) != rl) goto done;
    size_t got = 0;
    for (ssize_t r; got < sizeof resp && (r = recv(fd, resp + got, sizeof resp - got, 0)) > 0;)
        got += (size_t)r;
    /* The body follows the first empty line; a 200 status is all this reads. */
    unsigned char *body = NULL;
    for (size_t i = 0; i + 4 <= got; i++)
        if (memcmp(resp + i, "\r\n\r\n", 4) == 0) { body = resp + i + 4; break; }
    if (!body || got < 12 || memcmp(resp + 9, "200", 3) != 0) goto done;
    btcore_addr peers[200];
    btcore_tracker_reply reply;
    if (btcore_tracker_parse_announce(body, got - (size_t)(body - resp), peers, 200, &reply) != BTCORE_OK)
        goto done;
    if (reply.failure) {
        fprintf(stderr, "tracker refused: %.*s\n", (int)reply.failure_len, (const char *)body + reply.failure_offset);
        goto done;
    }
    for (uint32_t i = 0; i < reply.num_peers; i++) btcore_sansio_add_peer(h, a->torrent, &peers[i], now_ms());
    status = BTCORE_ANNOUNCED_OK;
    interval = reply.interval_secs;
    min_interval = reply.min_interval_secs;
done:
    if (fd >= 0) close(fd);
    /* A STOPPED announce needs no answer. */
    if (a->announce_event != BTCORE_ANNOUNCE_STOPPED)
        btcore_sansio_announced(h, a->torrent, a->id, status, interval, min_interval, now_ms());
}

/* Carries out every pending action. Returns 0 on a fatal error. */
static int run_actions(void) {
    static unsigned char block[MAX_PIECE];
    static unsigned char digests[MAX_PIECE / (16 * 1024) * 20];
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
                if (!check(btcore_sansio_take_write_data(h, a->id, block, sizeof block, &len), "take"))
                    return 0;
                uint32_t status = torrent_io(1, block, len, a->torrent_offset)
                    ? BTCORE_DISK_OK : (errno == ENOSPC ? BTCORE_DISK_NO_SPACE : BTCORE_DISK_IO_ERROR);
                if (!check(btcore_sansio_write_done(h, a->id, status, now_ms()), "write_done")) return 0;
                break;
            }
            case BTCORE_ACTION_READ:
                if (a->length <= sizeof block && torrent_io(0, block, a->length, a->torrent_offset))
                    btcore_sansio_read_done(h, a->id, block, a->length, BTCORE_DISK_OK, now_ms());
                else
                    btcore_sansio_read_done(h, a->id, NULL, 0, BTCORE_DISK_IO_ERROR, now_ms());
                break;
            case BTCORE_ACTION_VERIFY: {
                unsigned char digest[20];
                size_t nblocks = 0;
                int ok = 0, read = 0;
                if (a->length <= sizeof block && torrent_io(0, block, a->length, a->torrent_offset) &&
                    btcore_sha1(block, a->length, digest) == BTCORE_OK) {
                    read = 1;
                    ok = memcmp(digest, a->expected_hash, 20) == 0;
                }
                if (read && (!ok || a->block_digests))
                    for (size_t at = 0; at < a->length; at += 16 * 1024, nblocks++) {
                        size_t bl = a->length - at < 16 * 1024 ? a->length - at : 16 * 1024;
                        if (btcore_sha1(block + at, bl, digests + 20 * nblocks) != BTCORE_OK) {
                            nblocks = 0;
                            break;
                        }
                    }
                if (!check(btcore_sansio_verified_blocks(h, a->id, ok, digests, 20 * nblocks, now_ms()),
                           "verified"))
                    return 0;
                break;
            }
            case BTCORE_ACTION_ANNOUNCE: announce(a); break;
            case BTCORE_ACTION_DHT_LOOKUP: /* settings.dht is 0: never asked */ break;
            }
        }
    }
    return 1;
}

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = malloc(64u << 20);
    *len = buf ? fread(buf, 1, 64u << 20, f) : 0;
    fclose(f);
    return buf;
}

static int open_listener(uint16_t *port) {
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(listen_fd, 16) < 0 ||
        getsockname(listen_fd, (struct sockaddr *)&sa, &sl) < 0)
        return 0;
    fcntl(listen_fd, F_SETFL, fcntl(listen_fd, F_GETFL) | O_NONBLOCK);
    *port = ntohs(sa.sin_port);
    return 1;
}

static void accept_all(void) {
    for (;;) {
        struct sockaddr_in sa;
        socklen_t sl = sizeof sa;
        int fd = accept(listen_fd, (struct sockaddr *)&sa, &sl);
        if (fd < 0) return;
        struct conn *c = free_slot();
        if (!c || fd >= FD_SETSIZE || sa.sin_family != AF_INET) { close(fd); continue; }
        nonblocking_nodelay(fd);
        btcore_addr from;
        memset(&from, 0, sizeof from);
        from.family = BTCORE_ADDR_IPV4;
        from.port = ntohs(sa.sin_port);
        memcpy(from.ip, &sa.sin_addr, 4);
        uint32_t id;
        if (btcore_sansio_incoming(h, &from, now_ms(), &id) != BTCORE_OK) { close(fd); continue; }
        c->fd = fd;
        c->id = id;
        c->connecting = 0;
        c->out_len = c->out_pos = 0;
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s FILE.torrent OUTPUT_DIR\n", argv[0]);
        return 2;
    }
    const char *timeout_env = getenv("BTCORE_TIMEOUT_S");
    uint64_t deadline = now_ms() + 1000u * (uint64_t)(timeout_env ? atol(timeout_env) : 120);
    for (int i = 0; i < MAX_CONNS; i++) conns[i].fd = -1;

    size_t torrent_len = 0;
    unsigned char *torrent = read_file(argv[1], &torrent_len);
    if (!torrent) { perror(argv[1]); return 1; }
    if (mkdir(argv[2], 0755) < 0 && errno != EEXIST) { perror(argv[2]); free(torrent); return 1; }

    btcore_sansio_settings settings;
    btcore_sansio_settings_default(&settings);
    /* The random source: the encryption keys are drawn from `entropy`. */
    int rnd = open("/dev/urandom", O_RDONLY);
    if (rnd < 0 || read(rnd, settings.entropy, sizeof settings.entropy) != (ssize_t)sizeof settings.entropy ||
        read(rnd, &settings.random_seed, sizeof settings.random_seed) != (ssize_t)sizeof settings.random_seed) {
        fprintf(stderr, "no random source\n");
        free(torrent);
        return 1;
    }
    close(rnd);
    settings.encryption = BTCORE_ENCRYPTION_REQUIRED;
    int status = 1;
    if (!open_listener(&settings.listen_port)) { perror("listen"); goto out; }
    if (!check(btcore_sansio_new(&settings, &h), "btcore_sansio_new")) goto out;
    if (!check(btcore_sansio_add_torrent(h, torrent, torrent_len, NULL, 0, now_ms(), &torrent_id), argv[1]))
        goto out;
    if (!open_files(argv[2])) goto out;

    int done = 0;
    while (!done && now_ms() < deadline) {
        /* Carry out the actions, then drain the events, until neither is left: a disk
         * completion given inside run_actions may finish a piece (events) and free
         * room for more requests (actions); sleeping before both are drained stalls. */
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

        /* Sleep in select() until a socket is ready or the next timer is due. */
        fd_set rd, wr;
        FD_ZERO(&rd);
        FD_ZERO(&wr);
        int maxfd = listen_fd;
        FD_SET(listen_fd, &rd);
        for (int i = 0; i < MAX_CONNS; i++) {
            struct conn *c = &conns[i];
            if (c->fd < 0) continue;
            FD_SET(c->fd, &rd);
            if (c->connecting || c->out_pos < c->out_len) FD_SET(c->fd, &wr);
            if (c->fd > maxfd) maxfd = c->fd;
        }
        uint64_t due = UINT64_MAX, now = now_ms();
        btcore_sansio_next_timeout(h, &due);
        uint64_t wait = due <= now ? 0 : (due - now > 1000 ? 1000 : due - now);
        struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)(wait % 1000 * 1000)};
        if (select(maxfd + 1, &rd, &wr, NULL, &tv) < 0) {
            if (errno == EINTR) continue;
            perror("select");
            goto out;
        }
        if (FD_ISSET(listen_fd, &rd)) accept_all();

        for (int i = 0; i < MAX_CONNS; i++) {
            struct conn *c = &conns[i];
            int fd = c->fd;
            if (fd < 0) continue;
            if (c->connecting && FD_ISSET(fd, &wr)) {
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err) {
                    uint32_t cid = c->id;
                    c->fd = -1;
                    close(fd);
                    btcore_sansio_connect_failed(h, cid, now_ms());
                    continue;
                }
                c->connecting = 0;
                btcore_sansio_connected(h, c->id, now_ms());
            }
            if (c->fd == fd && FD_ISSET(fd, &wr)) flush(c);
            if (c->fd == fd && FD_ISSET(fd, &rd)) {
                unsigned char buf[64 * 1024];
                for (;;) {
                    /* Disk behind: leave the bytes in the kernel until writes complete. */
                    bool backlogged = false;
                    btcore_sansio_disk_backlogged(h, &backlogged);
                    if (backlogged) break;
                    ssize_t r = recv(fd, buf, sizeof buf, 0);
                    if (r > 0) {
                        btcore_sansio_recv(h, c->id, buf, (size_t)r, now_ms());
                        continue;
                    }
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
        if (check(btcore_sansio_torrent_status(h, torrent_id, now_ms(), &st), "status"))
            printf("complete: %llu bytes in %u files, %u pieces\n", (unsigned long long)st.total_size,
                   (unsigned)num_files, (unsigned)st.num_pieces);
        status = 0;
    } else {
        fprintf(stderr, "timed out\n");
        status = 3;
    }
out:
    for (int i = 0; i < MAX_CONNS; i++)
        if (conns[i].fd >= 0) close(conns[i].fd);
    for (uint32_t i = 0; i < num_files; i++)
        if (file_fds[i] >= 0) close(file_fds[i]);
    if (listen_fd >= 0) close(listen_fd);
    btcore_sansio_free(h);
    free(torrent);
    return status;
}
