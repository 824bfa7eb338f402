#include "restore/restore.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <fmt/core.h>
#include <map>
#include <memory>
#include <set>

#include "base/error.h"
#include "base/log.h"
#include "base/scoped_fd.h"
#include "restore/address_space.h"
#include "restore/cow_sharing.h"
#include "restore/credentials.h"
#include "restore/files.h"
#include "restore/fill.h"
#include "restore/ns_files.h"
#include "restore/posix_locks.h"
#include "restore/remote_page.h"
#include "restore/scheduling.h"
#include "restore/seccomp.h"
#include "restore/signals.h"
#include "restore/skeleton.h"
#include "restore/thread_proc_files.h"
#include "restore/threads.h"
#include "restore/tree.h"
#include "restore/vdso.h"
#include "tracer/cpu_features.h"
#include "tracer/file_stamp.h"
#include "tracer/proc.h"
#include "tracer/remote.h"
#include "tracer/task.h"
#include "tracer/tcp_repair.h"

namespace snap::restore {

namespace {

// Every pid and tid the image needs must be free, before anything exists.
void check_ids_free(const TreePlan& plan) {
  auto ids = plan.all_ids();
  std::string taken;
  size_t n = 0;
  for (pid_t id : ids)
    if (auto who = describe_pid_user(id); !who.empty()) {
      taken += (n++ ? "; " : "") + who;
    }
  if (n)
    throw Error(fmt::format("cannot restore: {} of the {} pids the image needs {} in use: {}", n,
                            ids.size(), n == 1 ? "is" : "are", taken),
                "the original job may still be running: stop it first (or dump with --kill)");
}

// The processes of a restore in progress. Until release(), leaving the
// scope (an error) kills every one of them: nothing of the job runs.
class TreeUnderConstruction {
 public:
  TreeUnderConstruction(const TreePlan& plan, PidSpace& space) : plan_(plan), space_(space) {}
  ~TreeUnderConstruction() {
    if (released_) return;
    // Every task snap traces is killed and reaped here, by its tracer:
    // until then its parent cannot reap it, and in a fresh namespace the
    // init, which waits for every process of the namespace before it ends,
    // would wait for ever, and this destructor for the init.
    for (auto& [pid, tasks] : tasks_)
      for (auto& t : tasks) ::kill(t->tid(), SIGKILL);
    for (auto& [pid, tasks] : tasks_)
      for (size_t i = tasks.size(); i-- > 0;) {  // a leader is reaped after its threads
        int status = 0;
        for (;;) {
          pid_t r = ::waitpid(tasks[i]->tid(), &status, __WALL);
          if (r < 0 && errno == EINTR) continue;
          if (r < 0 || WIFEXITED(status) || WIFSIGNALED(status)) break;
        }
        tasks[i]->abandon();
      }
    // A fresh namespace ends with its init; in the host's, each goes.
    if (!space_.fresh())
      for (pid_t pid : reported_) ::kill(pid, SIGKILL);
    if (child_ > 0) {
      ::kill(child_, SIGKILL);  // its descendants die with it (PR_SET_PDEATHSIG)
      int status;
      while (::waitpid(child_, &status, __WALL) < 0 && errno == EINTR) {}
    }
  }

  void set_child(pid_t pid) { child_ = pid; }

