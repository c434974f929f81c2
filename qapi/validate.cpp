// Validation of one node's options against the schema, in place, and the
// help text the tools print for a driver's options.
//
// Order of checks within one dict: for a union its discriminator first (it
// chooses the fields), then unknown keys (a misspelt key is the likely cause
// of a "missing" one, so it is reported first), then each field in schema
// order: missing if required, else its value.
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <limits>

#include "qapi/option-builder.h"
#include "qapi/schema.h"

namespace mb::qapi {

namespace schema {

const TypeDef *Schema::find(std::string_view name) const {
    for (const TypeDef &t : types)
        if (name == t.name) return &t;
    return nullptr;
}

const TypeDef *Schema::driver_struct(std::string_view driver) const {
    if (node_union < 0) return nullptr;
    for (const Branch &b : type(node_union).branches)
        if (driver == b.value) return &type(b.type);
    return nullptr;
}

}  // namespace schema

namespace {

using namespace schema;
using detail::shown;

Status error(std::string message, std::string detail = {}) {
    return Status::Error(EINVAL, std::move(message), std::move(detail));
}

std::string full_key(std::string_view path, std::string_view key) {
    if (path.empty()) return std::string(key);
    return std::string(path) + "." + std::string(key);
}

std::string join(std::vector<std::string> items, bool sort) {
    if (sort) std::sort(items.begin(), items.end());
    std::string out;
    for (const std::string &s : items) {
        if (!out.empty()) out += ", ";
        out += s;
    }
    return out;
}

std::string enum_values(const TypeDef &t) {
    std::vector<std::string> names;
    for (const EnumMember &m : t.members) names.push_back(m.name);
    std::string out = "Valid values: " + join(names, false);
    if (!t.aliases.empty()) {
        std::vector<std::string> al;
        for (const EnumAlias &a : t.aliases) al.push_back(std::string(a.alias) + " -> " + a.target);
        out += " (aliases: " + join(al, false) + ")";
    }
    return out;
}

const char *canonical(const TypeDef &t, std::string_view v) {
    for (const EnumMember &m : t.members)
        if (v == m.name) return m.name;
    for (const EnumAlias &a : t.aliases)
        if (v == a.alias) return a.target;
    return nullptr;
}

std::optional<int64_t> parse_int(std::string_view s, bool &overflow) {
    overflow = false;
    int base = 10;
    bool neg = false;
    std::string_view d = s;
    if (!d.empty() && (d[0] == '-' || d[0] == '+')) {
        neg = d[0] == '-';
        d.remove_prefix(1);
    }
    if (d.size() > 2 && d[0] == '0' && (d[1] == 'x' || d[1] == 'X')) {
        base = 16;
        d.remove_prefix(2);
    }
    if (d.empty()) return std::nullopt;
    uint64_t u;
    auto [p, ec] = std::from_chars(d.data(), d.data() + d.size(), u, base);
    if (p != d.data() + d.size() || (ec != std::errc() && ec != std::errc::result_out_of_range))
        return std::nullopt;
    const uint64_t limit = neg ? uint64_t(1) << 63 : uint64_t(std::numeric_limits<int64_t>::max());
    if (ec == std::errc::result_out_of_range || u > limit) {
        overflow = true;
        return std::nullopt;
    }
    if (neg) return u == limit ? std::numeric_limits<int64_t>::min() : -static_cast<int64_t>(u);
    return static_cast<int64_t>(u);
}

// Bytes with an optional binary suffix: 512, 64k, 1M, 2G, 1T, 1P, 1E.
std::optional<int64_t> parse_size_checked(std::string_view s, bool &overflow) {
    overflow = false;
    int shift = 0;
    if (!s.empty()) {
        switch (s.back()) {
        case 'k': case 'K': shift = 10; break;
        case 'm': case 'M': shift = 20; break;
        case 'g': case 'G': shift = 30; break;
        case 't': case 'T': shift = 40; break;
        case 'p': case 'P': shift = 50; break;
        case 'e': case 'E': shift = 60; break;
        }
        if (shift) s.remove_suffix(1);
    }
    if (s.empty() || s[0] < '0' || s[0] > '9') return std::nullopt;  // no sign, no "0x"
    uint64_t u;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), u, 10);
    if (p != s.data() + s.size() || (ec != std::errc() && ec != std::errc::result_out_of_range))
        return std::nullopt;
    const uint64_t max = uint64_t(std::numeric_limits<int64_t>::max());
    if (ec == std::errc::result_out_of_range || u > (max >> shift)) {
        overflow = true;
        return std::nullopt;
    }
    return static_cast<int64_t>(u << shift);
}

