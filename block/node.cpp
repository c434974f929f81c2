// Node lifetime: references, edges, names.  Free of GLib, so the Windows
// build (which has no GLib) shares it with Linux.
#include <algorithm>
#include <cerrno>

#include "block/block_int.h"

namespace mb {

const char *child_role_name(ChildRole role) {
    return role == ChildRole::Backing ? "backing" : "file";
}

// --- references --------------------------------------------------------------

BdrvRef::BdrvRef(BlockDriverState *bs) : bs_(bs) {
    if (bs_) bs_->refcnt++;
}

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
    // The driver closes first (it may still flush through its children),
    // then the children go, last to first.
    if (drv && drv->close) drv->close(this);
    opaque.reset();
    while (!children.empty()) children.pop_back();
}

BdrvChild *BlockDriverState::child(ChildRole r) const {
    for (auto &c : children)
        if (c->role == r) return c.get();
    return nullptr;
}

std::string option_path_join(std::string_view path, std::string_view key) {
    std::string s(path);
    if (!s.empty()) s += '.';
    s += key;
    return s;
}

std::string bdrv_option_name(const BlockDriverState *bs, std::string_view key) {
    return option_path_join(bs->option_path, key);
}

std::string bdrv_describe(const BlockDriverState *bs) {
    std::string s = "node '" + bs->node_name + "'";
    if (!bs->filename.empty()) s += " (" + bs->filename + ")";
    return s;
}

Status bdrv_create_options_done(std::string_view driver, const qapi::OptionDict &opts) {
    if (opts.keys().empty()) return Status::OK();
    return Status::Error(EINVAL, "Invalid parameter '" + opts.keys().front() + "'",
                         "Driver '" + std::string(driver) + "' has no such creation option");
}

}  // namespace mb
