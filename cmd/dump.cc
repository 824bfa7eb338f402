// snap dump: checkpoint a running process tree into an image directory.
//
// The steps, in order:
//   1. stop every thread of the tree (ptrace seize + interrupt);
//   2. collect each process's state from /proc and each thread's registers,
//      and, with the parasite, what only the process itself can read
//      (signal handlers, sigaltstacks, timers, pipe contents); the parasite
//      is gone again before memory is read;
//   3. take a copy-on-write snapshot of each process's memory (see
//      tracer/snapshot.h) and let the job run again at once;
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
#include <fmt/core.h>

#include "base/log.h"
#include "cmd/command.h"
#include "cmd/progress.h"
#include "image/image_writer.h"
#include "parasite/parasite.h"
#include "parasite/snapshot.h"
#include "tracer/collect.h"
#include "tracer/memory.h"
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

  // 3. With --kill the job stays stopped until the end: no snapshot needed.
  std::vector<std::unique_ptr<parasite::MemorySnapshot>> snapshots(ckpt.processes.size());
  Progress progress("dump");
  auto sink_for = [&](pid_t owner) {
    return [&, owner](pid_t, uint64_t mstart, uint64_t addr, const uint8_t* data, size_t npages) {
      writer.add_pages(owner, mstart, addr, data, npages);
      if (progress.enabled()) {
        auto st = writer.stats();
        progress.update(st.raw_bytes, st.stored_bytes);
      }
    };
  };
  if (!kill_after) {
    for (size_t i = 0; i < ckpt.processes.size(); i++) {
      auto& proc = ckpt.processes[i];
      snapshots[i] = parasite::MemorySnapshot::take(*tree.processes()[i].tasks[0]);
      // What the snapshot cannot show is read now, before the job runs.
      dump_memory(proc.pid, proc.mappings, sink_for(proc.pid), [&](const image::Mapping& m) {
        return !snapshots[i] || parasite::MemorySnapshot::differs_in_child(m);
      });
    }
    tree = SeizedTree();  // detach: the job runs again
  }
  double frozen = seconds_since(t0);
  vlog("job frozen for {:.3f} s", frozen);

  for (size_t i = 0; i < ckpt.processes.size(); i++) {  // 4
    auto& proc = ckpt.processes[i];
    pid_t read_from = snapshots[i] ? snapshots[i]->pid() : proc.pid;
    auto mem = dump_memory(read_from, proc.mappings, sink_for(proc.pid), [&](const image::Mapping& m) {
      return kill_after || (snapshots[i] && !parasite::MemorySnapshot::differs_in_child(m));
    });
    vlog("pid {}: {} mappings, {} fds, {} threads, {} MiB of memory read", proc.pid,
         proc.mappings.size(), proc.fds.size(), proc.threads.size(), mem.bytes() >> 20);
  }

  writer.commit(ckpt);  // 5
  progress.done();
  for (size_t i = 0; i < snapshots.size(); i++)
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
