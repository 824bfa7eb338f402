// snap watch: checkpoint whenever a file appears, then remove it
// (src/job/watch.h).
#include "cmd/command.h"
#include "job/watch.h"

namespace snap::cmd {

namespace {

cxxopts::Options watch_options() {
  cxxopts::Options o("snap watch",
                     "Checkpoint a job whenever FILE appears (e.g. 'touch signal.myfile'), then\n"
                     "remove FILE; keep watching until the job ends. With --dir, ask the snap run\n"
                     "owning DIR; with --pid, dump the tree of PID into -o DIR each time.\n");
  o.custom_help("--file FILE (--dir DIR | --pid PID -o DIR)");
  o.add_options()
      ("file", "the file to watch for", cxxopts::value<std::string>())
      ("dir", "checkpoint directory of a running 'snap run'", cxxopts::value<std::string>())
      ("p,pid", "process tree to checkpoint", cxxopts::value<int>())
      ("o,output", "image directory for --pid (replaced by each checkpoint)",
       cxxopts::value<std::string>())
      ("v,verbose", "log each step")
      ("h,help", "show this help");
  return o;
}

int run_watch(const cxxopts::ParseResult& args) {
  if (!args.count("file")) throw UsageError("missing --file FILE");
  job::WatchOptions o;
  o.file = args["file"].as<std::string>();
  if (args.count("dir") == args.count("pid")) throw UsageError("give either --dir or --pid");
  if (args.count("dir")) {
    o.dir = args["dir"].as<std::string>();
  } else {
    if (!args.count("output")) throw UsageError("--pid needs -o DIR");
    o.pid = args["pid"].as<int>();
    o.output = args["output"].as<std::string>();
  }
  return job::watch_file(o);
}

}  // namespace

const Command kWatch = {"watch", "checkpoint a job whenever a file appears", watch_options,
                        run_watch};

}  // namespace snap::cmd
