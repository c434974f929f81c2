// Fuzz target: the option parsers (keyval and json:) and the validator.
// Invariants: a parsed tree survives a round trip through to_json(), and
// validating twice changes nothing.
#include "miniblock/options.h"
#include "qapi/schema.h"
#include <string>
extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    using namespace mb::qapi;
    std::string_view in(reinterpret_cast<const char *>(data), size);
    for (int mode = 0; mode < 2; mode++) {
        auto r = mode ? parse_keyval_options(in) : parse_drive_options(in);
        if (!r.ok()) { (void)r.status().to_string(); continue; }
        OptionDict d = *r;
        std::string j = d.to_json();
        auto back = parse_keyval_options("json:" + j);
        if (back.ok() && !(*back == d) && j.find_first_of("\x80\xff") == std::string::npos) __builtin_trap();
        for (const char *drv : {"", "raw", "file", "nope"}) {
            OptionDict c = d;
            std::string drvs = c.get_str("driver").value_or(drv);
            mb::Status s = validate_node_options(c, drvs, "p");
            if (s.ok()) { OptionDict again = c; if (!validate_node_options(again, drvs, "p").ok() || !(again == c)) __builtin_trap(); }
            if (OptionDict *f = c.dict("file")) { OptionDict fc = *f; (void)validate_node_options(fc, fc.get_str("driver").value_or("file"), "file."); }
        }
    }
    return 0;
}
