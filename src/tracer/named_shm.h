// Shared memory that has a name: files on tmpfs (/dev/shm) or in the job's
// temporary directories (tracer/temp_files.h) a stopped job maps
// MAP_SHARED, as POSIX shared memory (shm_open), MPI's shared-memory
// transports and PMIx's data stores make them. Such a file lives on the
// node: a restore on another node, or after the job or the site cleaned
// up, finds it gone, and one after a leave-running dump finds what the job
// wrote since.
// So the image keeps its pages, as for anonymous shared memory
// (image::Mapping::named_shm, image::is_shm_object). So too for a data file
// anywhere that the job maps shared and writes (image::Mapping::saved_file):
// what it wrote there is part of its state at the dump.
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
// only in ranges that mappings of the tree map, that no fd of the tree
// holds a lock on (below): sets
// Mapping::named_shm (the file's size, mode and owner). Paths are the
// processes' own (`views`).
// A writable MAP_SHARED mapping of a regular file elsewhere (a data file
// the job writes through memory), or of such a file with data outside the
// ranges the tree maps (the image would not hold all of it), gets
// Mapping::saved_file instead: the data
// of the ranges it maps is saved (its data pages: a sparse file costs what
// it holds), up to `saved_files_max` bytes of such files in all (not a
// file an fd of the tree holds a lock on: SQLite's WAL index, coordinated
// with other processes and with files a restore does not put back) (past that, a file is left as a plain file mapping and the
// dump warns, naming it).
void mark_named_shared_memory(image::Checkpoint& ckpt, const std::vector<std::string>& temp_roots,
                              const FileViews& views, uint64_t saved_files_max);

}  // namespace snap
