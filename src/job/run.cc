#include "job/run.h"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fmt/core.h>

#include "base/error.h"
#include "base/heap.h"
#include "base/log.h"
#include "base/scoped_fd.h"
#include "image/image_reader.h"
#include "job/control.h"
#include "job/dump.h"
#include "job/incremental.h"
#include "job/series.h"
#include "restore/restore.h"
#include "restore/spawn.h"
#include "tracer/proc.h"

namespace snap::job {

namespace {

using Clock = std::chrono::steady_clock;

// What a batch system or a user sends to snap run is meant for the job.
constexpr int kForwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCONT};

int exit_code_of(int status) {
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Signals come in through a signalfd; the job gets the mask snap run had.
class Signals {
 public:
  explicit Signals(int checkpoint_signal) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    for (int s : kForwarded) sigaddset(&set, s);
    if (checkpoint_signal > 0) {
      // An ignored signal never reaches a signalfd (a shell's `trap '' USR1`
      // before exec would hide it).
      ::signal(checkpoint_signal, SIG_DFL);
      sigaddset(&set, checkpoint_signal);
    }
    ::sigprocmask(SIG_BLOCK, &set, &old_);
    fd_.reset(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!fd_) throw SysError("signalfd", errno);
  }
  ~Signals() { ::sigprocmask(SIG_SETMASK, &old_, nullptr); }
  int fd() const { return fd_.get(); }
  const sigset_t& original_mask() const { return old_; }

 private:
  sigset_t old_;
  ScopedFd fd_;
};

// Runs argv in the job's pid space: there, `child` runs in place of
// snap's code, with the signal mask snap run had.
[[noreturn]] void exec_program(const std::vector<std::string>& argv, const sigset_t& mask) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  ::sigprocmask(SIG_SETMASK, &mask, nullptr);
  ::execvp(args[0], args.data());
  std::fprintf(stderr, "snap run: cannot run %s: %s\n", args[0], std::strerror(errno));
  ::_exit(127);
}

class Runner {
 public:
  explicit Runner(const RunOptions& o)
      : opts_(o), signals_(o.checkpoint_signal), lock_(o.dir), server_(o.dir) {}

  int run() {
    space_ = restore::choose_pid_space(opts_.isolate);
    const char* where = space_->fresh() ? " in a new user and pid namespace" : "";
    // A resume parses a whole image at once, as snap restore does
    // (base/heap.h); the checkpoints that follow keep 4 KiB pages.
    advise_heap_huge_pages();
    bool resumed = false;
    if (auto img = open_latest_good(opts_.dir)) {
      restore::RestoreOptions resume;
      resume.allow_changed_code = opts_.allow_changed_code;
      resume.allow_changed_cpu = opts_.allow_changed_cpu;
      auto tree = restore::restore_tree(*img, *space_, resume);
      child_ = tree.child;
      root_ = tree.root;
      resumed = true;
      std::fprintf(stderr, "snap run: resumed pid %d from %s (made %s)%s\n", root_,
                   img->dir().c_str(), img->checkpoint().created.c_str(), where);
    }
    release_free_heap();  // the image is closed
    if (!resumed) {
      if (opts_.argv.empty())
        throw Error(opts_.dir + " holds no checkpoint and no program was given",
                    "start the job with 'snap run --dir " + opts_.dir + " -- PROGRAM ARGS...'");
      refuse_srun(opts_.argv[0]);  // before it starts, not at the first checkpoint
      child_ = space_->start_root(0, [&]() -> int { exec_program(opts_.argv, signals_.original_mask()); });
      root_ = space_->fresh() ? find_root() : child_;
      space_->released();
      std::fprintf(stderr, "snap run: started pid %d (%s)%s; checkpoints go to %s\n", root_,
                   opts_.argv[0].c_str(), where, opts_.dir.c_str());
    }
    schedule_next();
    return loop();
  }

 private:
  // The job started in a fresh namespace: the one process below its init.
  pid_t find_root() {
    for (int i = 0; i < 500; i++) {
      auto pids = space_->host_pids();
      if (!pids.empty()) return pids.begin()->second;
      ::usleep(10000);
    }
    throw Error("the job did not start in its namespace");
  }

