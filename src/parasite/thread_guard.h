// Threads held so that they heal by themselves if snap dies: the guard of
// one thread (an rt_sigreturn frame for its own context, a gadget that runs
// it), and remote system calls made under such a guard (see README.md,
// "Self-healing").
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/remote_ptr.h"
#include "image/checkpoint.h"
#include "tracer/registers.h"
#include "tracer/remote.h"
#include "tracer/task.h"

namespace snap::parasite {

// The address of `mov $15, %eax/%rax; syscall` (the body of every
// sa_restorer) in process `pid`, searched in its executable file mappings
// (`known`: the ones the caller read while it was stopped; else
// /proc/PID/maps), libc first; nullopt if there is none.
std::optional<remote_addr> find_sigreturn_gadget(pid_t pid,
                                                 const std::vector<image::Mapping>* known = nullptr);
// Finds the gadget in snap's own libc now (its maps read, its code
// searched: ~0.6 ms, once), which find_sigreturn_gadget then looks for at
// the same file offset in the target: a dump calls it before it stops the
// job.
void prepare_sigreturn_gadget();

// One thread held in a state from which it gets back to its own context by
// itself if snap dies: a complete rt_sigreturn frame for its original
// context is written below its red zone, and while the guard is "parked" the
// thread's registers point at an rt_sigreturn gadget with rsp at that frame.
// The destructor gives the thread its original registers and signal mask,
// then the bytes the frame covered: below the red zone of a thread's own
// stack they are the ABI's to clobber, but a thread that waits in a signal
// handler on an alternate stack may have little room left below it, and
// the frame then covers the program's data under that stack (the kernel
// itself never writes there). A thread that ran its own code since (it
// left through the frame: forget()) keeps them as they are now.
class ThreadGuard {
 public:
  // `sigreturn_gadget`: address of `mov $15, %eax/%rax; syscall` in the
  // target, or nullopt (then an orphaned thread is not protected; see README).
  ThreadGuard(Task& task, std::optional<remote_addr> sigreturn_gadget);
  // The same with the frame built but not written yet: write_frames()
  // writes those of many threads with one system call.
  struct DeferFrame {};
  ThreadGuard(Task& task, std::optional<remote_addr> sigreturn_gadget, DeferFrame);
  // Writes the deferred frames of `guards` (threads of process `pid`):
  // one process_vm_writev for all, each one that did not fit written on
  // its own; a guard whose frame cannot be written is left unprotected
  // (protected_by_frame() false), as the constructor leaves it.
  static void write_frames(pid_t pid, const std::vector<std::unique_ptr<ThreadGuard>>& guards);
  // What the frames of `guards` covered, put back with one system call for
  // all, for those released (each put back by its destructor otherwise).
  static void put_back_under_frames(pid_t pid,
                                    const std::vector<std::unique_ptr<ThreadGuard>>& guards);
  ~ThreadGuard();
  ThreadGuard(const ThreadGuard&) = delete;
  ThreadGuard& operator=(const ThreadGuard&) = delete;

  // All signals blocked, registers at the gadget (or original ones without).
  void park();
  // Original signal mask, then original registers.
  void release();

  Task& task() { return task_; }
  // rsp for an rt_sigreturn to the original context (frame + 8).
  remote_addr sigreturn_sp() const { return frame_ + 8; }
  // The frame's start: its first word holds the gadget address, so a `ret`
  // executed with rsp here ends in rt_sigreturn.
  remote_addr frame() const { return frame_; }
  bool protected_by_frame() const { return gadget_.has_value(); }
  // What the frame covers held before it was written (empty without a
  // frame): a copy-on-write snapshot forked while it is there gets them
  // back from MemorySnapshot (snapshot.cc), the job from the destructor.
  const std::vector<uint8_t>& under_frame() const { return under_frame_; }
  const Registers& original_regs() const { return clean_; }  // restart applied

  // Runs the thread from `entry` (any code that ends in rt_sigreturn on this
  // guard's frame) until that rt_sigreturn has completed, then checks that
  // the registers are the original ones. Throws if the thread stops in any
  // other way (fault, trap); the thread is then put back by hand.
  void run_until_sigreturn(remote_addr entry);
  // The same in two halves, so that several threads run at once: start()
  // sets the thread off at `entry` (rdi = `arg`; rsp = `sp`, or left as it
  // is when null); wait_and_step() waits for the thread's next stop and
  // says whether that rt_sigreturn has completed (the checks above done),
  // else lets it run on to its next stop.
  void start(remote_addr entry, uint64_t arg = 0, remote_addr sp = remote_addr());
  bool wait_and_step();
  // Called by wait_and_step() at each system-call stop (entry or exit) of
  // the thread while it is stopped there, before it goes on; empty: none.
  void on_syscall_stop(std::function<void(const Registers&)> f) { syscall_stop_ = std::move(f); }
  // start() in two halves for a thread that will run free (no stop until
  // interrupt(), below): its registers set for `entry` and the thread
  // parked, then set off by resume_free(), so that all of a process's
  // threads are made ready before the first one runs.
  void prepare(remote_addr entry, uint64_t arg = 0, remote_addr sp = remote_addr()) {
    point_at(entry, arg, sp);
  }

