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
#include "image/file_io.h"
#include "image/format.h"
#include "image/manifest.h"

namespace snap::image {

namespace {

constexpr const char* kDamaged = "the image is damaged; it cannot be restored";
constexpr size_t kCachedBlocks = 4;

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
    std::string manifest_path = path(disk::kManifestFile);
    if (::access(manifest_path.c_str(), F_OK) < 0 && errno == ENOENT)
      throw Error(fmt::format("{} is not a snap image: it has no {}", dir_, disk::kManifestFile),
                  "an interrupted dump leaves no image; dump again");
    Manifest m = manifest_from_json(io::read_file(manifest_path));
    checkpoint_ = std::move(m.checkpoint);
    files_ = std::move(m.files);
    for (const char* name : {disk::kPagesFile, disk::kIndexFile, disk::kPagemapFile})
      if (!files_.count(name))
        throw Error(fmt::format("{}: manifest.json lists no {}", dir_, name), kDamaged);
    for (const auto& [name, entry] : files_) {
      struct stat st;
      if (::stat(path(name).c_str(), &st) < 0)
        throw SysError(fmt::format("stat({})", path(name)), errno, kDamaged);
      if (static_cast<uint64_t>(st.st_size) != entry.size)
        throw Error(fmt::format("{}: size is {} bytes, manifest.json says {}", path(name),
                                st.st_size, entry.size),
                    kDamaged);
    }
    load_index(read_checked(disk::kIndexFile));
    load_pagemap(read_checked(disk::kPagemapFile));
    pages_fd_ = io::open_file(path(disk::kPagesFile), O_RDONLY);
    stored_buf_ = std::make_unique_for_overwrite<uint8_t[]>(
        static_cast<size_t>(LZ4_compressBound(static_cast<int>(disk::kBlockRawBytes))));
  }

  ImageStats stats() const {
    ImageStats s;
    s.unique_pages = index_.size();
    s.blocks = blocks_.size();
    for (const auto& b : blocks_) s.raw_blocks += (b.flags & disk::kBlockRaw) ? 1 : 0;
    s.stored_bytes = files_.at(disk::kPagesFile).size;
    for (const auto& [key, runs] : tables_)
      for (const auto& r : runs) {
        s.pages += r.npages;
        if (r.kind == disk::kRunZero) s.zero_pages += r.npages;
      }
    s.duplicate_pages = s.pages - s.zero_pages - s.unique_pages;
    s.raw_bytes = s.pages * kPageSize;
    return s;
  }

