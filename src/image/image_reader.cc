#include "image/image_reader.h"

#include <fcntl.h>
#include <lz4.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <map>
#include <utility>
#include <vector>

#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "image/file_io.h"
#include "image/format.h"
#include "image/lz4_frame.h"
#include "image/manifest.h"
#include "image/manifest_file.h"
#include "image/pack.h"
#include "image/pagemap_builder.h"
#include "image/series.h"

namespace snap::image {

namespace {

constexpr const char* kDamaged = kDamagedHint;
constexpr size_t kCachedBlocks = 4;
// The most bytes one block takes in a data file, header included.
constexpr size_t kMaxBlockBytes =
    sizeof(disk::BlockHeader) +
    std::max<size_t>(disk::kRawBlockBytes, LZ4_COMPRESSBOUND(disk::kBlockRawBytes));

template <typename T>
T read_record(const std::string& buf, size_t& off) {
  T t;
  std::memcpy(&t, buf.data() + off, sizeof t);
  off += sizeof t;
  return t;
}

}  // namespace

class ImageReader::Impl {
 public:
  explicit Impl(std::string dir) : dir_(std::move(dir)) {
    while (dir_.size() > 1 && dir_.back() == '/') dir_.pop_back();
    std::string manifest_path = path(disk::kManifestFile);
    if (::access(manifest_path.c_str(), F_OK) < 0 && errno == ENOENT)
      throw Error(fmt::format("{} is not a snap image: it has no {}", dir_, disk::kManifestFile),
                  "an interrupted dump leaves no image; dump again");
    Manifest m = read_manifest(dir_);
    checkpoint_ = std::move(m.checkpoint);
    files_ = std::move(m.files);
    series_ = m.series;
    if (m.packs.empty()) {
      for (const char* name : {disk::kPagesFile, disk::kIndexFile})
        if (!files_.count(name))
          throw Error(fmt::format("{}: manifest.json lists no {}", dir_, name), kDamaged);
      Pack& p = packs_.emplace_back();
      p.data_path = path(disk::kPagesFile);
      p.index_path = path(disk::kIndexFile);
      p.data = files_.at(disk::kPagesFile);
      p.index = files_.at(disk::kIndexFile);
    } else {
      std::string packs_dir = parent_dir() + "/" + kSeriesPacks;
      for (const auto& e : m.packs) {
        Pack& p = packs_.emplace_back();
        p.name = e.name;
        p.data_path = packs_dir + "/" + e.name + ".pack";
        p.index_path = packs_dir + "/" + e.name + ".idx";
        p.data = e.data;
        p.index = e.index;
      }
    }
    pagemap_file_ = files_.count(disk::kPagemapFrameFile) ? disk::kPagemapFrameFile
                                                          : disk::kPagemapFile;
    if (!files_.count(pagemap_file_))
      throw Error(fmt::format("{}: manifest.json lists no {}", dir_, disk::kPagemapFrameFile),
                  kDamaged);
    for (const auto& [name, entry] : files_) check_size(path(name), entry);
    for (auto& p : packs_) {
      check_size(p.data_path, p.data);
      check_size(p.index_path, p.index);
    }
    for (auto& p : packs_) {
      p.base = total_pages_;
      load_index(p, io::read_checked(p.index_path, p.index));
      total_pages_ += p.npages;
    }
    load_pagemap(read_pagemap());
    for (auto& p : packs_) p.fd = io::open_file(p.data_path, O_RDONLY);
    stored_buf_ = std::make_unique_for_overwrite<uint8_t[]>(kMaxBlockBytes);
  }

  bool in_series() const { return !packs_.front().name.empty(); }

  std::vector<ImageReader::PackFiles> packs() const {
    std::vector<ImageReader::PackFiles> v;
    for (const auto& p : packs_)
      v.push_back({p.name, p.data_path, p.index_path, p.data.size, p.index.size, p.data.xxh3,
                   p.index.xxh3, p.npages});
    return v;
  }

