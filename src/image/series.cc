#include "image/series.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include <fmt/core.h>

#include "base/error.h"
#include "image/file_io.h"
#include "image/format.h"
#include "image/image_reader.h"
#include "image/manifest.h"
#include "image/manifest_file.h"

namespace snap::image {

namespace fs = std::filesystem;

namespace {

std::optional<uint64_t> parse_number(const std::string& s) {
  if (s.empty() || s.size() > 18 || s.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  return std::stoull(s);
}

uint64_t dir_bytes(const std::string& dir) {
  uint64_t n = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file(ec)) n += e.file_size(ec);
  return n;
}

// What `snap list` shows of checkpoint `e` (its number set), from its
// checkpoint and manifest facts.
void take_facts(SeriesEntry& e, const Checkpoint& c, const std::vector<PackEntry>& packs,
                const std::optional<SeriesFacts>& series) {
  e.created = c.created;
  e.changed_pages_by = c.changed_pages_by;
  for (const auto& p : packs) e.referenced_bytes += p.data.size + p.index.size;
  if (!packs.empty() && packs.back().name == std::to_string(e.number))
    e.new_bytes = packs.back().data.size + packs.back().index.size;
  if (series) e.earlier_pages = series->earlier_pages;
  for (const auto& p : c.processes)
    for (const auto& map : p.mappings) e.pages += map.pages_dumped;
}

}  // namespace

bool is_series_dir(const std::string& dir) {
  struct stat st;
  return (::stat((dir + "/" + kSeriesPacks).c_str(), &st) == 0 && S_ISDIR(st.st_mode)) ||
         ::lstat((dir + "/" + kSeriesLatest).c_str(), &st) == 0;
}

std::optional<uint64_t> series_latest(const std::string& ckpt_dir) {
  char buf[64];
  ssize_t n = ::readlink((ckpt_dir + "/" + kSeriesLatest).c_str(), buf, sizeof buf - 1);
  if (n <= 0) return std::nullopt;
  return parse_number(std::string(buf, static_cast<size_t>(n)));
}

std::vector<uint64_t> series_numbers(const std::string& ckpt_dir) {
  std::vector<uint64_t> v;
  std::error_code ec;
  fs::directory_iterator it(ckpt_dir, ec);
  if (ec) throw SysError(fmt::format("read directory {}", ckpt_dir), ec.value());
  for (const auto& e : it) {
    auto n = parse_number(e.path().filename().string());
    if (n && e.is_directory(ec) && !e.is_symlink(ec)) v.push_back(*n);
  }
  std::sort(v.begin(), v.end());
  return v;
}

std::vector<SeriesEntry> list_series(const std::string& ckpt_dir) {
  if (!is_series_dir(ckpt_dir))
    throw Error(fmt::format("{} is not a checkpoint series (it has no {}/ and no {})", ckpt_dir,
                            kSeriesPacks, kSeriesLatest),
                "a series is written by `snap run --dir`; a plain image is read with snap info DIR");
  std::optional<uint64_t> latest = series_latest(ckpt_dir);
  std::vector<SeriesEntry> out;
  for (uint64_t n : series_numbers(ckpt_dir)) {
    SeriesEntry e;
    e.number = n;
    e.dir = fmt::format("{}/{}", ckpt_dir, n);
    e.latest = latest == n;
    e.checkpoint_bytes = dir_bytes(e.dir);
    // The facts from the reader, whose opening is the check (the checkpoint
    // is decompressed and parsed once); from the manifest alone where that
    // fails.
    try {
      const ImageReader r = ImageReader::open(e.dir);
      std::vector<PackEntry> packs;
      for (const auto& p : r.packs())
        packs.push_back({p.name, {p.data_size, p.data_xxh3}, {p.index_size, p.index_xxh3}});
      take_facts(e, r.checkpoint(), packs, r.series_facts());
      e.complete = true;
    } catch (const Error& err) {
      e.problem = err.what();
      try {
        const Manifest m = read_manifest(e.dir);
        take_facts(e, m.checkpoint, m.packs, m.series);
      } catch (const Error&) {
        // unreadable: the problem above says why
      }
    }
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace snap::image