  void verify_all() {
    std::vector<const disk::IndexPage*> by_number(index_.size());
    for (const auto& p : index_) by_number[p.block * uint64_t{disk::kBlockPages} + p.slot] = &p;
    for (uint64_t b = 0; b < blocks_.size(); ++b) {
      const uint8_t* raw = read_block(b, raw_buf());
      for (uint32_t slot = 0; slot < blocks_[b].npages; ++slot) {
        XXH128_canonical_t canon;
        XXH128_canonicalFromHash(&canon, XXH3_128bits(raw + slot * kPageSize, kPageSize));
        const auto* entry = by_number[b * disk::kBlockPages + slot];
        if (std::memcmp(canon.digest, entry->hash, sizeof canon.digest) != 0)
          throw Error(fmt::format("{}: block {} (offset {}): page {} does not match its hash in {}",
                                  path(disk::kPagesFile), b, blocks_[b].offset, slot,
                                  disk::kIndexFile),
                      kDamaged);
      }
    }
    check_sum(disk::kPagesFile, io::sum_file(path(disk::kPagesFile)));
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
        const uint8_t* block = cached_block(ref / disk::kBlockPages);
        std::memcpy(run_buf_.get() + run_pages * kPageSize,
                    block + (ref % disk::kBlockPages) * kPageSize, kPageSize);
        ++run_pages;
      }
    }
    flush();
  }

  const std::string dir_;
  Checkpoint checkpoint_;

 private:
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  [[noreturn]] void damaged(const char* file, const std::string& what) const {
    throw Error(fmt::format("{}: {}", path(file), what), kDamaged);
  }

  void check_sum(const char* name, const io::FileSum& sum) const {
    const auto& want = files_.at(name);
    if (sum.xxh3 != want.xxh3 || sum.size != want.size)
      damaged(name, fmt::format("checksum {:016x} does not match manifest.json ({:016x})",
                                sum.xxh3, want.xxh3));
  }

  std::string read_checked(const char* name) const {
    std::string buf = io::read_file(path(name));
    check_sum(name, io::sum_bytes(buf.data(), buf.size()));
    return buf;
  }

  void load_index(const std::string& buf) {
    const char* f = disk::kIndexFile;
    if (buf.size() < sizeof(disk::IndexHeader)) damaged(f, "truncated header");
    size_t off = 0;
    auto h = read_record<disk::IndexHeader>(buf, off);
    if (std::memcmp(h.magic, disk::kIndexMagic, sizeof h.magic) != 0) damaged(f, "bad magic");
    if (h.page_size != kPageSize || h.block_pages != disk::kBlockPages)
      damaged(f, fmt::format("page size {} / block pages {} unsupported", h.page_size,
                             h.block_pages));
    if (buf.size() != sizeof h + h.nblocks * sizeof(disk::IndexBlock) +
                          h.npages * sizeof(disk::IndexPage))
      damaged(f, "size does not match its header");
    uint64_t file_off = 0, pages = 0;
    for (uint64_t b = 0; b < h.nblocks; ++b) {
      auto e = read_record<disk::IndexBlock>(buf, off);
      bool last = b + 1 == h.nblocks;
      if (e.offset != file_off || e.npages == 0 || e.npages > disk::kBlockPages ||
          (!last && e.npages != disk::kBlockPages) || e.flags & ~disk::kBlockRaw ||
          e.stored_len > static_cast<uint32_t>(LZ4_compressBound(int{disk::kBlockRawBytes})))
        damaged(f, fmt::format("block {}: entry inconsistent", b));
      file_off += sizeof(disk::BlockHeader) + e.stored_len;
      pages += e.npages;
      blocks_.push_back(e);
    }
    if (pages != h.npages) damaged(f, "page count does not match its blocks");
    if (file_off != files_.at(disk::kPagesFile).size)
      damaged(f, fmt::format("blocks end at {}, {} has {} bytes", file_off, disk::kPagesFile,
                             files_.at(disk::kPagesFile).size));
    index_.resize(h.npages);
    std::memcpy(index_.data(), buf.data() + off, h.npages * sizeof(disk::IndexPage));
    std::vector<bool> seen(h.npages);
    for (size_t i = 0; i < index_.size(); ++i) {
      const auto& p = index_[i];
      uint64_t u = p.block * uint64_t{disk::kBlockPages} + p.slot;
      if (p.slot >= disk::kBlockPages || u >= h.npages || seen[u] ||
          (i && std::memcmp(index_[i - 1].hash, p.hash, sizeof p.hash) >= 0))
        damaged(f, fmt::format("page entry {}: out of order or out of range", i));
      seen[u] = true;
    }
  }

  void load_pagemap(const std::string& buf) {
    const char* f = disk::kPagemapFile;
    if (buf.size() < sizeof(disk::PagemapHeader)) damaged(f, "truncated header");
    size_t off = 0;
    auto h = read_record<disk::PagemapHeader>(buf, off);
    if (std::memcmp(h.magic, disk::kPagemapMagic, sizeof h.magic) != 0) damaged(f, "bad magic");
    for (uint64_t t = 0; t < h.ntables; ++t) {
      if (buf.size() - off < sizeof(disk::PagemapTable)) damaged(f, "truncated");
      auto table = read_record<disk::PagemapTable>(buf, off);
      const Mapping* m = find_mapping(table.pid, table.mapping_start);
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
        if (r.kind == disk::kRunSeq) ok = ok && r.ref + r.npages <= index_.size();
        else if (r.kind == disk::kRunRepeat) ok = ok && r.ref < index_.size();
        else if (r.kind != disk::kRunZero) ok = false;
        if (!ok)
          damaged(f, fmt::format("pid {} mapping {:#x}: run at {:#x} is invalid", table.pid,
                                 table.mapping_start, r.addr));
        end = r.addr + uint64_t{r.npages} * kPageSize;
      }
    }
    if (off != buf.size()) damaged(f, "trailing bytes");
  }

  const Mapping* find_mapping(pid_t pid, uint64_t start) const {
    for (const auto& p : checkpoint_.processes)
      if (p.pid == pid)
        for (const auto& m : p.mappings)
          if (m.start == start) return &m;
    return nullptr;
  }

  uint8_t* raw_buf() {
    if (!verify_buf_) verify_buf_ = std::make_unique_for_overwrite<uint8_t[]>(disk::kBlockRawBytes);
    return verify_buf_.get();
  }

  // Reads block b into out (kBlockRawBytes) after checking it; returns out.
  const uint8_t* read_block(uint64_t b, uint8_t* out) {
    const char* f = disk::kPagesFile;
    const disk::IndexBlock& e = blocks_[b];
    auto bad = [&](std::string_view what) {
      damaged(f, fmt::format("block {} (offset {}): {}", b, e.offset, what));
    };
    disk::BlockHeader h;
    io::pread_exact(pages_fd_.get(), &h, sizeof h, static_cast<off_t>(e.offset), path(f));
    if (h.magic != disk::kBlockMagic || h.block != b || h.npages != e.npages ||
        h.flags != e.flags || h.stored_len != e.stored_len || h.raw_len != h.npages * kPageSize)
      bad("header does not match pages.idx");
    io::pread_exact(pages_fd_.get(), stored_buf_.get(), h.stored_len,
                    static_cast<off_t>(e.offset + sizeof h), path(f));
    if (XXH3_64bits(stored_buf_.get(), h.stored_len) != h.checksum) bad("checksum mismatch");
    if (h.flags & disk::kBlockRaw) {
      std::memcpy(out, stored_buf_.get(), h.raw_len);
    } else {
      int n = LZ4_decompress_safe(reinterpret_cast<const char*>(stored_buf_.get()),
                                  reinterpret_cast<char*>(out), static_cast<int>(h.stored_len),
                                  static_cast<int>(disk::kBlockRawBytes));
      if (n != static_cast<int>(h.raw_len)) bad("does not decompress");
    }
    return out;
  }

  // A few decompressed blocks, least recently used replaced first.
  struct CachedBlock {
    uint64_t block = UINT64_MAX;
    uint64_t last_use = 0;
    std::unique_ptr<uint8_t[]> data;
  };

  const uint8_t* cached_block(uint64_t b) {
    CachedBlock* victim = &cache_[0];
    for (auto& c : cache_) {
      if (c.block == b) {
        c.last_use = ++clock_;
        return c.data.get();
      }
      if (c.last_use < victim->last_use) victim = &c;
    }
    if (!victim->data) victim->data = std::make_unique_for_overwrite<uint8_t[]>(disk::kBlockRawBytes);
    victim->block = UINT64_MAX;  // in case reading throws
    read_block(b, victim->data.get());
    victim->block = b;
    victim->last_use = ++clock_;
    return victim->data.get();
  }

  std::map<std::string, FileEntry> files_;
  std::vector<disk::IndexBlock> blocks_;
  std::vector<disk::IndexPage> index_;  // sorted by hash
  std::map<std::pair<pid_t, uint64_t>, std::vector<disk::PagemapRun>> tables_;
  ScopedFd pages_fd_;
  std::unique_ptr<uint8_t[]> stored_buf_, verify_buf_, run_buf_;
  std::array<CachedBlock, kCachedBlocks> cache_;
  uint64_t clock_ = 0;
};

ImageReader ImageReader::open(const std::string& dir) {
  return ImageReader(std::make_unique<Impl>(dir));
}

ImageReader::ImageReader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ImageReader::ImageReader(ImageReader&&) noexcept = default;
ImageReader& ImageReader::operator=(ImageReader&&) noexcept = default;
ImageReader::~ImageReader() = default;

const Checkpoint& ImageReader::checkpoint() const { return impl_->checkpoint_; }
ImageStats ImageReader::stats() const { return impl_->stats(); }
const std::string& ImageReader::dir() const { return impl_->dir_; }
void ImageReader::verify_all() { impl_->verify_all(); }
void ImageReader::for_each_run(pid_t pid, uint64_t mapping_start,
                               const std::function<void(const PageRun&)>& fn) {
  impl_->for_each_run(pid, mapping_start, fn);
}

}  // namespace snap::image
