// The json: spelling where json-glib is absent (the Windows build): key=value
// options and validation work; "json:{...}" is refused with a clear error.
// Build this file instead of options-json.cpp there.
#include <cerrno>

#include "qapi/option-builder.h"

namespace mb::qapi::detail {

Status parse_json_into(std::string_view, TreeBuilder &) {
    return Status::Error(EINVAL,
                         "json: filenames are not supported in this build (it has no json-glib, "
                         "as on Windows)",
                         "Use key=value options instead (--image-opts)");
}

}  // namespace mb::qapi::detail
