// miniblock-io: a qemu-io-like exerciser for miniblock drives.
//
// Commands come from -c (repeatable) or, without -c, from standard input,
// one per line.  When reading standard input, every reply ends with a line
// "[ok]" or "[error]", so a harness can drive it over a pipe.
//
// The commands are one table (io_commands below, qemu-io's cmdinfo_t shape):
// `help` and `help CMD` come from it.  Usage errors go to stderr and the
// results of requests to stdout, as qemu-io's.
#include <getopt.h>
#include <glib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "block/block_int.h"
#ifndef _WIN32  // /proc-based; Windows cannot name a lock's holder
#include "block/locking/holders.h"
#endif
#include "tools/io-common.h"
#include "tools/tool-common.h"

using namespace mb;
using namespace mb::tools;

namespace mb::tools::io {

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
            "  -V, --version          show the version\n"
            "\n"
            "Commands (help CMD says more of one):\n");
    for (const IoCmd *c = io_commands; c->name; c++) {
        std::string head = std::string(c->name) + (c->args[0] ? " " : "") + c->args;
        if (head.size() > 40) fprintf(out, "  %s\n  %-40s %s\n", head.c_str(), "", c->oneline);
        else fprintf(out, "  %-40s %s\n", head.c_str(), c->oneline);
    }
    fprintf(out, "\nOFF and LEN accept k, M, G, T suffixes.  The exit status is 1 if any command failed.\n");
}

std::vector<std::string> split_words(const std::string &line) {
    std::vector<std::string> w;
    std::istringstream is(line);
    std::string s;
    while (is >> s) w.push_back(s);
    return w;
}

bool cmd_rw(Session &s, const Words &w, bool is_write) {
    CmdOpts o;
    std::string err;
    if (!parse_cmd(w, is_write ? "P" : "Psl", is_write ? "zqfuc" : "vq", &o, &err))
        return io_error("%s: %s\n", w[0].c_str(), err.c_str());
    // read -s OFF -l LEN: only that part of the buffer is checked (qemu-io's).
    std::optional<int64_t> pat_off, pat_len;
    for (auto &[c, v] : o.flags) {
        if (c == 's' && !(pat_off = parse_number(v))) return io_error("read: invalid pattern offset '%s'\n", v.c_str());
        if (c == 'l' && !(pat_len = parse_number(v))) return io_error("read: invalid pattern length '%s'\n", v.c_str());
    }
    if (o.args.size() != 2) return io_error("%s: expected OFFSET and LENGTH\n", w[0].c_str());
    int pattern = is_write ? 0xcd : -1;
    bool verbose = false, zero = false, quiet = false;
    int req_flags = 0;
    for (auto &[c, v] : o.flags) {
        if (c == 'f') req_flags |= BDRV_REQ_FUA;         // qemu-io's -f: force unit access
        if (c == 'u') req_flags |= BDRV_REQ_MAY_UNMAP;   // qemu-io's -u (with -z): may unmap
        if (c == 'c') req_flags |= BDRV_REQ_WRITE_COMPRESSED;  // qemu-io's -c: whole clusters, compressed
        if (c == 'P' && !parse_pattern(v, &pattern))
            return io_error("%s: invalid pattern '%s': expected a byte value from 0 to 255\n", w[0].c_str(), v.c_str());
        if (c == 'v') verbose = true;
        if (c == 'z') zero = true;
        if (c == 'q') quiet = true;
    }
    auto off = parse_number(o.args[0]), len = parse_number(o.args[1]);
    if (!off) return io_error("%s: invalid offset '%s'\n", w[0].c_str(), o.args[0].c_str());
    if (!len || *len > MAX_IO) return io_error("%s: invalid length '%s'\n", w[0].c_str(), o.args[1].c_str());
    if (!io_need_image(s, w[0])) return false;
    std::vector<uint8_t> buf(*len, is_write && pattern >= 0 ? pattern : 0);
    auto t0 = std::chrono::steady_clock::now();
    if ((req_flags & BDRV_REQ_MAY_UNMAP) && !zero) return io_error("-u requires -z to be specified\n");  // qemu-io's text
    if ((req_flags & BDRV_REQ_WRITE_COMPRESSED) && zero) return io_error("write: -c and -z cannot be used together\n");
    int r = is_write ? (zero ? s.blk->pwrite_zeroes(*off, *len, req_flags)
                             : s.blk->pwrite(*off, *len, buf.data(), req_flags))
                     : s.blk->pread(*off, *len, buf.data());
    auto t = std::chrono::steady_clock::now() - t0;
    if (r < 0) {
        printf("%s failed: %s\n", is_write ? "write" : "read", strerror(-r));
        return false;
    }
    // As qemu-io: the failed check names the checked range, and the
    // statistics follow all the same.
    if ((pat_off || pat_len) && pattern < 0) return io_error("read: -s and -l need -P\n");
    const int64_t po = pat_off.value_or(0), pl = pat_len.value_or(*len - std::min(po, *len));
    if (po > *len || pl > *len - po) return io_error("read: pattern verification range exceeds end of read data\n");
    bool ok = is_write || pattern < 0 || check_pattern(buf.data() + po, pl, *off + po, pattern);
    if (verbose) hexdump(buf.data(), *len, *off);
    if (!quiet) {
        printf("%s %" PRId64 "/%" PRId64 " bytes at offset %" PRId64 "\n", is_write ? "wrote" : "read", *len, *len, *off);
        print_report(*len, t);
    }
    return ok;
}

