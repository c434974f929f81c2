// One NBD connection in transmission: a non-blocking socket watched by a
// GSource on the block layer's GMainContext.  Requests are coroutines: each
// registers under a cookie, writes its request under a CoMutex (so requests
// never interleave on the wire) and suspends; the socket's input callback
// feeds the reply parser, which completes requests in any order.  Many
// requests are in flight at once.
//
// Failure model: a protocol violation, a dropped connection or a silent
// server (no progress for `timeout` seconds while requests are pending)
// closes the connection; every pending and later request fails with -EIO,
// and the reason is reported once as a warning (the data plane has only an
// errno to give).
#pragma once

#include <glib.h>
#include <sys/uio.h>

#include <coroutine>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "block/coroutine.h"
#include "block/drivers/nbd-proto.h"
#include "block/unique-fd.h"
#include "miniblock/status.h"

namespace mb::nbd {

struct Address {
    bool is_unix = true;
    std::string path;  // unix
    std::string host;  // inet
    std::string port = "10809";
    std::string describe() const { return is_unix ? "unix:" + path : host + ":" + port; }
};

// Connects (non-blocking connect, bounded by timeout_s) and returns the
// socket in blocking-free mode.
Result<UniqueFd> connect_to(const Address &a, int timeout_s);

// The handshake on a freshly connected socket, each read and write bounded
// by timeout_s.
Result<ExportInfo> handshake_fd(int fd, const std::string &export_name, int timeout_s);

class Client : public std::enable_shared_from_this<Client> {
public:
    // Takes over a connected socket whose handshake is done.
    static std::shared_ptr<Client> create(UniqueFd fd, const ExportInfo &info, std::string server,
                                          int timeout_s);
    ~Client();

    // One request of at most info().max_block bytes (writes and reads),
    // aligned as the caller made it.  0 or negative errno.
    Task<int> request(uint16_t cmd, uint16_t flags, uint64_t offset, uint32_t length,
                      const uint8_t *wbuf, uint8_t *rbuf);

    // Sends NBD_CMD_DISC if the socket is idle, then closes it.
    void shutdown();

    const ExportInfo &info() const { return info_; }
    bool dead() const { return dead_; }
    // Alive with nothing in flight (so it can be handed to another node).
    bool idle() const { return !dead_ && active_ == 0 && !send_lock_.locked(); }
    const std::string &error() const { return error_; }

private:
    struct Req {
        ReplyTarget t;
        std::coroutine_handle<> waiter;
        bool done = false;
    };
    struct ReplyAwaiter {
        Req &r;
        bool await_ready() const noexcept { return r.done; }
        void await_suspend(std::coroutine_handle<> h) { r.waiter = h; }
        void await_resume() const noexcept {}
    };
    struct WritableAwaiter {
        Client &c;
        bool await_ready() const noexcept { return c.dead_; }
        void await_suspend(std::coroutine_handle<> h);
        void await_resume() const noexcept {}
    };
    struct SourceWrap;

    Client(UniqueFd fd, const ExportInfo &info, std::string server, int timeout_s);
    Task<int> send_all(::iovec *iov, int iovcnt);
    void uncork();
    Task<void> send_corked(std::vector<uint8_t> bytes);
    void on_io(GIOCondition cond);
    void read_input();
    void fail(const std::string &why);
    void begin_request();
    void end_request();
    static gboolean timer_cb(gpointer opaque);
    static gboolean dispatch(GSource *src, GSourceFunc, gpointer);

    UniqueFd fd_;
    ExportInfo info_;
    std::string server_;
    int timeout_s_;
    bool dead_ = false;
    std::string error_;
    bool untold_ = false;  // died idle; the next request reports error_

    GSource *source_ = nullptr;
    gpointer tag_ = nullptr;
    bool want_out_ = false;
    std::coroutine_handle<> send_waiter_;
    GSource *timer_ = nullptr;
    int64_t last_progress_us_ = 0;
    int active_ = 0;  // requests started and not finished (for the timer)

    CoMutex send_lock_;
    uint64_t next_cookie_ = 1;
    std::unordered_map<uint64_t, Req *> reqs_;
    ReplyParser parser_;
    std::vector<uint8_t> inbuf_;
    std::vector<std::coroutine_handle<>> completed_;  // resumed after parsing
    bool corked_ = false;        // while resuming completed requests
    std::vector<uint8_t> cork_;  // their request headers, sent together
};

}  // namespace mb::nbd
