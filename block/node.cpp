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

namespace {

// Runs of "backing" longer than this are counted rather than written out.
constexpr int MAX_BACKING_RUN = 8;

// How many "backing" levels `path` ends with (a counted run "backing[N]"
// or N plain ones); *head gets the part before them.
int trailing_backing(std::string_view path, std::string_view *head) {
    int n = 0;
    for (;;) {
        size_t dot = path.rfind('.');
        std::string_view last = dot == std::string_view::npos ? path : path.substr(dot + 1);
        std::string_view rest = dot == std::string_view::npos ? std::string_view() : path.substr(0, dot);
        if (last == "backing") {
            n++;
        } else if (n == 0 && last.size() > 9 && last.substr(0, 8) == "backing[" && last.back() == ']') {
            int v = 0;
            for (char c : last.substr(8, last.size() - 9)) {
                if (c < '0' || c > '9' || v > 100000000) return n;
                v = v * 10 + (c - '0');
            }
            *head = rest;
            return v;
        } else {
            return n;
        }
        *head = rest;
        path = rest;
        if (path.empty()) return n;
    }
}

}  // namespace

// A node's name and option path grow by one segment per level of a backing
// chain ("drive0.backing.backing.file"): written out, a chain of N images
// would cost N^2 bytes (and the strings are built during the recursive
// open).  Past MAX_BACKING_RUN levels the run is counted instead:
// "drive0.backing[9].file", "backing[9].file.aio".
std::string option_path_join(std::string_view path, std::string_view key) {
    std::string s;
    std::string_view head;
    int run = key == "backing" ? trailing_backing(path, &head) : 0;
    if (run >= MAX_BACKING_RUN) {
        s = head;
        if (!s.empty()) s += '.';
        s += "backing[" + std::to_string(run + 1) + "]";
        return s;
    }
    s = path;
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
