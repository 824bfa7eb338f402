// snap checkpoint: ask the snap run that owns a checkpoint directory for a
// checkpoint now; works from inside the job too (src/job/control.h).
#include <cstdio>

#include "cmd/command.h"
#include "job/control.h"

namespace snap::cmd {

namespace {

cxxopts::Options checkpoint_options() {
  cxxopts::Options o("snap checkpoint",
                     "Ask the 'snap run' that owns DIR for a checkpoint now. From inside the job\n"
                     "(os.system, system()) with --wait, the call returns once the checkpoint is\n"
                     "safe, and a job resumed from that checkpoint returns from it too.\n");
  o.custom_help("--dir DIR [--wait] [--kill]");
  o.add_options()
      ("dir", "checkpoint directory of a running 'snap run'", cxxopts::value<std::string>())
      ("wait", "return only once the checkpoint is safe on disk")
      ("kill", "end the job once the checkpoint is safe (for requeue)")
      ("h,help", "show this help");
  return o;
}

int run_checkpoint(const cxxopts::ParseResult& args) {
  if (!args.count("dir")) throw UsageError("missing --dir DIR");
  const std::string dir = args["dir"].as<std::string>();
  auto n = job::request_checkpoint(dir, args.count("wait") > 0, args.count("kill") > 0);
  if (n)
    std::fprintf(stderr, "snap checkpoint: checkpoint %d of %s is safe\n", *n, dir.c_str());
  return kExitOk;
}

}  // namespace

const Command kCheckpoint = {"checkpoint", "ask the snap run owning a checkpoint directory for a checkpoint",
                             checkpoint_options, run_checkpoint};

}  // namespace snap::cmd