  void for_each_stored_page(
      const std::function<void(const uint8_t*, const ImageReader::StoredPage&)>& fn) const {
    for (uint32_t i = 0; i < packs_.size(); ++i)
      for (const auto& e : packs_[i].pages) fn(e.hash, {i, e.page});
  }

  std::optional<ImageReader::StoredPage> find_stored(const uint8_t* hash16) const {
    for (uint32_t i = 0; i < packs_.size(); ++i) {
      const auto& pages = packs_[i].pages;
      auto it = std::lower_bound(pages.begin(), pages.end(), hash16,
                                 [](const disk::IndexPage7& e, const uint8_t* h) {
                                   return std::memcmp(e.hash, h, sizeof e.hash) < 0;
                                 });
      if (it != pages.end() && std::memcmp(it->hash, hash16, sizeof it->hash) == 0)
        return ImageReader::StoredPage{i, it->page};
    }
    return std::nullopt;
  }

  std::vector<std::optional<ImageReader::StoredPage>> locate(pid_t pid, uint64_t addr,
                                                             size_t npages,
                                                             bool missing_is_zero) const {
    std::vector<std::optional<ImageReader::StoredPage>> out;
    out.reserve(npages);
    for (size_t i = 0; i < npages; ++i) {
      uint64_t a = addr + i * kPageSize;
      const disk::PagemapRun* run = nullptr;
      // The mapping holding `a` is the last one of pid starting at or below it.
      auto t = tables_.upper_bound({pid, a});
      if (t != tables_.begin() && (--t)->first.first == pid) {
        const auto& runs = t->second;
        auto r = std::upper_bound(runs.begin(), runs.end(), a,
                                  [](uint64_t x, const disk::PagemapRun& r) { return x < r.addr; });
        if (r != runs.begin() && a < (--r)->addr + uint64_t{r->npages} * kPageSize) run = &*r;
      }
      if (!run && missing_is_zero) {
        out.emplace_back(std::nullopt);
        continue;
      }
      if (!run)
        throw Error(fmt::format("checkpoint {}: pid {} has no page at {:#x}", dir_, pid, a),
                    "pages reported unchanged must have been dumped in the previous checkpoint");
      if (run->kind == disk::kRunZero) {
        out.emplace_back(std::nullopt);
        continue;
      }
      uint64_t ref = run->kind == disk::kRunSeq ? run->ref + (a - run->addr) / kPageSize : run->ref;
      const Pack& p = pack_of(ref);
      out.emplace_back(ImageReader::StoredPage{static_cast<uint32_t>(&p - packs_.data()),
                                               ref - p.base});
    }
    return out;
  }

  ImageStats stats() const {
    ImageStats s;
    std::vector<uint64_t> refs;
    for (const auto& p : packs_) {
      s.blocks += p.blocks.size();
      for (const auto& b : p.blocks) s.raw_blocks += (b.flags & disk::kBlockRaw) ? 1 : 0;
      s.stored_bytes += p.data.size;
    }
    for (const auto& [key, runs] : tables_)
      for (const auto& r : runs) {
        s.pages += r.npages;
        if (key.first == kFilePagesPid) s.file_pages += r.npages;
        if (r.kind == disk::kRunZero) s.zero_pages += r.npages;
        else if (r.kind == disk::kRunRepeat) refs.push_back(r.ref);
        else for (uint32_t i = 0; i < r.npages; ++i) refs.push_back(r.ref + i);
      }
    // Unique pages: those the pagemap refers to (a pack of a series may
    // hold pages only other checkpoints use).
    std::sort(refs.begin(), refs.end());
    s.unique_pages = static_cast<uint64_t>(std::unique(refs.begin(), refs.end()) - refs.begin());
    s.duplicate_pages = s.pages - s.zero_pages - s.unique_pages;
    s.raw_bytes = s.pages * kPageSize;
    if (series_) {
      s.earlier_pages = series_->earlier_pages;
      s.unchanged_pages = series_->unchanged_pages;
      s.new_stored_bytes = packs_.back().data.size + packs_.back().index.size;
    } else {
      s.new_stored_bytes = s.stored_bytes;
    }
    return s;
  }

