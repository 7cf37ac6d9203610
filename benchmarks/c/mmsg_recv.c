/*
 * mmsg_recv: the baseline receiver. Joins a group on 127.0.0.1, takes datagrams with
 * recvmmsg() in batches, counts MoldUDP64 packets and messages, and stops at the first
 * end-of-session packet (or after IDLE seconds without data).
 *
 *   mmsg_recv GROUP PORT [IDLE_SECONDS=5] [RCVBUF=8388608]
 *
 * Prints: "packets N messages M".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define BATCH 64
#define BUFSZ 2048

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: %s GROUP PORT [IDLE] [RCVBUF]\n", argv[0]); return 2; }
    int port = atoi(argv[2]);
    int idle = argc > 3 ? atoi(argv[3]) : 5;
    int rcvbuf = argc > 4 ? atoi(argv[4]) : 8 << 20;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET; addr.sin_port = htons((uint16_t)port);
    inet_aton(argv[1], &addr.sin_addr);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("bind"); return 1; }
    struct ip_mreq mreq; inet_aton(argv[1], &mreq.imr_multiaddr); inet_aton("127.0.0.1", &mreq.imr_interface);
    if (setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mreq, sizeof mreq) < 0) { perror("join"); return 1; }
    struct timeval tv = {idle, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    static unsigned char bufs[BATCH][BUFSZ];
    struct mmsghdr mm[BATCH]; struct iovec iov[BATCH];
    memset(mm, 0, sizeof mm);
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = bufs[i]; iov[i].iov_len = BUFSZ;
        mm[i].msg_hdr.msg_iov = &iov[i]; mm[i].msg_hdr.msg_iovlen = 1;
    }
    printf("ready\n"); fflush(stdout);
    long packets = 0, messages = 0;
    for (;;) {
        int n = recvmmsg(fd, mm, BATCH, MSG_WAITFORONE, NULL);
        if (n < 0) break; /* idle timeout */
        for (int i = 0; i < n; i++) {
            if (mm[i].msg_len < 20) continue;
            unsigned count = ((unsigned)bufs[i][18] << 8) | bufs[i][19];
            if (count == 0xFFFF) { printf("packets %ld messages %ld\n", packets, messages); return 0; }
            if (count == 0) continue;
            packets++; messages += count;
        }
    }
    printf("packets %ld messages %ld\n", packets, messages);
    return 0;
}
