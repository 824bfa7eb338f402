#include "restore/fill.h"

#include <linux/magic.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <thread>
#include <tuple>
#include <vector>

#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "image/block_stream.h"
#include "restore/page_copier.h"
#include "restore/remote_writer.h"

namespace snap::restore {

namespace {

using image::BlockId;
using image::kPageSize;
using image::Mapping;
using image::MappingKind;
using image::PagePiece;

// Pieces planned at once (2.5 MiB of them; a window of a fresh dump covers
// up to 16 GiB). The blocks of one window are each read once.
constexpr size_t kWindowPieces = size_t{1} << 16;
constexpr unsigned kMaxJobs = 64;
// Read buffers of all worker threads together.
constexpr size_t kReadMemory = size_t{64} << 20;
// Threads per worker: while one writes its pages into the process, the other
// waits on the disk, so that a read is always in flight. With two threads for
// the two CPUs of the bench machine, both were often writing at once and the
// disk sat idle: restores of 1 GiB took medians of 1.34 s (random) and 1.39 s
// (text) against 1.18 and 1.17 s with four, alternated, cold cache.
constexpr unsigned kThreadsPerWorker = 2;

// Zero pages are written from one buffer of this many.
constexpr uint32_t kZeroPages = 64;

// Fresh private anonymous memory reads as zeros already; a file mapping has
// the file's bytes there, a shared one the object's.
bool zeros_need_writing(const Mapping& m) { return m.kind == MappingKind::File || m.shared; }

// One process: the pieces of its mappings gather in a window; the window's
// blocks are read once each, in file order, and their pages written where
// the pieces say.
class Filler {
 public:
  Filler(pid_t pid, const image::ImageReader& img, unsigned jobs, const PageCopier* copier)
      : pid_(pid), img_(img), jobs_(jobs), zeros_(pid), copier_(copier) {}
  // Into a file instead (a shared memory object's memfd): pieces given to
  // add_to_file carry file offsets where they carry addresses.
  // `mapped`: the file mapped shared in snap, `size` bytes, written there
  // rather than with pwrite (hugetlbfs has no write(2)); null: pwrite.
  struct IntoFile {
    int fd;
    uint8_t* mapped = nullptr;
    uint64_t size = 0;
  };
  Filler(IntoFile file, const image::ImageReader& img, unsigned jobs)
      : pid_(-1), img_(img), jobs_(jobs), zeros_(-1), fd_(file.fd), mapped_(file.mapped),
        mapped_size_(file.size) {}

  // A piece whose `addr` is the offset in the file; zero pieces are left
  // out (a fresh file reads as zeros).
  void add_to_file(const PagePiece& pc) {
    if (pc.kind == PagePiece::kZero) return;
    window_.push_back(pc);
    if (window_.size() == kWindowPieces) flush_window();
  }

  void add(const Mapping& m, const PagePiece& pc) {
    if (pc.kind == PagePiece::kZero) {
      if (!zeros_need_writing(m)) return;
      if (!zero_pages_) zero_pages_ = std::make_unique<uint8_t[]>(kZeroPages * kPageSize);
      for (uint32_t done = 0; done < pc.npages;) {
        uint32_t n = std::min(pc.npages - done, kZeroPages);
        zeros_.add(zero_pages_.get(), remote_addr(pc.addr + uint64_t{done} * kPageSize),
                   n * kPageSize);
        done += n;
      }
      return;
    }
    window_.push_back(pc);
    if (window_.size() == kWindowPieces) flush_window();
  }

  // Writes what is left; returns the bytes written in all.
  uint64_t finish() {
    flush_window();
    zeros_.flush();
    return written_ + zeros_.written();
  }

 private:
  void flush_window() {
    if (window_.empty()) return;
    std::sort(window_.begin(), window_.end(), [](const PagePiece& a, const PagePiece& b) {
      return std::tie(a.block, a.addr) < std::tie(b.block, b.addr);
    });
    std::vector<BlockId> blocks;
    for (const auto& pc : window_)
      if (blocks.empty() || blocks.back() != pc.block) blocks.push_back(pc.block);
    image::read_blocks(img_, blocks, {jobs_ * kThreadsPerWorker, kReadMemory},
                       [this](const image::BlockPages& b) { write_block(b); });
    window_.clear();
  }

  // On a worker thread: every piece of the window that block b supplies.
  void write_block(const image::BlockPages& b) {
    auto pieces = std::ranges::equal_range(window_, b.id, {}, &PagePiece::block);
    if (fd_ >= 0) {
      uint64_t written = 0;
      copies(b, pieces, [&](const uint8_t* src, uint64_t off, uint64_t bytes) {
        if (mapped_) {
          if (off > mapped_size_ || bytes > mapped_size_ - off)
            throw Error(fmt::format("saved pages at offset {:#x} lie past the end of their "
                                    "shared memory object ({} bytes)", off, mapped_size_),
                        "the image is damaged; it cannot be restored");
          std::memcpy(mapped_ + off, src, bytes);
          written += bytes;
          return;
        }
        for (uint64_t done = 0; done < bytes;) {
          ssize_t n = ::pwrite(fd_, src + done, bytes - done, static_cast<off_t>(off + done));
          if (n <= 0)
            throw SysError(fmt::format("writing saved pages into the file at offset {:#x}", off + done),
                           n < 0 ? errno : EIO);
          done += static_cast<uint64_t>(n);
        }
        written += bytes;
      });
      written_.fetch_add(written, std::memory_order_relaxed);
      return;
    }
    RemoteWriter w(pid_);
    uint64_t copied = 0;
    copies(b, pieces, [&](const uint8_t* src, uint64_t addr, uint64_t bytes) {
      if (copier_ && copier_->covers(remote_addr(addr)))
        copied += copier_->copy(src, remote_addr(addr), bytes, w);
      else
        w.add(src, remote_addr(addr), bytes);
    });
    w.flush();
    written_.fetch_add(w.written() + copied, std::memory_order_relaxed);
  }

