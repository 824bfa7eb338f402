// AIO contexts (io_setup): each is a ring the kernel maps into the process.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <vector>

#include "image/checkpoint.h"

namespace snap {

// The ring's layout (the kernel's struct aio_ring): a 32-byte header (id,
// nr, head, tail, magic, ...), then nr struct io_event of 32 bytes.
constexpr uint64_t kAioRingHeaderBytes = 32, kAioEventBytes = 32;

// Fills aio_nr, aio_head, aio_tail and aio_events (the completed events the
// job has not collected) of every Aio mapping from its ring. Throws, naming
// the pid and the context, for a ring whose header makes no sense.
void read_aio_rings(pid_t pid, std::vector<image::Mapping>& mappings);

}  // namespace snap
