// What miniblock-io's commands share (tools/miniblock-io.cpp has the one
// command table; commands live there and in tools/io-*.cpp).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "miniblock/block.h"

namespace mb::tools::io {

using Words = std::vector<std::string>;

// An asynchronous request (aio_read, aio_write) in flight.
struct AioRequest {
    bool is_write = false, done = false;
    int64_t offset = 0, len = 0;
    int pattern = -1;  // aio_read -P: the byte to check
    bool quiet = false, verbose = false;
    int ret = 0;
    std::vector<uint8_t> buf;
    std::chrono::steady_clock::time_point start;
};

struct Session {
    std::unique_ptr<BlockBackend> blk;
    std::string image;  // as opened, for reopen and messages
    bool failed = false;
    std::vector<std::unique_ptr<AioRequest>> aio;  // in flight or not yet reported
};

// A command of the table: words[0] is the command name.
struct IoCmd {
    const char *name;
    const char *alias;  // or nullptr
    bool (*fn)(Session &s, const Words &w);
    const char *args;     // "[-r|-w] [-o options]"
    const char *oneline;  // "reopens an image with new options"
    const char *help;     // the long text of `help CMD`, or nullptr
};
const IoCmd *io_find_command(const std::string &name);
// The whole table, nullptr-name terminated (for `help`).
extern const IoCmd io_commands[];

// A getopt over one command's words.
struct CmdOpts {
    Words args;
    std::vector<std::pair<char, std::string>> flags;
};
bool parse_cmd(const Words &w, const char *with_arg, const char *no_arg, CmdOpts *out, std::string *err);
bool parse_pattern(const std::string &s, int *pat);

// Usage errors go to stderr, as qemu-io's; false for the caller to return.
bool io_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
// "CMD: no image is open" (stderr) unless one is; returns whether one is.
bool io_need_image(Session &s, const std::string &cmd);

// qemu-io's sizes: "%.3f" with ".000" dropped, then " bytes", " KiB", ...
std::string cvtstr(double value);
// qemu-io's "4 KiB, 1 ops; 00.00 sec (... /sec and ... ops/sec)"
void print_report(int64_t bytes, std::chrono::duration<double> t, int ops = 1);
// read -P: qemu-io's "Pattern verification failed at offset OFF, LEN bytes"
// (the checked range) when any byte differs.
bool check_pattern(const uint8_t *buf, int64_t len, int64_t offset, int pattern);
void hexdump(const uint8_t *buf, int64_t len, int64_t offset);

// Bounds one request's buffer: miniblock-io is no tool for gigabyte reads.
constexpr int64_t MAX_IO = 1LL << 30;

// The new commands (tools/io-rw.cpp, tools/io-image.cpp).
bool cmd_readv(Session &s, const Words &w);
bool cmd_writev(Session &s, const Words &w);
bool cmd_aio_read(Session &s, const Words &w);
bool cmd_aio_write(Session &s, const Words &w);
bool cmd_aio_flush(Session &s, const Words &w);
// Reports finished aio requests (called between commands, as qemu-io does).
void io_reap_aio(Session &s, bool wait_all);
bool cmd_info(Session &s, const Words &w);
bool cmd_map(Session &s, const Words &w);
bool cmd_alloc(Session &s, const Words &w);
bool cmd_truncate(Session &s, const Words &w);
bool cmd_reopen(Session &s, const Words &w);

}  // namespace mb::tools::io