std::optional<bool> parse_bool(std::string_view s) {
    if (s == "on" || s == "true") return true;
    if (s == "off" || s == "false") return false;
    return std::nullopt;
}

void copy_scalar(const OptionDict &from, const std::string &key, OptionDict &to) {
    switch (*from.type(key)) {
    case OptionType::String: to.set_str(key, *from.get_str(key)); break;
    case OptionType::Int: to.set_int(key, *from.get_int(key)); break;
    case OptionType::Bool: to.set_bool(key, *from.get_bool(key)); break;
    default: to.set_null(key); break;
    }
}

bool has_null_branch(const Schema &s, const TypeDef &t) {
    for (const Branch &b : t.branches)
        if (std::string_view(s.type(b.type).name) == "null") return true;
    return false;
}

constexpr const char kSizeDetail[] =
    "Expected a size: bytes with an optional k, M, G, T, P or E suffix";

class Validator {
public:
    explicit Validator(const Schema &s) : s_(s) {}

    Status object(OptionDict &d, const TypeDef &t, const std::string &path,
                  const std::string &label, const char *given_disc);
    Status value(OptionDict &d, const std::string &key, int type, const std::string &path);

private:
    Status invalid(const OptionDict &d, const std::string &key, const std::string &fk,
                   std::string detail) {
        std::string text = d.dict(key) ? d.dict(key)->to_json() : d.get_text(key).value_or("");
        return error("Invalid value '" + shown(text) + "' for parameter '" + shown(fk) + "'",
                     std::move(detail));
    }
    std::string expected(const TypeDef &t);
    const Schema &s_;
};

std::string Validator::expected(const TypeDef &t) {
    switch (t.kind) {
    case Kind::Builtin:
        if (std::string_view(t.name) == "str") return "Expected a string";
        if (std::string_view(t.name) == "int") return "Expected an integer";
        if (std::string_view(t.name) == "size") return kSizeDetail;
        if (std::string_view(t.name) == "bool") return "Expected a boolean: on, off, true or false";
        return "Expected null";
    case Kind::Enum: return enum_values(t);
    case Kind::Struct:
    case Kind::Union: return "Expected nested options";
    case Kind::Alternate: break;
    }
    if (t.node) {
        return has_null_branch(s_, t) ? "Expected a filename, a node name, nested options or null"
                    : "Expected a filename, a node name or nested options";
    }
    // An enum or nested options (cache): the enum's values, then "or
    // nested options".
    std::string out;
    bool nested = false;
    std::vector<std::string> alts;
    for (const Branch &b : t.branches) {
        const TypeDef &bt = s_.type(b.type);
        if (bt.kind == Kind::Enum && out.empty()) out = enum_values(bt);
        if (bt.kind == Kind::Struct || bt.kind == Kind::Union) nested = true;
        alts.push_back(bt.name);
    }
    if (out.empty() || !nested || alts.size() != 2) return "Expected one of: " + join(alts, false);
    return out + "; or nested options";
}

