// Which pages of a stopped process hold state, and reading them out.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <map>
#include <memory>
#include <unordered_set>
#include <utility>
#include <vector>

#include "image/checkpoint.h"

namespace snap {

// Receives page contents as they are read: `npages` consecutive pages
// starting at `addr`, belonging to the mapping that starts at mapping_start.
// The data is only valid during the call.
using PageSink = std::function<void(pid_t pid, uint64_t mapping_start, uint64_t addr,
                                    const uint8_t* data, size_t npages)>;

// Pages of a file (pid image::kFilePagesPid) that the previous checkpoint of
// a series stored already: the npages at `addr` of the file's pages keyed
// `mapping_start` are those that checkpoint holds at `base_addr`.
struct EarlierPages {
  uint64_t mapping_start = 0, addr = 0, base_addr = 0;
  size_t npages = 0;
};

// Does the image need this mapping's memory? (File-backed shared mappings
// are the file; [vdso]/[vvar] come from the kernel; everything private or
// anonymous does, but MAP_DROPPABLE memory, which may be lost anyway.)
bool mapping_has_content(const image::Mapping& m);

// Pages of `m` to save, from /proc/PID/pagemap: present or swapped pages of
// anonymous memory, and the copied-on-write (no longer file-backed) pages of
// private file mappings. Untouched pages are never read: on these machines
// even a read would allocate them. Returns page addresses, ascending.
// Costs what the mapping holds, not its size (a 16 TiB MAP_NORESERVE
// reservation with a few pages is a few page-table walks): PAGEMAP_SCAN
// finds the ranges, pagemap entries are read only where they must tell a
// swapped page from a pte marker. Without PAGEMAP_SCAN (or with
// kChunkedRead, for tests) every entry is read, a bounded chunk at a time.
enum class PagemapWay { kAuto, kChunkedRead };
std::vector<uint64_t> pages_to_dump(pid_t pid, const image::Mapping& m,
                                    PagemapWay way = PagemapWay::kAuto);
// Same, each page handed to `fn` as found (ascending), none held.
void for_each_page_to_dump(pid_t pid, const image::Mapping& m, const std::function<void(uint64_t)>& fn,
                           PagemapWay way = PagemapWay::kAuto);
// Same with /proc/PID/pagemap already open (a dump opens it once per process,
// not once per mapping).
void for_each_page_to_dump(int pagemap_fd, pid_t pid, const image::Mapping& m,
                           const std::function<void(uint64_t)>& fn,
                           PagemapWay way = PagemapWay::kAuto);
// Whether a /proc/PID/pagemap entry shown as swapped is a pte marker, not
// a page: the kernel leaves markers where userfaultfd write-protects an
// unpopulated page (tracer/write_tracker.h), where a write-protected file
// page was zapped, and for guard regions (MADV_GUARD_INSTALL). They hold no
// data. The swap type that tells (the last one, 31) is only shown to
// CAP_SYS_ADMIN; without it a marker looks swapped (read: it reads as zero).
bool is_pte_marker(uint64_t pagemap_entry);
// Same from raw pagemap entries (one per page of m), for tests.
std::vector<uint64_t> select_pages(const image::Mapping& m, const std::vector<uint64_t>& pagemap);

struct MemoryStats {
  uint64_t pages = 0;  // pages read out of the process
  uint64_t bytes() const { return pages * image::kPageSize; }
};

// Shared memory objects (image::is_shm_object): mappings with the same (dev,
// inode) show one object, in one process or several. Each page of it (by
// offset in the object) is read once: from the first mapping that shows it.
class SharedMemoryPages {
 public:
  // Removes from `pages` (ascending addresses in `m`) those another mapping
  // already gave, and marks the rest as given. Other kinds: unchanged.
  void claim(const image::Mapping& m, std::vector<uint64_t>& pages);

 private:
  std::map<std::pair<uint64_t, uint64_t>, std::unordered_set<uint64_t>> taken_;  // page offsets
};

// Threads that read pages and hand them to the sink while the caller of
// dump_memory() walks the page tables: the sink is then called from these
// threads, concurrently (it must be thread-safe). Each has its own batch
// buffer, kept from one dump_memory() call to the next. With `threads` 0 or
// 1 there are none: the caller reads.
class MemoryReaders {
 public:
  explicit MemoryReaders(unsigned threads);
  ~MemoryReaders();
  MemoryReaders(const MemoryReaders&) = delete;
  MemoryReaders& operator=(const MemoryReaders&) = delete;
  unsigned threads() const;
  // Gives each reader its batch buffer now, its pages faulted in, rather
  // than at its first batch: with the job stopped, that cost a freeze
  // 1-15 ms here (huge pages zeroed). While no dump_memory() call runs.
  void warm();

  class Impl;
  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// Reads every page to dump of the mappings that `which` selects from
// process `read_pid` (stopped, or a snapshot of the process) in large
// batches and hands them to `sink`; sets those mappings' pages_dumped.
using MappingFilter = std::function<bool(const image::Mapping&)>;
// How pages are copied out. process_vm_readv is fastest, but it pins pages,
// and since Linux 5.19 pinning a copy-on-write-shared page read-only makes
// the kernel copy it first: read from a fork-style snapshot that way, every
// page would be duplicated (a second copy of the job's memory). Reads
// through /proc/PID/mem take no pin, so they copy nothing.
enum class ReadVia { kProcessVmReadv, kMemFile };
// With `shared`, pages of shared memory objects that an earlier call
// already read (from this or another process) are left out.
// With `choose`, the pages to read of a mapping are its answer when it
// gives one (write tracking knows which pages changed), else pages_to_dump's.
using PageChooser = std::function<std::optional<std::vector<uint64_t>>(const image::Mapping&)>;
// With `after_batch`, called after each batch has been handed to the sink
// with the range of `m` it covers: from the mapping's start (first batch)
// or its first page to the next batch's first page or the mapping's end.
// Every page of the range that is to be read has been (a snapshot may
// release the whole range). Called on the calling thread, in address order
// within a mapping and in mapping order; with `readers`, once every batch
// up to the end of the range has been handed to the sink.
// With `readers`, pages are read and given to the sink by its threads (a
// batch may then hold pages of several small mappings); `which`, `choose`
// and `after_batch` are still called on the calling thread only.
using BatchDone = std::function<void(const image::Mapping& m, uint64_t start, uint64_t end)>;
MemoryStats dump_memory(pid_t read_pid, std::vector<image::Mapping>& mappings, const PageSink& sink,
                        const MappingFilter& which = {}, ReadVia via = ReadVia::kProcessVmReadv,
                        SharedMemoryPages* shared = nullptr, const PageChooser& choose = {},
                        const BatchDone& after_batch = {}, MemoryReaders* readers = nullptr);

}  // namespace snap
