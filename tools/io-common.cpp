// miniblock-io's shared helpers (tools/io-common.h): argument parsing and
// qemu-io's output formats.
#include "tools/io-common.h"

#include <cctype>
#include <cerrno>
#include <cinttypes>
#include <cstdarg>
#include <cstdlib>
#include <cstring>

namespace mb::tools::io {

bool parse_cmd(const Words &w, const char *with_arg, const char *no_arg, CmdOpts *out, std::string *err) {
    for (size_t i = 1; i < w.size(); i++) {
        const std::string &a = w[i];
        if (a.size() == 2 && a[0] == '-' && !isdigit((unsigned char)a[1])) {
            char c = a[1];
            if (strchr(with_arg, c)) {
                if (i + 1 >= w.size()) {
                    *err = "option -" + std::string(1, c) + " needs a value";
                    return false;
                }
                out->flags.emplace_back(c, w[++i]);
            } else if (strchr(no_arg, c)) {
                out->flags.emplace_back(c, "");
            } else {
                *err = "invalid option -- '" + std::string(1, c) + "'";
                return false;
            }
        } else {
            out->args.push_back(a);
        }
    }
    return true;
}

bool parse_pattern(const std::string &s, int *pat) {
    char *end;
    errno = 0;
    long v = strtol(s.c_str(), &end, 0);
    if (errno || *end || v < 0 || v > 255) return false;
    *pat = (int)v;
    return true;
}

bool io_error(const char *fmt, ...) {
    fflush(stdout);  // keep the order of both streams on one pipe
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    return false;
}

bool io_need_image(Session &s, const std::string &cmd) {
    if (s.blk) return true;
    return io_error("%s: no image is open\n", cmd.c_str());
}

std::string cvtstr(double value) {
    static const char *const suffix[] = {" bytes", " KiB", " MiB", " GiB", " TiB", " PiB", " EiB"};
    int i = 0;
    while (i < 6 && value >= 1024.0) {
        value /= 1024.0;
        i++;
    }
    char buf[64];
    snprintf(buf, sizeof(buf), "%.3f", value);
    std::string s = buf;
    size_t trim = s.find(".000");
    if (trim != std::string::npos) s.erase(trim);
    return s + suffix[i];
}

void print_report(int64_t bytes, std::chrono::duration<double> t, int ops) {
    double secs = t.count() > 0 ? t.count() : 1e-9;
    unsigned whole = (unsigned)secs, hundredths = (unsigned)((secs - whole) * 100);
    char ts[32];
    snprintf(ts, sizeof(ts), "%02u.%02u sec", whole, hundredths);
    printf("%s, %d ops; %s (%s/sec and %.4f ops/sec)\n", cvtstr((double)bytes).c_str(), ops, ts,
           cvtstr(bytes / secs).c_str(), ops / secs);
}

bool check_pattern(const uint8_t *buf, int64_t len, int64_t offset, int pattern) {
    for (int64_t i = 0; i < len; i++) {
        if (buf[i] != pattern) {
            printf("Pattern verification failed at offset %" PRId64 ", %" PRId64 " bytes\n", offset, len);
            return false;
        }
    }
    return true;
}

void hexdump(const uint8_t *buf, int64_t len, int64_t offset) {
    for (int64_t i = 0; i < len; i += 16) {
        printf("%08" PRIx64 ":  ", offset + i);
        for (int j = 0; j < 16; j++) {
            if (i + j < len) printf("%02x ", buf[i + j]);
            else printf("   ");
        }
        printf(" ");
        for (int j = 0; j < 16 && i + j < len; j++) putchar(isprint(buf[i + j]) ? buf[i + j] : '.');
        printf("\n");
    }
}

}  // namespace mb::tools::io
