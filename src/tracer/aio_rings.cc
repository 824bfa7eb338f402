#include "tracer/aio_rings.h"

#include <algorithm>
#include <cstdint>
#include <fmt/core.h>

#include "base/error.h"
#include "tracer/remote.h"

namespace snap {

namespace {
// The start of the kernel's struct aio_ring (fs/aio.c), at the ring's start.
struct AioRingHeader {
  uint32_t id, nr, head, tail, magic;
};
constexpr uint32_t kAioRingMagic = 0xa10a10a1;
}  // namespace

void read_aio_rings(pid_t pid, std::vector<image::Mapping>& mappings) {
  for (auto& m : mappings) {
    if (m.kind != image::MappingKind::Aio) continue;
    AioRingHeader h{};
    read_remote(pid, remote_addr(m.start), &h, sizeof h);
    if (h.magic != kAioRingMagic)
      throw Error(fmt::format("pid {}: the AIO ring at {:#x} has no ring header (magic {:#x})", pid,
                              m.start, h.magic));
    const uint64_t slots = (m.end - m.start - kAioRingHeaderBytes) / kAioEventBytes;
    if (h.nr == 0 || h.nr > slots || h.head >= h.nr || h.tail >= h.nr)
      throw Error(fmt::format("pid {}: the AIO ring at {:#x} is inconsistent (nr {}, head {}, "
                              "tail {} in {} bytes)",
                              pid, m.start, h.nr, h.head, h.tail, m.end - m.start));
    m.aio_nr = h.nr;
    m.aio_head = h.head;
    m.aio_tail = h.tail;
    // The completed events the job has not collected: from head to the
    // ring's end, then from its start (it wraps at nr).
    const uint32_t pending = (h.tail + h.nr - h.head) % h.nr;
    m.aio_events.resize(uint64_t{pending} * kAioEventBytes);
    const uint32_t first = std::min(pending, h.nr - h.head);
    const auto slot = [&](uint64_t i) { return remote_addr(m.start + kAioRingHeaderBytes + i * kAioEventBytes); };
    if (first) read_remote(pid, slot(h.head), m.aio_events.data(), uint64_t{first} * kAioEventBytes);
    if (pending > first)
      read_remote(pid, slot(0), m.aio_events.data() + uint64_t{first} * kAioEventBytes,
                  uint64_t{pending - first} * kAioEventBytes);
  }
}

}  // namespace snap
