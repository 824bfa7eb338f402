// Housekeeping of a series directory by its one writer (FORMAT.md,
// "Checkpoint series": the order of the steps and why).
#include "image/series_dir.h"

#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "image/file_io.h"
#include "image/manifest_file.h"
#include "image/series.h"

namespace snap::image {

namespace fs = std::filesystem;

namespace {

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

}  // namespace

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
      Manifest m = read_manifest(fmt::format("{}/{}", ckpt, n), /*checkpoint=*/false);
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

// A checkpoint numbered above the one `latest` names was installed by a
// writer killed before it switched `latest`: it was never committed, and
// keeping it would make the next checkpoint's predecessor ambiguous.
void remove_uncommitted(const std::string& ckpt) {
  std::optional<uint64_t> latest = series_latest(ckpt);
  if (!latest) return;
  for (uint64_t n : series_numbers(ckpt)) {
    if (n <= *latest) continue;
    std::string from = fmt::format("{}/{}", ckpt, n);
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
void remove_leftovers(const std::string& ckpt) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(ckpt, ec)) {
    std::string name = e.path().filename().string();
    if (!has_temp_infix(name)) continue;
    std::error_code rec;
    fs::remove_all(e.path(), rec);
    if (rec) warn("could not remove {}: {}", e.path().string(), rec.message());
  }
  if (ec) throw SysError(fmt::format("read directory {}", ckpt), ec.value());
}

// latest -> N, atomically: a new symlink renamed over the old one.
void switch_latest(const std::string& ckpt, uint64_t number) {
  std::string tmp = fmt::format("{}/{}{}{}", ckpt, kSeriesLatest, kSeriesTempInfix, ::getpid());
  ::unlink(tmp.c_str());
  if (::symlink(std::to_string(number).c_str(), tmp.c_str()) < 0)
    throw SysError(fmt::format("symlink({})", tmp), errno);
  if (::rename(tmp.c_str(), (ckpt + "/" + kSeriesLatest).c_str()) < 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw SysError(fmt::format("rename({}, {}/{})", tmp, ckpt, kSeriesLatest), err);
  }
  io::fsync_dir(ckpt);
}

// Keeps the `keep` newest checkpoints and the one `latest` names; each
// other one is renamed to N.tmp-gc (no longer a checkpoint, and removed by
// the next writer if this one dies), then deleted; then the packs no
// remaining checkpoint refers to. The checkpoint is committed already:
// failures are warnings.
void collect_garbage(const std::string& ckpt, unsigned keep_at_least, uint64_t number) {
  try {
    std::vector<uint64_t> numbers = series_numbers(ckpt);
    std::optional<uint64_t> latest = series_latest(ckpt);
    const size_t keep = std::max(1u, keep_at_least);
    std::vector<std::string> doomed;
    for (size_t i = 0; i + keep < numbers.size(); ++i) {
      if (numbers[i] == latest || numbers[i] == number) continue;
      std::string from = fmt::format("{}/{}", ckpt, numbers[i]);
      std::string to = fmt::format("{}{}gc", from, kSeriesTempInfix);
      std::error_code ec;
      fs::remove_all(to, ec);
      if (::rename(from.c_str(), to.c_str()) < 0)
        throw SysError(fmt::format("rename({}, {})", from, to), errno);
      doomed.push_back(to);
    }
    if (doomed.empty()) return;
    io::fsync_dir(ckpt);
    for (const auto& d : doomed) {
      std::error_code ec;
      fs::remove_all(d, ec);
      if (ec) warn("could not remove {}: {}", d, ec.message());
    }
    remove_unused_packs(ckpt);
    io::fsync_dir(ckpt);
  } catch (const Error& e) {
    warn("series {}: checkpoint {} is committed, but removing old checkpoints failed: {}",
         ckpt, number, e.what());
  }
}

}  // namespace snap::image
