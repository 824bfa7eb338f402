#include "job/snapshot_steps.h"

#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <algorithm>
#include <map>
#include <set>

#include "base/log.h"
#include "parasite/snapshot.h"
#include "tracer/guard_regions.h"
#include "tracer/mempolicy.h"

namespace snap::job {

PageSink store_as(pid_t owner, const Store& store) {
  return [owner, &store](pid_t, uint64_t mapping_start, uint64_t addr, const uint8_t* data,
                         size_t npages) { store(owner, mapping_start, addr, data, npages); };
}

bool all_taken(const Snapshots& snapshots) {
  return !snapshots.empty() && std::all_of(snapshots.begin(), snapshots.end(),
                                           [](const auto& s) { return s != nullptr; });
}

namespace {

// The shared memory files of the checkpoint (Mapping::named_shm) that are
// on tmpfs, as snap reaches them: a userfaultfd protects their mappings (a
// file in a temporary directory on another file system cannot be).
std::vector<parasite::SharedMemorySnapshot::File> tmpfs_files(const image::Checkpoint& ckpt,
                                                              const FileViews& views) {
  std::vector<parasite::SharedMemorySnapshot::File> out;
  std::set<std::pair<uint64_t, uint64_t>> seen;
  for (const auto& p : ckpt.processes)
    for (const auto& m : p.mappings) {
      if (!m.named_shm || !seen.insert({m.dev, m.inode}).second) continue;
      const std::string path = views.path(p.pid, m.path);
      struct statfs fs {};
      struct stat st {};
      if (::statfs(path.c_str(), &fs) != 0 || fs.f_type != TMPFS_MAGIC ||
          ::stat(path.c_str(), &st) != 0 || static_cast<uint64_t>(st.st_dev) != m.dev ||
          static_cast<uint64_t>(st.st_ino) != m.inode)
        continue;  // read while the job is stopped
      out.push_back({m.dev, m.inode, path});
    }
  return out;
}

}  // namespace

Snapshots take_snapshots(SeizedTree& tree, image::Checkpoint& ckpt, const Store& store,
                         SharedMemoryPages& shared, MemoryReaders& readers, const Hints& hints,
                         HeldPages* held, SharedSnapshot& shm, const FilePrecopy& precopy,
                         const SharedPrecopy& shared_before, const MemoryPrecopy& memory,
                         const FileViews& views) {
  Snapshots snapshots;
  for (size_t i = 0; i < tree.processes().size(); i++) {  // the live ones, zombies come after
    auto& proc = ckpt.processes[i];
    Task& leader = *tree.processes()[i].tasks[0];
    parasite::MemorySnapshot::collect_leftovers(leader, tree.processes()[i].left_snapshots);
    std::vector<uint64_t> sps;  // of the threads but the leader: their stacks are kept out
    uint64_t leader_rseq = 0;
    for (const auto& t : proc.threads)
      if (t.tid != proc.pid)
        sps.push_back(Registers::from_bytes(t.gpregs).sp().as_int());
      else if (t.rseq)
        leader_rseq = (*t.rseq)[0];
    auto snap = parasite::MemorySnapshot::take(leader, proc.mappings, sps, leader_rseq,
                                               memory.keep_out(proc.pid));
    if (!snap) {
      if (hints.vmflags.applied(proc.pid)) proc::reread_vmflags(proc.pid, proc.mappings);
      record_mapping_mempolicies(mapping_mempolicies(proc.pid), proc.mempolicy, proc.mappings);
      hints.fds.confirm(proc.pid, proc.fds, proc.pid);
    }
    snapshots.push_back(std::move(snap));
  }
  // After every clone: a snapshot child must not inherit the protection.
  if (all_taken(snapshots)) {
    std::vector<parasite::SharedMemorySnapshot::Process> procs;
    for (size_t i = 0; i < snapshots.size(); i++)
      procs.push_back({tree.processes()[i].tasks[0].get(), ckpt.processes[i].pid,
                       snapshots[i]->pid(), &ckpt.processes[i].mappings});
    std::string why;
    shm = parasite::SharedMemorySnapshot::take(procs, store, &why, tmpfs_files(ckpt, views),
                                               shared_before.kept());
    if (!why.empty())
      vlog("shared memory (anonymous, or files on tmpfs) is read while the job is stopped: {}",
           why);
  }
  for (size_t i = 0; i < snapshots.size(); i++) {
    auto& proc = ckpt.processes[i];
    const auto* snap = snapshots[i].get();
    dump_memory(proc.pid, proc.mappings,
                held ? held->sink(proc.pid, store_as(proc.pid, store)) : store_as(proc.pid, store),
                [&](const image::Mapping& m) {
      return (!snap || snap->read_from_job(m)) && !(shm && shm->covers(proc.pid, m));
    }, ReadVia::kProcessVmReadv, &shared, [&](const image::Mapping& m) {
      if (auto pages = precopy.pages(proc.pid, m)) return pages;
      if (auto pages = shared_before.pages(proc.pid, m)) return pages;
      return memory.pages(proc.pid, m);
    }, {}, &readers);
  }
  return snapshots;
}

void confirm_fd_hints(image::Checkpoint& ckpt, const Snapshots& snapshots, const Hints& hints) {
  for (size_t i = 0; i < snapshots.size(); i++)
    if (snapshots[i])
      hints.fds.confirm(ckpt.processes[i].pid, ckpt.processes[i].fds, snapshots[i]->pid());
}

std::future<SnapshotFlags> read_snapshot_flags(const image::Checkpoint& ckpt,
                                               const Snapshots& snapshots, const Hints& hints) {
  std::vector<std::pair<size_t, pid_t>> which;  // process index, snapshot pid
  for (size_t i = 0; i < snapshots.size(); i++)
    if (snapshots[i] && hints.vmflags.applied(ckpt.processes[i].pid))
      which.emplace_back(i, snapshots[i]->pid());
  return std::async(std::launch::async, [which, n = snapshots.size()] {
    SnapshotFlags out(n);
    for (auto [i, pid] : which) out[i] = proc::read_smaps(pid);
    return out;
  });
}

void confirm_flag_hints(image::Checkpoint& ckpt, const Snapshots& snapshots, SnapshotFlags flags) {
  for (size_t i = 0; i < flags.size(); i++) {
    if (!flags[i]) continue;
    const auto* snap = snapshots[i].get();
    auto& mappings = ckpt.processes[i].mappings;
    std::vector<bool> guarded;  // by the hint's flags: their guard regions were read while stopped
    for (const auto& m : mappings) guarded.push_back(image::has_vmflag(m.vmflags, "gu"));
    proc::confirm_vmflags(ckpt.processes[i].pid, mappings, std::move(*flags[i]),
                          [&](const image::Mapping& m) { return snap->read_from_job(m); });
    // Guarded since the hint was read: the snapshot has the guards (a fork
    // keeps them) as the job had them at the stop.
    std::vector<image::Mapping*> late;
    for (size_t k = 0; k < mappings.size(); k++)
      if (!guarded[k] && image::has_vmflag(mappings[k].vmflags, "gu")) late.push_back(&mappings[k]);
    record_guard_regions(snap->pid(), std::move(late));
  }
}

void record_mempolicies(image::Checkpoint& ckpt, const Snapshots& snapshots, bool kill) {
  for (size_t i = 0; i < ckpt.processes.size(); i++) {
    auto& proc = ckpt.processes[i];
    if (proc.zombie) continue;
    const auto* snap = i < snapshots.size() ? snapshots[i].get() : nullptr;
    if (!snap && !kill) continue;
    record_mapping_mempolicies(mapping_mempolicies(snap ? snap->pid() : proc.pid), proc.mempolicy,
                               proc.mappings);
    if (!snap || snap->kept_out().empty()) continue;
    // Those kept out of the snapshot: from the job, running again (as it
    // has them now, a policy it gave one since the stop included).
    auto from_job = mapping_mempolicies(proc.pid);
    std::erase_if(from_job, [&](const auto& p) {
      return !std::binary_search(snap->kept_out().begin(), snap->kept_out().end(), p.first);
    });
    record_mapping_mempolicies(from_job, proc.mempolicy, proc.mappings);
  }
}

FileOrder order_in_snapshots(const image::Checkpoint& ckpt, const Snapshots& snapshots) {
  std::map<pid_t, pid_t> snapshot_of;
  for (size_t i = 0; i < snapshots.size(); i++)
    snapshot_of[ckpt.processes[i].pid] = snapshots[i]->pid();
  return [snapshot_of](pid_t pid1, int fd1, pid_t pid2, int fd2) {
    return open_file_order(snapshot_of.at(pid1), fd1, snapshot_of.at(pid2), fd2);
  };
}

void read_memory(image::Checkpoint& ckpt, const Snapshots& snapshots, const Store& store,
                 SharedMemoryPages& shared, const std::function<PageChooser(pid_t)>& chooser,
                 MemoryBudget* budget, MemoryReaders& readers, parasite::SharedMemorySnapshot* shm) {
  for (size_t i = 0; i < ckpt.processes.size(); i++) {
    auto& proc = ckpt.processes[i];
    if (proc.zombie) continue;
    const auto* snap = i < snapshots.size() ? snapshots[i].get() : nullptr;
    bool stopped = snapshots.empty();  // --kill: read everything from the job
    PageChooser choose = chooser(proc.pid);
    if (shm)  // the write-protected shared memory: its pages as the shared snapshot chooses them
      choose = [shm, pid = proc.pid, inner = std::move(choose)](const image::Mapping& m)
          -> std::optional<std::vector<uint64_t>> {
        if (shm->covers(pid, m)) return shm->pages(pid, m);
        return inner ? inner(m) : std::nullopt;
      };
    auto mem = dump_memory(snap ? snap->pid() : proc.pid, proc.mappings,
                           shm ? shm->sink(proc.pid, store_as(proc.pid, store))
                               : store_as(proc.pid, store),
                           [&](const image::Mapping& m) {
                             return stopped || (snap && (!snap->read_from_job(m) ||
                                                         (shm && shm->covers(proc.pid, m))));
                           },
                           snap ? ReadVia::kMemFile : ReadVia::kProcessVmReadv, &shared,
                           choose, [&](const image::Mapping&, uint64_t start, uint64_t end) {
                             if (snap && budget) budget->after_batch(*snapshots[i], start, end);
                           }, &readers);
    if (budget) budget->flush();  // before the next process's snapshot
    vlog("pid {}: {} mappings, {} fds, {} threads, {} MiB of memory read", proc.pid,
         proc.mappings.size(), proc.fds.size(), proc.threads.size(), mem.bytes() >> 20);
  }
}

}  // namespace snap::job
