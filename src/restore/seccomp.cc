#include "restore/seccomp.h"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/syscall.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include <fmt/core.h>

#include "base/error.h"
#include "tracer/seccomp.h"

namespace snap::restore {

namespace {

// What a thread's filters take of its batch's arena (256 KiB, restore.cc):
// the kernel allows 256 KiB of filter code a thread, far beyond what
// sandboxes install (a few hundred instructions).
constexpr size_t kMaxFilterBytes = 128 << 10;

// The arena filters [from, to) take: their code and a sock_fprog each.
size_t filter_bytes(const std::vector<image::SeccompFilter>& filters, size_t from, size_t to) {
  size_t n = 0;
  for (size_t i = from; i < to; i++) n += filters[i].program.size() + sizeof(sock_fprog);
  return n;
}

size_t filter_bytes(const image::Seccomp& s) { return filter_bytes(s.filters, 0, s.filters.size()); }

// Queues filters [from, to) of thread `t` (which has them).
void add_filters(SyscallBatch& batch, pid_t pid, const image::ThreadState& t, size_t from,
                 size_t to) {
  const auto& filters = t.seccomp->filters;
  batch.reserve(to - from, filter_bytes(filters, from, to));
  for (size_t i = from; i < to; i++) {
    const auto& f = filters[i];
    sock_fprog prog{};
    prog.len = static_cast<unsigned short>(f.program.size() / sizeof(sock_filter));
    const remote_addr code = batch.put(f.program.data(), f.program.size());
    prog.filter = reinterpret_cast<sock_filter*>(code.as_int());
    batch.add(fmt::format("seccomp filter {} of thread {} of pid {}", i + 1, t.tid, pid),
              SYS_seccomp, SECCOMP_SET_MODE_FILTER, f.flags, batch.put_value(prog).as_int());
  }
}

}  // namespace

bool has_own_seccomp(const image::Process& p) {
  return std::any_of(p.threads.begin(), p.threads.end(),
                     [](const image::ThreadState& t) { return t.seccomp.has_value(); });
}

void check_seccomp(const image::Checkpoint& ckpt) {
  for (const auto& p : ckpt.processes) {
    if (p.zombie || !has_own_seccomp(p)) continue;
    if (!seccomp_savable())
      throw Error(fmt::format("cannot restore: pid {} set up seccomp itself, and only root "
                              "(CAP_SYS_ADMIN, under no seccomp of its own) can install it again",
                              p.pid),
                  "restore as root");
    for (const auto& t : p.threads)
      if (t.seccomp && filter_bytes(*t.seccomp) > kMaxFilterBytes)
        throw Error(fmt::format("cannot restore: thread {} of pid {} has {} KiB of seccomp "
                                "filters; snap installs at most {} KiB a thread",
                                t.tid, p.pid, filter_bytes(*t.seccomp) >> 10,
                                kMaxFilterBytes >> 10));
  }
}

size_t shared_seccomp_filters(const image::Process& p) {
  if (p.threads.empty()) return 0;
  size_t n = SIZE_MAX;
  const image::ThreadState& first = p.threads[0];
  for (const auto& t : p.threads) {
    if (!t.seccomp || t.seccomp->strict) return 0;
    size_t same = 0;
    while (same < t.seccomp->filters.size() && same < first.seccomp->filters.size() &&
           t.seccomp->filters[same].program == first.seccomp->filters[same].program &&
           t.seccomp->filters[same].flags == first.seccomp->filters[same].flags)
      same++;
    n = std::min(n, same);
  }
  return n;
}

void add_shared_seccomp(SyscallBatch& batch, const image::Process& p, size_t shared) {
  if (shared) add_filters(batch, p.pid, p.threads[0], 0, shared);
}

void add_seccomp(SyscallBatch& batch, pid_t pid, const image::ThreadState& t, size_t shared) {
  if (!t.seccomp) return;
  if (t.seccomp->strict)
    batch.add(fmt::format("seccomp strict mode in thread {} of pid {}", t.tid, pid), SYS_seccomp,
              SECCOMP_SET_MODE_STRICT, 0, 0);
  else
    add_filters(batch, pid, t, shared, t.seccomp->filters.size());
}

}  // namespace snap::restore