  void verify_all() {
    for (auto& p : packs_) {
      // Every block is read (its checksum and length checked); its pages
      // are checked against their hashes where the index has them.
      std::vector<const disk::IndexPage7*> by_number(p.pages.size());
      for (const auto& e : p.pages) by_number[e.page] = &e;
      for (uint64_t b = 0; b < p.blocks.size(); ++b) {
        const uint8_t* raw = read_block(p, b, raw_buf());
        for (uint32_t slot = 0; !p.pages.empty() && slot < p.blocks[b].npages; ++slot) {
          XXH128_canonical_t canon;
          XXH128_canonicalFromHash(&canon, XXH3_128bits(raw + size_t{slot} * kPageSize, kPageSize));
          const auto* entry = by_number[p.first_page[b] + slot];
          if (std::memcmp(canon.digest, entry->hash, sizeof canon.digest) != 0)
            throw Error(fmt::format("{}: block {} (offset {}): page {} does not match its hash in {}",
                                    p.data_path, b, p.blocks[b].offset, slot, p.index_path),
                        kDamaged);
        }
      }
      // (From version 16 a plain image's is that of its blocks: checked on open.)
      if (!sums_blocks(p)) io::check_sum(p.data_path, p.data, io::sum_file(p.data_path));
    }
  }

  // Whether the manifest's checksum of `p`'s data is blocks_checksum (a
  // plain image from version 16) rather than the file's own.
  bool sums_blocks(const Pack& p) const {
    return p.name.empty() && checkpoint_.format_version >= 16;
  }

  void for_each_run(pid_t pid, uint64_t mapping_start,
                    const std::function<void(const PageRun&)>& fn) {
    auto it = tables_.find({pid, mapping_start});
    if (it == tables_.end()) return;
    if (!run_buf_) run_buf_ = std::make_unique_for_overwrite<uint8_t[]>(kMaxRunPages * kPageSize);
    // Non-zero pages gather in run_buf_ while their addresses are consecutive.
    uint64_t run_addr = 0;
    size_t run_pages = 0;
    auto flush = [&] {
      if (run_pages) fn(PageRun{run_addr, run_pages, run_buf_.get()});
      run_pages = 0;
    };
    for (const auto& r : it->second) {
      if (r.kind == disk::kRunZero) {
        flush();
        fn(PageRun{r.addr, r.npages, nullptr});
        continue;
      }
      for (uint32_t i = 0; i < r.npages; ++i) {
        uint64_t addr = r.addr + uint64_t{i} * kPageSize;
        if (run_pages && (run_addr + run_pages * kPageSize != addr || run_pages == kMaxRunPages))
          flush();
        if (!run_pages) run_addr = addr;
        uint64_t ref = r.kind == disk::kRunSeq ? r.ref + i : r.ref;
        Pack& p = pack_of(ref);
        auto [b, slot] = p.where(ref - p.base);
        const uint8_t* block = cached_block(p, b);
        std::memcpy(run_buf_.get() + run_pages * kPageSize, block + size_t{slot} * kPageSize,
                    kPageSize);
        ++run_pages;
      }
    }
    flush();
  }

