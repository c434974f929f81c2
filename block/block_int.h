// The block graph: drivers, nodes and edges (QEMU's vocabulary).
//
//   BlockDriver       a table of optional callbacks, one per driver, listed
//                     explicitly in block/drivers/driver-list.cpp
//   BlockDriverState  a node: a driver instance, reference-counted
//   BdrvChild         an edge with a role (file, backing) and the (perm,
//                     shared) its parent asks of the child; it owns a
//                     reference to the child, and the child's back pointer to
//                     it never owns
//   BlockBackend      a user's handle on a graph (include/miniblock/block.h)
//
// Control plane returns Status; data plane returns negative errno.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "block/coroutine.h"
#include "block/permissions.h"
#include "miniblock/status.h"
#include "qapi-types.h"
#include "miniblock/options.h"

namespace mb {

struct BlockDriverState;
struct BdrvChild;

// Open flags, derived from the options (cache, aio, read-only).
enum : int {
    BDRV_O_RDWR = 1 << 0,
    BDRV_O_NOCACHE = 1 << 1,     // O_DIRECT
    BDRV_O_NATIVE_AIO = 1 << 2,  // libaio
    BDRV_O_NO_FLUSH = 1 << 3,    // cache=unsafe
    BDRV_O_WRITETHROUGH = 1 << 4,
    BDRV_O_INACTIVE = 1 << 5,    // fds open, no locks, no writes (migration)
    BDRV_O_PROBED = 1 << 6,      // raw chosen by probing: guard sector 0
    // QEMU's discard=ignore and detect-zeroes=on|unmap (block/qemu-options.cpp).
    BDRV_O_DISCARD_IGNORE = 1 << 20,
    BDRV_O_DETECT_ZEROES = 1 << 21,
    BDRV_O_DETECT_ZEROES_UNMAP = 1 << 22,
};

// What co_block_status reports of a range.
enum : int {
    BDRV_BLOCK_DATA = 1 << 0,          // reads return data from *file at *map
    BDRV_BLOCK_ZERO = 1 << 1,          // reads return zeroes
    BDRV_BLOCK_OFFSET_VALID = 1 << 2,  // *map and *file are set
    BDRV_BLOCK_ALLOCATED = 1 << 3,     // this layer defines the content (else: its backing file)
    BDRV_BLOCK_COMPRESSED = 1 << 4,
};

// Flags of a request.
enum : int {
    BDRV_REQ_FUA = 1 << 0,
    BDRV_REQ_MAY_UNMAP = 1 << 1,
    BDRV_REQ_WRITE_COMPRESSED = 1 << 2,  // whole clusters, compressed: only qcow2 honours it
    BDRV_REQ_NO_FALLBACK = 1 << 3,       // write zeroes: -ENOTSUP rather than writing zero buffers
};

enum class ChildRole { File, Backing };
const char *child_role_name(ChildRole role);

// A driver's private state of one node.
struct NodeState {
    virtual ~NodeState() = default;
};

// What `miniblock-img info` shows of a node beyond the generic fields.
struct FormatInfo {
    std::vector<std::pair<std::string, std::string>> fields;  // ordered
};

struct BlockDriver {
    const char *format_name;  // "file", "raw", "qcow2": the `driver` option
    bool is_protocol;         // opens a filename; else a format over a file child
    // Raw-like data can be shared by several writers (raw, file, nbd); other
    // formats keep metadata and cannot (lock=shared refused read-write).
    bool sharable_writes;
    // URI schemes this protocol claims ("nbd", "nbd+unix"), nullptr-terminated.
    const char *const *protocols;

    // Formats: how sure we are that these first bytes are ours (0..100).
    int (*probe)(const uint8_t *buf, size_t len, const char *filename);

    // Control plane.  open() reads its options (already validated against
    // the schema) and opens its children with bdrv_open_child().
    Status (*open)(BlockDriverState *bs, qapi::OptionDict &opts);
    void (*close)(BlockDriverState *bs);

    // Permissions.  child_perm: what bs asks of child c given bs's own
    // cumulative (perm, shared); nullptr means pass-through for the file
    // child and the backing-file row of the lock table for a backing child.
    void (*child_perm)(BlockDriverState *bs, BdrvChild *c, PermPair cumulative, PermPair *out);
    // Protocols: the transaction steps (take locks / keep / roll back).
    Status (*check_perm)(BlockDriverState *bs, PermPair cumulative);
    void (*set_perm)(BlockDriverState *bs, PermPair cumulative);
    void (*abort_perm_update)(BlockDriverState *bs);

