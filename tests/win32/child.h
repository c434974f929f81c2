// A win32-lock-child process driven through pipes: one command line in, one
// reply line out (see lock-child.cpp).
#pragma once

#include <windows.h>

#include <memory>
#include <string>

#include "block/locking/win32.h"

namespace mbtest {

class Child {
public:
    // Starts `exe PATH`.  nullptr (with a message on stderr) on failure.
    static std::unique_ptr<Child> start(const std::wstring &exe, const std::wstring &path) {
        SECURITY_ATTRIBUTES sa{sizeof sa, nullptr, TRUE};
        HANDLE in_r, in_w, out_r, out_w;
        if (!CreatePipe(&in_r, &in_w, &sa, 0)) return nullptr;
        if (!CreatePipe(&out_r, &out_w, &sa, 0)) {
            CloseHandle(in_r);
            CloseHandle(in_w);
            return nullptr;
        }
        auto c = std::unique_ptr<Child>(new Child);
        mb::Win32Handle child_in(in_r), child_out(out_w);
        c->in_w_.reset(in_w);
        c->out_r_.reset(out_r);
        // Only the child's ends are inherited.
        SetHandleInformation(in_w, HANDLE_FLAG_INHERIT, 0);
        SetHandleInformation(out_r, HANDLE_FLAG_INHERIT, 0);

        STARTUPINFOW si{};
        si.cb = sizeof si;
        si.dwFlags = STARTF_USESTDHANDLES;
        si.hStdInput = child_in.get();
        si.hStdOutput = child_out.get();
        si.hStdError = GetStdHandle(STD_ERROR_HANDLE);
        std::wstring cmd = L"\"" + exe + L"\" \"" + path + L"\"";
        PROCESS_INFORMATION pi{};
        if (!CreateProcessW(exe.c_str(), cmd.data(), nullptr, nullptr, TRUE, 0, nullptr, nullptr,
                            &si, &pi)) {
            fprintf(stderr, "CreateProcessW failed: %lu\n", GetLastError());
            return nullptr;
        }
        CloseHandle(pi.hThread);
        c->proc_.reset(pi.hProcess);
        return c;
    }

    ~Child() { quit(); }

    void send(const std::string &line) {
        std::string l = line + "\n";
        DWORD n;
        WriteFile(in_w_.get(), l.data(), DWORD(l.size()), &n, nullptr);
    }

    // The next reply line, or "EOF" when the child is gone.
    std::string recv() {
        for (;;) {
            size_t nl = buf_.find('\n');
            if (nl != std::string::npos) {
                std::string line = buf_.substr(0, nl);
                buf_.erase(0, nl + 1);
                if (!line.empty() && line.back() == '\r') line.pop_back();
                return line;
            }
            char tmp[512];
            DWORD n = 0;
            if (!ReadFile(out_r_.get(), tmp, sizeof tmp, &n, nullptr) || n == 0) return "EOF";
            buf_.append(tmp, n);
        }
    }

    std::string cmd(const std::string &line) {
        send(line);
        return recv();
    }

    // Ends the child (closing its handles drops its locks) and waits for it.
    void quit() {
        if (!proc_.valid()) return;
        send("quit");
        in_w_.reset();
        if (WaitForSingleObject(proc_.get(), 10000) != WAIT_OBJECT_0) {
            TerminateProcess(proc_.get(), 1);
            WaitForSingleObject(proc_.get(), 10000);
        }
        proc_.reset();
        out_r_.reset();
    }

private:
    Child() = default;
    mb::Win32Handle proc_, in_w_, out_r_;
    std::string buf_;
};

}  // namespace mbtest
