#include "tracer/memory.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <fmt/core.h>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "base/error.h"
#include "base/file_extents.h"
#include "base/huge_buffer.h"
#include "base/scoped_fd.h"
#include "tracer/file_pages.h"
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
    case K::Vdso: case K::Vvar: case K::VvarVclock: case K::Vsyscall: case K::Aio:
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
  // MAP_DROPPABLE memory ("dp") is what the kernel may empty at any time:
  // it comes back empty, as after memory pressure.
  return !image::has_vmflag(m.vmflags, "io") && !image::has_vmflag(m.vmflags, "pf") &&
         !image::has_vmflag(m.vmflags, "dp");
}

bool is_pte_marker(uint64_t e) {
  // Swapped entries carry the swap type in bits 0-4 (MAX_SWAPFILES_SHIFT);
  // the kernel's last type, SWP_PTE_MARKER, is 31. Those bits read as 0
  // without CAP_SYS_ADMIN: a guard region's marker has a bit of its own.
  constexpr uint64_t kSwapTypeMask = 0x1f, kPteMarkerType = 0x1f;
  return (e & kSwapped) && ((e & kSwapTypeMask) == kPteMarkerType || (e & pagemap::kGuardRegion));
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
// CAP_SYS_ADMIN), or for a file in /dev/shm or a data file its path
// (named_shm.h: it led to the mapped file while the job was stopped). Without either, every page
// of the mapping.
std::vector<uint64_t> shm_pages(pid_t pid, const image::Mapping& m) {
  std::vector<uint64_t> out;
  std::string path = fmt::format("/proc/{}/map_files/{:x}-{:x}", pid, m.start, m.end);
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd && (m.named_shm || m.saved_file)) fd = open_mapped_file(pid, m);
  const uint64_t first = m.pgoff, last = m.pgoff + (m.end - m.start);
  if (!fd) {
    for (uint64_t a = m.start; a < m.end; a += image::kPageSize) out.push_back(a);
    return out;
  }
  for_each_data_range(fd.get(), first, last, [&](uint64_t data, uint64_t hole) {
    for (uint64_t o = data & ~(image::kPageSize - 1); o < hole; o += image::kPageSize)
      out.push_back(m.start + (o - first));
    return hole;
  });
  return out;
}

}  // namespace

void for_each_page_to_dump(pid_t pid, const image::Mapping& m, const std::function<void(uint64_t)>& fn,
                           PagemapWay way) {
  if (m.all_pages) {  // a deleted file's pages too: read through the mapping
    for (uint64_t a = m.start; a < m.end; a += image::kPageSize) fn(a);
    return;
  }
  if (image::is_shm_object(m)) {
    for (uint64_t a : shm_pages(pid, m)) fn(a);
    return;
  }
  std::string path = "/proc/" + std::to_string(pid) + "/pagemap";
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw SysError("open " + path, errno);
  for_each_page_to_dump(fd.get(), pid, m, fn, way);
}

