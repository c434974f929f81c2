// miniblock-img: qemu-img's counterpart for miniblock images.
//
//   create   make an image          info    describe one (human or JSON)
//   locks    who holds lock bytes   bench   requests per second, like qemu-img bench
#include <getopt.h>
#include <json-glib/json-glib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "block/aio.h"
#include "block/block_int.h"
#ifndef _WIN32  // /proc-based; Windows cannot name a lock's holder
#include "block/drivers/rbd-conn.h"
#include "block/locking/holders.h"
#else
#include "block/locking/win32.h"
#endif
#include "tools/img-commands.h"
#include "tools/img-common.h"
#include "tools/tool-common.h"

using namespace mb;
using namespace mb::tools;

int img_cmd_commit(int argc, char **argv);  // tools/img-commit.cpp

namespace {


void usage(FILE *out) {
    fprintf(out,
            "Usage: miniblock-img COMMAND [OPTIONS]... ARGS...\n"
            "Create, inspect and measure disk images through miniblock's block layer.\n"
            "\n"
            "Commands:\n"
            "  create [-q] [-u] [-f FMT] [-b BACKING -F BACKING_FMT] [-o OPTIONS] FILE [SIZE]\n"
            "      create an image of SIZE bytes (k, M, G, T suffixes, 1.5M); FMT defaults to\n"
            "      raw; -b: a qcow2 overlay of BACKING (SIZE defaults to the backing file's)\n"
            "  compare, resize, rebase, measure, dd, amend, snapshot\n"
            "      as qemu-img's (miniblock-img CMD --help says more)\n"
            "  info [-f FMT] [-U] [--image-opts] [--backing-chain] [--output=human|json] FILE\n"
            "      describe an image, as qemu-img info (a raw image is opened without locks;\n"
            "      --backing-chain: every image of its backing chain)\n"
            "  locks [--output=human|json] [--break] FILE...\n"
            "      list every process (and node of this process) holding lock bytes on each\n"
            "      file, with what it uses and forbids; takes no lock itself; for rbd:POOL/IMAGE,\n"
            "      RBD's lock owners, advisory lockers and watchers; --break breaks the rbd locks\n"
            "      of clients that no longer watch the image (they get blocklisted)\n"
            );
    mb::tools::print_img_bench_help(out);
    fprintf(out,
            "  commit [-f FMT] [-t CACHE] [-b BASE] [-d] [-p] [-q] [--check] [--image-opts] FILE\n"
            "      copy an overlay's data into its backing file under a temporary exclusive\n"
            "      lock on it; --check only says whether that lock could be taken now\n"
            );
    mb::tools::print_img_qcow2_help(out);
    mb::tools::print_img_convert_help(out);
    fprintf(out,
            "\n"
            "Common options:\n"
            "  -f FMT          image format; probed when absent\n"
            "  -t CACHE        cache mode: writeback, none, writethrough, directsync, unsafe\n"
            "  -i AIO          aio mode: threads, native (native needs -t none)\n"
            "  -U              force share: open with lock=shared\n"
            "  --image-opts    FILE is an option string (driver=raw,file.filename=a.img,...)\n"
            "  -h, --help      show this help (COMMAND --help or help COMMAND: that command's)\n"
            "  --help DRIVER   show the options of DRIVER (loading its module if needed)\n"
            "  -V, --version   show the version\n"
            "\n");
    fputs(mb::bdrv_supported_formats_text().c_str(), out);
}

// --help DRIVER: a driver's options, from the schema (plugins' included).
int img_driver_help(const char *driver) {
    auto d = mb::bdrv_find_or_load_driver(driver, nullptr);
    if (!d.ok()) return img_fail(d.take_status());
    std::string h = mb::qapi::driver_options_help(driver);
    if (h.empty()) return img_fail(Status::Error(EINVAL, std::string("Unknown driver '") + driver + "'"));
    fputs(h.c_str(), stdout);
    return 0;
}

// Options shared by the subcommands.
enum { OPT_OUTPUT = 256, OPT_IMAGE_OPTS, OPT_BACKING_CHAIN };

// --- create ----------------------------------------------------------------------

int cmd_create(int argc, char **argv) {
    std::string fmt = "raw", backing, backing_fmt;
    bool unsafe = false;
    ImgCommon common;
    if (auto st = img_parse_options(argc, argv,
                                    {.name = "create",
                                     .common = IMG_QUIET | IMG_OPTIONS,
                                     .own = {img_value('f', nullptr, &fmt), img_value('b', nullptr, &backing),
                                             img_value('F', nullptr, &backing_fmt), img_flag('u', nullptr, &unsafe)}},
                                    &common))
        return *st;
    const std::string &o = common.options;
    const bool quiet = common.quiet;
    if (o == "help" || o == "?") return print_img_create_options(fmt.c_str(), stdout) ? 0 : img_fail(Status::Error(EINVAL, "Unknown driver '" + fmt + "'"));
    int nargs = argc - optind;
    if (nargs < 1 || nargs > 2) return img_bad_usage("create needs FILE and SIZE");
    std::string file = argv[optind];
    std::optional<int64_t> size;
    if (nargs == 2) {
        size = parse_number(argv[optind + 1]);
        if (!size || *size < 0) {
            return img_fail(Status::Error(EINVAL, "Invalid image size '" + qapi::shown_name(argv[optind + 1]) + "'",
                                      "Expected bytes with an optional k, M, G, T, P or E suffix"));
        }
    }
    qapi::OptionDict opts;
    if (!o.empty()) {
        auto r = qapi::parse_keyval_options(o);
        if (!r.ok()) return img_fail(r.status());
        opts = std::move(*r);
    }
    if (!backing.empty()) {
        opts.set_str("backing_file", backing);
        if (!backing_fmt.empty()) opts.set_str("backing_fmt", backing_fmt);
        // The backing file must open (relative names are relative to FILE's
        // directory); its size is the default size.  With -u it is not
        // opened: the size must be given.
        std::string path = backing;
        size_t slash = file.rfind('/');
        if (backing[0] != '/' && slash != std::string::npos) path = file.substr(0, slash + 1) + backing;
        if (!unsafe) {
            ImageFlags bf;
            bf.format = backing_fmt;
            bf.read_only = true;
            bf.force_share = true;
            auto b = open_image(path, bf);
            if (!b.ok()) return img_fail(Status(b.status()).prefix("Could not open backing file '" + qapi::shown_name(path) + "'"));
            if (backing_fmt.empty()) {
                // As qemu-img 7.2: a probed backing format is not recorded
                // silently (a raw base probed today may probe as qcow2 later).
                return img_fail(Status::Error(EINVAL, file + ": Backing file specified without backing format",
                                              std::string("Detected format of ") + (*b)->bs()->drv->format_name + "."));
            }
            if (!size) size = (*b)->length();
        } else if (backing_fmt.empty()) {
            return img_fail(Status::Error(EINVAL, file + ": Backing file specified without backing format"));
        }
    } else if (!backing_fmt.empty()) {
        return img_bad_usage("-F needs -b");
    }
    if (!size) return img_fail(Status::Error(EINVAL, file + ": Image creation needs a size parameter"));
    if (!quiet) printf("Formatting '%s', fmt=%s size=%" PRId64 "\n", file.c_str(), fmt.c_str(), *size);
    Status st = bdrv_create(fmt, file, *size, opts);
    if (!st.ok()) return img_fail(st);
    return 0;
}

// --- locks --------------------------------------------------------------------------

#ifdef _WIN32
// Windows cannot name a lock's holder: what can be seen is which of QEMU's
// bytes other handles hold, reported as one holder "not visible from here",
// the way Linux reports locks whose owner it cannot see.
int win32_cmd_locks(int argc, char **argv, bool json) {
    int ret = 0;
    JsonBuilder *b = json ? json_builder_new() : nullptr;
    if (b) json_builder_begin_array(b);
    auto names = [&](uint32_t bits) {
        json_builder_begin_array(b);
        for (int i = 0; i < BLK_PERM_COUNT; i++)
            if (bits & (1u << i)) json_builder_add_string_value(b, perm_name(i));
        json_builder_end_array(b);
    };
    for (int i = optind; i < argc; i++) {
        const char *path = argv[i];
        auto held = win32_lock_bytes_held(path);
        if (!held.ok()) {
            print_error(img_prog, held.status());
            ret = 1;
            continue;
        }
        const bool any = held->use || held->forbid;
        if (b) {
            json_builder_begin_object(b);
            json_builder_set_member_name(b, "filename");
            json_builder_add_string_value(b, path);
            json_builder_set_member_name(b, "holders");
            json_builder_begin_array(b);
            if (any) {
                json_builder_begin_object(b);
                json_builder_set_member_name(b, "pid");
                json_builder_add_null_value(b);
                json_builder_set_member_name(b, "kind");
                json_builder_add_string_value(b, "LockFileEx");
                json_builder_set_member_name(b, "uses");
                names(held->use);
                json_builder_set_member_name(b, "forbids");
                names(held->forbid);
                json_builder_end_object(b);
            }
            json_builder_end_array(b);
            json_builder_end_object(b);
            continue;
        }
        printf("%s:\n", path);
        if (!any) printf("  no locks held\n");
        else printf("  not visible from here: uses: %s / forbids: %s\n", perm_names(held->use).c_str(),
                    perm_names(held->forbid).c_str());
    }
    if (b) {
        json_builder_end_array(b);
        print_json(b);
        g_object_unref(b);
    }
    return ret;
}
#endif

int cmd_locks(int argc, char **argv) {
    bool json = false, do_break = false;
    static const struct option longopts[] = {{"output", required_argument, nullptr, OPT_OUTPUT},
                                             {"break", no_argument, nullptr, 'B'},
                                             {"help", no_argument, nullptr, 'h'},
                                             {nullptr, 0, nullptr, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, nullptr)) != -1) {
        switch (c) {
        case OPT_OUTPUT:
            if (!parse_output(optarg, &json)) return img_bad_usage(std::string("--output must be human or json, not '") + optarg + "'");
            break;
        case 'h': usage(stdout); return 0;
        case 'B': do_break = true; break;
        default: return img_bad_usage("invalid option for locks");
        }
    }
    if (optind >= argc) return img_bad_usage("locks needs at least one FILE");
#ifdef _WIN32
    return win32_cmd_locks(argc, argv, json);
#else
    int ret = 0;
    JsonBuilder *b = json ? json_builder_new() : nullptr;
    if (b) json_builder_begin_array(b);
    for (int i = optind; i < argc; i++) {
        const char *path = argv[i];
        // An RBD image: RBD's own owners, watchers and advisory locks.
        if (strncmp(path, "rbd:", 4) == 0 && !json) {
            ret |= rbd::report_locks(path, do_break, img_prog);
            continue;
        }
        if (do_break) return img_bad_usage("--break is only for rbd: images (with --output=human)");
        struct stat st;
        // stat, not open: looking must not disturb anyone's locks.
        if (stat(path, &st) < 0) {
            print_error(img_prog, PosixError(std::string("Could not stat '") + path + "'", errno));
            ret = 1;
            continue;
        }
        auto holders = find_lock_holders(st.st_dev, st.st_ino);
        if (b) {
            json_builder_begin_object(b);
            json_builder_set_member_name(b, "filename");
            json_builder_add_string_value(b, path);
            json_builder_set_member_name(b, "holders");
            json_builder_begin_array(b);
            for (auto &h : holders) mb::tools::add_lock_holder_json(b, h, true);
            json_builder_end_array(b);
            json_builder_end_object(b);
            continue;
        }
        printf("%s:\n", path);
        if (holders.empty()) printf("  no locks held\n");
        for (auto &h : holders) {
            std::string who = h.pid ? "pid " + std::to_string(h.pid) : std::string("not visible from here");
            if (!h.comm.empty()) who += " (" + h.comm + ")";
            printf("  %s: %s\n", who.c_str(), describe_holder_bits(h).c_str());
            if (!h.cmdline.empty()) printf("    command line: %s\n", h.cmdline.c_str());
            if (h.write_lock) printf("    holds a write lock (not QEMU's protocol, e.g. a whole-file lock)\n");
        }
    }
    if (b) {
        json_builder_end_array(b);
        print_json(b);
        g_object_unref(b);
    }
    return ret;
#endif
}

