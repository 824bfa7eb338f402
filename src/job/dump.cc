#include "job/dump.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <fmt/core.h>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>

#include "base/cpus.h"
#include "base/heap.h"
#include "base/huge_buffer.h"
#include "base/log.h"
#include "job/file_precopy.h"
#include "job/held_pages.h"
#include "job/incremental.h"
#include "job/memory_budget.h"
#include "job/memory_precopy.h"
#include "job/shared_precopy.h"
#include "job/snapshot_steps.h"
#include "parasite/parasite.h"
#include "parasite/shared_snapshot.h"
#include "parasite/snapshot.h"
#include "parasite/thread_guard.h"
#include "tracer/clocks.h"
#include "tracer/collect.h"
#include "tracer/cpu_features.h"
#include "tracer/fd_hints.h"
#include "tracer/file_stamp.h"
#include "tracer/file_view.h"
#include "tracer/ghost_files.h"
#include "tracer/guard_regions.h"
#include "tracer/kept_files.h"
#include "tracer/memory.h"
#include "tracer/mempolicy.h"
#include "tracer/named_shm.h"
#include "tracer/net_lock.h"
#include "tracer/pid_view.h"
#include "tracer/proc.h"
#include "tracer/registers.h"
#include "tracer/remote.h"
#include "tracer/scheduling.h"
#include "tracer/sharing.h"
#include "tracer/sockets.h"
#include "tracer/task.h"
#include "tracer/tcp_repair.h"
#include "tracer/temp_files.h"
#include "tracer/tty.h"
#include "tracer/vdso.h"