  void for_each_piece(pid_t pid, uint64_t mapping_start,
                      const std::function<void(const PagePiece&)>& fn) const {
    auto it = tables_.find({pid, mapping_start});
    if (it == tables_.end()) return;
    for (const auto& r : it->second) {
      if (r.kind == disk::kRunZero) {
        fn(PagePiece{r.addr, r.npages, PagePiece::kZero, 0, {}});
        continue;
      }
      if (r.kind == disk::kRunRepeat) {
        const Pack& p = pack_of(r.ref);
        auto [b, slot] = p.where(r.ref - p.base);
        fn(PagePiece{r.addr, r.npages, PagePiece::kRepeat, slot, {pack_index(p), b}});
        continue;
      }
      // A sequence: one piece per block (and per pack) it crosses.
      for (uint32_t i = 0; i < r.npages;) {
        uint64_t ref = r.ref + i;
        const Pack& p = pack_of(ref);
        auto [b, slot] = p.where(ref - p.base);
        uint64_t n = std::min<uint64_t>({r.npages - i, uint64_t{p.blocks[b].npages} - slot,
                                         p.base + p.npages - ref});
        fn(PagePiece{r.addr + uint64_t{i} * kPageSize, static_cast<uint32_t>(n), PagePiece::kSeq,
                     slot, {pack_index(p), b}});
        i += static_cast<uint32_t>(n);
      }
    }
  }

  const Pack& pack(uint32_t i) const { return packs_.at(i); }

  std::string dir_;
  Checkpoint checkpoint_;
  std::optional<SeriesFacts> series_;

 private:
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  std::string parent_dir() const {
    auto slash = dir_.rfind('/');
    if (slash == std::string::npos) return ".";
    return slash == 0 ? "/" : dir_.substr(0, slash);
  }

  [[noreturn]] void damaged(const std::string& file, const std::string& what) const {
    throw Error(fmt::format("{}: {}", file, what), kDamaged);
  }

  static void check_size(const std::string& file, const FileEntry& entry) {
    struct stat st;
    if (::stat(file.c_str(), &st) < 0) throw SysError(fmt::format("stat({})", file), errno, kDamaged);
    if (static_cast<uint64_t>(st.st_size) != entry.size)
      throw Error(fmt::format("{}: size is {} bytes, manifest.json says {}", file, st.st_size,
                              entry.size),
                  kDamaged);
  }

  Pack& pack_of(uint64_t ref) {
    return const_cast<Pack&>(static_cast<const Impl*>(this)->pack_of(ref));
  }
  const Pack& pack_of(uint64_t ref) const {
    auto it = std::upper_bound(packs_.begin(), packs_.end(), ref,
                               [](uint64_t r, const Pack& p) { return r < p.base; });
    return *--it;  // refs are checked against total_pages_ on open
  }

  uint32_t pack_index(const Pack& p) const { return static_cast<uint32_t>(&p - packs_.data()); }