bool cmd_read(Session &s, const Words &w) { return cmd_rw(s, w, false); }
bool cmd_write(Session &s, const Words &w) { return cmd_rw(s, w, true); }

bool do_open(Session &s, const std::string &image, const ImageFlags &flags) {
    auto r = open_image(image, flags);
    if (!r.ok()) {
        return io_error("%s: can't open device %s: %s\n", prog, qapi::shown_name(image).c_str(),
                        r.status().to_string().c_str());
    }
    s.blk = std::move(*r);
    s.image = image;
    return true;
}

// A value in a key=value list: commas doubled.
std::string keyval_escape(const std::string &v) {
    std::string out;
    for (char c : v) {
        out += c;
        if (c == ',') out += ',';
    }
    return out;
}

// open [-r] [-s] [-U] [-n] [-I] [-f FMT] [-t CACHE] [-i AIO] [-l LOCK] [-d DISCARD] [-o OPTIONS] [FILE]
// as qemu-io's: -o gives options (a whole image with driver=...,file.filename=...
// when FILE is absent, else options added to FILE's).
bool cmd_open(Session &s, const Words &w) {
    CmdOpts o;
    std::string err;
    if (!parse_cmd(w, "ftilod", "rUIsn", &o, &err)) return io_error("open: %s\n", err.c_str());
    ImageFlags f;
    std::string options, discard;
    for (auto &[c, v] : o.flags) {
        switch (c) {
        case 'f': f.format = v; break;
        case 't': f.cache = v; break;
        case 'n': f.cache = "none"; break;
        case 'i': f.aio = v; break;
        case 'l': f.lock = v; break;
        case 'd': discard = v; break;
        case 'o': options = options.empty() ? v : options + "," + v; break;
        case 'r': f.read_only = true; break;
        case 'U': f.force_share = true; break;
        case 'I': f.inactive = true; break;
        case 's': f.snapshot = true; break;
        }
    }
    if (o.args.size() > 1 || (o.args.empty() && options.empty())) return io_error("open: expected one image\n");
    if (s.blk) return io_error("open: an image is already open: close it first\n");
    std::string image = o.args.empty() ? options : o.args[0];
    if (!options.empty()) {
        f.image_opts = true;
        if (!o.args.empty()) {
            image = options + ",file.filename=" + keyval_escape(o.args[0]);
            if (!f.format.empty()) image += ",driver=" + keyval_escape(f.format);
        } else if (!f.format.empty()) {
            image += ",driver=" + keyval_escape(f.format);
        }
        f.format.clear();
    }
    if (!discard.empty()) {
        if (!f.image_opts) {
            f.image_opts = true;
            image = "file.filename=" + keyval_escape(image) + (f.format.empty() ? "" : ",driver=" + keyval_escape(f.format));
            f.format.clear();
        }
        image += ",discard=" + keyval_escape(discard);
    }
    return do_open(s, image, f);
}

