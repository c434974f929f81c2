// Per-command help of miniblock-img: `miniblock-img CMD --help` (and
// `miniblock-img help CMD`) print the one entry of this table, so that
// every command has its own text (qemu-img's shape), not a shared fragment.
#include <cstdio>
#include <cstring>
#include <string>

#include "tools/img-commands.h"

namespace mb::tools {

namespace {

struct ImgHelp {
    const char *name;
    const char *synopsis;  // after "Usage: miniblock-img "
    const char *text;
};

const ImgHelp help_table[] = {
    {"create", "create [-q] [-u] [-f FMT] [-b BACKING -F BACKING_FMT] [-o OPTIONS] FILE [SIZE]",
     "Create an image of SIZE bytes (k, M, G, T, P, E suffixes, decimals such as 1.5M).\n"
     "\n"
     "  -f FMT          raw (default) or qcow2\n"
     "  -b BACKING      a qcow2 overlay of BACKING; SIZE defaults to the backing file's\n"
     "  -F BACKING_FMT  the backing file's format (required with -b, as in qemu-img)\n"
     "  -u              do not open the backing file (SIZE is then required)\n"
     "  -o OPTIONS      creation options; -o help lists those of FMT\n"
     "  -q              quiet: no \"Formatting\" line\n"},
    {"info", "info [-f FMT] [-U] [--image-opts] [--backing-chain] [--output=human|json] FILE",
     "Describe an image.  As qemu-img, info opens the image without I/O on its\n"
     "data: a raw image without locks (it works next to a running writer); a\n"
     "format with metadata (qcow2) keeps writers out while its tables are read.\n"
     "The JSON has qemu-img's keys; miniblock's extras (the lock holders) are\n"
     "under \"miniblock\".\n"
     "\n"
     "  --backing-chain  every image of the backing chain (JSON: an array)\n"},
    {"check", "check [-f FMT] [-r leaks|all] [-U] [--image-opts] [--output=human|json] FILE",
     "Check a qcow2 image's metadata.  Exit status: 0 clean, 1 check failed,\n"
     "2 corruptions, 3 leaked clusters only.  What was repaired is checked again.\n"
     "\n"
     "  -r leaks  drop the refcount of leaked clusters (needs write access)\n"
     "  -r all    also raise refcounts that are too low, correct COPIED flags, and\n"
     "            rebuild the refcount structure when a cluster in use has none\n"
     "  -U        force share (not with -r)\n"},
    {"map", "map [-f FMT] [-U] [--image-opts] [--output=human|json] FILE",
     "Show where each range of the image is stored (layer of the backing chain,\n"
     "offset in which file), or that it reads as zeroes.\n"},
    {"convert", "convert [-f FMT] [-O raw|qcow2] [-o OPTIONS] [-t CACHE] [-T SRC_CACHE] [-p] [-q] [-U]\n"
                "                    [--salvage] [--image-opts] [-n [--target-image-opts]] SOURCE TARGET",
     "Copy SOURCE (through its backing chain) into a new TARGET image.  All-zero\n"
     "ranges are not written; the target's cache mode defaults to unsafe, as\n"
     "qemu-img's.\n"
     "\n"
     "  -p                   show progress\n"
     "  -q                   quiet: nothing but errors\n"
     "  --salvage            sectors of SOURCE that cannot be read become zeroes\n"
     "                       (with a warning each) instead of failing the copy\n"
     "  --target-image-opts  TARGET is an option string (needs -n, not -O)\n"},
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
    {"compare", "compare [-f FMT] [-F FMT] [-T CACHE] [-q] [-s] [-U] [--image-opts] FILE1 FILE2",
     "Compare the contents the guest sees of two images.  Exit status: 0 identical,\n"
     "1 different, 2 an error while opening, 3 an error while comparing.\n"
     "\n"
     "  -s  strict: a size mismatch or an allocated range against an unallocated\n"
     "      one counts as different even when both read the same\n"},
    {"resize", "resize [-f FMT] [--shrink] [-q] [--image-opts] FILE [+|-]SIZE",
     "Change the image's virtual size.  Takes the resize permission, so it is\n"
     "refused while another process uses the image and forbids resizing (e.g. a\n"
     "running QEMU).  Shrinking needs --shrink.  A qcow2 image grows its L1 table\n"
     "as needed; shrinking frees the clusters past the new end and cuts the file.\n"},
    {"amend", "amend [-f FMT] [-t CACHE] [-q] [--image-opts] -o OPTIONS FILE",
     "Change a qcow2 image's options in place: compat=0.10|1.1, lazy_refcounts=on|off,\n"
     "refcount_bits=1..64 (a power of two; 1.1 only), size (through the resize\n"
     "permission, as resize).  The image is opened read-write: refused while another\n"
     "process writes it.  -o help lists the options.\n"},
    {"rebase", "rebase [-f FMT] [-t CACHE] [-u] [-U] [-q] [-p] -b BACKING -F BACKING_FMT FILE",
     "Change the backing file of a qcow2 image.  Safe mode (default) first copies\n"
     "into FILE every range it does not define itself where the old and the new\n"
     "backing files differ, so that the guest sees the same data; -u (unsafe) only\n"
     "rewrites the header.  -b \"\" makes FILE independent of any backing file.\n"
     "The header is rewritten under an exclusive lock on FILE (refused while anyone\n"
     "has it open); -U reads the new backing file with force share.\n"},
    {"measure", "measure [--output=human|json] [-O FMT] [-o OPTIONS] (--size SIZE | [-f FMT] FILE)",
     "Say how many bytes a new image of format FMT would need on the host: as\n"
     "created (required) and once every cluster is written (fully-allocated).\n"},
    {"dd", "dd [-f FMT] [-O FMT] [bs=BYTES] [count=BLOCKS] [skip=BLOCKS] if=INPUT of=OUTPUT",
     "Copy the first count blocks of INPUT (after skip blocks) into a new OUTPUT\n"
     "image, as dd(1) with qemu-img's operands.\n"},
    {"snapshot", "snapshot [-f FMT] [-U] [-q] [--image-opts] [-l | -a SNAPSHOT | -c SNAPSHOT | -d SNAPSHOT] FILE",
     "List, create, apply (revert to) or delete qcow2 internal snapshots, as\n"
     "qemu-img snapshot.  -a and -d find SNAPSHOT by ID, then by name.  -l opens\n"
     "the image read-only (-U allowed); the others take the write permission.\n"},
};

// Creation options (-o help), qemu-img's layout.
struct CreateOption {
    const char *fmt, *name, *type, *doc;
};
const CreateOption create_options[] = {
    {"raw", "size", "size", "Virtual disk size"},
    {"qcow2", "backing_file", "str", "File name of a base image"},
    {"qcow2", "backing_fmt", "str", "Image format of the base image"},
    {"qcow2", "cluster_size", "size", "qcow2 cluster size"},
    {"qcow2", "compat", "str", "Compatibility level (v2 [0.10] or v3 [1.1])"},
    {"qcow2", "lazy_refcounts", "bool (on/off)", "Postpone refcount updates"},
    {"qcow2", "preallocation", "str", "Preallocation mode (allowed values: off, metadata, falloc, full)"},
    {"qcow2", "refcount_bits", "num", "Width of a reference count entry in bits"},
    {"qcow2", "size", "size", "Virtual disk size"},
};

}  // namespace

bool print_img_create_options(const char *fmt, FILE *out) {
    bool any = false;
    for (const CreateOption &o : create_options) {
        if (strcmp(o.fmt, fmt) != 0) continue;
        if (!any) fprintf(out, "Supported %s options:\n", fmt);
        any = true;
        std::string head = std::string(o.name) + "=<" + o.type + ">";
        fprintf(out, "  %-22s - %s\n", head.c_str(), o.doc);
    }
    return any;
}

bool print_img_command_help(const char *cmd, FILE *out) {
    for (const ImgHelp &h : help_table) {
        if (strcmp(h.name, cmd) != 0) continue;
        fprintf(out, "Usage: miniblock-img %s\n%s", h.synopsis, h.text);
        return true;
    }
    return false;
}

}  // namespace mb::tools
