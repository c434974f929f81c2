#include "block/locking/holders.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <utility>

#include "block/locking/posix-inode.h"
#include "block/permissions.h"

namespace mb {

namespace {

// Caps: diagnostics must never turn into an unbounded read or scan.
constexpr size_t kMaxProcLocks = 8u << 20;
constexpr size_t kMaxFdinfo = 256u << 10;
constexpr size_t kMaxCmdline = 4096;
constexpr size_t kMaxComm = 64;
constexpr int kMaxFdsPerProcess = 1 << 16;
constexpr size_t kMaxHolders = 256;

struct Fd {
    int fd = -1;
    explicit Fd(int f) : fd(f) {}
    ~Fd() {
        if (fd >= 0) ::close(fd);
    }
    Fd(const Fd &) = delete;
    Fd &operator=(const Fd &) = delete;
};

struct DirCloser {
    void operator()(DIR *d) const { closedir(d); }
};
using Dir = std::unique_ptr<DIR, DirCloser>;

// Reads at most `max` bytes; sets *truncated when there was more.
std::string read_bounded(const std::string &path, size_t max, bool *truncated = nullptr) {
    std::string out;
    if (truncated) *truncated = false;
    Fd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (f.fd < 0) return out;
    char buf[4096];
    while (out.size() < max) {
        ssize_t n = ::read(f.fd, buf, std::min(sizeof buf, max - out.size()));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return out;
        out.append(buf, static_cast<size_t>(n));
    }
    if (truncated) {
        char c;
        *truncated = ::read(f.fd, &c, 1) == 1;
    }
    return out;
}

// One line of /proc/locks or one "lock:" line of fdinfo:
//   1: OFDLCK ADVISORY  READ  -1 fe:00:10952995 100 101
//   2: POSIX  ADVISORY  WRITE 4242 fe:00:10952995 0 EOF
struct LockLine {
    bool ofd = false;
    bool write = false;
    long pid = 0;
    unsigned maj = 0, min = 0;
    uint64_t ino = 0;
    int64_t start = 0, end = -1;  // end -1: EOF
};

bool parse_lock_line(const std::string &line, LockLine *out) {
    std::istringstream in(line);
    std::string id, type, mode, rw, pid, dev, start, end;
    if (!(in >> id >> type)) return false;
    if (type == "->") return false;  // a blocked waiter, not a holder
    if (!(in >> mode >> rw >> pid >> dev >> start >> end)) return false;
    if (type == "OFDLCK") {
        out->ofd = true;
    } else if (type == "POSIX") {
        out->ofd = false;
    } else {
        return false;  // flock, leases: not fcntl byte locks
    }
    out->write = rw == "WRITE";
    out->pid = std::strtol(pid.c_str(), nullptr, 10);
    unsigned long long ino = 0;
    if (std::sscanf(dev.c_str(), "%x:%x:%llu", &out->maj, &out->min, &ino) != 3) return false;
    out->ino = ino;
    out->start = std::strtoll(start.c_str(), nullptr, 10);
    out->end = end == "EOF" ? -1 : std::strtoll(end.c_str(), nullptr, 10);
    return true;
}

bool same_file(const LockLine &l, dev_t dev, ino_t ino) {
    return l.maj == major(dev) && l.min == minor(dev) && l.ino == static_cast<uint64_t>(ino);
}

// Bits 0..4 of a base (100 or 200) covered by [start, end].
uint32_t covered(const LockLine &l, int64_t base) {
    uint32_t m = 0;
    for (int i = 0; i <= 4; i++) {
        int64_t b = base + i;
        if (b >= l.start && (l.end < 0 || b <= l.end)) m |= 1u << i;
    }
    return m;
}

void add_line(LockHolder *h, const LockLine &l) {
    uint32_t u = covered(l, 100), f = covered(l, 200);
    if (!u && !f) return;
    h->use |= u;
    h->forbid |= f;
    if (l.write) h->write_lock = true;
    const char *k = l.ofd ? "ofd" : "posix";
    if (h->kind.empty()) {
        h->kind = k;
    } else if (h->kind != k && h->kind != "ofd+posix") {
        h->kind = "ofd+posix";
    }
}

void for_each_line(const std::string &text, const std::string &prefix, auto fn) {
    size_t pos = 0;
    while (pos < text.size()) {
        size_t nl = text.find('\n', pos);
        if (nl == std::string::npos) nl = text.size();
        std::string line = text.substr(pos, nl - pos);
        pos = nl + 1;
        if (!prefix.empty()) {
            if (line.compare(0, prefix.size(), prefix) != 0) continue;
            line.erase(0, prefix.size());
        }
        fn(line);
    }
}

std::string read_comm(long pid) {
    std::string s = read_bounded("/proc/" + std::to_string(pid) + "/comm", kMaxComm);
    while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) s.pop_back();
    return s;
}

std::string read_cmdline(long pid) {
    bool truncated = false;
    std::string s =
        read_bounded("/proc/" + std::to_string(pid) + "/cmdline", kMaxCmdline, &truncated);
    std::replace(s.begin(), s.end(), '\0', ' ');
    while (!s.empty() && s.back() == ' ') s.pop_back();
    if (truncated) s += " ...";
    return s;
}

std::mutex &registry_mutex() {
    static auto *m = new std::mutex;
    return *m;
}
std::map<int, std::string> &registry() {
    static auto *r = new std::map<int, std::string>;
    return *r;
}

std::string registered_name(int fd) {
    std::lock_guard g(registry_mutex());
    auto it = registry().find(fd);
    return it == registry().end() ? std::string() : it->second;
}

bool is_pid_dir(const char *name) {
    if (!*name) return false;
    for (const char *p = name; *p; p++) {
        if (*p < '0' || *p > '9') return false;
    }
    return true;
}

}  // namespace

