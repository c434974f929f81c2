// One NBD connection: connect and handshake (blocking, bounded by a
// timeout: they run in open), then transmission on the node's event loop
// through the driver ABI's loop services (mbd_fd_watch, mbd_timer_*), so the
// nbd plugin needs nothing of the core's internals.
//
// Transmission: request() queues a request header (and a write's payload)
// on an output queue, written as the non-blocking socket takes it, never
// one request into the middle of another; replies are parsed as they arrive
// (nbd-proto.h) and complete requests in any order, by cookie.  Many
// requests are in flight at once.  Request headers queued while replies are
// being handled go out together in one send (a batch of QD requests costs
// one system call and one server wake-up, not QD).
//
// A request's callback runs on the loop, never inside request(), and only
// once the request is both answered and fully sent (a hostile server may
// answer a write early: its payload is the caller's until then).
//
// Failure model: a protocol violation, a dropped connection or a silent
// server (no progress for `timeout` seconds while requests are pending)
// closes the connection; every pending and later request fails with -EIO,
// and the reason is reported once as a warning (the data plane has only an
// errno to give).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "block/drivers/nbd-proto.h"
#include "block/unique-fd.h"
#include "miniblock/driver.h"
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
// socket in non-blocking mode.
Result<UniqueFd> connect_to(const Address &a, int timeout_s);

// The handshake on a freshly connected socket, each read and write bounded
// by timeout_s.
Result<ExportInfo> handshake_fd(int fd, const std::string &export_name, int timeout_s);

class Client : public std::enable_shared_from_this<Client> {
public:
    using Callback = std::function<void(int ret)>;

    // Takes over a connected socket whose handshake is done, watched on
    // `loop`.  nullptr (after mbd_error) when the loop refuses the watch.
    static std::shared_ptr<Client> create(mbd_loop *loop, UniqueFd fd, const ExportInfo &info,
                                          std::string server, int timeout_s);
    ~Client();
    Client(const Client &) = delete;
    Client &operator=(const Client &) = delete;

    // One request of at most info().max_block bytes (writes and reads),
    // aligned as the caller made it; cb(0 or negative errno) later.  wbuf
    // and rbuf stay the caller's until cb runs, or until forget(tag) for
    // the tag given here (any value; nullptr: none).
    void request(uint16_t cmd, uint16_t flags, uint64_t offset, uint32_t length, const uint8_t *wbuf,
                 uint8_t *rbuf, Callback cb, const void *tag = nullptr);
    // The buffers of the requests tagged `tag` are no longer the caller's
    // (the core timed the request out): a reply still to come is read into
    // scratch memory of the request's and dropped, and a payload not yet
    // all sent is copied first (the stream cannot skip it).  Their
    // callbacks still run.
    void forget(const void *tag);

    // Sends NBD_CMD_DISC if the socket is idle, then closes it; what is in
    // flight fails.
    void shutdown();
    // shutdown(), and the callbacks of what was in flight never run: for a
    // node closing while the core has given up on requests (its
    // request-timeout), whose callbacks would find the node gone.
    void abandon();

    const ExportInfo &info() const { return info_; }
    bool dead() const { return dead_; }
    // Alive with nothing in flight (so it can be handed to another node).
    bool idle() const { return !dead_ && reqs_.empty() && out_.empty(); }
    const std::string &error() const { return error_; }

private:
    struct Req {
        ReplyTarget t;
        Callback cb;
        bool sent = false;
        bool replied = false;
        const void *tag = nullptr;
        std::unique_ptr<uint8_t[]> scratch;  // after forget(): where a reply goes
    };
    // Bytes to send: a header (owned), then maybe a payload (the caller's).
    struct Out {
        uint8_t hdr[REQUEST_SIZE];
        const uint8_t *payload = nullptr;
        uint32_t payload_len = 0;
        size_t done = 0;  // bytes of hdr + payload already sent
        uint64_t cookie = 0;
        const void *tag = nullptr;
        std::vector<uint8_t> owned;  // after forget(): the payload's copy
    };

    Client(mbd_loop *loop, UniqueFd fd, const ExportInfo &info, std::string server, int timeout_s);
    static void on_fd(void *opaque, int fd, int revents);
    static void on_timer(void *opaque);
    static void on_deferred(void *opaque);
    void read_input();
    void flush_output();
    void fail(const std::string &why);
    void finish(uint64_t cookie);
    void run_completed();
    void update_watch();
    void progress();

    mbd_loop *loop_;
    UniqueFd fd_;
    ExportInfo info_;
    std::string server_;
    int timeout_s_;
    bool dead_ = false;
    std::string error_;
    bool untold_ = false;  // died idle; the next request reports error_

    mbd_watch *watch_ = nullptr;
    int watching_ = 0;  // MBD_FD_* asked for
    mbd_timer *timer_ = nullptr;     // the progress check, armed while busy
    mbd_timer *deferred_ = nullptr;  // runs callbacks of failed requests
    int64_t last_progress_ns_ = 0;

    uint64_t next_cookie_ = 1;
    std::unordered_map<uint64_t, std::unique_ptr<Req>> reqs_;
    std::deque<Out> out_;
    bool corked_ = false;  // while running callbacks: their requests wait
    ReplyParser parser_;
    std::vector<uint8_t> inbuf_;
    // Finished requests, their callbacks to run outside the parser.
    std::vector<std::pair<Callback, int>> completed_;
};

}  // namespace mb::nbd
