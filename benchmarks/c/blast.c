/*
 * blast: send N MoldUDP64 packets of K messages of L bytes to a multicast group as fast as
 * sendmmsg() allows, then end-of-session packets. The live benchmark's sender.
 *
 *   blast GROUP PORT PACKETS [MSGS_PER_PACKET=10] [MSG_LEN=30] [SESSION=BENCH00001]
 *   blast GROUP PORT -f BINARYFILE [PACKET_BYTES=1472] [SESSION=BENCH00001]
 *
 * With -f, the messages of a BinaryFILE (2-byte big-endian length, then the message: the
 * MoldUDP64 message block itself) go in order, as many to a packet as fit in PACKET_BYTES
 * (header included; 1472 fills a 1500-byte Ethernet frame), straight from the file's bytes.
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

/* A UDP socket sending to GROUP:PORT on 127.0.0.1 (TTL 1, loopback on); -1 on error. */
static int open_sender(const char *group, int port, struct sockaddr_in *dst) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    unsigned char ttl = 1, loop = 1;
    struct in_addr iface; inet_aton("127.0.0.1", &iface);
    setsockopt(fd, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof ttl);
    setsockopt(fd, IPPROTO_IP, IP_MULTICAST_LOOP, &loop, sizeof loop);
    if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &iface, sizeof iface) < 0) { perror("IP_MULTICAST_IF"); return -1; }
    int sndbuf = 8 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    memset(dst, 0, sizeof *dst);
    dst->sin_family = AF_INET; dst->sin_port = htons((uint16_t)port);
    if (!inet_aton(group, &dst->sin_addr)) { fprintf(stderr, "bad group\n"); return -1; }
    return fd;
}

/* Send mm[0..n) whole, however many calls it takes; -1 on error. */
static int send_all(int fd, struct mmsghdr *mm, int n) {
    int done = 0;
    while (done < n) {
        int r = sendmmsg(fd, mm + done, (unsigned)(n - done), 0);
        if (r < 0) { perror("sendmmsg"); return -1; }
        done += r;
    }
    return 0;
}

/* End of session (next number seq), repeated as real feeds do; then the summary line. */
static void finish(int fd, struct sockaddr_in *dst, const char *session, uint64_t seq,
                   long sent, long messages, struct timespec *t0, struct timespec *t1) {
    unsigned char eos[20]; memcpy(eos, session, 10); put_u64(eos + 10, seq); eos[18] = 0xff; eos[19] = 0xff;
    for (int i = 0; i < 20; i++) {
        sendto(fd, eos, sizeof eos, 0, (struct sockaddr *)dst, sizeof *dst);
        usleep(50000);
    }
    double secs = (double)(t1->tv_sec - t0->tv_sec) + (double)(t1->tv_nsec - t0->tv_nsec) / 1e9;
    printf("sent %ld packets %ld messages in %.3f s (%.0f packets/s)\n",
           sent, messages, secs, (double)sent / secs);
}

