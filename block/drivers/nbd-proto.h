// The NBD wire format (NetworkBlockDevice/nbd doc/proto.md), client side:
// the fixed-newstyle handshake and an incremental parser of transmission
// replies.  Nothing here touches a socket or the event loop, so both are
// unit-tested and fuzzed on byte strings (tests/unit/test-nbd-proto.cpp,
// tests/fuzz/fuzz-nbd.cpp).
//
// Everything a server sends is hostile until checked: every length is
// bounded before anything is allocated or copied, and data chunks are
// copied only into the range of the request they answer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <string>

#include "miniblock/status.h"

namespace mb::nbd {

// --- constants ---------------------------------------------------------------

inline constexpr uint64_t NBDMAGIC = 0x4e42444d41474943ULL;   // "NBDMAGIC"
inline constexpr uint64_t IHAVEOPT = 0x49484156454F5054ULL;   // "IHAVEOPT"
inline constexpr uint64_t OLDSTYLE_MAGIC = 0x00420281861253ULL;
inline constexpr uint64_t REP_MAGIC = 0x3e889045565a9ULL;     // option replies
inline constexpr uint32_t REQUEST_MAGIC = 0x25609513;
inline constexpr uint32_t SIMPLE_REPLY_MAGIC = 0x67446698;
inline constexpr uint32_t STRUCTURED_REPLY_MAGIC = 0x668e33ef;

inline constexpr uint16_t FLAG_FIXED_NEWSTYLE = 1 << 0;  // handshake flags
inline constexpr uint16_t FLAG_NO_ZEROES = 1 << 1;

enum : uint32_t {
    OPT_EXPORT_NAME = 1,
    OPT_ABORT = 2,
    OPT_GO = 7,
    OPT_STRUCTURED_REPLY = 8,
};

enum : uint32_t {
    REP_ACK = 1,
    REP_INFO = 3,
    REP_FLAG_ERROR = 1u << 31,
    REP_ERR_UNSUP = REP_FLAG_ERROR + 1,
    REP_ERR_POLICY = REP_FLAG_ERROR + 2,
    REP_ERR_INVALID = REP_FLAG_ERROR + 3,
    REP_ERR_PLATFORM = REP_FLAG_ERROR + 4,
    REP_ERR_TLS_REQD = REP_FLAG_ERROR + 5,
    REP_ERR_UNKNOWN = REP_FLAG_ERROR + 6,
    REP_ERR_SHUTDOWN = REP_FLAG_ERROR + 7,
    REP_ERR_BLOCK_SIZE_REQD = REP_FLAG_ERROR + 8,
    REP_ERR_TOO_BIG = REP_FLAG_ERROR + 9,
};

enum : uint16_t {
    INFO_EXPORT = 0,
    INFO_BLOCK_SIZE = 3,
};

// Transmission flags.
enum : uint16_t {
    TF_HAS_FLAGS = 1 << 0,
    TF_READ_ONLY = 1 << 1,
    TF_SEND_FLUSH = 1 << 2,
    TF_SEND_FUA = 1 << 3,
    TF_ROTATIONAL = 1 << 4,
    TF_SEND_TRIM = 1 << 5,
    TF_SEND_WRITE_ZEROES = 1 << 6,
    TF_SEND_DF = 1 << 7,
    TF_CAN_MULTI_CONN = 1 << 8,
};

enum : uint16_t {
    CMD_READ = 0,
    CMD_WRITE = 1,
    CMD_DISC = 2,
    CMD_FLUSH = 3,
    CMD_TRIM = 4,
    CMD_WRITE_ZEROES = 6,
};

enum : uint16_t {
    CMD_FLAG_FUA = 1 << 0,
    CMD_FLAG_NO_HOLE = 1 << 1,
};

inline constexpr uint16_t REPLY_FLAG_DONE = 1 << 0;
enum : uint16_t {
    REPLY_TYPE_NONE = 0,
    REPLY_TYPE_OFFSET_DATA = 1,
    REPLY_TYPE_OFFSET_HOLE = 2,
    REPLY_TYPE_BLOCK_STATUS = 5,
    REPLY_TYPE_ERROR = (1 << 15) + 1,
    REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2,
};

inline constexpr size_t REQUEST_SIZE = 28;
inline constexpr uint32_t MAX_STRING = 4096;  // export names, error messages
// When the server does not say (INFO_BLOCK_SIZE absent): the spec's defaults.
inline constexpr uint32_t DEFAULT_MIN_BLOCK = 1;
inline constexpr uint32_t DEFAULT_PREF_BLOCK = 4096;
inline constexpr uint32_t DEFAULT_MAX_BLOCK = 32u << 20;

// --- big-endian helpers --------------------------------------------------------

inline uint16_t get16(const uint8_t *p) { return uint16_t(p[0] << 8 | p[1]); }
inline uint32_t get32(const uint8_t *p) { return uint32_t(get16(p)) << 16 | get16(p + 2); }
inline uint64_t get64(const uint8_t *p) { return uint64_t(get32(p)) << 32 | get32(p + 4); }
inline void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = uint8_t(v); }
inline void put32(uint8_t *p, uint32_t v) { put16(p, v >> 16); put16(p + 2, uint16_t(v)); }
inline void put64(uint8_t *p, uint64_t v) { put32(p, v >> 32); put32(p + 4, uint32_t(v)); }

