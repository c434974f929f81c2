// The plugin adapter: turns a C driver (include/miniblock/driver.h) into a
// BlockDriver the core uses like any built-in one.  Internal to the library.
//
//   registry.cpp   checks and registers a driver struct; lookups by name/scheme
//   adapter.cpp    the BlockDriver callbacks: open, permissions, data plane
//   requests.cpp   request slots (completion from any thread, exactly once,
//                  timeouts), the worker pool of the blocking thread models
//   api.cpp        the mbd_* functions a driver calls
//   module.cpp     loading block-NAME.so from the module directories
#pragma once

#include <atomic>
#include <coroutine>
#include <deque>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "block/block_int.h"
#include "miniblock/driver.h"

namespace mb {

class AioContext;

struct PluginDriver {
    BlockDriver bd{};  // what the core sees; bd.format_name is name.c_str()
    mbd_driver c{};    // the plugin's struct, zero past what it declared
    std::string name;
    std::string origin;  // "built in" or the module's path
    bool from_module = false;
    bool lock_hooks = false;
    std::vector<std::string> scheme_names;
    std::vector<const char *> schemes;  // nullptr-terminated, into scheme_names
    std::vector<mbd_option> options;    // as declared (names point into the plugin)
};

// The plugin's handle, and what a worker needs to call into it.  Owned
// by the node and by every request of a blocking thread model while a
// worker may still call the plugin for it (queued or running): a drive
// closed after a request timed out goes at once, while a worker is still
// inside the plugin or has not yet dropped the request.  The last owner to
// let go runs lock_release and close: on the loop thread in mb_close when
// no call is inside the plugin, else on the worker whose call returned
// last, after it returned.  Never while another call is inside the plugin.
struct PluginHandle {
    const PluginDriver *pd = nullptr;
    void *handle = nullptr;
    bool locks = false;    // lock hooks in use (not lock=off, hooks present)
    std::mutex serialize;  // MBD_THREAD_SERIALIZE: one request at a time
    // Blocking child I/O of the workers (mbd_child_pread...): it runs on
    // the request's loop, and plugin_close waits for what is in flight
    // there; once the node is closing, a worker's child I/O fails with EIO.
    std::mutex child_lock;
    int child_inflight = 0;  // under child_lock
    bool node_gone = false;  // under child_lock
    AioContext *child_loop = nullptr;  // where that I/O runs (under child_lock)
    ~PluginHandle();
};

// The state of one node opened by a plugin.
struct PluginNode : NodeState {
    const PluginDriver *pd = nullptr;
    void *handle = nullptr;  // core->handle, for the loop thread's callbacks
    std::shared_ptr<PluginHandle> core;
    int64_t timeout_ns = 30'000'000'000;
    bool locks = false;           // lock hooks in use (not lock=off, hooks present)
    bool lock_prepared = false;
    std::atomic<bool> broken{false};  // a request timed out: fail the rest
};

// What mbd_node points to during open.
struct PluginOpenCtx {
    BlockDriverState *bs;
    qapi::OptionDict *opts;
    const PluginDriver *pd;
    std::deque<std::string> kept;  // strings handed out by mbd_opt_str
};

// --- registry (registry.cpp) -------------------------------------------------

// Checks a driver struct the plugin handed over (ABI version, size, name,
// kind, callbacks consistent with its thread model and kind, options) and
// registers it with its schema.  Errors name `origin`.
Result<const BlockDriver *> plugin_register(const mbd_driver *d, const std::string &origin,
                                            bool from_module);
const BlockDriver *plugin_find(std::string_view name);
const BlockDriver *plugin_find_scheme(std::string_view scheme);
const PluginDriver *plugin_of(const BlockDriver *drv);
// Every registered plugin driver, in registration order.
std::vector<const PluginDriver *> plugin_drivers();
// Registers the drivers linked into the library (once).
void plugin_register_builtins();

// --- modules (module.cpp) ----------------------------------------------------

// The directories searched: MINIBLOCK_MODULE_DIR's entries, then the
// install's module directory.  Relative entries are ignored (never the
// current directory).
std::vector<std::string> module_dirs();
// Loads block-NAME.so for a driver name or URI scheme; nullptr when there
// is no such file (*searched says where we looked), an error when there is
// one and it cannot be used.
Result<const BlockDriver *> module_load(std::string_view name, std::string *searched);
// Loads a module by path (tests, and the above).
Result<const BlockDriver *> module_load_file(const std::string &path, std::string_view want);
// Names of the drivers built as modules of this build (for probing and help).
extern const char *const builtin_module_names[];

// --- the BlockDriver callbacks (adapter.cpp) ----------------------------------

void plugin_fill_block_driver(PluginDriver *pd);
// bdrv_create for a plugin driver (BlockDriver::create has no driver
// context): checks the -o options against the driver's declared ones, then
// runs its create callback.
Status plugin_create(const PluginDriver *pd, const std::string &filename, int64_t size,
                     qapi::OptionDict &opts);

// --- requests (requests.cpp) ---------------------------------------------------

enum class PluginOp { Read, Write, Flush, Zero, Discard };
const char *plugin_op_name(PluginOp op);

// co_await plugin_request(...): submits to the plugin (async callback or the
// worker pool) and yields 0 or a negative errno.
struct PluginRequest {
    PluginNode *node;
    PluginOp op;
    void *buf;
    uint64_t count;
    uint64_t offset;
    uint32_t flags;
    uint32_t slot = 0;
    int immediate = 1;  // != 1: the result, known before submission

    bool await_ready();
    bool await_suspend(std::coroutine_handle<> h);
    int await_resume();
    int timed_out(uint64_t word);
};

// Thread-local error of the control callback running on this thread.
struct PluginError {
    int err = 0;
    std::string message;
    std::string hints;
};
PluginError &plugin_error();
void plugin_error_clear();
// The thread-local error as a Status, or `fallback` when the plugin set none.
Status plugin_error_status(const PluginDriver *pd, const std::string &fallback, int def_err);

// On a worker, inside a call of the blocking models: the plugin's handle
// and the loop of the request it runs for; nullptr elsewhere.
PluginHandle *plugin_worker_core();
AioContext *plugin_worker_loop();

// True while a plugin's close runs after its node has gone (on the worker
// whose call returned last): its children are gone too.
bool plugin_children_gone();

// True on the thread that runs the block layer's loop.
bool plugin_on_loop_thread();
void plugin_note_loop_thread();

}  // namespace mb
