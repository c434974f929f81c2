#include "miniblock/status.h"

#include <cstring>

namespace mb {

Status PosixError(std::string_view context, int err) {
    std::string msg(context);
    msg += ": ";
    msg += std::strerror(err);
    return Status::Error(err, std::move(msg));
}

}  // namespace mb
