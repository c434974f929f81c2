// The option parser miniblock-img's subcommands share (tools/img-common.cpp).
//
// A subcommand names the common options it takes (ImgCommonOpt bits; they
// fill an ImgCommon) and lists its own in a table (ImgOption); the parser
// builds getopt_long's tables from both, so that each command accepts
// exactly its options, with getopt's messages and the command's own texts.
#pragma once

#include <getopt.h>

#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "tools/tool-common.h"

namespace mb::tools {

// The options several subcommands take.  The long spellings are bits of
// their own because not every command that takes -f or -U takes --format
// or --force-share, and getopt_long accepts any prefix of a long name: an
// extra long option would change what an abbreviation means.
enum ImgCommonOpt : unsigned {
    IMG_FORMAT = 1u << 0,       // -f FMT: flags.format
    IMG_FORMAT_LONG = 1u << 1,  // --format FMT, the same
    IMG_SHARE = 1u << 2,        // -U: flags.force_share
    IMG_SHARE_LONG = 1u << 3,   // --force-share, the same
    IMG_IMAGE_OPTS = 1u << 4,   // --image-opts: flags.image_opts
    IMG_CACHE = 1u << 5,        // -t CACHE: flags.cache
    IMG_QUIET = 1u << 6,        // -q: quiet
    IMG_OPTIONS = 1u << 7,      // -o OPTIONS: options (several -o joined by commas)
    IMG_OUTPUT = 1u << 8,       // --output=human|json: json
    // What opening one image takes in most commands.
    IMG_OPEN = IMG_FORMAT | IMG_SHARE | IMG_SHARE_LONG | IMG_IMAGE_OPTS,
};

// What the common options set.  A command may preset fields (read_only)
// before parsing; the parser only sets what an option names.
struct ImgCommon {
    ImageFlags flags;
    bool quiet = false;
    bool json = false;
    std::string options;
};

// One option of a command's own.
struct ImgOption {
    int short_name;         // 'b', or 0 for a long-only option
    const char *long_name;  // "check", or nullptr for a short-only option
    int has_arg;            // no_argument, required_argument or optional_argument
    // Takes the argument (nullptr when there is none): 0 to go on, or the
    // status to exit with once it has printed why.
    std::function<int(const char *arg)> take;
};

// The usual entries: an option that sets a flag, one that keeps its
// argument (the last one given wins), one accepted without effect.
ImgOption img_flag(int short_name, const char *long_name, bool *set);
ImgOption img_value(int short_name, const char *long_name, std::string *store);
ImgOption img_ignored(int short_name, int has_arg = no_argument);

struct ImgCommand {
    const char *name;  // "info", as in "invalid option for info"
    unsigned common;   // ImgCommonOpt bits
    std::vector<ImgOption> own;
    // -h and --help's abbreviations (main answers -h and --help itself);
    // nullptr: the command's entry of tools/img-help.cpp.
    void (*help)(FILE *out) = nullptr;
    // After getopt has named a bad option: nullptr: "invalid option for
    // NAME" and the pointer to --help, status 1.
    int (*bad_option)() = nullptr;
};

// Parses argv (argv[0]: the subcommand, as getopt's messages name it) as
// getopt_long does; the operands then start at optind.  nullopt to go on,
// or the status to exit with: 0 after the help, else after an error that
// has been printed.
std::optional<int> img_parse_options(int argc, char **argv, const ImgCommand &cmd, ImgCommon *common);

}  // namespace mb::tools
