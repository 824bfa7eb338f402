#include "image/manifest_file.h"

#include <fmt/core.h>

#include "base/error.h"
#include "image/file_io.h"
#include "image/format.h"
#include "image/lz4_frame.h"

namespace snap::image {

namespace {

constexpr const char* kDamaged = "the image is damaged or incomplete";
// More than any checkpoint's JSON (a few hundred bytes per fd or mapping):
// a frame claiming more is damaged, not allocated for.
constexpr uint64_t kMaxCheckpointText = uint64_t{1} << 32;

}  // namespace

Manifest read_manifest(const std::string& dir, bool checkpoint) {
  Manifest m = manifest_from_json(io::read_file(dir + "/" + disk::kManifestFile));
  if (!checkpoint || !m.checkpoint_in_file) return m;
  const std::string file = dir + "/" + disk::kCheckpointFile;
  std::string frame = io::read_checked(file, m.files.at(disk::kCheckpointFile));
  m.checkpoint = checkpoint_file_from_json(lz4_unframe(file, frame, kMaxCheckpointText, kDamaged),
                                          m.checkpoint.format_version);
  m.checkpoint_in_file = false;
  return m;
}

std::string compress_checkpoint(const Checkpoint& c) { return lz4_frame(checkpoint_json(c)); }

}  // namespace snap::image