Status Validator::value(OptionDict &d, const std::string &key, int type_index,
                        const std::string &path) {
    const TypeDef &t = s_.type(type_index);
    const std::string fk = full_key(path, key);
    const OptionType vt = *d.type(key);
    const std::optional<std::string> str = d.get_str(key);

    if (t.node) {
        // A child node: its own driver validates it when the block layer opens it.
        const bool null_ok = has_null_branch(s_, t);
        if (vt == OptionType::Dict) return Status::OK();
        if (vt == OptionType::String) {
            if (null_ok && *str == "null") d.set_null(key);
            return Status::OK();
        }
        if (vt == OptionType::Null && null_ok) return Status::OK();
        return invalid(d, key, fk, expected(t));
    }

    switch (t.kind) {
    case Kind::Builtin: {
        const std::string_view name = t.name;
        bool overflow = false;
        if (name == "str") {
            if (vt == OptionType::String) return Status::OK();
        } else if (name == "int") {
            if (vt == OptionType::Int) return Status::OK();
            if (str) {
                if (auto v = parse_int(*str, overflow)) {
                    d.set_int(key, *v);
                    return Status::OK();
                }
                if (overflow)
                    return invalid(d, key, fk, "Expected an integer from -9223372036854775808 "
                                               "to 9223372036854775807");
            }
        } else if (name == "size") {
            if (vt == OptionType::Int && *d.get_int(key) >= 0) return Status::OK();
            if (str) {
                if (auto v = parse_size_checked(*str, overflow)) {
                    d.set_int(key, *v);
                    return Status::OK();
                }
                if (overflow)
                    return invalid(d, key, fk,
                                   "Expected a size of at most 9223372036854775807 bytes");
            }
        } else if (name == "bool") {
            if (vt == OptionType::Bool) return Status::OK();
            if (str) {
                if (auto v = parse_bool(*str)) {
                    d.set_bool(key, *v);
                    return Status::OK();
                }
            }
        } else if (name == "null") {
            if (vt == OptionType::Null) return Status::OK();
            if (str && *str == "null") {
                d.set_null(key);
                return Status::OK();
            }
        }
        return invalid(d, key, fk, expected(t));
    }
    case Kind::Enum:
        if (str) {
            if (const char *c = canonical(t, *str)) {
                if (*str != c) d.set_str(key, c);
                return Status::OK();
            }
        }
        return invalid(d, key, fk, expected(t));
    case Kind::Struct:
    case Kind::Union:
        if (OptionDict *sub = d.dict(key)) return object(*sub, t, fk, "'" + fk + "'", nullptr);
        return invalid(d, key, fk, expected(t));
    case Kind::Alternate: {
        // Nested options go to the struct/union branch; a scalar to the first
        // scalar branch that takes it.
        for (const Branch &b : t.branches) {
            const TypeDef &bt = s_.type(b.type);
            bool dict_branch = bt.kind == Kind::Struct || bt.kind == Kind::Union;
            if (dict_branch != (vt == OptionType::Dict)) continue;
            if (dict_branch) return value(d, key, b.type, path);
            OptionDict trial;
            if (str) trial.set_str(key, *str);
            else if (vt == OptionType::Int) trial.set_int(key, *d.get_int(key));
            else if (vt == OptionType::Bool) trial.set_bool(key, *d.get_bool(key));
            else trial.set_null(key);
            if (value(trial, key, b.type, path).ok()) {
                copy_scalar(trial, key, d);
                return Status::OK();
            }
        }
        return invalid(d, key, fk, expected(t));
    }
    }
    return invalid(d, key, fk, expected(t));
}

