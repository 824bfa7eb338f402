// The steps of a dump, as a library function: `snap dump`, `snap run`,
// `snap checkpoint` and `snap watch` all checkpoint a job through it.
//   1. stop every thread of the tree (ptrace seize + interrupt);
//   2. collect each process's state from /proc and each thread's registers,
//      and, with the parasite, what only the process itself can read
//      (signal handlers, sigaltstacks, timers, pipe contents); the parasite
//      is gone again before memory is read; what the processes share (open
//      file descriptions, unix sockets) is found across the tree;
//   3. take a copy-on-write snapshot of each process's memory and let the
//      job run again at once (unless it is to be killed);
//   4. read the memory that holds state from the snapshots and stream it
//      into the sink (hashed, deduplicated, lz4-compressed on worker threads);
//   5. commit the image (fsync, rename into place); then release the
//      snapshots, or, with `kill`, kill the job, which stayed stopped.
// Any failure before step 5 leaves the job running and any previous image
// untouched.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "image/checkpoint.h"
#include "image/image_stats.h"
#include "image/image_writer.h"

namespace snap::job {

// Where a dump's pages and manifest go: a plain image or a checkpoint of a
// series.
class DumpSink {
 public:
  virtual ~DumpSink() = default;
  virtual void add_pages(pid_t pid, uint64_t mapping_start, uint64_t addr, const uint8_t* data,
                         size_t npages) = 0;
  // The pages added for mapping_start of pid are not to be used after all
  // (image::ImageWriter::forget).
  virtual void forget(pid_t pid, uint64_t mapping_start) = 0;
  // The pages at `addrs` (ascending, disjoint) of that mapping are not to
  // be used: they are given again (image::ImageWriter::forget_pages).
  virtual void forget_pages(pid_t pid, uint64_t mapping_start,
                            const std::vector<ByteRange>& addrs) = 0;
  // Those pages of mapping `from` belong to mapping `to` now
  // (image::ImageWriter::move_pages).
  virtual void move_pages(pid_t pid, uint64_t from, uint64_t to,
                          const std::vector<ByteRange>& addrs) = 0;
  // Room for pages given again to take the places of those forgotten
  // (image::ImageWriter::reserve_places); none by default.
  virtual void reserve_places(size_t npages) { (void)npages; }
  virtual void commit(const image::Checkpoint& c) = 0;
  virtual image::ImageStats stats() const = 0;
  // Threads that compress (DumpOptions::jobs) and which blocks they
  // compress (DumpOptions::compression), before the first page.
  virtual void set_jobs(unsigned n) { (void)n; }
  virtual void set_compression(image::Compression c) { (void)c; }
  // A checkpoint of a series: the previous checkpoint, which pages found
  // unchanged refer to (add_unchanged), if there is one.
  virtual std::optional<uint64_t> base_number() const { return std::nullopt; }
  virtual void add_unchanged(pid_t pid, uint64_t mapping_start, uint64_t addr, size_t npages) {
    (void)pid, (void)mapping_start, (void)addr, (void)npages;
    throw Error("unchanged pages can only refer to an earlier checkpoint of a series");
  }
  // That checkpoint's manifest, if there is one; and pages the same as
  // those it stored for pid at base_addr (image::ImageWriter::add_earlier).
  virtual const image::Checkpoint* base_checkpoint() const { return nullptr; }
  virtual void add_earlier(pid_t pid, uint64_t mapping_start, uint64_t addr, uint64_t base_addr,
                           size_t npages) {
    (void)pid, (void)mapping_start, (void)addr, (void)base_addr, (void)npages;
    throw Error("pages can only refer to an earlier checkpoint of a series");
  }
};

// A plain image directory (image::ImageWriter).
class ImageSink : public DumpSink {
 public:
  explicit ImageSink(image::ImageWriter& w) : w_(w) {}
  void add_pages(pid_t pid, uint64_t mapping_start, uint64_t addr, const uint8_t* data,
                 size_t npages) override {
    w_.add_pages(pid, mapping_start, addr, data, npages);
  }
  void forget(pid_t pid, uint64_t mapping_start) override { w_.forget(pid, mapping_start); }
  void reserve_places(size_t npages) override { w_.reserve_places(npages); }
  void forget_pages(pid_t pid, uint64_t mapping_start,
                    const std::vector<ByteRange>& addrs) override {
    w_.forget_pages(pid, mapping_start, addrs);
  }
  void move_pages(pid_t pid, uint64_t from, uint64_t to,
                  const std::vector<ByteRange>& addrs) override {
    w_.move_pages(pid, from, to, addrs);
  }
  void commit(const image::Checkpoint& c) override { w_.commit(c); }
  image::ImageStats stats() const override { return w_.stats(); }
  void set_jobs(unsigned n) override { w_.set_jobs(n); }
  void set_compression(image::Compression c) override { w_.set_compression(c); }

