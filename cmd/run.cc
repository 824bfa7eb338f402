// snap run: start a job (or resume it from its latest good checkpoint) and
// checkpoint it every --interval seconds and on request. src/job/run.h.
// snap slurm: the same, set up for a Slurm batch script (README, "Using snap
// under Slurm"; scripts/slurm/example.sbatch).
#include <signal.h>
#include <string.h>

#include <cstdlib>

#include "cmd/command.h"
#include "job/run.h"

namespace snap::cmd {

namespace {

// "USR1", "SIGUSR1" or a number.
int signal_from_name(const std::string& name) {
  std::string n = name.rfind("SIG", 0) == 0 ? name.substr(3) : name;
  char* end = nullptr;
  long v = std::strtol(n.c_str(), &end, 10);
  if (!n.empty() && *end == '\0') {
    if (v > 0 && v < NSIG && v != SIGKILL && v != SIGSTOP && v != SIGCHLD) return static_cast<int>(v);
  } else {
    for (int s = 1; s < NSIG; s++) {
      const char* a = ::sigabbrev_np(s);
      if (a && n == a && s != SIGKILL && s != SIGSTOP && s != SIGCHLD) return s;
    }
  }
  throw UsageError("--on-signal: '" + name + "' is not a signal snap run can take (e.g. USR1)");
}

void add_common(cxxopts::Options& o) {
  o.add_options()
      ("dir", "checkpoint directory (created 0700)", cxxopts::value<std::string>())
      ("interval", "seconds between checkpoints (default: only on request)",
       cxxopts::value<double>()->default_value("0"))
      ("keep", "checkpoints kept (at least 1)", cxxopts::value<unsigned>()->default_value("2"))
      ("memory-budget", "most extra memory a checkpoint may cost the job (SIZE: 64M, 1G; default: "
                        "5 % of its resident memory, at least 64M, within its memory cgroup)",
       cxxopts::value<std::string>())
      ("j,jobs", "threads reading and compressing memory at a checkpoint (default: the CPUs snap "
                 "may run on, at most 64)", cxxopts::value<unsigned>())
      ("compress", "which page blocks are lz4-compressed: auto (default: those the disk leaves "
                   "time for) or always", cxxopts::value<std::string>())
      ("tcp-close", "save the job's TCP connections to peers outside it as closed at each "
                    "checkpoint (as snap dump --tcp-close; without it such a checkpoint fails "
                    "and the job runs on): resumed, the job finds them closed and may reconnect")
      ("temp-files-max", "most bytes of the job's larger files in temporary directories a "
                         "checkpoint keeps, in all (as snap dump; default 4G; 0: none)",
       cxxopts::value<std::string>())
      ("shared-files-max", "most bytes of data files the job maps shared and may write a "
                           "checkpoint keeps, in all (as snap dump; default 4G; 0: none)",
       cxxopts::value<std::string>())
      ("with-files", "a directory (or file) the job writes and reads again as it runs "
       "(repeatable): saved at each checkpoint as it is then, and put back as it was when the "
       "job resumes (as snap dump --with-files)", cxxopts::value<std::vector<std::string>>())
      ("allow-changed-code", "resume even if the executable or a library changed since the "
                             "checkpoint (as snap restore; the job will likely crash; warns)")
      ("allow-changed-cpu", "resume even on a CPU without instructions or registers the "
                            "checkpoint's CPU had (as snap restore; warns)");
}

cxxopts::Options run_options() {
  cxxopts::Options o("snap run",
                     "Start a job, or resume it from the latest good checkpoint in DIR, and\n"
                     "checkpoint it every SEC seconds and whenever 'snap checkpoint --dir DIR'\n"
                     "asks. snap run stays the job's parent, forwards signals to it and exits\n"
                     "with its status; 75 when 'snap checkpoint --kill' or the --on-signal\n"
                     "signal stopped it (run the same command again to resume).\n");
  o.custom_help("--dir DIR [--interval SEC] [--keep N] [--on-signal SIG [--requeue]] [-v] "
                "-- PROGRAM [ARGS...]");
  add_common(o);
  o.add_options()
      ("isolate", "run the job in a new user and pid namespace (ordinary users always do)")
      ("on-signal", "when snap run receives SIG (e.g. USR1), checkpoint and stop the job "
                    "instead of forwarding SIG to it", cxxopts::value<std::string>())
      ("requeue", "after the --on-signal checkpoint, run 'scontrol requeue $SLURM_JOB_ID'")
      ("v,verbose", "log each step")
      ("h,help", "show this help");
  return o;
}

cxxopts::Options slurm_options() {
  cxxopts::Options o("snap slurm",
                     "snap run for a Slurm batch script: 'exec snap slurm --dir DIR -- PROGRAM'\n"
                     "with '#SBATCH --signal=B:USR1@90 --requeue --open-mode=append'. On\n"
                     "SIGUSR1 it checkpoints the job, stops it, runs 'scontrol requeue\n"
                     "$SLURM_JOB_ID' and exits 75; the requeued script resumes the job from\n"
                     "DIR. The job runs in its own pid namespace, so it resumes on any node\n"
                     "that sees DIR. Same as 'snap run --on-signal USR1 --requeue --isolate'.\n");
  o.custom_help("--dir DIR [--interval SEC] [--keep N] [--signal SIG] [-v] -- PROGRAM [ARGS...]");
  add_common(o);
  o.add_options()
      ("signal", "the signal Slurm sends (#SBATCH --signal=B:SIG@SECONDS)",
       cxxopts::value<std::string>()->default_value("USR1"))
      ("v,verbose", "log each step")
      ("h,help", "show this help");
  return o;
}

job::RunOptions common(const cxxopts::ParseResult& args) {
  if (!args.count("dir")) throw UsageError("missing --dir DIR");
  job::RunOptions opts;
  opts.dir = args["dir"].as<std::string>();
  opts.interval = args["interval"].as<double>();
  opts.keep = args["keep"].as<unsigned>();
  if (opts.interval < 0) throw UsageError("--interval must not be negative");
  if (opts.keep < 1) throw UsageError("--keep must be at least 1");
  opts.argv = words_after_dashes();
  if (args.count("memory-budget"))
    opts.memory_budget = parse_size("--memory-budget", args["memory-budget"].as<std::string>());
  if (args.count("jobs")) {
    opts.jobs = args["jobs"].as<unsigned>();
    if (opts.jobs == 0) throw UsageError("--jobs must be at least 1");
  }
  if (args.count("compress")) opts.compression = parse_compression(args["compress"].as<std::string>());
  opts.tcp_close = args.count("tcp-close") > 0;
  if (args.count("temp-files-max"))
    opts.temp_files_max = parse_size("--temp-files-max", args["temp-files-max"].as<std::string>());
  if (args.count("shared-files-max"))
    opts.shared_files_max = parse_size("--shared-files-max", args["shared-files-max"].as<std::string>());
  if (args.count("with-files"))
    opts.with_files = absolute_paths("--with-files", args["with-files"].as<std::vector<std::string>>());
  opts.allow_changed_code = args.count("allow-changed-code") > 0;
  opts.allow_changed_cpu = args.count("allow-changed-cpu") > 0;
  return opts;
}

int run_run(const cxxopts::ParseResult& args) {
  job::RunOptions opts = common(args);
  opts.isolate = args.count("isolate") > 0;
  if (args.count("on-signal"))
    opts.checkpoint_signal = signal_from_name(args["on-signal"].as<std::string>());
  opts.requeue = args.count("requeue") > 0;
  if (opts.requeue && !opts.checkpoint_signal) throw UsageError("--requeue needs --on-signal SIG");
  return job::run_job(opts);
}

int run_slurm(const cxxopts::ParseResult& args) {
  job::RunOptions opts = common(args);
  opts.isolate = true;
  opts.checkpoint_signal = signal_from_name(args["signal"].as<std::string>());
  opts.requeue = true;
  return job::run_job(opts);
}

}  // namespace

const Command kRun = {"run", "start or resume a job and checkpoint it periodically and on request",
                      run_options, run_run};
const Command kSlurm = {"slurm", "snap run in a Slurm batch script: checkpoint and requeue on a signal",
                       slurm_options, run_slurm};

}  // namespace snap::cmd
