// snap restore: bring a checkpointed process back and let it continue.
//
// The steps, in order:
//   1. open the image and check its manifest, index and pagemap (nothing is
//      created for a damaged one); page blocks are checked as the memory is
//      filled from them, and damage there kills the half-built processes
//      before any code of the job runs;
//   2. rebuild every process of the tree: skeletons at the saved pids,
//      sessions and groups, files, memory, threads, registers; all start
//      together (src/restore);
//   3. stay in the foreground as its parent: forward the signals a batch
//      system sends, and exit with its status (or 128+signal), so a batch
//      script can use `snap restore` like the original program.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fmt/core.h>

#include "base/heap.h"
#include "base/log.h"
#include "cmd/command.h"
#include "image/image_reader.h"
#include "restore/restore.h"

namespace snap::cmd {

namespace {

cxxopts::Options restore_options() {
  cxxopts::Options o("snap restore", "Restore a checkpointed process tree and let it continue.\n");
  o.custom_help("DIR [--detach] [--jobs N] [--allow-changed-files] [--allow-changed-code] "
                "[--allow-changed-cpu] [--isolate] [--tcp-close] [--tcp-established] [-v]");
  o.positional_help("DIR");
  o.add_options()
      ("dir", "image directory written by snap dump", cxxopts::value<std::string>())
      ("detach", "return as soon as the process runs, instead of waiting for it")
      ("jobs", "workers reading the image into memory, two threads each (default: the CPUs snap may use)",
       cxxopts::value<unsigned>(), "N")
      ("allow-changed-files", "restore even if a file the job had open is gone or shorter (warns)")
      ("isolate", "restore in a new user and pid namespace (what ordinary users always get)")
      ("allow-changed-code", "restore even if the executable or a library changed since the dump "
       "(the job will likely crash; warns)")
      ("allow-changed-cpu", "restore even on a CPU without instructions or registers the dump's "
       "CPU had (the job may stop on an invalid instruction; warns)")
      ("tcp-close", "bring the job's TCP connections back closed (reads see end of file, "
       "writes EPIPE) instead of connected")
      ("tcp-established", "let TCP connections to peers outside the image come back "
       "connected (dump --tcp-established saved them; the peer must still be there)")
      ("v,verbose", "log each step")
      ("h,help", "show this help");
  o.parse_positional({"dir"});
  return o;
}

volatile sig_atomic_t g_root = 0;

void forward_signal(int sig, siginfo_t* info, void*) {
  // Keyboard signals already reach a job in our process group.
  if (info->si_code == SI_KERNEL && ::getpgid(g_root) == ::getpgrp()) return;
  if (g_root > 0) ::kill(g_root, sig);
}

// Waits for `child` (the root, or the namespace's init, which ends with the
// root's status) and forwards signals to the root.
int wait_for(pid_t child, pid_t root) {
  g_root = root;
  struct sigaction sa {};
  sa.sa_sigaction = forward_signal;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCONT})
    ::sigaction(sig, &sa, nullptr);
  int status = 0;
  while (::waitpid(child, &status, 0) < 0)
    if (errno != EINTR) throw SysError(fmt::format("waitpid({})", child), errno);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

int run_restore(const cxxopts::ParseResult& args) {
  if (!args.count("dir")) throw UsageError("missing image directory");
  const std::string dir = args["dir"].as<std::string>();

  restore::RestoreOptions opts;
  if (args.count("jobs")) {
    opts.fill.jobs = args["jobs"].as<unsigned>();
    if (opts.fill.jobs == 0) throw UsageError("--jobs must be at least 1");
  }
  opts.allow_changed_files = args.count("allow-changed-files") > 0;
  opts.allow_changed_code = args.count("allow-changed-code") > 0;
  opts.allow_changed_cpu = args.count("allow-changed-cpu") > 0;
  opts.tcp_close = args.count("tcp-close") > 0;
  opts.tcp_established = args.count("tcp-established") > 0;
  advise_heap_huge_pages();
  std::unique_ptr<restore::PidSpace> space;
  restore::RestoredTree tree;
  {
    auto img = image::ImageReader::open(dir);  // 1
    const auto& ckpt = img.checkpoint();
    vlog("image opened: {} process(es), made {} on {}", ckpt.processes.size(), ckpt.created,
         ckpt.hostname);
    space = restore::choose_pid_space(args.count("isolate") > 0, &ckpt);
    tree = restore::restore_tree(img, *space, opts);  // 2
  }
  release_free_heap();  // the image is closed: snap holds little while it waits
  for (const auto& [saved, host] : tree.host_pids)
    vlog("pid {} of the job is pid {} here", saved, host);

  if (args.count("detach")) {
    std::fprintf(stderr, "snap restore: pid %d is running\n", tree.root);
    return kExitOk;
  }
  return wait_for(tree.child, tree.root);  // 3
}

}  // namespace

const Command kRestore = {"restore", "restore a checkpointed process tree and let it continue",
                          restore_options, run_restore};

}  // namespace snap::cmd
