// One NBD connection: connect, handshake, and requests in flight on the
// node's event loop through the driver ABI (see nbd-client.h).
#include "block/drivers/nbd-client.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <chrono>

#include <cstring>

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

namespace {

int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

}  // namespace

std::shared_ptr<Client> Client::create(mbd_loop *loop, UniqueFd fd, const ExportInfo &info,
                                       std::string server, int timeout_s) {
    std::shared_ptr<Client> c(new Client(loop, std::move(fd), info, std::move(server), timeout_s));
    c->watch_ = mbd_fd_watch(loop, c->fd_.get(), MBD_FD_READ, &Client::on_fd, c.get());
    if (!c->watch_) return nullptr;
    c->watching_ = MBD_FD_READ;
    c->timer_ = mbd_timer_new(loop, &Client::on_timer, c.get());
    c->deferred_ = mbd_timer_new(loop, &Client::on_deferred, c.get());
    if (!c->timer_ || !c->deferred_) {
        mbd_error(ENOMEM, "Could not create the timers of the NBD connection to %s", c->server_.c_str());
        return nullptr;
    }
    return c;
}

Client::Client(mbd_loop *loop, UniqueFd fd, const ExportInfo &info, std::string server, int timeout_s)
    : loop_(loop),
      fd_(std::move(fd)),
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
              Req &r = *reqs_.at(cookie);
              r.replied = true;
              if (r.sent) finish(cookie);
          }),
      inbuf_(256 * 1024) {}

Client::~Client() {
    shutdown();
    // Callbacks still queued are dropped with the client: only a node with
    // nothing in flight lets go of its client.
    if (timer_) mbd_timer_free(timer_);
    if (deferred_) mbd_timer_free(deferred_);
}

void Client::shutdown() {
    if (fd_ && !dead_ && reqs_.empty() && out_.empty()) {
        // A polite goodbye; if the socket cannot take it now, never mind.
        uint8_t h[REQUEST_SIZE];
        encode_request(h, 0, CMD_DISC, next_cookie_++, 0, 0);
        ssize_t n = send(fd_.get(), h, sizeof(h), MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)n;
    }
    if (!dead_) fail("");
}

void Client::abandon() {
    shutdown();
    completed_.clear();
}

void Client::fail(const std::string &why) {
    if (dead_) return;
    dead_ = true;
    error_ = why;
    // An idle connection that the server closes troubles no one until it is
    // used: then request() says so, once.
    if (!why.empty() && (!reqs_.empty() || !parser_.idle()))
        mbd_warning("NBD server %s: %s; connection closed", server_.c_str(), why.c_str());
    else if (!why.empty())
        untold_ = true;
    if (watch_) mbd_fd_unwatch(watch_);
    watch_ = nullptr;
    if (timer_) mbd_timer_cancel(timer_);
    fd_.reset();
    out_.clear();  // no payload of a caller is touched again
    // Every request in flight fails (a server-reported error stays its own).
    for (auto &[cookie, r] : reqs_) completed_.emplace_back(std::move(r->cb), r->t.error ? r->t.error : -EIO);
    reqs_.clear();
    // Run from the loop: fail() may be called from inside a callback.
    if (!completed_.empty() && deferred_) mbd_timer_arm(deferred_, 0);
}

void Client::finish(uint64_t cookie) {
    auto it = reqs_.find(cookie);
    std::unique_ptr<Req> r = std::move(it->second);
    reqs_.erase(it);
    // A server-reported error (say EIO injected by nbdkit) is the request's
    // own and leaves the connection usable; its message, if any, is worth
    // showing.
    if (r->t.error && !r->t.message.empty())
        mbd_warning("NBD server %s: %s", server_.c_str(), r->t.message.c_str());
    completed_.emplace_back(std::move(r->cb), r->t.error);
    if (reqs_.empty() && timer_) mbd_timer_cancel(timer_);
}

void Client::run_completed() {
    auto keep = shared_from_this();  // a callback may close the node
    while (!completed_.empty()) {
        auto batch = std::move(completed_);
        completed_.clear();
        // Requests these callbacks start are corked: their headers go out
        // in one send below rather than one system call each.
        corked_ = true;
        for (auto &[cb, ret] : batch) cb(ret);
        corked_ = false;
        if (!dead_) flush_output();
    }
}

void Client::progress() { last_progress_ns_ = now_ns(); }

void Client::on_timer(void *opaque) {
    auto *c = static_cast<Client *>(opaque);
    auto keep = c->shared_from_this();
    if (c->dead_ || c->reqs_.empty()) return;
    if (now_ns() - c->last_progress_ns_ > int64_t(c->timeout_s_) * 1'000'000'000) {
        c->fail("no reply within " + std::to_string(c->timeout_s_) + " seconds (option 'timeout')");
    } else {
        // Checked a few times per timeout period, only while busy.
        mbd_timer_arm(c->timer_, uint64_t(std::clamp(c->timeout_s_ * 250, 50, 1000)) * 1'000'000);
    }
    c->run_completed();
}

