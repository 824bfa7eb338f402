// A checkpoint series: a directory CKPT holding numbered checkpoints that
// share one content-addressed page store, and a `latest` pointer (FORMAT.md,
// "Checkpoint series"). ImageWriter::create_in_series() writes one,
// ImageReader::open() reads CKPT (its latest good checkpoint) or CKPT/N.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace snap::image {

// Names inside CKPT.
inline constexpr const char* kSeriesLatest = "latest";  // symlink -> "N"
inline constexpr const char* kSeriesPacks = "packs";    // packs/N.pack, packs/N.idx
inline constexpr const char* kSeriesLock = "lock";      // flock()ed by the writer
inline constexpr const char* kSeriesTempInfix = ".tmp-";  // N.tmp-XXXXXX, latest.tmp-XXXXXX

struct SeriesOptions {
  // Checkpoints kept after a commit: the `keep` newest (at least 1); older
  // ones, and the packs only they use, are deleted.
  unsigned keep = 2;
};

// One checkpoint of a series, as list_series() finds it.
struct SeriesEntry {
  uint64_t number = 0;
  std::string dir;               // CKPT/N
  bool complete = false;         // passed the open-time checks of ImageReader::open
  std::string problem;           // why not complete (the error text), else empty
  bool latest = false;           // `latest` names it
  // From its manifest (0 / empty when the manifest is unreadable):
  std::string created;           // ISO 8601 UTC
  std::string changed_pages_by;  // as the dumper said ("full", "uffd-wp", ...)
  uint64_t pages = 0;            // pages recorded (memory covered / 4096)
  uint64_t new_bytes = 0;        // size of its own new pack (data + index)
  uint64_t referenced_bytes = 0;  // size of all packs it refers to (data + index)
  uint64_t earlier_pages = 0;    // pages it shares with earlier checkpoints
  uint64_t checkpoint_bytes = 0;  // its own directory (manifest + pagemap)
};

// True when `dir` looks like a series directory (has packs/ or `latest`).
bool is_series_dir(const std::string& dir);

// Every checkpoint directory of the series CKPT, oldest first, each checked
// as ImageReader::open() checks it (cheap: no page data is read).
std::vector<SeriesEntry> list_series(const std::string& ckpt_dir);

// The number `latest` names, if it names one.
std::optional<uint64_t> series_latest(const std::string& ckpt_dir);

// The numbers of the checkpoint directories CKPT/N, ascending (temporary
// N.tmp-* directories are not checkpoints).
std::vector<uint64_t> series_numbers(const std::string& ckpt_dir);

}  // namespace snap::image