// A request header (28 bytes).
void encode_request(uint8_t out[REQUEST_SIZE], uint16_t flags, uint16_t type, uint64_t cookie,
                    uint64_t offset, uint32_t length);

// An NBD error number as a local errno (unknown values count as EINVAL, as
// the spec asks).
int nbd_errno_to_local(uint32_t err);

// A server-supplied string made safe to print: at most 200 characters,
// control characters as '?'.
std::string printable(const uint8_t *p, size_t n);

// --- handshake ------------------------------------------------------------------

// A blocking byte stream with a deadline (the socket during the handshake,
// or a byte string in tests).  Both return 0 or negative errno: -ETIMEDOUT,
// -EPIPE when the peer closed.
struct Transport {
    virtual ~Transport() = default;
    virtual int read_exact(void *buf, size_t len) = 0;
    virtual int write_all(const void *buf, size_t len) = 0;
};

struct ExportInfo {
    uint64_t size = 0;
    uint16_t flags = 0;  // transmission flags
    uint32_t min_block = DEFAULT_MIN_BLOCK;
    uint32_t pref_block = DEFAULT_PREF_BLOCK;
    uint32_t max_block = DEFAULT_MAX_BLOCK;
    bool structured = false;  // structured replies negotiated
    bool used_go = false;     // false: NBD_OPT_EXPORT_NAME fallback
};

// Negotiates `export_name` over `t`: fixed newstyle, structured replies,
// then NBD_OPT_GO with INFO_BLOCK_SIZE (NBD_OPT_EXPORT_NAME when the server
// answers NBD_REP_ERR_UNSUP).  On success the stream is in transmission.
Result<ExportInfo> handshake(Transport &t, const std::string &export_name);

// --- replies ----------------------------------------------------------------------

// One request as the reply parser sees it; the driver embeds it in its
// request and the parser fills in the result.
struct ReplyTarget {
    uint16_t cmd = 0;
    uint64_t offset = 0;
    uint32_t length = 0;
    uint8_t *buf = nullptr;  // reads: length bytes to fill
    // Results.
    int error = 0;        // first error, negative errno
    std::string message;  // why, when there is more to say than the errno
    uint64_t covered = 0; // read bytes covered by data and hole chunks
    std::map<uint64_t, uint64_t> ranges;  // covered [start, end) of a read
};

// Parses the reply stream incrementally.  `lookup` finds the request of a
// cookie (nullptr: unknown); `done` is called once per request when its
// reply is complete (a simple reply, or a chunk with NBD_REPLY_FLAG_DONE);
// after it the target is not touched again.  A protocol violation stops the
// parser for good (the stream is out of step): failed() and error() say
// why, and the caller closes the connection and fails what is in flight.
class ReplyParser {
public:
    using Lookup = std::function<ReplyTarget *(uint64_t cookie)>;
    using Done = std::function<void(uint64_t cookie, ReplyTarget *t)>;

    ReplyParser(bool structured, Lookup lookup, Done done)
        : structured_(structured), lookup_(std::move(lookup)), done_(std::move(done)) {}

    // Consumes bytes; returns how many were used (all unless failed).
    size_t feed(const uint8_t *p, size_t n);

    bool failed() const { return failed_; }
    const std::string &error() const { return error_; }
    // Between replies: a dropped connection here loses nothing half-read.
    bool idle() const { return state_ == State::Magic && have_ == 0; }
    // The request whose reply is being read, or nullptr.
    ReplyTarget *current() const { return target_; }
    // t's read buffer moves to `to` (its caller gave up on it): the rest
    // of a payload being read for t lands at the same place in `to`.
    void rebase(ReplyTarget *t, uint8_t *to) {
        if (target_ == t && data_dst_ && t->buf) data_dst_ = to + (data_dst_ - t->buf);
        t->buf = to;
    }

private:
    enum class State { Magic, SimpleHeader, SimplePayload, ChunkHeader, ChunkSmall, ChunkOffset, ChunkData };

    void violate(std::string why);
    void need(State s, size_t n) {
        state_ = s;
        want_ = n;
        have_ = 0;
    }
    void header_done();
    void chunk_header_done();
    void chunk_small_done();
    void chunk_finished();
    void reply_finished();
    bool claim_range(uint64_t off, uint64_t len, const char *what);

    bool structured_;
    Lookup lookup_;
    Done done_;
    bool failed_ = false;
    std::string error_;

    State state_ = State::Magic;
    size_t want_ = 4;  // bytes the current state needs in small_
    size_t have_ = 0;
    // Non-data chunk payloads are at most an error message plus fields.
    uint8_t small_[MAX_STRING + 32];

    uint64_t cookie_ = 0;
    ReplyTarget *target_ = nullptr;
    uint16_t chunk_flags_ = 0;
    uint16_t chunk_type_ = 0;
    uint32_t chunk_len_ = 0;
    uint8_t *data_dst_ = nullptr;  // payload copy destination
    uint64_t data_left_ = 0;
};

}  // namespace mb::nbd