 private:
  image::ImageWriter& w_;
};

class Incremental;

// The default worker count stops here, however many CPUs there are.
inline constexpr unsigned kMaxJobs = 64;

constexpr uint64_t kDefaultTempFilesMax = uint64_t{4} << 30;
constexpr uint64_t kDefaultSharedFilesMax = uint64_t{4} << 30;

struct DumpOptions {
  bool kill = false;  // kill the whole tree once the image is committed
  // Save established TCP connections whose peer is outside the tree too
  // (else refused at dump; those with both ends in the tree always are).
  bool tcp_established = false;
  // Save TCP connections whose peer is outside the tree as closed instead
  // (nothing of them read, no privilege needed): the restored job finds
  // them closed, as after its peer went away.
  bool tcp_close = false;
  // A unix socket of the tree connected to a socket of snap's own (a
  // `snap checkpoint` waiting for snap run's answer): given the peer's
  // inode, the bytes the restored socket finds waiting (its peer then comes
  // back closed), or nullopt for a socket that is not snap's.
  std::function<std::optional<std::vector<uint8_t>>(uint64_t peer_inode)> control_reply;
  // Write tracking across the checkpoints of a series (snap run); none:
  // every page is read.
  Incremental* incremental = nullptr;
  // Extra memory a leave-running dump may cost (the snapshot's copies of
  // pages the job writes before they are read), in bytes; nullopt: the
  // default, the smaller of 5 % of the job's resident memory (at least
  // 64 MiB) and half of what its memory cgroup has left below its limit
  // (the other half for what the job writes before a stop takes hold). Read pages
  // are released from the snapshot at once; when the budget would be
  // passed, the job is stopped again until the rest is read.
  std::optional<uint64_t> memory_budget;
  // Threads that compress pages, and as many reading and hashing them; 0:
  // the CPUs snap may use (sched_getaffinity), at most kMaxJobs.
  unsigned jobs = 0;
  // Which blocks are lz4-compressed (image::Compression): by default those
  // the disk leaves time for (auto), or all (always: the smallest image).
  image::Compression compression = image::Compression::kAuto;
  // The most bytes of the job's larger files in temporary directories the
  // image keeps, in the page store (tracer/temp_file_contents.h), all of
  // them together: a file past it is reopened by its path at restore (and
  // the dump says so). A dump with --kill before a time limit must finish
  // in time, whatever the job left in /tmp.
  uint64_t temp_files_max = kDefaultTempFilesMax;
  // The most bytes of data files the job maps shared and may write
  // (image::Mapping::saved_file) the image keeps, in all: each is read
  // while the job is stopped, or, with a dump the job runs on from, the
  // larger ones while it runs (job/file_precopy.h). A file past it is left
  // out (the dump warns): a restore finds it as it is then.
  uint64_t shared_files_max = kDefaultSharedFilesMax;
  // Absolute paths of directories and files the job writes and reads
  // again, saved as they are at the stop (read while the job is stopped)
  // and put back by a restore (tracer/kept_files.h).
  std::vector<std::string> with_files;
  // Called as pages are stored (for a progress line), from one thread at a
  // time (not always the same one).
  std::function<void(const image::ImageStats&)> progress;
  // For a caller that exits once the dump returns (snap dump): memory read
  // before the stop that is still write-protected once the image is
  // committed is unprotected by a child process of snap's, rather than the
  // dump waiting for it (job/memory_precopy.h, hand_off()).
  bool hand_off_unprotect = false;
};

struct DumpResult {
  size_t processes = 0, threads = 0;
  image::ImageStats stats;
  double seconds = 0;  // the whole dump
  double frozen = 0;   // how long the job was stopped
  std::string method;  // how changed pages were found ("full", "uffd-wp", ...)
  // Leave-running dumps: the budget, the most the snapshots were seen to
  // hold beyond the job, and, when the budget was reached, how long the job
  // was stopped again (also counted in `frozen`).
  uint64_t memory_budget = 0, peak_extra = 0;
  bool budget_reached = false;
  double budget_frozen = 0;
};

// Checkpoints the tree rooted at `pid` into `sink`. Throws Error (the job
// left running as before, nothing committed) when any step fails.
DumpResult dump_tree(pid_t pid, DumpSink& sink, const DumpOptions& opts);

// Throws Error, saying what to do instead, when `program` (a path or a
// name) is Slurm's srun: the tasks it starts are children of the node's
// slurmstepd, not its own, so a checkpoint of srun holds a client of Slurm
// and none of the work (a dump refuses a tree with srun in it so too).
void refuse_srun(const std::string& program);

// A Checkpoint with this snap's version, the time and the machine filled in.
image::Checkpoint new_checkpoint();

}  // namespace snap::job