    // Data plane: 0 or negative errno.
    Task<int> (*co_preadv)(BlockDriverState *bs, int64_t offset, int64_t bytes, uint8_t *buf,
                           int flags);
    Task<int> (*co_pwritev)(BlockDriverState *bs, int64_t offset, int64_t bytes,
                            const uint8_t *buf, int flags);
    Task<int> (*co_pwrite_zeroes)(BlockDriverState *bs, int64_t offset, int64_t bytes, int flags);
    Task<int> (*co_pdiscard)(BlockDriverState *bs, int64_t offset, int64_t bytes);
    Task<int> (*co_flush)(BlockDriverState *bs);
    Task<int> (*co_truncate)(BlockDriverState *bs, int64_t size);
    // The status of [offset, offset + bytes): BDRV_BLOCK_* flags (>= 0) or
    // negative errno; *pnum (> 0, <= bytes) is how far that status holds.
    // nullptr: everything is DATA | ALLOCATED (protocols, raw).
    Task<int> (*co_block_status)(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                 int64_t *pnum, int64_t *map, BlockDriverState **file);
    // Length in bytes, or negative errno.
    int64_t (*getlength)(BlockDriverState *bs);
    // Bytes allocated on the host, or negative errno (nullptr: unknown).
    int64_t (*get_allocated_size)(BlockDriverState *bs);

    void (*get_info)(BlockDriverState *bs, FormatInfo *info);

    // Creates an image of `size` bytes at `filename`; `opts` are the
    // format's creation options (-o).  The driver erases each key it reads
    // and calls bdrv_create_options_done() before touching any file.
    Status (*create)(const std::string &filename, int64_t size, qapi::OptionDict &opts);

    // Protocols: reopens the node's file read-write (true) or read-only
    // (false) on a new fd, moving its locks over without a moment in which
    // they are free; on failure nothing changed.  Used by commit to write
    // into a backing file.  nullptr: the node cannot switch.
    Status (*reopen_rw)(BlockDriverState *bs, bool writable);

    // Formats: drops and re-reads everything cached from the image
    // (header, tables), as at open.  Called by activate once the locks are
    // held: a migration target opened inactive while the source was still
    // writing.  nullptr: nothing is cached.
    Status (*invalidate_cache)(BlockDriverState *bs);

    // Filters: a driver event from a format above (bdrv_debug_event), for
    // blkdebug.  nullptr: the event passes on to the file child.
    void (*debug_event)(BlockDriverState *bs, const char *event);

    // co_pwritev honours BDRV_REQ_WRITE_COMPRESSED; other drivers never see
    // the flag: the write fails with ENOTSUP (as QEMU's) instead of landing
    // uncompressed.
    bool can_compress;
};

// Creates an image with `driver` ("raw", "qcow2", ...).
Status bdrv_create(std::string_view driver, const std::string &filename, int64_t size,
                   qapi::OptionDict opts);
// Fails naming the first creation option no one consumed.
Status bdrv_create_options_done(std::string_view driver, const qapi::OptionDict &opts);

// An intrusive reference to a node.
class BdrvRef {
public:
    BdrvRef() = default;
    explicit BdrvRef(BlockDriverState *bs);  // takes a new reference
    BdrvRef(const BdrvRef &o) : BdrvRef(o.bs_) {}
    BdrvRef(BdrvRef &&o) noexcept : bs_(std::exchange(o.bs_, nullptr)) {}
    BdrvRef &operator=(BdrvRef o) noexcept {
        std::swap(bs_, o.bs_);
        return *this;
    }
    ~BdrvRef() { reset(); }
    void reset();
    BlockDriverState *get() const { return bs_; }
    BlockDriverState *operator->() const { return bs_; }
    explicit operator bool() const { return bs_ != nullptr; }

    // Adopts a reference the caller already owns.
    static BdrvRef adopt(BlockDriverState *bs) {
        BdrvRef r;
        r.bs_ = bs;
        return r;
    }

private:
    BlockDriverState *bs_ = nullptr;
};

struct BdrvChild {
    std::string name;                     // "file", "backing", "root"
    ChildRole role = ChildRole::File;
    BlockDriverState *parent_bs = nullptr;  // never owning; null for a root
    std::string parent_name;              // for messages: "drive 'd0'", "node 'x'"
    BdrvRef bs;                           // the child node (owning)
    PermPair perm{0, BLK_PERM_ALL};       // committed
    PermPair pending{0, BLK_PERM_ALL};    // during a transaction
    bool has_pending = false;
    // Set by an operation that fixes this edge's (perm, shared) for its
    // duration (commit): a refresh keeps the edge's value instead of
    // recomputing it from the parent.
    bool pinned = false;

