// The pagemap of an image being written (pagemap.bin, FORMAT.md): for each
// mapping of each process, runs of page references as the pages come in.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "base/byte_ranges.h"
#include "image/checkpoint.h"
#include "image/format.h"

namespace snap::image {

// Where the pagemap of checkpoint `c` may hold pages, by its tables' key
// (pid, mapping start): each mapping of each process, and each file of
// c.temp_files and c.ghost_files whose contents are in the page store
// (kFilePagesPid). The
// value is the end of the range; `mapping` the process's mapping (null for
// a file).
struct PagedRange {
  uint64_t start = 0, end = 0;
  const Mapping* mapping = nullptr;
};
std::map<std::pair<pid_t, uint64_t>, PagedRange> paged_ranges(const Checkpoint& c);

class PagemapBuilder {
 public:
  using Runs = std::vector<disk::PagemapRun>;

  // The runs of mapping `start` of process `pid` (empty at first).
  Runs& runs(pid_t pid, uint64_t start) { return tables_[{pid, start}]; }
  // Appends one page reference to `runs`, extending the last run where the
  // page continues it.
  static void add(Runs& runs, uint64_t addr, disk::RunKind kind, uint64_t ref);

  // Forgets the runs of mapping `start` of `pid` (a file whose contents
  // turned out unusable): their pages stay stored, unreferenced. Returns
  // how many pages it forgot.
  // The runs forgotten are appended to `gone` (if given).
  uint64_t forget(pid_t pid, uint64_t start, Runs* gone = nullptr);
  // Forgets the pages at `addrs` (ascending, disjoint [first, end)) of
  // mapping `start` of `pid`, whichever runs hold them: pages read again
  // since (a data file's pages read before the stop and written after).
  // Returns how many pages it forgot.
  uint64_t forget_pages(pid_t pid, uint64_t start, const std::vector<ByteRange>& addrs,
                        Runs* gone = nullptr);
  // Moves the pages at `addrs` (ascending, disjoint) of mapping `from` of
  // `pid` to mapping `to` (a mapping split since its pages were given: the
  // part they are in now starts elsewhere). Returns how many it moved.
  uint64_t move_pages(pid_t pid, uint64_t from, uint64_t to, const std::vector<ByteRange>& addrs);

  // fn(run) for every run that refers to stored pages (all but zero runs).
  template <typename Fn>
  void for_each_stored(Fn&& fn) {
    for (auto& [key, runs] : tables_)
      for (auto& r : runs)
        if (r.kind != disk::kRunZero) fn(r);
  }

  // pagemap.bin (the writer compresses it into pagemap.bin.lz4): the tables sorted by (pid, mapping), each one's runs
  // sorted and joined where they continue each other (pages come in many
  // calls, from many threads). Sets every mapping's pages_dumped in `c`.
  // Throws for pages of a mapping (or stored file) `c` does not have,
  // outside it, or added twice.
  std::vector<uint8_t> serialize(Checkpoint& c);

 private:
  // `runs` cut at the edges of `addrs` (ascending, disjoint): the parts
  // within them to `within`, the rest to `rest`; returns the pages within.
  static uint64_t cut(const Runs& runs, const std::vector<ByteRange>& addrs, Runs& within,
                      Runs& rest);

  std::map<std::pair<pid_t, uint64_t>, Runs> tables_;
};

}  // namespace snap::image
