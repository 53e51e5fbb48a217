/*
 * sansio_seed.c: seeding a single file with libbtcore's sans-IO API, sending each
 * block from the buffer it was read into. For a plain connection the program keeps
 * the bytes of each READ (btcore_sansio_read_held) and the library queues only the
 * piece message's header with the payload's place; btcore_sansio_transmit_held then
 * says when to send which payload, and header bytes and payload go out with one
 * sendmsg. Encrypted connections (RC4 must run over every byte) and small blocks copy
 * the bytes in (btcore_sansio_read_done), as sansio.c does.
 *
 *   sansio_seed FILE.torrent DATA_FILE PORT
 *
 * Listens on 127.0.0.1:PORT and seeds DATA_FILE, taken as the torrent's whole data
 * (the file it was made from: this example does not check it; its leechers verify
 * every piece they get), to whoever connects. Exits when its last peer has gone after
 * one took blocks (or after BTCORE_TIMEOUT_S, default 120: status 3), and prints how
 * many blocks went out held and how many were copied.
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
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 16
#define OUT_CAP (64 * 1024)
/* Held payloads one connection may have queued (the library's send cap keeps them
 * far fewer; past this many, blocks are copied in). */
#define MAX_HELD 512

struct held {
    uint64_t token;
    unsigned char *bytes;
    size_t len;
};

struct conn {
    int fd;         /* -1: free slot */
    uint32_t id;    /* the library's connection id */
    unsigned char out[OUT_CAP];
    size_t out_len, out_pos;  /* bytes taken from the library, not yet sent */
    struct held sending;      /* the held payload after them: ours once named */
    int has_sending;
    size_t sending_pos;
    /* Payloads queued in the library, not named yet (it names them in the order
     * they were queued on the connection: this list could be a queue). */
    struct held held[MAX_HELD];
    size_t nheld;
};

static struct conn conns[MAX_CONNS];
static btcore_sansio *h;
static int data_fd = -1;
static uint64_t next_token = 1;
static unsigned long long sent_held, sent_copied;

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
    /* What the library still had queued for it is gone with it, and so is what it
     * named and this program was still writing. */
    for (size_t i = 0; i < c->nheld; i++) free(c->held[i].bytes);
    c->nheld = 0;
    if (c->has_sending) free(c->sending.bytes);
    c->has_sending = 0;
}

/* Takes the held payload `token` off the connection's list into `c->sending`. */
static int start_held(struct conn *c, uint64_t token, size_t len) {
    for (size_t i = 0; i < c->nheld; i++) {
        if (c->held[i].token != token) continue;
        if (c->held[i].len != len) return 0;
        c->sending = c->held[i];
        c->held[i] = c->held[--c->nheld];
        c->has_sending = 1;
        c->sending_pos = 0;
        return 1;
    }
    return 0;
}

/* Sends what is queued (bytes, then a held payload, in one writev), then asks the
 * library for more, until it has nothing or the socket would block. */
static void flush(struct conn *c) {
    while (c->fd >= 0) {
        if (c->out_pos == c->out_len && !c->has_sending) {
            btcore_transmit t;
            if (btcore_sansio_transmit_held(h, c->id, now_ms(), c->out, OUT_CAP, &t) != BTCORE_OK)
                return;
            if (t.len == 0 && t.held_len == 0) return;
            c->out_len = t.len;
            c->out_pos = 0;
            if (t.held_len && !start_held(c, t.held_token, t.held_len)) {
                fprintf(stderr, "the library named a payload this program does not hold\n");
                drop(c, 1);
                return;
            }
        }
        struct iovec iov[2];
        int n = 0;
        if (c->out_pos < c->out_len)
            iov[n++] = (struct iovec){c->out + c->out_pos, c->out_len - c->out_pos};
        if (c->has_sending)
            iov[n++] = (struct iovec){c->sending.bytes + c->sending_pos,
                                      c->sending.len - c->sending_pos};
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(c->fd, &m, MSG_NOSIGNAL);
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) { drop(c, 1); return; }
        size_t left = (size_t)w, mine = c->out_len - c->out_pos;
        size_t take = left < mine ? left : mine;
        c->out_pos += take;
        left -= take;
        if (c->has_sending) {
            c->sending_pos += left;
            if (c->sending_pos == c->sending.len) {
                free(c->sending.bytes);
                c->has_sending = 0;
                sent_held++;
            }
        }
    }
}

