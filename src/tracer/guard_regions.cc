#include "tracer/guard_regions.h"

#include <fcntl.h>

#include <cerrno>
#include <fmt/core.h>

#include "base/error.h"
#include "base/scoped_fd.h"
#include "tracer/pagemap.h"

namespace snap {

namespace {

void add_range(image::Mapping& m, uint64_t start, uint64_t end) {
  if (!m.guards.empty() && m.guards.back()[1] == start)
    m.guards.back()[1] = end;
  else
    m.guards.push_back({start, end});
}

void scan_mapping(int fd, const std::string& path, image::Mapping& m) {
  m.guards.clear();
  int e = pagemap::scan(fd, m.start, m.end, 0, pagemap::kPageIsGuard, 0, pagemap::kPageIsGuard,
                        [&](const pagemap::Region& r) { add_range(m, r.start, r.end); });
  if (e == 0) return;
  if (!pagemap::scan_unsupported(e))
    throw SysError(fmt::format("ioctl({}, PAGEMAP_SCAN, guard regions of {:#x}-{:#x})", path,
                               m.start, m.end),
                   e);
  m.guards.clear();  // no PAGEMAP_SCAN, or no PAGE_IS_GUARD: the raw entries
  pagemap::read_chunks(fd, path, m.start, m.end, [&](uint64_t at, const uint64_t* entries, size_t n) {
    for (size_t i = 0; i < n; i++)
      if (entries[i] & pagemap::kGuardRegion)
        add_range(m, at + i * image::kPageSize, at + (i + 1) * image::kPageSize);
  });
}

}  // namespace

void record_guard_regions(pid_t pid, std::vector<image::Mapping*> mappings) {
  std::erase_if(mappings, [](const image::Mapping* m) { return !image::has_vmflag(m->vmflags, "gu"); });
  if (mappings.empty()) return;
  const std::string path = fmt::format("/proc/{}/pagemap", pid);
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw SysError("open " + path, errno);
  for (image::Mapping* m : mappings) scan_mapping(fd.get(), path, *m);
}

void record_guard_regions(pid_t pid, std::vector<image::Mapping>& mappings) {
  std::vector<image::Mapping*> marked;  // usually none: nothing is allocated
  for (auto& m : mappings)
    if (image::has_vmflag(m.vmflags, "gu")) marked.push_back(&m);
  record_guard_regions(pid, std::move(marked));
}

}  // namespace snap
