// snap run: start a job (or resume it from its latest good checkpoint) and
// checkpoint it every --interval seconds and on request. src/job/run.h.
#include "cmd/command.h"
#include "job/run.h"

namespace snap::cmd {

namespace {

cxxopts::Options run_options() {
  cxxopts::Options o("snap run",
                     "Start a job, or resume it from the latest good checkpoint in DIR, and\n"
                     "checkpoint it every SEC seconds and whenever 'snap checkpoint --dir DIR'\n"
                     "asks. snap run stays the job's parent, forwards signals to it and exits\n"
                     "with its status; 75 when 'snap checkpoint --kill' stopped it (run the\n"
                     "same command again to resume).\n");
  o.custom_help("--dir DIR [--interval SEC] [--keep N] [-v] -- PROGRAM [ARGS...]");
  o.add_options()
      ("dir", "checkpoint directory (created 0700)", cxxopts::value<std::string>())
      ("interval", "seconds between checkpoints (default: only on request)",
       cxxopts::value<double>()->default_value("0"))
      ("keep", "checkpoints kept (at least 1)", cxxopts::value<unsigned>()->default_value("2"))
      ("isolate", "run the job in a new user and pid namespace (ordinary users always do)")
      ("v,verbose", "log each step")
      ("h,help", "show this help");
  return o;
}

int run_run(const cxxopts::ParseResult& args) {
  if (!args.count("dir")) throw UsageError("missing --dir DIR");
  job::RunOptions opts;
  opts.dir = args["dir"].as<std::string>();
  opts.interval = args["interval"].as<double>();
  opts.keep = args["keep"].as<unsigned>();
  if (opts.interval < 0) throw UsageError("--interval must not be negative");
  if (opts.keep < 1) throw UsageError("--keep must be at least 1");
  opts.argv = words_after_dashes();
  opts.isolate = args.count("isolate") > 0;
  return job::run_job(opts);
}

}  // namespace

const Command kRun = {"run", "start or resume a job and checkpoint it periodically and on request",
                      run_options, run_run};

}  // namespace snap::cmd
