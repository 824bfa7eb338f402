#include "image/image_writer.h"

#include <fcntl.h>
#include <lz4.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <exception>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "image/file_io.h"
#include "image/format.h"
#include "image/image_reader.h"
#include "image/manifest.h"
#include "image/series.h"

namespace snap::image {

namespace fs = std::filesystem;

namespace {

constexpr int kCompressThreads = 2;
// Block buffers in flight: one being filled, the rest queued, being
// compressed or waiting for their turn to be written. This bounds memory.
constexpr int kSlots = 2 * kCompressThreads + 1;

struct Hash128 {
  uint64_t lo = 0, hi = 0;
  bool operator==(const Hash128&) const = default;
};
struct Hash128Hasher {
  size_t operator()(const Hash128& h) const { return h.lo; }
};

Hash128 hash_page(const uint8_t* p) {
  XXH128_hash_t h = XXH3_128bits(p, kPageSize);
  return {h.low64, h.high64};
}

bool all_zero(const uint8_t* p) {
  static const uint8_t zero[kPageSize] = {};
  return std::memcmp(p, zero, kPageSize) == 0;
}

// One reusable block buffer. Allocated on first use and then recycled, so
// a dump touches fresh memory only for the first few blocks.
struct Slot {
  std::unique_ptr<uint8_t[]> raw;     // kBlockRawBytes
  std::unique_ptr<uint8_t[]> packed;  // LZ4_compressBound(kBlockRawBytes)
  uint64_t block = 0;
  uint32_t npages = 0;
  disk::BlockHeader header{};
  const uint8_t* stored = nullptr;  // raw or packed, after compress()
};

void compress(Slot& s) {
  const int raw_len = static_cast<int>(s.npages * kPageSize);
  const int bound = LZ4_compressBound(static_cast<int>(disk::kBlockRawBytes));
  if (!s.packed) s.packed = std::make_unique_for_overwrite<uint8_t[]>(static_cast<size_t>(bound));
  int n = LZ4_compress_default(reinterpret_cast<const char*>(s.raw.get()),
                               reinterpret_cast<char*>(s.packed.get()), raw_len, bound);
  disk::BlockHeader& h = s.header;
  h.magic = disk::kBlockMagic;
  h.npages = static_cast<uint16_t>(s.npages);
  h.raw_len = static_cast<uint32_t>(raw_len);
  h.block = s.block;
  if (n > 0 && n < raw_len) {
    h.flags = 0;
    h.stored_len = static_cast<uint32_t>(n);
    s.stored = s.packed.get();
  } else {
    h.flags = disk::kBlockRaw;
    h.stored_len = static_cast<uint32_t>(raw_len);
    s.stored = s.raw.get();
  }
  h.checksum = XXH3_64bits(s.stored, h.stored_len);
}

std::string strip_slashes(std::string d) {
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  return d;
}

bool is_empty_dir(const std::string& dir) {
  std::error_code ec;
  bool empty = fs::is_empty(dir, ec);
  if (ec) throw SysError(fmt::format("read directory {}", dir), ec.value());
  return empty;
}

// Refuses what must not be replaced at DIR: anything but nothing, an empty
// directory or, with force, a snap image.
void check_target(const std::string& dir, bool force) {
  struct stat st;
  if (::lstat(dir.c_str(), &st) < 0) {
    if (errno == ENOENT) return;
    throw SysError(fmt::format("stat({})", dir), errno);
  }
  if (!S_ISDIR(st.st_mode))
    throw Error(fmt::format("{} exists and is not a directory", dir),
                "choose another image directory");
  if (is_empty_dir(dir)) return;
  if (!force)
    throw Error(fmt::format("{} exists and is not empty", dir),
                "choose another directory, or pass --force to replace the image there");
  if (::access((dir + "/" + disk::kManifestFile).c_str(), F_OK) < 0)
    throw Error(fmt::format("{} is not empty and does not hold a snap image; not replacing it",
                            dir),
                "--force only replaces a previous image; choose another directory");
}

std::string parent_of(const std::string& dir) {
  fs::path p = fs::path(dir).parent_path();
  return p.empty() ? "." : p.string();
}

// Appends one page reference to a mapping's run list, extending the last
// run where the page continues it.
void append_ref(std::vector<disk::PagemapRun>& runs, uint64_t addr, disk::RunKind kind,
                uint64_t ref) {
  if (!runs.empty()) {
    auto& r = runs.back();
    if (r.addr + uint64_t{r.npages} * kPageSize == addr && r.npages < UINT32_MAX) {
      if (kind == disk::kRunZero) {
        if (r.kind == disk::kRunZero) return void(++r.npages);
      } else if (r.kind == disk::kRunSeq && r.ref + r.npages == ref) {
        return void(++r.npages);
      } else if (r.kind == disk::kRunRepeat && r.ref == ref) {
        return void(++r.npages);
      } else if (r.kind == disk::kRunSeq && r.npages == 1 && r.ref == ref) {
        r.kind = disk::kRunRepeat;
        return void(++r.npages);
      }
    }
  }
  runs.push_back({addr, kind == disk::kRunZero ? 0 : ref, 1, kind});
}

// Page refs while writing a series checkpoint: pack slot (index in the
// base's pack list, or the new pack after them) in the high bits, unique
// page number in that pack below. commit() turns them into the manifest's
// numbering. For a plain image the slot is 0, so a ref is the page number.
constexpr int kPackShift = 40;
constexpr uint64_t kPageMask = (uint64_t{1} << kPackShift) - 1;

// N.tmp-XXXXXX, N.tmp-gc, latest.tmp-PID
bool has_temp_infix(const std::string& name) {
  auto dot = name.find(kSeriesTempInfix);
  if (dot == std::string::npos || dot == 0) return false;
  std::string head = name.substr(0, dot);
  return head == kSeriesLatest || head.find_first_not_of("0123456789") == std::string::npos;
}

std::optional<uint64_t> number_of(const std::string& s) {
  if (s.empty() || s.size() > 18 || s.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  return std::stoull(s);
}

// Deletes packs no checkpoint of the series refers to: those of checkpoints
// collected, or of a writer killed before its checkpoint was installed. When
// some checkpoint's manifest cannot be read (it cannot be restored anyway,
// but maybe it is being looked at), only packs numbered above every
// checkpoint go.
void remove_unused_packs(const std::string& ckpt) {
  std::set<std::string> used;
  bool all_read = true;
  std::vector<uint64_t> numbers = series_numbers(ckpt);
  for (uint64_t n : numbers) {
    try {
      Manifest m = manifest_from_json(
          io::read_file(fmt::format("{}/{}/{}", ckpt, n, disk::kManifestFile)));
      for (const auto& p : m.packs) used.insert(p.name);
    } catch (const Error&) {
      all_read = false;
    }
  }
  const uint64_t highest = numbers.empty() ? 0 : numbers.back();
  const std::string packs = ckpt + "/" + kSeriesPacks;
  bool removed = false;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(packs, ec)) {
    std::string file = e.path().filename().string();
    std::string stem = file.substr(0, file.find('.'));
    auto n = number_of(stem);
    if (used.count(stem) || (n && !all_read && *n <= highest)) continue;
    if (::unlink(e.path().c_str()) < 0 && errno != ENOENT)
      warn("could not remove unused pack file {}: {}", e.path().string(), strerror(errno));
    removed = true;
  }
  if (ec) throw SysError(fmt::format("read directory {}", packs), ec.value());
  if (removed) io::fsync_dir(packs);
}

}  // namespace

class ImageWriter::Impl {
 public:
  Impl(std::string dir, bool force) : dir_(strip_slashes(std::move(dir))), force_(force) {
    check_target(dir_, force_);
    std::string templ = dir_ + ".snap-tmp-XXXXXX";
    if (!::mkdtemp(templ.data()))
      throw SysError(fmt::format("mkdtemp({})", templ), errno,
                     "the parent directory of the image must exist and be writable");
    tmp_ = templ;
    pages_path_ = tmp_ + "/" + disk::kPagesFile;
    index_path_ = tmp_ + "/" + disk::kIndexFile;
    pages_fd_ = io::open_file(pages_path_, O_WRONLY | O_CREAT | O_EXCL);
    start();
  }

