// Loading drivers from modules: block-NAME.so, found in the directories of
// MINIBLOCK_MODULE_DIR (colon-separated) and then the install's module
// directory, the first time a node asks for driver NAME or a URI scheme
// NAME:// (QEMU's block modules work the same way).
//
// Never the current directory: a relative or empty entry of
// MINIBLOCK_MODULE_DIR is ignored (an empty PATH entry means "."; a module
// runs with the caller's privileges, so a file dropped in the working
// directory must not become code).  Modules stay loaded until exit.
#ifndef _WIN32
#include <dlfcn.h>
#endif
#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "block/plugin/plugin.h"
#include "block/plugin/plugin-config.h"

#ifndef MB_MODULE_DIR
#error "MB_MODULE_DIR must name the install's module directory"
#endif
#ifndef MB_BUILD_ID
#error "MB_BUILD_ID must identify this build"
#endif

namespace mb {

std::vector<std::string> module_dirs() {
    std::vector<std::string> dirs;
    if (const char *env = getenv("MINIBLOCK_MODULE_DIR")) {
        std::string_view v(env);
        while (!v.empty() || env[0]) {
            size_t colon = v.find(':');
            std::string_view d = v.substr(0, colon);
            if (!d.empty() && d[0] == '/') dirs.emplace_back(d);
            if (colon == std::string_view::npos) break;
            v.remove_prefix(colon + 1);
        }
    }
    dirs.emplace_back(MB_MODULE_DIR);
    return dirs;
}

Result<const BlockDriver *> module_load_file(const std::string &path, std::string_view want) {
#ifdef _WIN32
    // The linked-in plugin drivers work on Windows; loading DLLs does not yet.
    (void)want;
    return Status::Error(ENOTSUP, "Could not load module '" + path +
                                      "': loadable modules are not supported on Windows yet");
#else
    void *h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        return Status::Error(ENOEXEC, "Could not load module '" + path + "': " + (e ? e : "unknown error"));
    }
    // Modules of miniblock's own tree are tied to their build, as QEMU's are:
    // internal structures may differ between two builds of the same version.
    if (auto *stamp = static_cast<const char *>(dlsym(h, "mbd_module_build_id"))) {
        if (strncmp(stamp, MB_BUILD_ID, 64) != 0) {
            std::string theirs(stamp, strnlen(stamp, 64));
            dlclose(h);
            return Status::Error(ENOEXEC, "Module '" + path + "' comes from another build of miniblock (build " +
                                              theirs + "; this is build " + MB_BUILD_ID + ")",
                                 "Use the modules installed with this build of miniblock");
        }
    }
    auto *entry = reinterpret_cast<mbd_entry_fn *>(dlsym(h, MBD_ENTRY_POINT));
    if (!entry) {
        dlclose(h);
        return Status::Error(ENOEXEC, "Module '" + path + "' has no entry point '" MBD_ENTRY_POINT "'",
                             "A driver module ends with MBD_REGISTER(its struct mbd_driver)");
    }
    auto r = plugin_register(entry(), path, true);
    if (!r.ok()) {
        dlclose(h);
        return r;
    }
    const PluginDriver *pd = plugin_of(*r);
    bool match = pd->name == want;
    for (const std::string &s : pd->scheme_names) match |= s == want;
    if (!want.empty() && !match) {
        // Registered all the same (it is a valid driver, under its own name).
        return Status::Error(ENOENT, "Module '" + path + "' provides driver '" + pd->name +
                                         "', not '" + std::string(want) + "'",
                             "A module must be named block-NAME.so after its driver's name");
    }
    return r;
#endif
}

Result<const BlockDriver *> module_load(std::string_view name, std::string *searched) {
    // The name becomes part of a path: letters, digits, '-', '_' and '+' only.
    bool ok = !name.empty() && name.size() <= 64;
    for (char c : name)
        ok &= (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_' || c == '+';
    if (!ok) return static_cast<const BlockDriver *>(nullptr);
    const std::string file = "block-" + std::string(name) + ".so";
    std::vector<std::string> dirs = module_dirs();
    for (const std::string &d : dirs) {
        std::string path = d + "/" + file;
        struct stat st;
        if (stat(path.c_str(), &st) != 0) continue;
        return module_load_file(path, name);
    }
    if (searched) {
        std::string list;
        for (const std::string &d : dirs) list += (list.empty() ? "" : ", ") + d;
        *searched = "No module " + file + " in " + list;
    }
    return static_cast<const BlockDriver *>(nullptr);
}

}  // namespace mb
