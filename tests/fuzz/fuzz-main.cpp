// A small standalone driver for libFuzzer-style targets
// (LLVMFuzzerTestOneInput), so fuzz targets run in CI with g++ and the
// sanitizers, without clang's libFuzzer.
//
//   fuzz-TARGET [-seconds=N] [-seed=S] [-max_len=BYTES] [CORPUS_FILE_OR_DIR]...
//
// Runs every corpus input once, then mutates random corpus entries (bit
// flips, interesting values, truncation, extension, splicing) until the time
// is up.  A crash or sanitizer report ends the run with a non-zero status;
// the input is written to ./crash-input first.  Deterministic for a seed.
#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

namespace {

std::vector<uint8_t> current;

void save_crash(int sig) {
    FILE *f = fopen("crash-input", "wb");
    if (f) {
        fwrite(current.data(), 1, current.size(), f);
        fclose(f);
    }
    fprintf(stderr, "fuzz: signal %d; input (%zu bytes) saved to crash-input\n", sig, current.size());
    signal(sig, SIG_DFL);
    raise(sig);
}

void load(const std::string &path, std::vector<std::vector<uint8_t>> &corpus) {
    struct stat st;
    if (stat(path.c_str(), &st) < 0) return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path.c_str());
        if (!d) return;
        while (struct dirent *e = readdir(d)) {
            if (e->d_name[0] == '.') continue;
            load(path + "/" + e->d_name, corpus);
        }
        closedir(d);
        return;
    }
    std::ifstream in(path, std::ios::binary);
    corpus.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void mutate(std::vector<uint8_t> &v, std::mt19937_64 &rng, size_t max_len,
            const std::vector<std::vector<uint8_t>> &corpus) {
    static const uint64_t interesting[] = {0, 1, 0x7f, 0x80, 0xff, 0x7fff, 0x8000, 0xffff,
                                           0x7fffffff, 0x80000000, 0xffffffff, 0x200, 0x10000,
                                           0x7fffffffffffffffull, 0x8000000000000000ull,
                                           0xffffffffffffffffull};
    int rounds = 1 + rng() % 4;
    for (int r = 0; r < rounds; r++) {
        switch (rng() % 7) {
        case 0:  // flip a bit
            if (!v.empty()) v[rng() % v.size()] ^= 1 << (rng() % 8);
            break;
        case 1:  // set a byte
            if (!v.empty()) v[rng() % v.size()] = rng();
            break;
        case 2: {  // an interesting value, big-endian, 1/2/4/8 bytes
            if (v.empty()) break;
            int w = 1 << (rng() % 4);
            size_t at = rng() % v.size();
            uint64_t x = interesting[rng() % (sizeof(interesting) / sizeof(interesting[0]))];
            for (int i = 0; i < w && at + i < v.size(); i++) v[at + i] = x >> (8 * (w - 1 - i));
            break;
        }
        case 3:  // truncate
            if (!v.empty()) v.resize(rng() % v.size());
            break;
        case 4:  // extend with random bytes
            if (v.size() < max_len) {
                size_t n = std::min<size_t>(max_len - v.size(), 1 + rng() % 512);
                for (size_t i = 0; i < n; i++) v.push_back(rng());
            }
            break;
        case 5: {  // splice in part of another input
            const auto &o = corpus[rng() % corpus.size()];
            if (o.empty() || v.empty()) break;
            size_t from = rng() % o.size(), to = rng() % v.size();
            size_t n = std::min(o.size() - from, v.size() - to);
            n = std::min<size_t>(n, 1 + rng() % 64);
            memcpy(v.data() + to, o.data() + from, n);
            break;
        }
        case 6:  // copy a run within the input
            if (v.size() > 2) {
                size_t from = rng() % v.size(), to = rng() % v.size();
                size_t n = std::min(v.size() - std::max(from, to), (size_t)(1 + rng() % 32));
                memmove(v.data() + to, v.data() + from, n);
            }
            break;
        }
    }
    if (v.size() > max_len) v.resize(max_len);
}

}  // namespace

int main(int argc, char **argv) {
    double seconds = 10;
    uint64_t seed = 1;
    size_t max_len = 1 << 16;
    std::vector<std::vector<uint8_t>> corpus;
    for (int i = 1; i < argc; i++) {
        if (!strncmp(argv[i], "-seconds=", 9)) seconds = atof(argv[i] + 9);
        else if (!strncmp(argv[i], "-seed=", 6)) seed = strtoull(argv[i] + 6, nullptr, 0);
        else if (!strncmp(argv[i], "-max_len=", 9)) max_len = strtoull(argv[i] + 9, nullptr, 0);
        else load(argv[i], corpus);
    }
    // A target must not allocate without bound.  Under ASan, its
    // max_allocation_size_mb option does that (a cap on the address space
    // would starve ASan's shadow memory); without it, cap the address space.
#ifndef __SANITIZE_ADDRESS__
    struct rlimit rl = {8ull << 30, 8ull << 30};
    setrlimit(RLIMIT_AS, &rl);
#endif
    for (int s : {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL}) signal(s, save_crash);

    if (corpus.empty()) corpus.emplace_back();
    for (auto &c : corpus) {
        current = c;
        LLVMFuzzerTestOneInput(current.data(), current.size());
    }
    std::mt19937_64 rng(seed);
    auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    uint64_t runs = 0;
    while (std::chrono::steady_clock::now() < end) {
        for (int batch = 0; batch < 64; batch++) {
            current = corpus[rng() % corpus.size()];
            mutate(current, rng, max_len, corpus);
            LLVMFuzzerTestOneInput(current.data(), current.size());
            runs++;
            // Inputs that came through become seeds too (a crude coverage proxy).
            if (rng() % 64 == 0 && corpus.size() < 4096) corpus.push_back(current);
        }
    }
    printf("fuzz: %llu runs in %.0f s (seed %llu), no crash\n", (unsigned long long)runs, seconds,
           (unsigned long long)seed);
    return 0;
}