  void start() {
    sum_.reset(XXH3_createState());
    if (!sum_) throw std::bad_alloc();
    XXH3_64bits_reset(sum_.get());
    zero_hash_ = hash_page(std::array<uint8_t, kPageSize>{}.data());
    slots_.resize(kSlots);
    for (int i = kSlots - 1; i >= 0; --i) free_.push_back(i);
    for (int i = 0; i < kCompressThreads; ++i) workers_.emplace_back([this] { worker(); });
  }

  // A checkpoint of the series in `ckpt`.
  Impl(std::string ckpt, SeriesOptions opts) : series_(true), opts_(opts) {
    ckpt_ = strip_slashes(std::move(ckpt));
    if (::mkdir(ckpt_.c_str(), 0700) < 0 && errno != EEXIST)
      throw SysError(fmt::format("mkdir({})", ckpt_), errno,
                     "the parent directory of the series must exist and be writable");
    const std::string packs = ckpt_ + "/" + kSeriesPacks;
    if (::mkdir(packs.c_str(), 0700) < 0 && errno != EEXIST)
      throw SysError(fmt::format("mkdir({})", packs), errno);
    if (!is_series_dir(ckpt_))
      throw Error(fmt::format("{} is not a checkpoint series directory", ckpt_));
    lock_ = io::open_file(ckpt_ + "/" + kSeriesLock, O_RDWR | O_CREAT);
    if (::flock(lock_.get(), LOCK_EX | LOCK_NB) < 0)
      throw SysError(fmt::format("flock({}/{})", ckpt_, kSeriesLock), errno,
                     errno == EWOULDBLOCK ? "another snap is writing this series; wait for it"
                                          : "");
    remove_leftovers();
    remove_uncommitted();
    io::fsync_dir(ckpt_);

    std::vector<uint64_t> numbers = series_numbers(ckpt_);
    if (!numbers.empty()) {
      try {
        base_.emplace(ImageReader::open(ckpt_));
      } catch (const Error& e) {
        warn("series {}: no previous checkpoint can be read ({}); this one stores all its pages",
             ckpt_, e.what());
      }
    }
    remove_unused_packs(ckpt_);
    number_ = numbers.empty() ? 1 : numbers.back() + 1;
    if (auto l = series_latest(ckpt_); l && *l >= number_) number_ = *l + 1;
    dir_ = fmt::format("{}/{}", ckpt_, number_);

    if (base_) {
      base_number_ = base_->checkpoint().series_number;
      base_packs_ = base_->packs();
    }
    new_slot_ = base_packs_.size();

    std::string templ = fmt::format("{}/{}{}XXXXXX", ckpt_, number_, kSeriesTempInfix);
    if (!::mkdtemp(templ.data())) throw SysError(fmt::format("mkdtemp({})", templ), errno);
    tmp_ = templ;
    pages_path_ = fmt::format("{}/{}.pack", packs, number_);
    index_path_ = fmt::format("{}/{}.idx", packs, number_);
    pages_fd_ = io::open_file(pages_path_, O_WRONLY | O_CREAT | O_EXCL);
    pack_created_ = true;
    start();
  }

