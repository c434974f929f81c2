// Minimal TAP output for the Windows tests: one "ok N - ..." line per check,
// the plan at the end, then "N passed, M failed".
#pragma once

#include <cstdio>
#include <string>

namespace mbtest {

inline int tap_count = 0;
inline int tap_failed = 0;

inline bool check(bool ok, const std::string &what, const std::string &diag = {}) {
    ++tap_count;
    std::printf("%s %d - %s\n", ok ? "ok" : "not ok", tap_count, what.c_str());
    if (!ok) {
        ++tap_failed;
        if (!diag.empty()) std::printf("#   %s\n", diag.c_str());
    }
    std::fflush(stdout);
    return ok;
}

inline void note(const std::string &s) {
    std::printf("# %s\n", s.c_str());
    std::fflush(stdout);
}

// The file I/O tests (io-tests.cpp); `dir` is a directory for test files.
void run_io_tests(const std::wstring &dir);

}  // namespace mbtest
