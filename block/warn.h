// Warnings from the block layer (e.g. a probed raw image).  They go to
// stderr as "WARNING: ..." unless an embedder installs a handler.
#pragma once

#include <functional>
#include <string>

namespace mb {

using WarningHandler = std::function<void(const std::string &)>;
void set_warning_handler(WarningHandler handler);
void warn_report(const std::string &message);

}  // namespace mb
