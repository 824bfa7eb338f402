#include "job/dump.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <fmt/core.h>
#include <memory>

#include "base/log.h"
#include "job/incremental.h"
#include "parasite/parasite.h"
#include "parasite/snapshot.h"
#include "tracer/collect.h"
#include "tracer/file_stamp.h"
#include "tracer/memory.h"
#include "tracer/pid_view.h"
#include "tracer/sharing.h"
#include "tracer/sockets.h"
#include "tracer/task.h"

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
  return c;
}

namespace {

// The parasite's part of step 2 (src/parasite): runs in the stopped process
// and is removed again before its memory is read.
void collect_parasite_state(SeizedTree::Proc& p, image::Process& proc) {
  auto state = parasite::run_parasite(p, proc.fds);
  parasite::apply_parasite_state(state, proc);
}

// Where read pages go: the image writer (and the progress line).
using Store = std::function<void(pid_t owner, uint64_t mapping_start, uint64_t addr,
                                 const uint8_t* data, size_t npages)>;

// Pages read from wherever (the job or its snapshot) are stored as the job's.
PageSink store_as(pid_t owner, const Store& store) {
  return [owner, &store](pid_t, uint64_t mapping_start, uint64_t addr, const uint8_t* data,
                         size_t npages) { store(owner, mapping_start, addr, data, npages); };
}

using Snapshots = std::vector<std::unique_ptr<parasite::MemorySnapshot>>;

// Step 3: a copy-on-write snapshot of each (stopped) process, and, read right
// away, the few mappings a snapshot does not show as they are. A process
// whose snapshot the kernel refuses gets none (nullptr): its memory is then
// read here too, while it is still stopped.
Snapshots take_snapshots(SeizedTree& tree, image::Checkpoint& ckpt, const Store& store,
                         SharedMemoryPages& shared) {
  Snapshots snapshots;
  for (size_t i = 0; i < tree.processes().size(); i++) {  // the live ones, zombies come after
    auto& proc = ckpt.processes[i];
    Task& leader = *tree.processes()[i].tasks[0];
    parasite::MemorySnapshot::collect_leftovers(leader);
    auto snap = parasite::MemorySnapshot::take(leader);
    dump_memory(proc.pid, proc.mappings, store_as(proc.pid, store), [&](const image::Mapping& m) {
      return !snap || parasite::MemorySnapshot::differs_in_child(m);
    }, ReadVia::kProcessVmReadv, &shared);
    snapshots.push_back(std::move(snap));
  }
  return snapshots;
}

// Step 4: every page not read yet, from the snapshots (or from the stopped
// processes themselves, with --kill, where there are no snapshots).
void read_memory(image::Checkpoint& ckpt, const Snapshots& snapshots, const Store& store,
                 SharedMemoryPages& shared, const std::function<PageChooser(pid_t)>& chooser) {
  for (size_t i = 0; i < ckpt.processes.size(); i++) {
    auto& proc = ckpt.processes[i];
    if (proc.zombie) continue;
    const auto* snap = i < snapshots.size() ? snapshots[i].get() : nullptr;
    bool stopped = snapshots.empty();  // --kill: read everything from the job
    auto mem = dump_memory(snap ? snap->pid() : proc.pid, proc.mappings, store_as(proc.pid, store),
                           [&](const image::Mapping& m) {
                             return stopped || (snap && !parasite::MemorySnapshot::differs_in_child(m));
                           },
                           snap ? ReadVia::kMemFile : ReadVia::kProcessVmReadv, &shared,
                           chooser(proc.pid));
    vlog("pid {}: {} mappings, {} fds, {} threads, {} MiB of memory read", proc.pid,
         proc.mappings.size(), proc.fds.size(), proc.threads.size(), mem.bytes() >> 20);
  }
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
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
  void commit(const image::Checkpoint& c) override { sink_.commit(c); }
  image::ImageStats stats() const override { return sink_.stats(); }
  std::optional<uint64_t> base_number() const override { return sink_.base_number(); }
  void add_unchanged(pid_t pid, uint64_t mapping_start, uint64_t addr, size_t npages) override {
    sink_.add_unchanged(view_.pid(pid), mapping_start, addr, npages);
  }

 private:
  DumpSink& sink_;
  const pidview::PidView& view_;
};

}  // namespace

DumpResult dump_tree(pid_t pid, DumpSink& outer_sink, const DumpOptions& opts) {
  auto t0 = std::chrono::steady_clock::now();
  SeizedTree tree = SeizedTree::seize(pid);  // 1
  DumpResult result;
  result.threads = tree.thread_count();
  vlog("stopped {} process(es), {} thread(s)", tree.processes().size(), tree.thread_count());

  image::Checkpoint ckpt = new_checkpoint();
  for (auto& p : tree.processes()) {  // 2
    image::Process proc = collect_process(p);
    collect_parasite_state(p, proc);
    ckpt.processes.push_back(std::move(proc));
  }
  // Zombies last: each one's parent is a live process, listed already.
  for (pid_t z : tree.zombies()) ckpt.processes.push_back(collect_zombie(z));
  // What the processes share: open file descriptions, unix sockets.
  assign_file_ids(ckpt.processes);
  collect_unix_sockets(ckpt.processes);
  mark_control_connections(ckpt, opts);
  record_code_files(ckpt);  // what identifies the code the memory runs with
  // The ids as the job sees them (its own pid namespace), read while the
  // tree is stopped; everything below still works on host pids, pages are
  // stored under the job's.
  const pidview::PidView view = pidview::read_pid_view(ckpt);
  if (view.own_namespace()) vlog("the job runs in its own pid namespace: ids recorded as it sees them");
  PidViewSink sink(outer_sink, view);
  // Incremental: which pages changed since the previous checkpoint.
  if (opts.incremental) opts.incremental->scan(tree, ckpt, sink.base_number());

  Store store = [&](pid_t owner, uint64_t mapping_start, uint64_t addr, const uint8_t* data,
                   size_t npages) {
    sink.add_pages(owner, mapping_start, addr, data, npages);
    if (opts.progress) opts.progress(sink.stats());
  };

  // Shared memory objects mapped more than once in the tree are read once.
  SharedMemoryPages shared;
  Snapshots snapshots;  // 3: with kill the job stays stopped: none needed
  if (!opts.kill) {
    snapshots = take_snapshots(tree, ckpt, store, shared);
    tree = SeizedTree();  // detach: the job runs again
  }
  result.frozen = seconds_since(t0);
  vlog("job frozen for {:.3f} s", result.frozen);

  read_memory(ckpt, snapshots, store, shared, [&](pid_t p) {  // 4
    return opts.incremental ? opts.incremental->chooser(p, sink) : PageChooser{};
  });
  ckpt.changed_pages_by = opts.incremental ? opts.incremental->method(sink.base_number())
                          : sink.base_number()            ? "content-hash"
                                                          : "full";

  std::vector<pid_t> host_pids;
  for (const auto& p : ckpt.processes) host_pids.push_back(p.pid);
  view.apply(ckpt);
  sink.commit(ckpt);  // 5
  for (size_t i = 0; i < snapshots.size(); i++)  // the job reaps its snapshot
    if (snapshots[i]) snapshots[i]->release(host_pids[i]);
  if (opts.kill) {
    tree.kill_all();
    vlog("killed the job after a complete checkpoint");
  }
  result.processes = ckpt.processes.size();
  result.method = ckpt.changed_pages_by;
  result.stats = sink.stats();
  result.seconds = seconds_since(t0);
  return result;
}

}  // namespace snap::job