  ~Impl() {
    stop_workers();
    pages_fd_.reset();
    if (!committed_ && !tmp_.empty()) {
      std::error_code ec;
      fs::remove_all(tmp_, ec);
    }
    // The new pack belongs to no checkpoint unless CKPT/N was installed.
    if (pack_created_ && !installed_) {
      ::unlink(pages_path_.c_str());
      ::unlink(index_path_.c_str());
    }
  }

  // A checkpoint numbered above the one `latest` names was installed by a
  // writer killed before it switched `latest`: it was never committed, and
  // keeping it would make the next checkpoint's predecessor ambiguous.
  void remove_uncommitted() {
    std::optional<uint64_t> latest = series_latest(ckpt_);
    if (!latest) return;
    for (uint64_t n : series_numbers(ckpt_)) {
      if (n <= *latest) continue;
      std::string from = fmt::format("{}/{}", ckpt_, n);
      std::string to = fmt::format("{}{}uncommitted", from, kSeriesTempInfix);
      std::error_code ec;
      fs::remove_all(to, ec);
      if (::rename(from.c_str(), to.c_str()) < 0)
        throw SysError(fmt::format("rename({}, {})", from, to), errno);
      fs::remove_all(to, ec);
      if (ec) warn("could not remove {}: {}", to, ec.message());
    }
  }

  // Temporary directories and `latest` links of a killed writer, and
  // checkpoints a killed collection had begun to delete.
  void remove_leftovers() {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(ckpt_, ec)) {
      std::string name = e.path().filename().string();
      if (!has_temp_infix(name)) continue;
      std::error_code rec;
      fs::remove_all(e.path(), rec);
      if (rec) warn("could not remove {}: {}", e.path().string(), rec.message());
    }
    if (ec) throw SysError(fmt::format("read directory {}", ckpt_), ec.value());
  }

