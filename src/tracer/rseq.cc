#include "tracer/rseq.h"

#include <sys/uio.h>

#include <algorithm>
#include <cstddef>

#include "base/error.h"
#include "tracer/remote.h"

namespace snap {

namespace {

// include/uapi/linux/rseq.h: struct rseq's rseq_cs field, and the
// descriptor it points to.
constexpr uint64_t kRseqCsOffset = 8;
struct RseqCs {
  uint32_t version;
  uint32_t flags;
  uint64_t start_ip;
  uint64_t post_commit_offset;
  uint64_t abort_ip;
};

}  // namespace

std::vector<RseqState> read_rseq_states(pid_t pid, const std::vector<const Task*>& tasks) {
  std::vector<RseqState> out(tasks.size());
  std::vector<size_t> which;  // the tasks with an area
  for (size_t i = 0; i < tasks.size(); i++) {
    out[i].area = tasks[i]->rseq_configuration();
    if (out[i].area) which.push_back(i);
  }
  auto word_of = [&](size_t i) { return remote_addr((*out[i].area)[0] + kRseqCsOffset); };
  std::vector<uint64_t> words(which.size(), 0);
  std::vector<iovec> local(which.size()), remote(which.size());
  for (size_t j = 0; j < which.size(); j++) {
    local[j] = {&words[j], sizeof words[j]};
    remote[j] = {reinterpret_cast<void*>(word_of(which[j]).as_int()), sizeof words[j]};
  }
  constexpr size_t kBatch = 512;  // iovecs a call (IOV_MAX is 1024)
  for (size_t k = 0; k < which.size(); k += kBatch) {
    const size_t n = std::min(kBatch, which.size() - k);
    const ssize_t got = ::process_vm_readv(pid, &local[k], n, &remote[k], n, 0);
    if (got == static_cast<ssize_t>(n * sizeof(uint64_t))) continue;
    for (size_t j = k; j < k + n; j++) {  // one by one: which could not be read
      words[j] = 0;
      try {
        read_remote(pid, word_of(which[j]), &words[j], sizeof words[j]);
      } catch (const Error&) {
        words[j] = 0;
      }
    }
  }
  for (size_t j = 0; j < which.size(); j++) out[which[j]].cs = remote_addr(words[j]);
  return out;
}

RseqState read_rseq_state(const Task& task) {
  return read_rseq_states(task.tid(), {&task}).at(0);
}

Registers leave_rseq_critical_section(const Task& task, const Registers& regs,
                                      const RseqState& state) {
  if (!state.area || state.cs.is_null()) return regs;
  const uint64_t area = (*state.area)[0], sig = (*state.area)[2];
  const pid_t tid = task.tid();
  try {
    RseqCs cs{};
    read_remote(tid, state.cs, &cs, sizeof cs);
    const uint64_t ip = regs.ip().as_int();
    if (!in_rseq_critical_section(ip, cs.start_ip, cs.post_commit_offset)) return regs;
    // The kernel checks the signature before the handler, and kills a
    // thread whose handler lacks it: left to it then.
    uint32_t before = 0;
    read_remote(tid, remote_addr(cs.abort_ip - sizeof before), &before, sizeof before);
    if (before != static_cast<uint32_t>(sig)) return regs;
    const uint64_t zero = 0;
    write_remote(tid, remote_addr(area + kRseqCsOffset), &zero, sizeof zero);
    Registers out = regs;
    out.set_ip(remote_addr(cs.abort_ip));
    return out;
  } catch (const Error&) {
    return regs;  // a descriptor the kernel could not read either
  }
}

}  // namespace snap
