// Making a deleted file, FIFO or directory, or a memfd, of the image again
// (image::GhostFile), or a shared memory file that was in /dev/shm, before
// the fds, mappings and cwds that refer to it are restored: they are then
// opened on (or mapped from) the fd made here.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "base/scoped_fd.h"
#include "image/checkpoint.h"

namespace snap::restore {

// Makes ghost `g` and returns an fd on it: O_RDWR for a file or memfd
// (O_RDONLY where only that is allowed), O_RDWR|O_NONBLOCK for a FIFO,
// O_RDONLY|O_DIRECTORY for a directory; close-on-exec.
//  * A memfd: memfd_create with its name, its contents, size and seals.
//  * A file, FIFO or directory without links: created under its old path
//    (a sibling name when that path is taken again; missing parent
//    directories are made and removed again), opened, unlinked at once;
//    then its contents and size (holes stay holes), owner, mode and times.
//  * /proc/PID of an ended process: a process with that pid (clone3
//    set_tid; root, the pid free) holds the directory until the caller ends it.
//  * One another link still led to at the dump: the same inode, opened by
//    its handle (open_by_handle_at).
// A file or memfd whose contents are in the page store (data_in_pages)
// gets them from fill_from_pages(fd), before its size, seals and times.
// Throws Error naming `who` and the file when it cannot be made. What is
// not exact (an owner snap may not set) is added to `warnings`.
// A /proc/PID directory (kind ProcDir) can only be entered while process
// PID lives: its pid is added to `holders`, a process that waits for
// SIGKILL; the caller kills and reaps it once the restored processes are in
// that directory, which then shows as deleted again.
ScopedFd recreate_ghost(const image::GhostFile& g, const std::string& who,
                        std::vector<std::string>& warnings, std::vector<pid_t>& holders,
                        const std::function<void(int fd)>& fill_from_pages);

// A file of the job's temporary directories (image::Checkpoint::temp_files)
// made again at its path, with its contents (a regular file), owner (where
// snap may), mode and times, when nothing is at that path; false, and
// nothing done, when something is (a regular file whose size or
// modification time differ from the saved file's, as when the job wrote to
// it after a dump it ran on from, is left too, but said in `warnings`: the
// restored job finds it as it is, and removing it first has the saved one
// made again; it may be another process's file too, as a log is). Its directory must exist (the list puts
// directories first). Throws Error naming the file when it cannot be made
// (and leaves nothing there then). A directory stays writable by its owner,
// and its times as they come, until finish_temp_directory: what goes in it
// (files, shared memory, sockets' names) is made first. A file whose
// contents are in the page store (data_in_pages) gets them from
// fill_from_pages(fd), before its size and times are set.
bool remake_temp_file(const image::GhostFile& t, std::vector<std::string>& warnings,
                      const std::function<void(int fd)>& fill_from_pages);

// A file of temp_files the user named for the job's checkpoints
// (image::GhostFile::put_back) that is at its path but differs from the
// saved one (size or modification time): the saved one written beside it
// and renamed over it. True when it was; false, and nothing done, where
// the path is missing (remake_temp_file makes it), the file is as saved, or
// the entry is no such file. Throws Error naming the file when it cannot be
// written (the file at the path then stays as it was).
bool put_back_file(const image::GhostFile& t, std::vector<std::string>& warnings,
                   const std::function<void(int fd)>& fill_from_pages);

// A directory remake_temp_file made, given its mode and times.
void finish_temp_directory(const image::GhostFile& t, std::vector<std::string>& warnings);

// A shared memory file of the image (image::Mapping::named_shm) made again
// at its path, empty, with its size, mode and (where snap may) owner:
// created there, or where a file is left there (*was_there), beside it and
// then renamed over it, so that it is replaced whole and a process still
// holding the old one keeps it. Returns an O_RDWR fd on it.
ScopedFd make_named_shm(const image::Mapping& m, std::vector<std::string>& warnings,
                        bool* was_there);

}  // namespace snap::restore