  void load_index(Pack& pk, const std::string& buf) {
    const std::string& f = pk.index_path;
    if (buf.size() < sizeof(disk::IndexHeader)) damaged(f, "truncated header");
    size_t off = 0;
    auto h = read_record<disk::IndexHeader>(buf, off);
    auto magic_is = [&](const char* m) { return std::memcmp(h.magic, m, sizeof h.magic) == 0; };
    const bool v7 = magic_is(disk::kIndex7Magic) || magic_is(disk::kIndex7BlocksMagic);
    const bool hashes = magic_is(disk::kIndexMagic) || magic_is(disk::kIndex7Magic);
    if (!v7 && !hashes && !magic_is(disk::kIndexBlocksMagic)) damaged(f, "bad magic");
    if (!hashes && in_series()) damaged(f, "a series pack without page hashes");
    if (h.page_size != kPageSize || h.block_pages != disk::kBlockPages)
      damaged(f, fmt::format("page size {} / block pages {} unsupported", h.page_size,
                             h.block_pages));
    const size_t entry = v7 ? sizeof(disk::IndexBlock7) : sizeof(disk::IndexBlock);
    static_assert(sizeof(disk::IndexPage) == sizeof(disk::IndexPage7));
    if (h.nblocks > buf.size() || h.npages > h.nblocks * disk::kRawBlockPages ||
        buf.size() != sizeof h + h.nblocks * entry + (hashes ? h.npages * sizeof(disk::IndexPage7) : 0))
      damaged(f, "size does not match its header");
    pk.npages = h.npages;
    pk.headers = !v7;
    uint64_t file_off = 0, pages = 0;
    for (uint64_t b = 0; b < h.nblocks; ++b) {
      Pack::Block e;
      if (v7) {
        auto d = read_record<disk::IndexBlock7>(buf, off);
        e = {d.offset, d.checksum, d.stored_len, d.npages, d.flags};
      } else {
        auto d = read_record<disk::IndexBlock>(buf, off);
        e = {d.offset, 0, d.stored_len, d.npages, d.flags};
      }
      // Up to version 6 every block but the last holds kBlockPages; from 7
      // a raw block holds up to kRawBlockPages, a compressed one up to
      // kBlockPages, both stored within the bounds their buffers have.
      const bool raw = e.flags & disk::kBlockRaw;
      const uint32_t most = v7 && raw ? disk::kRawBlockPages : disk::kBlockPages;
      bool ok = e.offset == file_off && e.npages > 0 && e.npages <= most &&
                !(e.flags & ~(disk::kBlockRaw | (v7 && raw ? disk::kBlockPageSums : 0))) &&
                (raw ? e.stored_len == uint64_t{e.npages} * kPageSize
                     : e.stored_len <= static_cast<uint32_t>(LZ4_compressBound(int{disk::kBlockRawBytes})));
      if (!v7 && b + 1 < h.nblocks && e.npages != disk::kBlockPages) ok = false;
      if (!ok) damaged(f, fmt::format("block {}: entry inconsistent", b));
      pk.first_page.push_back(pages);
      file_off += pk.header_bytes() + e.stored_len;
      pages += e.npages;
      pk.blocks.push_back(e);
    }
    if (pages != h.npages) damaged(f, "page count does not match its blocks");
    if (file_off != pk.data.size)
      damaged(f, fmt::format("blocks end at {}, {} has {} bytes", file_off, pk.data_path,
                             pk.data.size));
    if (sums_blocks(pk) && blocks_checksum(pk.blocks) != pk.data.xxh3)
      damaged(f, fmt::format("the checksums of its blocks do not match that of {} in {}",
                             pk.data_path, disk::kManifestFile));
    if (!hashes) return;
    // Version 6 entries (block, slot) become unique page numbers.
    auto& index = pk.pages;
    index.resize(h.npages);
    std::memcpy(index.data(), buf.data() + off, h.npages * sizeof(disk::IndexPage7));
    std::vector<bool> seen(h.npages);
    for (size_t i = 0; i < index.size(); ++i) {
      auto& p = index[i];
      if (!v7) {
        disk::IndexPage old;
        std::memcpy(&old, &p, sizeof old);
        p.page = old.slot < disk::kBlockPages ? old.block * uint64_t{disk::kBlockPages} + old.slot
                                              : UINT64_MAX;
      }
      if (p.page >= h.npages || seen[p.page] ||
          (i && std::memcmp(index[i - 1].hash, p.hash, sizeof p.hash) >= 0))
        damaged(f, fmt::format("page entry {}: out of order or out of range", i));
      seen[p.page] = true;
    }
  }

  // The pagemap, decompressed where it is pagemap.bin.lz4 (version 7).
  std::string read_pagemap() const {
    const std::string f = path(pagemap_file_);
    std::string bytes = io::read_checked(f, files_.at(pagemap_file_));
    if (pagemap_file_ == disk::kPagemapFile) return bytes;
    // No more than a table per mapping and a run per page.
    uint64_t most = sizeof(disk::PagemapHeader);
    for (const auto& [key, r] : paged_ranges(checkpoint_))
      most += sizeof(disk::PagemapTable) + (r.end - r.start) / kPageSize * sizeof(disk::PagemapRun);
    return lz4_unframe(f, bytes, most, kDamaged);
  }

