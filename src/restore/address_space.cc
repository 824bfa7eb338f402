#include "restore/address_space.h"

#include <linux/prctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <fcntl.h>

#include <algorithm>
#include <cstring>
#include <fmt/core.h>
#include <optional>

#include "base/error.h"
#include "base/log.h"
#include "restore/fill.h"
#include "tracer/proc.h"
#include "tracer/task.h"

namespace snap::restore {

namespace {

using image::Mapping;
using image::MappingKind;

constexpr uint64_t kScratchSize = 64 * 1024;

bool is_special(MappingKind k) {
  return k == MappingKind::Vdso || k == MappingKind::Vvar || k == MappingKind::VvarVclock ||
         k == MappingKind::Vsyscall;
}

std::string describe(const Mapping& m) {
  return fmt::format("mapping {:#x}-{:#x} {}", m.start, m.end, m.path.empty() ? "(anonymous)" : m.path);
}

// A page-aligned range of `size` bytes free in both layouts.
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
  throw Error("no free address range for restore's scratch memory");
}

// Remote scratch memory for system call arguments (paths, structs).
class Scratch {
 public:
  Scratch(RemoteSyscalls& rs, uint64_t addr) : rs_(rs), addr_(addr) {
    rs.checked("mmap of restore scratch memory", SYS_mmap, addr, kScratchSize,
               PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
               static_cast<uint64_t>(-1), 0);
  }
  // Copies bytes into the scratch area and returns their remote address.
  uint64_t put(const void* data, size_t n) {
    if (n > kScratchSize) throw Error("restore scratch memory too small");
    write_remote(rs_.task().tid(), remote_addr(addr_), data, n);
    return addr_;
  }
  uint64_t put(const std::string& s) { return put(s.c_str(), s.size() + 1); }
  void release() { rs_.syscall(SYS_munmap, addr_, kScratchSize); }
  uint64_t addr() const { return addr_; }

