// The one explicit list of drivers.  Adding a driver is its source file plus
// one line here (and its options in qapi/block-core.json).  Drivers written
// against the C plugin ABI (include/miniblock/driver.h) are listed in the
// second table when linked in, or built as modules (-Dmodules=enabled) and
// loaded on first use (block/plugin/module.cpp).
#include <dirent.h>

#include <cstring>
#include <map>
#include <set>
#include <mutex>

#include "block/block_int.h"
#include "block/plugin/plugin.h"
#include "block/plugin/plugin-config.h"
#include "block/warn.h"

namespace mb {

extern const BlockDriver bdrv_file;
extern const BlockDriver bdrv_raw;
extern const BlockDriver bdrv_qcow2;
#ifndef _WIN32  // librbd
extern const BlockDriver bdrv_rbd;
#endif

const BlockDriver *const block_drivers[] = {
    &bdrv_file,
    &bdrv_raw,
    &bdrv_qcow2,
#ifndef _WIN32
    &bdrv_rbd,
#endif
    nullptr,
};

}  // namespace mb

// Plugin-ABI drivers linked into the library.
extern "C" mbd_driver *mbd_builtin_null_co(void);
extern "C" mbd_driver *mbd_builtin_blkdebug(void);
extern "C" mbd_driver *mbd_builtin_crash_sim(void);
#ifndef MB_MODULE_CLOOP
extern "C" mbd_driver *mbd_builtin_cloop(void);
#endif
#if !defined(MB_MODULE_NBD) && !defined(_WIN32)  // the nbd client speaks POSIX sockets
extern "C" mbd_driver *mbd_builtin_nbd(void);
#endif

