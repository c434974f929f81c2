#include "block/warn.h"

#include <cstdio>

namespace mb {

namespace {
WarningHandler &handler() {
    static WarningHandler h;
    return h;
}
}  // namespace

void set_warning_handler(WarningHandler h) { handler() = std::move(h); }

void warn_report(const std::string &message) {
    if (handler()) handler()(message);
    else std::fprintf(stderr, "WARNING: %s\n", message.c_str());
}

}  // namespace mb
