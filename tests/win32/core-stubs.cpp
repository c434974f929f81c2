// The four symbols of block/block.cpp that the `file` driver table and a
// bare BlockDriverState need, for win32-driver-tests only: block.cpp itself
// needs GLib (block/aio.h), which mingw lacks here.  Each does what its
// block.cpp original does, nothing more; delete this file once the core
// builds for Windows.
#include <algorithm>

#include "block/block_int.h"

namespace mb {

void BdrvRef::reset() {
    if (bs_ && --bs_->refcnt == 0) delete bs_;
    bs_ = nullptr;
}

BdrvChild::~BdrvChild() {
    if (bs) {
        auto &p = bs->parents;
        p.erase(std::remove(p.begin(), p.end(), this), p.end());
    }
}

BlockDriverState::~BlockDriverState() {
    if (drv && drv->close) drv->close(this);
    opaque.reset();
    while (!children.empty()) children.pop_back();
}

Status bdrv_create_options_done(std::string_view driver, const qapi::OptionDict &opts) {
    if (opts.keys().empty()) return Status::OK();
    return Status::Error(EINVAL, "Invalid parameter '" + opts.keys().front() + "'",
                         "Driver '" + std::string(driver) + "' has no such creation option");
}

}  // namespace mb
