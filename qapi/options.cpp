// OptionDict: a small sorted tree of option values (miniblock/options.h).
#include "miniblock/options.h"

#include <map>

namespace mb::qapi {

struct OptionDict::Entry {
    OptionType type = OptionType::Null;
    std::string str;                  // String
    int64_t num = 0;                  // Int; Bool as 0/1
    std::unique_ptr<OptionDict> sub;  // Dict (heap, so pointers to it stay put)

    Entry() = default;
    Entry(const Entry &o)
        : type(o.type), str(o.str), num(o.num),
          sub(o.sub ? std::make_unique<OptionDict>(*o.sub) : nullptr) {}
    Entry(Entry &&) noexcept = default;
    Entry &operator=(const Entry &o) {
        if (this != &o) *this = Entry(o);
        return *this;
    }
    Entry &operator=(Entry &&) noexcept = default;

    bool operator==(const Entry &o) const {
        if (type != o.type) return false;
        switch (type) {
        case OptionType::String: return str == o.str;
        case OptionType::Int:
        case OptionType::Bool: return num == o.num;
        case OptionType::Null: return true;
        case OptionType::Dict: return *sub == *o.sub;
        }
        return false;
    }
};

struct OptionDict::Impl {
    std::map<std::string, Entry, std::less<>> map;
};

OptionDict::OptionDict() = default;
OptionDict::~OptionDict() = default;
OptionDict::OptionDict(const OptionDict &other)
    : impl_(other.impl_ ? std::make_unique<Impl>(*other.impl_) : nullptr) {}
OptionDict::OptionDict(OptionDict &&other) noexcept = default;
OptionDict &OptionDict::operator=(const OptionDict &other) {
    if (this != &other) impl_ = other.impl_ ? std::make_unique<Impl>(*other.impl_) : nullptr;
    return *this;
}
OptionDict &OptionDict::operator=(OptionDict &&other) noexcept = default;

OptionDict::Entry *OptionDict::find(std::string_view key) {
    if (!impl_) return nullptr;
    auto it = impl_->map.find(key);
    return it != impl_->map.end() ? &it->second : nullptr;
}

const OptionDict::Entry *OptionDict::find(std::string_view key) const {
    return const_cast<OptionDict *>(this)->find(key);
}

// A fresh entry for key (an old value of the key is dropped).
OptionDict::Entry &OptionDict::slot(std::string_view key) {
    if (!impl_) impl_ = std::make_unique<Impl>();
    auto it = impl_->map.find(key);
    if (it == impl_->map.end()) return impl_->map.emplace(std::string(key), Entry()).first->second;
    it->second = Entry();
    return it->second;
}

bool OptionDict::has(std::string_view key) const { return find(key) != nullptr; }
bool OptionDict::empty() const { return !impl_ || impl_->map.empty(); }
size_t OptionDict::size() const { return impl_ ? impl_->map.size() : 0; }

std::optional<OptionType> OptionDict::type(std::string_view key) const {
    const Entry *e = find(key);
    if (!e) return std::nullopt;
    return e->type;
}

std::optional<std::string> OptionDict::get_str(std::string_view key) const {
    const Entry *e = find(key);
    if (!e || e->type != OptionType::String) return std::nullopt;
    return e->str;
}

std::optional<int64_t> OptionDict::get_int(std::string_view key) const {
    const Entry *e = find(key);
    if (!e || e->type != OptionType::Int) return std::nullopt;
    return e->num;
}

std::optional<bool> OptionDict::get_bool(std::string_view key) const {
    const Entry *e = find(key);
    if (!e || e->type != OptionType::Bool) return std::nullopt;
    return e->num != 0;
}

bool OptionDict::is_null(std::string_view key) const {
    const Entry *e = find(key);
    return e && e->type == OptionType::Null;
}

std::optional<std::string> OptionDict::get_text(std::string_view key) const {
    const Entry *e = find(key);
    if (!e) return std::nullopt;
    switch (e->type) {
    case OptionType::String: return e->str;
    case OptionType::Int: return std::to_string(e->num);
    case OptionType::Bool: return std::string(e->num ? "true" : "false");
    case OptionType::Null: return std::string("null");
    case OptionType::Dict: return std::nullopt;
    }
    return std::nullopt;
}

OptionDict *OptionDict::dict(std::string_view key) {
    Entry *e = find(key);
    return e && e->type == OptionType::Dict ? e->sub.get() : nullptr;
}

const OptionDict *OptionDict::dict(std::string_view key) const {
    const Entry *e = find(key);
    return e && e->type == OptionType::Dict ? e->sub.get() : nullptr;
}

void OptionDict::set_str(std::string_view key, std::string value) {
    Entry &e = slot(key);
    e.type = OptionType::String;
    e.str = std::move(value);
}

void OptionDict::set_int(std::string_view key, int64_t value) {
    Entry &e = slot(key);
    e.type = OptionType::Int;
    e.num = value;
}

void OptionDict::set_bool(std::string_view key, bool value) {
    Entry &e = slot(key);
    e.type = OptionType::Bool;
    e.num = value ? 1 : 0;
}

void OptionDict::set_null(std::string_view key) { slot(key).type = OptionType::Null; }

OptionDict &OptionDict::set_dict(std::string_view key, OptionDict value) {
    // Moved out before slot(): `value` may be a copy of the entry being replaced.
    auto sub = std::make_unique<OptionDict>(std::move(value));
    Entry &e = slot(key);
    e.type = OptionType::Dict;
    e.sub = std::move(sub);
    return *e.sub;
}

bool OptionDict::erase(std::string_view key) {
    if (!impl_) return false;
    auto it = impl_->map.find(key);
    if (it == impl_->map.end()) return false;
    impl_->map.erase(it);
    return true;
}

std::vector<std::string> OptionDict::keys() const {
    std::vector<std::string> out;
    if (!impl_) return out;
    out.reserve(impl_->map.size());
    for (const auto &[k, e] : impl_->map) out.push_back(k);
    return out;
}

namespace {
void json_string(std::string &out, std::string_view s) {
    static const char hex[] = "0123456789abcdef";
    out += '"';
    for (unsigned char c : s) {
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\t': out += "\\t"; break;
        case '\r': out += "\\r"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
            if (c < 0x20 || c == 0x7f) {
                out += "\\u00";
                out += hex[c >> 4];
                out += hex[c & 15];
            } else {
                out += static_cast<char>(c);
            }
        }
    }
    out += '"';
}
}  // namespace

std::string OptionDict::to_json() const {
    std::string out = "{";
    if (impl_) {
        bool first = true;
        for (const auto &[k, e] : impl_->map) {
            if (!first) out += ", ";
            first = false;
            json_string(out, k);
            out += ": ";
            switch (e.type) {
            case OptionType::String: json_string(out, e.str); break;
            case OptionType::Int: out += std::to_string(e.num); break;
            case OptionType::Bool: out += e.num ? "true" : "false"; break;
            case OptionType::Null: out += "null"; break;
            case OptionType::Dict: out += e.sub->to_json(); break;
            }
        }
    }
    out += '}';
    return out;
}

bool OptionDict::operator==(const OptionDict &other) const {
    if (size() != other.size()) return false;
    return empty() || impl_->map == other.impl_->map;
}

}  // namespace mb::qapi