namespace mb {

namespace {
struct BuiltinPlugin {
    const char *name;
    mbd_entry_fn *entry;
};
const BuiltinPlugin builtin_plugins[] = {
#ifndef MB_MODULE_CLOOP
    {"cloop", mbd_builtin_cloop},
#endif
#if !defined(MB_MODULE_NBD) && !defined(_WIN32)
    {"nbd", mbd_builtin_nbd},
#endif
    {"null-co", mbd_builtin_null_co},
    {"blkdebug", mbd_builtin_blkdebug},
    {"crash-sim", mbd_builtin_crash_sim},
};
}  // namespace

// Plugin-ABI drivers this build made modules of (block-NAME.so).
const char *const builtin_module_names[] = {
#ifdef MB_MODULE_CLOOP
    "cloop",
#endif
#ifdef MB_MODULE_NBD
    "nbd",
#endif
    nullptr,
};

namespace {
// URI schemes of this build's modules whose names do not lead to the module
// (block-SCHEME.so, or the part of SCHEME before '+'): QEMU's
// block_driver_modules table has the same column.
struct ModuleScheme {
    const char *scheme;
    const char *module;
};
const ModuleScheme module_schemes[] = {
#ifdef MB_MODULE_NBD
    {"nbds", "nbd"},  // claimed by nbd to refuse TLS clearly
    {"nbds+unix", "nbd"},
    {"nbds+tcp", "nbd"},
#endif
    {nullptr, nullptr},
};
}  // namespace

void plugin_register_builtins() {
    static std::once_flag once;
    std::call_once(once, [] {
        for (const BuiltinPlugin &p : builtin_plugins) {
            auto r = plugin_register(p.entry(), std::string("built-in driver ") + p.name, false);
            // A built-in that does not register is a bug of this build.
            if (!r.ok()) {
                fprintf(stderr, "miniblock: %s\n", r.status().to_string().c_str());
                abort();
            }
        }
    });
}

const BlockDriver *bdrv_find_builtin_driver(std::string_view name) {
    for (const BlockDriver *const *d = block_drivers; *d; d++)
        if (name == (*d)->format_name) return *d;
    return nullptr;
}

const BlockDriver *bdrv_find_builtin_protocol(std::string_view scheme) {
    for (const BlockDriver *const *d = block_drivers; *d; d++) {
        if (!(*d)->protocols) continue;
        for (const char *const *p = (*d)->protocols; *p; p++)
            if (scheme == *p) return *d;
    }
    return nullptr;
}

Result<const BlockDriver *> bdrv_find_or_load_driver(std::string_view name, std::string *searched) {
    if (const BlockDriver *d = bdrv_find_builtin_driver(name)) return d;
    plugin_register_builtins();
    if (const BlockDriver *d = plugin_find(name)) return d;
    return module_load(name, searched);
}

const BlockDriver *bdrv_find_driver(std::string_view name) {
    auto r = bdrv_find_or_load_driver(name, nullptr);
    return r.ok() ? *r : nullptr;
}

Result<const BlockDriver *> bdrv_find_or_load_protocol(std::string_view filename) {
    // QEMU's "scheme:rest" names (rbd:pool/image): a protocols entry that
    // ends in ':' claims every filename starting with it.
    for (const BlockDriver *const *d = block_drivers; *d; d++) {
        if (!(*d)->protocols) continue;
        for (const char *const *p = (*d)->protocols; *p; p++) {
            std::string_view pre(*p);
            if (!pre.empty() && pre.back() == ':' && filename.substr(0, pre.size()) == pre) return *d;
        }
    }
    size_t colon = filename.find("://");
    if (colon == std::string_view::npos) return static_cast<const BlockDriver *>(nullptr);
    std::string_view scheme = filename.substr(0, colon);
    if (const BlockDriver *d = bdrv_find_builtin_protocol(scheme)) return d;
    plugin_register_builtins();
    if (const BlockDriver *d = plugin_find_scheme(scheme)) return d;
    // A module is named after the scheme, or after its part before '+'
    // (nbd+unix:// is block-nbd.so's).
    for (const ModuleScheme *m = module_schemes; m->scheme; m++) {
        if (scheme != m->scheme) continue;
        auto r = module_load(m->module, nullptr);
        if (!r.ok()) return r;
        return plugin_find_scheme(scheme);
    }
    auto r = module_load(scheme, nullptr);
    if (!r.ok() || *r) return r;
    size_t plus = scheme.find('+');
    if (plus != std::string_view::npos) {
        r = module_load(scheme.substr(0, plus), nullptr);
        if (!r.ok()) return r;
    }
    return plugin_find_scheme(scheme);
}

const BlockDriver *bdrv_find_protocol(std::string_view filename) {
    auto r = bdrv_find_or_load_protocol(filename);
    return r.ok() ? *r : nullptr;
}

std::string bdrv_supported_formats_text() {
    plugin_register_builtins();
    std::set<std::string> linked;
    for (const BlockDriver *const *d = block_drivers; *d; d++) linked.insert((*d)->format_name);
    for (const PluginDriver *pd : plugin_drivers())
        if (!pd->from_module) linked.insert(pd->name);
    // Modules are listed from the directories, not loaded: a broken one
    // must not stop --help.
    std::map<std::string, std::string> modules;  // name -> directory (the first wins)
    for (const std::string &dir : module_dirs()) {
        DIR *d = opendir(dir.c_str());
        if (!d) continue;
        while (struct dirent *e = readdir(d)) {
            std::string_view n = e->d_name;
            if (!n.starts_with("block-") || !n.ends_with(".so") || n.size() <= 9) continue;
            std::string name(n.substr(6, n.size() - 9));
            if (!linked.count(name)) modules.emplace(name, dir);
        }
        closedir(d);
    }
    std::string out = "Supported formats:";
    for (const std::string &n : linked) out += " " + n;
    out += "\nSupported formats from modules:";
    if (modules.empty()) out += " none";
    for (auto &[n, dir] : modules) out += " " + n;
    for (const char *const *m = builtin_module_names; *m; m++)
        if (!modules.count(*m)) out += std::string(" ") + *m + " (module not installed)";
    out += "\nModule directories:";
    std::string sep = " ";
    for (const std::string &dir : module_dirs()) {
        out += sep + dir;
        sep = ", ";
    }
    return out + "\n";
}

const BlockDriver *bdrv_probe_format(const uint8_t *buf, size_t len, const char *filename) {
    // Format modules of this build take part in probing, as if linked in.
    plugin_register_builtins();
    for (const char *const *m = builtin_module_names; *m; m++) (void)bdrv_find_driver(*m);
    const BlockDriver *best = nullptr;
    int best_score = 0;
    for (const BlockDriver *const *d = block_drivers; *d; d++) {
        if (!(*d)->probe) continue;
        int score = (*d)->probe(buf, len, filename);
        if (score > best_score) {
            best = *d;
            best_score = score;
        }
    }
    for (const PluginDriver *pd : plugin_drivers()) {
        if (!pd->c.probe) continue;
        int score = pd->c.probe(buf, len, filename);
        // A plugin's score is checked: out of range counts as "not mine".
        if (score < 0 || score > 100) {
            warn_report("Driver '" + pd->name + "' returned " + std::to_string(score) +
                        " from probe, which is not a score from 0 to 100; ignored");
            continue;
        }
        if (score > best_score) {
            best = &pd->bd;
            best_score = score;
        }
    }
    return best;
}

}  // namespace mb
