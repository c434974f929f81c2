// The "json:{...}" spelling of node options, parsed with json-glib.
//
// json-glib is trusted with the syntax, but three of its habits need a guard
// in front of it (checked with json-glib 1.6):
//  - its parser recurses per nesting level: a few hundred thousand '[' crash
//    it, so the depth is bounded before it sees the text;
//  - an integer beyond int64 silently becomes -1 or INT64_MIN, so integer
//    literals are range-checked first;
//  - "\u0000" silently cuts a string short ("a.img\u0000x" would open
//    "a.img"), so it is refused;
// and a duplicated member silently replaces the first one, so duplicates are
// caught through the parser's "object-member" signal.
#include <cerrno>
#include <charconv>
#include <map>
#include <set>

#include <json-glib/json-glib.h>

#include "qapi/option-builder.h"

namespace mb::qapi::detail {

namespace {

Status error(std::string message, std::string detail = {}) {
    return Status::Error(EINVAL, std::move(message), std::move(detail));
}

// Bounds json-glib's input: nesting depth, integer range, no NUL characters.
Status prescan(std::string_view s) {
    int depth = 0;
    size_t i = 0;
    const size_t n = s.size();
    while (i < n) {
        char c = s[i];
        if (c == '"') {
            for (i++; i < n && s[i] != '"'; i++) {
                if (s[i] != '\\' || i + 1 >= n) continue;
                if (s.substr(i + 1, 5) == "u0000")
                    return error("JSON options contain a NUL character (\\u0000)");
                i++;  // the escaped character
            }
            i++;
            continue;
        }
        if (c == '{' || c == '[') {
            if (++depth > kMaxOptionDepth)
                return error("JSON options are nested too deeply",
                             "At most 32 levels of nested options are accepted");
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t j = i + 1;
            bool integer = true;
            while (j < n && (std::string_view("0123456789.eE+-").find(s[j]) != std::string_view::npos)) {
                if (s[j] < '0' || s[j] > '9') integer = false;
                j++;
            }
            if (integer) {
                int64_t v;
                auto [p, ec] = std::from_chars(s.data() + i, s.data() + j, v);
                if (ec == std::errc::result_out_of_range)
                    return error("Invalid number '" + shown(s.substr(i, j - i)) +
                                     "' in JSON options",
                                 "Numbers must be integers from -9223372036854775808 to "
                                 "9223372036854775807");
            }
            i = j;
            continue;
        }
        i++;
    }
    return Status::OK();
}

// Duplicate members, as the parser reports them.
// Each object seen is kept referenced until the walk is over, so that no
// address is reused by a later object (a replaced member's value is freed).
struct MemberLog {
    std::set<std::pair<JsonObject *, std::string>> seen;
    std::map<JsonObject *, std::string> duplicate;
    std::set<JsonObject *> held;

    ~MemberLog() {
        for (JsonObject *o : held) json_object_unref(o);
    }
};

void on_object_member(JsonParser *, JsonObject *object, const char *name, gpointer data) {
    auto *log = static_cast<MemberLog *>(data);
    if (log->held.insert(object).second) json_object_ref(object);
    if (!log->seen.emplace(object, name).second) log->duplicate.emplace(object, name);
}

std::string node_text(JsonNode *node) {
    gchar *text = json_to_string(node, FALSE);
    std::string out = text ? text : "";
    g_free(text);
    return out;
}

Status walk(JsonObject *object, const std::vector<std::string> &prefix, const MemberLog &log,
            TreeBuilder &b) {
    if (auto it = log.duplicate.find(object); it != log.duplicate.end()) {
        std::vector<std::string> parts = prefix;
        parts.push_back(it->second);
        return error("Duplicate parameter '" + shown(join_key(parts)) + "'");
    }
    GList *members = json_object_get_members(object);
    Status status;
    for (GList *m = members; m && status.ok(); m = m->next) {
        const char *name = static_cast<const char *>(m->data);
        std::vector<std::string> parts;
        status = split_key(name, prefix, parts);
        if (!status.ok()) break;
        JsonNode *node = json_object_get_member(object, name);
        Leaf leaf;
        switch (json_node_get_node_type(node)) {
        case JSON_NODE_OBJECT: {
            JsonObject *sub = json_node_get_object(node);
            if (json_object_get_size(sub) > 0) {
                if (parts.size() > static_cast<size_t>(kMaxOptionDepth))
                    status = b.insert(std::move(parts), leaf);  // the depth error
                else
                    status = walk(sub, parts, log, b);
                continue;
            }
            leaf.type = OptionType::Dict;
            break;
        }
        case JSON_NODE_ARRAY:
            status = error("Invalid value '" + shown(node_text(node)) + "' for parameter '" +
                               shown(join_key(parts)) + "'",
                           "Lists are not supported");
            continue;
        case JSON_NODE_NULL:
            leaf.type = OptionType::Null;
            break;
        case JSON_NODE_VALUE:
            switch (json_node_get_value_type(node)) {
            case G_TYPE_INT64:
                leaf.type = OptionType::Int;
                leaf.num = json_node_get_int(node);
                break;
            case G_TYPE_BOOLEAN:
                leaf.type = OptionType::Bool;
                leaf.num = json_node_get_boolean(node) ? 1 : 0;
                break;
            case G_TYPE_STRING:
                leaf.type = OptionType::String;
                leaf.str = json_node_get_string(node);
                break;
            default:  // double
                status = error("Invalid value '" + shown(node_text(node)) +
                                   "' for parameter '" + shown(join_key(parts)) + "'",
                               "Numbers must be integers");
                continue;
            }
            break;
        }
        status = b.insert(std::move(parts), std::move(leaf));
    }
    g_list_free(members);
    return status;
}

}  // namespace

Status parse_json_into(std::string_view json, TreeBuilder &b) {
    MB_TRY(prescan(json));
    MemberLog log;
    JsonParser *parser = json_parser_new();
    g_signal_connect(parser, "object-member", G_CALLBACK(on_object_member), &log);
    GError *gerr = nullptr;
    Status status;
    if (!json_parser_load_from_data(parser, json.data(), static_cast<gssize>(json.size()),
                                    &gerr)) {
        status = error(std::string("Could not parse JSON options: ") +
                       (gerr ? gerr->message : "unknown error"));
        g_clear_error(&gerr);
    } else {
        JsonNode *root = json_parser_get_root(parser);
        if (!root || json_node_get_node_type(root) != JSON_NODE_OBJECT)
            status = error("Invalid JSON options '" + shown(json) + "'",
                           "Expected an object: json:{\"driver\": ..., ...}");
        else
            status = walk(json_node_get_object(root), {}, log, b);
    }
    g_object_unref(parser);
    return status;
}

}  // namespace mb::qapi::detail