void Client::on_deferred(void *opaque) {
    auto *c = static_cast<Client *>(opaque);
    c->run_completed();
}

void Client::on_fd(void *opaque, int, int revents) {
    auto *c = static_cast<Client *>(opaque);
    auto keep = c->shared_from_this();
    if (revents & MBD_FD_WRITE) c->flush_output();
    if (!c->dead_ && (revents & (MBD_FD_READ | MBD_FD_ERROR))) c->read_input();
    c->run_completed();
}

void Client::read_input() {
    for (;;) {
        ssize_t n = recv(fd_.get(), inbuf_.data(), inbuf_.size(), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n <= 0) {
            std::string why = n == 0 ? "the server closed the connection" : std::string("receive failed: ") + strerror(errno);
            if (!parser_.idle()) why += " in the middle of a reply";
            return fail(why);
        }
        progress();
        parser_.feed(inbuf_.data(), size_t(n));
        // Requests the parser completed before a violation keep their
        // result (fail() does not touch them).
        if (parser_.failed()) return fail("protocol violation: the server sent " + parser_.error());
        if (size_t(n) < inbuf_.size()) return;  // drained; the watch says when there is more
    }
}

void Client::update_watch() {
    int want = MBD_FD_READ | (out_.empty() ? 0 : MBD_FD_WRITE);
    if (watch_ && want != watching_) {
        mbd_fd_watch_set(watch_, want);
        watching_ = want;
    }
}

void Client::flush_output() {
    while (!out_.empty() && !dead_) {
        // Up to 32 queued requests per sendmsg: header, then payload.
        struct iovec iov[64];
        int cnt = 0;
        for (auto it = out_.begin(); it != out_.end() && cnt < 63; ++it) {
            size_t skip = it->done;
            if (skip < REQUEST_SIZE) {
                iov[cnt++] = {it->hdr + skip, REQUEST_SIZE - skip};
                skip = 0;
            } else {
                skip -= REQUEST_SIZE;
            }
            if (it->payload_len > skip)
                iov[cnt++] = {const_cast<uint8_t *>(it->payload) + skip, it->payload_len - skip};
        }
        struct msghdr m = {};
        m.msg_iov = iov;
        m.msg_iovlen = size_t(cnt);
        ssize_t n = sendmsg(fd_.get(), &m, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n < 0) return fail(std::string("send failed: ") + strerror(errno));
        progress();
        size_t left = size_t(n);
        while (left > 0) {
            Out &o = out_.front();
            size_t total = REQUEST_SIZE + o.payload_len;
            size_t take = std::min(left, total - o.done);
            o.done += take;
            left -= take;
            if (o.done < total) break;
            uint64_t cookie = o.cookie;
            out_.pop_front();
            Req &r = *reqs_.at(cookie);
            r.sent = true;
            if (r.replied) finish(cookie);
        }
    }
    update_watch();
}

void Client::forget(const void *tag) {
    for (auto &[cookie, r] : reqs_) {
        if (r->tag != tag || !r->t.buf) continue;
        r->scratch.reset(new uint8_t[r->t.length ? r->t.length : 1]);
        parser_.rebase(&r->t, r->scratch.get());
    }
    for (Out &o : out_) {
        if (o.tag != tag || !o.payload) continue;
        o.owned.assign(o.payload, o.payload + o.payload_len);
        o.payload = o.owned.data();
    }
}

void Client::request(uint16_t cmd, uint16_t flags, uint64_t offset, uint32_t length, const uint8_t *wbuf,
                     uint8_t *rbuf, Callback cb, const void *tag) {
    if (dead_) {
        if (std::exchange(untold_, false))
            mbd_warning("NBD server %s: %s; connection closed", server_.c_str(), error_.c_str());
        completed_.emplace_back(std::move(cb), -EIO);
        mbd_timer_arm(deferred_, 0);
        return;
    }
    if (reqs_.empty()) {
        progress();
        mbd_timer_arm(timer_, uint64_t(std::clamp(timeout_s_ * 250, 50, 1000)) * 1'000'000);
    }
    uint64_t cookie = next_cookie_++;
    auto r = std::make_unique<Req>();
    r->t.cmd = cmd;
    r->t.offset = offset;
    r->t.length = length;
    r->t.buf = rbuf;
    r->cb = std::move(cb);
    r->tag = tag;
    reqs_.emplace(cookie, std::move(r));
    Out &o = out_.emplace_back();
    encode_request(o.hdr, flags, cmd, cookie, offset, length);
    o.payload = wbuf;
    o.payload_len = wbuf ? length : 0;
    o.cookie = cookie;
    o.tag = tag;
    if (corked_) return;
    flush_output();
    // Sending may have finished an earlier request answered early.
    if (!completed_.empty()) mbd_timer_arm(deferred_, 0);
}

}  // namespace mb::nbd
