// miniblock-img subcommands kept outside miniblock-img.cpp (one file per
// group), registered in its command map.
#pragma once

#include <json-glib/json-glib.h>

#include <cstdio>
#include <string>

#include "block/block_int.h"
#include "block/drivers/qcow2-snapshot.h"
#include "miniblock/status.h"

namespace mb {
struct LockHolder;  // block/locking/holders.h
}

namespace mb::tools {

// What every miniblock-img subcommand shares (tools/img-common.cpp).
extern const char *const img_prog;  // "miniblock-img"
// Prints "miniblock-img: MESSAGE" and the detail lines; returns 1.
int img_fail(const Status &st);
// Prints the message and the pointer to --help; returns 1.
int img_bad_usage(const std::string &msg);
// --output=human|json; false for anything else.
bool parse_output(const char *arg, bool *json);
// Prints the builder's tree as qemu-img does (pretty, 4 spaces).
void print_json(JsonBuilder *b);
#ifndef _WIN32
// One lock holder as a JSON object: pid (null when not visible), program,
// uses, forbids; with `details` (`locks`) also command-line, kind and
// write-lock, in that order.
void add_lock_holder_json(JsonBuilder *b, const LockHolder &h, bool details);
#endif

// tools/img-help.cpp: "Usage: miniblock-img SYNOPSIS" and the command's own
// text; false for a command without an entry.
bool print_img_command_help(const char *cmd, FILE *out);
// create -o help: the format's creation options; false for an unknown format.
bool print_img_create_options(const char *fmt, FILE *out);

// tools/img-info.cpp
int cmd_info(int argc, char **argv);

// tools/img-compare.cpp, img-resize.cpp, img-measure.cpp, img-dd.cpp
int cmd_compare(int argc, char **argv);
int cmd_resize(int argc, char **argv);
int cmd_measure(int argc, char **argv);
int cmd_dd(int argc, char **argv);
// tools/img-rebase.cpp
int cmd_rebase(int argc, char **argv);
// tools/img-amend.cpp
int cmd_amend(int argc, char **argv);

// tools/img-snapshot.cpp; the list as qemu-img prints it (nothing when
// empty), and info's "snapshots" array.
int cmd_snapshot(int argc, char **argv);
void print_snapshot_list(const std::vector<qcow2::SnapshotInfo> &list);
void add_snapshots_json(JsonBuilder *b, const std::vector<qcow2::SnapshotInfo> &list);

// tools/img-qcow2.cpp
int cmd_check(int argc, char **argv);
int cmd_map(int argc, char **argv);
// Their lines of the --help text.
void print_img_qcow2_help(FILE *out);

// What a range of an image is, looking down its backing chain: found at
// `depth` (0: the image itself), or not present anywhere (reads zeroes).
struct MapEntry {
    int64_t start, length;
    int depth;
    bool present, zero, data, has_offset;
    int64_t offset;
    std::string file;
};
// The status of `off` looking down the chain from bs (tools/img-qcow2.cpp).
Task<int> chain_status(BlockDriverState *bs, int64_t off, int64_t bytes, MapEntry *e);

// tools/img-convert.cpp
int cmd_convert(int argc, char **argv);
void print_img_convert_help(FILE *out);

// tools/img-bench.cpp
int cmd_bench(int argc, char **argv);
void print_img_bench_help(FILE *out);

}  // namespace mb::tools