namespace {

// The pages of `m` within region `r` (clipped to m) that hold state, as
// ranges [start, end) to `fn`.
template <typename Fn>
void region_ranges(int fd, const std::string& path, const image::Mapping& m,
                   const pagemap::Region& r, Fn&& fn) {
  using namespace pagemap;
  if (r.categories & kPageIsSwapped) {
    // Swapped out, or pte markers (shown as swapped too): only the entries tell.
    read_chunks(fd, path, r.start, r.end, [&](uint64_t at, const uint64_t* entries, size_t n) {
      select_into(m, at, entries, n, [&](uint64_t a) { fn(a, a + image::kPageSize); });
    });
  } else if (!(m.kind == image::MappingKind::File && (r.categories & kPageIsFile))) {
    // Present; a private file mapping's own pages are the copied-on-write
    // (anonymous) ones.
    fn(r.start, r.end);
  }
}

constexpr uint64_t kScanCategories = pagemap::kPageIsPresent | pagemap::kPageIsSwapped;
constexpr uint64_t kScanReturned = kScanCategories | pagemap::kPageIsFile;

// Like for_each_page_to_dump, a range at a time, the mapping's own walk.
template <typename Fn>
void for_each_range_to_dump(int fd, pid_t pid, const image::Mapping& m, Fn&& fn, PagemapWay way) {
  if (m.all_pages) {  // a deleted file's pages too: read through the mapping
    fn(m.start, m.end);
    return;
  }
  if (image::is_shm_object(m)) {
    for (uint64_t a : shm_pages(pid, m)) fn(a, a + image::kPageSize);
    return;
  }
  const std::string path = "/proc/" + std::to_string(pid) + "/pagemap";  // for messages
  if (way == PagemapWay::kAuto) {
    // The ranges that hold pages, from the page tables: a walk that skips
    // what was never touched, however large.
    bool any = false;
    int e = pagemap::scan(fd, m.start, m.end, 0, 0, kScanCategories, kScanReturned,
                          [&](const pagemap::Region& r) {
                            any = true;
                            region_ranges(fd, path, m, r, fn);
                          });
    if (e == 0) return;
    if (any || !pagemap::scan_unsupported(e))
      throw SysError(fmt::format("ioctl({}, PAGEMAP_SCAN, {:#x}-{:#x})", path, m.start, m.end), e);
  }
  // No PAGEMAP_SCAN (before Linux 6.7): every entry of the range, a bounded
  // chunk at a time.
  pagemap::read_chunks(fd, path, m.start, m.end, [&](uint64_t at, const uint64_t* entries, size_t n) {
    select_into(m, at, entries, n, [&](uint64_t a) { fn(a, a + image::kPageSize); });
  });
}

// The regions of a stretch of small mappings, from one PAGEMAP_SCAN walk
// instead of one per mapping (a process may have tens of thousands, or a
// thread stack of 8 MiB or more for each of hundreds of threads).
class RegionWindow {
 public:
  // Mappings this small share walks, over at most this span and this many
  // (a walk skips what has no page tables; its regions, at most one for
  // every other page of the span, take at most 3 MiB).
  static constexpr uint64_t kSmall = 64ull << 20, kSpan = 1ull << 30;
  static constexpr size_t kMappings = 512;

  bool covers(const image::Mapping& m) const { return valid_ && m.start >= lo_ && m.end <= hi_; }

  // Walks [lo, hi); false when the kernel has no PAGEMAP_SCAN.
  bool fill(int fd, const std::string& path, uint64_t lo, uint64_t hi) {
    regions_.clear();
    pos_ = 0;
    valid_ = false;
    int e = pagemap::scan(fd, lo, hi, 0, 0, kScanCategories, kScanReturned, regions_);
    if (e != 0) {
      if (pagemap::scan_unsupported(e)) return false;
      throw SysError(fmt::format("ioctl({}, PAGEMAP_SCAN, {:#x}-{:#x})", path, lo, hi), e);
    }
    lo_ = lo, hi_ = hi, valid_ = true;
    return true;
  }

  // The regions within m, clipped to it (mappings come in ascending order).
  template <typename Fn>
  void for_each(const image::Mapping& m, Fn&& fn) {
    while (pos_ < regions_.size() && regions_[pos_].end <= m.start) pos_++;
    for (size_t i = pos_; i < regions_.size() && regions_[i].start < m.end; i++) {
      pagemap::Region r = regions_[i];
      r.start = std::max(r.start, m.start);
      r.end = std::min(r.end, m.end);
      fn(r);
    }
  }

 private:
  std::vector<pagemap::Region> regions_;
  size_t pos_ = 0;
  uint64_t lo_ = 0, hi_ = 0;
  bool valid_ = false;
};

}  // namespace

void for_each_page_to_dump(int pagemap_fd, pid_t pid, const image::Mapping& m,
                           const std::function<void(uint64_t)>& fn, PagemapWay way) {
  for_each_range_to_dump(pagemap_fd, pid, m, [&](uint64_t start, uint64_t end) {
    for (uint64_t a = start; a < end; a += image::kPageSize) fn(a);
  }, way);
}

std::vector<uint64_t> pages_to_dump(pid_t pid, const image::Mapping& m, PagemapWay way) {
  std::vector<uint64_t> out;
  for_each_page_to_dump(pid, m, [&](uint64_t a) { out.push_back(a); }, way);
  return out;
}

