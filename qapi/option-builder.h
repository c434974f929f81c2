// Internal to qapi/: building an OptionDict from (dotted key, value) pairs,
// shared by the key=value parser (keyval.cpp) and the json: parser
// (options-json.cpp), so that both spellings follow the same rules for
// duplicates, conflicts, depth and the drive-level sugar.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "miniblock/options.h"

namespace mb::qapi::detail {

// One value to insert: a scalar, or a dict (JSON's {}: an empty dict).
struct Leaf {
    OptionType type = OptionType::Null;
    std::string str;
    int64_t num = 0;
};

// A value as shown in an error message: control bytes escaped, long values cut.
std::string shown(std::string_view value);
// "a.b.c"
std::string join_key(const std::vector<std::string> &parts);
// Splits a dotted key and checks each part (non-empty; letters, digits, '-',
// '_'); errors name the whole key (prefixed by `prefix`, if any).
Status split_key(std::string_view key, const std::vector<std::string> &prefix,
                 std::vector<std::string> &parts);

class TreeBuilder {
public:
    // drive_sugar: apply -drive's format/file/aio rewriting at the top level.
    explicit TreeBuilder(bool drive_sugar) : sugar_(drive_sugar) {}

    Status insert(std::vector<std::string> parts, Leaf leaf);
    // Applies the sugar that needs the whole tree (aio) and yields the tree.
    Result<OptionDict> finish();

    // Whether a top-level file=json:{...} is merged into the top (keyval form).
    bool json_in_file = false;

private:
    bool sugar_;
    bool saw_format_ = false;
    bool saw_file_ = false;
    OptionDict root_;
};

// Parses a JSON object (the text after "json:") into the builder.
Status parse_json_into(std::string_view json, TreeBuilder &builder);

}  // namespace mb::qapi::detail
