// The per-process inode table for classic POSIX locks: see posix-inode.h for
// why it exists.
#include "block/locking/posix-inode.h"

#include <cerrno>
#include <map>
#include <memory>

#include "block/locking/lock-bytes.h"
#include "block/locking/qemu-bytes.h"
#include "block/locking/syscalls.h"

namespace mb {

struct PosixInode {
    dev_t dev = 0;
    ino_t ino = 0;
    int count[8] = {};  // per byte of lockbytes::kOrder: how many nodes hold it
    std::vector<std::unique_ptr<PosixNode>> nodes;
    std::vector<int> parked;  // fds whose close waits for the last lock to go

    int total() const {
        int n = 0;
        for (int c : count) n += c;
        return n;
    }
};

namespace {

using InodeKey = std::pair<dev_t, ino_t>;

std::map<InodeKey, std::unique_ptr<PosixInode>> &table() {
    static auto *t = new std::map<InodeKey, std::unique_ptr<PosixInode>>;
    return *t;
}

int setlk(int fd, short type, int64_t off) {
    struct flock fl = {};
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = off;
    fl.l_len = 1;
    // F_SETLK does not block; EINTR is still possible from a signal, so
    // retry, but boundedly: an injected endless EINTR must not hang a test.
    for (int tries = 0; tries < 100; tries++) {
        if (lock_syscalls().fcntl_lock(fd, F_SETLK, &fl) == 0) return 0;
        if (errno != EINTR) return errno;
    }
    return EINTR;
}

// Closing is only safe once no node of this process holds a byte here: any
// close drops every POSIX lock of the process on the inode.
void close_parked_if_unlocked(PosixInode *ino) {
    if (ino->total() != 0) return;
    for (int fd : ino->parked) lock_syscalls().close(fd);
    ino->parked.clear();
}

void forget_if_unused(PosixInode *ino) {
    if (!ino->nodes.empty() || ino->total() != 0 || !ino->parked.empty()) return;
    table().erase({ino->dev, ino->ino});
}

}  // namespace

std::recursive_mutex &posix_table_mutex() {
    static auto *m = new std::recursive_mutex;
    return *m;
}

Result<PosixNode *> posix_node_attach(int fd, std::string name) {
    std::lock_guard guard(posix_table_mutex());
    struct stat st;
    if (lock_syscalls().fstat(fd, &st) < 0) return PosixError("fstat", errno);
    auto &slot = table()[{st.st_dev, st.st_ino}];
    if (!slot) {
        slot = std::make_unique<PosixInode>();
        slot->dev = st.st_dev;
        slot->ino = st.st_ino;
    }
    auto node = std::make_unique<PosixNode>();
    node->inode = slot.get();
    node->fd = fd;
    node->name = std::move(name);
    PosixNode *raw = node.get();
    slot->nodes.push_back(std::move(node));
    return raw;
}

void posix_node_detach(PosixNode *node) {
    std::lock_guard guard(posix_table_mutex());
    PosixInode *ino = node->inode;
    // A node detached while holding bytes would leave counts nobody can
    // drop: release them first.
    for (int64_t off : lockbytes::kOrder) {
        if (lockbytes::has(node->held, off)) posix_node_unlock(node, off);
    }
    std::erase_if(ino->nodes, [node](const auto &n) { return n.get() == node; });
    close_parked_if_unlocked(ino);
    forget_if_unused(ino);
}

int posix_node_set_fd(PosixNode *node, int fd) {
    std::lock_guard guard(posix_table_mutex());
    struct stat st;
    if (lock_syscalls().fstat(fd, &st) < 0) return errno;
    if (st.st_dev != node->inode->dev || st.st_ino != node->inode->ino) return EXDEV;
    node->fd = fd;
    return 0;
}

int posix_node_lock(PosixNode *node, int64_t off) {
    std::lock_guard guard(posix_table_mutex());
    if (lockbytes::has(node->held, off)) return 0;
    int &count = node->inode->count[lockbytes::index_of(off)];
    if (count == 0) {
        int err = setlk(node->fd, F_RDLCK, off);
        if (err) return err;
    }
    count++;
    lockbytes::set(node->held, off, true);
    return 0;
}

int posix_node_unlock(PosixNode *node, int64_t off) {
    std::lock_guard guard(posix_table_mutex());
    if (!lockbytes::has(node->held, off)) return 0;
    int &count = node->inode->count[lockbytes::index_of(off)];
    if (count == 1) {
        int err = setlk(node->fd, F_UNLCK, off);
        if (err) return err;
    }
    count--;
    lockbytes::set(node->held, off, false);
    close_parked_if_unlocked(node->inode);
    return 0;
}

std::vector<const PosixNode *> posix_node_peers_holding(const PosixNode *node, int64_t off) {
    std::lock_guard guard(posix_table_mutex());
    std::vector<const PosixNode *> peers;
    for (const auto &n : node->inode->nodes) {
        if (n.get() != node && lockbytes::has(n->held, off)) peers.push_back(n.get());
    }
    return peers;
}

std::vector<PosixSelfHolder> posix_self_holders(dev_t dev, ino_t ino) {
    std::lock_guard guard(posix_table_mutex());
    std::vector<PosixSelfHolder> out;
    auto it = table().find({dev, ino});
    if (it == table().end()) return out;
    for (const auto &n : it->second->nodes) {
        if (!lockbytes::empty(n->held)) out.push_back({n->name, n->fd, n->held});
    }
    return out;
}

int posix_lock_close_fd(int fd) {
    std::lock_guard guard(posix_table_mutex());
    struct stat st;
    if (lock_syscalls().fstat(fd, &st) == 0) {
        auto it = table().find({st.st_dev, st.st_ino});
        if (it != table().end() && it->second->total() != 0) {
            // Closing now would drop every POSIX lock this process holds on
            // the inode, including other nodes' locks: park the fd instead.
            it->second->parked.push_back(fd);
            return 0;
        }
    }
    return lock_syscalls().close(fd) == 0 ? 0 : -errno;
}

int posix_lock_reassert(int fd) {
    std::lock_guard guard(posix_table_mutex());
    struct stat st;
    if (lock_syscalls().fstat(fd, &st) < 0) return -errno;
    auto it = table().find({st.st_dev, st.st_ino});
    if (it == table().end()) return 0;
    for (int64_t off : lockbytes::kOrder) {
        if (it->second->count[lockbytes::index_of(off)] == 0) continue;
        int err = setlk(fd, F_RDLCK, off);
        if (err) return -err;
    }
    return 0;
}

int posix_lock_parked_fds(int fd) {
    std::lock_guard guard(posix_table_mutex());
    struct stat st;
    if (lock_syscalls().fstat(fd, &st) < 0) return 0;
    auto it = table().find({st.st_dev, st.st_ino});
    return it == table().end() ? 0 : static_cast<int>(it->second->parked.size());
}

}  // namespace mb
