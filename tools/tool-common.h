// What miniblock-img and miniblock-io share: turning command-line flags into
// drive options, numbers with suffixes, human sizes, error printing.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "miniblock/block.h"
#include "miniblock/options.h"
#include "miniblock/status.h"

namespace mb::tools {

// The flags every tool shares for opening an image (-f, -r, -t, -i, -U,
// --image-opts, -l/--lock).
struct ImageFlags {
    std::string format;         // -f
    bool read_only = false;     // -r
    std::string cache;          // -t
    std::string aio;            // -i
    bool force_share = false;   // -U: lock=shared
    std::string lock;           // --lock
    bool image_opts = false;    // --image-opts: the argument is an option string
    bool inactive = false;      // open inactive (migration target): inactive=on
    bool snapshot = false;      // -s: writes go to a temporary qcow2 overlay
};

// The option tree for `image` opened with `flags`.
Result<qapi::OptionDict> image_options(std::string_view image, const ImageFlags &flags);
// Opens it.  With flags.snapshot (QEMU's -snapshot): a temporary qcow2
// overlay (deleted once open) takes the writes, and the image is opened as
// its read-only backing file with the lock mode given (--lock applies to
// the image, as a backing file: at most a read lock that keeps writers out
// by default, exclusive only when asked for); the image's own backing
// files are never locked more than auto.
Result<std::unique_ptr<BlockBackend>> open_image(std::string_view image, const ImageFlags &flags);

// Resizes under the resize permission, taken for the duration in one
// transaction (refused, naming who forbids resizing, with every lock as
// before) and given back; the new length.
Result<int64_t> truncate_with_resize_perm(BlockBackend &blk, int64_t size);

// "123", "4k", "1M", "2G", "1.5M" (powers of 1024), like qemu-img's sizes.
std::optional<int64_t> parse_number(std::string_view s);
// "1 MiB", "512 B": qemu-img's human sizes.
std::string human_size(int64_t bytes);

// --version: "prog version X.Y.Z" (the meson project's version).
void print_version(const char *prog);

// Prints "prog: message" then the detail lines to stderr.
void print_error(const char *prog, const Status &st);

// The file behind a graph's protocol node, for lock diagnostics.
std::string protocol_filename(const BlockBackend &blk);

}  // namespace mb::tools
