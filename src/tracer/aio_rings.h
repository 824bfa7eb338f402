// AIO contexts (io_setup): each is a ring the kernel maps into the process.
#pragma once

#include <sys/types.h>

#include <vector>

#include "image/checkpoint.h"

namespace snap {

// Fills aio_nr of every Aio mapping from its ring's header. Refuses (throws,
// naming the pid and the context) a ring holding completed events the job
// has not reaped yet: io_setup makes an empty ring, and the kernel keeps
// its own copy of where the ring ends.
void read_aio_rings(pid_t pid, std::vector<image::Mapping>& mappings);

}  // namespace snap
