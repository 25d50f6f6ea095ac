/* Reference: a minimal single-threaded C epoll echo server, the yardstick for bench/echo.py.
 *
 *   cc -O2 -o c_echo_ref c_echo_ref.c && ./c_echo_ref PORT [udp]
 *
 * TCP: level-triggered epoll, accept4, one read() into a 64 KiB buffer and write() it back (a
 * partial write waits in poll() for that connection: simple, and never hit by a ping-pong client).
 * UDP: one recvfrom() and one sendto() per datagram.  Prints "READY <port>" once listening and
 * stops on SIGINT/SIGTERM.  No statistics, no error handling beyond closing the connection.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static char buf[65536];

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN) {
                struct pollfd pfd = {.fd = fd, .events = POLLOUT};
                poll(&pfd, 1, 1000);
                continue;
            }
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 7788;
    int udp = argc > 2 && strcmp(argv[2], "udp") == 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int ls = socket(AF_INET, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&addr, sizeof(addr)) < 0 || (!udp && listen(ls, 1024) < 0)) {
        perror("bind/listen");
        return 1;
    }
    socklen_t alen = sizeof(addr);
    getsockname(ls, (struct sockaddr *)&addr, &alen);
    printf("READY %d\n", ntohs(addr.sin_port));
    fflush(stdout);

    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    struct epoll_event events[256];
    while (!stop) {
        int n = epoll_wait(ep, events, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (udp) {
                struct sockaddr_storage from;
                socklen_t flen = sizeof(from);
                ssize_t r = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &flen);
                if (r >= 0)
                    sendto(fd, buf, (size_t)r, 0, (struct sockaddr *)&from, flen);
            } else if (fd == ls) {
                int c = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
                if (c >= 0) {
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
            } else {
                ssize_t r = read(fd, buf, sizeof(buf));
                if (r > 0) {
                    if (write_all(fd, buf, (size_t)r) == 0)
                        continue;
                } else if (r < 0 && errno == EAGAIN) {
                    continue;
                }
                close(fd);
            }
        }
    }
    return 0;
}
