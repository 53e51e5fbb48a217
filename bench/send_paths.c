/*
 * How a seeder's block payloads can reach a TCP socket, and what each way costs the
 * sending process in CPU per GiB: the copying path btcore takes (one `pread` of a run
 * of 16 blocks of 16 KiB into a buffer, then one `writev` of the 16 piece headers and
 * payloads) beside the zero-copy ones that a BitTorrent piece message allows (its
 * 13-byte header must sit before each payload):
 *
 *   0  pread the run, writev headers and payloads            (btcore)
 *   1  write each header into a pipe, splice each payload from the file into it,
 *      then splice the pipe into the socket                  (no copy of payloads)
 *   2  send each header with MSG_MORE, sendfile each payload (no copy of payloads)
 *   3  as 1, the headers vmspliced from a page of their own, unmapped after (the
 *      socket may still read them until acknowledged: reused memory would change
 *      bytes a retransmission sends)
 *
 * Build and run (FILE in the page cache, e.g. read once before):
 *   cc -O2 -o /tmp/send_paths bench/send_paths.c
 *   for r in 1 2 3 4 5 6 7 8; do for m in 0 1 2 3; do /tmp/send_paths $m FILE; done; done
 *
 * A child process reads the socket on 127.0.0.1 and drops the bytes. On loopback the
 * sender also pays for the receiver's side of TCP, as a seeder does for a leecher
 * on the same machine. Not part of `cargo test`.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#define BLK 16384
#define RUN 16
#define HDR 13

static double cpu_s(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec + r.ru_stime.tv_sec +
           (r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* Moves `len` bytes from the pipe to the socket. */
static void drain_pipe(int pipe_r, int sock, size_t len) {
    while (len) {
        ssize_t w = splice(pipe_r, NULL, sock, NULL, len, SPLICE_F_MOVE);
        if (w <= 0) die("splice to socket");
        len -= (size_t)w;
    }
}

/* Splices one payload of the file into the pipe. */
static void fill_pipe(int fd, off_t at, int pipe_w) {
    loff_t o = at;
    size_t left = BLK;
    while (left) {
        ssize_t n = splice(fd, &o, pipe_w, NULL, left, SPLICE_F_MOVE);
        if (n <= 0) die("splice from file");
        left -= (size_t)n;
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODE FILE\n", argv[0]);
        return 2;
    }
    int mode = atoi(argv[1]);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    socklen_t al = sizeof a;
    if (l < 0 || bind(l, (void *)&a, sizeof a) || listen(l, 1) || getsockname(l, (void *)&a, &al))
        die("listen");
    pid_t child = fork();
    if (child == 0) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(c, (void *)&a, sizeof a)) die("connect");
        char *b = malloc(1 << 20);
        while (read(c, b, 1 << 20) > 0) {
        }
        _exit(0);
    }
    int s = accept(l, NULL, NULL);
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int fd = open(argv[2], O_RDONLY);
    if (s < 0 || fd < 0) die("open");
    off_t size = lseek(fd, 0, SEEK_END) / (BLK * RUN) * (BLK * RUN);
    char *buf = malloc(BLK * RUN);
    unsigned char hdr[RUN][HDR];
    int pp[2];
    if (pipe(pp)) die("pipe");
    fcntl(pp[1], F_SETPIPE_SZ, 1 << 20);
    double c0 = cpu_s();
    for (off_t off = 0; off < size; off += BLK * RUN) {
        for (int i = 0; i < RUN; i++) {
            unsigned len = BLK + 9, piece = (unsigned)(off / (1 << 20));
            unsigned begin = (unsigned)((off + (off_t)i * BLK) % (1 << 20));
            unsigned char h[HDR] = {len >> 24, len >> 16, len >> 8, len, 7,
                                    piece >> 24, piece >> 16, piece >> 8, piece,
                                    begin >> 24, begin >> 16, begin >> 8, begin};
            memcpy(hdr[i], h, HDR);
        }
        size_t run = RUN * (BLK + HDR);
        if (mode == 0) {
            if (pread(fd, buf, BLK * RUN, off) != BLK * RUN) die("pread");
            struct iovec v[2 * RUN], *vp = v;
            int n = 2 * RUN;
            for (int i = 0; i < RUN; i++) {
                v[2 * i] = (struct iovec){hdr[i], HDR};
                v[2 * i + 1] = (struct iovec){buf + i * BLK, BLK};
            }
            while (run) {
                ssize_t w = writev(s, vp, n);
                if (w <= 0) die("writev");
                run -= (size_t)w;
                while (w > 0) {
                    if ((size_t)w >= vp->iov_len) {
                        w -= (ssize_t)vp->iov_len;
                        vp++;
                        n--;
                    } else {
                        vp->iov_base = (char *)vp->iov_base + w;
                        vp->iov_len -= (size_t)w;
                        w = 0;
                    }
                }
            }
        } else if (mode == 1) {
            for (int i = 0; i < RUN; i++) {
                if (write(pp[1], hdr[i], HDR) != HDR) die("write to pipe");
                fill_pipe(fd, off + (off_t)i * BLK, pp[1]);
            }
            drain_pipe(pp[0], s, run);
        } else if (mode == 2) {
            for (int i = 0; i < RUN; i++) {
                if (send(s, hdr[i], HDR, MSG_MORE) != HDR) die("send");
                off_t o = off + (off_t)i * BLK;
                size_t left = BLK;
                while (left) {
                    ssize_t w = sendfile(s, fd, &o, left);
                    if (w <= 0) die("sendfile");
                    left -= (size_t)w;
                }
            }
        } else if (mode == 3) {
            unsigned char *pg = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (pg == MAP_FAILED) die("mmap");
            memcpy(pg, hdr, sizeof hdr);
            for (int i = 0; i < RUN; i++) {
                struct iovec v = {pg + HDR * i, HDR};
                if (vmsplice(pp[1], &v, 1, 0) != HDR) die("vmsplice");
                fill_pipe(fd, off + (off_t)i * BLK, pp[1]);
            }
            munmap(pg, 4096);
            drain_pipe(pp[0], s, run);
        } else {
            fprintf(stderr, "mode 0 to 3\n");
            return 2;
        }
    }
    double c1 = cpu_s();
    shutdown(s, SHUT_WR);
    int st;
    waitpid(child, &st, 0);
    printf("mode %d: %.3f CPU s per GiB sent\n", mode, (c1 - c0) / (size / 1073741824.0));
    return 0;
}
