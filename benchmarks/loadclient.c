/* Load generator for benchmarks/dtls_handshakes.py: many concurrent (D)TLS 1.2 clients in one
 * process (OpenSSL, epoll), each doing a full handshake with a client certificate, one request,
 * one response, close_notify, then starting over. C so that the clients cost the machine far less
 * CPU than the server they measure.
 *
 *   loadclient dtls|tls HOST PORT CERT KEY SECONDS INFLIGHT REQUEST_HEX
 *
 * Prints "completed failed seconds retransmissions cpu_seconds". A DTLS response counts when its CoAP code is 2.05 (an empty
 * ACK is skipped); a TLS response when it starts with "HTTP/1.1 200".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { HANDSHAKE, RESPONSE };

struct slot {
    int fd;
    SSL *ssl;
    int state;
    double started, last;
    size_t got;
    char buf[512];
};

static int dtls;
static SSL_CTX *ctx;
static struct sockaddr_in server;
static unsigned char request[1024];
static size_t request_len;
static int epfd;
static long completed, failed, retransmits;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void step(struct slot *s);

static void watch(struct slot *s, unsigned events, int op) {
    struct epoll_event ev = {.events = events, .data.ptr = s};
    epoll_ctl(epfd, op, s->fd, &ev);
}

static void start(struct slot *s) {
    s->fd = socket(AF_INET, (dtls ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK, 0);
    connect(s->fd, (struct sockaddr *)&server, sizeof server); /* TCP: EINPROGRESS */
    s->ssl = SSL_new(ctx);
    if (dtls) {
        BIO *bio = BIO_new_dgram(s->fd, BIO_NOCLOSE);
        BIO_ctrl(bio, BIO_CTRL_DGRAM_SET_CONNECTED, 0, &server);
        SSL_set_bio(s->ssl, bio, bio);
        SSL_set_options(s->ssl, SSL_OP_NO_QUERY_MTU);
        DTLS_set_link_mtu(s->ssl, 1200);
    } else {
        SSL_set_fd(s->ssl, s->fd);
    }
    SSL_set_connect_state(s->ssl);
    s->state = HANDSHAKE;
    s->started = s->last = now();
    s->got = 0;
    watch(s, EPOLLIN | (dtls ? 0 : EPOLLOUT), EPOLL_CTL_ADD);
}

static void finish(struct slot *s, int ok) {
    if (ok) {
        completed++;
        SSL_shutdown(s->ssl); /* one close_notify: the server forgets the session at once */
    } else {
        failed++;
    }
    epoll_ctl(epfd, EPOLL_CTL_DEL, s->fd, NULL);
    SSL_free(s->ssl);
    close(s->fd);
    ERR_clear_error();
    start(s);
    step(s);
}

/* Drive one slot as far as it goes; returns after it needs the network again. */
static void step(struct slot *s) {
    s->last = now();
    for (;;) {
        int rc, err;
        if (s->state == HANDSHAKE) {
            rc = SSL_do_handshake(s->ssl);
            if (rc == 1) {
                if (SSL_write(s->ssl, request, (int)request_len) <= 0) return finish(s, 0);
                s->state = RESPONSE;
                if (!dtls) watch(s, EPOLLIN, EPOLL_CTL_MOD);
                continue;
            }
        } else {
            rc = SSL_read(s->ssl, s->buf + s->got, (int)(sizeof s->buf - 1 - s->got));
            if (rc > 0) {
                if (dtls) {
                    unsigned char code = (unsigned char)s->buf[1];
                    if (code == 0x00) continue;  /* empty ACK: the answer follows */
                    return finish(s, code == 0x45); /* 2.05 Content */
                }
                s->got += (size_t)rc;
                if (s->got >= sizeof s->buf - 1) s->got = 12; /* keep the status line only */
                continue;
            }
            if (!dtls && SSL_get_error(s->ssl, rc) == SSL_ERROR_ZERO_RETURN)
                return finish(s, strncmp(s->buf, "HTTP/1.1 200", 12) == 0);
        }
        err = SSL_get_error(s->ssl, rc);
        if (err == SSL_ERROR_WANT_READ) {
            if (!dtls) watch(s, EPOLLIN, EPOLL_CTL_MOD);
            return;
        }
        if (err == SSL_ERROR_WANT_WRITE) {
            watch(s, EPOLLOUT, EPOLL_CTL_MOD);
            return;
        }
        if (!dtls && s->state == RESPONSE && s->got >= 12)
            return finish(s, strncmp(s->buf, "HTTP/1.1 200", 12) == 0); /* closed without notify */
        return finish(s, 0);
    }
}

static int unhex(const char *hex, unsigned char *out, size_t max) {
    size_t n = strlen(hex) / 2;
    if (n > max) return -1;
    for (size_t i = 0; i < n; i++) sscanf(hex + 2 * i, "%2hhx", &out[i]);
    return (int)n;
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: %s dtls|tls HOST PORT CERT KEY SECONDS INFLIGHT REQUEST_HEX\n",
                argv[0]);
        return 2;
    }
    dtls = strcmp(argv[1], "dtls") == 0;
    server.sin_family = AF_INET;
    server.sin_port = htons((unsigned short)atoi(argv[3]));
    inet_pton(AF_INET, argv[2], &server.sin_addr);
    double seconds = atof(argv[6]);
    int inflight = atoi(argv[7]);
    int n = unhex(argv[8], request, sizeof request);
    if (n < 0) return 2;
    request_len = (size_t)n;

    ctx = SSL_CTX_new(dtls ? DTLS_client_method() : TLS_client_method());
    SSL_CTX_set_max_proto_version(ctx, dtls ? DTLS1_2_VERSION : TLS1_2_VERSION);
    SSL_CTX_set_cipher_list(ctx, "ECDHE-ECDSA-AES128-GCM-SHA256");
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (SSL_CTX_use_certificate_chain_file(ctx, argv[4]) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, argv[5], SSL_FILETYPE_PEM) != 1) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);

    epfd = epoll_create1(0);
    struct slot *slots = calloc((size_t)inflight, sizeof *slots);
    double begin = now();
    for (int i = 0; i < inflight; i++) {
        start(&slots[i]);
        step(&slots[i]);
    }
    struct epoll_event events[256];
    double last_sweep = begin;
    while (now() - begin < seconds) {
        int ready = epoll_wait(epfd, events, 256, 20);
        for (int i = 0; i < ready; i++) step(events[i].data.ptr);
        double t = now();
        if (t - last_sweep < 0.05) continue;
        last_sweep = t;
        for (int i = 0; i < inflight; i++) {
            struct slot *s = &slots[i];
            if (t - s->started > 10.0) {
                finish(s, 0); /* stuck: give up on this one */
            } else if (dtls && t - s->last > 1.0) {
                s->last = t;
                retransmits++;
                if (s->state == HANDSHAKE) DTLSv1_handle_timeout(s->ssl);
                else SSL_write(s->ssl, request, (int)request_len); /* CoAP retransmission */
            }
        }
    }
    printf("%ld %ld %.3f %ld %.3f\n", completed, failed, now() - begin, retransmits,
           (double)clock() / CLOCKS_PER_SEC);
    return 0;
}
