// Status and Result: the control plane's error values (LevelDB-style).
//
// A Status is cheap on success (one null pointer) and carries a positive errno
// plus a message on failure.  The message is a single phrase naming the
// offending value, without trailing punctuation (QEMU's rule); `detail` holds
// further lines: the hint and, for lock conflicts, the holders.
// Data-plane calls (read/write/flush) return negative errno instead.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace mb {

class [[nodiscard]] Status {
public:
    Status() = default;
    Status(const Status &o) : rep_(o.rep_ ? std::make_unique<Rep>(*o.rep_) : nullptr) {}
    Status &operator=(const Status &o) {
        rep_ = o.rep_ ? std::make_unique<Rep>(*o.rep_) : nullptr;
        return *this;
    }
    Status(Status &&) noexcept = default;
    Status &operator=(Status &&) noexcept = default;

    static Status OK() { return Status(); }
    // err is a positive errno value (EINVAL when the error is about input).
    static Status Error(int err, std::string message, std::string detail = {}) {
        Status s;
        s.rep_ = std::make_unique<Rep>(Rep{err, std::move(message), std::move(detail)});
        return s;
    }

    bool ok() const { return rep_ == nullptr; }
    int err() const { return rep_ ? rep_->err : 0; }
    const std::string &message() const { return rep_ ? rep_->message : empty(); }
    const std::string &detail() const { return rep_ ? rep_->detail : empty(); }

    // "context: message"; the detail is kept.
    Status &prefix(std::string_view context) {
        if (rep_) rep_->message = std::string(context) + ": " + rep_->message;
        return *this;
    }
    // Appends one line to the detail (a hint, a holder).
    Status &add_detail(std::string_view line) {
        if (rep_) {
            if (!rep_->detail.empty()) rep_->detail += '\n';
            rep_->detail += line;
        }
        return *this;
    }
    // The message, then the detail lines: what a tool prints after "prog: ".
    std::string to_string() const {
        if (!rep_) return "OK";
        return rep_->detail.empty() ? rep_->message : rep_->message + "\n" + rep_->detail;
    }

private:
    struct Rep {
        int err;
        std::string message;
        std::string detail;
    };
    static const std::string &empty() {
        static const std::string e;
        return e;
    }
    std::unique_ptr<Rep> rep_;
};

// The one errno-to-Status conversion: "context: strerror(err)".
Status PosixError(std::string_view context, int err);

// A value or an error.
template <class T>
class [[nodiscard]] Result {
public:
    Result(T value) : value_(std::move(value)) {}
    Result(Status status) : status_(std::move(status)) {}

    bool ok() const { return status_.ok(); }
    const Status &status() const { return status_; }
    Status take_status() { return std::move(status_); }
    T &value() { return *value_; }
    const T &value() const { return *value_; }
    T &operator*() { return *value_; }
    T *operator->() { return &*value_; }

private:
    std::optional<T> value_;
    Status status_;
};

}  // namespace mb

// Early return of a failed Status (or of a Result's status).
#define MB_TRY(expr)                                     \
    do {                                                 \
        ::mb::Status mb_try_status_ = (expr);            \
        if (!mb_try_status_.ok()) return mb_try_status_; \
    } while (0)