bool cmd_close(Session &s, const Words &) {
    io_reap_aio(s, true);
    s.blk.reset();
    return true;
}

bool cmd_locks(Session &s, const Words &w) {
    if (!io_need_image(s, w[0])) return false;
    std::string path = protocol_filename(*s.blk);
#ifdef _WIN32
    printf("locks: not available on Windows: Windows cannot say which process holds a byte-range lock\n");
    return false;
#else
    struct stat st;
    if (stat(path.c_str(), &st) < 0) return io_error("locks: cannot stat '%s': %s\n", path.c_str(), strerror(errno));
    auto holders = find_lock_holders(st.st_dev, st.st_ino);
    if (holders.empty()) printf("no locks held on %s\n", path.c_str());
    for (auto &h : holders) printf("%s\n", describe_holder(h).c_str());
    return true;
#endif
}

// discard OFF LEN: a hint to unmap (trim on nbd, punch hole on files).
bool cmd_discard(Session &s, const Words &w) {
    auto off = w.size() == 3 ? parse_number(w[1]) : std::nullopt;
    auto len = w.size() == 3 ? parse_number(w[2]) : std::nullopt;
    if (!off || !len) return io_error("discard: expected OFFSET and LENGTH\n");
    if (!io_need_image(s, w[0])) return false;
    int r = s.blk->pdiscard(*off, *len);
    if (r < 0) {
        printf("discard failed: %s\n", strerror(-r));
        return false;
    }
    printf("discard %" PRId64 "/%" PRId64 " bytes at offset %" PRId64 "\n", *len, *len, *off);
    return true;
}

bool cmd_flush(Session &s, const Words &w) {
    if (!io_need_image(s, w[0])) return false;
    int r = s.blk->flush();
    if (r < 0) printf("flush failed: %s\n", strerror(-r));
    return r >= 0;
}

bool cmd_length(Session &s, const Words &w) {
    if (!io_need_image(s, w[0])) return false;
    int64_t len = s.blk->length();
    if (len < 0) {
        printf("getlength: %s\n", strerror((int)-len));
        return false;
    }
    printf("%s\n", cvtstr((double)len).c_str());
    return true;
}

bool cmd_commit(Session &s, const Words &w) {
    CmdOpts o;
    std::string err;
    if (!parse_cmd(w, "b", "n", &o, &err) || !o.args.empty())
        return io_error("commit: %s\n", err.empty() ? "unexpected argument" : err.c_str());
    if (!io_need_image(s, w[0])) return false;
    std::string base;
    bool check = false;
    for (auto &[f, v] : o.flags) {
        if (f == 'b') base = v;
        if (f == 'n') check = true;
    }
    Status st = s.blk->commit(base, check);
    if (!st.ok()) return io_error("commit: %s\n", st.to_string().c_str());
    printf(check ? "Commit could take the lock now.\n" : "Image committed.\n");
    return true;
}

bool cmd_activate(Session &s, const Words &w) {
    if (!io_need_image(s, w[0])) return false;
    Status st = w[0] == "activate" ? s.blk->activate() : s.blk->inactivate();
    if (!st.ok()) return io_error("%s: %s\n", w[0].c_str(), st.to_string().c_str());
    return true;
}

