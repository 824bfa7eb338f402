// snap dump: checkpoint a running process tree into an image directory.
//
// The steps, in order:
//   1. stop every thread of the tree (ptrace seize + interrupt);
//   2. collect each process's state from /proc and each thread's registers,
//      and, with the parasite, what only the process itself can read
//      (signal handlers, sigaltstacks, timers, pipe contents); the parasite
//      is gone again before memory is read; zombie children (ids and exit
//      status); then what the tree shares: open file descriptions (kcmp)
//      and unix sockets (sock_diag, their queued data peeked);
//   3. take a copy-on-write snapshot of each process's memory (see
//      tracer/snapshot.h) and let the job run again at once; shared memory
//      is read now, each page of a shared object only once in the tree;
//   4. read the memory that holds state from the snapshots and stream it
//      into the page store (hashed, deduplicated, lz4-compressed on worker
//      threads);
//   5. commit the image: fsync, then rename into place; then release the
//      snapshots (or, with --kill, kill the job, which stayed stopped).
// Any failure before step 5 leaves the job running and any previous image
// untouched.
#include <sys/utsname.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <functional>
#include <fmt/core.h>

#include "base/log.h"
#include "cmd/command.h"
#include "cmd/progress.h"
#include "image/image_writer.h"
#include "parasite/parasite.h"
#include "parasite/snapshot.h"
#include "tracer/collect.h"
#include "tracer/memory.h"
#include "tracer/sharing.h"
#include "tracer/sockets.h"
#include "tracer/task.h"

