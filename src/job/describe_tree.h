// snap info's facts about the process tree and what its processes share
// (issue 9). The analysis itself is image::find_sharing.
#pragma once

#include <nlohmann/json.hpp>

#include "image/checkpoint.h"

namespace snap::job {

using ojson = nlohmann::ordered_json;

// Per-process keys: zombie, exit_status, exit_text, child_subreaper.
void describe_tree_fields(const image::Process& p, ojson& j);
// Per-fd keys: inode, file_id, unix_socket.
void describe_fd_sharing(const image::FileDesc& f, ojson& j);
// Top-level "tree" (tree order with depths) and "sharing".
void describe_tree_and_sharing(const image::Checkpoint& c, ojson& doc);

}  // namespace snap::job