  // Reads the skeletons' reports until each has reported or ended;
  // `parked(pid)` for each that has parked ranges to fill.
  void collect_reports(int fd, const std::function<void(pid_t)>& parked) {
    size_t expected = plan_.helpers.size();
    for (const auto& [pid, n] : plan_.nodes) expected += n.proc->zombie ? 0 : 1;
    std::string failures;
    for (;;) {
      pollfd pfd{fd, POLLIN, 0};
      int rc = ::poll(&pfd, 1, 60000);
      if (rc < 0 && errno == EINTR) continue;
      if (rc <= 0) throw Error("the restored processes did not get ready within 60 s");
      SkeletonReport r;
      ssize_t got = ::read(fd, &r, sizeof r);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) break;  // every skeleton has reported or ended
      if (got != sizeof r) throw Error("garbled report from a restored process");
      if (r.kind == SkeletonReport::kParked) {
        parked(r.pid);
        continue;
      }
      if (r.kind == SkeletonReport::kFailed) {
        failures += fmt::format("{}restoring pid {}: {}", failures.empty() ? "" : "; ", r.pid,
                                std::string(r.text, strnlen(r.text, sizeof r.text)));
        continue;
      }
      reported_.insert(r.pid);
    }
    if (!failures.empty()) throw Error(failures);
    if (reported_.size() != expected) {
      std::string missing;
      for (const auto& [pid, n] : plan_.nodes)
        if (!n.proc->zombie && !reported_.count(pid)) missing += " " + std::to_string(pid);
      throw Error(fmt::format("restored process(es){} died while being set up", missing));
    }
    for (const auto& [pid, n] : plan_.nodes) {
      if (!n.proc->zombie) continue;
      auto st = proc::try_read_file("/proc/" + std::to_string(space_.host_pid(pid)) + "/stat");
      if (!st || proc::parse_stat(*st).state != 'Z')
        throw Error(fmt::format("zombie pid {} could not be recreated", pid));
    }
  }

  // Takes every live process over with ptrace.
  void seize_all() {
    for (const auto& [pid, n] : plan_.nodes) {
      if (n.proc->zombie) continue;
      pid_t host = space_.host_pid(pid);
      auto t = Task::seize_and_stop(host);
      // Its seccomp, installed in the rebuild, must let snap's calls through
      // (its threads inherit the option as they are created).
      if (has_own_seccomp(*n.proc)) t->suspend_seccomp();
      t->set_options(PTRACE_O_EXITKILL | PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACECLONE);
      tasks_[pid].push_back(std::move(t));
    }
  }

  std::vector<std::unique_ptr<Task>>& tasks(pid_t pid) { return tasks_.at(pid); }
  Task& leader(pid_t pid) { return *tasks_.at(pid).at(0); }

  // Lets every thread of every process go, as close together as it gets.
  // A process that was stopped by job control at the dump gets its stop
  // signal first, while every thread is still held: each thread takes it
  // before running any of the job's code, so the process stops where it
  // was, and its parent is told, as a stop tells it (SIGCHLD, waitpid).
  void release() {
    for (auto& [pid, tasks] : tasks_)
      if (int sig = plan_.nodes.at(pid).proc->stop_signal; sig && !tasks.empty())
        if (::kill(tasks[0]->tid(), sig) < 0)
          throw SysError(fmt::format("kill(pid {}, signal {}) to leave it stopped as it was", pid, sig),
                         errno);
    for (auto& [pid, tasks] : tasks_)
      for (size_t i = tasks.size(); i-- > 0;) tasks[i]->detach(0);
    released_ = true;
  }

