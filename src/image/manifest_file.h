// An image directory's manifest as files: manifest.json and, from format
// version 6, the checkpoint it lists in checkpoint.json.lz4 (an LZ4 frame:
// `lz4 -dc` shows it). See FORMAT.md.
#pragma once

#include <string>

#include "image/manifest.h"

namespace snap::image {

// Reads DIR/manifest.json and, with `checkpoint` (else it stays empty), the
// checkpoint: from the manifest itself (version 5 and older) or from the
// checkpoint file it lists, whose size and checksum are checked before it
// is decompressed. Throws snap::Error naming the file on any damage.
Manifest read_manifest(const std::string& dir, bool checkpoint = true);

// checkpoint_json(c) as one LZ4 frame: what checkpoint.json.lz4 holds.
std::string compress_checkpoint(const Checkpoint& c);

}  // namespace snap::image
