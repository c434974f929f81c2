// One NBD connection: connect, handshake, and requests in flight on the
// event loop (see nbd-client.h).
#include "block/drivers/nbd-client.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>

#include <cerrno>
#include <chrono>

#include "block/aio.h"
#include "block/warn.h"

namespace mb::nbd {

namespace {

int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

// Waits for `events` on fd until the deadline: 0, -ETIMEDOUT or -errno.
int wait_fd(int fd, short events, int64_t deadline_ms) {
    for (;;) {
        int64_t left = deadline_ms - now_ms();
        if (left <= 0) return -ETIMEDOUT;
        struct pollfd p = {fd, events, 0};
        int r = poll(&p, 1, int(std::min<int64_t>(left, 1 << 30)));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -errno;
        if (r > 0) return 0;
    }
}

int connect_one(int family, const struct sockaddr *sa, socklen_t len, int timeout_s, UniqueFd *out) {
    UniqueFd fd(socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) return -errno;
    if (connect(fd.get(), sa, len) < 0) {
        if (errno != EINPROGRESS) return -errno;
        int r = wait_fd(fd.get(), POLLOUT, now_ms() + timeout_s * 1000LL);
        if (r < 0) return r;
        int err = 0;
        socklen_t el = sizeof(err);
        if (getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &el) < 0) return -errno;
        if (err) return -err;
    }
    if (family != AF_UNIX) {
        // Requests are small and latency-bound: no Nagle delay.
        int one = 1;
        setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    *out = std::move(fd);
    return 0;
}

// The handshake over the socket, with a deadline per call.
struct FdTransport : Transport {
    int fd;
    int timeout_s;
    FdTransport(int f, int t) : fd(f), timeout_s(t) {}
    int read_exact(void *buf, size_t len) override {
        auto *p = static_cast<uint8_t *>(buf);
        int64_t deadline = now_ms() + timeout_s * 1000LL;
        while (len) {
            ssize_t n = recv(fd, p, len, 0);
            if (n == 0) return -EPIPE;
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno != EAGAIN) return errno == ECONNRESET ? -EPIPE : -errno;
                if (int r = wait_fd(fd, POLLIN, deadline)) return r;
                continue;
            }
            p += n;
            len -= n;
        }
        return 0;
    }
    int write_all(const void *buf, size_t len) override {
        auto *p = static_cast<const uint8_t *>(buf);
        int64_t deadline = now_ms() + timeout_s * 1000LL;
        while (len) {
            ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno != EAGAIN) return (errno == EPIPE || errno == ECONNRESET) ? -EPIPE : -errno;
                if (int r = wait_fd(fd, POLLOUT, deadline)) return r;
                continue;
            }
            p += n;
            len -= n;
        }
        return 0;
    }
};

}  // namespace

Result<UniqueFd> connect_to(const Address &a, int timeout_s) {
    std::string ctx = "Could not connect to the NBD server at " + a.describe();
    UniqueFd fd;
    if (a.is_unix) {
        struct sockaddr_un sun = {};
        sun.sun_family = AF_UNIX;
        if (a.path.empty() || a.path.size() >= sizeof(sun.sun_path))
            return Status::Error(EINVAL, "Invalid NBD socket path '" + a.path + "'");
        memcpy(sun.sun_path, a.path.c_str(), a.path.size() + 1);
        int r = connect_one(AF_UNIX, reinterpret_cast<struct sockaddr *>(&sun), sizeof(sun), timeout_s, &fd);
        if (r < 0) return PosixError(ctx, -r);
        return fd;
    }
    struct addrinfo hints = {};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    struct addrinfo *res = nullptr;
    int g = getaddrinfo(a.host.c_str(), a.port.c_str(), &hints, &res);
    if (g != 0) return Status::Error(EINVAL, ctx + ": " + gai_strerror(g));
    int r = -EHOSTUNREACH;
    for (auto *ai = res; ai; ai = ai->ai_next) {
        r = connect_one(ai->ai_family, ai->ai_addr, ai->ai_addrlen, timeout_s, &fd);
        if (r == 0) break;
    }
    freeaddrinfo(res);
    if (r < 0) return PosixError(ctx, -r);
    return fd;
}

Result<ExportInfo> handshake_fd(int fd, const std::string &export_name, int timeout_s) {
    FdTransport t(fd, timeout_s);
    return handshake(t, export_name);
}

// --- the connection on the event loop ---------------------------------------------

struct Client::SourceWrap {
    GSource src;
    Client *client;  // the client destroys this source before it goes
};

gboolean Client::dispatch(GSource *src, GSourceFunc, gpointer) {
    auto *w = reinterpret_cast<SourceWrap *>(src);
    Client *c = w->client;
    c->on_io(g_source_query_unix_fd(src, c->tag_));
    return G_SOURCE_CONTINUE;
}

