// qcow2 internal snapshots (QEMU's docs/interop/qcow2.txt, "Snapshots"):
// the snapshot table, create / apply / delete, reading a snapshot
// (qcow2-snapshot.cpp), and the copy-on-write of an L2 table that a
// snapshot shares with the active L1 table.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "block/block_int.h"
#include "block/drivers/qcow2.h"

namespace mb::qcow2 {

struct SnapshotInfo {
    std::string id, name;
    uint64_t l1_offset = 0;
    uint32_t l1_size = 0;
    uint32_t date_sec = 0, date_nsec = 0;
    uint64_t vm_clock_nsec = 0;
    uint64_t vm_state_size = 0;
    bool has_disk_size = false;
    uint64_t disk_size = 0;
    bool has_icount = false;
    uint64_t icount = UINT64_MAX;  // UINT64_MAX: not recorded
    std::vector<uint8_t> raw;      // the whole entry as read (unknown extra data kept)
};

// An L2 table that the L1 entry l1_idx shares with a snapshot (no COPIED
// flag) is copied to a new cluster before it changes; the L1 entry then
// points at the copy.  Caller holds s->lock.
Task<int> cow_l2_table(BlockDriverState *bs, uint64_t l1_idx, TableCache::Table *t, uint64_t *l2_off);

// For check: the references the snapshots hold (the snapshot table, their
// L1 tables, the L2 tables and clusters those reach), cluster -> count; what
// cannot be followed goes to *errors ("ERROR ..."), nothing is marked corrupt.
// Caller holds s->lock.
Task<int> snapshot_references(BlockDriverState *bs, std::map<uint64_t, uint64_t> *refs, std::vector<std::string> *errors);

}  // namespace mb::qcow2

namespace mb {

// The snapshots of a qcow2 node (an empty list for other formats).
Result<std::vector<qcow2::SnapshotInfo>> qcow2_snapshot_list(BlockDriverState *bs);
// On a writable qcow2 node.  `name` may repeat an existing one (as qemu-img
// allows); apply and delete find the first snapshot whose ID, then whose
// name, is `id_or_name`.
Status qcow2_snapshot_create(BlockDriverState *bs, const std::string &name);
Status qcow2_snapshot_apply(BlockDriverState *bs, const std::string &id_or_name);
Status qcow2_snapshot_delete(BlockDriverState *bs, const std::string &id_or_name);
// On a read-only qcow2 node: reads show the snapshot (convert -l).  With
// `id` and `name` both given, both must match.
Status qcow2_snapshot_load_tmp(BlockDriverState *bs, const std::string &id, const std::string &name);

}  // namespace mb