namespace snap::job {

namespace {

std::string now_iso8601() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

}  // namespace

image::Checkpoint new_checkpoint() {
  image::Checkpoint c;
  c.snap_version = SNAP_VERSION;
  c.created = now_iso8601();
  utsname u{};
  ::uname(&u);
  c.hostname = u.nodename;
  c.kernel_release = u.release;
  c.cpu = tracer::this_cpu();
  try {
    const auto vdso = own_vdso().image();
    c.vdso.assign(vdso.begin(), vdso.end());
  } catch (const Error&) {
    // snap runs without a vDSO (vdso=0): so did the job; nothing to record.
  }
  return c;
}

namespace {

// `who` (a program, a pid) is srun: what snap cannot do, and what to do.
Error srun_error(const std::string& who) {
  return Error(fmt::format("{} is Slurm's srun: the tasks it starts run under the node's "
                           "slurmstepd, not under srun, so snap would checkpoint srun and none of "
                           "the work", who),
               "put snap inside the step instead: 'srun snap run --dir DIR.$SLURM_PROCID -- "
               "PROGRAM' checkpoints each task on its own (not an MPI job: its ranks are not "
               "checkpointed together); run an MPI job on one node with mpirun under snap, which "
               "checkpoints its ranks as one tree");
}

}  // namespace

void refuse_srun(const std::string& program) {
  const auto slash = program.rfind('/');
  if (program.substr(slash == std::string::npos ? 0 : slash + 1) == "srun") throw srun_error(program);
}

namespace {

// How long a deleted file or memfd must have been left unchanged before the
// stop for a dump the job runs on from to read it after the freeze: a
// minute (a file written that lately is likely written again while snap
// reads it, which fails the dump); SNAP_QUIET_FILE_SECONDS sets it (tests).
std::chrono::seconds quiet_file_time() {
  static const std::chrono::seconds t = [] {
    const char* s = std::getenv("SNAP_QUIET_FILE_SECONDS");
    return std::chrono::seconds(s && *s ? std::strtol(s, nullptr, 10) : 60);
  }();
  return t;
}

// The parasite's part of step 2 (src/parasite): runs in the stopped process
// and is removed again before its memory is read.
void collect_parasite_state(SeizedTree::Proc& p, image::Process& proc) {
  auto state = parasite::run_parasite(p, proc.fds, &proc.mappings);
  parasite::apply_parasite_state(state, proc);
}

// What a leave-running dump holds of the pages it reads while the job is
// stopped (held_pages.h): thread stacks alone may hold 16 MiB
// (parasite/keep_out.cc).
constexpr size_t kHeldPagesMax = 32 << 20;
// Of which faulted in before the stop (HeldPages): stacks of hundreds of
// threads, what a job wrote of memory read before the stop.
constexpr size_t kHeldPagesWarm = 4 << 20;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// With --kill: what the peers outside the image of the saved TCP
// connections send is dropped until the restore (tracer/net_lock.h); the
// lock's name goes into the image.
netlock::NetworkLock lock_outside_connections(image::Checkpoint& ckpt, pid_t pid) {
  std::vector<const image::InetSocket*> outside;
  std::vector<image::TcpConnection*> locked;
  std::set<uint64_t> seen;  // one socket may have several fds
  for (auto& p : ckpt.processes)
    for (auto& f : p.fds) {
      auto& s = f.inet_socket;
      if (!s || !s->tcp || tcp_peer_in_image(ckpt.processes, *s)) continue;
      locked.push_back(&*s->tcp);
      if (seen.insert(f.inode).second) outside.push_back(&*s);
    }
  if (outside.empty()) return {};
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  auto lock = netlock::NetworkLock::take(
      fmt::format("snap_{}_{}{:09}", pid, now.tv_sec, now.tv_nsec), outside);
  for (auto* t : locked) t->network_lock = lock.name();
  return lock;
}

// Sockets connected to snap's own control connections come back with
// snap's answer waiting and their peer closed (see DumpOptions).
void mark_control_connections(image::Checkpoint& ckpt, const DumpOptions& opts) {
  if (!opts.control_reply) return;
  for (auto& p : ckpt.processes)
    for (auto& f : p.fds) {
      if (!f.unix_socket || !f.unix_socket->peer_inode) continue;
      auto reply = opts.control_reply(f.unix_socket->peer_inode);
      if (!reply) continue;
      f.unix_socket->peer_inode = 0;
      f.unix_socket->detached_peer = true;
      f.unix_socket->queue.clear();
      if (!reply->empty()) f.unix_socket->queue.push_back(std::move(*reply));
      vlog("pid {} fd {}: a connection to snap itself", p.pid, f.fd);
    }
}

// The sink as restore will look pages up: by the pids of the manifest, which
// are the job's own (pidview::PidView), while the dump reads everything by
// host pid.
class PidViewSink : public DumpSink {
 public:
  PidViewSink(DumpSink& sink, const pidview::PidView& view) : sink_(sink), view_(view) {}
  void add_pages(pid_t pid, uint64_t mapping_start, uint64_t addr, const uint8_t* data,
                 size_t npages) override {
    sink_.add_pages(view_.pid(pid), mapping_start, addr, data, npages);
  }
  void forget(pid_t pid, uint64_t mapping_start) override {
    sink_.forget(view_.pid(pid), mapping_start);
  }
  void forget_pages(pid_t pid, uint64_t mapping_start,
                    const std::vector<ByteRange>& addrs) override {
    sink_.forget_pages(view_.pid(pid), mapping_start, addrs);
  }
  void move_pages(pid_t pid, uint64_t from, uint64_t to,
                  const std::vector<ByteRange>& addrs) override {
    sink_.move_pages(view_.pid(pid), from, to, addrs);
  }
  void commit(const image::Checkpoint& c) override { sink_.commit(c); }
  image::ImageStats stats() const override { return sink_.stats(); }
  void set_jobs(unsigned n) override { sink_.set_jobs(n); }
  void set_compression(image::Compression c) override { sink_.set_compression(c); }
  std::optional<uint64_t> base_number() const override { return sink_.base_number(); }
  void add_unchanged(pid_t pid, uint64_t mapping_start, uint64_t addr, size_t npages) override {
    sink_.add_unchanged(view_.pid(pid), mapping_start, addr, npages);
  }
  const image::Checkpoint* base_checkpoint() const override { return sink_.base_checkpoint(); }
  void add_earlier(pid_t pid, uint64_t mapping_start, uint64_t addr, uint64_t base_addr,
                   size_t npages) override {
    sink_.add_earlier(view_.pid(pid), mapping_start, addr, base_addr, npages);
  }

