// The one explicit list of drivers.  Adding a driver is its source file plus
// one line here (and its options in qapi/block-core.json).
#include <cstring>

#include "block/block_int.h"

namespace mb {

extern const BlockDriver bdrv_file;
extern const BlockDriver bdrv_raw;
extern const BlockDriver bdrv_cloop;
#ifndef _WIN32  // the nbd client speaks POSIX sockets
extern const BlockDriver bdrv_nbd;
#endif
extern const BlockDriver bdrv_qcow2;

const BlockDriver *const block_drivers[] = {
    &bdrv_file,
    &bdrv_raw,
    &bdrv_cloop,
#ifndef _WIN32
    &bdrv_nbd,
#endif
    &bdrv_qcow2,
    nullptr,
};

const BlockDriver *bdrv_find_driver(std::string_view name) {
    for (const BlockDriver *const *d = block_drivers; *d; d++)
        if (name == (*d)->format_name) return *d;
    return nullptr;
}

const BlockDriver *bdrv_find_protocol(std::string_view filename) {
    size_t colon = filename.find("://");
    if (colon == std::string_view::npos) return nullptr;
    std::string_view scheme = filename.substr(0, colon);
    for (const BlockDriver *const *d = block_drivers; *d; d++) {
        if (!(*d)->protocols) continue;
        for (const char *const *p = (*d)->protocols; *p; p++)
            if (scheme == *p) return *d;
    }
    return nullptr;
}

const BlockDriver *bdrv_probe_format(const uint8_t *buf, size_t len, const char *filename) {
    const BlockDriver *best = nullptr;
    int best_score = 0;
    for (const BlockDriver *const *d = block_drivers; *d; d++) {
        if (!(*d)->probe) continue;
        int score = (*d)->probe(buf, len, filename);
        if (score > best_score) {
            best = *d;
            best_score = score;
        }
    }
    return best;
}

}  // namespace mb