// -h/--help, -V/--version, and unambiguous abbreviations of the long
// forms (--he, --vers), as getopt_long gives qemu-img.
bool is_opt(const char *arg, char short_name, const char *long_name) {
    if (arg[0] == '-' && arg[1] == short_name && !arg[2]) return true;
    size_t n = strlen(arg);
    return n > 2 && !strncmp(arg, "--", 2) && !strncmp(arg, long_name, n);
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 2) return img_bad_usage("a command is needed");
    std::string cmd = argv[1];
    if (is_opt(argv[1], 'h', "--help")) cmd = "--help";
    if (is_opt(argv[1], 'V', "--version")) {
        print_version(img_prog);
        return 0;
    }
    bool wants_help = false;  // CMD ... --help anywhere before "--"
    for (int i = 2; i < argc && strcmp(argv[i], "--"); i++)
        if (is_opt(argv[i], 'h', "--help")) wants_help = true;
    if ((cmd == "help" && argc == 3) || wants_help) {
        // Each command's own help (tools/img-help.cpp).
        const char *name = cmd == "help" ? argv[2] : argv[1];
        if (print_img_command_help(name, stdout)) return 0;
        if (cmd == "help") return img_bad_usage(std::string("Command not found: ") + name);
    }
    if (cmd == "-h" || cmd == "--help" || cmd == "help") {
        if (argc > 2) return img_driver_help(argv[2]);
        usage(stdout);
        return 0;
    }
    setvbuf(stdout, nullptr, _IOLBF, 0);
    std::map<std::string, std::function<int(int, char **)>> cmds = {
        {"create", cmd_create}, {"info", mb::tools::cmd_info}, {"locks", cmd_locks}, {"bench", mb::tools::cmd_bench},
        {"check", mb::tools::cmd_check}, {"map", mb::tools::cmd_map}, {"convert", mb::tools::cmd_convert},
        {"commit", img_cmd_commit},
        {"compare", mb::tools::cmd_compare}, {"resize", mb::tools::cmd_resize},
        {"measure", mb::tools::cmd_measure}, {"dd", mb::tools::cmd_dd}, {"rebase", mb::tools::cmd_rebase},
        {"amend", mb::tools::cmd_amend},
        {"snapshot", mb::tools::cmd_snapshot}};
    auto it = cmds.find(cmd);
    if (it == cmds.end()) return img_bad_usage("Command not found: " + cmd);
    // getopt sees the subcommand as argv[0].
    return it->second(argc - 1, argv + 1);
}
