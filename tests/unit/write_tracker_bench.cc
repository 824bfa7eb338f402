// How long finding the written pages takes against reading every page:
//   write_tracker_bench [MiB=2048] [percent=1] [--thp]
// A child touches MiB of anonymous memory; snap arms a WriteTracker, the
// child writes `percent` % of its pages (spread evenly), snap stops it and
// times scan_and_rearm, then reads all resident pages and only the written
// ones through /proc/PID/mem. Not a test: it prints figures.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/scoped_fd.h"
#include "tracer/memory.h"
#include "tracer/proc.h"
#include "tracer/remote.h"
#include "tracer/task.h"
#include "tracer/write_tracker.h"

using namespace snap;
using Clock = std::chrono::steady_clock;

namespace {

double secs(Clock::time_point a) { return std::chrono::duration<double>(Clock::now() - a).count(); }

// Reads pages [start, end) runs through /proc/PID/mem, 8 MiB at a time.
uint64_t read_runs(pid_t pid, const std::vector<PageRun>& runs) {
  ScopedFd mem(::open(("/proc/" + std::to_string(pid) + "/mem").c_str(), O_RDONLY | O_CLOEXEC));
  if (!mem) throw SysError("open mem", errno);
  std::vector<uint8_t> buf(8 << 20);
  uint64_t sum = 0;
  for (const auto& r : runs)
    for (uint64_t a = r.start; a < r.end;) {
      size_t n = std::min<uint64_t>(buf.size(), r.end - a);
      ssize_t got = ::pread(mem.get(), buf.data(), n, static_cast<off_t>(a));
      if (got <= 0) throw SysError("pread mem", errno);
      sum += buf[0];
      a += static_cast<uint64_t>(got);
    }
  return sum;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t mib = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 2048;
  double percent = argc > 2 ? std::strtod(argv[2], nullptr) : 1.0;
  bool thp = argc > 3 && std::string(argv[3]) == "--thp";
  const uint64_t ps = 4096, len = mib << 20, pages = len / ps;
  const uint64_t stride = static_cast<uint64_t>(100.0 / percent);
  if (!WriteTracker::supported().ok) {
    std::printf("write tracking unsupported: %s\n", WriteTracker::supported().reason.c_str());
    return 0;
  }
  auto* mem = static_cast<uint8_t*>(::mmap(nullptr, len, PROT_READ | PROT_WRITE,
                                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  if (mem == MAP_FAILED) throw SysError("mmap", errno);
  if (thp) ::madvise(mem, len, MADV_HUGEPAGE);
  else ::madvise(mem, len, MADV_NOHUGEPAGE);
  int go[2], ack[2];
  check_sys(::pipe(go), "pipe");
  check_sys(::pipe(ack), "pipe");
  pid_t child = ::fork();
  if (child == 0) {
    for (uint64_t i = 0; i < len; i += 8) *reinterpret_cast<uint64_t*>(mem + i) = i * 0x9e3779b97f4a7c15ull;
    char c = 'r';
    if (::write(ack[1], &c, 1) != 1) ::_exit(1);
    while (::read(go[0], &c, 1) == 1) {
      for (uint64_t p = 0; p < pages; p += stride) mem[p * ps + 8]++;
      if (::write(ack[1], &c, 1) != 1) ::_exit(1);
    }
    ::_exit(0);
  }
  char c = 0;
  if (::read(ack[0], &c, 1) != 1) return 1;
  std::printf("%llu MiB touched (%llu pages), THP %s, writing every %llu-th page (%.2f %%)\n",
              static_cast<unsigned long long>(mib), static_cast<unsigned long long>(pages),
              thp ? "on" : "off", static_cast<unsigned long long>(stride), 100.0 / static_cast<double>(stride));

  std::optional<WriteTracker> tracker;
  {
    auto task = Task::seize_and_stop(child);
    auto t0 = Clock::now();
    RemoteSyscalls rs(*task, find_syscall_site(child));
    tracker.emplace(WriteTracker::arm(rs, proc::read_mappings(child, proc::MapDetail::kRangesOnly)));
    std::printf("arm:                               %8.1f ms\n", secs(t0) * 1e3);
  }
  for (int round = 0; round < 3; round++) {
    c = 'w';
    if (::write(go[1], &c, 1) != 1 || ::read(ack[0], &c, 1) != 1) return 1;
    auto task = Task::seize_and_stop(child);
    auto t0 = Clock::now();
    auto maps = proc::read_mappings(child, proc::MapDetail::kRangesOnly);
    double t_maps = secs(t0);
    t0 = Clock::now();
    auto reports = tracker->scan_and_rearm(maps);
    double t_scan = secs(t0);
    std::vector<PageRun> written, resident;
    uint64_t untracked = 0;
    for (const auto& r : reports) {
      if (!r.tracked) { untracked++; continue; }
      written.insert(written.end(), r.written.begin(), r.written.end());
      resident.insert(resident.end(), r.resident.begin(), r.resident.end());
    }
    // What a full dump does first: pagemap of every mapping.
    t0 = Clock::now();
    uint64_t to_dump = 0;
    for (const auto& m : maps)
      if (mapping_has_content(m)) to_dump += pages_to_dump(child, m).size();
    double t_pagemap = secs(t0);
    t0 = Clock::now();
    read_runs(child, resident);
    double t_all = secs(t0);
    t0 = Clock::now();
    read_runs(child, written);
    double t_written = secs(t0);
    std::printf("round %d: %zu mappings (%llu untracked), %llu written / %llu resident pages "
                "(pagemap: %llu)\n", round, reports.size(), static_cast<unsigned long long>(untracked),
                static_cast<unsigned long long>(runs_pages(written)),
                static_cast<unsigned long long>(runs_pages(resident)),
                static_cast<unsigned long long>(to_dump));
    std::printf("  read maps %6.1f ms | scan_and_rearm %7.1f ms | pagemap of all %7.1f ms\n",
                t_maps * 1e3, t_scan * 1e3, t_pagemap * 1e3);
    std::printf("  read all resident via /proc/PID/mem %7.1f ms | read written only %6.1f ms\n",
                t_all * 1e3, t_written * 1e3);
    std::printf("  incremental (maps + scan + read written) / full (maps + pagemap + read all) = %.1f %%\n",
                100.0 * (t_maps + t_scan + t_written) / (t_maps + t_pagemap + t_all));
  }
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  return 0;
}
