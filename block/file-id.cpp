#include "block/file-id.h"

#ifdef _WIN32
#include <windows.h>
#else
#include <sys/stat.h>
#endif

#include <string>

namespace mb {

#ifdef _WIN32

std::optional<FileId> file_id(const std::string &path) {
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path.data(), int(path.size()), nullptr, 0);
    if (n <= 0) return std::nullopt;
    std::wstring w(size_t(n), L'\0');
    MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path.data(), int(path.size()), w.data(), n);
    // No access rights asked: attributes only, which no share mode or byte
    // lock refuses.  BACKUP_SEMANTICS lets it open a directory too.
    HANDLE h = CreateFileW(w.c_str(), 0, FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
                           nullptr, OPEN_EXISTING, FILE_FLAG_BACKUP_SEMANTICS, nullptr);
    if (h == INVALID_HANDLE_VALUE) return std::nullopt;
    BY_HANDLE_FILE_INFORMATION info;
    BOOL ok = GetFileInformationByHandle(h, &info);
    CloseHandle(h);
    if (!ok) return std::nullopt;
    return FileId{info.dwVolumeSerialNumber,
                  (uint64_t(info.nFileIndexHigh) << 32) | info.nFileIndexLow};
}

#else

std::optional<FileId> file_id(const std::string &path) {
    struct stat st;
    if (stat(path.c_str(), &st) < 0) return std::nullopt;
    return FileId{uint64_t(st.st_dev), uint64_t(st.st_ino)};
}

#endif

}  // namespace mb