  void add_pages(pid_t pid, uint64_t mapping_start, uint64_t addr, const uint8_t* data,
                 size_t npages) {
    if (addr % kPageSize || mapping_start % kPageSize || addr < mapping_start)
      throw Error(fmt::format("add_pages(pid {}, mapping {:#x}): address {:#x} is not a page of "
                              "the mapping",
                              pid, mapping_start, addr));
    // Hash outside the lock: this is most of the per-page work.
    std::vector<Hash128> hashes(npages);
    for (size_t i = 0; i < npages; ++i) hashes[i] = hash_page(data + i * kPageSize);

    std::unique_lock lock(mu_);
    check_usable();
    auto& runs = tables_[{pid, mapping_start}];
    for (size_t i = 0; i < npages; ++i) {
      const uint8_t* page = data + i * kPageSize;
      const uint64_t page_addr = addr + i * kPageSize;
      ++stats_.pages;
      if (hashes[i] == zero_hash_ && all_zero(page)) {
        ++stats_.zero_pages;
        append_ref(runs, page_addr, disk::kRunZero, 0);
        continue;
      }
      // Pages the base already stores are looked up in its sorted indexes.
      if (auto earlier = in_base(hashes[i])) {
        ++stats_.earlier_pages;
        append_ref(runs, page_addr, disk::kRunSeq, *earlier);
        continue;
      }
      auto it = by_hash_.find(hashes[i]);
      if (it == by_hash_.end()) {
        // Make room first: waiting drops the lock, and unique page numbers
        // must be handed out in the order pages enter blocks.
        wait_for_room(lock);
        it = by_hash_.find(hashes[i]);
      }
      if (it != by_hash_.end()) {
        ++stats_.duplicate_pages;
        append_ref(runs, page_addr, disk::kRunSeq, it->second);
        continue;
      }
      uint64_t ref = (new_slot_ << kPackShift) | hashes_.size();
      by_hash_.emplace(hashes[i], ref);
      hashes_.push_back(hashes[i]);
      ++stats_.unique_pages;
      Slot& s = slots_[static_cast<size_t>(filling_)];
      std::memcpy(s.raw.get() + s.npages * kPageSize, page, kPageSize);
      if (++s.npages == disk::kBlockPages) submit_filling();
      append_ref(runs, page_addr, disk::kRunSeq, ref);
    }
    stats_.raw_bytes = stats_.pages * kPageSize;
  }

  void add_unchanged(pid_t pid, uint64_t mapping_start, uint64_t addr, size_t npages,
                     bool missing_is_zero) {
    if (!series_)
      throw Error(fmt::format("image {}: add_unchanged() needs a checkpoint series", dir_));
    if (!base_)
      throw Error(fmt::format("series {}: pages of pid {} at {:#x} were reported unchanged, but "
                              "there is no previous checkpoint",
                              ckpt_, pid, addr),
                  "the first checkpoint of a series must store all pages");
    if (addr % kPageSize || mapping_start % kPageSize || addr < mapping_start)
      throw Error(fmt::format("add_unchanged(pid {}, mapping {:#x}): address {:#x} is not a page "
                              "of the mapping",
                              pid, mapping_start, addr));
    auto where = base_->locate(pid, addr, npages, missing_is_zero);  // throws naming the base
    std::unique_lock lock(mu_);
    check_usable();
    auto& runs = tables_[{pid, mapping_start}];
    for (size_t i = 0; i < npages; ++i) {
      const uint64_t page_addr = addr + i * kPageSize;
      ++stats_.pages;
      if (!where[i]) {
        ++stats_.zero_pages;
        append_ref(runs, page_addr, disk::kRunZero, 0);
        continue;
      }
      ++stats_.earlier_pages;
      ++stats_.unchanged_pages;
      append_ref(runs, page_addr, disk::kRunSeq,
                 (uint64_t{where[i]->pack} << kPackShift) | where[i]->page);
    }
    stats_.raw_bytes = stats_.pages * kPageSize;
  }

  void commit(const Checkpoint& c) {
    {
      std::unique_lock lock(mu_);
      check_usable();
      if (filling_ >= 0 && slots_[static_cast<size_t>(filling_)].npages > 0) {
        submit_filling();
      } else if (filling_ >= 0) {  // taken for a page that turned out a duplicate
        free_.push_back(std::exchange(filling_, -1));
        --next_block_;
      }
      done_cv_.wait(lock, [&] { return error_ || next_write_ == next_block_; });
      if (error_) std::rethrow_exception(error_);
      spent_ = true;  // from here on a failure leaves the writer unusable
    }
    stop_workers();
    io::fsync_fd(pages_fd_.get(), pages_path_);
    if (::close(pages_fd_.release()) < 0)
      throw SysError(fmt::format("close({})", pages_path_), errno);

    Manifest m;
    m.checkpoint = c;
    m.checkpoint.format_version = kFormatVersion;
    if (!series_) {
      m.files[disk::kPagesFile] = {file_off_, XXH3_64bits_digest(sum_.get())};
      m.files[disk::kIndexFile] = write_index();
      m.files[disk::kPagemapFile] = write_pagemap(m.checkpoint);
      std::string json = to_json(m);
      io::write_file(tmp_ + "/" + disk::kManifestFile, json.data(), json.size());
      io::fsync_dir(tmp_);
      install();
      committed_ = true;
      return;
    }
    commit_series(m);
  }

