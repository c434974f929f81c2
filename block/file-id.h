// Which file a path names, to tell "the same file under two names" apart
// from "two files" (backing-chain loops, commit's base lookup).
//
// POSIX: (st_dev, st_ino).  Windows' stat() has no inode (st_ino is 0 for
// every file, so every file on a drive would look the same): there it is the
// volume serial number and the NTFS file index, as GetFileInformationByHandle
// gives them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace mb {

struct FileId {
    uint64_t dev = 0;
    uint64_t ino = 0;
    bool operator==(const FileId &) const = default;
};

// nullopt when the path cannot be looked at (missing, no permission).
// Looking opens nothing that could disturb a lock.
std::optional<FileId> file_id(const std::string &path);

}  // namespace mb
