/*
 * How a leecher's bytes can go from a TCP socket to a file, and what each way costs
 * the receiving process in CPU per GiB: the portable calls btcore makes (wait in
 * `epoll_wait`, `read` the socket to its end in 64 KiB reads, write each 256 KiB run
 * with one `pwrite`) beside `io_uring` (Linux 5.1; receives and writes queued on a
 * ring, one `io_uring_enter` per turn for all of them):
 *
 *   0  epoll_wait, read 64 KiB at a time, pwrite each 256 KiB run   (btcore's calls)
 *   1  as 0, with SO_RCVLOWAT at 256 KiB: one wake-up per run        (btcore's batches)
 *   2  io_uring: a recv of each 256 KiB run (MSG_WAITALL) and its write, four runs in
 *      flight, one submit-and-wait per turn
 *   3  as 1, reading up to the run's end at once (256 KiB reads): what 2 does with
 *      portable calls
 *
 * Each way reads straight into the run it writes (no copy in user space), so only the
 * calls and wake-ups differ. No hashing: that is the same whichever way.
 *
 * Build and run (liburing's headers: Debian's liburing-dev):
 *   cc -O2 -o /tmp/recv_paths bench/recv_paths.c -luring
 *   for r in 1 2 3 4 5 6; do for m in 0 1 2 3; do /tmp/recv_paths $m /dev/shm/out.bin; done; done
 *
 * A child process on the second core sends 1 GiB to the receiver on the first, over
 * 127.0.0.1 (needs two cores). On loopback the receiver
 * also pays for part of the sender's side of TCP, the same for every way. Not part of
 * `cargo test`.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define TOTAL (1024L * 1024 * 1024)
#define READ 65536
#define RUN (256 * 1024)
#define INFLIGHT 4
/* The file's size: runs are written over it again and again, into pages allocated
 * before the clock starts (a fresh page per run made runs vary 2-fold). */
#define SPAN (64L * 1024 * 1024)

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

/* Runs this process on `cpu` alone: the receiver and the sender each on a core of
 * their own, the same for every way (left to the scheduler, runs varied 3-fold). */
static void pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set)) die("sched_setaffinity");
}

/* The sender: TOTAL bytes in 256 KiB writes. */
static void send_all(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&a, sizeof a)) die("connect");
    static char buf[RUN];
    memset(buf, 'x', sizeof buf);
    for (long left = TOTAL; left > 0;) {
        ssize_t n = write(s, buf, left < RUN ? left : RUN);
        if (n <= 0) die("write");
        left -= n;
    }
    close(s);
    _exit(0);
}

/* Ways 0, 1 and 3. */
static long portable(int sock, int file, int batch, size_t read_len, long *wakeups) {
    if (batch) {
        int lowat = RUN;
        setsockopt(sock, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof lowat);
    }
    fcntl(sock, F_SETFL, O_NONBLOCK);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = sock};
    epoll_ctl(ep, EPOLL_CTL_ADD, sock, &ev);
    char *run = aligned_alloc(4096, RUN);
    size_t fill = 0;
    long got = 0, at = 0;
    for (;;) {
        struct epoll_event out;
        if (epoll_wait(ep, &out, 1, -1) < 0) die("epoll_wait");
        ++*wakeups;
        for (;;) {
            size_t want = RUN - fill < read_len ? RUN - fill : read_len;
            ssize_t n = read(sock, run + fill, want);
            if (n < 0) break; /* EAGAIN: wait again */
            if (n == 0) {
                if (fill && pwrite(file, run, fill, at) != (ssize_t)fill) die("pwrite");
                return got;
            }
            fill += n;
            got += n;
            if (fill == RUN) {
                if (pwrite(file, run, RUN, at) != RUN) die("pwrite");
                at = (at + RUN) % SPAN;
                fill = 0;
            }
        }
    }
}

/* Way 2. Each slot of the ring is a run: received whole, then written. */
static long uring(int sock, int file, long *wakeups) {
    struct io_uring ring;
    if (io_uring_queue_init(2 * INFLIGHT, &ring, 0)) die("io_uring_queue_init");
    char *runs[INFLIGHT];
    long offset[INFLIGHT];
    long next_at = 0, got = 0;
    int live = 0, eof = 0;
    for (int i = 0; i < INFLIGHT; i++) {
        runs[i] = aligned_alloc(4096, RUN);
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
        io_uring_prep_recv(sqe, sock, runs[i], RUN, MSG_WAITALL);
        io_uring_sqe_set_data64(sqe, (unsigned long)i << 1);
        offset[i] = next_at;
        next_at = (next_at + RUN) % SPAN;
        live++;
    }
    while (live) {
        if (io_uring_submit_and_wait(&ring, 1) < 0) die("io_uring_submit_and_wait");
        ++*wakeups;
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            seen++;
            unsigned long d = cqe->user_data;
            int slot = d >> 1, is_write = d & 1;
            live--;
            if (cqe->res < 0) {
                errno = -cqe->res;
                die(is_write ? "write cqe" : "recv cqe");
            }
            if (!is_write) {
                /* A short receive is the stream's end (MSG_WAITALL). */
                if (cqe->res < RUN) eof = 1;
                got += cqe->res;
                if (cqe->res == 0) continue;
                struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
                io_uring_prep_write(sqe, file, runs[slot], cqe->res, offset[slot]);
                io_uring_sqe_set_data64(sqe, ((unsigned long)slot << 1) | 1);
                live++;
            } else if (!eof) {
                struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
                io_uring_prep_recv(sqe, sock, runs[slot], RUN, MSG_WAITALL);
                io_uring_sqe_set_data64(sqe, (unsigned long)slot << 1);
                offset[slot] = next_at;
                next_at = (next_at + RUN) % SPAN;
                live++;
            }
        }
        io_uring_cq_advance(&ring, seen);
    }
    io_uring_queue_exit(&ring);
    return got;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s WAY(0-3) OUTFILE\n", argv[0]);
        return 2;
    }
    int way = atoi(argv[1]);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1)) die("listen");
    getsockname(l, (struct sockaddr *)&a, &al);
    pid_t child = fork();
    if (child == 0) {
        pin(1);
        send_all(ntohs(a.sin_port));
    }
    pin(0);
    int sock = accept(l, NULL, NULL);
    if (sock < 0) die("accept");
    int file = open(argv[2], O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (file < 0) die("open");
    static char zeros[RUN];
    for (long at = 0; at < SPAN; at += RUN)
        if (pwrite(file, zeros, RUN, at) != RUN) die("pwrite");
    long wakeups = 0;
    double c0 = cpu_s();
    long got = way == 2 ? uring(sock, file, &wakeups)
                        : portable(sock, file, way != 0, way == 3 ? RUN : READ, &wakeups);
    double c1 = cpu_s();
    waitpid(child, NULL, 0);
    if (got != TOTAL) {
        fprintf(stderr, "got %ld of %ld bytes\n", got, TOTAL);
        return 1;
    }
    printf("way %d: %.3f CPU s per GiB, %ld wake-ups\n", way, (c1 - c0) * (1L << 30) / got,
           wakeups);
    close(file);
    unlink(argv[2]);
    return 0;
}
