// The -drive option string: key=value pairs, the bare filename, the tree
// builder both spellings share, and the drive-level sugar.
//
// The rules are QEMU's keyval rules (facts carried over, not code): a value
// runs to the next single comma, ",," stands for a comma inside a value, dotted
// keys make nested dicts, a key may not be both a value and a dict.
#include <cerrno>

#include "qapi/option-builder.h"

namespace mb::qapi::detail {

namespace {

constexpr const char kDepthDetail[] = "At most 32 levels of nested options are accepted";
static_assert(kMaxOptionDepth == 32, "kDepthDetail says 32");

Status error(std::string message, std::string detail = {}) {
    return Status::Error(EINVAL, std::move(message), std::move(detail));
}

bool key_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_';
}

// The first leaf under a dict, for naming it in a conflict: "y" or "y.z".
std::string first_leaf(const OptionDict &d) {
    std::string out;
    const OptionDict *cur = &d;
    while (cur && !cur->empty()) {
        std::string k = cur->keys().front();
        out += out.empty() ? k : "." + k;
        cur = cur->dict(k);
    }
    return out;
}

void set_leaf(OptionDict &d, const std::string &key, Leaf &&leaf) {
    switch (leaf.type) {
    case OptionType::String: d.set_str(key, std::move(leaf.str)); break;
    case OptionType::Int: d.set_int(key, leaf.num); break;
    case OptionType::Bool: d.set_bool(key, leaf.num != 0); break;
    case OptionType::Null: d.set_null(key); break;
    case OptionType::Dict: d.set_dict(key, OptionDict()); break;
    }
}

}  // namespace

namespace {

std::string shown_cut(std::string_view value, size_t kMax) {
    static const char hex[] = "0123456789abcdef";
    std::string out;
    size_t n = 0;
    for (unsigned char c : value) {
        if (n++ == kMax - 4 && value.size() > kMax) {
            out += "...";
            break;
        }
        if (c < 0x20 || c == 0x7f) {
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        } else {
            out += static_cast<char>(c);
        }
    }
    return out;
}

}  // namespace

std::string shown(std::string_view value) { return shown_cut(value, 64); }

std::string join_key(const std::vector<std::string> &parts) {
    std::string out;
    for (const std::string &p : parts) {
        if (!out.empty()) out += '.';
        out += p;
    }
    return out;
}

Status split_key(std::string_view key, const std::vector<std::string> &prefix,
                 std::vector<std::string> &parts) {
    parts = prefix;
    size_t start = 0;
    bool bad = key.empty();
    while (!bad) {
        size_t dot = key.find('.', start);
        std::string_view part = key.substr(start, dot == std::string_view::npos ? dot : dot - start);
        if (part.empty()) bad = true;
        for (char c : part)
            if (!key_char(c)) bad = true;
        if (bad) break;
        parts.emplace_back(part);
        if (dot == std::string_view::npos) break;
        start = dot + 1;
    }
    if (bad) {
        std::string whole = join_key(prefix);
        if (!whole.empty()) whole += '.';
        whole += key;
        return error("Invalid parameter name '" + shown(whole) + "'",
                     "A parameter name is made of letters, digits, '-' and '_', in non-empty "
                     "parts separated by '.'");
    }
    return Status::OK();
}

Status TreeBuilder::insert(std::vector<std::string> parts, Leaf leaf) {
    if (parts.size() > static_cast<size_t>(kMaxOptionDepth))
        return error("Parameter '" + shown(join_key(parts)) + "' is nested too deeply",
                     kDepthDetail);
    if (sugar_ && parts[0] == "format") {
        parts[0] = "driver";
        saw_format_ = true;
    }
    if (sugar_ && parts.size() == 1 && parts[0] == "file" && leaf.type == OptionType::String) {
        if (json_in_file && leaf.str.starts_with("json:")) {
            // -drive file=json:{...}: the JSON holds this node's own options.
            json_in_file = false;
            return parse_json_into(std::string_view(leaf.str).substr(5), *this);
        }
        parts.push_back("filename");
        saw_file_ = true;
    }

    OptionDict *cur = &root_;
    for (size_t i = 0; i + 1 < parts.size(); i++) {
        if (!cur->has(parts[i])) {
            cur = &cur->set_dict(parts[i], OptionDict());
            continue;
        }
        OptionDict *next = cur->dict(parts[i]);
        if (!next) {
            std::vector<std::string> scalar(parts.begin(), parts.begin() + static_cast<long>(i) + 1);
            return error("Conflicting parameters '" + shown(join_key(scalar)) + "' and '" +
                             shown(join_key(parts)) + "'",
                         "A parameter with a value cannot also have nested parameters");
        }
        cur = next;
    }

    const std::string &last = parts.back();
    std::string full = join_key(parts);
    if (!cur->has(last)) {
        set_leaf(*cur, last, std::move(leaf));
        return Status::OK();
    }
    const OptionDict *existing = cur->dict(last);
    if (existing && leaf.type == OptionType::Dict) return Status::OK();  // {} merges
    if (existing && !existing->empty())
        return error("Conflicting parameters '" + shown(full) + "' and '" +
                         shown(full + "." + first_leaf(*existing)) + "'",
                     "A parameter with a value cannot also have nested parameters");
    Status s = error("Duplicate parameter '" + shown(full) + "'");
    if (sugar_ && saw_format_ && full == "driver")
        s.add_detail("'format' is another name for 'driver'");
    if (sugar_ && saw_file_ && full == "file.filename")
        s.add_detail("'file=NAME' is short for 'file.filename=NAME'");
    return s;
}