  void load_pagemap(const std::string& buf) {
    const std::string f = path(pagemap_file_);
    if (buf.size() < sizeof(disk::PagemapHeader)) damaged(f, "truncated header");
    size_t off = 0;
    auto h = read_record<disk::PagemapHeader>(buf, off);
    if (std::memcmp(h.magic, disk::kPagemapMagic, sizeof h.magic) != 0) damaged(f, "bad magic");
    // Every mapping (and stored file) by (pid, start): a table per mapping
    // is looked up once.
    const auto ranges = paged_ranges(checkpoint_);
    for (uint64_t t = 0; t < h.ntables; ++t) {
      if (buf.size() - off < sizeof(disk::PagemapTable)) damaged(f, "truncated");
      auto table = read_record<disk::PagemapTable>(buf, off);
      auto found = ranges.find({table.pid, table.mapping_start});
      const PagedRange* m = found == ranges.end() ? nullptr : &found->second;
      if (!m)
        damaged(f, fmt::format("pid {} mapping {:#x} is not in the checkpoint", table.pid,
                               table.mapping_start));
      if ((buf.size() - off) / sizeof(disk::PagemapRun) < table.nruns) damaged(f, "truncated");
      auto& runs = tables_[{table.pid, table.mapping_start}];
      runs.resize(table.nruns);
      std::memcpy(runs.data(), buf.data() + off, table.nruns * sizeof(disk::PagemapRun));
      off += table.nruns * sizeof(disk::PagemapRun);
      uint64_t end = m->start;
      for (const auto& r : runs) {
        bool ok = r.addr >= end && r.addr % kPageSize == 0 && r.npages > 0 &&
                  r.addr + uint64_t{r.npages} * kPageSize <= m->end;
        if (r.kind == disk::kRunSeq) ok = ok && r.ref + r.npages <= total_pages_;
        else if (r.kind == disk::kRunRepeat) ok = ok && r.ref < total_pages_;
        else if (r.kind != disk::kRunZero) ok = false;
        if (!ok)
          damaged(f, fmt::format("pid {} mapping {:#x}: run at {:#x} is invalid", table.pid,
                                 table.mapping_start, r.addr));
        end = r.addr + uint64_t{r.npages} * kPageSize;
      }
    }
    if (off != buf.size()) damaged(f, "trailing bytes");
  }

  uint8_t* raw_buf() {
    if (!verify_buf_) verify_buf_ = std::make_unique_for_overwrite<uint8_t[]>(disk::kRawBlockBytes);
    return verify_buf_.get();
  }

  // Reads block b into out (kRawBlockBytes) after checking it; returns out.
  const uint8_t* read_block(Pack& pk, uint64_t b, uint8_t* out) {
    // As much as the index promises; decode_block checks the rest.
    io::pread_exact(pk.fd.get(), stored_buf_.get(), pk.block_bytes(b),
                    static_cast<off_t>(pk.blocks[b].offset), pk.data_path);
    const uint8_t* pages = decode_block(pk, b, stored_buf_.get(), out);
    if (pages != out) std::memcpy(out, pages, size_t{pk.blocks[b].npages} * kPageSize);
    return out;
  }

  // A few decompressed blocks, least recently used replaced first.
  struct CachedBlock {
    uint64_t block = UINT64_MAX;
    uint64_t last_use = 0;
    std::unique_ptr<uint8_t[]> data;
  };

  const uint8_t* cached_block(Pack& pk, uint64_t block) {
    const uint64_t b = (static_cast<uint64_t>(&pk - packs_.data()) << 40) | block;
    CachedBlock* victim = &cache_[0];
    for (auto& c : cache_) {
      if (c.block == b) {
        c.last_use = ++clock_;
        return c.data.get();
      }
      if (c.last_use < victim->last_use) victim = &c;
    }
    if (!victim->data) victim->data = std::make_unique_for_overwrite<uint8_t[]>(disk::kRawBlockBytes);
    victim->block = UINT64_MAX;  // in case reading throws
    read_block(pk, block, victim->data.get());
    victim->block = b;
    victim->last_use = ++clock_;
    return victim->data.get();
  }

