/*
 * One load step of the TCP benchmark, in C, so the generator is never what limits a server.
 *
 * bench/tcpgen.py logs every user in (Python), then for each step runs this program with the
 * users' connected, non-blocking sockets inherited (same fd numbers) and a description on
 * stdin.  It offers `rate` messages/s for `duration` s on the shape's schedule, counts every
 * receiver's lines on its own socket, checks the sampled receivers' content (every sender's
 * lines once and in order) and the probes' latency, and drains until every receiver has its
 * count or the drain time is up.  It prints the counts and state back for tcpgen.py, which
 * judges the step exactly as before.  Nothing handed to a socket is ever dropped: what the
 * kernel does not take waits in a pending buffer (and is handed back if still unsent).
 *
 * stdin:  rate duration grace drain tick loud probe_every irc ws n
 *         then n lines: fd idx room seq sender sampled pre_hex post_hex frames_hex
 *         ("-" for empty hex; frames_hex: a WebSocket frame begun before this step)
 * stdout: T t0 t_stop last_data complete_at short_in_grace max_lag cpu_s
 *         C idx rx seq closed pending_hex frames_hex (one per user)
 *         S idx bad tail_hex nlat lat_ms... nnext sender next_seq...   (one per sampled user)
 *         E text                                      (at most 20 errors)
 * Times are CLOCK_MONOTONIC seconds, the clock Python's time.monotonic() reads.
 *
 * With ws=1 the users speak WebSocket (chatroom's web front-end): each line (pre + text +
 * post, a JSON message) goes out as one masked text frame, as a browser sends it, and each
 * text frame received counts as one delivery (its payload, with a newline, is what the
 * sampled receivers scan); a ping is answered with a pong.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RECV_SIZE (1 << 18)
#define PAD "xxxxxxxxxxxxxxxxxxxx"

typedef struct {
    char *data;
    size_t len, cap;
} buf_t;

typedef struct {
    int fd, idx, room, sender, sampled, closed;
    long seq, start_seq, rx, exp;
    buf_t pre, post, pending, round, tail, frames;
    long bad;
    double *lat;
    size_t nlat, latcap;
    int *next_from; /* sampled: sender idx of each entry in next_seq */
    long *next_seq;
    size_t nnext;
} conn_t;

static conn_t *conns;
static int n_conns, irc, ws;
static conn_t **by_fd;
static int max_fd;
static int ep;
static double last_data;
static char *errors[20];
static int n_errors;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        perror("realloc");
        exit(3);
    }
    return q;
}

