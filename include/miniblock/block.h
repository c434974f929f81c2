// miniblock's C++ API for embedders: a drive (BlockBackend) opened from a
// -drive style option string or a json:{...} pseudo-filename.
//
//   auto d = mb::BlockBackend::open("file=disk.img,format=raw,lock=exclusive");
//   if (!d.ok()) { fprintf(stderr, "%s\n", d.status().to_string().c_str()); ... }
//   (*d)->pwrite(0, 512, buf);
//
// Synchronous calls run the block layer's event loop (GLib's default main
// context) until the request completes; coroutine callers use the co_ forms.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "miniblock/status.h"

namespace mb {

struct BlockDriverState;
struct BdrvChild;
template <class T> class Task;
namespace qapi { class OptionDict; }

// Warnings of the block layer (a probed raw image opened writable, a
// damaged qcow2 table, an NBD server's complaint) go to stderr as
// "WARNING: ..." unless an embedder installs a handler here (nullptr: back
// to stderr).  Not thread-safe: set it before opening drives.
void set_warning_handler(std::function<void(const std::string &)> handler);

class BlockBackend {
public:
    // Opens a graph from an option string ("file=a.img,format=raw,...",
    // "json:{...}", or a bare filename).  Every lock is taken in one
    // transaction at the end: a failed open holds none.
    static Result<std::unique_ptr<BlockBackend>> open(std::string_view spec);
    // The same from an option tree (tools set keys such as read-only first).
    static Result<std::unique_ptr<BlockBackend>> open(const qapi::OptionDict &opts,
                                                      std::string name = {});
    // Flushes a writable drive, then drops every node and lock.
    ~BlockBackend();
    BlockBackend(const BlockBackend &) = delete;
    BlockBackend &operator=(const BlockBackend &) = delete;

    // Data plane: 0 or negative errno.  A request past the image's end
    // fails with -EIO (the image never grows by a write).
    int pread(int64_t offset, int64_t bytes, void *buf);
    int pwrite(int64_t offset, int64_t bytes, const void *buf, int flags = 0);
    int pwrite_zeroes(int64_t offset, int64_t bytes, int flags = 0);
    int pdiscard(int64_t offset, int64_t bytes);
    int flush();
    int truncate(int64_t size);
    int64_t length();

    Task<int> co_pread(int64_t offset, int64_t bytes, void *buf);
    Task<int> co_pwrite(int64_t offset, int64_t bytes, const void *buf, int flags = 0);
    Task<int> co_flush();

    // Migration hand-over (open with inactive=on for a target): activate
    // takes every lock of the graph in one transaction, or fails naming who
    // holds them with nothing changed; inactivate flushes and drops every
    // lock (writes are refused with -EPERM until activated again).
    Status activate();
    Status inactivate();
    bool inactive() const;

    // Commits the overlay into its backing file (or into `base`, a file or
    // node name deeper in the chain) under a temporary exclusive lock on the
    // base: refused, naming who is in the way, with every lock as before, if
    // anyone else uses the base.  With check_only, only says whether the
    // lock could be taken now.  The overlay is left as it was.
    Status commit(const std::string &base = {}, bool check_only = false,
                  void (*progress)(int64_t done, int64_t total, void *opaque) = nullptr,
                  void *opaque = nullptr);

    // The graph.
    BlockDriverState *bs() const;
    BdrvChild *root() const { return root_; }
    const std::string &name() const { return name_; }
    bool read_only() const;
    // For image creation only: writes may extend the image (QEMU's
    // BLK_ALLOW_WRITE_BEYOND_EOF).
    void set_allow_write_beyond_eof(bool allow) { allow_write_beyond_eof_ = allow; }

private:
    int check_range(int64_t offset, int64_t bytes, bool write);
    bool allow_write_beyond_eof_ = false;
    int64_t length_seen_ = -1;  // the image's length when last asked
    BlockBackend() = default;
    BdrvChild *root_ = nullptr;  // owned
    std::string name_;
};

}  // namespace mb
