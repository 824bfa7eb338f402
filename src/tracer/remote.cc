#include "tracer/remote.h"
#include "tracer/rseq.h"

#include <capstone/capstone.h>
#include <fcntl.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fmt/core.h>
#include <mutex>

#include "base/error.h"
#include "base/scoped_fd.h"
#include "tracer/proc.h"
#include "tracer/task.h"
#include "tracer/vdso.h"

namespace snap {

namespace {

std::string where(pid_t pid, remote_addr a, size_t n) {
  return fmt::format("pid {} at {:#x} ({} bytes)", pid, a.as_int(), n);
}

void mem_file_io(pid_t pid, remote_addr a, void* buf, size_t n, bool write) {
  std::string path = "/proc/" + std::to_string(pid) + "/mem";
  ScopedFd fd(::open(path.c_str(), (write ? O_RDWR : O_RDONLY) | O_CLOEXEC));
  if (!fd) throw SysError("open " + path, errno);
  size_t done = 0;
  while (done < n) {
    auto off = static_cast<off_t>(a.as_int() + done);
    ssize_t r = write ? ::pwrite(fd.get(), static_cast<const char*>(buf) + done, n - done, off)
                      : ::pread(fd.get(), static_cast<char*>(buf) + done, n - done, off);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0)
      throw SysError(std::string(write ? "write to " : "read from ") + where(pid, a, n),
                     r < 0 ? errno : EIO);
    done += static_cast<size_t>(r);
  }
}

}  // namespace

void read_remote(pid_t pid, remote_addr src, void* dst, size_t n) {
  iovec local{dst, n}, remote{reinterpret_cast<void*>(src.as_int()), n};
  ssize_t r = ::process_vm_readv(pid, &local, 1, &remote, 1, 0);
  if (r == static_cast<ssize_t>(n)) return;
  mem_file_io(pid, src, dst, n, false);
}

void write_remote(pid_t pid, remote_addr dst, const void* src, size_t n) {
  iovec local{const_cast<void*>(src), n}, remote{reinterpret_cast<void*>(dst.as_int()), n};
  ssize_t r = ::process_vm_writev(pid, &local, 1, &remote, 1, 0);
  if (r == static_cast<ssize_t>(n)) return;
  mem_file_io(pid, dst, const_cast<void*>(src), n, true);
}

namespace {

// The first offset in snap's vDSO where Capstone decodes a `syscall` whose
// following instructions satisfy `accept` (given all decoded from there,
// [0] being the syscall); 0 when there is none.
template <typename Accept>
uint64_t find_own_syscall(Accept accept) {
  const OwnVdso& v = own_vdso();
  csh cs;
  if (cs_open(CS_ARCH_X86, CS_MODE_64, &cs) != CS_ERR_OK) throw Error("capstone: cs_open failed");
  cs_option(cs, CS_OPT_DETAIL, CS_OPT_ON);
  uint64_t found = 0;
  // Candidate bytes 0f 05, each confirmed by decoding from there.
  for (uint64_t i = 0; i + 1 < v.size && !found; i++) {
    if (v.bytes[i] != 0x0f || v.bytes[i + 1] != 0x05) continue;
    cs_insn* insn = nullptr;
    size_t avail = std::min<uint64_t>(v.size - i, 64);
    size_t count = cs_disasm(cs, v.bytes + i, avail, v.base + i, 16, &insn);
    if (count && insn[0].id == X86_INS_SYSCALL && accept(insn, count)) found = i;
    if (count) cs_free(insn, count);
  }
  cs_close(&cs);
  return found;
}

// Any `syscall` instruction.
uint64_t own_vdso_syscall_offset() {
  static const uint64_t offset = [] {
    uint64_t off = find_own_syscall([](const cs_insn*, size_t) { return true; });
    if (!off) throw Error("no syscall instruction found in the vDSO");
    return off;
  }();
  return offset;
}

// A `syscall; (xor r,r | nop)*; ret` sequence, or 0.
uint64_t own_vdso_syscall_ret_offset() {
  static const uint64_t offset = find_own_syscall([](const cs_insn* insn, size_t count) {
    for (size_t k = 1; k < count; k++) {
      const cs_insn& in = insn[k];
      if (in.id == X86_INS_RET && in.size == 1) return true;
      const cs_x86& x = in.detail->x86;
      bool self_xor = in.id == X86_INS_XOR && x.op_count == 2 && x.operands[0].type == X86_OP_REG &&
                      x.operands[1].type == X86_OP_REG && x.operands[0].reg == x.operands[1].reg;
      if (!self_xor && in.id != X86_INS_NOP) return false;
    }
    return false;
  });
  return offset;
}

// Where the kernel put the process's vDSO (auxv AT_SYSINFO_EHDR), if it is
// still there: the same bytes as snap's own (one kernel, one vDSO). This
// costs no walk over the process's mappings, which may be many thousands.
std::optional<remote_addr> vdso_base_from_auxv(pid_t pid) {
  auto text = proc::try_read_file("/proc/" + std::to_string(pid) + "/auxv");
  if (!text) return std::nullopt;
  uint64_t base = 0;
  for (size_t i = 0; i + 16 <= text->size(); i += 16) {
    uint64_t kv[2];
    std::memcpy(kv, text->data() + i, sizeof kv);
    if (kv[0] == AT_SYSINFO_EHDR) base = kv[1];
  }
  if (!base) return std::nullopt;
  const OwnVdso& v = own_vdso();
  std::vector<uint8_t> got(v.size);
  iovec local{got.data(), got.size()}, remote{reinterpret_cast<void*>(base), got.size()};
  if (::process_vm_readv(pid, &local, 1, &remote, 1, 0) != static_cast<ssize_t>(got.size()) ||
      std::memcmp(got.data(), v.bytes, got.size()) != 0)
    return std::nullopt;
  return remote_addr(base);
}

std::optional<remote_addr> vdso_base_of(pid_t pid) {
  if (auto base = vdso_base_from_auxv(pid)) return base;  // moved (restore moves it): the maps say
  for (const auto& m : proc::read_mappings(pid, proc::MapDetail::kRangesOnly))
    if (m.kind == image::MappingKind::Vdso) return remote_addr(m.start);
  return std::nullopt;
}

bool is_syscall_at(pid_t pid, remote_addr site) {
  uint8_t b[2];
  read_remote(pid, site, b, 2);
  return b[0] == 0x0f && b[1] == 0x05;
}

}  // namespace