  // put(source, destination, bytes) for each copy the pieces ask of block b.
  template <typename Pieces, typename Put>
  static void copies(const image::BlockPages& b, const Pieces& pieces, Put&& put) {
    for (const PagePiece& pc : pieces) {
      uint32_t used = pc.kind == PagePiece::kSeq ? pc.npages : 1;
      if (pc.slot + used > b.npages)
        throw Error(fmt::format("pack {} block {} holds {} pages; the pagemap wants page {}",
                                b.id.pack, b.id.block, b.npages, pc.slot + used - 1),
                    "the image is damaged; it cannot be restored");
      const uint8_t* src = b.pages + uint64_t{pc.slot} * kPageSize;
      if (pc.kind == PagePiece::kSeq)
        put(src, pc.addr, uint64_t{pc.npages} * kPageSize);
      else
        for (uint32_t i = 0; i < pc.npages; ++i) put(src, pc.addr + uint64_t{i} * kPageSize, kPageSize);
    }
  }

  const pid_t pid_;
  const image::ImageReader& img_;
  const unsigned jobs_;
  std::vector<PagePiece> window_;  // read-only while its blocks are read
  std::unique_ptr<uint8_t[]> zero_pages_;  // kZeroPages, zero-filled
  RemoteWriter zeros_;                      // the calling thread's
  std::atomic<uint64_t> written_{0};
  const PageCopier* copier_ = nullptr;
  const int fd_ = -1;  // writing into this file, not into process pid_
  uint8_t* const mapped_ = nullptr;  // through this mapping of it, if any
  const uint64_t mapped_size_ = 0;
};

// A file mapped shared into snap for as long as it is filled.
class MappedFile {
 public:
  MappedFile(int fd, uint64_t size) : size_(size) {
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
      throw SysError(fmt::format("mapping a shared memory object in huge pages ({} bytes) to fill it",
                                 size),
                     errno, "the hugetlb pool may lack the pages: see /proc/meminfo HugePages_Free");
    data_ = static_cast<uint8_t*>(p);
  }
  ~MappedFile() { ::munmap(data_, size_); }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  uint8_t* data() const { return data_; }

 private:
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace

uint64_t fill_file(int fd, const std::vector<std::pair<pid_t, const image::Mapping*>>& mappings,
                   image::ImageReader& img, const FillOptions& opts) {
  // hugetlbfs (a memfd in huge pages) has no write(2): its pages are
  // written through a mapping of it (its size set already).
  std::optional<MappedFile> map;
  struct statfs fs{};
  struct stat st{};
  if (::fstatfs(fd, &fs) == 0 && fs.f_type == HUGETLBFS_MAGIC && ::fstat(fd, &st) == 0 &&
      st.st_size > 0)
    map.emplace(fd, static_cast<uint64_t>(st.st_size));
  Filler filler(Filler::IntoFile{fd, map ? map->data() : nullptr,
                                 static_cast<uint64_t>(map ? st.st_size : 0)},
                img, std::clamp(opts.jobs, 1u, kMaxJobs));
  for (const auto& [pid, m] : mappings)
    img.for_each_piece(pid, m->start, [&](const PagePiece& piece) {
      PagePiece pc = piece;
      pc.addr = m->pgoff + (pc.addr - m->start);
      filler.add_to_file(pc);
    });
  return filler.finish();
}

bool is_kernel_mapping(MappingKind k) {
  return k == MappingKind::Vdso || k == MappingKind::Vvar || k == MappingKind::VvarVclock ||
         k == MappingKind::Vsyscall || k == MappingKind::Aio;
}

bool fill_writes(const Mapping& m) {
  return m.pages_dumped > 0 && !image::is_shm_object(m) && !is_kernel_mapping(m.kind);
}

uint64_t fill_parked(pid_t pid, const image::Process& p,
                     const std::vector<std::pair<const Mapping*, uint64_t>>& ranges,
                     image::ImageReader& img, const FillOptions& opts) {
  Filler filler(pid, img, std::clamp(opts.jobs, 1u, kMaxJobs), nullptr);
  for (const auto& [m, park] : ranges)
    img.for_each_piece(p.pid, m->start, [&](const PagePiece& piece) {
      PagePiece pc = piece;
      pc.addr = park + (pc.addr - m->start);
      filler.add(*m, pc);
    });
  return filler.finish();
}

uint64_t fill_memory(pid_t pid, const image::Process& p, image::ImageReader& img,
                     const FillOptions& opts, const PageCopier* copier,
                     const std::map<uint64_t, InheritedMapping>* inherited) {
  auto t0 = std::chrono::steady_clock::now();
  unsigned jobs = std::clamp(opts.jobs, 1u, kMaxJobs);
  Filler filler(pid, img, jobs, copier);
  for (const auto& m : p.mappings) {
    if (!fill_writes(m)) continue;
    if (inherited)
      if (auto it = inherited->find(m.start); it != inherited->end()) {
        for (const auto& pc : it->second.writes) filler.add(m, pc);
        continue;
      }
    img.for_each_piece(p.pid, m.start, [&](const PagePiece& pc) { filler.add(m, pc); });
  }
  uint64_t written = filler.finish();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  vlog("restore: pid {}: {} MiB written in {:.3f} s by {} worker(s) (up to {} thread(s)), {} MiB "
       "of it by UFFDIO_COPY", p.pid, written >> 20, s, jobs, jobs * kThreadsPerWorker,
       copier ? copier->copied() >> 20 : 0);
  return written;
}

}  // namespace snap::restore