bool cmd_sleep(Session &, const Words &w) {
    auto ms = w.size() == 2 ? parse_number(w[1]) : std::nullopt;
    if (!ms) return io_error("sleep: expected milliseconds\n");
    g_usleep((gulong)*ms * 1000);
    return true;
}

bool quit_requested = false;

bool cmd_quit(Session &, const Words &) {
    quit_requested = true;
    return true;
}

bool cmd_help(Session &, const Words &w) {
    if (w.size() == 1) {
        usage(stdout);
        return true;
    }
    const IoCmd *c = io_find_command(w[1]);
    if (!c) return io_error("command %s not found\n", w[1].c_str());
    // qemu-io's shape: the one-line form, then the long text.
    printf("%s%s%s -- %s\n", c->name, c->args[0] ? " " : "", c->args, c->oneline);
    if (c->help) printf("\n%s\n", c->help);
    return true;
}

// Runs one command line; false when it failed.
bool run_command(Session &s, const std::string &line) {
    auto w = split_words(line);
    if (w.empty()) return true;
    const IoCmd *c = io_find_command(w[0]);
    if (!c) return io_error("command \"%s\" not found\n", w[0].c_str());
    bool ok = c->fn(s, w);
    io_reap_aio(s, false);
    return ok;
}

}  // namespace

const IoCmd io_commands[] = {
    {"open", "o", cmd_open, "[-rsUnI] [-f FMT] [-t CACHE] [-i AIO] [-l LOCK] [-d DISCARD] [-o OPTIONS] [FILE]",
     "open the file specified by path",
     " -r, open read-only\n"
     " -s, snapshot mode: writes go to a temporary qcow2 overlay\n"
     " -U, force share (lock=shared)\n"
     " -n, cache=none (O_DIRECT)\n"
     " -I, inactive (a migration target: no locks, no writes until activate)\n"
     " -f, the image format; probed when absent\n"
     " -t, the cache mode; -i, the aio mode; -l, the lock mode; -d, QEMU's discard\n"
     " -o, options: the whole image (driver=...,file.filename=...) without FILE,\n"
     "     or options added to FILE's"},
    {"close", "c", cmd_close, "", "close the current open file", nullptr},
    {"read", "r", cmd_read, "[-vq] [-P PAT [-s OFF] [-l LEN]] OFF LEN", "reads a number of bytes at a specified offset",
     " -P, check that every byte read equals PAT (-s, -l: only LEN bytes from OFF in the\n"
     " buffer)\n -v, dump the data\n -q, quiet: no statistics"},
    {"readv", nullptr, cmd_readv, "[-vq] [-P PAT] OFF LEN [LEN...]",
     "reads a number of bytes at a specified offset into several buffers",
     " reads the ranges one after the other from OFF into one request (qemu-io's\n readv), the same flags as read"},
    {"write", "w", cmd_write, "[-zufcq] [-P PAT] OFF LEN", "writes a number of bytes at a specified offset",
     " -P, the byte to write (default 0xcd)\n -z, write zeroes (a zero write)\n -u, with -z: the range may\n"
     " be unmapped\n -f, force unit access (written through to stable storage)\n"
     " -c, compressed (qcow2: whole clusters, or up to the end of the image)\n -q, quiet"},
    {"writev", nullptr, cmd_writev, "[-q] [-P PAT] OFF LEN [LEN...]",
     "writes a number of bytes at a specified offset from several buffers", nullptr},
    {"aio_read", nullptr, cmd_aio_read, "[-vq] [-P PAT] OFF LEN",
     "asynchronously reads a number of bytes",
     " the request is sent and the command returns; its result is printed when it\n"
     " completes (at the latest at aio_flush)"},
    {"aio_write", nullptr, cmd_aio_write, "[-q] [-P PAT] OFF LEN",
     "asynchronously writes a number of bytes", nullptr},
    {"aio_flush", nullptr, cmd_aio_flush, "", "completes all outstanding aio requests", nullptr},
    {"discard", nullptr, cmd_discard, "OFF LEN", "discards a number of bytes at a specified offset", nullptr},
    {"flush", "f", cmd_flush, "", "flush all in-core file state to disk", nullptr},
    {"truncate", "t", cmd_truncate, "OFF",
     "truncates the current file at the given offset",
     " takes the resize permission for the duration: refused, naming who is in the\n"
     " way, while another process forbids resizing, with every lock as before"},
    {"length", "l", cmd_length, "", "gets the length of the current file", nullptr},
    {"info", "i", cmd_info, "", "prints information about the current file", nullptr},
    {"map", nullptr, cmd_map, "", "prints the allocation state of the whole image", nullptr},
    {"alloc", nullptr, cmd_alloc, "OFF [LEN]", "checks if offset is allocated in the file", nullptr},
    {"reopen", nullptr, cmd_reopen, "[-r|-w] [-o OPTIONS]",
     "reopens an image with new options",
     " -r, read-only; -w, read-write; -o, options: lock=MODE for now\n"
     " one permission transaction: on failure the image and every lock byte are\n"
     " exactly as before"},
    {"locks", nullptr, cmd_locks, "", "list who holds lock bytes on the image's file", nullptr},
    {"commit", nullptr, cmd_commit, "[-b BASE] [-n]",
     "commit the image into its backing file under a temporary exclusive lock",
     " -b, commit into BASE, deeper in the chain\n -n, only check whether that lock could be taken now"},
    {"activate", nullptr, cmd_activate, "", "take the locks of an inactive image (migration target)", nullptr},
    {"inactivate", nullptr, cmd_activate, "", "flush and drop every lock (migration source)", nullptr},
    {"sleep", nullptr, cmd_sleep, "MS", "wait MS milliseconds", nullptr},
    {"help", "?", cmd_help, "[CMD]", "help for one or all commands", nullptr},
    {"quit", "q", cmd_quit, "", "exit the program", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr, nullptr},
};

