#include "restore/address_space.h"

#include <linux/aio_abi.h>
#include <linux/prctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <fcntl.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <fmt/core.h>
#include <optional>

#include "base/error.h"
#include "base/log.h"
#include "restore/fill.h"
#include "restore/page_copier.h"
#include "restore/scheduling.h"
#include "restore/vdso.h"
#include "tracer/aio_rings.h"
#include "tracer/batch.h"
#include "tracer/proc.h"
#include "tracer/task.h"

namespace snap::restore {

namespace {

using image::Mapping;
using image::MappingKind;


std::string describe(const Mapping& m) {
  return fmt::format("mapping {:#x}-{:#x} {}", m.start, m.end, m.path.empty() ? "(anonymous)" : m.path);
}

constexpr uint64_t kAioChunk = 64;  // requests per io_submit while placing a ring

// A remade AIO ring (its context at m.start, empty at slot 0) brought to
// where the job's was: the kernel keeps its own copy of the ring's tail, so
// the ring is moved by requests, not by writing the header. Zero-byte
// writes to /dev/null complete at once: `head` of them are submitted and
// collected, then one more for each event the job had not collected, left
// in the ring; their slots then get the job's events.
void place_aio_ring(SyscallBatch& batch, const Mapping& m, uint64_t chunk) {
  const uint32_t pending = (m.aio_tail + m.aio_nr - m.aio_head) % m.aio_nr;
  const std::string what = fmt::format("placing the AIO ring {:#x} at head {}, tail {}", m.start,
                                       m.aio_head, m.aio_tail);
  batch.reserve(1, sizeof("/dev/null"));
  batch.add(what + ": open /dev/null", SYS_openat, static_cast<uint64_t>(AT_FDCWD),
            batch.put(std::string("/dev/null")).as_int(), O_WRONLY | O_CLOEXEC, 0);
  const uint64_t devnull = static_cast<uint64_t>(batch.run().back());
  auto submit = [&](uint64_t n, bool collect) {
    std::vector<iocb> cbs(n);
    for (auto& cb : cbs) {
      std::memset(&cb, 0, sizeof cb);
      cb.aio_lio_opcode = IOCB_CMD_PWRITE;
      cb.aio_fildes = static_cast<uint32_t>(devnull);
    }
    batch.reserve(2, n * (sizeof(iocb) + sizeof(uint64_t) + sizeof(io_event)));
    const remote_addr at = batch.put(cbs.data(), n * sizeof(iocb));
    std::vector<uint64_t> list(n);
    for (uint64_t i = 0; i < n; i++) list[i] = at.as_int() + i * sizeof(iocb);
    const remote_addr list_at = batch.put(list.data(), n * sizeof(uint64_t));
    batch.add(what + ": io_submit", SYS_io_submit, m.start, n, list_at.as_int());
    if (collect) {
      std::vector<io_event> events(n);
      const remote_addr events_at = batch.put(events.data(), n * sizeof(io_event));
      batch.add(what + ": io_getevents", SYS_io_getevents, m.start, n, n, events_at.as_int(), 0);
    }
    const auto results = batch.run();
    if (static_cast<uint64_t>(results[0]) != n ||
        (collect && static_cast<uint64_t>(results[1]) != n))
      throw Error(fmt::format("{}: {} request(s) submitted or collected of {}", what,
                              collect ? std::min(results[0], results[1]) : results[0], n));
  };
  for (uint64_t done = 0; done < m.aio_head; done += chunk)
    submit(std::min<uint64_t>(chunk, m.aio_head - done), true);
  for (uint64_t done = 0; done < pending; done += chunk)
    submit(std::min<uint64_t>(chunk, pending - done), false);
  batch.reserve(1, 0);
  batch.add(what + ": close /dev/null", SYS_close, devnull);
  batch.run();
  // The header now says head and tail; the slots between get the job's events.
  uint32_t header[4] = {};
  batch.read(remote_addr(m.start), header, sizeof header);  // id, nr, head, tail
  if (header[2] != m.aio_head || header[3] != m.aio_tail)
    throw Error(fmt::format("{}: the ring is at head {}, tail {}", what, header[2], header[3]));
  // From head to the ring's end, then from its start.
  const uint32_t first = std::min(pending, m.aio_nr - m.aio_head);
  const auto slot = [&](uint64_t i) { return remote_addr(m.start + kAioRingHeaderBytes + i * kAioEventBytes); };
  if (first) batch.write(slot(m.aio_head), m.aio_events.data(), uint64_t{first} * kAioEventBytes);
  if (pending > first)
    batch.write(slot(0), m.aio_events.data() + uint64_t{first} * kAioEventBytes,
                uint64_t{pending - first} * kAioEventBytes);
}

// Each AIO context again: io_setup makes a ring of the saved size, which is
// then moved where the job's was; the kernel names a context by its ring's
// address, so the job's context id is valid again. The kernel sizes a ring
// for 2 * max(n, 4 * CPUs) + 2 events, rounded up to whole pages (128
// events a page, less the header): n = (nr - 2) / 2 gives back nr's pages.
void restore_aio_rings(SyscallBatch& batch, const image::Process& p) {
  for (const auto& m : p.mappings) {
    if (m.kind != MappingKind::Aio) continue;
    const uint64_t len = m.end - m.start;
    const uint64_t ask = m.aio_nr > 2 ? (m.aio_nr - 2) / 2 : 1;
    batch.reserve(1, sizeof(uint64_t));
    remote_addr ctx_at = batch.put_value(uint64_t{0});
    batch.add(fmt::format("io_setup({}) for the AIO context {:#x}", ask, m.start), SYS_io_setup,
              ask, ctx_at.as_int());
    batch.run();
    uint64_t ctx = 0;
    batch.read(ctx_at, &ctx, sizeof ctx);
    uint32_t header[2] = {};  // id, nr
    batch.read(remote_addr(ctx), header, sizeof header);
    const uint64_t page = image::kPageSize;
    const uint64_t got_len = (kAioRingHeaderBytes + header[1] * kAioEventBytes + page - 1) / page * page;
    if (got_len != len) {
      batch.reserve(1, 0);
      batch.add("io_destroy", SyscallBatch::kMayFail, SYS_io_destroy, ctx);
      batch.run();
      throw Error(fmt::format("the AIO context {:#x} had a ring of {} bytes; io_setup here makes "
                              "one of {} bytes",
                              m.start, len, got_len),
                  "restore on a machine with as many CPUs as the dump's");
    }
    batch.reserve(1, 0);
    batch.add(fmt::format("mremap of the AIO ring {:#x} to {:#x}", ctx, m.start), SYS_mremap, ctx,
              len, len, MREMAP_MAYMOVE | MREMAP_FIXED, m.start);
    batch.run();
    if (m.aio_head || m.aio_tail) place_aio_ring(batch, m, std::min<uint64_t>(ask, kAioChunk));
  }
}

bool has_flag(const Mapping& m, const char* flag) {
  return image::has_vmflag(m.vmflags, flag);
}

// Madvise flags the kernel shows in smaps' VmFlags, and the advice that
// sets each. They may fail (THP or KSM not built in, say) without harming
// the job. Then the lock of a locked mapping (mlock, mlock2 on fault),
// which must not fail (RLIMIT_MEMLOCK): the job relied on it.
void add_madvise(SyscallBatch& batch, const Mapping& m) {
  static const std::pair<const char*, int> kAdvice[] = {
      {"hg", MADV_HUGEPAGE},  {"nh", MADV_NOHUGEPAGE},  {"dc", MADV_DONTFORK},
      {"dd", MADV_DONTDUMP},  {"wf", MADV_WIPEONFORK},  {"sr", MADV_SEQUENTIAL},
      {"rr", MADV_RANDOM},    {"mg", MADV_MERGEABLE}};
  for (const auto& [flag, advice] : kAdvice)
    if (has_flag(m, flag))
      batch.add("madvise " + describe(m), SyscallBatch::kMayFail, SYS_madvise, m.start,
                m.end - m.start, static_cast<uint64_t>(advice));
  if (has_flag(m, "lo"))
    batch.add("mlock2 " + describe(m), SYS_mlock2, m.start, m.end - m.start,
              has_flag(m, "lf") ? uint64_t{MLOCK_ONFAULT} : 0);
}

constexpr int kMapDroppable = 0x08;  // MAP_DROPPABLE, a mapping type of its own
constexpr int kMadvGuardInstall = 102;  // MADV_GUARD_INSTALL, Linux 6.13

// How the file of a file mapping is opened to map it again: read-write for
// a shared mapping that is writable, or may be made so by mprotect (VmFlags
// "mw": the file was open for writing when it was mapped), else read-only.
int open_flags_for(const Mapping& m) {
  bool rw = m.shared && ((m.prot & PROT_WRITE) || has_flag(m, "mw"));
  return (rw ? O_RDWR : O_RDONLY) | O_CLOEXEC;
}

// The mmap of `m` (fd: the file's, the shared memory object's memfd, or -1).
void add_mmap(SyscallBatch& batch, const Mapping& m, int fd) {
  uint64_t len = m.end - m.start;
  int prot = m.prot | (fill_writes(m) ? PROT_WRITE : 0);
  int flags = (m.shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED_NOREPLACE;
  uint64_t offset = m.pgoff;
  if (is_shm_object(m)) {
    flags = MAP_SHARED | MAP_FIXED_NOREPLACE;
  } else {
    if (has_flag(m, "gd")) flags |= MAP_GROWSDOWN;
    // A reservation (MAP_NORESERVE: sanitizers, Go, V8 reserve terabytes)
    // comes back as one: charged to the commit limit, it would not fit.
    if (has_flag(m, "nr")) flags |= MAP_NORESERVE;
    // Memory the kernel may drop under pressure (Linux 6.11, vgetrandom).
    if (has_flag(m, "dp") && !m.shared) flags = (flags & ~MAP_PRIVATE) | kMapDroppable;
    if (m.kind != MappingKind::File) {
      flags |= MAP_ANONYMOUS;
      offset = 0;
    }
    // From the hugetlb pool, of the same page size (MAP_HUGE_SHIFT: its log2).
    if (m.hugetlb_page)
      flags |= MAP_HUGETLB | (std::countr_zero(m.hugetlb_page) << MAP_HUGE_SHIFT);
  }
  batch.add("mmap " + describe(m), SyscallBatch::kReturnsFirstArg, SYS_mmap, m.start, len,
            static_cast<uint64_t>(prot), static_cast<uint64_t>(flags), static_cast<uint64_t>(fd),
            offset);
}

// Files opened at once while mappings are created: well under any fd limit.
constexpr size_t kFilesPerRound = 64;

// A mapping that comes from a parked range (cow_sharing.h): moved into
// place, writable while it is filled (its protection comes at the end, as
// for any filled mapping), then emptied where this process had zeros.
void add_moved(SyscallBatch& batch, const Mapping& m, const InheritedMapping& from) {
  const uint64_t len = m.end - m.start;
  batch.reserve(1, 0);
  batch.add(fmt::format("mremap of the range parked at {:#x} to {}", from.park, describe(m)),
            SYS_mremap, from.park, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, m.start);
  for (const auto& [start, end] : from.zero) {
    batch.reserve(1, 0);
    batch.add(fmt::format("madvise(MADV_DONTNEED) {:#x}-{:#x} of {}", start, end, describe(m)),
              SYS_madvise, start, end - start, static_cast<uint64_t>(MADV_DONTNEED));
  }
}

// Creates every saved mapping but the kernel's own, a few batches in all:
// per round, the files of up to kFilesPerRound distinct paths are opened
// (one batch), then the round's mappings are created, advised, and the
// files closed (another).
void create_mappings(SyscallBatch& batch, const image::Process& p, const ProcessFiles& pf,
                     const std::map<uint64_t, InheritedMapping>* inherited) {
  const auto& ms = p.mappings;
  std::vector<std::string> texts;  // NUMA policies of their own
  for (const auto& m : ms) texts.push_back(m.mempolicy);
  const OwnPolicies policies(p.pid, texts, "mapping(s)", "they follow the process's policy");
  auto add_policy = [&](const Mapping& m) {
    if (const MemPolicy* own = m.mempolicy.empty() ? nullptr : policies.find(m.mempolicy))
      add_mbind(batch, m, *own);
  };
  size_t i = 0;
  while (i < ms.size()) {
    std::map<std::pair<std::string, int>, int> files;  // (path, flags) -> fd in the target
    std::vector<std::pair<std::string, int>> order;
    size_t j = i;
    for (; j < ms.size(); j++) {
      const Mapping& m = ms[j];
      if (is_kernel_mapping(m.kind) || is_shm_object(m) || m.kind != MappingKind::File || m.ghost)
        continue;
      if (m.path.ends_with(" (deleted)"))
        throw Error(describe(m) + ": the mapped file was deleted before the dump, and the image "
                                  "does not hold it",
                    "dump the job again with this version of snap");
      std::pair<std::string, int> key{m.path, open_flags_for(m)};
      if (files.count(key)) continue;
      if (files.size() == kFilesPerRound) break;
      files[key] = -1;
      order.push_back(key);
    }
    for (const auto& key : order) {
      batch.reserve(1, key.first.size() + 1);
      batch.add("open " + key.first, SYS_openat, static_cast<uint64_t>(AT_FDCWD),
                batch.put(key.first).as_int(), static_cast<uint64_t>(key.second), 0);
    }
    auto fds = batch.run();
    for (size_t k = 0; k < order.size(); k++) files[order[k]] = static_cast<int>(fds[k]);

    for (size_t k = i; k < j; k++) {
      const Mapping& m = ms[k];
      if (is_kernel_mapping(m.kind)) continue;
      if (inherited)
        if (auto it = inherited->find(m.start); it != inherited->end()) {
          add_moved(batch, m, it->second);
          batch.reserve(10, 0);
          add_madvise(batch, m);
          add_policy(m);
          continue;
        }
      batch.reserve(10, 0);  // mmap, advice, lock
      int fd = -1;
      if (m.ghost) {
        fd = pf.ghosts.at(m.ghost);
      } else if (is_shm_object(m)) {
        fd = pf.shm.at(shm_key(m));
      } else if (m.kind == MappingKind::File) {
        fd = files.at({m.path, open_flags_for(m)});
      }
      add_mmap(batch, m, fd);
      add_madvise(batch, m);
      add_policy(m);
    }
    batch.reserve(files.size(), 0);
    for (const auto& [key, fd] : files) batch.add("close", SYS_close, static_cast<uint64_t>(fd));
    batch.run();
    i = j;
  }
}

// Whether `path` is snap's own executable (the skeleton's /proc/PID/exe).
bool is_own_executable(const std::string& path) {
  struct stat a {}, b {};
  return ::stat(path.c_str(), &a) == 0 && ::stat("/proc/self/exe", &b) == 0 &&
         a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

void set_mm_layout(SyscallBatch& batch, const image::Process& p, int deleted_exe_fd) {
  // The kernel refuses to replace /proc/PID/exe while the old one is mapped:
  // when the job is snap itself (a `snap checkpoint` inside the job), the
  // skeleton's exe is already the right one, and is kept (exe_fd -1). A
  // deleted executable is the remade one the skeleton inherited.
  int exe_fd = -1;
  if (deleted_exe_fd >= 0) {
    exe_fd = deleted_exe_fd;
  } else if (!is_own_executable(p.exe)) {
    batch.reserve(1, p.exe.size() + 1);
    batch.add("open " + p.exe, SYS_openat, static_cast<uint64_t>(AT_FDCWD), batch.put(p.exe).as_int(),
              O_RDONLY | O_CLOEXEC, 0);
    exe_fd = static_cast<int>(batch.run().at(0));
  }
  prctl_mm_map map;
  std::memset(&map, 0, sizeof map);
  map.start_code = p.mm.start_code;
  map.end_code = p.mm.end_code;
  map.start_data = p.mm.start_data;
  map.end_data = p.mm.end_data;
  map.start_brk = p.mm.start_brk;
  map.brk = p.mm.brk;
  map.start_stack = p.mm.start_stack;
  map.arg_start = p.mm.arg_start;
  map.arg_end = p.mm.arg_end;
  map.env_start = p.mm.env_start;
  map.env_end = p.mm.env_end;
  map.exe_fd = static_cast<uint32_t>(exe_fd);
  size_t auxv_bytes = p.mm.auxv.size() * sizeof(uint64_t);
  batch.reserve(2, sizeof map + auxv_bytes);
  map.auxv = reinterpret_cast<__u64*>(batch.put(p.mm.auxv.data(), auxv_bytes).as_int());
  map.auxv_size = static_cast<uint32_t>(auxv_bytes);
  batch.add("prctl(PR_SET_MM_MAP)", SYS_prctl, PR_SET_MM, PR_SET_MM_MAP,
            batch.put_value(map).as_int(), sizeof map, 0);
  if (exe_fd >= 0) batch.add("close", SyscallBatch::kMayFail, SYS_close, static_cast<uint64_t>(exe_fd));
  batch.run();
}

// Unmaps [start, end) but the parts in `keep` (sorted, disjoint).
void add_munmap_except(SyscallBatch& batch, const Mapping& m,
                       const std::vector<std::pair<uint64_t, uint64_t>>& keep) {
  uint64_t from = m.start;
  auto drop = [&](uint64_t to) {
    if (to <= from) return;
    batch.reserve(1, 0);
    batch.add(fmt::format("munmap {:#x}-{:#x} of the skeleton", from, to), SYS_munmap, from, to - from);
  };
  for (const auto& [s, e] : keep) {
    if (e <= m.start || s >= m.end) continue;
    drop(s);
    from = std::max(from, e);
  }
  drop(m.end);
}

}  // namespace

uint64_t find_free(const std::vector<Mapping>& a, const std::vector<Mapping>& b, uint64_t size) {
  std::vector<std::pair<uint64_t, uint64_t>> used;
  for (const auto& m : a) used.push_back({m.start, m.end});
  for (const auto& m : b) used.push_back({m.start, m.end});
  std::sort(used.begin(), used.end());
  uint64_t cand = 0x10000000;  // well above mmap_min_addr and the usual non-PIE text
  for (const auto& [s, e] : used) {
    if (cand + size <= s) return cand;
    cand = std::max<uint64_t>(cand, (e + 0xfffff) & ~uint64_t{0xfffff});
  }
  if (cand + size < 0x7ff000000000ull) return cand;
  throw Error(fmt::format("no free address range of {} bytes in the restored process", size));
}

void rebuild_address_space(RemoteSyscalls& rs, const image::Process& p, image::ImageReader& img,
                           const ProcessFiles& files, const FillOptions& fill,
                           const VdsoPlan& vdso,
                           const std::map<uint64_t, InheritedMapping>* inherited) {
  pid_t pid = rs.task().tid();
  StepTimes steps;
  auto now = proc::read_mappings(pid, proc::MapDetail::kRangesOnly);
  SyscallBatch batch(rs, remote_addr(find_free(now, p.mappings, SyscallBatch::footprint())));
  image::Mapping batch_area;
  batch_area.start = batch.range().start.as_int();
  batch_area.end = batch.range().end.as_int();
  batch_area.kind = MappingKind::Vsyscall;  // kept, like the kernel's own
  now.push_back(batch_area);

  // 1. Drop snap's own mappings (its code, heap, stack, libraries), but
  // the parked ranges this process takes its memory from.
  std::vector<std::pair<uint64_t, uint64_t>> keep;
  if (inherited)
    for (const auto& m : p.mappings)
      if (auto it = inherited->find(m.start); it != inherited->end())
        keep.push_back({it->second.park, it->second.park + (m.end - m.start)});
  std::sort(keep.begin(), keep.end());
  for (const auto& m : now) {
    if (is_kernel_mapping(m.kind)) continue;
    if (keep.empty()) {
      batch.reserve(1, 0);
      batch.add("munmap " + describe(m), SYS_munmap, m.start, m.end - m.start);
    } else {
      add_munmap_except(batch, m, keep);
    }
  }
  batch.run();
  vlog("restore: unmapped {} mappings of the skeleton", now.size());

  // 2. The kernel's own mappings go where the job had them.
  place_vdso(rs, now, p.mappings, vdso);

  // 3. Every saved mapping (writable where it gets content), then the
  // contents of all, then their protections.
  steps.step("skeleton's mappings dropped");
  create_mappings(batch, p, files, inherited);
  steps.step("mappings created");
  uint64_t written = 0;
  {
    auto copier = PageCopier::open(rs, pid, p, inherited);
    steps.step("userfaultfd");
    const ThreadMempolicyScope placed(fill.placement);  // where the pages are allocated
    written = fill_memory(pid, p, img, fill, copier.get(), inherited);
  }  // its context closed: every mapping unregistered before more system calls
  steps.step("memory");

  for (const auto& m : p.mappings) {
    if (is_kernel_mapping(m.kind) || !fill_writes(m) || (m.prot & PROT_WRITE)) continue;
    batch.reserve(1, 0);
    batch.add("mprotect " + describe(m), SYS_mprotect, m.start, m.end - m.start,
              static_cast<uint64_t>(m.prot));
  }
  // Guard regions last: their pages have no contents to fill.
  for (const auto& m : p.mappings)
    for (const auto& [start, end] : m.guards) {
      batch.reserve(1, 0);
      batch.add(fmt::format("madvise(MADV_GUARD_INSTALL) {:#x}-{:#x} of {}", start, end, describe(m)),
                SYS_madvise, start, end - start, static_cast<uint64_t>(kMadvGuardInstall));
    }
  batch.reserve(files.shm.size() + files.ghosts.size(), 0);
  for (const auto& [key, fd] : files.shm)
    batch.add("close", SyscallBatch::kMayFail, SYS_close, static_cast<uint64_t>(fd));
  for (const auto& [id, fd] : files.ghosts)  // a deleted executable's, once it is /proc/PID/exe
    if (fd != files.exe_fd) batch.add("close", SyscallBatch::kMayFail, SYS_close, static_cast<uint64_t>(fd));
  batch.run();
  steps.step("protections");
  restore_aio_rings(batch, p);

  // 4. brk, code/data/stack bounds, args, env, auxv and /proc/PID/exe.
  set_mm_layout(batch, p, files.exe_fd);
  drop_vdso(rs, p.mappings);
  steps.step("layout");
  vlog("restore: pid {}: {} mappings created, {} MiB written; steps: {}", pid, p.mappings.size(),
       written >> 20, steps.text());
}

}  // namespace snap::restore
