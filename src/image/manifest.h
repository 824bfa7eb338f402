// manifest.json: what the image directory must contain (each file's size
// and checksum) and, up to version 5, the Checkpoint itself (from version 6
// in checkpoint.json.lz4, see manifest_file.h). Encoding defined in
// FORMAT.md.
#pragma once

#include <map>
#include <optional>
#include <vector>
#include <string>
#include <string_view>

#include "image/checkpoint.h"

namespace snap::image {

inline constexpr const char* kFormatName = "snap-image";

// Size and XXH3-64 of one file of the image, as the manifest records them.
struct FileEntry {
  uint64_t size = 0;
  uint64_t xxh3 = 0;
  bool operator==(const FileEntry&) const = default;
};

// A pack of a checkpoint series: CKPT/packs/NAME.pack (pages.bin format)
// and CKPT/packs/NAME.idx (pages.idx format).
struct PackEntry {
  std::string name;
  FileEntry data, index;
  bool operator==(const PackEntry&) const = default;
};

// What a series checkpoint records about its own writing (FORMAT.md).
struct SeriesFacts {
  uint64_t new_pages = 0;      // unique pages stored in its own new pack
  uint64_t earlier_pages = 0;  // pages referring to packs of earlier checkpoints
  uint64_t unchanged_pages = 0;  // of those, given as unchanged (add_unchanged)
};

struct Manifest {
  Checkpoint checkpoint;
  std::map<std::string, FileEntry> files;  // by file name in the image dir
  // Empty for a plain image (pages.bin + pages.idx in the image dir). For a
  // series checkpoint: the packs its pagemap refers to, in reference order
  // (page refs number the unique pages of all of them, first pack first).
  std::vector<PackEntry> packs;
  std::optional<SeriesFacts> series;
  // Read from a manifest.json of version 6 or later: `checkpoint` is not in
  // it but in checkpoint.json.lz4 (manifest_file.h reads both).
  bool checkpoint_in_file = false;
};

// The whole manifest as one document, `checkpoint` included (as
// manifest.json held it up to version 5; what `snap info --manifest` prints).
std::string to_json(const Manifest& m);
// Such a document holding `c` and no file entries.
std::string to_json(const Checkpoint& c);
// Version 6 on disk: manifest.json without `checkpoint`, and the checkpoint
// object alone (compressed into checkpoint.json.lz4 by manifest_file.h).
std::string manifest_file_json(const Manifest& m);
std::string checkpoint_json(const Checkpoint& c);

// Throw snap::Error naming the offending field ("manifest.json:
// processes[0].threads[1].gpregs: ...") on malformed or truncated input, and
// refuse another major format version.
// A version 6 manifest.json (without `checkpoint`) comes back with
// checkpoint_in_file set and an empty checkpoint.
Manifest manifest_from_json(std::string_view text);
Checkpoint checkpoint_from_json(std::string_view text);
// The text of checkpoint_json(), as found in checkpoint.json.lz4.
Checkpoint checkpoint_file_from_json(std::string_view text, uint32_t format_version);

// The manifest's names of the enums ("shared_anon", "eventfd"), also used by
// `snap info`.
const char* name_of(MappingKind k);
const char* name_of(FdType t);

}  // namespace snap::image