  std::map<std::string, FileEntry> files_;
  const char* pagemap_file_ = disk::kPagemapFrameFile;
  std::vector<Pack> packs_;  // plain image: one, pages.bin + pages.idx
  uint64_t total_pages_ = 0;  // unique pages of all packs
  std::map<std::pair<pid_t, uint64_t>, std::vector<disk::PagemapRun>> tables_;
  std::unique_ptr<uint8_t[]> stored_buf_, verify_buf_, run_buf_;
  std::array<CachedBlock, kCachedBlocks> cache_;
  uint64_t clock_ = 0;
};

// The latest good checkpoint of series `ckpt`: the one `latest` names or,
// where that one fails to open, the newest older one that opens.
std::unique_ptr<ImageReader::Impl> ImageReader::open_series(const std::string& ckpt) {
  std::vector<uint64_t> numbers = series_numbers(ckpt);
  std::optional<uint64_t> latest = series_latest(ckpt);
  if (!latest)
    warn("series {}: `{}` names no checkpoint; looking for the newest good one", ckpt,
         kSeriesLatest);
  std::string failures;
  for (auto it = numbers.rbegin(); it != numbers.rend(); ++it) {
    if (latest && *it > *latest) continue;  // committed after `latest` was: not yet valid
    std::string dir = fmt::format("{}/{}", ckpt, *it);
    try {
      return std::make_unique<ImageReader::Impl>(dir);
    } catch (const Error& e) {
      warn("checkpoint {} is incomplete or damaged ({}); falling back to the previous one", dir,
           e.what());
      failures += fmt::format("\n  {}: {}", dir, e.what());
    }
  }
  throw Error(fmt::format("series {} holds no complete checkpoint{}", ckpt, failures),
              "no checkpoint of this series can be restored; start the job again");
}

ImageReader ImageReader::open(const std::string& path) {
  if (::access((path + "/" + disk::kManifestFile).c_str(), F_OK) < 0 && is_series_dir(path))
    return ImageReader(open_series(path));
  return ImageReader(std::make_unique<Impl>(path));
}

ImageReader::ImageReader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ImageReader::ImageReader(ImageReader&&) noexcept = default;
ImageReader& ImageReader::operator=(ImageReader&&) noexcept = default;
ImageReader::~ImageReader() = default;

const Checkpoint& ImageReader::checkpoint() const { return impl_->checkpoint_; }
ImageStats ImageReader::stats() const { return impl_->stats(); }
const std::string& ImageReader::dir() const { return impl_->dir_; }
void ImageReader::verify_all() { impl_->verify_all(); }
bool ImageReader::in_series() const { return impl_->in_series(); }
const std::optional<SeriesFacts>& ImageReader::series_facts() const { return impl_->series_; }
std::vector<ImageReader::PackFiles> ImageReader::packs() const { return impl_->packs(); }
void ImageReader::for_each_stored_page(
    const std::function<void(const uint8_t* hash16, const StoredPage&)>& fn) const {
  impl_->for_each_stored_page(fn);
}
std::optional<ImageReader::StoredPage> ImageReader::find_stored(const uint8_t* hash16) const {
  return impl_->find_stored(hash16);
}
std::vector<std::optional<ImageReader::StoredPage>> ImageReader::locate(pid_t pid, uint64_t addr,
                                                                        size_t npages,
                                                                        bool missing_is_zero) const {
  return impl_->locate(pid, addr, npages, missing_is_zero);
}
void ImageReader::for_each_run(pid_t pid, uint64_t mapping_start,
                               const std::function<void(const PageRun&)>& fn) {
  impl_->for_each_run(pid, mapping_start, fn);
}
void ImageReader::for_each_piece(pid_t pid, uint64_t mapping_start,
                                 const std::function<void(const PagePiece&)>& fn) const {
  impl_->for_each_piece(pid, mapping_start, fn);
}
const Pack& ImageReader::pack(uint32_t i) const { return impl_->pack(i); }

}  // namespace snap::image