 private:
  const TreePlan& plan_;
  PidSpace& space_;
  pid_t child_ = -1;
  std::set<pid_t> reported_;
  std::map<pid_t, std::vector<std::unique_ptr<Task>>> tasks_;
  bool released_ = false;
};

// Joins the groups that exist only now, then lets the group helpers go.
void join_groups(TreeUnderConstruction& tree, const TreePlan& plan, PidSpace& space) {
  const pid_t own_group = ::getpgrp();
  for (const auto& [pid, n] : plan.nodes) {
    // In a fresh namespace the group outside it is the root's, inherited.
    bool external = n.join_external_group && !space.fresh();
    if (n.proc->zombie || (!n.join_group && !external)) continue;
    pid_t group = external ? own_group : n.join_group;
    Task& t = tree.leader(pid);
    RemoteSyscalls rs(t, find_syscall_site(t.tid()));
    rs.checked(fmt::format("setpgid(0, {})", group), SYS_setpgid, 0, static_cast<uint64_t>(group));
  }
  for (const auto& h : plan.helpers) {
    ::kill(space.host_pid(h.pid), SIGKILL);
    Task& t = tree.leader(h.creator);
    RemoteSyscalls rs(t, find_syscall_site(t.tid()));
    rs.checked(fmt::format("wait4 for group helper {}", h.pid), SYS_wait4,
               static_cast<uint64_t>(h.pid), 0, __WALL, 0);
  }
  if (!plan.helpers.empty()) vlog("restore: {} group helper(s) done", plan.helpers.size());
}

// One process: memory, threads, signal state, registers. Its tasks stay
// stopped (tasks[0] the leader; the new threads are appended).
// A process that ran chrooted goes back under its root directory (its path
// as snap saw it), once everything before has opened its files by their
// full paths, and before it may give up the privilege chroot takes.
void restore_root(SyscallBatch& batch, const image::Process& p) {
  if (p.root.empty() || p.root == "/") return;
  batch.reserve(1, p.root.size() + 1);
  batch.add(fmt::format("chroot {}", p.root), SYS_chroot, batch.put(p.root).as_int());
}

// A thread's saved extended state in this CPU's XSAVE layout and size (the
// kernel takes exactly its own): moved where the dump's CPU placed its
// components elsewhere (another vendor, another generation). State of a
// component this CPU lacks is lost, saying so (only past check_cpu with
// --allow-changed-cpu). Images without a CPU record go as they are.
std::vector<uint8_t> xsave_for_here(const Task& t, const std::vector<uint8_t>& saved,
                                    const std::optional<image::CpuInfo>& cpu) {
  if (!cpu) return saved;
  static const size_t size = t.xsave().size();  // the same for every thread
  std::vector<std::string> dropped;
  auto area = tracer::refit_xsave(saved, *cpu, tracer::this_cpu(), size, &dropped);
  for (const auto& c : dropped)
    warn("thread {}: its {} registers were in use; this CPU has none, they are lost", t.tid(), c);
  return area;
}

// Each thread's own state runs in that thread, one batch of system calls
// per thread; the threads come back to their saved registers.
void rebuild_process(std::vector<std::unique_ptr<Task>>& tasks, const image::Process& p,
                     image::ImageReader& img, const ProcessFiles& files, bool fresh_namespace,
                     const FillOptions& fill, const CowPlan& cow, const VdsoPlan& vdso) {
  const uint32_t version = img.checkpoint().format_version;
  if (p.threads.empty()) throw Error(fmt::format("pid {} has no threads in the image", p.pid));
  Task& leader = *tasks[0];
  const auto mempolicy = mempolicy_here(p);  // each thread is given it, or its own
  std::vector<std::string> own_policies;
  for (const auto& t : p.threads) own_policies.push_back(t.mempolicy);
  const OwnPolicies threads_own(p.pid, own_policies, "thread(s)", "they run with their process's");
  const size_t shared_seccomp = shared_seccomp_filters(p);
  auto queue_thread = [&](SyscallBatch& batch, const image::ThreadState& saved) {
    restore_thread_state(batch, p.pid, saved);
    const MemPolicy* own = saved.mempolicy.empty() ? nullptr : threads_own.find(saved.mempolicy);
    if (own) add_mempolicy(batch, *own);
    else if (mempolicy) add_mempolicy(batch, *mempolicy);
    add_seccomp(batch, p.pid, saved, shared_seccomp);  // while the thread may (CAP_SYS_ADMIN)
    restore_credentials(batch, p, fresh_namespace);  // last: it may give up root
  };
  RemoteSyscalls rs(leader, find_syscall_site(leader.tid()));
  FillOptions placed = fill;
  placed.placement = mempolicy;  // its pages allocated under its policy
  rebuild_address_space(rs, p, img, files, placed, vdso, cow.inherited_by(p.pid));
  leader.set_signal_mask(~0ull);  // nothing is delivered until the end
  {
    SyscallBatch batch(rs, std::nullopt, 256 << 10);
    take_posix_locks(batch, p);  // after every close of a file in this process
    if (shared_seccomp) {  // the threads inherit them
      add_shared_seccomp(batch, p, shared_seccomp);
      batch.run();
    }
    {
      RemotePage page(rs);
      for (auto& t : create_threads(rs, page, p, !fresh_namespace)) tasks.push_back(std::move(t));
      open_thread_proc_files(batch, p, files);
      restore_process_signals(rs, page, batch, p);
    }
    batch.run();
    for (size_t i = 1; i < tasks.size(); i++) {
      Task& t = *tasks[i];
      t.set_signal_mask(~0ull);
      queue_thread(batch, p.threads[i]);
      batch.run(t);
      t.set_regs(Registers::from_bytes(p.threads[i].gpregs));
    }
    restore_root(batch, p);
    queue_thread(batch, p.threads[0]);
    batch.run();
  }  // the batch area goes (munmap needs no privilege)
  restore_ignored_sigtrap(rs, p);
  requeue_sigtraps(rs, tasks, p);
  rs.set_final_regs(Registers::from_bytes(p.threads[0].gpregs));
  // Extended state and masks last: no more code runs before the job's.
  for (size_t i = 0; i < tasks.size(); i++) {
    tasks[i]->set_xsave(xsave_for_here(*tasks[i], p.threads[i].xsave, img.checkpoint().cpu));
    tasks[i]->set_signal_mask(p.threads[i].sigmask);
  }
  restore_scheduling(tasks, p, version);  // from snap: the job's own rules apply
  restore_cpu_binding(tasks, p, img.checkpoint().job_cpus);
  vlog("restore: pid {} rebuilt ({} thread(s))", p.pid, tasks.size());
}

}  // namespace

