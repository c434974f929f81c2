// Per-command help of miniblock-img: `miniblock-img CMD --help` (and
// `miniblock-img help CMD`) print the one entry of this table, so that
// every command has its own text (qemu-img's shape), not a shared fragment.
#include <cstdio>
#include <cstring>

#include "tools/img-commands.h"

namespace mb::tools {

namespace {

struct ImgHelp {
    const char *name;
    const char *synopsis;  // after "Usage: miniblock-img "
    const char *text;
};

const ImgHelp help_table[] = {
    {"create", "create [-f FMT] [-b BACKING [-F BACKING_FMT]] [-o OPTIONS] FILE [SIZE]",
     "Create an image of SIZE bytes (k, M, G, T, P, E suffixes).\n"
     "\n"
     "  -f FMT          raw (default) or qcow2\n"
     "  -b BACKING      a qcow2 overlay of BACKING; SIZE defaults to the backing file's\n"
     "  -F BACKING_FMT  the backing file's format\n"
     "  -o OPTIONS      creation options\n"},
    {"info", "info [-f FMT] [-U] [--image-opts] [--backing-chain] [--output=human|json] FILE",
     "Describe an image.  As qemu-img, info opens the image without I/O on its\n"
     "data: a raw image without locks (it works next to a running writer); a\n"
     "format with metadata (qcow2) keeps writers out while its tables are read.\n"
     "The JSON has qemu-img's keys; miniblock's extras (the lock holders) are\n"
     "under \"miniblock\".\n"
     "\n"
     "  --backing-chain  every image of the backing chain (JSON: an array)\n"},
    {"check", "check [-f FMT] [-r leaks] [-U] [--image-opts] [--output=human|json] FILE",
     "Check a qcow2 image's metadata.  Exit status: 0 clean, 1 check failed,\n"
     "2 corruptions, 3 leaked clusters only.\n"
     "\n"
     "  -r leaks  drop the refcount of leaked clusters (needs write access)\n"
     "  -U        force share (not with -r)\n"},
    {"map", "map [-f FMT] [-U] [--image-opts] [--output=human|json] FILE",
     "Show where each range of the image is stored (layer of the backing chain,\n"
     "offset in which file), or that it reads as zeroes.\n"},
    {"convert", "convert [-f FMT] [-O raw|qcow2] [-o OPTIONS] [-t CACHE] [-T SRC_CACHE] [-p] [-U]\n"
                "                    [--image-opts] SOURCE TARGET",
     "Copy SOURCE (through its backing chain) into a new TARGET image.  All-zero\n"
     "ranges are not written; the target's cache mode defaults to unsafe, as\n"
     "qemu-img's.\n"
     "\n"
     "  -p  show progress\n"},
    {"commit", "commit [-f FMT] [-t CACHE] [-b BASE] [-d] [-p] [-q] [--check] [--image-opts] OVERLAY",
     "Copy OVERLAY's data into its backing file (or into BASE, deeper in its chain),\n"
     "then empty OVERLAY (reads fall through to the base again), as qemu-img does.\n"
     "The base is locked exclusively for the duration (use consistent read, write,\n"
     "resize; forbid all) and drops back to its previous locks afterwards; if anyone\n"
     "else uses it, commit is refused naming them, with every lock as before.\n"
     "\n"
     "  -b BASE     commit into BASE (a file name in the chain) and keep OVERLAY; the\n"
     "              images in between are not readable consistently by others meanwhile\n"
     "  -d          keep OVERLAY's data (do not empty it); -b implies it, as in qemu-img\n"
     "  -p          show progress\n"
     "  -q          quiet\n"
     "  --check     dry run: say whether the lock on the base could be taken now and,\n"
     "              if not, who is in the way (exit status 1)\n"},
    {"locks", "locks [--output=human|json] FILE...",
     "List every process (and node of this process) holding lock bytes on each file,\n"
     "with what it uses and forbids.  Takes no lock itself.\n"},
    {"bench", "bench [-c COUNT] [-d DEPTH] [-f FMT] [-i AIO] [-n] [-o OFFSET] [-s SIZE] [-S STEP]\n"
              "                  [-t CACHE] [-w] [-U] [--image-opts] FILE",
     "Send COUNT requests (default 75000) of SIZE bytes (default 4 KiB), DEPTH in\n"
     "parallel (default 64), starting at OFFSET, STEP apart (default SIZE), reads\n"
     "unless -w, and print the time and requests per second.\n"},
};

}  // namespace

bool print_img_command_help(const char *cmd, FILE *out) {
    for (const ImgHelp &h : help_table) {
        if (strcmp(h.name, cmd) != 0) continue;
        fprintf(out, "Usage: miniblock-img %s\n%s", h.synopsis, h.text);
        return true;
    }
    return false;
}

}  // namespace mb::tools