  // See "Checkpoint series" in FORMAT.md for the order and why.
  void commit_series(Manifest& m) {
    FileEntry pack_sum{file_off_, XXH3_64bits_digest(sum_.get())};
    FileEntry index_sum = write_index();
    io::fsync_dir(ckpt_ + "/" + kSeriesPacks);
    {
      std::lock_guard lock(mu_);
      stats_.new_stored_bytes = pack_sum.size + index_sum.size;
    }

    // The packs the pagemap refers to, base packs first, and their place in
    // the manifest's page numbering.
    std::set<uint64_t> used;
    for (const auto& [key, runs] : tables_)
      for (const auto& r : runs)
        if (r.kind != disk::kRunZero) used.insert(r.ref >> kPackShift);
    std::map<uint64_t, uint64_t> first_ref;  // pack slot -> ref of its page 0
    uint64_t total = 0;
    for (uint64_t slot = 0; slot < base_packs_.size(); ++slot) {
      if (!used.count(slot)) continue;
      const auto& p = base_packs_[slot];
      m.packs.push_back({p.name, {p.data_size, p.data_xxh3}, {p.index_size, p.index_xxh3}});
      first_ref[slot] = total;
      total += p.npages;
    }
    m.packs.push_back({std::to_string(number_), pack_sum, index_sum});
    first_ref[new_slot_] = total;
    for (auto& [key, runs] : tables_)
      for (auto& r : runs)
        if (r.kind != disk::kRunZero) r.ref = first_ref.at(r.ref >> kPackShift) + (r.ref & kPageMask);

    m.checkpoint.series_number = number_;
    m.series = SeriesFacts{hashes_.size(), stats_.earlier_pages, stats_.unchanged_pages};
    m.files[disk::kPagemapFile] = write_pagemap(m.checkpoint);
    std::string json = to_json(m);
    io::write_file(tmp_ + "/" + disk::kManifestFile, json.data(), json.size());
    io::fsync_dir(tmp_);

    if (::rename(tmp_.c_str(), dir_.c_str()) < 0)
      throw SysError(fmt::format("rename({}, {})", tmp_, dir_), errno);
    installed_ = true;  // the new pack belongs to CKPT/N now
    committed_ = true;
    io::fsync_dir(ckpt_);
    switch_latest();
    collect_garbage();
  }

  // latest -> N, atomically: a new symlink renamed over the old one.
  void switch_latest() {
    std::string tmp = fmt::format("{}/{}{}{}", ckpt_, kSeriesLatest, kSeriesTempInfix, ::getpid());
    ::unlink(tmp.c_str());
    if (::symlink(std::to_string(number_).c_str(), tmp.c_str()) < 0)
      throw SysError(fmt::format("symlink({})", tmp), errno);
    if (::rename(tmp.c_str(), (ckpt_ + "/" + kSeriesLatest).c_str()) < 0) {
      int err = errno;
      ::unlink(tmp.c_str());
      throw SysError(fmt::format("rename({}, {}/{})", tmp, ckpt_, kSeriesLatest), err);
    }
    io::fsync_dir(ckpt_);
  }

  // Keeps the `keep` newest checkpoints and the one `latest` names; each
  // other one is renamed to N.tmp-gc (no longer a checkpoint, and removed by
  // the next writer if this one dies), then deleted; then the packs no
  // remaining checkpoint refers to. The checkpoint is committed already:
  // failures are warnings.
  void collect_garbage() {
    try {
      std::vector<uint64_t> numbers = series_numbers(ckpt_);
      std::optional<uint64_t> latest = series_latest(ckpt_);
      const size_t keep = std::max(1u, opts_.keep);
      std::vector<std::string> doomed;
      for (size_t i = 0; i + keep < numbers.size(); ++i) {
        if (numbers[i] == latest || numbers[i] == number_) continue;
        std::string from = fmt::format("{}/{}", ckpt_, numbers[i]);
        std::string to = fmt::format("{}{}gc", from, kSeriesTempInfix);
        std::error_code ec;
        fs::remove_all(to, ec);
        if (::rename(from.c_str(), to.c_str()) < 0)
          throw SysError(fmt::format("rename({}, {})", from, to), errno);
        doomed.push_back(to);
      }
      if (doomed.empty()) return;
      io::fsync_dir(ckpt_);
      for (const auto& d : doomed) {
        std::error_code ec;
        fs::remove_all(d, ec);
        if (ec) warn("could not remove {}: {}", d, ec.message());
      }
      remove_unused_packs(ckpt_);
      io::fsync_dir(ckpt_);
    } catch (const Error& e) {
      warn("series {}: checkpoint {} is committed, but removing old checkpoints failed: {}",
           ckpt_, number_, e.what());
    }
  }

