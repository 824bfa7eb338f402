#include "image/image_writer.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <stdexcept>
#include <utility>
#include <vector>

#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "image/block_pipeline.h"
#include "image/file_io.h"
#include "image/format.h"
#include "image/freed_places.h"
#include "image/image_dir.h"
#include "image/image_reader.h"
#include "image/lz4_frame.h"
#include "image/manifest.h"
#include "image/manifest_file.h"
#include "image/pack.h"
#include "image/page_table.h"
#include "image/pagemap_builder.h"
#include "image/series.h"
#include "image/series_dir.h"

namespace snap::image {

namespace fs = std::filesystem;

namespace {

// lz4 level of pagemap.bin.lz4 (its runs repeat themselves: 1 GiB of
// random memory's 7.5 KB take 3 KB): high compression's lowest level,
// within 3 % of its highest for pagemaps, at a third of its cost (~4 ms
// more than lz4's fast mode for 20,000 mappings).
constexpr int kPagemapLevel = 4;

// Whether every byte of the page is zero. Most pages that are not give up
// at their first word; a zero page costs one pass, and no hash.
bool is_zero_page(const uint8_t* p) {
  for (size_t i = 0; i < kPageSize; i += 64) {
    uint64_t w[8];
    std::memcpy(w, p + i, sizeof w);
    if ((w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) != 0) return false;
  }
  return true;
}

// Page refs while writing a series checkpoint: pack slot (index in the
// base's pack list, or the new pack after them) in the high bits, unique
// page number in that pack below. commit() turns them into the manifest's
// numbering. For a plain image the slot is 0, so a ref is the page number.
constexpr int kPackShift = 40;
constexpr uint64_t kPageMask = (uint64_t{1} << kPackShift) - 1;

// What add_pages() finds out about a page before it takes the lock.
struct PageFacts {
  bool zero = false;
  Hash128 hash;
  std::optional<uint64_t> earlier;  // series: a ref into the base's packs
};
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
    freed_.set_file(pages_path_);
    start();
  }

  void start() { pipe_ = std::make_unique<BlockPipeline>(mu_, pages_fd_.get(), pages_path_); }

  void set_compression(Compression c) {
    std::lock_guard lock(mu_);
    pipe_->set_compression(c);
  }

