/* A trivial HTTP/1.1 server used only to measure wrk's own ceiling on this machine.
 *
 * One epoll loop, keep-alive, a fixed 2-byte body for every request. It does
 * almost no work, so what wrk reports against it is (a lower bound of) what wrk
 * can generate here while sharing the CPU with a server.
 *
 * Build: cc -O2 -o bench/out/trivial_server bench/trivial_server.c
 * Run:   bench/out/trivial_server <port>      (binds 127.0.0.1 only)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static const char RESPONSE[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";

static void nonblock(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK); }

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 18999;
    signal(SIGPIPE, SIG_IGN);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) || listen(lfd, 512)) {
        perror("bind/listen");
        return 1;
    }
    nonblock(lfd);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    struct epoll_event events[256];
    char buf[16384];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd) {
                int c;
                while ((c = accept(lfd, NULL, NULL)) >= 0) {
                    nonblock(c);
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            ssize_t r = read(fd, buf, sizeof buf);
            if (r <= 0) {
                if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) continue;
                close(fd);
                continue;
            }
            /* One response per request terminator seen (wrk does not pipeline by default). */
            int requests = 0;
            for (ssize_t k = 3; k < r; k++)
                if (buf[k] == '\n' && buf[k - 1] == '\r' && buf[k - 2] == '\n' && buf[k - 3] == '\r') requests++;
            if (requests == 0) requests = 1;
            for (int q = 0; q < requests; q++)
                if (write(fd, RESPONSE, sizeof RESPONSE - 1) < 0) break;
        }
    }
}
