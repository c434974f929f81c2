// The part of json-glib's API that miniblock's tools call, for the Windows
// build only (docs/windows.md).  json-glib's source package cannot be fetched
// from Debian's archive (404), and nothing may be downloaded from elsewhere,
// so the tools' `--output=json` is written with this instead: a builder that
// makes a tree and a generator that prints it the way json-glib 1.6 does
// (pretty, `"key" : value`, strings escaped as JSON requires).  The library
// itself takes no JSON on Windows (qapi/options-json-none.cpp).
//
// C++ only (the tools are C++): g_object_unref() on a builder or generator
// resolves to the overloads below, a better match than GLib's gpointer one.
#pragma once

#ifndef __cplusplus
#error "win32/json-glib/json-glib.h is for the C++ tools"
#endif

#include <glib.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

enum JsonNodeType { JSON_NODE_OBJECT, JSON_NODE_ARRAY, JSON_NODE_VALUE, JSON_NODE_NULL };

struct JsonNode {
    JsonNodeType type;
    enum class Value { None, String, Int, Bool } value = Value::None;
    std::string str;
    int64_t num = 0;
    // Objects: members in insertion order; arrays: names empty.
    std::vector<std::pair<std::string, std::unique_ptr<JsonNode>>> children;
    explicit JsonNode(JsonNodeType t) : type(t) {}
};

inline JsonNode *json_node_new(JsonNodeType t) { return new JsonNode(t); }
inline void json_node_unref(JsonNode *n) { delete n; }
inline void json_node_set_string(JsonNode *n, const char *s) {
    n->value = JsonNode::Value::String;
    n->str = s;
}

namespace mb_json_detail {

inline void quote(std::string &out, const std::string &s) {
    out += '"';
    for (unsigned char c : s) {
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
            if (c < 0x20) {
                char buf[8];
                std::snprintf(buf, sizeof buf, "\\u%04x", c);
                out += buf;
            } else {
                out += char(c);  // UTF-8 passes through, as json-glib's does
            }
        }
    }
    out += '"';
}

inline void write(std::string &out, const JsonNode &n, bool pretty, unsigned indent, unsigned level) {
    auto pad = [&](unsigned l) {
        if (pretty) out.append(size_t(l) * indent, ' ');
    };
    switch (n.type) {
    case JSON_NODE_NULL: out += "null"; return;
    case JSON_NODE_VALUE:
        switch (n.value) {
        case JsonNode::Value::String: quote(out, n.str); return;
        case JsonNode::Value::Int: out += std::to_string(n.num); return;
        case JsonNode::Value::Bool: out += n.num ? "true" : "false"; return;
        case JsonNode::Value::None: out += "null"; return;
        }
        return;
    case JSON_NODE_OBJECT:
    case JSON_NODE_ARRAY: {
        const bool obj = n.type == JSON_NODE_OBJECT;
        out += obj ? '{' : '[';
        if (pretty) out += '\n';
        for (size_t i = 0; i < n.children.size(); i++) {
            pad(level + 1);
            if (obj) {
                quote(out, n.children[i].first);
                out += pretty ? " : " : ":";
            }
            write(out, *n.children[i].second, pretty, indent, level + 1);
            if (i + 1 < n.children.size()) out += ',';
            if (pretty) out += '\n';
        }
        pad(level);
        out += obj ? '}' : ']';
        return;
    }
    }
}

}  // namespace mb_json_detail

inline gchar *json_to_string(JsonNode *n, gboolean pretty) {
    std::string out;
    mb_json_detail::write(out, *n, pretty, 2, 0);
    return g_strdup(out.c_str());
}

// The builder: a stack of open containers; a member name waits for its value.
struct JsonBuilder {
    std::unique_ptr<JsonNode> root;
    std::vector<JsonNode *> open;
    std::string member;
    void add(std::unique_ptr<JsonNode> n) {
        JsonNode *p = n.get();
        if (open.empty()) {
            root = std::move(n);
        } else {
            open.back()->children.emplace_back(std::exchange(member, {}), std::move(n));
        }
        if (p->type == JSON_NODE_OBJECT || p->type == JSON_NODE_ARRAY) open.push_back(p);
    }
};

inline JsonBuilder *json_builder_new() { return new JsonBuilder; }
inline void g_object_unref(JsonBuilder *b) { delete b; }
inline JsonBuilder *json_builder_begin_object(JsonBuilder *b) {
    b->add(std::make_unique<JsonNode>(JSON_NODE_OBJECT));
    return b;
}
inline JsonBuilder *json_builder_begin_array(JsonBuilder *b) {
    b->add(std::make_unique<JsonNode>(JSON_NODE_ARRAY));
    return b;
}
inline JsonBuilder *json_builder_end_object(JsonBuilder *b) {
    if (!b->open.empty()) b->open.pop_back();
    return b;
}
inline JsonBuilder *json_builder_end_array(JsonBuilder *b) { return json_builder_end_object(b); }
inline JsonBuilder *json_builder_set_member_name(JsonBuilder *b, const gchar *name) {
    b->member = name;
    return b;
}
inline JsonBuilder *json_builder_add_string_value(JsonBuilder *b, const gchar *s) {
    auto n = std::make_unique<JsonNode>(JSON_NODE_VALUE);
    json_node_set_string(n.get(), s);
    b->add(std::move(n));
    return b;
}
inline JsonBuilder *json_builder_add_int_value(JsonBuilder *b, gint64 v) {
    auto n = std::make_unique<JsonNode>(JSON_NODE_VALUE);
    n->value = JsonNode::Value::Int;
    n->num = v;
    b->add(std::move(n));
    return b;
}
inline JsonBuilder *json_builder_add_boolean_value(JsonBuilder *b, gboolean v) {
    auto n = std::make_unique<JsonNode>(JSON_NODE_VALUE);
    n->value = JsonNode::Value::Bool;
    n->num = v ? 1 : 0;
    b->add(std::move(n));
    return b;
}
inline JsonBuilder *json_builder_add_null_value(JsonBuilder *b) {
    b->add(std::make_unique<JsonNode>(JSON_NODE_NULL));
    return b;
}
// The caller owns the root (json_node_unref), as with json-glib.
inline JsonNode *json_builder_get_root(JsonBuilder *b) { return b->root.release(); }

struct JsonGenerator {
    JsonNode *root = nullptr;  // borrowed, as json-glib copies and we need not
    bool pretty = false;
    unsigned indent = 2;
};
inline JsonGenerator *json_generator_new() { return new JsonGenerator; }
inline void g_object_unref(JsonGenerator *g) { delete g; }
inline void json_generator_set_pretty(JsonGenerator *g, gboolean p) { g->pretty = p; }
inline void json_generator_set_indent(JsonGenerator *g, guint n) { g->indent = n; }
inline void json_generator_set_root(JsonGenerator *g, JsonNode *n) { g->root = n; }
inline gchar *json_generator_to_data(JsonGenerator *g, gsize *length) {
    std::string out;
    if (g->root) mb_json_detail::write(out, *g->root, g->pretty, g->indent, 0);
    if (length) *length = out.size();
    return g_strdup(out.c_str());
}