namespace {

// A run of consecutive pages of one mapping.
struct PageRun {
  uint64_t mapping_start, addr;
  size_t npages;
};

// A range of a mapping whose pages are all read once its batch (and every
// batch before it) is done: what BatchDone reports.
struct Cover {
  const image::Mapping* m;
  uint64_t start, end;
};

// What one dump_memory() call reads from, for its batches.
struct ReadContext {
  pid_t pid;
  int mem_fd;  // /proc/PID/mem, or -1: process_vm_readv
  const PageSink* sink;
};

// Up to kBatchPages pages, in runs, of one or more mappings.
struct Batch {
  const ReadContext* ctx = nullptr;
  std::vector<PageRun> runs;
  size_t npages = 0;
  std::vector<Cover> covers;
  uint64_t seq = 0;
  std::exception_ptr error;
};

// A pread of /proc/PID/mem copies all it asks for in one go in the kernel:
// 4 MiB at once stalled a job running beside it 20-25 ms here (its 1 ms
// loop), 256 KiB no more than the machine's own noise.
constexpr size_t kMemFileRead = 256 << 10;

// Reads one run through /proc/PID/mem, kMemFileRead at a time (the kernel
// takes no pin, so a snapshot's pages are not copied).
void read_run_mem_file(int mem_fd, pid_t pid, const PageRun& r, uint8_t* dst) {
  const size_t len = r.npages * image::kPageSize;
  size_t done = 0;
  while (done < len) {
    ssize_t n = ::pread(mem_fd, dst + done, std::min(len - done, kMemFileRead),
                        static_cast<off_t>(r.addr + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      throw SysError(fmt::format("read /proc/{}/mem at {:#x}", pid, r.addr + done), n < 0 ? errno : EIO);
    done += static_cast<size_t>(n);
  }
}

// Reads the runs with as few process_vm_readv calls as possible: each run
// is one iovec.
void read_runs_vm_readv(pid_t pid, const std::vector<PageRun>& runs, uint8_t* buf) {
  std::vector<iovec> remote;
  remote.reserve(std::min(runs.size(), kMaxIov));
  uint8_t* dst = buf;
  for (size_t k = 0; k < runs.size(); k += kMaxIov) {
    size_t nv = std::min(kMaxIov, runs.size() - k);
    remote.clear();
    size_t want = 0;
    for (size_t v = 0; v < nv; v++) {
      remote.push_back({reinterpret_cast<void*>(runs[k + v].addr), runs[k + v].npages * image::kPageSize});
      want += remote.back().iov_len;
    }
    iovec local{dst, want};
    ssize_t got = ::process_vm_readv(pid, &local, 1, remote.data(), nv, 0);
    if (got != static_cast<ssize_t>(want)) {
      // Pages without PROT_READ (or a short read): take the slow path that
      // reaches them, one range at a time.
      uint8_t* p = dst;
      for (size_t v = 0; v < nv; v++) {
        read_remote(pid, remote_addr(reinterpret_cast<uint64_t>(remote[v].iov_base)), p,
                    remote[v].iov_len);
        p += remote[v].iov_len;
      }
    }
    dst += want;
  }
}

// Reads a batch into `buf` and hands its runs to the sink.
void read_batch(const Batch& b, uint8_t* buf) {
  const ReadContext& c = *b.ctx;
  if (c.mem_fd >= 0) {
    uint8_t* dst = buf;
    for (const auto& r : b.runs) {
      read_run_mem_file(c.mem_fd, c.pid, r, dst);
      dst += r.npages * image::kPageSize;
    }
  } else {
    read_runs_vm_readv(c.pid, b.runs, buf);
  }
  const uint8_t* p = buf;
  for (const auto& r : b.runs) {
    (*c.sink)(c.pid, r.mapping_start, r.addr, p, r.npages);
    p += r.npages * image::kPageSize;
  }
}

HugeBuffer batch_buffer(size_t pages) { return HugeBuffer(pages * image::kPageSize); }

// All readers' buffers together stay within this (8 MiB batches for up to
// 8 readers, smaller ones beyond).
constexpr size_t kReadersPages = 16384;

}  // namespace

class MemoryReaders::Impl {
 public:
  explicit Impl(unsigned n)
      : batch_pages_(n ? std::clamp<size_t>(kReadersPages / n, 256, kBatchPages) : kBatchPages) {
    buffers_.resize(n);
    for (unsigned i = 0; i < n; i++) threads_.emplace_back([this, i] { loop(buffers_[i]); });
  }
  void warm() {
    std::lock_guard lock(mu_);  // the readers take their next batch after this
    for (auto& buf : buffers_)
      if (!buf) {  // one a reader used is in already
        buf = batch_buffer(batch_pages_);
        std::memset(buf.data(), 0, buf.size());
      }
  }
  size_t batch_pages() const { return batch_pages_; }
  ~Impl() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    work_cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  unsigned threads() const { return static_cast<unsigned>(threads_.size()); }
  // Batches queued or being read: a reader each, and as many waiting.
  size_t capacity() const { return 2 * threads_.size(); }

  void submit(Batch&& b) {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(b));
    work_cv_.notify_one();
  }

  // Waits for the next batch read (in any order).
  Batch wait_done() {
    std::unique_lock lock(mu_);
    done_cv_.wait(lock, [&] { return !done_.empty(); });
    Batch b = std::move(done_.front());
    done_.pop_front();
    return b;
  }

  // A batch read, if one is waiting.
  std::optional<Batch> try_done() {
    std::lock_guard lock(mu_);
    if (done_.empty()) return std::nullopt;
    Batch b = std::move(done_.front());
    done_.pop_front();
    return b;
  }

 private:
  void loop(HugeBuffer& buf) {
    for (;;) {
      Batch b;
      {
        std::unique_lock lock(mu_);
        work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;
        b = std::move(queue_.front());
        queue_.pop_front();
      }
      try {
        if (!buf) buf = batch_buffer(batch_pages_);
        read_batch(b, buf.data());
      } catch (...) {
        b.error = std::current_exception();
      }
      std::lock_guard lock(mu_);
      done_.push_back(std::move(b));
      done_cv_.notify_all();
    }
  }

  const size_t batch_pages_;
  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<Batch> queue_, done_;
  bool stopping_ = false;
  std::vector<HugeBuffer> buffers_;  // by reader, before threads_: outlives them
  std::vector<std::thread> threads_;
};

MemoryReaders::MemoryReaders(unsigned threads)
    : impl_(std::make_unique<Impl>(threads > 1 ? threads : 0)) {}
MemoryReaders::~MemoryReaders() = default;
unsigned MemoryReaders::threads() const { return impl_->threads(); }
void MemoryReaders::warm() { impl_->warm(); }

namespace {

// Runs the batches of one dump_memory() call, on the readers or inline, and
// reports their covers in order once every batch before them is done.
class BatchRunner {
 public:
  BatchRunner(MemoryReaders* readers, const BatchDone& after_batch)
      : pool_(readers && readers->threads() ? &readers->impl() : nullptr),
        after_batch_(after_batch),
        batch_pages_(pool_ ? pool_->batch_pages() : kBatchPages) {}
  size_t batch_pages() const { return batch_pages_; }
  // Waits for what is still being read: it refers to this call's context.
  ~BatchRunner() {
    while (in_flight_) {
      pool_->wait_done();
      in_flight_--;
    }
  }