  // Before the first page: how many threads will add pages at once (and so
  // how many block buffers there are). Later calls change nothing.
  void set_jobs(unsigned n) {
    std::lock_guard lock(mu_);
    pipe_->set_jobs(n);
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
    remove_leftovers(ckpt_);
    remove_uncommitted(ckpt_);
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
    pipe_.reset();  // waits for writes in flight
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

  void add_pages(pid_t pid, uint64_t mapping_start, uint64_t addr, const uint8_t* data,
                 size_t npages) {
    if (addr % kPageSize || mapping_start % kPageSize || addr < mapping_start)
      throw Error(fmt::format("add_pages(pid {}, mapping {:#x}): address {:#x} is not a page of "
                              "the mapping",
                              pid, mapping_start, addr));
    // A block's worth of pages at a time: the blocks a call completes are
    // compressed (and appended) before it takes more places, so that one
    // call never holds many buffers whose turn to be written comes before
    // those of another thread, which would then wait.
    for (size_t done = 0; done < npages; done += disk::kBlockPages) {
      size_t n = std::min<size_t>(disk::kBlockPages, npages - done);
      add_some(pid, mapping_start, addr + done * kPageSize, data + done * kPageSize, n);
    }
  }

  void add_some(pid_t pid, uint64_t mapping_start, uint64_t addr, const uint8_t* data,
                size_t npages) {
    // Outside the lock, this is most of the per-page work: which pages are
    // zero, the hashes of the others, and (series) which the base stores.
    thread_local std::vector<PageFacts> facts;
    thread_local BlockPipeline::Owed owed;
    owed.copies.clear();
    owed.complete.clear();
    facts.resize(npages);
    for (size_t i = 0; i < npages; ++i) {
      const uint8_t* page = data + i * kPageSize;
      PageFacts& f = facts[i];
      f.zero = is_zero_page(page);
      if (f.zero) continue;
      f.hash = hash_page(page);
      f.earlier = in_base(f.hash);  // pages the base stores: in its sorted indexes
    }

    std::unique_lock lock(mu_);
    check_usable();
    if (pid == kFilePagesPid) stats_.file_pages += npages;
    auto& runs = pagemap_.runs(pid, mapping_start);
    for (size_t i = 0; i < npages; ++i) {
      const uint8_t* page = data + i * kPageSize;
      const uint64_t page_addr = addr + i * kPageSize;
      const PageFacts& f = facts[i];
      ++stats_.pages;
      if (f.zero) {
        ++stats_.zero_pages;
        PagemapBuilder::add(runs, page_addr, disk::kRunZero, 0);
        continue;
      }
      if (f.earlier) {
        ++stats_.earlier_pages;
        PagemapBuilder::add(runs, page_addr, disk::kRunSeq, *f.earlier);
        continue;
      }
      std::optional<uint64_t> known = find(f.hash);
      if (!known && !pipe_->has_room()) {
        // Waiting for a free block buffer: first the copies this call owes
        // and the blocks it completed (a block waiting for them could never
        // be written, nor any after it).
        pipe_->settle(lock, owed);
        pipe_->wait_for_room(lock);
        known = find(f.hash);  // stored by another thread meanwhile?
      }
      if (known) {
        ++stats_.duplicate_pages;
        if (!series_) freed_.shared(*known);
        PagemapBuilder::add(runs, page_addr, disk::kRunSeq, *known);
        continue;
      }
      // A plain image's page takes the place of one forgotten, if any.
      std::optional<uint64_t> place;
      if (!series_) place = freed_.take(page, f.hash);
      const uint64_t ref = place ? *place : (new_slot_ << kPackShift) | pipe_->place(page, owed);
      table_.set(f.hash, ref);  // over an entry whose place another page took
      if (!place) ++stats_.unique_pages;
      PagemapBuilder::add(runs, page_addr, disk::kRunSeq, ref);
    }
    stats_.raw_bytes = stats_.pages * kPageSize;
    pipe_->settle(lock, owed);
  }

  void forget(pid_t pid, uint64_t mapping_start) {
    std::lock_guard lock(mu_);
    PagemapBuilder::Runs gone;
    stats_.pages -= pagemap_.forget(pid, mapping_start, &gone);  // given again, or not at all
    stats_.raw_bytes = stats_.pages * kPageSize;
    free_places(gone);
  }

  void reserve_places(size_t npages) {
    if (series_) return;
    std::lock_guard lock(mu_);
    freed_.reserve(npages);
  }

  void move_pages(pid_t pid, uint64_t from, uint64_t to, const std::vector<ByteRange>& addrs) {
    std::lock_guard lock(mu_);
    pagemap_.move_pages(pid, from, to, addrs);
  }

  void forget_pages(pid_t pid, uint64_t mapping_start, const std::vector<ByteRange>& addrs) {
    std::lock_guard lock(mu_);
    PagemapBuilder::Runs gone;
    const uint64_t n = pagemap_.forget_pages(pid, mapping_start, addrs, &gone);
    stats_.pages -= n;  // given again: counted then
    stats_.raw_bytes = stats_.pages * kPageSize;
    free_places(gone);
  }

  void add_unchanged(pid_t pid, uint64_t mapping_start, uint64_t addr, uint64_t base_addr,
                     size_t npages, bool missing_is_zero) {
    if (!series_)
      throw Error(fmt::format("image {}: add_unchanged() needs a checkpoint series", dir_));
    if (!base_)
      throw Error(fmt::format("series {}: pages of pid {} at {:#x} were reported unchanged, but "
                              "there is no previous checkpoint",
                              ckpt_, pid, addr),
                  "the first checkpoint of a series must store all pages");
    if (addr % kPageSize || base_addr % kPageSize || mapping_start % kPageSize ||
        addr < mapping_start)
      throw Error(fmt::format("add_unchanged(pid {}, mapping {:#x}): address {:#x} is not a page "
                              "of the mapping",
                              pid, mapping_start, addr));
    auto where = base_->locate(pid, base_addr, npages, missing_is_zero);  // throws naming the base
    std::unique_lock lock(mu_);
    check_usable();
    auto& runs = pagemap_.runs(pid, mapping_start);
    for (size_t i = 0; i < npages; ++i) {
      const uint64_t page_addr = addr + i * kPageSize;
      ++stats_.pages;
      if (!where[i]) {
        ++stats_.zero_pages;
        PagemapBuilder::add(runs, page_addr, disk::kRunZero, 0);
        continue;
      }
      ++stats_.earlier_pages;
      ++stats_.unchanged_pages;
      PagemapBuilder::add(runs, page_addr, disk::kRunSeq,
                 (uint64_t{where[i]->pack} << kPackShift) | where[i]->page);
    }
    stats_.raw_bytes = stats_.pages * kPageSize;
  }

  void commit(const Checkpoint& c) {
    StepTimes steps;
    {
      std::unique_lock lock(mu_);
      check_usable();
      spent_ = true;  // from here on a failure leaves the writer unusable
      pages_sum_ = pipe_->finish(lock);
      blocks_ = pipe_->blocks();
      if (!series_) {  // FORMAT.md, version 16
        steps.step("pages");
        if (freed_.taken()) {
          freed_.write(blocks_);
          steps.step("pages written over");
        }
        pages_sum_.xxh3 = blocks_checksum(blocks_);
      } else {
        steps.step("pages");
      }
      stats_.blocks = blocks_.size();
      stats_.raw_blocks = static_cast<uint64_t>(std::ranges::count_if(
          blocks_, [](const Pack::Block& b) { return b.flags & disk::kBlockRaw; }));
      stats_.stored_bytes = pages_sum_.size;
    }
    vlog("{}: {} MiB written{}; {} of {} blocks raw{}{}", pages_path_, pages_sum_.size >> 20,
         pipe_->direct() ? " around the page cache (O_DIRECT)" : "", stats_.raw_blocks,
         stats_.blocks,
         freed_.taken() ? fmt::format("; {} pages written over pages given before and forgotten",
                                      freed_.taken())
                        : "",
         pipe_->skipped() ? fmt::format(" ({} blocks of 64 pages compressible, left raw: the disk "
                                        "kept up)", pipe_->skipped())
                          : "");
    pipe_.reset();
    // The other files are written first and every file fsynced after, at
    // once (one device flush can serve them all).
    SyncAll syncs;
    syncs.add(std::move(pages_fd_), pages_path_);

    Manifest m;
    m.checkpoint = c;
    m.checkpoint.format_version = kFormatVersion;
    if (!series_) {
      m.files[disk::kPagesFile] = pages_sum_;
      m.files[disk::kIndexFile] = write_index(syncs);
      steps.step("index");
      m.files[disk::kPagemapFrameFile] = write_pagemap(m.checkpoint, syncs);
      steps.step("pagemap");
      m.files[disk::kCheckpointFile] = write_checkpoint(m.checkpoint, syncs);
      std::string json = manifest_file_json(m);
      steps.step("json");
      syncs.add(write_unsynced(tmp_ + "/" + disk::kManifestFile, json), tmp_ + "/" + disk::kManifestFile);
      syncs.add(io::open_file(tmp_, O_RDONLY | O_DIRECTORY), tmp_);  // its entries, at the same time
      steps.step("manifest");
      syncs.wait();
      steps.step("fsync");
      install_image(tmp_, dir_, force_);
      steps.step("install");
      vlog("commit: {}", steps.text());
      committed_ = true;
      return;
    }
    commit_series(m, syncs);
  }

  // See "Checkpoint series" in FORMAT.md for the order and why.
  void commit_series(Manifest& m, SyncAll& syncs) {
    FileEntry pack_sum = pages_sum_;
    FileEntry index_sum = write_index(syncs);
    syncs.add(io::open_file(ckpt_ + "/" + kSeriesPacks, O_RDONLY | O_DIRECTORY), ckpt_ + "/" + kSeriesPacks);
    syncs.wait();
    {
      std::lock_guard lock(mu_);
      stats_.new_stored_bytes = pack_sum.size + index_sum.size;
    }

    // The packs the pagemap refers to, base packs first, and their place in
    // the manifest's page numbering.
    std::set<uint64_t> used;
    pagemap_.for_each_stored([&](const disk::PagemapRun& r) { used.insert(r.ref >> kPackShift); });
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
    pagemap_.for_each_stored([&](disk::PagemapRun& r) {
      r.ref = first_ref.at(r.ref >> kPackShift) + (r.ref & kPageMask);
    });

    m.checkpoint.series_number = number_;
    m.series = SeriesFacts{table_.size(), stats_.earlier_pages, stats_.unchanged_pages};
    m.files[disk::kPagemapFrameFile] = write_pagemap(m.checkpoint, syncs);
    m.files[disk::kCheckpointFile] = write_checkpoint(m.checkpoint, syncs);
    std::string json = manifest_file_json(m);
    syncs.add(write_unsynced(tmp_ + "/" + disk::kManifestFile, json), tmp_ + "/" + disk::kManifestFile);
    syncs.add(io::open_file(tmp_, O_RDONLY | O_DIRECTORY), tmp_);
    syncs.wait();

    if (::rename(tmp_.c_str(), dir_.c_str()) < 0)
      throw SysError(fmt::format("rename({}, {})", tmp_, dir_), errno);
    installed_ = true;  // the new pack belongs to CKPT/N now
    committed_ = true;
    io::fsync_dir(ckpt_);
    switch_latest(ckpt_, number_);
    collect_garbage(ckpt_, opts_.keep, number_);
  }

  ImageStats stats() const {
    std::lock_guard lock(mu_);
    ImageStats s = stats_;
    if (pipe_) s.stored_bytes = pipe_->stored_bytes();
    return s;
  }

  std::string dir_;
  std::string tmp_;
  uint64_t number_ = 0;  // series: N
  std::optional<uint64_t> base_number_;  // series: the checkpoint add_unchanged refers to
  const Checkpoint* base_checkpoint() const { return base_ ? &base_->checkpoint() : nullptr; }

 private:
  std::optional<uint64_t> in_base(const Hash128& h) const {
    if (!base_) return std::nullopt;
    XXH128_canonical_t canon;
    XXH128_canonicalFromHash(&canon, XXH128_hash_t{h.lo, h.hi});
    auto sp = base_->find_stored(canon.digest);
    if (!sp) return std::nullopt;
    return (uint64_t{sp->pack} << kPackShift) | sp->page;
  }

  // The page `h` is stored as, if any (a plain image's place that another
  // page took since is not it).
  std::optional<uint64_t> find(const Hash128& h) const {
    std::optional<uint64_t> ref = table_.find(h);
    if (ref && !series_ && freed_.stale(*ref, h)) ref.reset();
    return ref;
  }

  // Pages of `runs` forgotten: a plain image's places that pages given
  // later may take (FreedPlaces).
  void free_places(const PagemapBuilder::Runs& runs) {
    if (series_) return;
    for (const auto& r : runs)
      if (r.kind == disk::kRunSeq)
        for (uint64_t u = r.ref; u < r.ref + r.npages; ++u) freed_.freed(u, pipe_->written_raw(u));
  }

  void check_usable() {
    if (spent_) throw Error(fmt::format("image {}: writer already committed", dir_));
    pipe_->rethrow_if_failed();
  }

  // A series pack's index has the page hashes (later checkpoints find its
  // pages by them); a plain image's has its block table only.
  io::FileSum write_index(SyncAll& syncs) {
    // The table's own entries, sorted where they are, are turned into
    // IndexPage7 records in place (the same 24 bytes each). The canonical
    // form is big-endian high then low: memcmp order is the order of
    // (hi, lo) as numbers.
    static_assert(sizeof(PageTable::Sorted) == sizeof(disk::IndexPage7));
    std::span<PageTable::Sorted> sorted;
    if (series_) sorted = table_.sorted_in_place();
    auto* pages = reinterpret_cast<disk::IndexPage7*>(sorted.data());
    for (size_t i = 0; i < sorted.size(); ++i) {
      PageTable::Sorted x = sorted[i];
      disk::IndexPage7 e{};
      XXH128_canonical_t canon;
      XXH128_canonicalFromHash(&canon, XXH128_hash_t{x.lo, x.hi});
      std::memcpy(e.hash, canon.digest, sizeof canon.digest);
      e.page = x.ref & kPageMask;
      std::memcpy(&pages[i], &e, sizeof e);
    }
    disk::IndexHeader h{};
    std::memcpy(h.magic, series_ ? disk::kIndex7Magic : disk::kIndex7BlocksMagic, sizeof h.magic);
    h.page_size = kPageSize;
    h.block_pages = disk::kBlockPages;
    h.nblocks = blocks_.size();
    // (A plain image's table may hold hashes of pages whose places others
    // took: FreedPlaces.)
    h.npages = 0;
    for (const Pack::Block& b : blocks_) h.npages += b.npages;
    std::vector<disk::IndexBlock7> table;
    table.reserve(blocks_.size());
    for (const Pack::Block& b : blocks_)
      table.push_back({b.offset, b.checksum, b.stored_len, static_cast<uint16_t>(b.npages),
                       b.flags});
    const size_t blocks_bytes = table.size() * sizeof(disk::IndexBlock7);
    const size_t pages_bytes = sorted.size() * sizeof(disk::IndexPage7);
    ScopedFd fd = io::open_file(index_path_, O_WRONLY | O_CREAT | O_EXCL);
    io::write_all(fd.get(), &h, sizeof h, index_path_);
    io::write_all(fd.get(), table.data(), blocks_bytes, index_path_);
    io::write_all(fd.get(), pages, pages_bytes, index_path_);
    syncs.add(std::move(fd), index_path_);
    std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> st(XXH3_createState(), &XXH3_freeState);
    if (!st) throw std::bad_alloc();
    XXH3_64bits_reset(st.get());
    XXH3_64bits_update(st.get(), &h, sizeof h);
    XXH3_64bits_update(st.get(), table.data(), blocks_bytes);
    XXH3_64bits_update(st.get(), pages, pages_bytes);
    return {sizeof h + blocks_bytes + pages_bytes, XXH3_64bits_digest(st.get())};
  }

  // tmp_/checkpoint.json.lz4, unsynced (syncs will).
  io::FileSum write_checkpoint(const Checkpoint& c, SyncAll& syncs) {
    const std::string file = tmp_ + "/" + disk::kCheckpointFile;
    std::string frame = compress_checkpoint(c);
    syncs.add(write_unsynced(file, frame), file);
    return io::sum_bytes(frame.data(), frame.size());
  }

  // pagemap.bin.lz4. Also fills in Mapping::pages_dumped of `c`.
  io::FileSum write_pagemap(Checkpoint& c, SyncAll& syncs) {
    std::vector<uint8_t> buf = pagemap_.serialize(c);
    std::string frame = lz4_frame({reinterpret_cast<const char*>(buf.data()), buf.size()},
                                  kPagemapLevel);
    const std::string file = tmp_ + "/" + disk::kPagemapFrameFile;
    syncs.add(write_unsynced(file, frame), file);
    return io::sum_bytes(frame.data(), frame.size());
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


  // Guards what follows up to pages_sum_, and the pipeline (which shares
  // it: block_pipeline.h).
  mutable std::mutex mu_;
  std::unique_ptr<BlockPipeline> pipe_;  // pages.bin (or the pack) as it is written
  PageTable table_;                      // hash -> ref, of the pages this image stores
  PagemapBuilder pagemap_;
  FreedPlaces freed_;                    // plain images only
  ImageStats stats_;
  bool spent_ = false, committed_ = false;

  // Once committed: pages.bin's size and checksum, and its blocks.
  io::FileSum pages_sum_;
  std::vector<Pack::Block> blocks_;
};

ImageWriter ImageWriter::create(const std::string& dir, bool force) {
  return ImageWriter(std::make_unique<Impl>(dir, force));
}

ImageWriter ImageWriter::create_in_series(const std::string& ckpt_dir, SeriesOptions opts) {
  return ImageWriter(std::make_unique<Impl>(ckpt_dir, opts));
}

void ImageWriter::add_unchanged(pid_t pid, uint64_t mapping_start, uint64_t addr,
                                size_t npages, bool missing_is_zero) {
  impl_->add_unchanged(pid, mapping_start, addr, addr, npages, missing_is_zero);
}
void ImageWriter::add_earlier(pid_t pid, uint64_t mapping_start, uint64_t addr,
                              uint64_t base_addr, size_t npages) {
  impl_->add_unchanged(pid, mapping_start, addr, base_addr, npages, true);
}
const Checkpoint* ImageWriter::base_checkpoint() const {
  return impl_->base_checkpoint();
}
void ImageWriter::forget(pid_t pid, uint64_t mapping_start) { impl_->forget(pid, mapping_start); }
void ImageWriter::forget_pages(pid_t pid, uint64_t mapping_start,
                               const std::vector<ByteRange>& addrs) {
  impl_->forget_pages(pid, mapping_start, addrs);
}
void ImageWriter::reserve_places(size_t npages) { impl_->reserve_places(npages); }
void ImageWriter::move_pages(pid_t pid, uint64_t from, uint64_t to,
                             const std::vector<ByteRange>& addrs) {
  impl_->move_pages(pid, from, to, addrs);
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
void ImageWriter::set_jobs(unsigned n) { impl_->set_jobs(n); }
void ImageWriter::set_compression(Compression c) { impl_->set_compression(c); }
ImageStats ImageWriter::stats() const { return impl_->stats(); }
const std::string& ImageWriter::dir() const { return impl_->dir_; }
const std::string& ImageWriter::temp_dir() const { return impl_->tmp_; }

}  // namespace snap::image