/* A READ: held when the library takes it, copied in otherwise. */
static void do_read(const btcore_action *a) {
    unsigned char *bytes = malloc(a->length ? a->length : 1);
    ssize_t r = bytes ? pread(data_fd, bytes, a->length, (off_t)a->torrent_offset) : -1;
    if (r != (ssize_t)a->length) {
        free(bytes);
        btcore_sansio_read_done(h, a->id, NULL, 0, BTCORE_DISK_IO_ERROR, now_ms());
        return;
    }
    struct conn *c = find(a->conn);
    if (c && c->nheld < MAX_HELD) {
        uint64_t token = next_token++;
        bool queued = false;
        btcore_result res = btcore_sansio_read_held(h, a->id, token, now_ms(), &queued);
        if (res == BTCORE_OK) {
            if (queued)
                c->held[c->nheld++] = (struct held){token, bytes, a->length};
            else
                free(bytes);
            return;
        }
        /* BTCORE_WRONG_STATE: an encrypted connection or a small block. */
    }
    btcore_sansio_read_done(h, a->id, bytes, a->length, BTCORE_DISK_OK, now_ms());
    if (c) sent_copied++;
    free(bytes);
}

/* Carries out every pending action. */
static void run_actions(void) {
    btcore_action actions[16];
    size_t n = 0;
    while (btcore_sansio_poll_actions(h, actions, 16, &n) == BTCORE_OK && n > 0) {
        for (size_t i = 0; i < n; i++) {
            const btcore_action *a = &actions[i];
            struct conn *c;
            switch (a->kind) {
            case BTCORE_ACTION_SEND:
                if ((c = find(a->conn))) flush(c);
                break;
            case BTCORE_ACTION_CLOSE:
                if ((c = find(a->conn))) drop(c, 0);
                break;
            case BTCORE_ACTION_READ: do_read(a); break;
            case BTCORE_ACTION_CONNECT:
                /* A seed dials no one here (no tracker, no DHT). */
                btcore_sansio_connect_failed(h, a->conn, now_ms());
                break;
            case BTCORE_ACTION_ANNOUNCE:
                if (a->announce_event != BTCORE_ANNOUNCE_STOPPED)
                    btcore_sansio_announced(h, a->torrent, a->id, BTCORE_ANNOUNCED_NO_TRACKERS, 0, 0,
                                            now_ms());
                break;
            default: break; /* a seed writes and verifies nothing */
            }
        }
    }
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
        fprintf(stderr, "usage: %s FILE.torrent DATA_FILE PORT\n", argv[0]);
        return 2;
    }
    const char *timeout_env = getenv("BTCORE_TIMEOUT_S");
    uint64_t deadline = now_ms() + 1000u * (uint64_t)(timeout_env ? atol(timeout_env) : 120);
    for (int i = 0; i < MAX_CONNS; i++) conns[i].fd = -1;
    size_t torrent_len = 0;
    unsigned char *torrent = read_file(argv[1], &torrent_len);
    if (!torrent) { perror(argv[1]); return 1; }
    data_fd = open(argv[2], O_RDONLY);
    if (data_fd < 0) { perror(argv[2]); free(torrent); return 1; }

    int status = 1, lfd = -1;
    unsigned char *have = NULL;
    btcore_sansio_settings settings;
    btcore_sansio_settings_default(&settings);
    settings.random_seed = now_ms() ^ (uint64_t)getpid();
    /* Plain text accepted: the connections whose payloads can be held. */
    settings.encryption = BTCORE_ENCRYPTION_ALLOWED;
    int rnd = open("/dev/urandom", O_RDONLY);
    if (rnd < 0 || read(rnd, settings.entropy, sizeof settings.entropy) != (ssize_t)sizeof settings.entropy) {
        fprintf(stderr, "no random source\n");
        goto out;
    }
    close(rnd);
    uint32_t id = 0;
    btcore_torrent_status st;
    if (!check(btcore_sansio_new(&settings, &h), "btcore_sansio_new")) goto out;
    if (!check(btcore_sansio_add_torrent_checking(h, torrent, torrent_len, now_ms(), &id), argv[1]))
        goto out;
    if (!check(btcore_sansio_torrent_status(h, id, now_ms(), &st), "status")) goto out;
    /* Every piece, the trailing bits of the bitfield clear. */
    size_t have_len = (st.num_pieces + 7) / 8;
    have = calloc(have_len ? have_len : 1, 1);
    if (!have) goto out;
    for (uint32_t p = 0; p < st.num_pieces; p++) have[p / 8] |= (unsigned char)(0x80 >> (p % 8));
    if (!check(btcore_sansio_checked(h, id, have, have_len, now_ms()), "checked")) goto out;

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[3]))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, 8)) {
        perror("listen");
        goto out;
    }
    printf("seeding on port %s\n", argv[3]);
    fflush(stdout);

    for (;;) {
        run_actions();
        int live = 0;
        for (int i = 0; i < MAX_CONNS; i++) live += conns[i].fd >= 0;
        if (sent_held + sent_copied > 0 && !live) { status = 0; break; }
        if (now_ms() >= deadline) { fprintf(stderr, "timed out\n"); status = 3; break; }

        struct pollfd pfds[MAX_CONNS + 1];
        struct conn *who[MAX_CONNS + 1];
        nfds_t nfds = 0;
        pfds[nfds] = (struct pollfd){.fd = lfd, .events = POLLIN};
        who[nfds++] = NULL;
        for (int i = 0; i < MAX_CONNS; i++) {
            struct conn *c = &conns[i];
            if (c->fd < 0) continue;
            pfds[nfds] = (struct pollfd){.fd = c->fd, .events = POLLIN};
            if (c->out_pos < c->out_len || c->has_sending) pfds[nfds].events |= POLLOUT;
            who[nfds++] = c;
        }
        uint64_t due = UINT64_MAX, now = now_ms();
        btcore_sansio_next_timeout(h, &due);
        int wait = due <= now ? 0 : (due - now > 1000 ? 1000 : (int)(due - now));
        if (poll(pfds, nfds, wait) < 0 && errno != EINTR) { perror("poll"); break; }

        if (pfds[0].revents & POLLIN) {
            struct sockaddr_in from;
            socklen_t fl = sizeof from;
            int fd = accept(lfd, (struct sockaddr *)&from, &fl);
            struct conn *c = NULL;
            for (int i = 0; fd >= 0 && i < MAX_CONNS; i++)
                if (conns[i].fd < 0) { c = &conns[i]; break; }
            btcore_addr addr = {.family = BTCORE_ADDR_IPV4, .port = ntohs(from.sin_port)};
            memcpy(addr.ip, &from.sin_addr, 4);
            if (c && btcore_sansio_incoming(h, &addr, now_ms(), &c->id) == BTCORE_OK) {
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
                c->fd = fd;
                c->out_len = c->out_pos = 0;
                c->nheld = 0;
                c->has_sending = 0;
            } else if (fd >= 0) {
                close(fd);
            }
        }
        for (nfds_t i = 1; i < nfds; i++) {
            struct conn *c = who[i];
            if (c->fd < 0) continue;
            if (pfds[i].revents & POLLOUT) flush(c);
            if (c->fd >= 0 && (pfds[i].revents & (POLLIN | POLLHUP | POLLERR))) {
                unsigned char buf[16 * 1024];
                for (;;) {
                    bool wants = true;
                    btcore_sansio_wants_recv(h, c->id, &wants);
                    if (!wants) break; /* it does not read what we send: its bytes wait */
                    ssize_t r = recv(c->fd, buf, sizeof buf, 0);
                    if (r > 0) { btcore_sansio_recv(h, c->id, buf, (size_t)r, now_ms()); continue; }
                    if (r < 0 && errno == EINTR) continue;
                    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
                    drop(c, 1);
                    break;
                }
            }
        }
        btcore_sansio_handle_timeout(h, now_ms());
    }
    printf("blocks sent: %llu held, %llu copied\n", sent_held, sent_copied);
out:
    for (int i = 0; i < MAX_CONNS; i++)
        if (conns[i].fd >= 0) drop(&conns[i], 0);
    if (lfd >= 0) close(lfd);
    btcore_sansio_free(h);
    close(data_fd);
    free(have);
    free(torrent);
    return status;
}