Status Validator::object(OptionDict &d, const TypeDef &t, const std::string &path,
                         const std::string &label, const char *given_disc) {
    std::vector<const Field *> fields;
    std::string where = label;
    if (t.kind == Kind::Struct) {
        for (const Field &f : t.fields) fields.push_back(&f);
    } else {
        // A union: the discriminator chooses the branch.
        const std::string disc = t.discriminator;
        const std::string fk = full_key(path, disc);
        if (!given_disc) {
            if (!d.has(disc)) return error("Parameter '" + shown(fk) + "' is missing");
            MB_TRY(value(d, disc, t.discriminator_type, path));
        }
        std::optional<std::string> v = given_disc ? std::optional<std::string>(given_disc)
                                                  : d.get_str(disc);
        const TypeDef *branch = nullptr;
        std::vector<std::string> values;
        for (const Branch &b : t.branches) {
            values.push_back(b.value);
            if (v && *v == b.value) branch = &s_.type(b.type);
        }
        if (!branch) return invalid(d, disc, fk, "Valid values: " + join(values, false));
        if (t.base >= 0)
            for (const Field &f : s_.type(t.base).fields) fields.push_back(&f);
        for (const Field &f : branch->fields) fields.push_back(&f);
        if (!given_disc) where += " with " + disc + "=" + *v;
    }

    std::vector<std::string> names;
    for (const Field *f : fields) names.push_back(f->name);
    for (const std::string &k : d.keys()) {
        if (std::find(names.begin(), names.end(), k) == names.end())
            return error("Invalid parameter '" + shown(full_key(path, k)) + "'",
                         "Valid parameters for " + where + ": " + join(names, true));
    }
    for (const Field *f : fields) {
        if (given_disc && std::string_view(f->name) == t.discriminator && !d.has(f->name))
            continue;
        if (!d.has(f->name)) {
            if (f->optional) continue;
            return error("Parameter '" + shown(full_key(path, f->name)) + "' is missing");
        }
        MB_TRY(value(d, f->name, f->type, path));
    }
    return Status::OK();
}

// --- help -------------------------------------------------------------------

void help_fields(const Schema &s, std::string &out, std::vector<const Field *> fields,
                 const std::string &prefix, const std::string &when);

std::string type_text(const Schema &s, const TypeDef &t) {
    if (t.node)
        return has_null_branch(s, t) ? "<filename, node name, nested options or null>"
                                     : "<filename, node name or nested options>";
    if (t.kind == Kind::Enum) {
        std::string out = "<";
        for (const EnumMember &m : t.members) {
            if (out.size() > 1) out += '|';
            out += m.name;
        }
        return out + ">";
    }
    if (t.kind == Kind::Struct || t.kind == Kind::Union) return "<nested options>";
    if (t.kind == Kind::Alternate) {
        std::string out = "<";
        for (const Branch &b : t.branches) {
            if (out.size() > 1) out += " or ";
            std::string inner = type_text(s, s.type(b.type));
            out += inner.substr(1, inner.size() - 2);
        }
        return out + ">";
    }
    return std::string("<") + t.name + ">";
}

void help_field(const Schema &s, std::string &out, const Field &f, const std::string &prefix,
                const std::string &when) {
    const TypeDef &t0 = s.type(f.type);
    const std::string name = prefix + f.name;
    std::string line = "  " + name + "=" + type_text(s, t0);
    std::vector<std::string> notes;
    if (!f.optional) notes.push_back("required");
    if (!when.empty()) notes.push_back("when " + when);
    if (!notes.empty()) line += " (" + join(notes, false) + ")";
    out += line + "\n      " + f.doc + "\n";
    // An alternate of an enum and nested options (cache): the enum's values,
    // then the nested fields, as each would be shown on its own.
    std::vector<const TypeDef *> kinds{&t0};
    if (t0.kind == Kind::Alternate && !t0.node) {
        kinds.clear();
        for (const Branch &b : t0.branches) kinds.push_back(&s.type(b.type));
    }
    for (const TypeDef *tp : kinds) {
    const TypeDef &t = *tp;
    if (t.kind == Kind::Enum) {
        size_t w = 0;
        for (const EnumMember &m : t.members) w = std::max(w, std::string_view(m.name).size());
        for (const EnumMember &m : t.members) {
            // A plugin's enum values have no docs: the <a|b|c> above says it all.
            if (!*m.doc) continue;
            out += "        " + std::string(m.name) +
                   std::string(w + 2 - std::string_view(m.name).size(), ' ') + m.doc + "\n";
        }
        for (const EnumAlias &a : t.aliases)
            out += "        " + std::string(a.alias) +
                   std::string(w + 2 > std::string_view(a.alias).size()
                                   ? w + 2 - std::string_view(a.alias).size() : 1, ' ') +
                   "same as " + a.target + "\n";
    } else if (t.node) {
        out += "      (" + name + ".<option>=... sets the child node's own options, as its "
               "driver documents them)\n";
    } else if (t.kind == Kind::Struct) {
        std::vector<const Field *> sub;
        for (const Field &g : t.fields) sub.push_back(&g);
        help_fields(s, out, sub, name + ".", when);
    } else if (t.kind == Kind::Union) {
        std::vector<const Field *> base;
        if (t.base >= 0)
            for (const Field &g : s.type(t.base).fields) base.push_back(&g);
        help_fields(s, out, base, name + ".", when);
        for (const Branch &b : t.branches) {
            std::vector<const Field *> sub;
            for (const Field &g : s.type(b.type).fields)
                if (std::string_view(g.name) != t.discriminator) sub.push_back(&g);
            std::string w = name + "." + t.discriminator + "=" + b.value;
            help_fields(s, out, sub, name + ".", when.empty() ? w : when + ", " + w);
        }
    }
    }
}

