// Helpers shared by miniblock-img's subcommands (tools/img-commands.h).
#include <cstring>

#include "tools/img-commands.h"
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