    BdrvChild() = default;
    BdrvChild(const BdrvChild &) = delete;
    BdrvChild &operator=(const BdrvChild &) = delete;
    ~BdrvChild();
};

struct BlockDriverState {
    const BlockDriver *drv = nullptr;
    std::string node_name;
    std::string filename;  // what the user named (for messages)
    int open_flags = 0;
    bool read_only = true;
    qapi::LockMode lock_mode = qapi::LockMode::Auto;
    qapi::CacheMode cache_mode = qapi::CacheMode::Writeback;
    NodeRole role = NodeRole::Top;
    int64_t lock_wait_ms = 0;  // retry a refused lock this long
    uint32_t request_alignment = 1;
    // Requests come from several queues on several threads at once (the C
    // API's queues=N): only drivers without per-request shared state may
    // be in such a graph, and they must not take coroutine locks.
    bool multiqueue = false;
    qapi::OptionDict options;  // as opened, children included
    std::string option_path;   // "backing.file." for messages about options

    std::unique_ptr<NodeState> opaque;
    std::vector<std::unique_ptr<BdrvChild>> children;
    std::vector<BdrvChild *> parents;  // never owning

    PermPair cur_perm{0, BLK_PERM_ALL};  // committed cumulative
    PermPair new_perm{0, BLK_PERM_ALL};  // during a transaction
    int refcnt = 0;

    BlockDriverState() = default;
    BlockDriverState(const BlockDriverState &) = delete;
    BlockDriverState &operator=(const BlockDriverState &) = delete;
    ~BlockDriverState();

