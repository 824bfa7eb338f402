// Guard regions (MADV_GUARD_INSTALL, Linux 6.13): pages of a mapping where
// any access faults, as thread libraries and allocators put them between
// stacks and heaps instead of PROT_NONE mappings of their own. They live in
// the page tables only; smaps shows "gu" on a mapping that may hold some
// (Linux 6.18), and PAGEMAP_SCAN (PAGE_IS_GUARD) or pagemap's guard bit
// names their pages.
#pragma once

#include <sys/types.h>

#include <vector>

#include "image/checkpoint.h"

namespace snap {

// Fills Mapping::guards of each of `mappings` whose VmFlags say "gu", from
// `pid`'s page tables (the job while stopped, or its snapshot: a fork keeps
// them but in MADV_WIPEONFORK mappings). Throws SysError naming the pid and
// mapping where pagemap cannot be read.
void record_guard_regions(pid_t pid, std::vector<image::Mapping*> mappings);
void record_guard_regions(pid_t pid, std::vector<image::Mapping>& mappings);

}  // namespace snap
