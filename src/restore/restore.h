// Restoring a checkpointed process tree: skeletons with the saved pids,
// parents, sessions and groups; their files; each process's memory, threads
// and signal state; and the jump back into the saved context, for every
// process of the tree at once.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>

#include "image/checkpoint.h"
#include "image/image_reader.h"
#include "restore/fill.h"
#include "restore/spawn.h"

namespace snap::restore {

struct RestoreOptions {
  bool allow_changed_files = false;
  // Run the saved memory even against executables or libraries that
  // changed since the dump (it will likely crash): warn instead of refuse.
  bool allow_changed_code = false;
  // Run it even on a CPU without instructions or register state the dump's
  // CPU had (it may stop on SIGILL): warn instead of refuse.
  bool allow_changed_cpu = false;
  // TCP connections of the image come back closed (as if the peer had gone).
  bool tcp_close = false;
  // TCP connections to peers outside the image (saved by dump
  // --tcp-established) may come back connected: the user says the peer is
  // still there. Without it (or tcp_close) such an image is refused.
  bool tcp_established = false;
  FillOptions fill;  // how memory is filled from the image
};

// Throws Error naming every executable or mapped file that is gone or
// differs from the image's stamp of it (unless allow_changed_code: then
// warnings). Nothing is created before this check.
void check_code_files(const image::Checkpoint& ckpt, bool allow_changed_code);

// Throws Error naming every CPU feature and XSAVE state component of the
// dump's CPU that this one lacks (unless allow_changed_cpu: then a
// warning). Images without a CPU record pass.
void check_cpu(const image::Checkpoint& ckpt, bool allow_changed_cpu);

// Throws Error naming the first TCP connection of the image whose peer is
// not in the image too, unless opts says what to do with such connections.
void check_outside_connections(const image::Checkpoint& ckpt, const RestoreOptions& opts);

// The huge pages of each size (bytes -> pages) the image's hugetlb memory
// takes from the pool as restore maps it: each private mapping's (not a
// MAP_NORESERVE one), each shared object's whole size once however many
// mappings show it. restore_tree refuses where the pool has fewer free.
std::map<uint64_t, uint64_t> hugetlb_pages_needed(const image::Checkpoint& ckpt);

struct RestoredTree {
  pid_t child = -1;  // the caller's child to wait for: the root, or the namespace's init
  pid_t root = -1;   // the root as the caller sees it: where its signals go
  std::map<pid_t, pid_t> host_pids;  // saved -> host pids, in a fresh namespace
};

// Brings back every process of the image in `space` (its root a child of
// the caller, or of the namespace's init) and lets them all run together.
// Refuses (Error naming the process and the object) before creating
// anything when the image cannot come back faithfully; when a later step
// fails, every process created so far is killed and nothing of the job has
// run.
RestoredTree restore_tree(image::ImageReader& img, PidSpace& space, const RestoreOptions& opts);

// The pid space a restore by this user uses: the host's for root (unless
// `isolate`), else a fresh user + pid namespace, with its own /proc in a
// mount namespace of its own, unless `ckpt` (the image to restore, when
// there is one) holds an fd on its mount namespace: that would then lead
// to another one than the job's.
std::unique_ptr<PidSpace> choose_pid_space(bool isolate, const image::Checkpoint* ckpt = nullptr);

}  // namespace snap::restore