void check_outside_connections(const image::Checkpoint& ckpt, const RestoreOptions& opts) {
  if (opts.tcp_close || opts.tcp_established) return;
  for (const auto& p : ckpt.processes)
    for (const auto& f : p.fds) {
      if (!f.inet_socket || !f.inet_socket->tcp || tcp_peer_in_image(ckpt.processes, *f.inet_socket))
        continue;
      const auto& s = *f.inet_socket;
      throw Error(fmt::format("pid {} fd {}: its TCP connection {}:{} -> {}:{} leads outside the "
                              "image (saved with dump --tcp-established)",
                              p.pid, f.fd, s.local, s.local_port, s.peer, s.peer_port),
                  "pass --tcp-established if that peer still holds the connection and sent "
                  "nothing since, or --tcp-close to have it come back closed");
    }
}

void check_code_files(const image::Checkpoint& ckpt, bool allow_changed_code) {
  // Files of temporary directories the image holds (a library compiled
  // into /tmp): one that is gone is made again, as it was, before anything
  // maps it.
  std::set<std::string> kept;
  for (const auto& t : ckpt.temp_files)
    if (t.kind == image::GhostFile::Kind::File) kept.insert(t.path);
  std::string changed;
  size_t n = 0;
  for (const auto& [path, saved] : ckpt.code_files) {
    auto now = stamp_file(path);
    if (!now && kept.count(path)) continue;
    std::string why = now ? stamp_change(saved, *now) : "gone";
    if (why.empty()) continue;
    if (allow_changed_code) {
      warn("{} changed since the dump ({}); the job runs its saved memory against it anyway "
           "(--allow-changed-code)", path, why);
      continue;
    }
    changed += fmt::format("{}\n  {}: {}", n++ ? "" : "", path, why);
  }
  if (n)
    throw Error(fmt::format("cannot restore: {} file(s) of the job's code changed since the dump:{}",
                            n, changed),
                "put back the executable and libraries the job ran with (a rebuilt binary or an "
                "updated library would make the restored job crash or compute wrong results); a "
                "job that ran in a container is restored inside the same container; "
                "--allow-changed-code runs it anyway");
}

