// `snap run`: start a job, or resume it from the latest good checkpoint of
// its checkpoint directory, and stay its parent: checkpoint it every
// `interval` seconds and whenever `snap checkpoint` asks, forward the
// signals a batch system sends, and end with the job's status. The same
// command line serves the first start and every restart of a batch job.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "image/image_writer.h"
#include "job/dump.h"

namespace snap::job {

struct RunOptions {
  std::string dir;                // the checkpoint directory (created 0700)
  std::vector<std::string> argv;  // the program, for a first start
  double interval = 0;            // seconds between checkpoints; 0: only on request
  unsigned keep = 2;              // checkpoints kept
  // Run the job in a new user and pid namespace even as root (an ordinary
  // user's jobs always run in one, so that their pids never clash).
  bool isolate = false;
  // Most extra memory a checkpoint may cost the job (DumpOptions); none:
  // the default budget.
  std::optional<uint64_t> memory_budget;
  // Threads reading and compressing memory at a checkpoint (DumpOptions);
  // 0: the default.
  unsigned jobs = 0;
  image::Compression compression = image::Compression::kAuto;  // DumpOptions
  bool tcp_close = false;  // DumpOptions: connections to outside saved as closed
  uint64_t temp_files_max = kDefaultTempFilesMax;  // DumpOptions
  uint64_t shared_files_max = kDefaultSharedFilesMax;  // DumpOptions
  std::vector<std::string> with_files;  // DumpOptions: absolute paths
  // A signal to snap run itself that means "checkpoint and stop" (like
  // `snap checkpoint --kill`) instead of being forwarded; 0: none. Slurm's
  // `--signal=B:USR1@T` reaches the batch shell, which `exec snap ...` made
  // snap run.
  int checkpoint_signal = 0;
  // After that checkpoint, and only once it is complete, run
  // `scontrol requeue $SLURM_JOB_ID` when SLURM_JOB_ID is set, so that the
  // same batch script resumes the job on its next start.
  bool requeue = false;
  // A resume's leave to run the job on changed code or a CPU lacking what
  // the checkpoint's had (restore::RestoreOptions).
  bool allow_changed_code = false;
  bool allow_changed_cpu = false;
};

// The exit status of `snap run` when a checkpoint ended the job on request
// (`snap checkpoint --kill`): run the same command again to resume.
constexpr int kExitCheckpointedAndStopped = 75;  // EX_TEMPFAIL

// Runs the job to its end; returns the exit code for `snap run`: the job's
// status (128+signal when a signal ended it), or kExitCheckpointedAndStopped.
// Throws Error when the job cannot be started or resumed, or when another
// snap run owns the directory.
int run_job(const RunOptions& opts);

}  // namespace snap::job
