// OptionDict: a small sorted tree of option values (miniblock/options.h).
#include "miniblock/options.h"

#include <algorithm>
#include <memory>

namespace mb::qapi {

struct OptionDict::Entry {
    std::string key;
    OptionType type = OptionType::Null;
    std::string str;                  // String
    int64_t num = 0;                  // Int; Bool as 0/1
    std::unique_ptr<OptionDict> sub;  // Dict (heap, so pointers to it stay put)

    explicit Entry(std::string k) : key(std::move(k)) {}
    Entry(const Entry &o)
        : key(o.key), type(o.type), str(o.str), num(o.num),
          sub(o.sub ? std::make_unique<OptionDict>(*o.sub) : nullptr) {}
    Entry(Entry &&) noexcept = default;
    Entry &operator=(const Entry &o) {
        if (this != &o) *this = Entry(o);
        return *this;
    }
    Entry &operator=(Entry &&) noexcept = default;

    void clear() {
        str.clear();
        num = 0;
        sub.reset();
    }
    bool operator==(const Entry &o) const {
        if (key != o.key || type != o.type) return false;
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

OptionDict::OptionDict() = default;
OptionDict::~OptionDict() = default;
OptionDict::OptionDict(const OptionDict &other) = default;
OptionDict::OptionDict(OptionDict &&other) noexcept = default;
OptionDict &OptionDict::operator=(const OptionDict &other) = default;
OptionDict &OptionDict::operator=(OptionDict &&other) noexcept = default;

namespace {
struct KeyLess {
    template <class E>
    bool operator()(const E &e, std::string_view k) const { return std::string_view(e.key) < k; }
};
}  // namespace

OptionDict::Entry *OptionDict::find(std::string_view key) {
    auto it = std::lower_bound(entries_.begin(), entries_.end(), key, KeyLess{});
    return it != entries_.end() && it->key == key ? &*it : nullptr;
}

const OptionDict::Entry *OptionDict::find(std::string_view key) const {
    return const_cast<OptionDict *>(this)->find(key);
}

OptionDict::Entry &OptionDict::slot(std::string_view key) {
    auto it = std::lower_bound(entries_.begin(), entries_.end(), key, KeyLess{});
    if (it != entries_.end() && it->key == key) {
        it->clear();
        return *it;
    }
    return *entries_.insert(it, Entry(std::string(key)));
}

bool OptionDict::has(std::string_view key) const { return find(key) != nullptr; }
bool OptionDict::empty() const { return entries_.empty(); }
size_t OptionDict::size() const { return entries_.size(); }

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
    // Built before slot(): `value` may be a copy of the entry being replaced.
    auto sub = std::make_unique<OptionDict>(std::move(value));
    Entry &e = slot(key);
    e.type = OptionType::Dict;
    e.sub = std::move(sub);
    return *e.sub;
}

bool OptionDict::erase(std::string_view key) {
    auto it = std::lower_bound(entries_.begin(), entries_.end(), key, KeyLess{});
    if (it == entries_.end() || it->key != key) return false;
    entries_.erase(it);
    return true;
}

std::vector<std::string> OptionDict::keys() const {
    std::vector<std::string> out;
    out.reserve(entries_.size());
    for (const Entry &e : entries_) out.push_back(e.key);
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
    bool first = true;
    for (const Entry &e : entries_) {
        if (!first) out += ", ";
        first = false;
        json_string(out, e.key);
        out += ": ";
        switch (e.type) {
        case OptionType::String: json_string(out, e.str); break;
        case OptionType::Int: out += std::to_string(e.num); break;
        case OptionType::Bool: out += e.num ? "true" : "false"; break;
        case OptionType::Null: out += "null"; break;
        case OptionType::Dict: out += e.sub->to_json(); break;
        }
    }
    out += '}';
    return out;
}

bool OptionDict::operator==(const OptionDict &other) const { return entries_ == other.entries_; }

}  // namespace mb::qapi
