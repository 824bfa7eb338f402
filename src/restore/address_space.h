// Rebuilding a saved address space inside the skeleton process: the system
// calls run in batches inside the skeleton (tracer/batch.h), a handful of
// ptrace round trips whatever the number of mappings; the pages are written
// from snap.
#pragma once

#include <sys/types.h>

#include <map>

#include "image/checkpoint.h"
#include "image/image_reader.h"
#include "restore/files.h"
#include "restore/fill.h"
#include "restore/vdso.h"
#include "tracer/remote.h"

namespace snap::restore {

// Replaces the skeleton's memory (a copy of snap's) with the saved one:
// unmaps snap's mappings, places [vvar]/[vvar_vclock]/[vdso] as `vdso`
// says (restore/vdso.h), recreates every mapping, fills the saved pages from the image,
// then restores protections and the mm layout (PR_SET_MM_MAP). Shared
// memory objects are mapped from their memfds (`files.shm`: fds in the
// process, closed at the end), whose contents OpenFiles wrote, and
// mappings of deleted files and memfds from the remade files
// (`files.ghosts`, closed at the end too). Mappings in `inherited` (by
// their start; cow_sharing.h) are moved from the ranges the skeleton holds
// parked, which stay until then, and get only their own pages written. The
// caller's RemoteSyscalls keeps working throughout (its syscall site
// follows the vDSO).
void rebuild_address_space(RemoteSyscalls& rs, const image::Process& p, image::ImageReader& img,
                           const ProcessFiles& files, const FillOptions& fill,
                           const VdsoPlan& vdso,
                           const std::map<uint64_t, InheritedMapping>* inherited = nullptr);

// A page-aligned range of `size` bytes free in both layouts (the
// skeleton's now, the job's saved one), from 256 MiB up.
uint64_t find_free(const std::vector<image::Mapping>& a, const std::vector<image::Mapping>& b,
                   uint64_t size);

}  // namespace snap::restore