void help_fields(const Schema &s, std::string &out, std::vector<const Field *> fields,
                 const std::string &prefix, const std::string &when) {
    std::sort(fields.begin(), fields.end(), [](const Field *a, const Field *b) {
        return std::string_view(a->name) < std::string_view(b->name);
    });
    for (const Field *f : fields) help_field(s, out, *f, prefix, when);
}

}  // namespace

Status validate_node_options(OptionDict &opts, std::string_view driver, std::string_view path,
                             const Schema &schema) {
    // "backing.file" and "backing.file." (a prefix, as the block layer
    // builds it) both name the node.
    if (path.ends_with('.')) path.remove_suffix(1);
    const std::string p(path);
    if (driver.empty()) return error("Parameter '" + shown(full_key(p, "driver")) + "' is missing");
    const TypeDef *st = schema.driver_struct(driver);
    if (!st) {
        std::string msg = "Unknown driver '" + shown(driver) + "'";
        if (!p.empty()) msg += " for parameter '" + shown(full_key(p, "driver")) + "'";
        return error(std::move(msg), "Valid drivers: " + join(schema_drivers(schema), true));
    }
    const std::string label = "driver '" + std::string(driver) + "'";
    if (opts.has("driver")) {
        std::optional<std::string> d = opts.get_str("driver");
        if (!d || *d != driver) {
            std::string text = opts.get_text("driver").value_or(
                opts.dict("driver") ? opts.dict("driver")->to_json() : "");
            return error("Invalid value '" + shown(text) + "' for parameter '" +
                             shown(full_key(p, "driver")) + "'",
                         "This node is opened with driver '" + std::string(driver) + "'");
        }
    }
    // The node union's discriminator is given: validate the branch as a
    // union with that value, so that a union base (if the schema grows one)
    // is included.
    const TypeDef &node_union = schema.type(schema.node_union);
    std::string disc(driver);
    return Validator(schema).object(opts, node_union, p, label, disc.c_str());
}

std::vector<std::string> schema_drivers(const Schema &schema) {
    std::vector<std::string> out;
    if (schema.node_union < 0) return out;
    for (const Branch &b : schema.type(schema.node_union).branches) out.push_back(b.value);
    return out;
}

std::string driver_options_help(std::string_view driver, const Schema &schema) {
    const TypeDef *st = schema.driver_struct(driver);
    if (!st) return {};
    std::string out = "Options for driver '" + std::string(driver) + "': " + st->doc + "\n";
    std::vector<const Field *> fields;
    const TypeDef &u = schema.type(schema.node_union);
    if (u.base >= 0)
        for (const Field &f : schema.type(u.base).fields) fields.push_back(&f);
    for (const Field &f : st->fields) fields.push_back(&f);
    help_fields(schema, out, fields, "", "");
    return out;
}

Status validate_node_options(OptionDict &opts, std::string_view driver, std::string_view path) {
    return validate_node_options(opts, driver, path, live_schema());
}

std::vector<std::string> schema_drivers() { return schema_drivers(live_schema()); }

std::string driver_options_help(std::string_view driver) {
    return driver_options_help(driver, live_schema());
}

}  // namespace mb::qapi

namespace mb::qapi {

std::optional<int64_t> parse_size(std::string_view s) {
    bool overflow;
    return parse_size_checked(s, overflow);
}

}  // namespace mb::qapi
