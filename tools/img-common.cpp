// Helpers shared by miniblock-img's subcommands (tools/img-commands.h).
#include <cstring>

#include "tools/img-commands.h"
#include "tools/img-common.h"
#include "tools/tool-common.h"

#ifndef _WIN32  // /proc-based; Windows cannot name a lock's holder
#include "block/locking/holders.h"
#endif

namespace mb::tools {

const char *const img_prog = "miniblock-img";

int img_fail(const Status &st) {
    print_error(img_prog, st);
    return 1;
}

int img_bad_usage(const std::string &msg) {
    fprintf(stderr, "%s: %s\nTry 'miniblock-img --help' for more information.\n", img_prog, msg.c_str());
    return 1;
}

bool parse_output(const char *arg, bool *json) {
    if (!strcmp(arg, "json")) *json = true;
    else if (!strcmp(arg, "human")) *json = false;
    else return false;
    return true;
}

ImgOption img_flag(int short_name, const char *long_name, bool *set) {
    return {short_name, long_name, no_argument, [set](const char *) { *set = true; return 0; }};
}

ImgOption img_value(int short_name, const char *long_name, std::string *store) {
    return {short_name, long_name, required_argument, [store](const char *arg) { *store = arg; return 0; }};
}

ImgOption img_ignored(int short_name, int has_arg) {
    return {short_name, nullptr, has_arg, [](const char *) { return 0; }};
}

std::optional<int> img_parse_options(int argc, char **argv, const ImgCommand &cmd, ImgCommon *common) {
    // getopt_long's values for long-only options: above every character.
    enum { OPT_IMAGE_OPTS = 0x1000, OPT_OUTPUT, OPT_OWN = 0x2000 };
    static const char *const arg_marks[] = {"", ":", "::"};  // no, required, optional argument
    const unsigned m = cmd.common;
    std::string shorts;
    std::vector<struct option> longs;
    if (m & IMG_FORMAT) shorts += "f:";
    if (m & IMG_FORMAT_LONG) longs.push_back({"format", required_argument, nullptr, 'f'});
    if (m & IMG_SHARE) shorts += "U";
    if (m & IMG_SHARE_LONG) longs.push_back({"force-share", no_argument, nullptr, 'U'});
    if (m & IMG_IMAGE_OPTS) longs.push_back({"image-opts", no_argument, nullptr, OPT_IMAGE_OPTS});
    if (m & IMG_CACHE) shorts += "t:";
    if (m & IMG_QUIET) shorts += "q";
    if (m & IMG_OPTIONS) shorts += "o:";
    if (m & IMG_OUTPUT) longs.push_back({"output", required_argument, nullptr, OPT_OUTPUT});
    std::vector<int> vals;  // getopt_long's value of each own option
    for (size_t i = 0; i < cmd.own.size(); i++) {
        const ImgOption &o = cmd.own[i];
        vals.push_back(o.short_name ? o.short_name : OPT_OWN + int(i));
        if (o.short_name) shorts += char(o.short_name) + std::string(arg_marks[o.has_arg]);
        if (o.long_name) longs.push_back({o.long_name, o.has_arg, nullptr, vals.back()});
    }
    shorts += "h";
    longs.push_back({"help", no_argument, nullptr, 'h'});
    longs.push_back({nullptr, 0, nullptr, 0});

    int c;
    while ((c = getopt_long(argc, argv, shorts.c_str(), longs.data(), nullptr)) != -1) {
        // A command's own meaning of a letter comes first (convert's -t is
        // the target's cache, bench's -o an offset).
        size_t i = 0;
        while (i < vals.size() && vals[i] != c) i++;
        if (i < vals.size()) {
            if (int st = cmd.own[i].take(optarg)) return st;
            continue;
        }
        switch (c) {
        case 'f': common->flags.format = optarg; break;
        case 'U': common->flags.force_share = true; break;
        case OPT_IMAGE_OPTS: common->flags.image_opts = true; break;
        case 't': common->flags.cache = optarg; break;
        case 'q': common->quiet = true; break;
        case 'o': common->options = common->options.empty() ? optarg : common->options + "," + optarg; break;
        case OPT_OUTPUT:
            if (!parse_output(optarg, &common->json))
                return img_bad_usage(std::string("--output must be human or json, not '") + optarg + "'");
            break;
        case 'h':
            if (cmd.help) cmd.help(stdout);
            else print_img_command_help(cmd.name, stdout);
            return 0;
        default:
            if (cmd.bad_option) return cmd.bad_option();
            return img_bad_usage(std::string("invalid option for ") + cmd.name);
        }
    }
    return std::nullopt;
}

void print_json(JsonBuilder *b) {
    JsonNode *root = json_builder_get_root(b);
    JsonGenerator *g = json_generator_new();
    json_generator_set_pretty(g, TRUE);
    json_generator_set_indent(g, 4);
    json_generator_set_root(g, root);
    gchar *s = json_generator_to_data(g, nullptr);
    printf("%s\n", s);
    g_free(s);
    g_object_unref(g);
    json_node_unref(root);
}

#ifndef _WIN32
void add_lock_holder_json(JsonBuilder *b, const LockHolder &h, bool details) {
    auto names = [b](uint32_t mask) {
        json_builder_begin_array(b);
        for (auto &n : lock_bit_name_list(mask)) json_builder_add_string_value(b, n.c_str());
        json_builder_end_array(b);
    };
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "pid");
    if (h.pid) json_builder_add_int_value(b, h.pid);
    else json_builder_add_null_value(b);
    json_builder_set_member_name(b, "program");
    json_builder_add_string_value(b, h.comm.c_str());
    if (details) {
        json_builder_set_member_name(b, "command-line");
        json_builder_add_string_value(b, h.cmdline.c_str());
        json_builder_set_member_name(b, "kind");
        json_builder_add_string_value(b, h.kind.c_str());
    }
    json_builder_set_member_name(b, "uses");
    names(h.use);
    json_builder_set_member_name(b, "forbids");
    names(h.forbid);
    if (details) {
        json_builder_set_member_name(b, "write-lock");
        json_builder_add_boolean_value(b, h.write_lock);
    }
    json_builder_end_object(b);
}
#endif

}  // namespace mb::tools