const IoCmd *io_find_command(const std::string &name) {
    for (const IoCmd *c = io_commands; c->name; c++) {
        if (name == c->name || (c->alias && name == c->alias)) return c;
    }
    return nullptr;
}

}  // namespace mb::tools::io

int main(int argc, char **argv) {
    using namespace mb::tools::io;
    static const struct option longopts[] = {
        {"cmd", required_argument, nullptr, 'c'},      {"format", required_argument, nullptr, 'f'},
        {"read-only", no_argument, nullptr, 'r'},      {"cache", required_argument, nullptr, 't'},
        {"aio", required_argument, nullptr, 'i'},      {"force-share", no_argument, nullptr, 'U'},
        {"lock", required_argument, nullptr, 'l'},     {"image-opts", no_argument, nullptr, 'O'},
        {"inactive", no_argument, nullptr, 'I'},
        {"snapshot", no_argument, nullptr, 's'},
        {"help", no_argument, nullptr, 'h'},           {"version", no_argument, nullptr, 'V'},
        {nullptr, 0, nullptr, 0},
    };
    ImageFlags flags;
    std::vector<std::string> cmds;
    int c;
    while ((c = getopt_long(argc, argv, "c:f:rt:i:Ul:shV", longopts, nullptr)) != -1) {
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
        case 'V': print_version(prog); return 0;
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
    if (!cmds.empty()) {
        for (auto &cmd : cmds) {
            if (!run_command(s, cmd)) s.failed = true;
            if (quit_requested) break;
        }
    } else {
        std::string line;
        while (!quit_requested && std::getline(std::cin, line)) {
            bool ok = run_command(s, line);
            if (!ok) s.failed = true;
            printf("%s\n", ok ? "[ok]" : "[error]");
            fflush(stdout);
        }
    }
    io_reap_aio(s, true);
    s.blk.reset();
    return s.failed ? 1 : 0;
}