 private:
  RemoteSyscalls& rs_;
  uint64_t addr_;
};

int remote_open(RemoteSyscalls& rs, Scratch& scratch, const std::string& path, int flags) {
  return static_cast<int>(rs.checked("open " + path, SYS_openat, static_cast<uint64_t>(AT_FDCWD),
                                     scratch.put(path), static_cast<uint64_t>(flags), 0));
}

std::optional<Mapping> find_kind(const std::vector<Mapping>& ms, MappingKind k) {
  for (const auto& m : ms)
    if (m.kind == k) return m;
  return std::nullopt;
}

// Moves [vvar], [vvar_vclock] and [vdso] to their saved addresses. They are
// moved out of the way first, so the saved places may overlap the current ones.
void move_vdso(RemoteSyscalls& rs, const std::vector<Mapping>& now, const std::vector<Mapping>& saved) {
  pid_t pid = rs.task().tid();
  const MappingKind kinds[] = {MappingKind::Vvar, MappingKind::VvarVclock, MappingKind::Vdso};
  std::vector<std::pair<Mapping, Mapping>> moves;  // (current, saved)
  for (auto k : kinds) {
    auto cur = find_kind(now, k);
    auto want = find_kind(saved, k);
    if (!cur && !want) continue;
    if (!cur || !want || cur->end - cur->start != want->end - want->start)
      throw Error(fmt::format("the kernel's vDSO layout differs from the image's ({})",
                              want ? want->path : cur->path),
                  "restore on a machine running the same kernel as the dump");
    moves.push_back({*cur, *want});
  }
  bool same = std::all_of(moves.begin(), moves.end(), [](auto& m) { return m.first.start == m.second.start; });
  if (!same) {
    uint64_t total = 0;
    for (auto& [cur, want] : moves) total += cur.end - cur.start;
    uint64_t tmp = find_free(now, saved, total + 0x100000);
    for (auto& [cur, want] : moves) {
      uint64_t len = cur.end - cur.start;
      rs.checked("mremap " + cur.path, SYS_mremap, cur.start, len, len,
                 MREMAP_MAYMOVE | MREMAP_FIXED, tmp);
      cur.start = tmp;
      cur.end = tmp + len;
      if (cur.kind == MappingKind::Vdso) rs.set_syscall_site(find_syscall_site(pid, remote_addr(tmp)));
      tmp += len;
    }
    for (auto& [cur, want] : moves) {
      uint64_t len = cur.end - cur.start;
      rs.checked("mremap " + cur.path, SYS_mremap, cur.start, len, len,
                 MREMAP_MAYMOVE | MREMAP_FIXED, want.start);
      if (cur.kind == MappingKind::Vdso)
        rs.set_syscall_site(find_syscall_site(pid, remote_addr(want.start)));
    }
  }
}

void apply_madvise(RemoteSyscalls& rs, const Mapping& m) {
  auto has = [&](const char* flag) {
    return (" " + m.vmflags + " ").find(std::string(" ") + flag + " ") != std::string::npos;
  };
  uint64_t len = m.end - m.start;
  if (has("hg")) rs.syscall(SYS_madvise, m.start, len, MADV_HUGEPAGE);
  if (has("nh")) rs.syscall(SYS_madvise, m.start, len, MADV_NOHUGEPAGE);
  if (has("dc")) rs.syscall(SYS_madvise, m.start, len, MADV_DONTFORK);
  if (has("dd")) rs.syscall(SYS_madvise, m.start, len, MADV_DONTDUMP);
  if (has("wf")) rs.syscall(SYS_madvise, m.start, len, MADV_WIPEONFORK);
}

// Shared memory objects get their contents through their memfd.
bool writes_content(const Mapping& m) { return m.pages_dumped > 0 && !is_shm_object(m); }

void create_mapping(RemoteSyscalls& rs, Scratch& scratch, const Mapping& m,
                    const std::map<ShmKey, int>& shm) {
  uint64_t len = m.end - m.start;
  int prot = m.prot | (writes_content(m) ? PROT_WRITE : 0);
  int flags = (m.shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED_NOREPLACE;
  if (m.vmflags.find("gd") != std::string::npos) flags |= MAP_GROWSDOWN;
  // A reservation (MAP_NORESERVE: sanitizers, Go, V8 reserve terabytes)
  // comes back as one: charged to the commit limit, it would not fit.
  if ((" " + m.vmflags + " ").find(" nr ") != std::string::npos) flags |= MAP_NORESERVE;
  int fd = -1;
  if (is_shm_object(m)) {
    long rc = rs.syscall(SYS_mmap, m.start, len, static_cast<uint64_t>(prot),
                         static_cast<uint64_t>(MAP_SHARED | MAP_FIXED_NOREPLACE),
                         static_cast<uint64_t>(shm.at(shm_key(m))), m.pgoff);
    if (rc < 0 && rc > -4096) throw SysError("mmap " + describe(m), static_cast<int>(-rc));
    apply_madvise(rs, m);
    return;
  }
  if (m.kind == MappingKind::File) {
    if (m.path.ends_with(" (deleted)"))
      throw Error(describe(m) + ": the mapped file was deleted before the dump",
                  "restoring mappings of deleted files is not supported yet");
    int oflags = (m.shared && (m.prot & PROT_WRITE)) ? O_RDWR : O_RDONLY;
    fd = remote_open(rs, scratch, m.path, oflags | O_CLOEXEC);
  } else {
    flags |= MAP_ANONYMOUS;
  }
  long rc = rs.syscall(SYS_mmap, m.start, len, static_cast<uint64_t>(prot), static_cast<uint64_t>(flags),
                       static_cast<uint64_t>(fd), m.kind == MappingKind::File ? m.pgoff : 0);
  if (fd >= 0) rs.syscall(SYS_close, static_cast<uint64_t>(fd));
  if (rc < 0 && rc > -4096) throw SysError("mmap " + describe(m), static_cast<int>(-rc));
  if (static_cast<uint64_t>(rc) != m.start)
    throw Error(fmt::format("mmap {}: the kernel placed it at {:#x}", describe(m), rc));
  apply_madvise(rs, m);
}

// Whether `path` is snap's own executable (the skeleton's /proc/PID/exe).
bool is_own_executable(const std::string& path) {
  struct stat a {}, b {};
  return ::stat(path.c_str(), &a) == 0 && ::stat("/proc/self/exe", &b) == 0 &&
         a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

void set_mm_layout(RemoteSyscalls& rs, Scratch& scratch, const image::Process& p) {
  // The kernel refuses to replace /proc/PID/exe while the old one is mapped:
  // when the job is snap itself (a `snap checkpoint` inside the job), the
  // skeleton's exe is already the right one, and is kept (exe_fd -1).
  int exe_fd = is_own_executable(p.exe) ? -1 : remote_open(rs, scratch, p.exe, O_RDONLY | O_CLOEXEC);
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
  // Struct and auxv side by side in scratch memory.
  std::vector<uint8_t> buf(sizeof map + p.mm.auxv.size() * sizeof(uint64_t));
  uint64_t base = scratch.addr();
  map.auxv = reinterpret_cast<__u64*>(base + sizeof map);
  map.auxv_size = static_cast<uint32_t>(p.mm.auxv.size() * sizeof(uint64_t));
  std::memcpy(buf.data(), &map, sizeof map);
  std::memcpy(buf.data() + sizeof map, p.mm.auxv.data(), map.auxv_size);
  scratch.put(buf.data(), buf.size());
  rs.checked("prctl(PR_SET_MM_MAP)", SYS_prctl, PR_SET_MM, PR_SET_MM_MAP, base, sizeof map, 0);
  if (exe_fd >= 0) rs.syscall(SYS_close, static_cast<uint64_t>(exe_fd));
}

}  // namespace

void rebuild_address_space(RemoteSyscalls& rs, const image::Process& p, image::ImageReader& img,
                           const std::map<ShmKey, int>& shm, const FillOptions& fill) {
  pid_t pid = rs.task().tid();
  auto now = proc::read_mappings(pid, proc::MapDetail::kRangesOnly);
  Scratch scratch(rs, find_free(now, p.mappings, kScratchSize));
  image::Mapping scratch_area;
  scratch_area.start = scratch.addr();
  scratch_area.end = scratch.addr() + kScratchSize;
  scratch_area.kind = MappingKind::Vsyscall;  // kept, like the kernel's own
  now.push_back(scratch_area);

  // 1. Drop snap's own mappings (its code, heap, stack, libraries).
  for (const auto& m : now) {
    if (is_special(m.kind)) continue;
    rs.checked("munmap " + describe(m), SYS_munmap, m.start, m.end - m.start);
  }
  vlog("restore: unmapped {} mappings of the skeleton", now.size());

  // 2. The kernel's own mappings go where the job had them.
  move_vdso(rs, now, p.mappings);

  // 3. Every saved mapping (writable where it gets content), then the
  // contents of all, then their protections.
  for (const auto& m : p.mappings)
    if (!is_special(m.kind)) create_mapping(rs, scratch, m, shm);
  uint64_t written = fill_memory(pid, p, img, fill);
  for (const auto& m : p.mappings)
    if (!is_special(m.kind) && writes_content(m) && !(m.prot & PROT_WRITE))
      rs.checked("mprotect " + describe(m), SYS_mprotect, m.start, m.end - m.start,
                 static_cast<uint64_t>(m.prot));
  vlog("restore: {} mappings created, {} MiB written", p.mappings.size(), written >> 20);

  // 4. brk, code/data/stack bounds, args, env, auxv and /proc/PID/exe.
  set_mm_layout(rs, scratch, p);
  scratch.release();
  for (const auto& [key, fd] : shm) rs.syscall(SYS_close, static_cast<uint64_t>(fd));
}

}  // namespace snap::restore
