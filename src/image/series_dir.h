// What the writer of a series does to its directory besides writing a
// checkpoint: cleaning up after a killed writer, switching `latest`,
// deleting old checkpoints and the packs no checkpoint uses. All of it runs
// under the series lock (FORMAT.md, "Checkpoint series").
#pragma once

#include <cstdint>
#include <string>

namespace snap::image {

// Temporary directories and `latest` links of a killed writer, and
// checkpoints a killed collection had begun to delete.
void remove_leftovers(const std::string& ckpt);

// Checkpoints numbered above the one `latest` names: installed by a writer
// killed before it switched `latest`, never committed.
void remove_uncommitted(const std::string& ckpt);

// Deletes the packs no checkpoint of the series refers to.
void remove_unused_packs(const std::string& ckpt);

// latest -> number, atomically.
void switch_latest(const std::string& ckpt, uint64_t number);

// Keeps the `keep` (at least 1) newest checkpoints, `number` and the one
// `latest` names; deletes the others and then the packs no longer used.
// Failures are warnings: the checkpoint is committed already.
void collect_garbage(const std::string& ckpt, unsigned keep, uint64_t number);

}  // namespace snap::image