 private:
  DumpSink& sink_;
  const pidview::PidView& view_;
};

// Says what of a container a restore outside it would not give back: the
// files a process in a mount namespace of its own uses that snap's own
// namespace has elsewhere, or not at all, at their paths (the image keeps
// those of temporary directories), and ids it sees otherwise than snap.
void say_own_namespaces(const image::Checkpoint& ckpt, const FileViews& views) {
  std::set<std::string> carried;
  for (const auto& t : ckpt.temp_files) carried.insert(t.path);
  for (const auto& p : ckpt.processes) {
    if (p.zombie) continue;
    if (auto uid = own_uid(p))
      warn("pid {} runs in a user namespace of its own (a rootless container), as uid {} there "
           "and uid {} here: a restore outside it gives it uid {} and none of its capabilities "
           "there; dump and restore it inside the container to keep them",
           p.pid, *uid, p.uids[1], p.uids[1]);
    std::vector<std::string> far;
    for (auto& path : paths_elsewhere(p, views))
      if (!carried.count(path)) far.push_back(std::move(path));
    if (far.empty()) continue;
    std::string named;
    for (size_t i = 0; i < far.size() && i < 3; i++) named += (i ? ", " : "") + far[i];
    if (far.size() > 3) named += fmt::format(" and {} more", far.size() - 3);
    warn("pid {} runs in a mount namespace of its own (a container, or a job's private /tmp): "
         "{} file(s) it uses are not, for snap, at the paths the job knows them by ({}). A "
         "restore here would not find them and refuses; restore inside the same container or "
         "namespace (or one with those files at those paths)",
         p.pid, far.size(), named);
  }
}

}  // namespace

DumpResult dump_tree(pid_t pid, DumpSink& outer_sink, const DumpOptions& opts) {
  StepTimes steps;
  const auto started = std::chrono::steady_clock::now();
  pidview::check_not_namespace_init(pid);
  // Mapping flags read while the job still runs (tracer/vmflags.h): reading
  // smaps walks every page. With --kill nothing is gained: the job stays
  // stopped to the end anyway.
  std::optional<Hints> hints;
  DumpResult result;
  // What the parasite's injection needs and can know before the job stops.
  prepare_syscall_sites();
  parasite::prepare_sigreturn_gadget();
  // And what needs no stopped job: the sink's settings (before its first
  // page, below), the reader threads, the checkpoint's own facts (its time
  // stamp's first call reads the time zone file).
  const unsigned jobs = opts.jobs ? opts.jobs : std::min(usable_cpus(), kMaxJobs);
  outer_sink.set_jobs(jobs);
  outer_sink.set_compression(opts.compression);
  // Data files the job writes through a shared mapping: read now, as it
  // runs (before the hints, which want to be fresh at the stop), and at
  // the stop only the pages it wrote meanwhile.
  FilePrecopy precopy;
  if (!opts.kill)
    precopy = FilePrecopy::read(proc::list_tree(pid), outer_sink, opts.shared_files_max,
                                opts.progress);
  if (precopy.bytes_before()) steps.step("data files mapped shared, read while the job ran");
  MemoryReaders readers(jobs);
  // Its private memory too, and at the stop only the pages it wrote
  // meanwhile; a series that tracks writes itself reads only those anyway.
  MemoryPrecopy memory_precopy;
  // And its shared memory: not write-protected at the stop then.
  SharedPrecopy shared_precopy;
  if (!opts.kill && !opts.incremental) {
    const std::vector<pid_t> pids = proc::list_tree(pid);
    shared_precopy = SharedPrecopy::read(pids, outer_sink, opts.shared_files_max, opts.progress);
    memory_precopy = MemoryPrecopy::read(pids, outer_sink, readers, opts.progress);
    parasite::phase(pid, "memory-read-before-stop");
    steps.step("memory read while the job ran");
  }
  if (!opts.kill) {
    const std::vector<pid_t> pids = proc::list_tree(pid);  // listed once for both
    hints.emplace(Hints{proc::VmFlagsHints::read(pids), proc::FdHints::read(pids),
                        SeccompHints::read(pids)});
    size_t threads = 0;
    uint64_t resident = 0;
    for (pid_t p : pids)
      if (auto text = proc::try_read_file("/proc/" + std::to_string(p) + "/status")) {
        const proc::Status st = proc::parse_status(*text);
        threads += static_cast<size_t>(std::max(st.threads, 1));
        resident += st.rss_bytes;
      }
    // The snapshots' budget: from the job's resident memory and its
    // cgroup's room, read now rather than while it is stopped.
    result.memory_budget =
        opts.memory_budget ? *opts.memory_budget : default_memory_budget(resident, pid);
    // What collecting the mappings, fds and threads will allocate (text,
    // entries: ~400 bytes a mapping, ~1 KiB an fd; a thread's XSAVE area
    // kept twice and its sigreturn frame, ~12 KiB), and settling the
    // pre-copy, faulted in now rather than while the job is stopped (page
    // faults are dear on a VM).
    warm_heap(std::min<size_t>(hints->vmflags.mapping_count() * 512 + hints->fds.size() * 1024 +
                                   threads * (16 << 10) + memory_precopy.settle_heap_bytes(),
                               31 << 20));
  }
  readers.warm();  // their buffers too
  // Where pages read while the job is stopped wait until it runs again.
  // Without huge pages, filling the buffer would fault on every page while
  // the job is stopped, which costs more than storing them there.
  std::optional<HeldPages> held;
  if (!opts.kill && huge_pages_available()) held.emplace(kHeldPagesMax, kHeldPagesWarm);
  vlog("{} thread(s) reading, {} compressing", readers.threads() ? readers.threads() : 1, jobs);
  image::Checkpoint ckpt = new_checkpoint();
  steps.step("hints");
  if (hints) proc::warm_locks_read();  // read again while stopped (with the fd hints)
  auto t0 = std::chrono::steady_clock::now();
  SeizedTree tree = SeizedTree::seize(pid);  // 1
  parasite::phase(pid, "job-seized");
  steps.step("seize");
  result.threads = tree.thread_count();
  vlog("stopped {} process(es), {} thread(s)", tree.processes().size(), tree.thread_count());
  // Threads under seccomp of their own: their filters, by tid.
  std::map<pid_t, image::Seccomp> own_seccomp;
  {
    std::vector<pid_t> pids;
    for (auto& p : tree.processes()) {
      pids.push_back(p.pid);
      std::vector<pid_t> tids;
      for (const auto& t : p.tasks) tids.push_back(t->tid());
      refuse_thread_tables(p.pid, tids);  // the parasite's threads wait on the leader's fd too
      // Before the parasite: its calls go through the job's seccomp.
      const auto own = (hints ? hints->seccomp : SeccompHints{}).own_threads(p.pid, tids);
      for (const auto& [tid, mode] : own) own_seccomp[tid] = read_seccomp(p.pid, tid, mode);
      if (!own.empty()) {
        for (auto& t : p.tasks) t->suspend_seccomp();
        vlog("pid {}: {} thread(s) under seccomp of their own, saved", p.pid, own.size());
      }
      if (auto comm = proc::try_read_file(fmt::format("/proc/{}/comm", p.pid));
          comm && *comm == "srun\n")
        throw srun_error(fmt::format("pid {}", p.pid));
    }
    refuse_shared_tables(pids);  // before anything is injected
  }

  for (auto& p : tree.processes()) {  // 2
    image::Process proc = collect_process(p, hints ? &hints->vmflags : nullptr,
                                          hints ? &hints->fds : nullptr);
    for (auto& t : proc.threads)
      if (auto it = own_seccomp.find(t.tid); it != own_seccomp.end()) t.seccomp = it->second;
    if (hints)
      vlog("pid {}: {} of {} fds read from hints", p.pid, hints->fds.applied(p.pid).size(),
           proc.fds.size());
    steps.step("collect");
    parasite::phase(p.pid, "process-collected");
    collect_parasite_state(p, proc);
    steps.step("parasite");
    ckpt.processes.push_back(std::move(proc));
  }
  // Zombies last: each one's parent is a live process, listed already.
  for (pid_t z : tree.zombies()) ckpt.processes.push_back(collect_zombie(z));
  // How each process names its files (its own, in a container), kept
  // open for what is read once the job runs again.
  const FileViews views = FileViews::open(ckpt);
  // What the processes share: unix sockets (open file descriptions below).
  collect_sockets(ckpt.processes);
  mark_control_connections(ckpt, opts);
  check_sockets_restorable(ckpt.processes, opts.tcp_established, opts.tcp_close);  // before anything could be killed
  // Established TCP connections, read in repair mode; taken out of it when
  // the job goes on (or the dump fails), left in it when the job is killed.
  TcpRepair tcp_repair = TcpRepair::save(ckpt.processes, opts.tcp_established);
  if (opts.tcp_close) mark_closed_outside_connections(ckpt.processes);
  // Taken while the sockets are in repair mode (alive, deaf); removed again
  // if the dump fails, kept when the job is killed.
  netlock::NetworkLock network_lock;
  if (opts.kill) network_lock = lock_outside_connections(ckpt, pid);
  // Deleted files and memfds: saved in the image (the larger ones' contents
  // once the pages can be stored, below).
  std::vector<PagedGhost> ghost_pages = collect_ghost_files(ckpt);
  // Those as the checkpoint before kept them (a series): not read again.
  const std::vector<EarlierPages> ghosts_before =
      take_unchanged_ghosts(ckpt, ghost_pages, outer_sink.base_checkpoint());
  // Those not changed for a while, with a dump the job runs on from: read
  // once its memory is (4c), off the freeze, and checked unchanged then.
  std::vector<PagedGhost> quiet_ghosts;
  if (!opts.kill) quiet_ghosts = take_quiet(ghost_pages, quiet_file_time());
  const auto temp_dirs = temp_roots(ckpt);
  // Files in /dev/shm or /tmp the job maps, and data files it writes through memory: saved too.
  mark_named_shared_memory(ckpt, temp_dirs, views, opts.shared_files_max);
  precopy.settle(ckpt, outer_sink);
  memory_precopy.settle(ckpt, outer_sink);
  shared_precopy.settle(ckpt, outer_sink);
  if (precopy.used())
    vlog("data files mapped shared: {:.1f} MiB read while the job ran, {:.1f} MiB of it written "
         "since, read again now", static_cast<double>(precopy.bytes_before()) / (1 << 20),
         static_cast<double>(precopy.bytes_again()) / (1 << 20));
  // What it holds in /tmp and its directories, made again where missing;
  // the larger files' contents are read once the memory is (step 4b).
  // In a series, those as the checkpoint before kept them are not read again.
  TempFileContents temp_contents = collect_temp_files(ckpt, temp_dirs, opts.temp_files_max, views,
                                                      outer_sink.base_checkpoint());
  // The files the user named, as they are now (the larger ones' contents
  // stored below while the job is stopped, or, those quiet for a while,
  // once it runs again: 4c).
  const KeptFiles kept = collect_kept_files(
      ckpt, opts.with_files,
      opts.kill ? std::nullopt : std::optional<std::chrono::seconds>(quiet_file_time()),
      outer_sink.base_checkpoint());
  if (!opts.with_files.empty())
    vlog("--with-files: {} file(s), {} directories, {:.1f} MiB, as they are at the stop{}",
         kept.files, kept.directories, static_cast<double>(kept.bytes) / (1 << 20),
         kept.unchanged ? fmt::format("; {} file(s), {:.1f} MiB, as checkpoint {} kept them, not "
                                      "read again",
                                      kept.unchanged,
                                      static_cast<double>(kept.unchanged_bytes) / (1 << 20),
                                      outer_sink.base_number().value_or(0))
                        : std::string());
  proc::collect_ptys(ckpt);  // after the refusals above: it reads the ptys' queues
  steps.step("sharing");
  // The ids as the job sees them (its own pid namespace), read while the
  // tree is stopped; everything below still works on host pids, pages are
  // stored under the job's.
  const pidview::PidView view = pidview::read_pid_view(ckpt);
  if (view.own_namespace()) vlog("the job runs in its own pid namespace: ids recorded as it sees them");
  PidViewSink sink(outer_sink, view);
  // Incremental: which pages changed since the previous checkpoint.
  if (opts.incremental) opts.incremental->scan(tree, ckpt, sink.base_number());
  steps.step("pid view and write tracking");

  // Pages are stored by the reader threads, concurrently.
  std::mutex progress_mu;
  Store store = [&](pid_t owner, uint64_t mapping_start, uint64_t addr, const uint8_t* data,
                   size_t npages) {
    sink.add_pages(owner, mapping_start, addr, data, npages);
    if (opts.progress) {
      std::unique_lock lock(progress_mu, std::try_to_lock);
      if (lock) opts.progress(sink.stats());
    }
  };

  // File contents the checkpoint before stored already (a series).
  auto refer_to_base = [&](const std::vector<EarlierPages>& pages) {
    for (const auto& e : pages)
      sink.add_earlier(image::kFilePagesPid, e.mapping_start, e.addr, e.base_addr, e.npages);
  };
  refer_to_base(ghosts_before);
  if (!ghosts_before.empty())
    vlog("{} range(s) of deleted files and memfds as checkpoint {} kept them: not read again",
         ghosts_before.size(), sink.base_number().value_or(0));
  refer_to_base(temp_contents.earlier());
  if (!temp_contents.earlier().empty())
    vlog("{} file(s) of temporary directories, {:.1f} MiB, as checkpoint {} kept them: not read "
         "again", temp_contents.earlier().size(),
         static_cast<double>(temp_contents.earlier_bytes()) / (1 << 20),
         sink.base_number().value_or(0));
  // The larger deleted files and memfds, read while the job is stopped:
  // they have no path a restore could find them by, and nothing would tell
  // that the job wrote to them once it ran again.
  if (!ghost_pages.empty()) {
    const uint64_t bytes = store_ghost_pages(ghost_pages, store);
    vlog("{:.1f} MiB of deleted files and memfds stored in the page store while the job was "
         "stopped", static_cast<double>(bytes) / (1 << 20));
    steps.step("deleted files and memfds");
  }
  if (!kept.pages.empty()) {
    refer_to_base(earlier_kept_files(kept));
    const auto t = std::chrono::steady_clock::now();
    if (const uint64_t bytes = store_kept_files(kept, store, false); bytes > (uint64_t{256} << 20))
      warn("--with-files: {:.1f} MiB read while the job was stopped, {:.1f} s of its freeze: "
           "name only the files it reads again (a file unchanged for {} s before a checkpoint is "
           "read after the freeze)",
           static_cast<double>(bytes) / (1 << 20), seconds_since(t), quiet_file_time().count());
    steps.step("files named by --with-files");
  }

  // Shared memory objects mapped more than once in the tree are read once.
  SharedMemoryPages shared;
  Snapshots snapshots;  // 3: with kill the job stays stopped: none needed
  SharedSnapshot shm;   // declared after the snapshots: it reads through them
  std::optional<MemoryBudget> budget;
  if (!opts.kill) {
    std::vector<pid_t> live;
    for (const auto& p : tree.processes()) live.push_back(p.pid);
    vlog("memory budget of the snapshots: {} MiB", result.memory_budget >> 20);
    snapshots = take_snapshots(tree, ckpt, store, shared, readers, *hints,
                               held ? &*held : nullptr, shm, precopy, shared_precopy,
                               memory_precopy, views);
    if (shm)
      vlog("{} MiB of shared memory (anonymous, or files on tmpfs) write-protected in {} "
           "process(es): read once the job runs, each page before the job's first write to it",
           shm->stats().bytes >> 20, shm->stats().contexts);
    if (!all_taken(snapshots)) assign_file_ids(ckpt.processes);  // the job's own, while stopped
    tcp_repair.leave();
    tree = SeizedTree();  // detach: the job runs again
    memory_precopy.adopt(precopy.take_trackers());
    memory_precopy.adopt(shared_precopy.take_trackers());
    memory_precopy.end();  // the protection goes, in the background
    budget.emplace(result.memory_budget, std::move(live), snapshots);
  }
  result.frozen = seconds_since(t0);
  steps.step("snapshot");
  vlog("job frozen for {:.3f} s", result.frozen);
  record_cpu_binding(ckpt, pid);  // threads bound to fewer CPUs than the job was given
  if (!opts.kill) parasite::phase(pid, "job-released");  // the budget is watched from here
  if (held) {
    const size_t kept = held->bytes_held(), passed = held->bytes_passed_on();
    held->store_all(store);
    if (kept)
      vlog("{:.1f} MiB read while the job was stopped, stored once it ran again",
           static_cast<double>(kept) / (1 << 20));
    if (passed)
      vlog("{:.1f} MiB read while the job was stopped past the {} MiB held: stored while it was",
           static_cast<double>(passed) / (1 << 20), kHeldPagesMax >> 20);
    held.reset();
    steps.step("pages read while stopped, stored");
  }
  std::future<SnapshotFlags> snapshot_flags;
  if (hints) {
    snapshot_flags = read_snapshot_flags(ckpt, snapshots, *hints);
    confirm_fd_hints(ckpt, snapshots, *hints);
  }
  // Which fds share an open file description (kcmp; with --kill the job is
  // still stopped).
  if (opts.kill) assign_file_ids(ckpt.processes);
  else if (all_taken(snapshots)) assign_file_ids(ckpt.processes, order_in_snapshots(ckpt, snapshots));
  // What identifies the code the memory runs with: the files the
  // mappings name (their stamps need no stopped job).
  record_code_files(ckpt, views);
  say_own_namespaces(ckpt, views);
  steps.step("fd hints confirmed, code files");

  read_memory(ckpt, snapshots, store, shared, [&](pid_t p) {  // 4
    if (opts.incremental) return opts.incremental->chooser(p, sink);
    if (!memory_precopy.used()) return PageChooser{};
    return PageChooser([&memory_precopy, p](const image::Mapping& m) {
      return memory_precopy.pages(p, m);
    });
  }, budget ? &*budget : nullptr, readers, shm.get());
  if (shm) {
    const auto st = shm->finish();  // all read: the protection goes
    vlog("shared memory: {} page(s) stored, {} of them copied at the job's first write; {} "
         "userfaultfd context(s)", st.pages, st.copied_at_write, st.contexts);
    shm.reset();
  }
  steps.step("memory");
  if (budget) {
    budget->thaw();
    result.peak_extra = budget->peak();
    result.budget_reached = budget->reached();
    result.budget_frozen = budget->frozen_seconds();
    result.frozen += result.budget_frozen;
    if (result.budget_reached)
      warn("memory budget of {} MiB reached: the job was stopped again for {:.2f} s more "
           "until the rest of its memory was read", result.memory_budget >> 20,
           result.budget_frozen);
  }
  if (!temp_contents.empty()) {  // 4b
    const uint64_t kept = temp_contents.store(
        ckpt, store, [&](uint64_t start) { sink.forget(image::kFilePagesPid, start); });
    vlog("{:.1f} MiB of files in temporary directories kept in the page store",
         static_cast<double>(kept) / (1 << 20));
    steps.step("files in temporary directories");
  }
  if (!kept.pages.empty()) {  // 4c
    if (const uint64_t bytes = store_kept_files(kept, store, true))
      vlog("--with-files: {:.1f} MiB of files unchanged for {} s before the stop read after it",
           static_cast<double>(bytes) / (1 << 20), quiet_file_time().count());
  }
  if (!quiet_ghosts.empty()) {  // 4c
    const uint64_t bytes = store_ghost_pages(quiet_ghosts, store);
    for (const auto& g : quiet_ghosts) check_unchanged(g);
    vlog("{:.1f} MiB of deleted files and memfds unchanged for {} s before the dump stored "
         "while the job ran", static_cast<double>(bytes) / (1 << 20), quiet_file_time().count());
    steps.step("quiet deleted files and memfds");
  }
  if (snapshot_flags.valid()) confirm_flag_hints(ckpt, snapshots, snapshot_flags.get());
  record_mempolicies(ckpt, snapshots, opts.kill);
  steps.step("memory policies");
  for (auto& s : snapshots)  // all read: their teardown overlaps the commit
    if (s) s->end();
  ckpt.changed_pages_by = opts.incremental ? opts.incremental->method(sink.base_number())
                          : sink.base_number()            ? "content-hash"
                                                          : "full";

  std::vector<pid_t> host_pids;
  for (const auto& p : ckpt.processes) host_pids.push_back(p.pid);
  view.apply(ckpt);
  // The job's clocks once its memory is all read: a restore's go on from
  // here (a little later than its memory's last reading of them, never
  // earlier).
  ckpt.clocks = clocks_of(pid);
  sink.commit(ckpt);  // 5
  steps.step("commit");
  if (opts.hand_off_unprotect)
    if (const auto h = memory_precopy.hand_off(); h.pid)
      vlog("{:.1f} MiB of the job's memory read before the stop still write-protected: "
           "unprotected by pid {} (a child of snap's) once this returns",
           static_cast<double>(h.bytes) / (1 << 20), h.pid);
  for (size_t i = 0; i < snapshots.size(); i++)  // the job reaps its snapshot
    if (snapshots[i]) snapshots[i]->release(host_pids[i]);
  if (opts.kill) {
    tcp_repair.keep_for_kill();  // its connections die silently: the peer is in the image
    network_lock.keep();           // or its packets are dropped until the restore
    tree.kill_all();
    vlog("killed the job after a complete checkpoint");
  }
  steps.step("release");
  vlog("steps: {}", steps.text());
  result.processes = ckpt.processes.size();
  result.method = ckpt.changed_pages_by;
  result.stats = sink.stats();
  result.seconds = seconds_since(started);
  return result;
}

}  // namespace snap::job
