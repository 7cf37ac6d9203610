/*
 * blast: send N MoldUDP64 packets of K messages of L bytes to a multicast group as fast as
 * sendmmsg() allows, then end-of-session packets. The live benchmark's sender.
 *
 *   blast GROUP PORT PACKETS [MSGS_PER_PACKET=10] [MSG_LEN=30] [SESSION=BENCH00001]
 *
 * TTL 1, multicast loopback on, interface 127.0.0.1: run it inside a private namespace.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64

static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 7; i >= 0; i--) { p[i] = (unsigned char)(v & 0xff); v >>= 8; }
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s GROUP PORT PACKETS [MSGS] [LEN] [SESSION]\n", argv[0]);
        return 2;
    }
    const char *group = argv[1];
    int port = atoi(argv[2]);
    long packets = atol(argv[3]);
    int msgs = argc > 4 ? atoi(argv[4]) : 10;
    int len = argc > 5 ? atoi(argv[5]) : 30;
    char session[11] = "BENCH00001";
    if (argc > 6) { memset(session, ' ', 10); memcpy(session, argv[6], strnlen(argv[6], 10)); }
    size_t size = 20 + (size_t)msgs * (2 + (size_t)len);
    if (size > 65507 || msgs < 1 || msgs > 0xFFFE) { fprintf(stderr, "packet too large\n"); return 2; }

    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    unsigned char ttl = 1, loop = 1;
    struct in_addr iface; inet_aton("127.0.0.1", &iface);
    setsockopt(fd, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof ttl);
    setsockopt(fd, IPPROTO_IP, IP_MULTICAST_LOOP, &loop, sizeof loop);
    if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &iface, sizeof iface) < 0) { perror("IP_MULTICAST_IF"); return 1; }
    int sndbuf = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    struct sockaddr_in dst = {0};
    dst.sin_family = AF_INET; dst.sin_port = htons((uint16_t)port);
    if (!inet_aton(group, &dst.sin_addr)) { fprintf(stderr, "bad group\n"); return 2; }

    unsigned char *bufs = calloc(BATCH, size);
    struct mmsghdr mm[BATCH]; struct iovec iov[BATCH];
    memset(mm, 0, sizeof mm);
    for (int b = 0; b < BATCH; b++) {
        unsigned char *p = bufs + (size_t)b * size;
        memcpy(p, session, 10);
        p[18] = (unsigned char)(msgs >> 8); p[19] = (unsigned char)(msgs & 0xff);
        unsigned char *q = p + 20;
        for (int m = 0; m < msgs; m++) {
            q[0] = (unsigned char)(len >> 8); q[1] = (unsigned char)(len & 0xff);
            memset(q + 2, 'A' + (m % 26), (size_t)len);
            q += 2 + len;
        }
        iov[b].iov_base = p; iov[b].iov_len = size;
        mm[b].msg_hdr.msg_iov = &iov[b]; mm[b].msg_hdr.msg_iovlen = 1;
        mm[b].msg_hdr.msg_name = &dst; mm[b].msg_hdr.msg_namelen = sizeof dst;
    }
    uint64_t seq = 1;
    long sent = 0;
    struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0);
    while (sent < packets) {
        int n = (int)((packets - sent) < BATCH ? (packets - sent) : BATCH);
        for (int b = 0; b < n; b++) { put_u64(bufs + (size_t)b * size + 10, seq); seq += (uint64_t)msgs; }
        int done = 0;
        while (done < n) {
            int r = sendmmsg(fd, mm + done, (unsigned)(n - done), 0);
            if (r < 0) { perror("sendmmsg"); return 1; }
            done += r;
        }
        sent += n;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    /* End of session, repeated as real feeds do. */
    unsigned char eos[20]; memcpy(eos, session, 10); put_u64(eos + 10, seq); eos[18] = 0xff; eos[19] = 0xff;
    for (int i = 0; i < 20; i++) {
        sendto(fd, eos, sizeof eos, 0, (struct sockaddr *)&dst, sizeof dst);
        usleep(50000);
    }
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("sent %ld packets %ld messages in %.3f s (%.0f packets/s)\n",
           sent, sent * msgs, secs, (double)sent / secs);
    return 0;
}