  ImageStats stats() const {
    std::lock_guard lock(mu_);
    return stats_;
  }

  std::string dir_;
  std::string tmp_;
  uint64_t number_ = 0;  // series: N
  std::optional<uint64_t> base_number_;  // series: the checkpoint add_unchanged refers to

 private:
  std::optional<uint64_t> in_base(const Hash128& h) const {
    if (!base_) return std::nullopt;
    XXH128_canonical_t canon;
    XXH128_canonicalFromHash(&canon, XXH128_hash_t{h.lo, h.hi});
    auto sp = base_->find_stored(canon.digest);
    if (!sp) return std::nullopt;
    return (uint64_t{sp->pack} << kPackShift) | sp->page;
  }

  void check_usable() {
    if (error_) std::rethrow_exception(error_);
    if (spent_) throw Error(fmt::format("image {}: writer already committed", dir_));
  }

  // Ensures filling_ names a slot with room for a page.
  void wait_for_room(std::unique_lock<std::mutex>& lock) {
    // Another caller may have started a block while we waited.
    free_cv_.wait(lock, [&] { return error_ || filling_ >= 0 || !free_.empty(); });
    if (error_) std::rethrow_exception(error_);
    if (filling_ >= 0) return;
    filling_ = free_.back();
    free_.pop_back();
    Slot& s = slots_[static_cast<size_t>(filling_)];
    if (!s.raw) s.raw = std::make_unique_for_overwrite<uint8_t[]>(disk::kBlockRawBytes);
    s.block = next_block_++;
    s.npages = 0;
  }

  void submit_filling() {
    queue_.push_back(filling_);
    filling_ = -1;
    work_cv_.notify_one();
  }

  void worker() {
    for (;;) {
      int s;
      {
        std::unique_lock lock(mu_);
        work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (stopping_ || error_) return;
        s = queue_.front();
        queue_.pop_front();
      }
      try {
        Slot& slot = slots_[static_cast<size_t>(s)];
        compress(slot);
        {
          std::lock_guard lock(mu_);
          done_.emplace(slot.block, s);
        }
        write_ready_blocks();
      } catch (...) {
        std::lock_guard lock(mu_);
        if (!error_) error_ = std::current_exception();
        free_cv_.notify_all();
        done_cv_.notify_all();
        return;
      }
    }
  }

  // Starts the disk writes of what has accumulated (without waiting for
  // them), so the fsync in commit() finds little left to do.
  void start_writeback() {
    constexpr uint64_t kWritebackChunk = 32 << 20;
    if (file_off_ - written_back_ < kWritebackChunk) return;
    ::sync_file_range(pages_fd_.get(), static_cast<off64_t>(written_back_),
                      static_cast<off64_t>(file_off_ - written_back_), SYNC_FILE_RANGE_WRITE);
    written_back_ = file_off_;
  }

  // Writes compressed blocks in block order, so that pages.bin is laid out
  // (and checksummed) sequentially whatever order the workers finish in.
  void write_ready_blocks() {
    std::lock_guard io_lock(io_mu_);
    for (;;) {
      int s;
      {
        std::lock_guard lock(mu_);
        auto it = done_.find(next_write_);
        if (error_ || it == done_.end()) return;
        s = it->second;
        done_.erase(it);
      }
      Slot& slot = slots_[static_cast<size_t>(s)];
      const disk::BlockHeader& h = slot.header;
      io::write_all(pages_fd_.get(), &h, sizeof h, pages_path_);
      io::write_all(pages_fd_.get(), slot.stored, h.stored_len, pages_path_);
      XXH3_64bits_update(sum_.get(), &h, sizeof h);
      XXH3_64bits_update(sum_.get(), slot.stored, h.stored_len);
      blocks_.push_back({file_off_, h.stored_len, h.npages, h.flags});
      file_off_ += sizeof h + h.stored_len;
      start_writeback();

      std::lock_guard lock(mu_);
      ++stats_.blocks;
      if (h.flags & disk::kBlockRaw) ++stats_.raw_blocks;
      stats_.stored_bytes = file_off_;
      ++next_write_;
      free_.push_back(s);
      free_cv_.notify_all();
      done_cv_.notify_all();
    }
  }