namespace snap::cmd {

namespace {

cxxopts::Options dump_options() {
  cxxopts::Options o("snap dump", "Checkpoint a running process and all its descendants.\n");
  o.custom_help("--pid PID -o DIR [--kill] [--force] [-v]");
  o.add_options()
      ("p,pid", "process to checkpoint (with its threads and descendants)", cxxopts::value<int>())
      ("o,output", "image directory to write (created 0700)", cxxopts::value<std::string>())
      ("leave-running", "let the job continue after the dump (the default)")
      ("kill", "kill the whole tree once the image is safely written (for requeue)")
      ("f,force", "replace an existing image at DIR (atomically, only once the new one is complete)")
      ("v,verbose", "log each step")
      ("h,help", "show this help");
  return o;
}

std::string now_iso8601() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

image::Checkpoint new_checkpoint() {
  image::Checkpoint c;
  c.snap_version = SNAP_VERSION;
  c.created = now_iso8601();
  utsname u{};
  ::uname(&u);
  c.hostname = u.nodename;
  c.kernel_release = u.release;
  return c;
}

// The parasite's part of step 2 (src/parasite): runs in the stopped process
// and is removed again before its memory is read.
void collect_parasite_state(SeizedTree::Proc& p, image::Process& proc) {
  auto state = parasite::run_parasite(p, proc.fds);
  parasite::apply_parasite_state(state, proc);
}

// Where read pages go: the image writer (and the progress line).
using Store = std::function<void(pid_t owner, uint64_t mapping_start, uint64_t addr,
                                 const uint8_t* data, size_t npages)>;

// Pages read from wherever (the job or its snapshot) are stored as the job's.
PageSink store_as(pid_t owner, const Store& store) {
  return [owner, &store](pid_t, uint64_t mapping_start, uint64_t addr, const uint8_t* data,
                         size_t npages) { store(owner, mapping_start, addr, data, npages); };
}

using Snapshots = std::vector<std::unique_ptr<parasite::MemorySnapshot>>;

// Step 3: a copy-on-write snapshot of each (stopped) process, and, read right
// away, the few mappings a snapshot does not show as they are. A process
// whose snapshot the kernel refuses gets none (nullptr): its memory is then
// read here too, while it is still stopped.
Snapshots take_snapshots(SeizedTree& tree, image::Checkpoint& ckpt, const Store& store,
                         SharedMemoryPages& shared) {
  Snapshots snapshots;
  for (size_t i = 0; i < tree.processes().size(); i++) {  // the live ones, zombies come after
    auto& proc = ckpt.processes[i];
    Task& leader = *tree.processes()[i].tasks[0];
    parasite::MemorySnapshot::collect_leftovers(leader);
    auto snap = parasite::MemorySnapshot::take(leader);
    dump_memory(proc.pid, proc.mappings, store_as(proc.pid, store), [&](const image::Mapping& m) {
      return !snap || parasite::MemorySnapshot::differs_in_child(m);
    }, ReadVia::kProcessVmReadv, &shared);
    snapshots.push_back(std::move(snap));
  }
  return snapshots;
}

// Step 4: every page not read yet, from the snapshots (or from the stopped
// processes themselves, with --kill, where there are no snapshots).
void read_memory(image::Checkpoint& ckpt, const Snapshots& snapshots, const Store& store,
                 SharedMemoryPages& shared) {
  for (size_t i = 0; i < ckpt.processes.size(); i++) {
    auto& proc = ckpt.processes[i];
    if (proc.zombie) continue;
    const auto* snap = i < snapshots.size() ? snapshots[i].get() : nullptr;
    bool stopped = snapshots.empty();  // --kill: read everything from the job
    auto mem = dump_memory(snap ? snap->pid() : proc.pid, proc.mappings, store_as(proc.pid, store),
                           [&](const image::Mapping& m) {
                             return stopped || (snap && !parasite::MemorySnapshot::differs_in_child(m));
                           },
                           snap ? ReadVia::kMemFile : ReadVia::kProcessVmReadv, &shared);
    vlog("pid {}: {} mappings, {} fds, {} threads, {} MiB of memory read", proc.pid,
         proc.mappings.size(), proc.fds.size(), proc.threads.size(), mem.bytes() >> 20);
  }
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

int run_dump(const cxxopts::ParseResult& args) {
  if (!args.count("pid")) throw UsageError("missing --pid PID");
  if (!args.count("output")) throw UsageError("missing -o DIR");
  if (args.count("kill") && args.count("leave-running"))
    throw UsageError("--kill and --leave-running contradict each other");
  const pid_t pid = args["pid"].as<int>();
  const std::string dir = args["output"].as<std::string>();
  const bool kill_after = args.count("kill") > 0;

  // Refuse a bad target or destination before stopping anything.
  check_dumpable(pid);
  auto writer = image::ImageWriter::create(dir, args.count("force") > 0);

  auto t0 = std::chrono::steady_clock::now();
  SeizedTree tree = SeizedTree::seize(pid);  // 1
  const size_t nthreads = tree.thread_count();
  vlog("stopped {} process(es), {} thread(s)", tree.processes().size(), tree.thread_count());

  image::Checkpoint ckpt = new_checkpoint();
  for (auto& p : tree.processes()) {  // 2
    image::Process proc = collect_process(p);
    collect_parasite_state(p, proc);
    ckpt.processes.push_back(std::move(proc));
  }
  // Zombies last: each one's parent is a live process, listed already.
  for (pid_t z : tree.zombies()) ckpt.processes.push_back(collect_zombie(z));
  // What the processes share: open file descriptions, unix sockets.
  assign_file_ids(ckpt.processes);
  collect_unix_sockets(ckpt.processes);

  Progress progress("dump");
  Store store = [&](pid_t owner, uint64_t mapping_start, uint64_t addr, const uint8_t* data,
                   size_t npages) {
    writer.add_pages(owner, mapping_start, addr, data, npages);
    if (progress.enabled()) {
      auto st = writer.stats();
      progress.update(st.raw_bytes, st.stored_bytes);
    }
  };

  // Shared memory objects mapped more than once in the tree are read once.
  SharedMemoryPages shared;
  Snapshots snapshots;  // 3: with --kill the job stays stopped: none needed
  if (!kill_after) {
    snapshots = take_snapshots(tree, ckpt, store, shared);
    tree = SeizedTree();  // detach: the job runs again
  }
  double frozen = seconds_since(t0);
  vlog("job frozen for {:.3f} s", frozen);

  read_memory(ckpt, snapshots, store, shared);  // 4

  writer.commit(ckpt);  // 5
  progress.done();
  for (size_t i = 0; i < snapshots.size(); i++)  // the job reaps its snapshot
    if (snapshots[i]) snapshots[i]->release(ckpt.processes[i].pid);
  if (kill_after) {
    tree.kill_all();
    vlog("killed the job after a complete checkpoint");
  }

  auto s = writer.stats();
  std::fprintf(stderr,
               "snap dump: pid %d: %zu process(es), %zu thread(s), %.1f MiB memory -> %.1f MiB "
               "image in %.2f s (frozen %.2f s)%s\n",
               pid, ckpt.processes.size(), nthreads,
               static_cast<double>(s.raw_bytes) / (1 << 20),
               static_cast<double>(s.stored_bytes) / (1 << 20), seconds_since(t0), frozen,
               kill_after ? "; job killed" : "");
  return kExitOk;
}

}  // namespace

const Command kDump = {"dump", "checkpoint a running process tree into an image directory",
                       dump_options, run_dump};

}  // namespace snap::cmd