Result<OptionDict> TreeBuilder::finish() {
    // aio and QEMU's locking belong to the protocol node: moved to the file
    // child, as QEMU's -drive passes them down.
    for (const char *key : {"aio", "locking"}) {
        if (!sugar_ || !root_.has(key) || !root_.dict("file")) continue;
        OptionDict *file = root_.dict("file");
        if (file->has(key)) return error(std::string("Duplicate parameter 'file.") + key + "'");
        if (const OptionDict *d = root_.dict(key)) {
            file->set_dict(key, *d);
        } else {
            switch (*root_.type(key)) {
            case OptionType::String: file->set_str(key, *root_.get_str(key)); break;
            case OptionType::Int: file->set_int(key, *root_.get_int(key)); break;
            case OptionType::Bool: file->set_bool(key, *root_.get_bool(key)); break;
            default: file->set_null(key); break;
            }
        }
        root_.erase(key);
    }
    return std::move(root_);
}

namespace {

// key=value[,key=value...]
Status parse_pairs(std::string_view s, TreeBuilder &b) {
    size_t i = 0;
    const size_t n = s.size();
    while (i < n) {
        size_t j = s.find_first_of("=,", i);
        std::string_view key = s.substr(i, j == std::string_view::npos ? j : j - i);
        if (key.empty())
            return error("Missing parameter name before '" + shown(s.substr(i)) + "'");
        if (j == std::string_view::npos || s[j] == ',')
            return error("Expected '=' after parameter '" + shown(key) + "'");
        std::vector<std::string> parts;
        MB_TRY(split_key(key, {}, parts));
        Leaf leaf;
        leaf.type = OptionType::String;
        size_t k = j + 1;
        while (k < n) {
            if (s[k] == ',') {
                if (k + 1 < n && s[k + 1] == ',') {
                    leaf.str += ',';
                    k += 2;
                    continue;
                }
                break;
            }
            leaf.str += s[k++];
        }
        MB_TRY(b.insert(std::move(parts), std::move(leaf)));
        i = k + 1;  // past the separating comma (a trailing one is allowed)
    }
    return Status::OK();
}

Status check_input(std::string_view spec) {
    if (spec.size() > kMaxOptionsLength)
        return error("Options too long (" + std::to_string(spec.size()) + " bytes)",
                     "At most " + std::to_string(kMaxOptionsLength) + " bytes are accepted");
    size_t nul = spec.find('\0');
    if (nul != std::string_view::npos)
        return error("Options contain a NUL byte at offset " + std::to_string(nul));
    return Status::OK();
}

Result<OptionDict> parse(std::string_view spec, bool drive) {
    MB_TRY(check_input(spec));
    TreeBuilder b(drive);
    if (spec.starts_with("json:")) {
        MB_TRY(parse_json_into(spec.substr(5), b));
    } else if (drive && spec.find('=') == std::string_view::npos) {
        // A bare filename, verbatim (commas included): file=NAME.
        if (!spec.empty()) {
            Leaf leaf;
            leaf.type = OptionType::String;
            leaf.str = std::string(spec);
            MB_TRY(b.insert({"file"}, std::move(leaf)));
        }
    } else {
        b.json_in_file = drive;
        MB_TRY(parse_pairs(spec, b));
    }
    return b.finish();
}

}  // namespace

}  // namespace mb::qapi::detail

namespace mb::qapi {

Result<OptionDict> parse_drive_options(std::string_view spec) {
    return detail::parse(spec, true);
}

Result<OptionDict> parse_keyval_options(std::string_view spec) {
    return detail::parse(spec, false);
}

// File names and whole option strings: long enough for any real path
// (PATH_MAX), short enough that a hostile 1 MB argument gives a short error.
std::string shown_name(std::string_view name) { return detail::shown_cut(name, 4096); }

}  // namespace mb::qapi
