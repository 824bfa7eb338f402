#include "tracer/rseq.h"

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

Registers leave_rseq_critical_section(const Task& task, const Registers& regs,
                                      const std::optional<std::array<uint64_t, 3>>& rseq) {
  if (!rseq) return regs;
  const uint64_t area = (*rseq)[0], sig = (*rseq)[2];
  const pid_t tid = task.tid();
  try {
    uint64_t cs_at = 0;
    read_remote(tid, remote_addr(area + kRseqCsOffset), &cs_at, sizeof cs_at);
    if (!cs_at) return regs;
    RseqCs cs{};
    read_remote(tid, remote_addr(cs_at), &cs, sizeof cs);
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
    return regs;  // an area or descriptor the kernel could not read either
  }
}

}  // namespace snap
