#include "tracer/aio_rings.h"

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
    if (h.head != h.tail)
      throw Error(fmt::format("pid {}: the AIO context {:#x} holds {} completed event(s) the job "
                              "has not collected (io_getevents)",
                              pid, m.start, (h.tail + h.nr - h.head) % h.nr),
                  "snap cannot restore completed AIO events; dump when they are collected");
    m.aio_nr = h.nr;
  }
}

}  // namespace snap