void check_cpu(const image::Checkpoint& ckpt, bool allow_changed_cpu) {
  if (!ckpt.cpu) return;
  const auto& here = tracer::this_cpu();
  const auto lacks = tracer::cpu_lacks(*ckpt.cpu, here);
  if (lacks.empty()) return;
  std::string list;
  for (const auto& f : lacks) list += (list.empty() ? "" : ", ") + f;
  utsname u{};
  ::uname(&u);
  const std::string where = fmt::format("dumped on {} ({}), restored on {} ({})", ckpt.hostname,
                                        ckpt.cpu->model, u.nodename, here.model);
  if (allow_changed_cpu) {
    warn("this CPU lacks what the job's had: {} ({}); the job runs anyway and stops on an invalid "
         "instruction if it uses one (--allow-changed-cpu)", list, where);
    return;
  }
  throw Error(fmt::format("cannot restore: this CPU lacks {} feature(s) the job's CPU had: {} ({})",
                          lacks.size(), list, where),
              "a program picks its code for the CPU it starts on (glibc, BLAS and numpy choose "
              "AVX-512 or AVX2 paths then): restore on a node with the same CPU (under Slurm, "
              "the same partition, or --constraint with the node feature naming it); "
              "--allow-changed-cpu restores anyway, and the job may stop on SIGILL");
}

std::map<uint64_t, uint64_t> hugetlb_pages_needed(const image::Checkpoint& ckpt) {
  std::map<uint64_t, uint64_t> need;
  std::map<std::pair<uint64_t, uint64_t>, std::pair<uint64_t, uint64_t>> objects;  // dev, inode -> page, size
  for (const auto& p : ckpt.processes)
    for (const auto& m : p.mappings)
      if (m.hugetlb_page && image::is_shm_object(m)) {
        auto& [page, size] = objects[{m.dev, m.inode}];
        page = m.hugetlb_page;
        size = std::max(size, m.pgoff + (m.end - m.start));
      } else if (m.hugetlb_page && !image::has_vmflag(m.vmflags, "nr")) {
        need[m.hugetlb_page] += (m.end - m.start) / m.hugetlb_page;
      }
  for (const auto& [key, object] : objects)
    need[object.first] += (object.second + object.first - 1) / object.first;
  return need;
}

// Hugetlb memory is reserved from the pool when it is mapped (a shared
// object's whole size, once, as restore maps it to fill it): the pool must
// have the pages free, of each size, before anything exists.
void check_hugetlb_pool(const image::Checkpoint& ckpt) {
  for (const auto& [size, pages] : hugetlb_pages_needed(ckpt)) {
    const std::string path =
        fmt::format("/sys/kernel/mm/hugepages/hugepages-{}kB/free_hugepages", size >> 10);
    auto text = proc::try_read_file(path);
    const uint64_t free = text ? std::strtoull(text->c_str(), nullptr, 10) : 0;
    if (free >= pages) continue;
    throw Error(fmt::format("the image's hugetlb memory needs {} huge page(s) of {} KiB; this "
                            "machine's pool has {}",
                            pages, size >> 10, text ? fmt::format("{} free", free) : "none of that size"),
                fmt::format("add them to the pool (as root: sysctl vm.nr_hugepages, or {}), or "
                            "ask for a node with them",
                            path.substr(0, path.rfind('/')) + "/nr_hugepages"));
  }
}

// pid 1 of the job's own pid namespace (a container's init, dumped by an
// older snap) cannot come back: pid 1 of a restore's namespace is snap's.
void check_no_namespace_init(const image::Checkpoint& ckpt) {
  for (const auto& p : ckpt.processes)
    if (p.pid == 1)
      throw Error("cannot restore: the image's pid 1 was the init of the job's pid namespace (a "
                  "container's init: bwrap --unshare-pid, apptainer --pid, podman); a restore's "
                  "pid namespace has an init of snap's own",
                  "dump the job under that init instead (snap dump --pid of its child) and "
                  "restore that image");
}

