// miniblock-img subcommands kept outside miniblock-img.cpp (one file per
// group), registered in its command map.
#pragma once

#include <cstdio>

namespace mb::tools {

// tools/img-qcow2.cpp
int cmd_check(int argc, char **argv);
int cmd_map(int argc, char **argv);
int cmd_convert(int argc, char **argv);
// Their lines of the --help text.
void print_img_qcow2_help(FILE *out);

}  // namespace mb::tools
