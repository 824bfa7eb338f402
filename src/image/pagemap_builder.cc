#include "image/pagemap_builder.h"

#include <algorithm>
#include <cstring>

#include <fmt/core.h>

#include "base/error.h"

namespace snap::image {

namespace {

// Joins runs (sorted by address) that continue each other.
void merge_runs(std::vector<disk::PagemapRun>& runs) {
  size_t out = 0;
  for (size_t i = 0; i < runs.size(); ++i) {
    if (out > 0) {
      disk::PagemapRun& a = runs[out - 1];
      const disk::PagemapRun& b = runs[i];
      bool adjacent = a.addr + uint64_t{a.npages} * kPageSize == b.addr &&
                      uint64_t{a.npages} + b.npages <= UINT32_MAX;
      bool same = a.kind == b.kind &&
                  ((a.kind == disk::kRunZero) ||
                   (a.kind == disk::kRunSeq && a.ref + a.npages == b.ref) ||
                   (a.kind == disk::kRunRepeat && a.ref == b.ref));
      if (adjacent && same) {
        a.npages += b.npages;
        continue;
      }
    }
    runs[out++] = runs[i];
  }
  runs.resize(out);
}

void append(std::vector<uint8_t>& buf, const void* p, size_t n) {
  auto b = static_cast<const uint8_t*>(p);
  buf.insert(buf.end(), b, b + n);
}

}  // namespace

std::map<std::pair<pid_t, uint64_t>, PagedRange> paged_ranges(const Checkpoint& c) {
  std::map<std::pair<pid_t, uint64_t>, PagedRange> out;
  for (const auto& p : c.processes)
    for (const auto& m : p.mappings) out.emplace(std::pair{p.pid, m.start}, PagedRange{m.start, m.end, &m});
  auto file = [&](uint64_t start, uint64_t size) {
    out.emplace(std::pair{kFilePagesPid, start},
                PagedRange{start, start + (size + kPageSize - 1) / kPageSize * kPageSize});
  };
  for (const auto& t : c.temp_files)
    if (t.data_in_pages && t.id <= kMaxFilePagesId && t.size < kFilePagesSpan)
      file(file_pages_start(t.id), t.size);
  for (const auto& g : c.ghost_files)
    if (g.data_in_pages && g.id <= kMaxGhostPagesId && g.size < kFilePagesSpan && g.nlink == 0 &&
        (g.kind == GhostFile::Kind::File || g.kind == GhostFile::Kind::Memfd))
      file(ghost_pages_start(g.id), g.size);
  return out;
}

void PagemapBuilder::add(Runs& runs, uint64_t addr, disk::RunKind kind, uint64_t ref) {
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

uint64_t PagemapBuilder::forget(pid_t pid, uint64_t start, Runs* gone) {
  auto it = tables_.find({pid, start});
  if (it == tables_.end()) return 0;
  uint64_t n = 0;
  for (const auto& r : it->second) n += r.npages;
  if (gone) gone->insert(gone->end(), it->second.begin(), it->second.end());
  tables_.erase(it);
  return n;
}

uint64_t PagemapBuilder::forget_pages(pid_t pid, uint64_t start,
                                      const std::vector<ByteRange>& addrs, Runs* gone) {
  auto it = tables_.find({pid, start});
  if (it == tables_.end() || addrs.empty()) return 0;
  Runs within, rest;
  const uint64_t n = cut(it->second, addrs, within, rest);
  it->second = std::move(rest);
  if (gone) gone->insert(gone->end(), within.begin(), within.end());
  return n;
}

uint64_t PagemapBuilder::move_pages(pid_t pid, uint64_t from, uint64_t to,
                                    const std::vector<ByteRange>& addrs) {
  auto it = tables_.find({pid, from});
  if (it == tables_.end() || addrs.empty() || from == to) return 0;
  Runs within, rest;
  const uint64_t n = cut(it->second, addrs, within, rest);
  it->second = std::move(rest);
  Runs& dst = tables_[{pid, to}];
  dst.insert(dst.end(), within.begin(), within.end());
  return n;
}

uint64_t PagemapBuilder::cut(const Runs& runs, const std::vector<ByteRange>& addrs, Runs& within,
                             Runs& rest) {
  uint64_t n = 0;
  // The part [a, b) of run r, as a run of its own.
  auto part = [](const disk::PagemapRun& r, uint64_t a, uint64_t b) {
    const uint64_t skip = (a - r.addr) / kPageSize;
    const uint64_t ref = r.kind == disk::kRunSeq ? r.ref + skip : r.ref;
    return disk::PagemapRun{a, ref, static_cast<uint32_t>((b - a) / kPageSize), r.kind};
  };
  for (const auto& r : runs) {
    const uint64_t end = r.addr + uint64_t{r.npages} * kPageSize;
    // The first range that ends after the run starts.
    auto g = std::upper_bound(addrs.begin(), addrs.end(), r.addr,
                              [](uint64_t a, const ByteRange& x) { return a < x.second; });
    uint64_t a = r.addr;
    while (a < end) {
      if (g == addrs.end() || g->first >= end) {
        rest.push_back(part(r, a, end));
        break;
      }
      if (g->first > a) rest.push_back(part(r, a, g->first));
      const uint64_t from = std::max(a, g->first), resume = std::min(end, g->second);
      within.push_back(part(r, from, resume));
      n += (resume - from) / kPageSize;
      a = resume;
      ++g;
    }
  }
  return n;
}

std::vector<uint8_t> PagemapBuilder::serialize(Checkpoint& c) {
  std::vector<uint8_t> buf;
  size_t nruns = 0;
  for (const auto& [key, runs] : tables_) nruns += runs.size();
  buf.reserve(sizeof(disk::PagemapHeader) + tables_.size() * sizeof(disk::PagemapTable) +
              nruns * sizeof(disk::PagemapRun));
  disk::PagemapHeader h{};
  std::memcpy(h.magic, disk::kPagemapMagic, sizeof h.magic);
  h.ntables = tables_.size();
  append(buf, &h, sizeof h);
  const auto ranges = paged_ranges(c);
  std::map<std::pair<pid_t, uint64_t>, Mapping*> mappings;  // whose pages_dumped to set
  for (auto& p : c.processes)
    for (auto& m : p.mappings) mappings.emplace(std::pair{p.pid, m.start}, &m);
  for (auto& [key, runs] : tables_) {
    auto [pid, start] = key;
    auto it = ranges.find({pid, start});
    if (it == ranges.end())
      throw Error(fmt::format("image: pages were added for pid {}, mapping {:#x}, which the "
                              "checkpoint does not contain",
                              pid, start));
    const PagedRange& m = it->second;
    std::sort(runs.begin(), runs.end(), [](const auto& a, const auto& b) { return a.addr < b.addr; });
    merge_runs(runs);
    uint64_t end = start, npages = 0;
    for (const auto& r : runs) {
      if (r.addr < end)
        throw Error(fmt::format("image: pages of pid {} at {:#x} were added twice", pid, r.addr));
      end = r.addr + uint64_t{r.npages} * kPageSize;
      npages += r.npages;
    }
    if (end > m.end)
      throw Error(fmt::format("image: pid {}: pages up to {:#x} lie outside mapping {:#x}-{:#x}",
                              pid, end, m.start, m.end));
    if (m.mapping) mappings.at(key)->pages_dumped = npages;
    disk::PagemapTable t{pid, static_cast<uint32_t>(runs.size()), start};
    append(buf, &t, sizeof t);
    append(buf, runs.data(), runs.size() * sizeof(disk::PagemapRun));
  }
  return buf;
}

}  // namespace snap::image
