#include "tracer/memory.h"

#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <fmt/core.h>
#include <memory>

#include "base/error.h"
#include "base/scoped_fd.h"
#include "tracer/pagemap.h"
#include "tracer/remote.h"

namespace snap {

namespace {
using pagemap::kFilePage;
using pagemap::kPresent;
using pagemap::kSwapped;
constexpr size_t kBatchPages = 2048;  // 8 MiB per read
constexpr size_t kMaxIov = 1024;      // IOV_MAX
}  // namespace

bool mapping_has_content(const image::Mapping& m) {
  using K = image::MappingKind;
  switch (m.kind) {
    case K::Vdso: case K::Vvar: case K::VvarVclock: case K::Vsyscall:
      return false;
    case K::File:
      // A shared file mapping is the file, unless the file is gone (an
      // unlinked POSIX semaphore or /dev/shm segment): then only the image
      // keeps its contents.
      return !m.shared || image::is_shm_object(m);
    default:
      break;
  }
  // Device memory (VM_IO / VM_PFNMAP) cannot be read and is not ours to save.
  return m.vmflags.find("io") == std::string::npos && m.vmflags.find("pf") == std::string::npos;
}

bool is_pte_marker(uint64_t e) {
  // Swapped entries carry the swap type in bits 0-4 (MAX_SWAPFILES_SHIFT);
  // the kernel's last type, SWP_PTE_MARKER, is 31.
  constexpr uint64_t kSwapTypeMask = 0x1f, kPteMarkerType = 0x1f;
  return (e & kSwapped) && (e & kSwapTypeMask) == kPteMarkerType;
}

namespace {

// Calls `fn` with the pages of the n entries from addr that select_pages takes.
template <typename Fn>
void select_into(const image::Mapping& m, uint64_t addr, const uint64_t* entries, size_t n, Fn&& fn) {
  bool file = m.kind == image::MappingKind::File;  // only pages copied on write
  for (size_t i = 0; i < n; i++) {
    uint64_t e = entries[i];
    if (is_pte_marker(e)) continue;
    bool take = file ? ((e & kPresent) && !(e & kFilePage)) || (e & kSwapped)
                     : (e & (kPresent | kSwapped)) != 0;
    if (take) fn(addr + i * image::kPageSize);
  }
}

}  // namespace

std::vector<uint64_t> select_pages(const image::Mapping& m, const std::vector<uint64_t>& pagemap) {
  std::vector<uint64_t> out;
  select_into(m, m.start, pagemap.data(), pagemap.size(), [&](uint64_t a) { out.push_back(a); });
  return out;
}

namespace {

// A shared memory object's pages live in the object, not only in this
// process's page tables (another process, or write(), may have filled
// them): its data ranges, from the object itself through
// /proc/PID/map_files (which needs CAP_CHECKPOINT_RESTORE or
// CAP_SYS_ADMIN). Without that, every page of the mapping.
std::vector<uint64_t> shm_pages(pid_t pid, const image::Mapping& m) {
  std::vector<uint64_t> out;
  std::string path = fmt::format("/proc/{}/map_files/{:x}-{:x}", pid, m.start, m.end);
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  const auto first = static_cast<off_t>(m.pgoff), last = static_cast<off_t>(m.pgoff + (m.end - m.start));
  if (!fd) {
    for (uint64_t a = m.start; a < m.end; a += image::kPageSize) out.push_back(a);
    return out;
  }
  for (off_t pos = first; pos < last;) {
    off_t data = ::lseek(fd.get(), pos, SEEK_DATA);
    if (data < 0 || data >= last) break;  // ENXIO: no data after pos
    off_t hole = ::lseek(fd.get(), data, SEEK_HOLE);
    if (hole < 0 || hole > last) hole = last;
    for (off_t o = data & ~static_cast<off_t>(image::kPageSize - 1); o < hole; o += image::kPageSize)
      out.push_back(m.start + static_cast<uint64_t>(o - first));
    pos = hole;
  }
  return out;
}

}  // namespace

void for_each_page_to_dump(pid_t pid, const image::Mapping& m, const std::function<void(uint64_t)>& fn,
                           PagemapWay way) {
  if (image::is_shm_object(m)) {
    for (uint64_t a : shm_pages(pid, m)) fn(a);
    return;
  }
  std::string path = "/proc/" + std::to_string(pid) + "/pagemap";
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw SysError("open " + path, errno);
  if (way == PagemapWay::kAuto) {
    // The ranges that hold pages, from the page tables: a walk that skips
    // what was never touched, however large.
    using namespace pagemap;
    bool file = m.kind == image::MappingKind::File;
    bool any = false;
    int e = scan(fd.get(), m.start, m.end, 0, 0, kPageIsPresent | kPageIsSwapped,
                 kPageIsPresent | kPageIsSwapped | kPageIsFile, [&](const Region& r) {
                   any = true;
                   if (r.categories & kPageIsSwapped) {
                     // Swapped out, or pte markers (shown as swapped too):
                     // only the entries tell.
                     read_chunks(fd.get(), path, r.start, r.end,
                                 [&](uint64_t at, const uint64_t* entries, size_t n) {
                                   select_into(m, at, entries, n, fn);
                                 });
                   } else if (!(file && (r.categories & kPageIsFile))) {
                     // Present; a private file mapping's own pages are the
                     // copied-on-write (anonymous) ones.
                     for (uint64_t a = r.start; a < r.end; a += image::kPageSize) fn(a);
                   }
                 });
    if (e == 0) return;
    if (any || !scan_unsupported(e))
      throw SysError(fmt::format("ioctl({}, PAGEMAP_SCAN, {:#x}-{:#x})", path, m.start, m.end), e);
  }
  // No PAGEMAP_SCAN (before Linux 6.7): every entry of the range, a bounded
  // chunk at a time.
  pagemap::read_chunks(fd.get(), path, m.start, m.end,
                       [&](uint64_t at, const uint64_t* entries, size_t n) {
                         select_into(m, at, entries, n, fn);
                       });
}

std::vector<uint64_t> pages_to_dump(pid_t pid, const image::Mapping& m, PagemapWay way) {
  std::vector<uint64_t> out;
  for_each_page_to_dump(pid, m, [&](uint64_t a) { out.push_back(a); }, way);
  return out;
}

namespace {

// Reads `pages` [first, first + count) through /proc/PID/mem, one pread per
// run of consecutive pages.
void read_pages_mem_file(int mem_fd, pid_t pid, const std::vector<uint64_t>& pages, size_t first,
                         size_t count, uint8_t* buf) {
  size_t i = first;
  while (i < first + count) {
    size_t j = i + 1;
    while (j < first + count && pages[j] == pages[j - 1] + image::kPageSize) j++;
    size_t len = (j - i) * image::kPageSize, done = 0;
    uint8_t* dst = buf + (i - first) * image::kPageSize;
    while (done < len) {
      ssize_t r = ::pread(mem_fd, dst + done, len - done, static_cast<off_t>(pages[i] + done));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0)
        throw SysError(fmt::format("read /proc/{}/mem at {:#x}", pid, pages[i] + done),
                       r < 0 ? errno : EIO);
      done += static_cast<size_t>(r);
    }
    i = j;
  }
}

// Reads `pages` (ascending addresses, all within one mapping) with as few
// process_vm_readv calls as possible: consecutive pages become one iovec.
void read_pages(pid_t pid, const std::vector<uint64_t>& pages, size_t first, size_t count,
                uint8_t* buf) {
  std::vector<iovec> remote;
  size_t i = first;
  while (i < first + count) {
    size_t j = i + 1;
    while (j < first + count && pages[j] == pages[j - 1] + image::kPageSize) j++;
    remote.push_back({reinterpret_cast<void*>(pages[i]), (j - i) * image::kPageSize});
    i = j;
  }
  uint8_t* dst = buf;
  for (size_t k = 0; k < remote.size(); k += kMaxIov) {
    size_t nv = std::min(kMaxIov, remote.size() - k);
    size_t want = 0;
    for (size_t v = 0; v < nv; v++) want += remote[k + v].iov_len;
    iovec local{dst, want};
    ssize_t got = ::process_vm_readv(pid, &local, 1, &remote[k], nv, 0);
    if (got != static_cast<ssize_t>(want)) {
      // Pages without PROT_READ (or a short read): take the slow path that
      // reaches them, one range at a time.
      uint8_t* p = dst;
      for (size_t v = 0; v < nv; v++) {
        read_remote(pid, remote_addr(reinterpret_cast<uint64_t>(remote[k + v].iov_base)), p,
                    remote[k + v].iov_len);
        p += remote[k + v].iov_len;
      }
    }
    dst += want;
  }
}

}  // namespace

