// The C API (include/miniblock/miniblock.h) over BlockBackend.
#include "miniblock/miniblock.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "miniblock/block.h"

struct mb_drive {
    std::unique_ptr<mb::BlockBackend> blk;
};

extern "C" {

mb_drive *mb_open(const char *spec, char **errp) {
    if (errp) *errp = nullptr;
    if (!spec) {
        if (errp) *errp = strdup("No image was given");
        return nullptr;
    }
    auto r = mb::BlockBackend::open(spec);
    if (!r.ok()) {
        if (errp) *errp = strdup(r.status().to_string().c_str());
        return nullptr;
    }
    return new mb_drive{std::move(*r)};
}

void mb_close(mb_drive *d) { delete d; }

int mb_pread(mb_drive *d, void *buf, int64_t len, int64_t offset) {
    return d ? d->blk->pread(offset, len, buf) : -EBADF;
}
int mb_pwrite(mb_drive *d, const void *buf, int64_t len, int64_t offset) {
    return d ? d->blk->pwrite(offset, len, buf) : -EBADF;
}
int mb_pwrite_zeroes(mb_drive *d, int64_t len, int64_t offset) {
    return d ? d->blk->pwrite_zeroes(offset, len) : -EBADF;
}
int mb_flush(mb_drive *d) { return d ? d->blk->flush() : -EBADF; }
int64_t mb_length(mb_drive *d) { return d ? d->blk->length() : -EBADF; }
static int status_to_ret(const mb::Status &st, char **errp) {
    if (errp) *errp = st.ok() ? nullptr : strdup(st.to_string().c_str());
    return st.ok() ? 0 : -(st.err() ? st.err() : EIO);
}

int mb_activate(mb_drive *d, char **errp) {
    if (!d) return status_to_ret(mb::Status::Error(EBADF, "No drive was given"), errp);
    return status_to_ret(d->blk->activate(), errp);
}
int mb_inactivate(mb_drive *d, char **errp) {
    if (!d) return status_to_ret(mb::Status::Error(EBADF, "No drive was given"), errp);
    return status_to_ret(d->blk->inactivate(), errp);
}
int mb_is_inactive(mb_drive *d) { return d ? (d->blk->inactive() ? 1 : 0) : -EBADF; }

void mb_free_error(char *err) { std::free(err); }

}  // extern "C"
