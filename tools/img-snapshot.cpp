// miniblock-img snapshot: qemu-img snapshot's -l, -c, -a, -d on qcow2
// internal snapshots (block/drivers/qcow2-snapshot.cpp), with its texts;
// and the snapshot list that info shows.
//
// As qemu-img, -l opens read-only (so -U works with it) and the others
// open read-write, taking the write permission: next to a running holder
// they are refused with the lock text of any other writer.
#include <glib.h>

#include <cinttypes>
#include <cstdio>
#include <string>

#include "block/drivers/qcow2-snapshot.h"
#include "tools/img-commands.h"
#include "tools/img-common.h"
#include "tools/tool-common.h"

namespace mb::tools {

namespace {

// qemu-img's bdrv_snapshot_dump: the header (sn == nullptr) or one row.
void dump_row(const qcow2::SnapshotInfo *sn) {
    if (!sn) {
        printf("%-10s%-17s%8s%20s%13s%11s", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
        return;
    }
    // Local time through GLib, as qemu-img (and on Windows too).
    GDateTime *dt = g_date_time_new_from_unix_local(sn->date_sec);
    gchar *df = dt ? g_date_time_format(dt, "%Y-%m-%d %H:%M:%S") : nullptr;
    std::string date = df ? df : "";
    g_free(df);
    if (dt) g_date_time_unref(dt);
    uint64_t secs = sn->vm_clock_nsec / 1000000000;
    char clock[64];
    snprintf(clock, sizeof(clock), "%02d:%02d:%02d.%03d", int(secs / 3600), int(secs / 60 % 60), int(secs % 60),
             int(sn->vm_clock_nsec / 1000000 % 1000));
    std::string icount = sn->icount != UINT64_MAX ? std::to_string(int64_t(sn->icount)) : "";
    printf("%-9s %-16s %8s%20s%13s%11s", sn->id.c_str(), sn->name.c_str(), human_size(int64_t(sn->vm_state_size)).c_str(),
           date.c_str(), clock, icount.c_str());
}

}  // namespace

void print_snapshot_list(const std::vector<qcow2::SnapshotInfo> &list) {
    if (list.empty()) return;
    printf("Snapshot list:\n");
    dump_row(nullptr);
    printf("\n");
    for (auto &sn : list) {
        dump_row(&sn);
        printf("\n");
    }
}

void add_snapshots_json(JsonBuilder *b, const std::vector<qcow2::SnapshotInfo> &list) {
    json_builder_begin_array(b);
    for (auto &sn : list) {
        json_builder_begin_object(b);
        if (sn.icount != UINT64_MAX) {
            json_builder_set_member_name(b, "icount");
            json_builder_add_int_value(b, int64_t(sn.icount));
        }
        json_builder_set_member_name(b, "vm-clock-nsec");
        json_builder_add_int_value(b, int64_t(sn.vm_clock_nsec % 1000000000));
        json_builder_set_member_name(b, "name");
        json_builder_add_string_value(b, sn.name.c_str());
        json_builder_set_member_name(b, "date-sec");
        json_builder_add_int_value(b, sn.date_sec);
        json_builder_set_member_name(b, "date-nsec");
        json_builder_add_int_value(b, sn.date_nsec);
        json_builder_set_member_name(b, "vm-clock-sec");
        json_builder_add_int_value(b, int64_t(sn.vm_clock_nsec / 1000000000));
        json_builder_set_member_name(b, "id");
        json_builder_add_string_value(b, sn.id.c_str());
        json_builder_set_member_name(b, "vm-state-size");
        json_builder_add_int_value(b, int64_t(sn.vm_state_size));
        json_builder_end_object(b);
    }
    json_builder_end_array(b);
}

int cmd_snapshot(int argc, char **argv) {
    ImgCommon common;
    ImageFlags &flags = common.flags;
    char action = 0;
    std::string name;
    // -l, or -a/-c/-d SNAPSHOT: one of them.
    auto act = [&action, &name](char a) {
        return ImgOption{a, nullptr, a == 'l' ? no_argument : required_argument, [&action, &name, a](const char *arg) {
                             if (action) return img_bad_usage("Cannot mix '-l', '-a', '-c', '-d'");
                             action = a;
                             if (a != 'l') name = arg;
                             return 0;
                         }};
    };
    // -q is qemu-img's: these commands print nothing but errors anyway.
    if (auto st = img_parse_options(argc, argv,
                                    {.name = "snapshot",
                                     .common = IMG_OPEN | IMG_QUIET,
                                     .own = {act('l'), act('a'), act('c'), act('d')}},
                                    &common))
        return *st;
    if (argc - optind != 1) return img_bad_usage("Expecting one image file name");
    std::string image = argv[optind];
    flags.read_only = action == 'l' || action == 0;
    // qemu-img's rule and text (checked before anything is opened).
    if (flags.force_share && !flags.read_only) {
        return img_fail(Status::Error(EINVAL, "Could not open '" + qapi::shown_name(image) +
                                                  "': force-share=on can only be used with read-only images"));
    }
    auto blk = open_image(image, flags);
    if (!blk.ok()) return img_fail(Status(blk.status()).prefix("Could not open '" + qapi::shown_name(image) + "'"));
    BlockDriverState *bs = (*blk)->bs();
    Status st;
    switch (action) {
    case 'l': {
        auto list = qcow2_snapshot_list(bs);
        if (!list.ok()) return img_fail(list.status());
        print_snapshot_list(*list);
        return 0;
    }
    case 'c': st = Status(qcow2_snapshot_create(bs, name)).prefix("Could not create snapshot '" + name + "'"); break;
    case 'a': st = Status(qcow2_snapshot_apply(bs, name)).prefix("Could not apply snapshot '" + name + "'"); break;
    case 'd': st = Status(qcow2_snapshot_delete(bs, name)).prefix("Could not delete snapshot '" + name + "'"); break;
    default: return 0;  // as qemu-img: no action, nothing done
    }
    if (!st.ok()) return img_fail(st);
    return 0;
}

}  // namespace mb::tools
