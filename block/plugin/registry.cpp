// The registry of drivers that came through the plugin ABI: each driver
// struct is checked once, copied (zero-filled past the size the plugin was
// built with: fields are only ever appended), given a schema branch for its
// options, and kept for the life of the process (modules are never
// unloaded, as QEMU's are not).
#include <cerrno>
#include <cstring>
#include <deque>
#include <mutex>

#include "block/plugin/plugin.h"
#include "qapi/schema.h"

namespace mb {

namespace {

struct Registry {
    std::mutex lock;
    std::deque<std::unique_ptr<PluginDriver>> drivers;
};

Registry &registry() {
    static Registry r;
    return r;
}

// The smallest struct a plugin may declare: everything up to open.
constexpr size_t kMinStructSize = offsetof(mbd_driver, close);

bool valid_name(const char *s) {
    if (!s || !*s || strlen(s) > 64) return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

// An option name: NAME, or GROUP.KEY for nested options (driver.h).
bool valid_option_name(const char *s) {
    const char *dot = strchr(s ? s : "", '.');
    if (!dot) return valid_name(s);
    std::string group(s, dot);
    return valid_name(group.c_str()) && valid_name(dot + 1);
}

// The condition .option_conditions gives option `name`, or "".
std::string condition_of(const mbd_driver &c, const char *name) {
    if (!c.option_conditions) return "";
    for (const char *const *p = c.option_conditions; p[0] && p[1]; p += 2)
        if (strcmp(p[0], name) == 0) return p[1];
    return "";
}

const char *type_name(int t) {
    switch (t) {
    case MBD_OPT_STR: return "str";
    case MBD_OPT_INT: return "int";
    case MBD_OPT_BOOL: return "bool";
    case MBD_OPT_SIZE: return "size";
    case MBD_OPT_ENUM: return "enum";
    }
    return nullptr;
}

Status bad(const std::string &origin, const std::string &what) {
    return Status::Error(EINVAL, "Module '" + origin + "' is not a usable driver: " + what);
}

// sizeof(struct mbd_option) before .values was appended.
constexpr size_t kFirstOptionSize = offsetof(mbd_option, values);

// An enum option's allowed values: 1 to 64 names, no duplicates, and the
// default (if any) one of them.
Status enum_values(const std::string &origin, const std::string &driver, const mbd_option &o,
                   std::vector<std::string> *out) {
    const std::string what = "option '" + std::string(o.name) + "' of driver '" + driver + "'";
    if (!o.values || !o.values[0]) return bad(origin, what + " is an enum without values");
    for (const char *const *v = o.values; *v; v++) {
        if (out->size() >= 64) return bad(origin, what + " has more than 64 values");
        if (!valid_name(*v)) return bad(origin, what + " has a value not made of letters, digits, '-' and '_'");
        for (const std::string &seen : *out)
            if (seen == *v) return bad(origin, what + " lists the value '" + seen + "' twice");
        out->emplace_back(*v);
    }
    if (o.default_value) {
        bool found = false;
        for (const std::string &v : *out) found |= v == o.default_value;
        if (!found)
            return bad(origin, what + " has the default '" + o.default_value +
                                   "', which is not one of its values");
    }
    return Status::OK();
}

}  // namespace

Result<const BlockDriver *> plugin_register(const mbd_driver *d, const std::string &origin,
                                            bool from_module) {
    if (!d) return bad(origin, "its entry point returned no driver");
    if (d->abi_version > MBD_ABI_VERSION) {
        return Status::Error(ENOTSUP, "Module '" + origin + "' needs driver ABI version " +
                                          std::to_string(d->abi_version) +
                                          ", newer than this miniblock's (" +
                                          std::to_string(MBD_ABI_VERSION) + ")",
                             "Rebuild it against this miniblock's miniblock/driver.h, or "
                             "upgrade miniblock");
    }
    if (d->abi_version < 1) {
        return Status::Error(ENOTSUP, "Module '" + origin + "' has driver ABI version " +
                                          std::to_string(d->abi_version) +
                                          ", older than any this miniblock supports (1 to " +
                                          std::to_string(MBD_ABI_VERSION) + ")",
                             "Rebuild it against miniblock/driver.h");
    }
    if (d->struct_size < kMinStructSize) {
        return bad(origin, "its struct mbd_driver is " + std::to_string(d->struct_size) +
                               " bytes, too small for ABI version " + std::to_string(d->abi_version));
    }
    auto pd = std::make_unique<PluginDriver>();
    memcpy(&pd->c, d, std::min<size_t>(d->struct_size, sizeof(mbd_driver)));
    mbd_driver &c = pd->c;
    if (!valid_name(c.name))
        return bad(origin, "its driver name is missing or not made of letters, digits, '-' and '_'");
    pd->name = c.name;
    pd->origin = origin;
    pd->from_module = from_module;
    if (c.kind != MBD_PROTOCOL && c.kind != MBD_FORMAT && c.kind != MBD_FILTER)
        return bad(origin, "driver '" + pd->name + "' has kind " + std::to_string(c.kind) +
                               " (expected MBD_PROTOCOL, MBD_FORMAT or MBD_FILTER)");
    if (c.thread_model < MBD_THREAD_ASYNC || c.thread_model > MBD_THREAD_PARALLEL)
        return bad(origin, "driver '" + pd->name + "' has thread model " +
                               std::to_string(c.thread_model));
    if (!c.open) return bad(origin, "driver '" + pd->name + "' has no open callback");
    const bool async = c.thread_model == MBD_THREAD_ASYNC;
    if (async ? !c.aio_read : !c.pread)
        return bad(origin, "driver '" + pd->name + "' has no " +
                               (async ? "aio_read callback (thread model async)"
                                      : "pread callback (a blocking thread model)"));
    if (c.default_request_timeout_s > 3600)
        return bad(origin, "driver '" + pd->name + "' has default_request_timeout_s " +
                               std::to_string(c.default_request_timeout_s) + " (expected 0, or 1 to 3600)");
    int hooks = !!c.lock_prepare + !!c.lock_commit + !!c.lock_abort + !!c.lock_release;
    if (hooks != 0 && hooks != 4)
        return bad(origin, "driver '" + pd->name + "' implements some lock hooks but not all four");
    if (hooks && c.kind != MBD_PROTOCOL)
        return bad(origin, "driver '" + pd->name + "' has lock hooks but is not a protocol");
    pd->lock_hooks = hooks == 4;
    if (c.uri_schemes) {
        if (c.kind != MBD_PROTOCOL)
            return bad(origin, "driver '" + pd->name + "' claims URI schemes but is not a protocol");
        for (const char *const *s = c.uri_schemes; *s; s++) {
            if (pd->scheme_names.size() >= 16) return bad(origin, "too many URI schemes");
            pd->scheme_names.emplace_back(*s);
        }
    }

    qapi::DriverSchema schema;
    schema.name = pd->name;
    schema.doc = c.description ? c.description : "driver '" + pd->name + "' (a plugin)";
    bool has_file = false, has_filename = false;
    // The options array's stride is the plugin's sizeof(struct mbd_option):
    // a plugin from before .values was appended has the first, shorter one.
    size_t stride = kFirstOptionSize;
    if (d->struct_size >= offsetof(mbd_driver, option_struct_size) + sizeof(uint32_t) &&
        c.option_struct_size != 0) {
        stride = c.option_struct_size;
        if (stride < kFirstOptionSize || stride % alignof(mbd_option))
            return bad(origin, "driver '" + pd->name + "' says its struct mbd_option is " +
                                   std::to_string(stride) + " bytes");
    }
    if (c.options) {
        for (const char *p = reinterpret_cast<const char *>(c.options);; p += stride) {
            mbd_option opt{};
            memcpy(&opt, p, std::min(stride, sizeof(mbd_option)));
            const mbd_option *o = &opt;
            if (!o->name) break;
            if (pd->options.size() >= 256) return bad(origin, "too many options");
            if (!valid_option_name(o->name))
                return bad(origin, "driver '" + pd->name + "' declares an option with a bad name");
            const char *t = type_name(o->type);
            if (!t)
                return bad(origin, "option '" + std::string(o->name) + "' of driver '" + pd->name +
                                       "' has type " + std::to_string(o->type));
            std::vector<std::string> values;
            if (o->type == MBD_OPT_ENUM) {
                MB_TRY(enum_values(origin, pd->name, *o, &values));
            } else {
                opt.values = nullptr;  // only an enum's are looked at
            }
            std::string doc = o->help ? o->help : "";
            if (o->default_value) doc += std::string(" (default ") + o->default_value + ")";
            schema.options.push_back({o->name, t, bool(o->flags & MBD_OPT_REQUIRED), doc, values,
                                      condition_of(c, o->name)});
            pd->options.push_back(*o);
            has_file |= strcmp(o->name, "file") == 0;
            has_filename |= strcmp(o->name, "filename") == 0;
        }
    }
    if (c.option_conditions) {
        for (const char *const *p = c.option_conditions; *p; p += 2) {
            bool found = false;
            for (const mbd_option &o : pd->options) found |= strcmp(o.name, p[0]) == 0;
            if (!found || !p[1])
                return bad(origin, "driver '" + pd->name + "' gives a condition to '" + p[0] +
                                       "', which is not one of its options or has no condition");
        }
    }
    if (c.kind != MBD_PROTOCOL && !has_file)
        schema.options.push_back({"file", "BlockdevRef", true, "the node below"});
    if (c.kind == MBD_PROTOCOL && !has_filename)
        schema.options.push_back({"filename", "str", false, "the name of what to open"});
    schema.options.push_back({"request-timeout", "int", false,
                              "seconds a request may take before it fails with ETIMEDOUT, 1 to "
                              "3600 (default " +
                                  std::to_string(c.default_request_timeout_s ? c.default_request_timeout_s : 30) +
                                  ")"});

    Registry &r = registry();
    std::lock_guard<std::mutex> g(r.lock);
    if (bdrv_find_builtin_driver(pd->name) || qapi::live_schema().driver_struct(pd->name)) {
        return Status::Error(EEXIST, "Module '" + origin + "' registers driver '" + pd->name +
                                         "', which is already registered");
    }
    for (const std::string &s : pd->scheme_names) {
        bool taken = bdrv_find_builtin_protocol(s) != nullptr;
        for (auto &o : r.drivers)
            for (const std::string &os : o->scheme_names) taken |= os == s;
        if (taken) {
            return Status::Error(EEXIST, "Module '" + origin + "' claims URI scheme '" + s +
                                             "', which is already claimed");
        }
    }
    MB_TRY(qapi::register_driver_schema(schema).prefix("Module '" + origin + "'"));
    for (const std::string &s : pd->scheme_names) pd->schemes.push_back(s.c_str());
    pd->schemes.push_back(nullptr);
    plugin_fill_block_driver(pd.get());
    r.drivers.push_back(std::move(pd));
    return &r.drivers.back()->bd;
}

const BlockDriver *plugin_find(std::string_view name) {
    Registry &r = registry();
    std::lock_guard<std::mutex> g(r.lock);
    for (auto &pd : r.drivers)
        if (pd->name == name) return &pd->bd;
    return nullptr;
}

const BlockDriver *plugin_find_scheme(std::string_view scheme) {
    Registry &r = registry();
    std::lock_guard<std::mutex> g(r.lock);
    for (auto &pd : r.drivers)
        for (const std::string &s : pd->scheme_names)
            if (s == scheme) return &pd->bd;
    return nullptr;
}

const PluginDriver *plugin_of(const BlockDriver *drv) {
    // bd is PluginDriver's first member.
    Registry &r = registry();
    std::lock_guard<std::mutex> g(r.lock);
    for (auto &pd : r.drivers)
        if (&pd->bd == drv) return pd.get();
    return nullptr;
}

std::vector<const PluginDriver *> plugin_drivers() {
    Registry &r = registry();
    std::lock_guard<std::mutex> g(r.lock);
    std::vector<const PluginDriver *> out;
    for (auto &pd : r.drivers) out.push_back(pd.get());
    return out;
}

}  // namespace mb