void register_lock_node(int fd, std::string node_name) {
    std::lock_guard g(registry_mutex());
    registry()[fd] = std::move(node_name);
}

void unregister_lock_node(int fd) {
    std::lock_guard g(registry_mutex());
    registry().erase(fd);
}

std::vector<LockHolder> find_lock_holders(int fd) {
    struct stat st;
    if (::fstat(fd, &st) < 0) return {};
    return find_lock_holders(st.st_dev, st.st_ino);
}

std::vector<LockHolder> find_lock_holders(dev_t dev, ino_t ino) {
    const long self = ::getpid();
    std::map<long, LockHolder> others;  // by pid
    std::vector<LockHolder> mine;       // per node (or per unnamed fd)

    // This process's POSIX locks: the kernel only knows the process, the
    // inode table knows the nodes.
    for (const PosixSelfHolder &p : posix_self_holders(dev, ino)) {
        LockHolder h;
        h.pid = static_cast<int>(self);
        h.this_process = true;
        h.node_name = p.name;
        h.fd = p.fd;
        h.kind = "posix";
        h.use = p.held.use;
        h.forbid = p.held.forbid;
        mine.push_back(std::move(h));
    }

    // OFD locks (and POSIX ones, for their fd) through /proc/PID/fd.
    Dir proc(opendir("/proc"));
    while (proc) {
        struct dirent *de = readdir(proc.get());
        if (!de) break;
        if (!is_pid_dir(de->d_name)) continue;
        const long pid = std::strtol(de->d_name, nullptr, 10);
        const std::string base = std::string("/proc/") + de->d_name;
        Dir fds(opendir((base + "/fd").c_str()));
        if (!fds) continue;  // EACCES, or gone
        int seen = 0;
        while (struct dirent *fe = readdir(fds.get())) {
            if (++seen > kMaxFdsPerProcess) break;
            if (!is_pid_dir(fe->d_name)) continue;
            struct stat fst;
            if (::stat((base + "/fd/" + fe->d_name).c_str(), &fst) < 0) continue;
            if (fst.st_dev != dev || fst.st_ino != ino) continue;
            const int fdnum = std::atoi(fe->d_name);
            LockHolder h;
            h.pid = static_cast<int>(pid);
            h.this_process = pid == self;
            h.fd = fdnum;
            const std::string info = read_bounded(base + "/fdinfo/" + fe->d_name, kMaxFdinfo);
            for_each_line(info, "lock:", [&](const std::string &line) {
                LockLine l;
                if (!parse_lock_line(line, &l) || !same_file(l, dev, ino)) return;
                // Our own POSIX locks were taken from the inode table above.
                if (!l.ofd && pid == self) return;
                add_line(&h, l);
            });
            if (h.use == 0 && h.forbid == 0) continue;
            if (pid == self) {
                h.node_name = registered_name(fdnum);
                mine.push_back(std::move(h));
            } else {
                LockHolder &agg = others[pid];
                agg.pid = h.pid;
                agg.use |= h.use;
                agg.forbid |= h.forbid;
                agg.write_lock |= h.write_lock;
                if (agg.kind.empty()) agg.kind = h.kind;
                else if (agg.kind != h.kind) agg.kind = "ofd+posix";
            }
            if (mine.size() + others.size() >= kMaxHolders) break;
        }
    }

    // POSIX locks of other processes carry their pid in /proc/locks; what
    // no visible process accounts for becomes one anonymous holder.
    std::vector<LockLine> all;
    const std::string locks = read_bounded("/proc/locks", kMaxProcLocks);
    for_each_line(locks, "", [&](const std::string &line) {
        LockLine l;
        if (parse_lock_line(line, &l) && same_file(l, dev, ino)) all.push_back(l);
    });
    for (const LockLine &l : all) {
        if (l.ofd || l.pid <= 0 || l.pid == self) continue;
        if (others.size() >= kMaxHolders) break;
        LockHolder &agg = others[l.pid];
        agg.pid = static_cast<int>(l.pid);
        add_line(&agg, l);
        if (agg.use == 0 && agg.forbid == 0) others.erase(l.pid);
    }
    LockHolder seen_all, accounted;
    for (const LockLine &l : all) add_line(&seen_all, l);
    for (const auto &h : mine) accounted.use |= h.use, accounted.forbid |= h.forbid;
    for (const auto &[pid, h] : others) accounted.use |= h.use, accounted.forbid |= h.forbid;
    // Our own POSIX bytes are in /proc/locks under our pid but were
    // accounted per node; anything else unaccounted is someone invisible.
    LockHolder unknown;
    for (const LockLine &l : all) {
        if (!l.ofd && l.pid == self) continue;
        LockHolder one;
        add_line(&one, l);
        unknown.use |= one.use & ~accounted.use;
        unknown.forbid |= one.forbid & ~accounted.forbid;
        if ((one.use & ~accounted.use) || (one.forbid & ~accounted.forbid)) {
            unknown.write_lock |= one.write_lock;
            if (unknown.kind.empty()) unknown.kind = one.kind;
        }
    }

    std::vector<LockHolder> out = std::move(mine);
    for (auto &[pid, h] : others) {
        h.comm = read_comm(pid);
        h.cmdline = read_cmdline(pid);
        out.push_back(std::move(h));
    }
    if (unknown.use || unknown.forbid) out.push_back(std::move(unknown));
    for (auto &h : out) {
        if (h.this_process && h.comm.empty()) h.comm = read_comm(self);
    }
    return out;
}