static void buf_add(buf_t *b, const char *data, size_t len) {
    if (b->len + len > b->cap) {
        b->cap = (b->len + len) * 2 + 64;
        b->data = xrealloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
}

static void buf_drop(buf_t *b, size_t n) {
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

static void unhex(buf_t *b, const char *hex) {
    if (strcmp(hex, "-") == 0)
        return;
    for (size_t i = 0; hex[i] && hex[i + 1]; i += 2) {
        char byte;
        unsigned v;
        sscanf(hex + i, "%2x", &v);
        byte = (char)v;
        buf_add(b, &byte, 1);
    }
}

static void print_hex(const buf_t *b) {
    if (!b->len) {
        fputs("-", stdout);
        return;
    }
    for (size_t i = 0; i < b->len; i++)
        printf("%02x", (unsigned char)b->data[i]);
}

static void fail(conn_t *c, const char *why) {
    if (c->closed)
        return;
    c->closed = 1;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    if (n_errors < 20) {
        char *e = malloc(128);
        snprintf(e, 128, "user %d: %s", c->idx, why);
        errors[n_errors++] = e;
    }
}

static void watch(conn_t *c, int out) {
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.fd = c->fd};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Send, or queue behind what waits: nothing handed here is dropped while c is open. */
static void send_data(conn_t *c, const char *data, size_t len) {
    if (c->closed)
        return;
    if (c->pending.len) {
        buf_add(&c->pending, data, len);
        return;
    }
    ssize_t sent = send(c->fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (sent < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            fail(c, strerror(errno));
            return;
        }
        sent = 0;
    }
    if ((size_t)sent < len) {
        buf_add(&c->pending, data + sent, len - sent);
        watch(c, 1);
    }
}

static void flush_pending(conn_t *c) {
    if (c->pending.len) {
        ssize_t sent = send(c->fd, c->pending.data, c->pending.len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            fail(c, strerror(errno));
            return;
        }
        buf_drop(&c->pending, (size_t)sent);
    }
    if (!c->pending.len)
        watch(c, 0);
}

static long parse_digits(const char *s, size_t len, size_t *i) {
    long v = 0;
    size_t start = *i;
    while (*i < len && s[*i] >= '0' && s[*i] <= '9')
        v = v * 10 + (s[(*i)++] - '0');
    return *i > start ? v : -1;
}

/* A sampled receiver: every occurrence of m<sender>.<seq> followed by a space (and maybe
 * t<ns>) in its complete lines, like tcpgen's regex findall: each sender's next expected seq
 * must come, once, in order; a probe's time is taken. */
static void scan(conn_t *c, const char *data, size_t len) {
    buf_add(&c->tail, data, len);
    size_t end = c->tail.len;
    while (end > 0 && c->tail.data[end - 1] != '\n')
        end--;
    const char *s = c->tail.data;
    long long t = now_ns();
    size_t i = 0;
    while (i < end) {
        if (s[i] != 'm') {
            i++;
            continue;
        }
        size_t j = i + 1;
        long who = parse_digits(s, end, &j);
        if (who < 0 || j >= end || s[j] != '.') {
            i++;
            continue;
        }
        j++;
        long q = parse_digits(s, end, &j);
        if (q < 0 || j >= end || s[j] != ' ') {
            i++;
            continue;
        }
        j++;
        long long ts = -1;
        if (j < end && s[j] == 't') {
            size_t k = j + 1;
            long long v = 0;
            size_t start = k;
            while (k < end && s[k] >= '0' && s[k] <= '9')
                v = v * 10 + (s[k++] - '0');
            if (k > start) {
                ts = v;
                j = k;
            }
        }
        i = j;
        size_t e;
        for (e = 0; e < c->nnext; e++)
            if (c->next_from[e] == who)
                break;
        if (e == c->nnext || q != c->next_seq[e]) {
            c->bad++; /* duplicate, gap, reorder, or a sender not in this room */
            if (e < c->nnext && q > c->next_seq[e])
                c->next_seq[e] = q + 1;
            continue;
        }
        c->next_seq[e] = q + 1;
        if (ts >= 0) {
            if (c->nlat == c->latcap) {
                c->latcap = c->latcap * 2 + 64;
                c->lat = xrealloc(c->lat, c->latcap * sizeof(double));
            }
            c->lat[c->nlat++] = (t - ts) / 1e6;
        }
    }
    buf_drop(&c->tail, end);
}

/* IRC servers ping: answer, and do not count the PING as a delivery. */
static void pong(conn_t *c, const char *data, size_t len) {
    for (size_t i = 0; i + 4 <= len; i++) {
        if ((i == 0 || data[i - 1] == '\n') && memcmp(data + i, "PING", 4) == 0) {
            size_t e = i;
            while (e < len && data[e] != '\n')
                e++;
            size_t stop = e;
            if (stop > i && data[stop - 1] == '\r')
                stop--;
            c->rx--;
            send_data(c, "PONG", 4);
            send_data(c, data + i + 4, stop - i - 4);
            send_data(c, "\r\n", 2);
            i = e;
        }
    }
}

static char recv_buf[RECV_SIZE];

/* One masked client frame (FIN, `opcode`) holding `len` bytes of `payload`, onto `out`. */
static void ws_frame(buf_t *out, int opcode, const char *payload, size_t len) {
    static const unsigned char mask[4] = {0x3a, 0x5c, 0x71, 0x0e};
    unsigned char head[8];
    size_t n = 0;
    head[n++] = 0x80 | opcode;
    if (len < 126) {
        head[n++] = 0x80 | (unsigned char)len;
    } else {
        head[n++] = 0x80 | 126;
        head[n++] = (unsigned char)(len >> 8);
        head[n++] = (unsigned char)len;
    }
    memcpy(head + n, mask, 4);
    n += 4;
    buf_add(out, (const char *)head, n);
    size_t at = out->len;
    buf_add(out, payload, len);
    for (size_t i = 0; i < len; i++)
        out->data[at + i] ^= mask[i % 4];
}

/* Server frames (never masked) as they arrive: count text frames, answer pings. */
static void ws_receive(conn_t *c, const char *data, size_t len) {
    buf_add(&c->frames, data, len);
    size_t at = 0;
    const unsigned char *b = (const unsigned char *)c->frames.data;
    while (c->frames.len - at >= 2) {
        int opcode = b[at] & 0x0f;
        size_t plen = b[at + 1] & 0x7f, head = 2;
        if (plen == 126) {
            if (c->frames.len - at < 4)
                break;
            plen = ((size_t)b[at + 2] << 8) | b[at + 3];
            head = 4;
        } else if (plen == 127) {
            if (c->frames.len - at < 10)
                break;
            plen = 0;
            for (int k = 0; k < 8; k++)
                plen = (plen << 8) | b[at + 2 + k];
            head = 10;
        }
        if (c->frames.len - at < head + plen)
            break;
        const char *payload = c->frames.data + at + head;
        if (opcode == 1) {
            c->rx++;
            if (c->sampled) {
                scan(c, payload, plen);
                scan(c, "\n", 1);
            }
        } else if (opcode == 9) {
            buf_t pong = {0};
            ws_frame(&pong, 10, payload, plen);
            send_data(c, pong.data, pong.len);
            free(pong.data);
        } else if (opcode == 8) {
            fail(c, "closed by server (WebSocket close)");
            return;
        }
        at += head + plen;
        b = (const unsigned char *)c->frames.data;
    }
    buf_drop(&c->frames, at);
}

static void pump(int timeout_ms) {
    struct epoll_event events[1024];
    int n = epoll_wait(ep, events, 1024, timeout_ms);
    int got = 0;
    for (int k = 0; k < n; k++) {
        int fd = events[k].data.fd;
        conn_t *c = fd <= max_fd ? by_fd[fd] : NULL;
        if (!c || c->closed)
            continue;
        if (events[k].events & EPOLLOUT) {
            flush_pending(c);
            if (!(events[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                continue;
        }
        ssize_t r = recv(fd, recv_buf, RECV_SIZE, MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                continue;
            fail(c, strerror(errno));
            continue;
        }
        if (r == 0) {
            fail(c, "closed by server");
            continue;
        }
        got = 1;
        if (ws) {
            ws_receive(c, recv_buf, (size_t)r);
            continue;
        }
        long lines = 0;
        for (ssize_t i = 0; i < r; i++)
            lines += recv_buf[i] == '\n';
        c->rx += lines;
        if (irc && memmem(recv_buf, r, "PING", 4))
            pong(c, recv_buf, r);
        if (c->sampled)
            scan(c, recv_buf, r);
    }
    if (got)
        last_data = now();
}

static void line_for(conn_t *c, long j, long probe_every, buf_t *out) {
    char text[96];
    int len;
    if (j % probe_every == 0)
        len = snprintf(text, sizeof text, "m%d.%ld t%lld", c->idx, c->seq, now_ns());
    else
        len = snprintf(text, sizeof text, "m%d.%ld %s", c->idx, c->seq, PAD);
    c->seq++;
    if (ws) {
        buf_t message = {0};
        buf_add(&message, c->pre.data, c->pre.len);
        buf_add(&message, text, len);
        buf_add(&message, c->post.data, c->post.len);
        ws_frame(out, 1, message.data, message.len);
        free(message.data);
        return;
    }
    buf_add(out, c->pre.data, c->pre.len);
    buf_add(out, text, len);
    buf_add(out, c->post.data, c->post.len);
}

int main(void) {
    double rate, duration, grace, drain, tick;
    int loud;
    long probe_every;
    if (scanf("%lf %lf %lf %lf %lf %d %ld %d %d %d", &rate, &duration, &grace, &drain, &tick,
              &loud, &probe_every, &irc, &ws, &n_conns) != 10) {
        fputs("stepper: bad header\n", stderr);
        return 2;
    }
    conns = calloc(n_conns, sizeof(conn_t));
    ep = epoll_create1(0);
    for (int i = 0; i < n_conns; i++) {
        conn_t *c = &conns[i];
        char pre[512], post[512];
        static char frames[1 << 17];
        if (scanf("%d %d %d %ld %d %d %511s %511s %131071s", &c->fd, &c->idx, &c->room,
                  &c->seq, &c->sender, &c->sampled, pre, post, frames) != 9) {
            fputs("stepper: bad user line\n", stderr);
            return 2;
        }
        c->start_seq = c->seq;
        unhex(&c->pre, pre);
        unhex(&c->post, post);
        unhex(&c->frames, frames);
        if (c->fd > max_fd)
            max_fd = c->fd;
    }
    by_fd = calloc(max_fd + 1, sizeof(conn_t *));
    int n_senders = 0;
    conn_t **senders = calloc(n_conns, sizeof(conn_t *));
    for (int i = 0; i < n_conns; i++) {
        conn_t *c = &conns[i];
        by_fd[c->fd] = c;
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = c->fd};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
            perror("epoll_ctl");
            return 2;
        }
        if (c->sender)
            senders[n_senders++] = c;
    }
    for (int i = 0; i < n_conns; i++) { /* what each sampled receiver expects from whom */
        conn_t *c = &conns[i];
        if (!c->sampled)
            continue;
        c->next_from = calloc(n_senders, sizeof(int));
        c->next_seq = calloc(n_senders, sizeof(long));
        for (int k = 0; k < n_senders; k++) {
            conn_t *s = senders[k];
            if ((ws || s != c) && s->room == c->room) { /* WebSocket users see their own */
                c->next_from[c->nnext] = s->idx;
                c->next_seq[c->nnext++] = s->seq;
            }
        }
    }
    long total = (long)(rate * duration + 0.5);
    if (total < 1)
        total = 1;
    long max_lag = 0, k = 0;
    buf_t out = {0};
    double t0 = now(), next_round = t0;
    last_data = t0;
    while (k < total && n_senders) {
        double t = now();
        long due = (long)(rate * (t - t0)) + 1;
        if (due > total)
            due = total;
        if (due > k) {
            if (due - k > max_lag)
                max_lag = due - k;
            if (loud) { /* all lines due in this tick from one sender in one send */
                for (long j = k; j < due; j++) {
                    conn_t *c = senders[j % n_senders];
                    line_for(c, j, probe_every, &c->round);
                }
                for (int s = 0; s < n_senders; s++) {
                    conn_t *c = senders[s];
                    if (c->round.len) {
                        send_data(c, c->round.data, c->round.len);
                        c->round.len = 0;
                    }
                }
            } else { /* one line per send, senders interleaved */
                for (long j = k; j < due; j++) {
                    conn_t *c = senders[j % n_senders];
                    out.len = 0;
                    line_for(c, j, probe_every, &out);
                    send_data(c, out.data, out.len);
                }
            }
            k = due;
        }
        pump(0);
        next_round += tick; /* read until the next tick is due, then send what is due */
        double wait;
        while ((wait = next_round - now()) > 0)
            pump(wait >= 0.001 ? (int)(wait * 1000) : 1);
        if (wait < -tick)
            next_round = now(); /* behind: the lag shows in max_lag, not as a burst */
    }
    double t_stop = now();
    /* What each receiver must get: its room's lines, less its own (but a WebSocket user,
     * like the page, gets its own lines back, numbered). */
    for (int i = 0; i < n_conns; i++) {
        conn_t *c = &conns[i];
        long room_sent = 0;
        for (int s = 0; s < n_senders; s++)
            if (senders[s]->room == c->room)
                room_sent += senders[s]->seq - senders[s]->start_seq;
        c->exp = room_sent - (ws ? 0 : c->seq - c->start_seq);
    }
    int short_in_grace = -1;
    double deadline = t_stop + drain;
    for (;;) {
        int waiting = 0;
        for (int i = 0; i < n_conns; i++)
            if (!conns[i].closed && conns[i].rx < conns[i].exp)
                waiting++;
        if (short_in_grace < 0 && now() >= t_stop + grace)
            short_in_grace = waiting;
        if (!waiting || now() >= deadline) {
            if (short_in_grace < 0)
                short_in_grace = waiting;
            break;
        }
        pump(5);
    }
    double complete_at = now();
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
                 ru.ru_stime.tv_usec / 1e6;
    printf("T %.9f %.9f %.9f %.9f %d %ld %.6f\n", t0, t_stop, last_data, complete_at,
           short_in_grace, max_lag, cpu);
    for (int i = 0; i < n_conns; i++) {
        conn_t *c = &conns[i];
        printf("C %d %ld %ld %d ", c->idx, c->rx, c->seq, c->closed);
        print_hex(&c->pending);
        putchar(' ');
        print_hex(&c->frames);
        putchar('\n');
        if (c->sampled) {
            printf("S %d %ld ", c->idx, c->bad);
            print_hex(&c->tail);
            printf(" %zu", c->nlat);
            for (size_t l = 0; l < c->nlat; l++)
                printf(" %.4f", c->lat[l]);
            printf(" %zu", c->nnext);
            for (size_t e = 0; e < c->nnext; e++)
                printf(" %d %ld", c->next_from[e], c->next_seq[e]);
            putchar('\n');
        }
    }
    for (int e = 0; e < n_errors; e++)
        printf("E %s\n", errors[e]);
    return 0;
}