  // A thread that runs free (no system-call stops; run_service): its next
  // stop's wait status. True for the stop interrupt() asked for; for any
  // other stop the thread runs on (PTRACE_CONT), and a fault or its death
  // throws as with wait_and_step().
  bool on_free_stop(int status);
  // on_free_stop() of the thread's next stop, waited for.
  bool wait_free();
  void resume_free();  // PTRACE_CONT
  void interrupt();    // PTRACE_INTERRUPT
  // The thread left the parasite on its own (its rt_sigreturn ran while it
  // ran free): its state is its own again, nothing of the guard's to put
  // back. The guard is spent.
  void forget() {
    parked_ = false;
    under_frame_.clear();
  }
  // The child the thread cloned while snap stepped it (wait_and_step()),
  // as snap sees it (PTRACE_EVENT_CLONE's message), if it did.
  std::optional<pid_t> cloned() const { return cloned_; }

 private:
  Task& task_;
  std::optional<remote_addr> gadget_;
  Registers clean_;
  std::vector<uint8_t> xsave_;
  uint64_t mask_ = 0;
  remote_addr frame_;
  bool parked_ = false;
  bool in_sigreturn_ = false;  // between start() and the end of its rt_sigreturn
  bool interrupted_ = false;   // interrupt() asked, its stop not seen yet
  std::optional<pid_t> cloned_;
  std::function<void(const Registers&)> syscall_stop_;
  std::vector<uint8_t> unwritten_;  // the frame, until write_frames()
  std::vector<uint8_t> under_frame_;  // what it covers, once written
  // The frame written (under_frame_ read first), or frame_not_written().
  void write_frame();
  // The bytes under the frame back, once the thread needs it no more.
  void put_back_under_frame() noexcept;
  void build_frame(const Registers& orig);
  void frame_not_written(const std::string& why);
  void resume();               // PTRACE_SYSCALL
  // At a signal-delivery stop (a stop signal), the signal held back until
  // the thread is let go (Task::hold_signal); any other stop: nothing.
  void hold_stop_signal(int status);
  int wait_stop();             // the thread's next stop's wait status
  // Registers set for a call of `entry` (start()), then parked (all
  // signals blocked) if not yet.
  void point_at(remote_addr entry, uint64_t arg, remote_addr sp);
  bool on_stop(int status);    // wait_and_step() with the stop's wait status
  // A fault, trap or death at a stop: the thread put back, an error thrown.
  void fail_on_fault_or_death(int status);
};

// A RemoteSyscalls scope on a parked thread: the calls run at the vDSO's
// `syscall; ... ret` with rsp on the guard's frame, so a thread that snap's
// death leaves behind completes the call and returns to its own context.
// Without such a site or gadget the calls still work, unprotected (-v says so).
class GuardedSyscalls {
 public:
  explicit GuardedSyscalls(Task& task);
  RemoteSyscalls& rs() { return *rs_; }
  ThreadGuard& guard() { return guard_; }
  bool healing() const { return healing_; }

  // A few instructions the parked thread runs by itself, so that they
  // complete, and the thread returns to its own context, even if snap dies
  // in between. `code` (position independent, at most a page) is mapped
  // with a data page after it holding `data` (rdi points there); the thread
  // starts at the code with rsp at the guard's frame, so the code's final
  // `ret` reaches the frame's rt_sigreturn gadget, and is stepped from
  // system call to system call (`on_syscall` sees each stop) until that
  // rt_sigreturn, then parked again. Returns the data as the code left it.
  // The pages are MAP_SHARED (a private anonymous mapping could merge with
  // a neighbour of the job's) and unmapped again, on a throw too. `name`
  // names the sequence in errors and its phases (NAME, NAME-done).
  // Needs healing(); throws Error (a fault, a death: ThreadGuard's).
  std::vector<uint8_t> run_sequence(const std::string& name, std::span<const uint8_t> code,
                                    std::vector<uint8_t> data,
                                    std::function<void(const Registers&)> on_syscall = {});

 private:
  ThreadGuard guard_;  // declared first: released last
  std::optional<RemoteSyscalls> rs_;
  bool healing_ = false;
};

}  // namespace snap::parasite