    BdrvChild *child(ChildRole role) const;
    BdrvChild *file() const { return child(ChildRole::File); }
    BdrvChild *backing() const { return child(ChildRole::Backing); }
    bool writable() const { return !read_only && !(open_flags & BDRV_O_INACTIVE); }
    template <class T>
    T *state() const { return static_cast<T *>(opaque.get()); }
};

// --- the driver list (block/drivers/driver-list.cpp) -----------------------

// Every driver, in one explicit list; nullptr-terminated.
extern const BlockDriver *const block_drivers[];
const BlockDriver *bdrv_find_driver(std::string_view name);
const BlockDriver *bdrv_find_protocol(std::string_view filename);
// The same, loading a module for the name or URI scheme if none is
// registered: nullptr (and *searched, if given, lists the directories
// searched) when there is none, an error naming the file when a module is
// there but cannot be used.
Result<const BlockDriver *> bdrv_find_or_load_driver(std::string_view name, std::string *searched);
Result<const BlockDriver *> bdrv_find_or_load_protocol(std::string_view filename);
// block_drivers[] only.
const BlockDriver *bdrv_find_builtin_driver(std::string_view name);
const BlockDriver *bdrv_find_builtin_protocol(std::string_view scheme);
// The end of `miniblock-img --help`: the drivers linked in, then those the
// module directories hold (listed, not loaded), as qemu-img's help ends.
std::string bdrv_supported_formats_text();
// The format whose probe scores highest for these bytes, or nullptr.
const BlockDriver *bdrv_probe_format(const uint8_t *buf, size_t len, const char *filename);
// Bytes read from a file for probing.
inline constexpr size_t BDRV_PROBE_BYTES = 2048;

// --- opening (block/block.cpp) -----------------------------------------------

// What a node inherits from its parent.
struct InheritedOptions {
    bool read_only = false;
    qapi::CacheMode cache = qapi::CacheMode::Writeback;
    qapi::LockMode lock = qapi::LockMode::Auto;
    NodeRole role = NodeRole::Top;
    bool inactive = false;
    // The node's name unless node-name is given: a drive's top node takes
    // the drive's name, children "PARENT.file", "PARENT.backing".
    std::string node_name;
};

// Opens a node and, recursively, its children from `opts` (the tree made by
// qapi::parse_drive_options).  No locks are taken: the caller attaches the
// node to a parent edge and refreshes permissions (one transaction for the
// whole graph).  `path` prefixes option names in errors ("backing", "backing.file").
Result<BdrvRef> bdrv_open(qapi::OptionDict opts, const InheritedOptions &inherit,
                          std::string_view path = "");

// QEMU's -blockdev keys of one node (force-share, locking, cache.direct,
// cache.no-flush, auto-read-only, discard, detect-zeroes) turned into
// miniblock's (lock, cache, read-only) and open flags (*flags); a
// contradiction between the two spellings is an error
// (block/qemu-options.cpp).
Status bdrv_translate_qemu_options(qapi::OptionDict &opts, const InheritedOptions &inh,
                                   std::string_view path, int *flags);

// For drivers' open(): opens the child in option `name` ("file", "backing")
// and attaches it to bs with `role`.  Fails if absent and required.
Result<BdrvChild *> bdrv_open_child(BlockDriverState *bs, qapi::OptionDict &opts,
                                    std::string_view name, ChildRole role);
// Attaches an already-open node as a child of parent (parent may be null for
// a root edge).  Permissions are not refreshed.
BdrvChild *bdrv_attach_child(BlockDriverState *parent, BdrvRef child, std::string name,
                             ChildRole role, std::string parent_name = {});
// Detaches and frees a child edge of `parent`, then refreshes the old
// child's permissions (releases only: cannot fail).
void bdrv_detach_child(BlockDriverState *parent, BdrvChild *c);

// --- permissions (block/block.cpp) -------------------------------------------

// Recomputes the cumulative permissions of bs and every node below it from
// their parents' edges and applies them as one transaction: every protocol
// node takes its new locks (prepare), then all commit, or all abort and the
// lock bytes are exactly as before.  Edges with has_pending set contribute
// their pending value.
Status bdrv_refresh_perms(BlockDriverState *bs);
// Sets an edge's (perm, shared) in one transaction; on failure the edge and
// every lock are as before.
Status bdrv_child_try_set_perm(BdrvChild *c, PermPair p);
// Migration hand-over.  Activate clears BDRV_O_INACTIVE on bs and every node
// below it and takes all their locks in one transaction; on failure the
// flags and the lock bytes are exactly as before and the error names the
// holders (the source still running).  Inactivate flushes, then sets the
// flag everywhere below bs and drops every lock in one transaction.
Status bdrv_activate(BlockDriverState *bs);
Status bdrv_inactivate(BlockDriverState *bs);
bool bdrv_is_inactive(const BlockDriverState *bs);
// Commit (block/commit.cpp): copies what the layers above `base` define into
// base, under a temporary exclusive lock on base (see bdrv_commit there).
struct CommitParams {
    std::string base;        // a file name or node name in top's chain; empty: top's backing
    bool check_only = false; // take the lock and give it back at once (dry run)
    // Called now and then with bytes done and the total.
    void (*progress)(int64_t done, int64_t total, void *opaque) = nullptr;
    void *progress_opaque = nullptr;
};
Status bdrv_commit(BdrvChild *root, const CommitParams &p);
// Drops every cluster of bs's own layer so that reads fall through to its
// backing file (qemu-img commit empties the overlay so); bs must be
// writable (block/make-empty.cpp).
Status bdrv_make_empty(BlockDriverState *bs);

// The (perm, shared) a parent asks of a node in the lock table's terms.
Result<PermPair> bdrv_table_perms(const BlockDriverState *bs);

// The full name of a node's option for messages: "backing.file.aio".
std::string bdrv_option_name(const BlockDriverState *bs, std::string_view key);
// The same for a path prefix ("backing.file") and a key.
std::string option_path_join(std::string_view path, std::string_view key);

// A human description for messages: "node 'x' (a.img)".
std::string bdrv_describe(const BlockDriverState *bs);

// --- I/O (block/io.cpp): checks, then the driver ------------------------------

Task<int> bdrv_co_preadv(BdrvChild *c, int64_t offset, int64_t bytes, uint8_t *buf, int flags = 0);
Task<int> bdrv_co_pwritev(BdrvChild *c, int64_t offset, int64_t bytes, const uint8_t *buf,
                          int flags = 0);
Task<int> bdrv_co_pwrite_zeroes(BdrvChild *c, int64_t offset, int64_t bytes, int flags = 0);
Task<int> bdrv_co_pdiscard(BdrvChild *c, int64_t offset, int64_t bytes);
Task<int> bdrv_co_flush(BlockDriverState *bs);
Task<int> bdrv_co_truncate(BdrvChild *c, int64_t size);
int64_t bdrv_getlength(BlockDriverState *bs);
// The status of [offset, offset + bytes) of bs alone (not its backing
// file): BDRV_BLOCK_* or negative errno; *pnum (> 0, <= bytes) is how far it
// holds.  A driver without co_block_status is DATA | ALLOCATED throughout;
// a driver's *pnum out of range is -EIO, so that callers stepping by *pnum
// cannot loop forever.
Task<int> bdrv_co_layer_status(BlockDriverState *bs, int64_t offset, int64_t bytes, int64_t *pnum);
// Announces a driver event (QEMU's blkdebug names) to the first node down
// c's chain of file children that listens (blkdebug); free when none does.
void bdrv_debug_event(BdrvChild *c, const char *event);

}  // namespace mb