RestoredTree restore_tree(image::ImageReader& img, PidSpace& space, const RestoreOptions& opts) {
  StepTimes steps;
  const auto& ckpt = img.checkpoint();
  check_no_namespace_init(ckpt);
  TreePlan plan = plan_tree(ckpt);
  check_code_files(ckpt, opts.allow_changed_code);
  check_cpu(ckpt, opts.allow_changed_cpu);
  const VdsoPlan vdso = plan_vdso(ckpt);
  if (vdso.proxied())
    vlog("restore: this kernel's vDSO differs from the dump's ({}): the job's calls into it are "
         "redirected", ckpt.kernel_release);
  check_outside_connections(ckpt, opts);
  check_hugetlb_pool(ckpt);
  check_seccomp(ckpt);
  if (!space.fresh()) check_ids_free(plan);
  for (const auto& w : check_credentials(ckpt, space.fresh())) warn("{}", w);
  adopt_login_uid(ckpt);
  OpenFiles files = OpenFiles::create(ckpt, img, opts.allow_changed_files, opts.tcp_close, opts.fill);
  for (const auto& w : files.warnings()) warn("{}", w);
  const CowPlan cow = plan_cow_sharing(ckpt, img, plan);
  if (!cow.empty()) vlog("restore: {}", cow.summary());
  steps.step("checks and files");

  // The skeletons' reports come back on one pipe, above every fd they set up.
  int ends[2];
  if (::pipe2(ends, O_CLOEXEC) < 0) throw SysError("pipe2", errno);
  ScopedFd report_read(ends[0]), report_write_low(ends[1]);
  ScopedFd report_write(::fcntl(report_write_low.get(), F_DUPFD_CLOEXEC, files.base()));
  if (!report_write) throw SysError("fcntl(F_DUPFD_CLOEXEC)", errno);
  report_write_low.reset();

  // Memory the children of a process share with it: filled in its skeleton
  // before it forks them, when it reports it has mapped the ranges.
  ParkedSignals parked(cow, ckpt, files.base());
  auto fill_parked_ranges = [&](pid_t pid) {
    std::vector<std::pair<const image::Mapping*, uint64_t>> ranges;
    for (const auto& r : cow.parked_by(pid)) ranges.push_back({r.m, r.park});
    uint64_t bytes = fill_parked(space.host_pid(pid), *plan.node(pid).proc, ranges, img, opts.fill);
    vlog("restore: pid {}: {} MiB its children share written before it forks them", pid,
         bytes >> 20);
    parked.go(pid);
  };

  space.set_clocks(ckpt.clocks);
  TreeUnderConstruction tree(plan, space);
  SkeletonContext ctx{plan, files, space.spawner(), report_write.get(), ::getpgrp(), cow,
                      parked.read_ends()};
  RestoredTree out;
  out.child = space.start_root(plan.root, [&] {
    report_read.reset();
    return skeleton_main(ctx, plan.root, space.root_parent());
  });
  tree.set_child(out.child);
  report_write.reset();
  parked.close_read_ends();
  files.close_all();  // the skeletons hold them now
  tree.collect_reports(report_read.get(), fill_parked_ranges);
  parked.close();
  files.end_holders();  // every skeleton is in its cwd
  vlog("restore: {} process(es) and {} helper(s) set up", plan.nodes.size(), plan.helpers.size());
  steps.step("skeletons");

  tree.seize_all();
  join_groups(tree, plan, space);
  steps.step("seize");
  for (const image::Process* p : rebuild_order(ckpt, files))
    rebuild_process(tree.tasks(p->pid), *p, img, files.of(p->pid), space.fresh(), opts.fill, cow,
                    vdso);
  steps.step("rebuild");
  out.root = space.host_pid(plan.root);
  out.host_pids = space.host_pids();
  files.finish_made_directories();
  tree.release();
  space.released();
  files.keep_made_files();
  steps.step("release");
  vlog("restore: {} process(es) running; steps: {}", plan.nodes.size(), steps.text());
  return out;
}

std::unique_ptr<PidSpace> choose_pid_space(bool isolate, const image::Checkpoint* ckpt) {
  if (!isolate && may_choose_pids()) return make_host_pid_space();
  bool holds_mount_ns = false;
  if (ckpt)
    for (const auto& p : ckpt->processes)
      for (const auto& f : p.fds) holds_mount_ns |= namespace_kind(f.path) == "mnt";
  if (holds_mount_ns)
    vlog("the job holds an fd on its mount namespace: it is restored in snap's, with the host's "
         "/proc (a /proc/PID path of the job names another process there)");
  return make_namespace_pid_space(!holds_mount_ns);
}

}  // namespace snap::restore
