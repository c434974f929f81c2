// miniblock-io: a qemu-io-like exerciser for miniblock drives.
//
// Commands come from -c (repeatable) or, without -c, from standard input,
// one per line.  When reading standard input, every reply ends with a line
// "[ok]" or "[error]", so a harness can drive it over a pipe.
#include <getopt.h>
#include <glib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "block/block_int.h"
#ifndef _WIN32  // /proc-based; Windows cannot name a lock's holder
#include "block/locking/holders.h"
#endif
#include "tools/tool-common.h"

using namespace mb;
using namespace mb::tools;

namespace {

const char *const prog = "miniblock-io";

void usage(FILE *out) {
    fprintf(out,
            "Usage: miniblock-io [OPTIONS]... [-c COMMAND]... [FILE]\n"
            "Exercise a disk image through miniblock's block layer, like qemu-io.\n"
            "\n"
            "Options:\n"
            "  -c, --cmd=COMMAND      run COMMAND (repeatable); without -c, commands are read\n"
            "                         from standard input, one per line, and every reply ends\n"
            "                         with a line \"[ok]\" or \"[error]\"\n"
            "  -f, --format=FMT       image format (raw, ...); probed when absent\n"
            "  -r, --read-only        open read-only\n"
            "  -t, --cache=MODE       cache mode: writeback, none, writethrough, directsync, unsafe\n"
            "  -i, --aio=MODE         aio mode: threads, native (native needs -t none)\n"
            "  -U, --force-share      open with lock=shared (like QEMU's force-share)\n"
            "  -l, --lock=MODE        lock mode: off, shared, auto (default), exclusive\n"
            "      --image-opts       FILE is an option string (file.filename=a.img,driver=raw,...)\n"
            "  -s, --snapshot         writes go to a temporary qcow2 overlay, deleted on close;\n"
            "                         the image is its read-only backing file (--lock applies\n"
            "                         to the image; its own backing files get at most auto)\n"
            "      --inactive         open inactive, as a migration target: no locks, no writes\n"
            "                         until the command activate\n"
            "  -h, --help             show this help\n"
            "\n"
            "Commands:\n"
            "  open [-r] [-f FMT] [-t CACHE] [-i AIO] [-U] [-l LOCK] [-o] [-I] [-s] FILE   open\n"
            "                         an image (-o: FILE is an option string; -I: inactive;\n"
            "                         -s: snapshot mode)\n"
            "  close                  close the image (flushes, releases the locks)\n"
            "  read [-P PAT] [-v] [-q] OFF LEN    read; -P checks every byte equals PAT,\n"
            "                         -v dumps the data\n"
            "  write [-P PAT] [-z] [-q] OFF LEN   write PAT (default 0xcd) or zeroes (-z)\n"
            "  discard OFF LEN        discard (unmap) a range: a hint\n"
            "  flush                  flush to stable storage\n"
            "  length                 print the image size\n"
            "  locks                  list who holds lock bytes on the image's file\n"
            "  commit [-b BASE] [-n]  commit the image into its backing file (or BASE) under a\n"
            "                         temporary exclusive lock on it; -n: only check whether\n"
            "                         that lock could be taken now\n"
            "  activate               take the locks of an inactive image (migration target)\n"
            "  inactivate             flush and drop every lock (migration source)\n"
            "  sleep MS               wait MS milliseconds\n"
            "  help                   list the commands\n"
            "  quit                   exit\n"
            "\n"
            "OFF and LEN accept k, M, G, T suffixes.  The exit status is 1 if any command failed.\n");
}

struct Session {
    std::unique_ptr<BlockBackend> blk;
    bool failed = false;
};

std::vector<std::string> split_words(const std::string &line) {
    std::vector<std::string> w;
    std::istringstream is(line);
    std::string s;
    while (is >> s) w.push_back(s);
    return w;
}

// A getopt over one command's words.
struct CmdOpts {
    std::vector<std::string> args;
    std::vector<std::pair<char, std::string>> flags;
};

bool parse_cmd(const std::vector<std::string> &w, const char *with_arg, const char *no_arg,
               CmdOpts *out, std::string *err) {
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

void print_timing(int64_t bytes, std::chrono::duration<double> t) {
    double secs = t.count() > 0 ? t.count() : 1e-9;
    printf("%s, 1 ops; %.4f sec (%s/sec and %.4f ops/sec)\n", human_size(bytes).c_str(), secs,
           human_size((int64_t)(bytes / secs)).c_str(), 1 / secs);
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

// Bounds one request's buffer: miniblock-io is no tool for gigabyte reads.
constexpr int64_t MAX_IO = 1LL << 30;

bool cmd_rw(Session &s, const std::vector<std::string> &w, bool is_write) {
    CmdOpts o;
    std::string err;
    if (!parse_cmd(w, "P", is_write ? "zq" : "vq", &o, &err)) {
        printf("%s: %s\n", w[0].c_str(), err.c_str());
        return false;
    }
    if (o.args.size() != 2) {
        printf("%s: expected OFFSET and LENGTH\n", w[0].c_str());
        return false;
    }
    int pattern = is_write ? 0xcd : -1;
    bool verbose = false, zero = false, quiet = false;
    for (auto &[c, v] : o.flags) {
        if (c == 'P' && !parse_pattern(v, &pattern)) {
            printf("%s: invalid pattern '%s': expected a byte value from 0 to 255\n", w[0].c_str(), v.c_str());
            return false;
        }
        if (c == 'v') verbose = true;
        if (c == 'z') zero = true;
        if (c == 'q') quiet = true;
    }
    auto off = parse_number(o.args[0]), len = parse_number(o.args[1]);
    if (!off) {
        printf("%s: invalid offset '%s'\n", w[0].c_str(), o.args[0].c_str());
        return false;
    }
    if (!len || *len > MAX_IO) {
        printf("%s: invalid length '%s'\n", w[0].c_str(), o.args[1].c_str());
        return false;
    }
    if (!s.blk) {
        printf("%s: no image is open\n", w[0].c_str());
        return false;
    }
    std::vector<uint8_t> buf(*len, is_write && pattern >= 0 ? pattern : 0);
    auto t0 = std::chrono::steady_clock::now();
    int r = is_write ? (zero ? s.blk->pwrite_zeroes(*off, *len) : s.blk->pwrite(*off, *len, buf.data()))
                     : s.blk->pread(*off, *len, buf.data());
    auto t = std::chrono::steady_clock::now() - t0;
    if (r < 0) {
        printf("%s failed: %s\n", is_write ? "write" : "read", strerror(-r));
        return false;
    }
    if (!is_write && pattern >= 0) {
        for (int64_t i = 0; i < *len; i++) {
            if (buf[i] != pattern) {
                printf("Pattern verification failed at offset %" PRId64 ", %" PRId64 " bytes\n", *off + i, *len);
                return false;
            }
        }
    }
    if (verbose) hexdump(buf.data(), *len, *off);
    if (!quiet) {
        printf("%s %" PRId64 "/%" PRId64 " bytes at offset %" PRId64 "\n", is_write ? "wrote" : "read", *len, *len, *off);
        print_timing(*len, t);
    }
    return true;
}

bool do_open(Session &s, const std::string &image, const ImageFlags &flags) {
    auto r = open_image(image, flags);
    if (!r.ok()) {
        printf("%s: can't open device %s: %s\n", prog, image.c_str(), r.status().to_string().c_str());
        return false;
    }
    s.blk = std::move(*r);
    return true;
}

bool cmd_open(Session &s, const std::vector<std::string> &w) {
    CmdOpts o;
    std::string err;
    if (!parse_cmd(w, "ftil", "rUoIs", &o, &err)) {
        printf("open: %s\n", err.c_str());
        return false;
    }
    if (o.args.size() != 1) {
        printf("open: expected one image\n");
        return false;
    }
    ImageFlags f;
    for (auto &[c, v] : o.flags) {
        switch (c) {
        case 'f': f.format = v; break;
        case 't': f.cache = v; break;
        case 'i': f.aio = v; break;
        case 'l': f.lock = v; break;
        case 'r': f.read_only = true; break;
        case 'U': f.force_share = true; break;
        case 'o': f.image_opts = true; break;
        case 'I': f.inactive = true; break;
        case 's': f.snapshot = true; break;
        }
    }
    if (s.blk) {
        printf("open: an image is already open: close it first\n");
        return false;
    }
    return do_open(s, o.args[0], f);
}

bool cmd_locks(Session &s) {
    if (!s.blk) {
        printf("locks: no image is open\n");
        return false;
    }
    std::string path = protocol_filename(*s.blk);
#ifdef _WIN32
    printf("locks: not available on Windows: Windows cannot say which process holds a byte-range lock\n");
    return false;
#else
    struct stat st;
    if (stat(path.c_str(), &st) < 0) {
        printf("locks: cannot stat '%s': %s\n", path.c_str(), strerror(errno));
        return false;
    }
    auto holders = find_lock_holders(st.st_dev, st.st_ino);
    if (holders.empty()) printf("no locks held on %s\n", path.c_str());
    for (auto &h : holders) printf("%s\n", describe_holder(h).c_str());
    return true;
#endif
}

// discard OFF LEN: a hint to unmap (trim on nbd, punch hole on files).
bool cmd_discard(Session &s, const std::vector<std::string> &w) {
    auto off = w.size() == 3 ? parse_number(w[1]) : std::nullopt;
    auto len = w.size() == 3 ? parse_number(w[2]) : std::nullopt;
    if (!off || !len) {
        printf("discard: expected OFFSET and LENGTH\n");
        return false;
    }
    if (!s.blk) {
        printf("discard: no image is open\n");
        return false;
    }
    int r = s.blk->pdiscard(*off, *len);
    if (r < 0) {
        printf("discard failed: %s\n", strerror(-r));
        return false;
    }
    printf("discard %" PRId64 "/%" PRId64 " bytes at offset %" PRId64 "\n", *len, *len, *off);
    return true;
}

// Runs one command line; false when it failed.  Sets *quit.
bool run_command(Session &s, const std::string &line, bool *quit) {
    auto w = split_words(line);
    if (w.empty()) return true;
    const std::string &c = w[0];
    if (c == "read") return cmd_rw(s, w, false);
    if (c == "write") return cmd_rw(s, w, true);
    if (c == "open") return cmd_open(s, w);
    if (c == "discard") return cmd_discard(s, w);
    if (c == "close") {
        s.blk.reset();
        return true;
    }
    if (c == "flush") {
        if (!s.blk) {
            printf("flush: no image is open\n");
            return false;
        }
        int r = s.blk->flush();
        if (r < 0) printf("flush failed: %s\n", strerror(-r));
        return r >= 0;
    }
    if (c == "length") {
        if (!s.blk) {
            printf("length: no image is open\n");
            return false;
        }
        int64_t len = s.blk->length();
        if (len < 0) {
            printf("getlength: %s\n", strerror((int)-len));
            return false;
        }
        printf("%s\n", human_size(len).c_str());
        return true;
    }
    if (c == "locks") return cmd_locks(s);
    if (c == "commit") {
        CmdOpts o;
        std::string err;
        if (!parse_cmd(w, "b", "n", &o, &err) || !o.args.empty()) {
            printf("commit: %s\n", err.empty() ? "unexpected argument" : err.c_str());
            return false;
        }
        if (!s.blk) {
            printf("commit: no image is open\n");
            return false;
        }
        std::string base;
        bool check = false;
        for (auto &[f, v] : o.flags) {
            if (f == 'b') base = v;
            if (f == 'n') check = true;
        }
        Status st = s.blk->commit(base, check);
        if (!st.ok()) {
            printf("commit: %s\n", st.to_string().c_str());
            return false;
        }
        printf(check ? "Commit could take the lock now.\n" : "Image committed.\n");
        return true;
    }
    if (c == "activate" || c == "inactivate") {
        if (!s.blk) {
            printf("%s: no image is open\n", c.c_str());
            return false;
        }
        Status st = c == "activate" ? s.blk->activate() : s.blk->inactivate();
        if (!st.ok()) {
            printf("%s: %s\n", c.c_str(), st.to_string().c_str());
            return false;
        }
        return true;
    }
    if (c == "sleep") {
        auto ms = w.size() == 2 ? parse_number(w[1]) : std::nullopt;
        if (!ms) {
            printf("sleep: expected milliseconds\n");
            return false;
        }
        g_usleep((gulong)*ms * 1000);
        return true;
    }
    if (c == "quit" || c == "q") {
        *quit = true;
        return true;
    }
    if (c == "help") {
        usage(stdout);
        return true;
    }
    printf("command \"%s\" not found\n", c.c_str());
    return false;
}

}  // namespace

int main(int argc, char **argv) {
    static const struct option longopts[] = {
        {"cmd", required_argument, nullptr, 'c'},      {"format", required_argument, nullptr, 'f'},
        {"read-only", no_argument, nullptr, 'r'},      {"cache", required_argument, nullptr, 't'},
        {"aio", required_argument, nullptr, 'i'},      {"force-share", no_argument, nullptr, 'U'},
        {"lock", required_argument, nullptr, 'l'},     {"image-opts", no_argument, nullptr, 'O'},
        {"inactive", no_argument, nullptr, 'I'},
        {"snapshot", no_argument, nullptr, 's'},
        {"help", no_argument, nullptr, 'h'},           {nullptr, 0, nullptr, 0},
    };
    ImageFlags flags;
    std::vector<std::string> cmds;
    int c;
    while ((c = getopt_long(argc, argv, "c:f:rt:i:Ul:sh", longopts, nullptr)) != -1) {
        switch (c) {
        case 'c': cmds.push_back(optarg); break;
        case 'f': flags.format = optarg; break;
        case 'r': flags.read_only = true; break;
        case 't': flags.cache = optarg; break;
        case 'i': flags.aio = optarg; break;
        case 'U': flags.force_share = true; break;
        case 'l': flags.lock = optarg; break;
        case 'O': flags.image_opts = true; break;
        case 'I': flags.inactive = true; break;
        case 's': flags.snapshot = true; break;
        case 'h': usage(stdout); return 0;
        default: fprintf(stderr, "Try 'miniblock-io --help' for more information.\n"); return 1;
        }
    }
    if (argc - optind > 1) {
        fprintf(stderr, "%s: too many arguments\nTry 'miniblock-io --help' for more information.\n", prog);
        return 1;
    }
    setvbuf(stdout, nullptr, _IOLBF, 0);
    Session s;
    if (optind < argc && !do_open(s, argv[optind], flags)) {
        fflush(stdout);
        return 1;
    }
    bool quit = false;
    if (!cmds.empty()) {
        for (auto &cmd : cmds) {
            if (!run_command(s, cmd, &quit)) s.failed = true;
            if (quit) break;
        }
    } else {
        std::string line;
        while (!quit && std::getline(std::cin, line)) {
            bool ok = run_command(s, line, &quit);
            if (!ok) s.failed = true;
            printf("%s\n", ok ? "[ok]" : "[error]");
            fflush(stdout);
        }
    }
    s.blk.reset();
    return s.failed ? 1 : 0;
}