/* -f: the messages of a BinaryFILE, packed in order into packets of at most `limit` bytes. */
static int blast_file(const char *group, int port, const char *path, size_t limit, const char *session) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) { perror(path); return 1; }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *data = malloc((size_t)size + 1);
    if (data == NULL || fread(data, 1, (size_t)size, f) != (size_t)size) { perror(path); return 1; }
    fclose(f);
    /* Cut the file into packets: each a run of whole message blocks. */
    size_t cap = 1024, n_packets = 0;
    size_t *start = malloc(cap * sizeof *start), *len = malloc(cap * sizeof *len);
    unsigned *count = malloc(cap * sizeof *count);
    size_t pos = 0;
    long messages = 0;
    while (pos < (size_t)size) {
        size_t begin = pos;
        unsigned k = 0;
        while (pos + 2 <= (size_t)size && k < 0xFFFE) {
            size_t block = 2 + (((size_t)data[pos] << 8) | data[pos + 1]);
            if (pos + block > (size_t)size) { fprintf(stderr, "%s ends inside a message\n", path); return 1; }
            if (k > 0 && 20 + (pos - begin) + block > limit) break;
            pos += block; k++;
        }
        if (pos + 2 > (size_t)size && pos < (size_t)size) { fprintf(stderr, "%s ends inside a message\n", path); return 1; }
        if (n_packets == cap) {
            cap *= 2;
            start = realloc(start, cap * sizeof *start); len = realloc(len, cap * sizeof *len);
            count = realloc(count, cap * sizeof *count);
        }
        start[n_packets] = begin; len[n_packets] = pos - begin; count[n_packets] = k;
        n_packets++; messages += k;
    }
    struct sockaddr_in dst;
    int fd = open_sender(group, port, &dst);
    if (fd < 0) return 1;
    static unsigned char heads[BATCH][20];
    struct mmsghdr mm[BATCH]; struct iovec iov[BATCH][2];
    memset(mm, 0, sizeof mm);
    for (int b = 0; b < BATCH; b++) {
        memcpy(heads[b], session, 10);
        iov[b][0].iov_base = heads[b]; iov[b][0].iov_len = 20;
        mm[b].msg_hdr.msg_iov = iov[b]; mm[b].msg_hdr.msg_iovlen = 2;
        mm[b].msg_hdr.msg_name = &dst; mm[b].msg_hdr.msg_namelen = sizeof dst;
    }
    uint64_t seq = 1;
    size_t sent = 0;
    struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0);
    while (sent < n_packets) {
        int n = (int)((n_packets - sent) < BATCH ? (n_packets - sent) : BATCH);
        for (int b = 0; b < n; b++) {
            size_t i = sent + (size_t)b;
            put_u64(heads[b] + 10, seq);
            heads[b][18] = (unsigned char)(count[i] >> 8); heads[b][19] = (unsigned char)(count[i] & 0xff);
            iov[b][1].iov_base = data + start[i]; iov[b][1].iov_len = len[i];
            seq += count[i];
        }
        if (send_all(fd, mm, n) < 0) return 1;
        sent += (size_t)n;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    finish(fd, &dst, session, seq, (long)sent, messages, &t0, &t1);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s GROUP PORT PACKETS [MSGS] [LEN] [SESSION]\n"
                        "       %s GROUP PORT -f BINARYFILE [PACKET_BYTES] [SESSION]\n", argv[0], argv[0]);
        return 2;
    }
    const char *group = argv[1];
    int port = atoi(argv[2]);
    char session[11] = "BENCH00001";
    if (strcmp(argv[3], "-f") == 0) {
        if (argc < 5) { fprintf(stderr, "-f needs a BinaryFILE\n"); return 2; }
        long limit = argc > 5 ? atol(argv[5]) : 1472;
        if (limit < 20 + 2 + 1 || limit > 65507) { fprintf(stderr, "bad PACKET_BYTES\n"); return 2; }
        if (argc > 6) { memset(session, ' ', 10); memcpy(session, argv[6], strnlen(argv[6], 10)); }
        return blast_file(group, port, argv[4], (size_t)limit, session);
    }
    long packets = atol(argv[3]);
    int msgs = argc > 4 ? atoi(argv[4]) : 10;
    int len = argc > 5 ? atoi(argv[5]) : 30;
    if (argc > 6) { memset(session, ' ', 10); memcpy(session, argv[6], strnlen(argv[6], 10)); }
    size_t size = 20 + (size_t)msgs * (2 + (size_t)len);
    if (size > 65507 || msgs < 1 || msgs > 0xFFFE) { fprintf(stderr, "packet too large\n"); return 2; }

    struct sockaddr_in dst;
    int fd = open_sender(group, port, &dst);
    if (fd < 0) return 1;

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
        if (send_all(fd, mm, n) < 0) return 1;
        sent += n;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    finish(fd, &dst, session, seq, sent, sent * msgs, &t0, &t1);
    return 0;
}