void SharedMemoryPages::claim(const image::Mapping& m, std::vector<uint64_t>& pages) {
  if (!image::is_shm_object(m) || m.inode == 0) return;
  auto& taken = taken_[{m.dev, m.inode}];
  std::erase_if(pages, [&](uint64_t addr) {
    uint64_t off = m.pgoff + (addr - m.start);
    return !taken.insert(off / image::kPageSize).second;
  });
}

MemoryStats dump_memory(pid_t pid, std::vector<image::Mapping>& mappings, const PageSink& sink,
                        const MappingFilter& which, ReadVia via, SharedMemoryPages* shared,
                        const PageChooser& choose, const BatchDone& after_batch) {
  MemoryStats stats;
  std::unique_ptr<uint8_t[]> buf(new uint8_t[kBatchPages * image::kPageSize]);
  ScopedFd mem_fd;
  if (via == ReadVia::kMemFile) {
    std::string path = "/proc/" + std::to_string(pid) + "/mem";
    mem_fd.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!mem_fd) throw SysError("open " + path, errno);
  }
  for (auto& m : mappings) {
    if (which && !which(m)) continue;
    m.pages_dumped = 0;
    if (!mapping_has_content(m)) continue;
    std::optional<std::vector<uint64_t>> chosen;
    if (choose) chosen = choose(m);
    // Reads pages [first, first + count) of `pages`, hands consecutive runs
    // to the sink, then tells after_batch the range it covered: from where
    // the previous batch ended (or the mapping's start) to its last page
    // (or, for the last batch, the mapping's end). Pages in between were
    // not to be read either.
    uint64_t covered = m.start;
    auto read_batch = [&](const std::vector<uint64_t>& pages, size_t first, size_t count,
                          bool last) {
      if (count) {
        if (mem_fd)
          read_pages_mem_file(mem_fd.get(), pid, pages, first, count, buf.get());
        else
          read_pages(pid, pages, first, count, buf.get());
      }
      size_t i = 0;
      while (i < count) {
        size_t j = i + 1;
        while (j < count && pages[first + j] == pages[first + j - 1] + image::kPageSize) j++;
        sink(pid, m.start, pages[first + i], buf.get() + i * image::kPageSize, j - i);
        i = j;
      }
      uint64_t to = last ? m.end : count ? pages[first + count - 1] + image::kPageSize : covered;
      if (after_batch && to > covered) after_batch(m, covered, to);
      covered = to;
    };
    uint64_t n = 0;
    if (chosen || (shared && image::is_shm_object(m))) {
      auto pages = chosen ? std::move(*chosen) : pages_to_dump(pid, m);
      if (shared) shared->claim(m, pages);
      for (size_t first = 0; first < pages.size(); first += kBatchPages) {
        size_t count = std::min(kBatchPages, pages.size() - first);
        read_batch(pages, first, count, first + count == pages.size());
      }
      if (pages.empty()) read_batch(pages, 0, 0, true);
      n = pages.size();
    } else {
      // Read as the page tables are walked, a batch at a time: snap holds
      // no list of the mapping's pages, however many it has.
      std::vector<uint64_t> batch;
      batch.reserve(kBatchPages);
      for_each_page_to_dump(pid, m, [&](uint64_t a) {
        batch.push_back(a);
        if (batch.size() == kBatchPages) {
          read_batch(batch, 0, batch.size(), false);
          n += batch.size();
          batch.clear();
        }
      });
      read_batch(batch, 0, batch.size(), true);
      n += batch.size();
    }
    m.pages_dumped = n;
    stats.pages += n;
  }
  return stats;
}

}  // namespace snap
