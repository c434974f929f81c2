// Helpers shared by miniblock-img's subcommands (tools/img-commands.h).
#include <cstring>

#include "tools/img-commands.h"
#include "tools/tool-common.h"

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

}  // namespace mb::tools
