// The NBD wire format: handshake and reply parsing (see nbd-proto.h).
#include "block/drivers/nbd-proto.h"

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <vector>

namespace mb::nbd {

void encode_request(uint8_t out[REQUEST_SIZE], uint16_t flags, uint16_t type, uint64_t cookie,
                    uint64_t offset, uint32_t length) {
    put32(out, REQUEST_MAGIC);
    put16(out + 4, flags);
    put16(out + 6, type);
    put64(out + 8, cookie);
    put64(out + 16, offset);
    put32(out + 24, length);
}

int nbd_errno_to_local(uint32_t err) {
    switch (err) {
    case 1: return EPERM;
    case 5: return EIO;
    case 12: return ENOMEM;
    case 22: return EINVAL;
    case 28: return ENOSPC;
    case 75: return EOVERFLOW;
    case 95: return ENOTSUP;
    case 108: return ESHUTDOWN;
    default: return EINVAL;
    }
}

std::string printable(const uint8_t *p, size_t n) {
    std::string s;
    for (size_t i = 0; i < n && i < 200; i++) s += (p[i] >= 0x20 && p[i] < 0x7f) ? char(p[i]) : '?';
    if (n > 200) s += "...";
    return s;
}

namespace {

std::string hex(uint64_t v) {
    char b[32];
    snprintf(b, sizeof(b), "0x%" PRIx64, v);
    return b;
}

Status violation(const std::string &what) {
    return Status::Error(EIO, "Protocol violation by the NBD server: " + what);
}

Status io_status(int r) {
    if (r == -ETIMEDOUT) return Status::Error(ETIMEDOUT, "The NBD server did not answer the handshake in time");
    if (r == -EPIPE) return Status::Error(EIO, "The NBD server closed the connection during the handshake");
    return PosixError("NBD handshake failed", -r);
}

#define HS_TRY(expr)                          \
    do {                                      \
        int hs_r_ = (expr);                   \
        if (hs_r_ < 0) return io_status(hs_r_); \
    } while (0)

int send_option(Transport &t, uint32_t opt, const std::vector<uint8_t> &data) {
    uint8_t h[16];
    put64(h, IHAVEOPT);
    put32(h + 8, opt);
    put32(h + 12, uint32_t(data.size()));
    if (int r = t.write_all(h, sizeof(h))) return r;
    return data.empty() ? 0 : t.write_all(data.data(), data.size());
}

struct OptReply {
    uint32_t type = 0;
    std::vector<uint8_t> data;
};

// Reads one option reply to `opt`; its payload is bounded (no reply we can
// use is longer than an error message with some fields).
Result<OptReply> read_opt_reply(Transport &t, uint32_t opt) {
    uint8_t h[20];
    HS_TRY(t.read_exact(h, sizeof(h)));
    if (get64(h) != REP_MAGIC) return violation("bad option reply magic " + hex(get64(h)));
    if (get32(h + 8) != opt) {
        return violation("option reply for option " + std::to_string(get32(h + 8)) + " instead of " +
                         std::to_string(opt));
    }
    OptReply r;
    r.type = get32(h + 12);
    uint32_t len = get32(h + 16);
    if (len > MAX_STRING + 64) return violation("option reply of " + std::to_string(len) + " bytes");
    r.data.resize(len);
    if (len) HS_TRY(t.read_exact(r.data.data(), len));
    return r;
}

// The error of an option reply, with the server's message as detail.
Status option_error(const OptReply &r, const std::string &name) {
    Status st;
    switch (r.type) {
    case REP_ERR_UNKNOWN: st = Status::Error(ENOENT, "The NBD server has no export '" + name + "'"); break;
    case REP_ERR_POLICY: st = Status::Error(EACCES, "The NBD server refused access to export '" + name + "'"); break;
    case REP_ERR_TLS_REQD:
        st = Status::Error(ENOTSUP, "The NBD server requires TLS, which miniblock does not support");
        break;
    case REP_ERR_SHUTDOWN: st = Status::Error(ESHUTDOWN, "The NBD server is shutting down"); break;
    default:
        st = Status::Error(EIO, "The NBD server refused export '" + name + "' (error " + hex(r.type) + ")");
    }
    if (!r.data.empty()) st.add_detail("Server message: " + printable(r.data.data(), r.data.size()));
    return st;
}

bool pow2(uint32_t v) { return v && !(v & (v - 1)); }

Status check_export(ExportInfo &info) {
    if (info.size > uint64_t(INT64_MAX)) return violation("export size " + std::to_string(info.size));
    if (!pow2(info.min_block) || info.min_block > 65536)
        return violation("minimum block size " + std::to_string(info.min_block));
    if (!pow2(info.pref_block) || info.pref_block < info.min_block)
        return violation("preferred block size " + std::to_string(info.pref_block));
    if (info.max_block != 0xffffffffu && (info.max_block < info.min_block || info.max_block % info.min_block))
        return violation("maximum block size " + std::to_string(info.max_block));
    // Our own bound on one request's buffer, whatever the server accepts.
    info.max_block = std::min(info.max_block, DEFAULT_MAX_BLOCK);
    info.max_block -= info.max_block % info.min_block;
    return Status::OK();
}

}  // namespace

Result<ExportInfo> handshake(Transport &t, const std::string &name) {
    if (name.size() > MAX_STRING) return Status::Error(EINVAL, "NBD export name longer than 4096 bytes");
    uint8_t b[18];
    HS_TRY(t.read_exact(b, 18));
    if (get64(b) != NBDMAGIC)
        return Status::Error(EIO, "The server is not an NBD server (bad magic " + hex(get64(b)) + ")");
    if (get64(b + 8) == OLDSTYLE_MAGIC)
        return Status::Error(ENOTSUP, "The NBD server speaks the oldstyle protocol, which is not supported");
    if (get64(b + 8) != IHAVEOPT) return violation("bad handshake magic " + hex(get64(b + 8)));
    uint16_t hflags = get16(b + 16);
    if (!(hflags & FLAG_FIXED_NEWSTYLE))
        return Status::Error(ENOTSUP, "The NBD server does not support the fixed newstyle handshake");
    bool no_zeroes = hflags & FLAG_NO_ZEROES;
    uint8_t cf[4];
    put32(cf, FLAG_FIXED_NEWSTYLE | (no_zeroes ? FLAG_NO_ZEROES : 0));
    HS_TRY(t.write_all(cf, 4));

    ExportInfo info;
    // Structured replies: an error reply just means simple replies.
    HS_TRY(send_option(t, OPT_STRUCTURED_REPLY, {}));
    auto sr = read_opt_reply(t, OPT_STRUCTURED_REPLY);
    if (!sr.ok()) return sr.take_status();
    if (sr->type == REP_ACK) {
        if (!sr->data.empty()) return violation("NBD_REP_ACK with a payload");
        info.structured = true;
    } else if (!(sr->type & REP_FLAG_ERROR)) {
        return violation("reply type " + hex(sr->type) + " to NBD_OPT_STRUCTURED_REPLY");
    }

    // NBD_OPT_GO: name, and one information request (block sizes).
    std::vector<uint8_t> go(4 + name.size() + 4);
    put32(go.data(), uint32_t(name.size()));
    memcpy(go.data() + 4, name.data(), name.size());
    put16(go.data() + 4 + name.size(), 1);
    put16(go.data() + 6 + name.size(), INFO_BLOCK_SIZE);
    HS_TRY(send_option(t, OPT_GO, go));
    bool have_export = false;
    for (int replies = 0;; replies++) {
        if (replies > 64) return violation("more than 64 replies to NBD_OPT_GO");
        auto r = read_opt_reply(t, OPT_GO);
        if (!r.ok()) return r.take_status();
        if (r->type == REP_INFO) {
            if (r->data.size() < 2) return violation("NBD_REP_INFO of " + std::to_string(r->data.size()) + " bytes");
            uint16_t it = get16(r->data.data());
            if (it == INFO_EXPORT) {
                if (r->data.size() != 12) return violation("NBD_INFO_EXPORT of " + std::to_string(r->data.size()) + " bytes");
                info.size = get64(r->data.data() + 2);
                info.flags = get16(r->data.data() + 10);
                have_export = true;
            } else if (it == INFO_BLOCK_SIZE) {
                if (r->data.size() != 14) return violation("NBD_INFO_BLOCK_SIZE of " + std::to_string(r->data.size()) + " bytes");
                info.min_block = get32(r->data.data() + 2);
                info.pref_block = get32(r->data.data() + 6);
                info.max_block = get32(r->data.data() + 10);
            }  // other information is not ours to use
        } else if (r->type == REP_ACK) {
            if (!have_export) return violation("NBD_OPT_GO acknowledged without NBD_INFO_EXPORT");
            info.used_go = true;
            MB_TRY(check_export(info));
            return info;
        } else if (r->type == REP_ERR_UNSUP) {
            break;  // an older server: NBD_OPT_EXPORT_NAME below
        } else if (r->type & REP_FLAG_ERROR) {
            return option_error(*r, name);
        } else {
            return violation("reply type " + hex(r->type) + " to NBD_OPT_GO");
        }
    }

    // NBD_OPT_EXPORT_NAME: no option reply; the server closes on error.
    std::vector<uint8_t> en(name.begin(), name.end());
    HS_TRY(send_option(t, OPT_EXPORT_NAME, en));
    uint8_t e[10 + 124];
    int r = t.read_exact(e, 10);
    if (r == -EPIPE) return Status::Error(ENOENT, "The NBD server has no export '" + name + "'");
    HS_TRY(r);
    if (!no_zeroes) HS_TRY(t.read_exact(e + 10, 124));
    info.size = get64(e);
    info.flags = get16(e + 8);
    MB_TRY(check_export(info));
    return info;
}

// --- replies ----------------------------------------------------------------------

void ReplyParser::violate(std::string why) {
    failed_ = true;
    error_ = std::move(why);
}

size_t ReplyParser::feed(const uint8_t *p, size_t n) {
    size_t used = 0;
    while (used < n && !failed_) {
        if (state_ == State::SimplePayload || state_ == State::ChunkData) {
            size_t k = std::min<uint64_t>(data_left_, n - used);
            if (data_dst_) {
                memcpy(data_dst_, p + used, k);
                data_dst_ += k;
            }
            data_left_ -= k;
            used += k;
            if (data_left_ == 0) {
                if (state_ == State::SimplePayload) reply_finished();
                else chunk_finished();
            }
            continue;
        }
        size_t k = std::min(want_ - have_, n - used);
        memcpy(small_ + have_, p + used, k);
        have_ += k;
        used += k;
        if (have_ < want_) break;
        switch (state_) {
        case State::Magic: header_done(); break;
        case State::SimpleHeader: header_done(); break;
        case State::ChunkHeader: chunk_header_done(); break;
        case State::ChunkSmall: chunk_small_done(); break;
        case State::ChunkOffset: chunk_small_done(); break;
        default: break;
        }
    }
    return used;
}

void ReplyParser::header_done() {
    if (state_ == State::Magic) {
        uint32_t magic = get32(small_);
        if (magic == SIMPLE_REPLY_MAGIC) {
            need(State::SimpleHeader, 12);
        } else if (magic == STRUCTURED_REPLY_MAGIC) {
            if (!structured_) return violate("a structured reply, which was not negotiated");
            need(State::ChunkHeader, 16);
        } else {
            char b[64];
            snprintf(b, sizeof(b), "a reply with bad magic 0x%08x", magic);
            violate(b);
        }
        return;
    }
    // Simple reply: error, cookie.
    uint32_t err = get32(small_);
    cookie_ = get64(small_ + 4);
    target_ = lookup_(cookie_);
    if (!target_) return violate("a reply to unknown cookie " + std::to_string(cookie_));
    if (err) {
        target_->error = -nbd_errno_to_local(err);
        return reply_finished();
    }
    if (target_->cmd == CMD_READ) {
        target_->covered = target_->length;
        state_ = State::SimplePayload;
        data_dst_ = target_->buf;
        data_left_ = target_->length;
        if (data_left_ == 0) reply_finished();
        return;
    }
    reply_finished();
}

void ReplyParser::chunk_header_done() {
    chunk_flags_ = get16(small_);
    chunk_type_ = get16(small_ + 2);
    cookie_ = get64(small_ + 4);
    chunk_len_ = get32(small_ + 12);
    target_ = lookup_(cookie_);
    if (!target_) return violate("a reply chunk for unknown cookie " + std::to_string(cookie_));
    bool is_read = target_->cmd == CMD_READ;
    switch (chunk_type_) {
    case REPLY_TYPE_NONE:
        if (chunk_len_ != 0 || !(chunk_flags_ & REPLY_FLAG_DONE))
            return violate("an NBD_REPLY_TYPE_NONE chunk with a payload or without the done flag");
        return chunk_finished();
    case REPLY_TYPE_OFFSET_DATA:
        if (!is_read) return violate("a data chunk in the reply to a request that is not a read");
        if (chunk_len_ <= 8 || chunk_len_ - 8 > target_->length)
            return violate("a data chunk of " + std::to_string(chunk_len_) + " bytes for a read of " +
                        std::to_string(target_->length));
        return need(State::ChunkOffset, 8);
    case REPLY_TYPE_OFFSET_HOLE:
        if (!is_read) return violate("a hole chunk in the reply to a request that is not a read");
        if (chunk_len_ != 12) return violate("a hole chunk of " + std::to_string(chunk_len_) + " bytes");
        return need(State::ChunkSmall, 12);
    default:
        if (!(chunk_type_ & 0x8000)) return violate("a reply chunk of unknown type " + std::to_string(chunk_type_));
        // An error chunk: error, message length, message [, offset].
        if (chunk_len_ < 6 || chunk_len_ > 6 + MAX_STRING + 8)
            return violate("an error chunk of " + std::to_string(chunk_len_) + " bytes");
        return need(State::ChunkSmall, chunk_len_);
    }
}

bool ReplyParser::claim_range(uint64_t off, uint64_t len, const char *what) {
    ReplyTarget *t = target_;
    if (len == 0 || off < t->offset || off - t->offset > t->length || len > t->length - (off - t->offset)) {
        violate(std::string("a ") + what + " chunk at offset " + std::to_string(off) + " (" + std::to_string(len) +
             " bytes) outside the read at " + std::to_string(t->offset) + " (" + std::to_string(t->length) + " bytes)");
        return false;
    }
    // Chunks of one read must not overlap (the spec forbids it; we rely on
    // it to know the whole buffer was filled).
    auto next = t->ranges.lower_bound(off);
    if (next != t->ranges.end() && next->first < off + len) {
        violate(std::string("overlapping chunks in the reply to one read"));
        return false;
    }
    if (next != t->ranges.begin() && std::prev(next)->second > off) {
        violate(std::string("overlapping chunks in the reply to one read"));
        return false;
    }
    t->ranges.emplace(off, off + len);
    t->covered += len;
    return true;
}

void ReplyParser::chunk_small_done() {
    ReplyTarget *t = target_;
    if (state_ == State::ChunkOffset) {
        uint64_t off = get64(small_);
        uint64_t len = chunk_len_ - 8;
        if (!claim_range(off, len, "data")) return;
        state_ = State::ChunkData;
        data_dst_ = t->buf + (off - t->offset);
        data_left_ = len;
        return;
    }
    if (chunk_type_ == REPLY_TYPE_OFFSET_HOLE) {
        uint64_t off = get64(small_);
        uint32_t len = get32(small_ + 8);
        if (!claim_range(off, len, "hole")) return;
        memset(t->buf + (off - t->offset), 0, len);
        return chunk_finished();
    }
    // Error chunk.
    uint32_t err = get32(small_);
    uint16_t mlen = get16(small_ + 4);
    if (err == 0) return violate("an error chunk with error 0");
    if (size_t(6) + mlen > chunk_len_) {
        return violate("an error chunk whose message (" + std::to_string(mlen) + " bytes) exceeds the chunk (" +
                    std::to_string(chunk_len_) + " bytes)");
    }
    if (chunk_type_ == REPLY_TYPE_ERROR && chunk_len_ != 6u + mlen)
        return violate("an error chunk of " + std::to_string(chunk_len_) + " bytes with a message of " + std::to_string(mlen));
    if (chunk_type_ == REPLY_TYPE_ERROR_OFFSET) {
        if (chunk_len_ != 6u + mlen + 8)
            return violate("an error-offset chunk of " + std::to_string(chunk_len_) + " bytes with a message of " +
                        std::to_string(mlen));
        uint64_t off = get64(small_ + 6 + mlen);
        if (off < t->offset || off - t->offset >= t->length)
            return violate("an error offset " + std::to_string(off) + " outside the request");
    }
    if (!t->error) {
        t->error = -nbd_errno_to_local(err);
        if (mlen) t->message = "the server reported: " + printable(small_ + 6, mlen);
    }
    chunk_finished();
}

void ReplyParser::chunk_finished() {
    if (!(chunk_flags_ & REPLY_FLAG_DONE)) {
        target_ = nullptr;
        need(State::Magic, 4);
        return;
    }
    ReplyTarget *t = target_;
    if (!t->error && t->cmd == CMD_READ && t->covered != t->length) {
        // The stream is still in step, so only this request fails.
        t->error = -EIO;
        t->message = "the server's reply covers " + std::to_string(t->covered) + " of " +
                     std::to_string(t->length) + " bytes read";
    }
    reply_finished();
}

void ReplyParser::reply_finished() {
    ReplyTarget *t = target_;
    uint64_t c = cookie_;
    target_ = nullptr;
    data_dst_ = nullptr;
    need(State::Magic, 4);
    done_(c, t);
}

}  // namespace mb::nbd