  void stop_workers() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    work_cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  io::FileSum write_index() {
    std::vector<disk::IndexPage> pages(hashes_.size());
    for (size_t u = 0; u < hashes_.size(); ++u) {
      XXH128_canonical_t canon;
      XXH128_canonicalFromHash(&canon, XXH128_hash_t{hashes_[u].lo, hashes_[u].hi});
      std::memcpy(pages[u].hash, canon.digest, sizeof canon.digest);
      pages[u].block = static_cast<uint32_t>(u / disk::kBlockPages);
      pages[u].slot = static_cast<uint32_t>(u % disk::kBlockPages);
    }
    std::sort(pages.begin(), pages.end(), [](const auto& a, const auto& b) {
      return std::memcmp(a.hash, b.hash, sizeof a.hash) < 0;
    });
    disk::IndexHeader h{};
    std::memcpy(h.magic, disk::kIndexMagic, sizeof h.magic);
    h.page_size = kPageSize;
    h.block_pages = disk::kBlockPages;
    h.nblocks = blocks_.size();
    h.npages = pages.size();
    std::vector<uint8_t> buf;
    append(buf, &h, sizeof h);
    append(buf, blocks_.data(), blocks_.size() * sizeof(disk::IndexBlock));
    append(buf, pages.data(), pages.size() * sizeof(disk::IndexPage));
    io::write_file(index_path_, buf.data(), buf.size());
    return io::sum_bytes(buf.data(), buf.size());
  }

  // Also fills in Mapping::pages_dumped of `c`.
  io::FileSum write_pagemap(Checkpoint& c) {
    std::vector<uint8_t> buf;
    disk::PagemapHeader h{};
    std::memcpy(h.magic, disk::kPagemapMagic, sizeof h.magic);
    h.ntables = tables_.size();
    append(buf, &h, sizeof h);
    for (auto& [key, runs] : tables_) {
      auto [pid, start] = key;
      Mapping* m = find_mapping(c, pid, start);
      std::sort(runs.begin(), runs.end(),
                [](const auto& a, const auto& b) { return a.addr < b.addr; });
      uint64_t end = start, npages = 0;
      for (const auto& r : runs) {
        if (r.addr < end)
          throw Error(fmt::format("image: pages of pid {} at {:#x} were added twice", pid, r.addr));
        end = r.addr + uint64_t{r.npages} * kPageSize;
        npages += r.npages;
      }
      if (end > m->end)
        throw Error(fmt::format("image: pid {}: pages up to {:#x} lie outside mapping {:#x}-{:#x}",
                                pid, end, m->start, m->end));
      m->pages_dumped = npages;
      disk::PagemapTable t{pid, static_cast<uint32_t>(runs.size()), start};
      append(buf, &t, sizeof t);
      append(buf, runs.data(), runs.size() * sizeof(disk::PagemapRun));
    }
    io::write_file(tmp_ + "/" + disk::kPagemapFile, buf.data(), buf.size());
    return io::sum_bytes(buf.data(), buf.size());
  }

  static Mapping* find_mapping(Checkpoint& c, pid_t pid, uint64_t start) {
    for (auto& p : c.processes) {
      if (p.pid != pid) continue;
      for (auto& m : p.mappings)
        if (m.start == start) return &m;
    }
    throw Error(fmt::format("image: pages were added for pid {}, mapping {:#x}, which the "
                            "checkpoint does not contain",
                            pid, start));
  }

  static void append(std::vector<uint8_t>& buf, const void* p, size_t n) {
    auto b = static_cast<const uint8_t*>(p);
    buf.insert(buf.end(), b, b + n);
  }

  // Moves the finished image from tmp_ to dir_. See "Committing" in FORMAT.md.
  void install() {
    check_target(dir_, force_);
    if (::rename(tmp_.c_str(), dir_.c_str()) == 0) {
      // DIR did not exist or was an empty directory.
    } else if (errno != ENOTEMPTY && errno != EEXIST) {
      throw SysError(fmt::format("rename({}, {})", tmp_, dir_), errno);
    } else if (::renameat2(AT_FDCWD, tmp_.c_str(), AT_FDCWD, dir_.c_str(), RENAME_EXCHANGE) == 0) {
      // The previous image now sits at tmp_.
      remove_tree(tmp_);
    } else if (errno == EINVAL || errno == ENOSYS) {
      // No RENAME_EXCHANGE on this filesystem: move the old image aside.
      std::string old = dir_ + ".snap-old-XXXXXX";
      if (!::mkdtemp(old.data())) throw SysError(fmt::format("mkdtemp({})", old), errno);
      if (::rename(dir_.c_str(), old.c_str()) < 0) {
        int err = errno;
        ::rmdir(old.c_str());
        throw SysError(fmt::format("rename({}, {})", dir_, old), err);
      }
      if (::rename(tmp_.c_str(), dir_.c_str()) < 0) {
        int err = errno;
        ::rename(old.c_str(), dir_.c_str());
        throw SysError(fmt::format("rename({}, {})", tmp_, dir_), err);
      }
      remove_tree(old);
    } else {
      throw SysError(fmt::format("renameat2({}, {}, RENAME_EXCHANGE)", tmp_, dir_), errno);
    }
    io::fsync_dir(parent_of(dir_));
  }

