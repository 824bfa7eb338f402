// snap dump: checkpoint a running process tree into an image directory.
//
// The steps, in order:
//   1. stop every thread of the tree (ptrace seize + interrupt);
//   2. collect each process's state from /proc and each thread's registers,
//      and, with the parasite, what only the process itself can read
//      (signal handlers, sigaltstacks, timers, pipe contents); the parasite
//      is gone again before memory is read;
//   3. read the memory that holds state and stream it into the page store
//      (hashed, deduplicated, lz4-compressed on worker threads);
//   4. let the job run again (or kill it, with --kill, once the image is safe);
//   5. commit the image: fsync, then rename into place.
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

// Step 2b: inject the parasite, ask, cure (src/parasite/README.md).
void collect_parasite_state(SeizedTree::Proc& p, image::Process& proc) {
  auto state = parasite::run_parasite(p, proc.fds);
  parasite::apply_parasite_state(state, proc);
  vlog("pid {}: parasite: {} handlers, {} POSIX timers, {} pipe(s)", p.pid,
       state.sigactions.size(), state.posix_timers.size(), state.pipes.size());
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
  Progress progress("dump");
  for (auto& p : tree.processes()) {
    image::Process proc = collect_process(p);  // 2
    collect_parasite_state(p, proc);
    auto mem = dump_memory(p.pid, proc.mappings,  // 3
                           [&](pid_t owner, uint64_t mstart, uint64_t addr, const uint8_t* data,
                               size_t npages) {
                             writer.add_pages(owner, mstart, addr, data, npages);
                             progress.update(writer.stats().raw_bytes, writer.stats().stored_bytes);
                           });
    vlog("pid {}: {} mappings, {} fds, {} threads, {} MiB of memory read", p.pid,
         proc.mappings.size(), proc.fds.size(), proc.threads.size(), mem.bytes() >> 20);
    ckpt.processes.push_back(std::move(proc));
  }
  double frozen = seconds_since(t0);

  if (!kill_after) {
    tree = SeizedTree();  // 4: detach; the job runs again while we finish writing
    vlog("job running again after {:.3f} s frozen", frozen);
  }
  writer.commit(ckpt);  // 5
  progress.done();
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
