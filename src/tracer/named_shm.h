// Shared memory that has a name: files on tmpfs (/dev/shm) or in the job's
// temporary directories (tracer/temp_files.h) a stopped job maps
// MAP_SHARED, as POSIX shared memory (shm_open), MPI's shared-memory
// transports and PMIx's data stores make them. Such a file lives on the
// node: a restore on another node, or after the job or the site cleaned
// up, finds it gone, and one after a leave-running dump finds what the job
// wrote since.
// So the image keeps its pages, as for anonymous shared memory
// (image::Mapping::named_shm, image::is_shm_object).
#pragma once

#include <string>
#include <vector>

#include "image/checkpoint.h"
#include "tracer/file_view.h"

namespace snap {

// Marks every MAP_SHARED file mapping of ckpt's (stopped, host-pid)
// processes whose file is a regular file on tmpfs or under one of
// `temp_roots` (temp_roots()), still at its path, that
// a mapping of the tree may write (VmFlags "mw"), with its data (SEEK_DATA)
// only in ranges that mappings of the tree map: sets
// Mapping::named_shm (the file's size, mode and owner). A file with data
// elsewhere stays a plain file mapping (-v says so): the image would not
// hold all of it. Paths are the processes' own (`views`).
void mark_named_shared_memory(image::Checkpoint& ckpt, const std::vector<std::string>& temp_roots,
                              const FileViews& views);

}  // namespace snap