std::vector<std::string> lock_bit_name_list(uint32_t mask) {
    std::vector<std::string> names;
    for (int i = 0; i < BLK_PERM_COUNT; i++) {
        if (mask & (1u << i)) names.emplace_back(perm_name(i));
    }
    if (mask & LOCK_BIT_GRAPH_MOD) names.emplace_back("graph-mod (old QEMU)");
    return names;
}

std::string lock_bit_names(uint32_t mask) {
    std::string s;
    for (const std::string &n : lock_bit_name_list(mask)) {
        if (!s.empty()) s += ", ";
        s += n;
    }
    return s.empty() ? "nothing" : s;
}

std::string describe_holder_bits(const LockHolder &h) {
    return "uses: " + lock_bit_names(h.use) + " / forbids: " + lock_bit_names(h.forbid);
}

std::string describe_holder(const LockHolder &h) {
    std::string s;
    if (h.this_process && !h.node_name.empty()) {
        s = "Held by node '" + h.node_name + "' of this process (pid " + std::to_string(h.pid) +
            ")";
    } else if (h.this_process) {
        s = "Held by this process (pid " + std::to_string(h.pid) + ") through fd " +
            std::to_string(h.fd) + ", which is not a node";
    } else if (h.pid > 0) {
        s = "Held by pid " + std::to_string(h.pid);
        if (!h.comm.empty()) s += " (" + h.comm + ")";
        if (!h.cmdline.empty()) s += ", command line: " + h.cmdline;
    } else {
        s = "Held by a process not visible from here (another pid namespace, or another "
            "user's process)";
    }
    s += "; uses: " + lock_bit_names(h.use) + "; forbids: " + lock_bit_names(h.forbid);
    if (h.write_lock) s += "; holds a write lock (not QEMU's protocol, e.g. a whole-file lock)";
    return s;
}

}  // namespace mb