namespace {
GSourceFuncs client_source_funcs = {nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
}

std::shared_ptr<Client> Client::create(UniqueFd fd, const ExportInfo &info, std::string server,
                                       int timeout_s) {
    std::shared_ptr<Client> c(new Client(std::move(fd), info, std::move(server), timeout_s));
    client_source_funcs.dispatch = &Client::dispatch;
    c->source_ = g_source_new(&client_source_funcs, sizeof(SourceWrap));
    reinterpret_cast<SourceWrap *>(c->source_)->client = c.get();
    c->tag_ = g_source_add_unix_fd(c->source_, c->fd_.get(), GIOCondition(G_IO_IN | G_IO_HUP | G_IO_ERR));
    g_source_attach(c->source_, AioContext::main().gcontext());
    return c;
}

Client::Client(UniqueFd fd, const ExportInfo &info, std::string server, int timeout_s)
    : fd_(std::move(fd)),
      info_(info),
      server_(std::move(server)),
      timeout_s_(timeout_s),
      parser_(
          info.structured,
          [this](uint64_t cookie) -> ReplyTarget * {
              auto it = reqs_.find(cookie);
              return it == reqs_.end() ? nullptr : &it->second->t;
          },
          [this](uint64_t cookie, ReplyTarget *) {
              auto it = reqs_.find(cookie);
              Req *r = it->second;
              reqs_.erase(it);
              r->done = true;
              if (r->waiter) completed_.push_back(std::exchange(r->waiter, nullptr));
          }),
      inbuf_(256 * 1024) {}

Client::~Client() { shutdown(); }

void Client::shutdown() {
    if (fd_ && !dead_ && reqs_.empty() && !send_lock_.locked()) {
        // A polite goodbye; if the socket cannot take it now, never mind.
        uint8_t h[REQUEST_SIZE];
        encode_request(h, 0, CMD_DISC, next_cookie_++, 0, 0);
        ssize_t n = send(fd_.get(), h, sizeof(h), MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)n;
    }
    if (!dead_) fail("");
}

void Client::fail(const std::string &why) {
    if (dead_) return;
    dead_ = true;
    error_ = why;
    // An idle connection that the server closes troubles no one until it is
    // used: then request() says so, once.
    if (!why.empty() && (!reqs_.empty() || !parser_.idle()))
        warn_report("NBD server " + server_ + ": " + why + "; connection closed");
    else if (!why.empty()) untold_ = true;
    if (timer_) {
        g_source_destroy(timer_);
        g_source_unref(timer_);
        timer_ = nullptr;
    }
    if (source_) {
        g_source_destroy(source_);
        g_source_unref(source_);
        source_ = nullptr;
    }
    fd_.reset();
    // Every request in flight fails; the sender waiting for room too.
    std::vector<std::coroutine_handle<>> wake;
    for (auto &[cookie, r] : reqs_) {
        if (!r->t.error) {
            r->t.error = -EIO;
            r->t.message = why;
        }
        r->done = true;
        if (r->waiter) wake.push_back(std::exchange(r->waiter, nullptr));
    }
    reqs_.clear();
    if (send_waiter_) wake.push_back(std::exchange(send_waiter_, nullptr));
    // Resumed from the loop: fail() may run inside one of these coroutines.
    for (auto h : wake) AioContext::main().schedule(h);
}

void Client::begin_request() {
    if (active_++ == 0) {
        last_progress_us_ = g_get_monotonic_time();
        // Checked a few times per timeout period, only while busy.
        guint interval = std::max(50, std::min(1000, timeout_s_ * 250));
        timer_ = g_timeout_source_new(interval);
        g_source_set_callback(timer_, &Client::timer_cb, this, nullptr);
        g_source_attach(timer_, AioContext::main().gcontext());
    }
}

void Client::end_request() {
    if (--active_ == 0 && timer_) {
        g_source_destroy(timer_);
        g_source_unref(timer_);
        timer_ = nullptr;
    }
}

gboolean Client::timer_cb(gpointer opaque) {
    auto *c = static_cast<Client *>(opaque);
    if (g_get_monotonic_time() - c->last_progress_us_ > int64_t(c->timeout_s_) * 1000000) {
        auto keep = c->shared_from_this();
        c->fail("no reply within " + std::to_string(c->timeout_s_) + " seconds (option 'timeout')");
        return G_SOURCE_REMOVE;  // fail() destroyed it already; harmless
    }
    return G_SOURCE_CONTINUE;
}

void Client::WritableAwaiter::await_suspend(std::coroutine_handle<> h) {
    c.send_waiter_ = h;
    if (!c.want_out_) {
        c.want_out_ = true;
        g_source_modify_unix_fd(c.source_, c.tag_, GIOCondition(G_IO_IN | G_IO_OUT | G_IO_HUP | G_IO_ERR));
    }
}

void Client::on_io(GIOCondition cond) {
    auto keep = shared_from_this();  // a resumed request may close the node
    if ((cond & G_IO_OUT) && send_waiter_) {
        want_out_ = false;
        g_source_modify_unix_fd(source_, tag_, GIOCondition(G_IO_IN | G_IO_HUP | G_IO_ERR));
        std::exchange(send_waiter_, nullptr).resume();
        if (dead_) return;
    }
    if (cond & (G_IO_IN | G_IO_HUP | G_IO_ERR)) read_input();
}

void Client::read_input() {
    for (;;) {
        ssize_t n = recv(fd_.get(), inbuf_.data(), inbuf_.size(), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) break;
        if (n <= 0) {
            std::string why = n == 0 ? "the server closed the connection" : std::string("receive failed: ") + g_strerror(errno);
            if (!parser_.idle()) why += " in the middle of a reply";
            fail(why);
            return;
        }
        last_progress_us_ = g_get_monotonic_time();
        parser_.feed(inbuf_.data(), size_t(n));
        if (parser_.failed()) {
            fail("protocol violation: the server sent " + parser_.error());
            // Requests the parser completed before the violation keep their
            // result (fail() does not touch them), and are resumed below.
        }
        // Resumed after parsing: a request may start another one, or close
        // the node, which must not happen under the parser.
        // Requests these start are corked: their headers go out in one
        // send below rather than one system call (and server wake-up) each.
        auto batch = std::move(completed_);
        completed_.clear();
        corked_ = true;
        for (auto h : batch) h.resume();
        corked_ = false;
        if (!dead_) uncork();
        if (dead_) break;
    }
}

void Client::uncork() {
    if (cork_.empty()) return;
    if (!send_lock_.locked()) {
        ssize_t n;
        do n = send(fd_.get(), cork_.data(), cork_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        while (n < 0 && errno == EINTR);
        if (n < 0 && errno != EAGAIN) return fail(std::string("send failed: ") + g_strerror(errno));
        if (n > 0) {
            last_progress_us_ = g_get_monotonic_time();
            cork_.erase(cork_.begin(), cork_.begin() + n);
        }
        if (cork_.empty()) return;
    }
    // The rest waits its turn behind whoever is sending (never into the
    // middle of another request).
    spawn(send_corked(std::move(cork_)));
    cork_.clear();
}

Task<void> Client::send_corked(std::vector<uint8_t> bytes) {
    auto keep = shared_from_this();
    co_await send_lock_.lock();
    ::iovec iov = {bytes.data(), bytes.size()};
    (void)co_await send_all(&iov, 1);  // a failure fails every request
    send_lock_.unlock();
}

Task<int> Client::send_all(struct iovec *iov, int iovcnt) {
    while (iovcnt > 0) {
        if (dead_) co_return -EIO;
        struct msghdr m = {};
        m.msg_iov = iov;
        m.msg_iovlen = iovcnt;
        ssize_t n = sendmsg(fd_.get(), &m, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                co_await WritableAwaiter{*this};
                continue;
            }
            fail(std::string("send failed: ") + g_strerror(errno));
            co_return -EIO;
        }
        last_progress_us_ = g_get_monotonic_time();
        while (iovcnt > 0 && size_t(n) >= iov->iov_len) {
            n -= iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = static_cast<uint8_t *>(iov->iov_base) + n;
            iov->iov_len -= n;
        }
    }
    co_return 0;
}

Task<int> Client::request(uint16_t cmd, uint16_t flags, uint64_t offset, uint32_t length,
                          const uint8_t *wbuf, uint8_t *rbuf) {
    if (dead_) {
        if (std::exchange(untold_, false)) warn_report("NBD server " + server_ + ": " + error_ + "; connection closed");
        co_return -EIO;
    }
    auto keep = shared_from_this();
    Req r;
    r.t.cmd = cmd;
    r.t.offset = offset;
    r.t.length = length;
    r.t.buf = rbuf;
    begin_request();
    co_await send_lock_.lock();
    if (dead_) {
        send_lock_.unlock();
        end_request();
        co_return -EIO;
    }
    uint64_t cookie = next_cookie_++;
    reqs_.emplace(cookie, &r);
    uint8_t hdr[REQUEST_SIZE];
    encode_request(hdr, flags, cmd, cookie, offset, length);
    int ret = 0;
    if (corked_ && !wbuf) {
        cork_.insert(cork_.end(), hdr, hdr + sizeof(hdr));
    } else {
        struct iovec iov[2] = {{hdr, sizeof(hdr)}, {const_cast<uint8_t *>(wbuf), wbuf ? length : 0}};
        ret = co_await send_all(iov, wbuf ? 2 : 1);
    }
    send_lock_.unlock();
    if (ret < 0 && !r.done) {
        // fail() has completed every request; this one is no longer listed.
        reqs_.erase(cookie);
        r.done = true;
    }
    co_await ReplyAwaiter{r};
    end_request();
    // A server-reported error (say EIO injected by nbdkit) is the request's
    // own and leaves the connection usable; its message, if any, is worth
    // showing (a dead connection has said why already).
    if (r.t.error && !r.t.message.empty() && !dead_) warn_report("NBD server " + server_ + ": " + r.t.message);
    co_return r.t.error;
}

}  // namespace mb::nbd
