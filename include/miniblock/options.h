// Block node options: the tree, its two spellings, and its validation
// against the schema (qapi/block-core.json).  docs/options.md is the user's
// side of this file.
//
// A node's options are a tree: keys map to scalars (string, integer, boolean,
// null) or to nested trees (a child node's options, or a nested struct).
// Options read from a -drive string are all strings until validated;
// validation coerces them to the schema's types in place and canonicalizes
// enum aliases, so after validate_node_options() get_int()/get_bool() work.
//
// std-only on purpose: the Windows build uses this header (the json: form
// needs json-glib and is not available there).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "miniblock/status.h"

namespace mb::qapi {

enum class OptionType { String, Int, Bool, Null, Dict };

// Bounds on what the parsers accept: a key has at most kMaxOptionDepth
// dotted parts (a tree at most that many levels), a spec at most
// kMaxOptionsLength bytes.
inline constexpr int kMaxOptionDepth = 32;
inline constexpr size_t kMaxOptionsLength = 1 << 20;

// A value type: copying copies the tree (deep; option trees hold tens of
// entries).  Keys are single components ("file", never "file.aio"); nested
// options are reached through dict().  keys() and to_json() are sorted by key
// (byte order), so two equal trees print equally.
class OptionDict {
public:
    OptionDict();
    ~OptionDict();
    OptionDict(const OptionDict &other);
    OptionDict(OptionDict &&other) noexcept;
    OptionDict &operator=(const OptionDict &other);
    OptionDict &operator=(OptionDict &&other) noexcept;

    bool has(std::string_view key) const;
    bool empty() const;
    size_t size() const;
    // The type of the value under key, or nullopt if absent.
    std::optional<OptionType> type(std::string_view key) const;

    // Typed getters: nullopt when absent *or of another type* (an
    // unvalidated "512" is a String, not an Int).
    std::optional<std::string> get_str(std::string_view key) const;
    std::optional<int64_t> get_int(std::string_view key) const;  // int and size fields
    std::optional<bool> get_bool(std::string_view key) const;
    bool is_null(std::string_view key) const;
    // Any scalar as text (String as is, Int in decimal, Bool as true/false,
    // Null as null); nullopt for absent keys and dicts.
    std::optional<std::string> get_text(std::string_view key) const;

    // A nested dict, or nullptr if absent or a scalar.  The pointer stays
    // valid until that key is set again or erased, or this dict is assigned
    // or destroyed; setting other keys does not move it.
    OptionDict *dict(std::string_view key);
    const OptionDict *dict(std::string_view key) const;

    // Setters replace any previous value of the key, whatever its type.
    void set_str(std::string_view key, std::string value);
    void set_int(std::string_view key, int64_t value);
    void set_bool(std::string_view key, bool value);
    void set_null(std::string_view key);
    // Returns the stored copy.
    OptionDict &set_dict(std::string_view key, OptionDict value);
    // Returns whether the key was there.
    bool erase(std::string_view key);

    std::vector<std::string> keys() const;

    // Canonical JSON: keys sorted, `{"a": 1, "b": {"c": "x"}}` spacing, the
    // form of "json:{...}" filenames and info output.  Strings are escaped as
    // JSON requires; bytes >= 0x80 pass through unchanged.
    std::string to_json() const;

    bool operator==(const OptionDict &other) const;

private:
    struct Entry;
    struct Impl;  // a std::map: O(log n) per key, even for hostile inputs
    Entry *find(std::string_view key);
    const Entry *find(std::string_view key) const;
    Entry &slot(std::string_view key);
    std::unique_ptr<Impl> impl_;  // nullptr while empty
};

// A file name or option string as a message quotes it: control bytes
// escaped, cut with "..." beyond 4096 bytes (a 1 MB argument gives a short
// error).
std::string shown_name(std::string_view name);

// Parses a -drive style option string into a tree; three spellings:
//   "file=a.img,format=raw,lock=exclusive,file.aio=native,backing.lock=exclusive"
//       key=value pairs; a comma inside a value is doubled (",,"); dotted
//       keys make nested dicts; keys are letters, digits, '-' and '_'.
//   "json:{...}"  a JSON object (parsed with json-glib); nested objects and
//       dotted keys both make nested dicts; numbers must be integers; no lists.
//   "a.img"  no '=' and not json: the whole string is a filename: file=a.img.
// Then the drive-level sugar, as QEMU's -drive (top level only):
//   format=X               -> driver=X
//   file=NAME (a string)   -> file.filename=NAME (protocol left to the block layer)
//   file=json:{...}        -> the JSON's options merged into the top (keyval form only)
//   aio=X                  -> file.aio=X, when there is a file child
// Duplicate keys, a key that is both a value and a dict, empty key parts,
// keys without '=', nesting beyond kMaxOptionDepth and inputs beyond
// kMaxOptionsLength are errors naming the key.
Result<OptionDict> parse_drive_options(std::string_view spec);

// The same syntax (key=value pairs or json:{...}) without the drive-level
// sugar and without the bare-filename form: for option lists such as -o.
Result<OptionDict> parse_keyval_options(std::string_view spec);

// A size as options take it: bytes with an optional k, M, G, T, P or E
// suffix (powers of 1024); nullopt when malformed or out of range.  The tools
// parse their size arguments with it too.
std::optional<int64_t> parse_size(std::string_view s);

// Validates one node's options against the schema struct of `driver` (a
// branch of the BlockdevOptions union), in place: unknown keys, bad values
// and missing required fields are errors naming the full dotted key (`path`
// is the node's own prefix, "backing.file" or "backing.file."; "" for the
// top); strings are coerced to
// int/size/bool/enum, enum aliases canonicalized ("none" -> "off").  Child
// nodes (fields of type BlockdevRef/BlockdevRefOrNull) are only checked to be
// a string, a dict (or null where allowed; the string "null" becomes null
// there) and are not descended into: the block layer opens each child and
// validates it with its own driver.  Nested structs are validated.
// opts may lack "driver" (the driver is the argument, e.g. found by probing);
// if present it must equal `driver`.  An empty `driver` is "Parameter
// 'driver' is missing".
Status validate_node_options(OptionDict &opts, std::string_view driver,
                             std::string_view path = "");

// The drivers of the schema's BlockdevOptions union, in schema order.
std::vector<std::string> schema_drivers();

// The help text for a driver's options (name, type, enum values, docs), as
// printed by the tools' --help and "-o help"; empty for an unknown driver.
std::string driver_options_help(std::string_view driver);

}  // namespace mb::qapi