  void submit(Batch&& b) {
    b.seq = next_seq_++;
    if (!pool_) {
      if (!buf_) buf_ = batch_buffer(batch_pages_);
      read_batch(b, buf_.data());
      finished(std::move(b));
      return;
    }
    while (in_flight_ >= pool_->capacity()) take(pool_->wait_done());
    pool_->submit(std::move(b));
    in_flight_++;
    while (auto d = pool_->try_done()) take(std::move(*d));
  }

  void finish() {
    while (in_flight_) take(pool_->wait_done());
  }

 private:
  void take(Batch&& b) {
    in_flight_--;
    finished(std::move(b));
  }

  void finished(Batch&& b) {
    if (b.error) std::rethrow_exception(b.error);  // the destructor waits for the rest
    ready_.emplace(b.seq, std::move(b.covers));
    for (auto it = ready_.begin(); it != ready_.end() && it->first == next_done_;
         it = ready_.erase(it), next_done_++)
      if (after_batch_)
        for (const auto& c : it->second) after_batch_(*c.m, c.start, c.end);
  }

  MemoryReaders::Impl* pool_;
  const BatchDone& after_batch_;
  const size_t batch_pages_;
  HugeBuffer buf_;
  size_t in_flight_ = 0;
  uint64_t next_seq_ = 0, next_done_ = 0;
  std::map<uint64_t, std::vector<Cover>> ready_;
};

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
                        const PageChooser& choose, const BatchDone& after_batch,
                        MemoryReaders* readers) {
  MemoryStats stats;
  ScopedFd mem_fd, pagemap_fd;
  if (via == ReadVia::kMemFile) {
    std::string path = "/proc/" + std::to_string(pid) + "/mem";
    mem_fd.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!mem_fd) throw SysError("open " + path, errno);
  }
  const ReadContext ctx{pid, mem_fd ? mem_fd.get() : -1, &sink};
  const std::string pagemap_path = "/proc/" + std::to_string(pid) + "/pagemap";
  BatchRunner runner(readers, after_batch);
  Batch cur;
  cur.ctx = &ctx;
  RegionWindow window;
  bool have_scan = true;
  for (size_t mi = 0; mi < mappings.size(); mi++) {
    auto& m = mappings[mi];
    if (which && !which(m)) continue;
    m.pages_dumped = 0;
    if (!mapping_has_content(m)) continue;
    std::optional<std::vector<uint64_t>> chosen;
    // Not a mapping read whole: what it held may not be in the previous
    // checkpoint (the file was deleted since, its pages were the file's).
    if (choose && !m.all_pages) chosen = choose(m);
    // Pages join the current batch, which goes to be read when full; the
    // range of the mapping covered so far is reported with it: from where
    // the previous batch ended (or the mapping's start) to its last page
    // (or, for the last batch of the mapping, the mapping's end). Pages in
    // between were not to be read either.
    uint64_t covered = m.start, n = 0;
    // Pages [a, b) of m join the batch.
    auto add = [&](uint64_t a, uint64_t b) {
      while (a < b) {
        size_t take = std::min<uint64_t>((b - a) / image::kPageSize, runner.batch_pages() - cur.npages);
        auto& runs = cur.runs;
        if (!runs.empty() && runs.back().mapping_start == m.start &&
            runs.back().addr + runs.back().npages * image::kPageSize == a)
          runs.back().npages += take;
        else
          runs.push_back({m.start, a, take});
        n += take;
        cur.npages += take;
        a += take * image::kPageSize;
        if (cur.npages < runner.batch_pages()) continue;
        if (after_batch) cur.covers.push_back({&m, covered, a});
        covered = a;
        runner.submit(std::move(cur));
        cur = Batch{};
        cur.ctx = &ctx;
      }
    };
    if (m.all_pages) {
      add(m.start, m.end);
    } else if (chosen || (shared && image::is_shm_object(m))) {
      auto pages = chosen ? std::move(*chosen) : pages_to_dump(pid, m);
      if (shared) shared->claim(m, pages);
      for (uint64_t a : pages) add(a, a + image::kPageSize);
    } else if (image::is_shm_object(m)) {
      for_each_range_to_dump(-1, pid, m, add, PagemapWay::kAuto);
    } else {
      // Read as the page tables are walked, a batch at a time: snap holds
      // no list of the mapping's pages, however many it has.
      if (!pagemap_fd) {
        pagemap_fd.reset(::open(pagemap_path.c_str(), O_RDONLY | O_CLOEXEC));
        if (!pagemap_fd) throw SysError("open " + pagemap_path, errno);
      }
      if (have_scan && m.end - m.start <= RegionWindow::kSmall && !window.covers(m)) {
        // One walk for this mapping and the small ones after it.
        uint64_t hi = m.end;
        for (size_t k = mi + 1; k < mappings.size() && k - mi < RegionWindow::kMappings &&
                                mappings[k].end - mappings[k].start <= RegionWindow::kSmall &&
                                mappings[k].end - m.start <= RegionWindow::kSpan;
             k++)
          hi = mappings[k].end;
        have_scan = window.fill(pagemap_fd.get(), pagemap_path, m.start, hi);
      }
      if (have_scan && window.covers(m))
        window.for_each(m, [&](const pagemap::Region& r) {
          region_ranges(pagemap_fd.get(), pagemap_path, m, r, add);
        });
      else
        for_each_range_to_dump(pagemap_fd.get(), pid, m, add, PagemapWay::kAuto);
    }
    if (after_batch && m.end > covered) cur.covers.push_back({&m, covered, m.end});
    m.pages_dumped = n;
    stats.pages += n;
  }
  if (cur.npages || !cur.covers.empty()) runner.submit(std::move(cur));
  runner.finish();
  return stats;
}

}  // namespace snap