  void schedule_next() {
    if (opts_.interval > 0)
      next_ = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                 std::chrono::duration<double>(opts_.interval));
  }

  int loop() {
    for (;;) {
      std::vector<pollfd> fds{{signals_.fd(), POLLIN, 0}, {server_.listen_fd(), POLLIN, 0}};
      for (int c : server_.connection_fds()) fds.push_back({c, POLLIN, 0});
      int timeout = -1;
      if (opts_.interval > 0) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(next_ - Clock::now());
        timeout = static_cast<int>(std::max<int64_t>(0, left.count()));
      }
      if (::poll(fds.data(), fds.size(), timeout) < 0 && errno != EINTR)
        throw SysError("poll", errno);
      if (auto code = handle_signals()) {
        server_.answer_all("error the job has ended\n");
        return *code;
      }
      if (stop_signalled_) {
        stop_signalled_ = false;
        std::fprintf(stderr, "snap run: %s received: checkpointing and stopping the job\n",
                     ::sigabbrev_np(opts_.checkpoint_signal));
        // The checkpoint before a time limit is the one that must not be
        // lost to a passing state (a connection waiting to be accepted, a
        // thread exiting): a failed one is tried again, a little later.
        for (size_t attempt = 0;; attempt++) {
          if (auto code = checkpoint(true)) {
            if (opts_.requeue) requeue();
            return *code;
          }
          if (!last_failed_ || attempt == std::size(kStopRetryDelays)) break;
          const int delay = kStopRetryDelays[attempt];
          std::fprintf(stderr, "snap run: trying the checkpoint again in %d s (%zu of %zu)\n",
                       delay, attempt + 1, std::size(kStopRetryDelays));
          if (auto code = wait_for(std::chrono::seconds(delay))) {  // the job ended meanwhile
            server_.answer_all("error the job has ended\n");
            return *code;
          }
        }
      }
      bool requested = server_.poll_requests();
      bool due = opts_.interval > 0 && Clock::now() >= next_;
      if (requested || due) {
        if (auto code = checkpoint(server_.any_kill_requested())) return *code;
      }
    }
  }

  // Seconds before each new try of a failed checkpoint on the stop signal.
  static constexpr int kStopRetryDelays[] = {1, 2, 4};

  // Waits `d`, forwarding signals meant for the job; the job's exit code
  // if it ended meanwhile.
  std::optional<int> wait_for(std::chrono::seconds d) {
    const auto until = Clock::now() + d;
    for (;;) {
      if (auto code = handle_signals()) return code;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{signals_.fd(), POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) < 0 && errno != EINTR)
        throw SysError("poll", errno);
    }
  }

  // Forwards what is meant for the job; the job's end ends snap run.
  std::optional<int> handle_signals() {
    signalfd_siginfo si;
    while (::read(signals_.fd(), &si, sizeof si) == sizeof si) {
      int sig = static_cast<int>(si.ssi_signo);
      if (sig == opts_.checkpoint_signal) {
        stop_signalled_ = true;  // for snap run, not the job
        continue;
      }
      if (sig != SIGCHLD) {
        // Keyboard signals reach a job in our process group by themselves.
        if (si.ssi_code == SI_KERNEL && ::getpgid(root_) == ::getpgrp()) continue;
        ::kill(root_, sig);
      }
    }
    int status;
    pid_t r;
    while ((r = ::waitpid(-1, &status, WNOHANG)) > 0)
      if (r == child_) return exit_code_of(status);
    return std::nullopt;
  }

  // One checkpoint of the job, which keeps running (or, with kill, ends).
  // A failure is reported and the job goes on: the previous checkpoint stays
  // the latest.
  std::optional<int> checkpoint(bool kill) {
    std::unique_ptr<SeriesSink> sink;
    int n = 0;
    last_failed_ = false;
    try {
      sink = SeriesSink::begin(opts_.dir, opts_.keep);
      n = sink->number();
      DumpOptions o;
      o.kill = kill;
      o.control_reply = [&](uint64_t peer) { return server_.reply_for(peer, n); };
      o.incremental = &incremental_;
      if (!kill) o.memory_budget = opts_.memory_budget;
      o.jobs = opts_.jobs;
      o.compression = opts_.compression;
      o.tcp_close = opts_.tcp_close;
      o.temp_files_max = opts_.temp_files_max;
      o.shared_files_max = opts_.shared_files_max;
      o.with_files = opts_.with_files;
      auto r = dump_tree(root_, *sink, o);
      incremental_.committed(static_cast<uint64_t>(n));
      std::fprintf(stderr,
                   "snap run: checkpoint %d: %zu process(es), %.1f MiB memory, %.1f MiB new, "
                   "changed pages by %s, in %.2f s (frozen %.2f s)%s\n",
                   n, r.processes, static_cast<double>(r.stats.raw_bytes) / (1 << 20),
                   static_cast<double>(r.stats.new_stored_bytes) / (1 << 20), r.method.c_str(),
                   r.seconds, r.frozen,
                   kill ? "; job stopped" : "");
      server_.answer_received(fmt::format("ok {}\n", n));
    } catch (const Error& e) {
      incremental_.failed();
      last_failed_ = true;
      // A job that ended while it was being checkpointed (its last tick
      // and the interval's checkpoint at once): its end is what counts.
      if (proc::has_ended(root_))
        vlog("checkpoint {} not taken: the job ended meanwhile ({})", n, e.what());
      else
        warn("checkpoint {} failed, the job goes on: {}", n, e.what());
      server_.answer_received(fmt::format("error {}\n", e.what()));
      schedule_next();
      return std::nullopt;
    }
    schedule_next();
    if (!kill) return std::nullopt;
    int status;
    while (::waitpid(child_, &status, 0) < 0 && errno == EINTR) {}
    std::fprintf(stderr, "snap run: the job is stopped after checkpoint %d; run the same command "
                         "again to resume it\n", n);
    return kExitCheckpointedAndStopped;
  }

  // The job is checkpointed and gone: `scontrol requeue $SLURM_JOB_ID`, so
  // that Slurm runs the batch script again, which resumes it. Requeue sends
  // SIGTERM to every process of the Slurm job, scontrol and snap run
  // included: snap run has it blocked, and scontrol ended by it counts as
  // done (Slurm signals only a job it is requeueing).
  void requeue() {
    const char* id = std::getenv("SLURM_JOB_ID");
    if (!id || !*id) {
      std::fprintf(stderr, "snap run: not in a Slurm job (no SLURM_JOB_ID): not requeued\n");
      return;
    }
    std::fprintf(stderr, "snap run: scontrol requeue %s\n", id);
    std::fflush(stderr);
    pid_t pid = ::fork();
    if (pid < 0) {
      warn("cannot fork for scontrol requeue: {}; submit the batch script again to resume",
           std::strerror(errno));
      return;
    }
    if (pid == 0) {
      ::sigprocmask(SIG_SETMASK, &signals_.original_mask(), nullptr);
      ::execlp("scontrol", "scontrol", "requeue", id, static_cast<char*>(nullptr));
      std::fprintf(stderr, "snap run: cannot run scontrol: %s\n", std::strerror(errno));
      ::_exit(127);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    bool done = (WIFEXITED(status) && WEXITSTATUS(status) == 0) ||
                (WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
    if (!done)
      warn("scontrol requeue {} failed (status {}); submit the batch script again to resume",
           id, exit_code_of(status));
  }

  RunOptions opts_;
  Signals signals_;
  RunLock lock_;
  ControlServer server_;
  Incremental incremental_;
  std::unique_ptr<restore::PidSpace> space_;
  pid_t child_ = -1;  // what snap run waits for: the job's root, or its namespace's init
  pid_t root_ = -1;   // the job's root, as snap sees it: what is dumped and signalled
  Clock::time_point next_{};
  bool stop_signalled_ = false;  // opts_.checkpoint_signal came
  bool last_failed_ = false;     // the last checkpoint() failed
};

}  // namespace

int run_job(const RunOptions& opts) { return Runner(opts).run(); }

}  // namespace snap::job
