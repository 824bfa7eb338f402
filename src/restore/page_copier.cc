#include "restore/page_copier.h"

#include <fcntl.h>

#include <algorithm>
#include <cerrno>

#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "restore/remote_writer.h"
#include "tracer/userfaultfd.h"

namespace snap::restore {

namespace {

using image::kPageSize;
using image::Mapping;
using image::MappingKind;

// Below this many saved pages a mapping is written as before: its register
// call would cost about what the copy saves (20,000 one-page mappings).
constexpr uint64_t kMinPages = 16;
// Times in a row the kernel may stop a copy before it has copied anything
// (EAGAIN: the address space changing; EINTR) before it counts as failed.
constexpr int kMaxRetries = 100;

// Memory the kernel lets a missing-mode context fill, and where filling it
// page by page changes nothing the job sees: private anonymous (heap,
// stacks too); not locked (mlock populated it already), not advised to
// huge pages (a fault there takes one; a copy makes small ones), not from
// the hugetlb pool (copies there go by whole huge pages), not droppable.
bool worth_copying(const Mapping& m) {
  if (m.shared || m.pages_dumped < kMinPages) return false;
  if (m.kind != MappingKind::Anonymous && m.kind != MappingKind::Heap &&
      m.kind != MappingKind::Stack)
    return false;
  for (const char* flag : {"hg", "ht", "lo", "dp"})
    if (image::has_vmflag(m.vmflags, flag)) return false;
  return true;
}

}  // namespace

PageCopier::PageCopier(ScopedFd uffd, pid_t pid, std::vector<std::pair<uint64_t, uint64_t>> ranges)
    : uffd_(std::move(uffd)), pid_(pid), ranges_(std::move(ranges)) {}

std::unique_ptr<PageCopier> PageCopier::open(RemoteSyscalls& rs, pid_t pid,
                                             const image::Process& p,
                                             const std::map<uint64_t, InheritedMapping>* skip) {
  std::vector<const Mapping*> wanted;
  for (const auto& m : p.mappings)
    if (worth_copying(m) && !(skip && skip->count(m.start))) wanted.push_back(&m);
  if (wanted.empty()) return nullptr;
  std::sort(wanted.begin(), wanted.end(),
            [](const Mapping* a, const Mapping* b) { return a->start < b->start; });

  ScopedFd fd;
  try {
    fd = uffd::create_in(rs, pid, O_CLOEXEC | uffd::kUserModeOnly, "");
    uffd::enable_features(fd.get(), 0);
  } catch (const Error& e) {
    vlog("restore: pid {}: memory written with process_vm_writev: {}", pid, e.what());
    return nullptr;
  }
  // Adjacent mappings in one call; where the kernel refuses a run, each of
  // its mappings alone (a refused one is written as before).
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  size_t refused = 0;
  for (size_t i = 0; i < wanted.size();) {
    size_t j = i + 1;
    while (j < wanted.size() && wanted[j - 1]->end == wanted[j]->start) j++;
    if (uffd::register_missing(fd.get(), wanted[i]->start, wanted[j - 1]->end) == 0) {
      ranges.emplace_back(wanted[i]->start, wanted[j - 1]->end);
    } else {
      for (size_t k = i; k < j; k++) {
        if (uffd::register_missing(fd.get(), wanted[k]->start, wanted[k]->end) == 0)
          ranges.emplace_back(wanted[k]->start, wanted[k]->end);
        else
          refused++;
      }
    }
    i = j;
  }
  if (refused)
    vlog("restore: pid {}: {} mapping(s) written with process_vm_writev: UFFDIO_REGISTER refused",
         pid, refused);
  if (ranges.empty()) return nullptr;
  return std::make_unique<PageCopier>(std::move(fd), pid, std::move(ranges));
}

bool PageCopier::covers(remote_addr addr) const {
  uint64_t a = addr.as_int();
  auto it = std::upper_bound(ranges_.begin(), ranges_.end(), a,
                             [](uint64_t x, const auto& r) { return x < r.first; });
  return it != ranges_.begin() && a < std::prev(it)->second;
}

uint64_t PageCopier::copy(const uint8_t* src, remote_addr dst, uint64_t bytes,
                          RemoteWriter& fallback) const {
  uint64_t done = 0, copied = 0;
  int retries = 0;
  while (done < bytes) {
    int64_t n = uffd::copy(uffd_.get(), dst + static_cast<int64_t>(done), src + done, bytes - done);
    if (n > 0) {
      done += static_cast<uint64_t>(n);
      copied += static_cast<uint64_t>(n);
      retries = 0;
    } else if (n == -EEXIST) {  // a page the process has already
      fallback.add(src + done, dst + static_cast<int64_t>(done), kPageSize);
      done += kPageSize;
    } else if ((n == -EAGAIN || n == -EINTR) && ++retries < kMaxRetries) {
      continue;
    } else {
      throw SysError(fmt::format("UFFDIO_COPY of {} bytes to {:#x} in pid {}", bytes - done,
                                 dst.as_int() + done, pid_),
                     n < 0 ? static_cast<int>(-n) : EIO);
    }
  }
  copied_.fetch_add(copied, std::memory_order_relaxed);
  return copied;
}

}  // namespace snap::restore
