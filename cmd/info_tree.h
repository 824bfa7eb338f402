// snap info: the process tree and what its processes share, as text (the
// facts are gathered by job/describe_tree.h).
#pragma once

#include <nlohmann/json.hpp>

namespace snap::cmd {

using ojson = nlohmann::ordered_json;

// Text: the tree, then what is shared between processes.
void print_tree_and_sharing(const ojson& doc);

}  // namespace snap::cmd