  // The new image is in place by now: failing to delete the old one is
  // worth a warning, not a failed dump.
  static void remove_tree(const std::string& path) {
    std::error_code ec;
    fs::remove_all(path, ec);
    if (ec) warn("could not remove the previous image at {}: {}", path, ec.message());
  }

  const bool force_ = false;
  // Series: CKPT, its lock, the base checkpoint and its packs.
  const bool series_ = false;
  const SeriesOptions opts_;
  std::string ckpt_;
  ScopedFd lock_;
  std::optional<ImageReader> base_;
  std::vector<ImageReader::PackFiles> base_packs_;
  uint64_t new_slot_ = 0;  // pack slot of the new pack (refs' high bits)
  bool pack_created_ = false, installed_ = false;
  std::string index_path_;
  std::string pages_path_;
  ScopedFd pages_fd_;
  Hash128 zero_hash_;

  mutable std::mutex mu_;  // guards everything below except what io_mu_ guards
  std::condition_variable work_cv_, free_cv_, done_cv_;
  std::vector<Slot> slots_;
  std::vector<int> free_;         // slots ready for filling
  int filling_ = -1;              // slot taking new pages, or none
  std::deque<int> queue_;         // full slots awaiting compression
  std::map<uint64_t, int> done_;  // block -> compressed slot awaiting its write
  uint64_t next_block_ = 0;       // number of the next block to fill
  uint64_t next_write_ = 0;       // number of the next block to write
  std::unordered_map<Hash128, uint64_t, Hash128Hasher> by_hash_;  // -> unique page number
  std::vector<Hash128> hashes_;   // by unique page number
  std::map<std::pair<pid_t, uint64_t>, std::vector<disk::PagemapRun>> tables_;
  ImageStats stats_;
  std::exception_ptr error_;  // first failure of a worker
  bool stopping_ = false, spent_ = false, committed_ = false;
  std::vector<std::thread> workers_;

  std::mutex io_mu_;  // guards pages.bin writes, sum_, blocks_, file_off_
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> sum_{nullptr, &XXH3_freeState};
  std::vector<disk::IndexBlock> blocks_;
  uint64_t file_off_ = 0;
  uint64_t written_back_ = 0;  // pages.bin bytes handed to writeback
};

ImageWriter ImageWriter::create(const std::string& dir, bool force) {
  return ImageWriter(std::make_unique<Impl>(dir, force));
}

ImageWriter ImageWriter::create_in_series(const std::string& ckpt_dir, SeriesOptions opts) {
  return ImageWriter(std::make_unique<Impl>(ckpt_dir, opts));
}

void ImageWriter::add_unchanged(pid_t pid, uint64_t mapping_start, uint64_t addr,
                                size_t npages, bool missing_is_zero) {
  impl_->add_unchanged(pid, mapping_start, addr, npages, missing_is_zero);
}
uint64_t ImageWriter::series_number() const { return impl_->number_; }
std::optional<uint64_t> ImageWriter::base_number() const { return impl_->base_number_; }

ImageWriter::ImageWriter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ImageWriter::ImageWriter(ImageWriter&&) noexcept = default;
ImageWriter& ImageWriter::operator=(ImageWriter&&) noexcept = default;
ImageWriter::~ImageWriter() = default;

void ImageWriter::add_pages(pid_t pid, uint64_t mapping_start, uint64_t addr,
                            const uint8_t* data, size_t npages) {
  impl_->add_pages(pid, mapping_start, addr, data, npages);
}
void ImageWriter::commit(const Checkpoint& c) { impl_->commit(c); }
ImageStats ImageWriter::stats() const { return impl_->stats(); }
const std::string& ImageWriter::dir() const { return impl_->dir_; }
const std::string& ImageWriter::temp_dir() const { return impl_->tmp_; }

}  // namespace snap::image
