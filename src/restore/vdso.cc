#include "restore/vdso.h"

#include <sys/mman.h>
#include <sys/syscall.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>

#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "restore/address_space.h"
#include "tracer/proc.h"
#include "tracer/registers.h"
#include "tracer/task.h"
#include "tracer/vdso.h"

namespace snap::restore {

namespace {

using image::Mapping;
using image::MappingKind;

constexpr size_t kFarJumpBytes = 13;  // movabs r11, imm64; jmp r11
constexpr size_t kNearJumpBytes = 5;  // jmp rel32

std::optional<Mapping> find_kind(const std::vector<Mapping>& ms, MappingKind k) {
  for (const auto& m : ms)
    if (m.kind == k) return m;
  return std::nullopt;
}

std::string kernel_hint(const image::Checkpoint& ckpt) {
  return fmt::format("restore on a node running the dump's kernel ({})", ckpt.kernel_release);
}

// The dump's image with, at each function, a jump to this kernel's function
// of the same name, for the image mapped at `at` and this kernel's vDSO at
// `target`. r11 is free at a function's entry (the ABI's scratch register).
std::vector<uint8_t> proxy_image(const VdsoPlan& plan, uint64_t at, uint64_t target) {
  std::vector<uint8_t> out = plan.proxy;
  for (const auto& j : plan.jumps) {
    uint8_t* code = out.data() + j.from;
    const uint64_t to = target + j.to;
    const int64_t rel = static_cast<int64_t>(to - (at + j.from + kNearJumpBytes));
    if (rel >= INT32_MIN && rel <= INT32_MAX) {
      const int32_t rel32 = static_cast<int32_t>(rel);
      code[0] = 0xe9;
      std::memcpy(code + 1, &rel32, 4);
    } else {
      code[0] = 0x49, code[1] = 0xbb;
      std::memcpy(code + 2, &to, 8);
      code[10] = 0x41, code[11] = 0xff, code[12] = 0xe3;
    }
  }
  return out;
}

// Where a proxy goes: the job's [vdso] range, mapped anonymous, written,
// then made read-only and executable as the kernel's is.
void map_proxy(RemoteSyscalls& rs, const VdsoPlan& plan, const Mapping& want, uint64_t target) {
  const uint64_t len = want.end - want.start;
  if (plan.proxy.size() > len)
    throw Error(fmt::format("the dump's vDSO image ({} bytes) is larger than the job's [vdso] "
                            "mapping ({:#x}-{:#x})",
                            plan.proxy.size(), want.start, want.end));
  rs.checked("mmap of the vDSO proxy", SYS_mmap, want.start, len, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, static_cast<uint64_t>(-1), 0);
  const auto bytes = proxy_image(plan, want.start, target);
  write_remote(rs.task().tid(), remote_addr(want.start), bytes.data(), bytes.size());
  rs.checked("mprotect of the vDSO proxy", SYS_mprotect, want.start, len, PROT_READ | PROT_EXEC);
}

}  // namespace

VdsoPlan plan_vdso(const image::Checkpoint& ckpt) {
  VdsoPlan plan;
  const bool any = std::any_of(ckpt.processes.begin(), ckpt.processes.end(), [](const auto& p) {
    return find_kind(p.mappings, MappingKind::Vdso).has_value();
  });
  if (ckpt.vdso.empty() || !any) return plan;
  const auto here = own_vdso().image();
  if (std::equal(here.begin(), here.end(), ckpt.vdso.begin(), ckpt.vdso.end())) return plan;

  std::map<std::string, uint64_t> ours;
  for (const auto& f : vdso_functions(here)) ours.emplace(f.name, f.offset);
  std::string lacking;
  std::map<uint64_t, VdsoPlan::Jump> jumps;  // aliases share an offset
  for (const auto& f : vdso_functions(ckpt.vdso)) {
    auto it = ours.find(f.name);
    if (it == ours.end()) {
      lacking += (lacking.empty() ? "" : ", ") + f.name;
      continue;
    }
    if (f.size < kFarJumpBytes)
      throw Error(fmt::format("the dump's vDSO function {} is {} bytes, too short for a jump to "
                              "this kernel's",
                              f.name, f.size),
                  kernel_hint(ckpt));
    jumps.emplace(f.offset, VdsoPlan::Jump{f.offset, it->second});
  }
  if (!lacking.empty())
    throw Error(fmt::format("this kernel's vDSO lacks what the job's kernel ({}) had: {}",
                            ckpt.kernel_release, lacking),
                kernel_hint(ckpt));
  for (const auto& p : ckpt.processes) {
    const auto m = find_kind(p.mappings, MappingKind::Vdso);
    if (!m) continue;
    for (const auto& t : p.threads) {
      const uint64_t ip = Registers::from_bytes(t.gpregs).ip().as_int();
      if (ip >= m->start && ip < m->end)
        throw Error(fmt::format("pid {} thread {} was stopped inside the vDSO of the dump's kernel "
                                "({}, at offset {:#x}), whose code this kernel's differs from",
                                p.pid, t.tid, ckpt.kernel_release, ip - m->start),
                    kernel_hint(ckpt));
    }
  }
  for (const auto& [off, j] : jumps) plan.jumps.push_back(j);
  plan.proxy = ckpt.vdso;
  return plan;
}

// [vvar], [vvar_vclock] and [vdso] are moved out of the way first, so the
// saved places may overlap the current ones.
void place_vdso(RemoteSyscalls& rs, const std::vector<Mapping>& now, const std::vector<Mapping>& saved,
                const VdsoPlan& plan) {
  pid_t pid = rs.task().tid();
  const MappingKind kinds[] = {MappingKind::Vvar, MappingKind::VvarVclock, MappingKind::Vdso};
  std::vector<std::pair<Mapping, Mapping>> moves;  // (current, saved)
  const bool job_had_none = !find_kind(saved, MappingKind::Vdso) &&
                            !find_kind(saved, MappingKind::Vvar) &&
                            !find_kind(saved, MappingKind::VvarVclock);
  // Proxied, this kernel's mappings stay together wherever they are put.
  const bool keep_here = job_had_none || plan.proxied();
  for (auto k : kinds) {
    auto cur = find_kind(now, k);
    auto want = find_kind(saved, k);
    if (!cur && !want) continue;
    if (keep_here) {
      if (cur) moves.push_back({*cur, *cur});
      continue;
    }
    if (!cur || !want || cur->end - cur->start != want->end - want->start)
      throw Error(fmt::format("the kernel's vDSO layout differs from the image's ({})",
                              want ? want->path : cur->path),
                  "restore on a machine running the same kernel as the dump");
    moves.push_back({*cur, *want});
  }
  bool same = !keep_here &&
              std::all_of(moves.begin(), moves.end(), [](auto& m) { return m.first.start == m.second.start; });
  if (same) return;
  uint64_t total = 0;
  for (auto& [cur, want] : moves) total += cur.end - cur.start;
  uint64_t tmp = find_free(now, saved, total + 0x100000);
  uint64_t vdso_at = 0;
  for (auto& [cur, want] : moves) {
    uint64_t len = cur.end - cur.start;
    rs.checked("mremap " + cur.path, SYS_mremap, cur.start, len, len,
               MREMAP_MAYMOVE | MREMAP_FIXED, tmp);
    cur.start = tmp;
    cur.end = tmp + len;
    if (cur.kind == MappingKind::Vdso) {
      vdso_at = tmp;
      rs.set_syscall_site(find_syscall_site(pid, remote_addr(tmp)));
    }
    tmp += len;
  }
  if (job_had_none) return;  // kept out of the job's way until drop_vdso
  if (plan.proxied()) {
    const auto want = find_kind(saved, MappingKind::Vdso);
    if (!vdso_at) throw Error("this kernel gave the restored process no [vdso] to call into");
    map_proxy(rs, plan, *want, vdso_at);
    vlog("restore: pid {}: this kernel's vDSO at {:#x}; the job's calls at {:#x} jump to it ({} "
         "functions)",
         pid, vdso_at, want->start, plan.jumps.size());
    return;
  }
  for (auto& [cur, want] : moves) {
    uint64_t len = cur.end - cur.start;
    rs.checked("mremap " + cur.path, SYS_mremap, cur.start, len, len,
               MREMAP_MAYMOVE | MREMAP_FIXED, want.start);
    if (cur.kind == MappingKind::Vdso)
      rs.set_syscall_site(find_syscall_site(pid, remote_addr(want.start)));
  }
}

void drop_vdso(RemoteSyscalls& rs, const std::vector<Mapping>& saved) {
  if (find_kind(saved, MappingKind::Vdso) || find_kind(saved, MappingKind::Vvar)) return;
  pid_t pid = rs.task().tid();
  auto site = find_code_syscall_site(pid);
  if (!site) throw Error(fmt::format("pid {}: the job had no [vdso] and no system call instruction "
                                     "in its code is left to use instead", pid));
  rs.set_syscall_site(*site);
  for (const auto& m : proc::read_mappings(pid, proc::MapDetail::kRangesOnly))
    if (m.kind == MappingKind::Vdso || m.kind == MappingKind::Vvar ||
        m.kind == MappingKind::VvarVclock)
      rs.checked("munmap " + m.path, SYS_munmap, m.start, m.end - m.start);
  vlog("restore: pid {} had no vDSO; the skeleton's is unmapped", pid);
}

}  // namespace snap::restore