void prepare_syscall_sites() {
  try {
    own_vdso_syscall_offset();
    own_vdso_syscall_ret_offset();
  } catch (const Error&) {
    // Said where a site is needed (a process without a vDSO needs none).
  }
}

remote_addr find_syscall_site(pid_t pid, remote_addr vdso_base) {
  remote_addr site = vdso_base + static_cast<int64_t>(own_vdso_syscall_offset());
  if (!is_syscall_at(pid, site))
    throw Error(fmt::format("pid {}: its vDSO differs from snap's (no syscall at {:#x})", pid,
                            site.as_int()),
                "was the process started under another kernel?");
  return site;
}

std::optional<remote_addr> find_code_syscall_site(pid_t pid) {
  std::vector<uint8_t> buf(64 << 10);
  for (const auto& m : proc::read_mappings(pid, proc::MapDetail::kRangesOnly)) {
    if (!(m.prot & PROT_EXEC) || m.kind != image::MappingKind::File) continue;
    // Chunks overlap by a byte, so an instruction across a boundary is seen.
    for (uint64_t at = m.start; at + 1 < m.end; at += buf.size() - 1) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), m.end - at));
      iovec local{buf.data(), n}, remote{reinterpret_cast<void*>(at), n};
      if (::process_vm_readv(pid, &local, 1, &remote, 1, 0) != static_cast<ssize_t>(n)) break;
      for (size_t i = 0; i + 1 < n; i++)
        if (buf[i] == 0x0f && buf[i + 1] == 0x05) return remote_addr(at + i);
    }
  }
  return std::nullopt;
}

remote_addr find_syscall_site(pid_t pid) {
  if (auto base = vdso_base_of(pid)) return find_syscall_site(pid, *base);
  // It unmapped its vDSO: any `syscall` in its own code serves.
  if (auto site = find_code_syscall_site(pid)) return *site;
  throw Error("pid " + std::to_string(pid) +
              " has no [vdso] mapping and no system call instruction in its code");
}

std::optional<remote_addr> find_syscall_ret_site(pid_t pid) {
  uint64_t off = own_vdso_syscall_ret_offset();
  auto base = vdso_base_of(pid);
  if (!off || !base) return std::nullopt;
  remote_addr site = *base + static_cast<int64_t>(off);
  if (!is_syscall_at(pid, site)) return std::nullopt;
  return site;
}

RemoteSyscalls::RemoteSyscalls(Task& task, remote_addr syscall_site)
    : task_(task),
      site_(syscall_site),
      // Before any call runs in it: out of a restartable sequence it was
      // stopped in (tracer/rseq.h).
      final_(leave_rseq_critical_section(task, task.regs(), read_rseq_state(task))
                 .with_restart_applied()) {}

RemoteSyscalls::~RemoteSyscalls() {
  try {
    task_.set_regs(final_);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "snap: warning: could not restore registers of pid %d: %s\n",
                 task_.tid(), e.what());
  }
}

long RemoteSyscalls::syscall(long nr, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4,
                             uint64_t a5, uint64_t a6) {
  Registers r = final_;
  r.set_ip(site_);
  if (call_sp_) r.set_sp(*call_sp_);
  r.set_syscall(nr, {a1, a2, a3, a4, a5, a6});
  task_.set_regs(r);
  last_event_ = 0;
  last_event_msg_ = -1;
  // The syscall-entry stop. Other stops may come first (an interrupt still
  // pending from the seize, say): they are passed over, never mistaken for
  // it, or the entry stop's -ENOSYS would be read as the result below.
  for (;;) {
    int status = task_.resume_and_wait(PTRACE_SYSCALL);
    if (WSTOPSIG(status) == (SIGTRAP | 0x80) && (status >> 16) == 0) break;
  }
  for (;;) {
    int status = task_.resume_and_wait(PTRACE_SYSCALL);
    if (WSTOPSIG(status) == (SIGTRAP | 0x80)) break;  // syscall-exit stop
    if (int event = status >> 16) {  // e.g. PTRACE_EVENT_CLONE on the way
      unsigned long msg = 0;
      ::ptrace(PTRACE_GETEVENTMSG, task_.tid(), nullptr, &msg);
      last_event_ = event;
      last_event_msg_ = static_cast<long>(msg);
    }
  }
  return task_.regs().syscall_result();
}

long RemoteSyscalls::checked(const std::string& what, long nr, uint64_t a1, uint64_t a2,
                             uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6) {
  long rc = syscall(nr, a1, a2, a3, a4, a5, a6);
  if (rc < 0 && rc > -4096)
    throw SysError(what + " in pid " + std::to_string(task_.tid()), static_cast<int>(-rc));
  return rc;
}

}  // namespace snap
