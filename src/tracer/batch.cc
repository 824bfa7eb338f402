#include "tracer/batch.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>

#include <cstring>
#include <fmt/core.h>
#include <stdexcept>
#include <utility>

#include "base/error.h"
#include "tracer/remote.h"
#include "tracer/task.h"

extern "C" {
extern const uint8_t snap_batch_loop_start[];
extern const uint8_t snap_batch_loop_end[];
}

namespace snap {

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kCallBytes = 64;

uint64_t page_round(uint64_t n) { return (n + kPage - 1) & ~(kPage - 1); }
size_t loop_size() { return static_cast<size_t>(snap_batch_loop_end - snap_batch_loop_start); }

}  // namespace

// [code page][calls: half the arena][argument data: the other half]
uint64_t SyscallBatch::footprint(uint64_t arena) { return kPage + page_round(arena); }

SyscallBatch::SyscallBatch(RemoteSyscalls& rs, std::optional<remote_addr> at, uint64_t arena)
    : rs_(rs), arena_(page_round(arena)), max_calls_(arena_ / 2 / kCallBytes) {
  static_assert(sizeof(Call) == kCallBytes);
  if (loop_size() > kPage) throw std::logic_error("batch loop larger than a page");
  int flags = MAP_PRIVATE | MAP_ANONYMOUS | (at ? MAP_FIXED_NOREPLACE : 0);
  base_ = remote_addr(static_cast<uint64_t>(
      rs.checked("mmap of the system call batch area", SYS_mmap, at ? at->as_int() : 0,
                 footprint(arena_), PROT_READ | PROT_WRITE, static_cast<uint64_t>(flags),
                 static_cast<uint64_t>(-1), 0)));
  try {
    if (at && base_ != *at)
      throw Error(fmt::format("the batch area of pid {} went to {:#x}, not {:#x}", rs.task().tid(),
                              base_.as_int(), at->as_int()));
    write_remote(rs.task().tid(), base_, snap_batch_loop_start, loop_size());
    rs.checked("mprotect of the system call batch loop", SYS_mprotect, base_.as_int(), kPage,
               PROT_READ | PROT_EXEC);
  } catch (...) {
    rs.syscall(SYS_munmap, base_.as_int(), footprint(arena_));
    throw;
  }
  data_.reserve(arena_ / 2);
}

SyscallBatch::~SyscallBatch() { rs_.syscall(SYS_munmap, base_.as_int(), footprint(arena_)); }

void SyscallBatch::reserve(size_t calls, size_t data) {
  size_t data_room = arena_ / 2;
  if (calls > max_calls_ || data + 16 * calls > data_room)
    throw std::logic_error("a batch reservation larger than the arena");
  if (calls_.size() + calls > max_calls_ || data_.size() + data + 16 * calls > data_room)
    run_queue(rs_.task());
}

remote_addr SyscallBatch::put(const void* data, size_t n) {
  size_t at = (data_.size() + 15) & ~size_t{15};
  if (at + n > arena_ / 2) throw std::logic_error("batch argument data without room (reserve first)");
  data_.resize(at + n);
  std::memcpy(data_.data() + at, data, n);
  return base_ + static_cast<int64_t>(kPage + arena_ / 2 + at);
}

size_t SyscallBatch::add(std::string what, Check check, long nr, uint64_t a1, uint64_t a2,
                         uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6) {
  if (calls_.size() >= max_calls_) throw std::logic_error("batch call without room (reserve first)");
  calls_.push_back(Call{{static_cast<uint64_t>(nr), a1, a2, a3, a4, a5, a6,
                         static_cast<uint64_t>(check)}});
  what_.push_back(std::move(what));
  return results_.size() + calls_.size() - 1;
}

std::vector<long> SyscallBatch::run() { return run(rs_.task()); }

std::vector<long> SyscallBatch::run(Task& task) {
  run_queue(task);
  return std::exchange(results_, {});
}

void SyscallBatch::read(remote_addr at, void* out, size_t n) const {
  read_remote(rs_.task().tid(), at, out, n);
}

void SyscallBatch::write(remote_addr at, const void* data, size_t n) const {
  write_remote(rs_.task().tid(), at, data, n);
}

void SyscallBatch::run_queue(Task& task) {
  if (calls_.empty()) return;
  const pid_t tid = task.tid();
  const size_t n = calls_.size();
  const remote_addr calls_at = base_ + static_cast<int64_t>(kPage);
  write_remote(tid, calls_at, calls_.data(), n * kCallBytes);
  if (!data_.empty())
    write_remote(tid, calls_at + static_cast<int64_t>(arena_ / 2), data_.data(), data_.size());

  // The loop ends on int3. A SIGTRAP the kernel forces on a thread that
  // blocks it resets the job's own SIGTRAP handler to the default (the
  // restored job would then die of its next SIGTRAP): unblock it meanwhile.
  const uint64_t trap_bit = uint64_t{1} << (SIGTRAP - 1);
  const uint64_t mask = task.signal_mask();
  if (mask & trap_bit) task.set_signal_mask(mask & ~trap_bit);
  const Registers saved = task.regs();
  Registers r = saved;
  r.set_ip(base_);
  r.raw().rdi = calls_at.as_int();
  r.raw().rsi = n;
  r.raw().orig_rax = static_cast<uint64_t>(-1);  // no syscall restart on resume
  task.set_regs(r);
  const remote_addr end = base_ + static_cast<int64_t>(loop_size());
  for (;;) {
    int status = task.resume_and_wait(PTRACE_CONT);
    if (status >> 16) continue;  // a ptrace event on the way (none expected)
    if (WSTOPSIG(status) == SIGTRAP && task.regs().ip() == end) break;
    throw Error(fmt::format("pid {} stopped at {:#x} (signal {}) inside a system call batch", tid,
                            task.regs().ip().as_int(), WSTOPSIG(status)));
  }
  const size_t stopped_at = task.regs().raw().r12;
  task.set_regs(saved);
  if (mask & trap_bit) task.set_signal_mask(mask);

  std::vector<Call> done(n);
  read_remote(tid, calls_at, done.data(), n * kCallBytes);
  std::vector<std::string> what = std::move(what_);
  calls_.clear();
  what_.clear();
  data_.clear();
  for (size_t i = 0; i < std::min(stopped_at, n); i++) results_.push_back(static_cast<long>(done[i].words[7]));
  if (stopped_at >= n) return;
  results_.clear();
  long rc = static_cast<long>(done[stopped_at].words[7]);
  if (rc < 0 && rc > -4096)
    throw SysError(fmt::format("{} in pid {}", what[stopped_at], tid), static_cast<int>(-rc));
  throw Error(fmt::format("{} in pid {}: the kernel returned {:#x}, not {:#x}", what[stopped_at], tid,
                          static_cast<uint64_t>(rc), done[stopped_at].words[1]));
}

}  // namespace snap
