#include "job/memory_budget.h"

#include <algorithm>
#include <cctype>
#include <set>
#include <sstream>
#include <string>

#include "base/log.h"
#include "image/format.h"
#include "tracer/proc.h"

namespace snap::job {

namespace {

// The minor faults of process `pid` so far (all its threads), or 0.
uint64_t minor_faults(pid_t pid) {
  auto text = proc::try_read_file("/proc/" + std::to_string(pid) + "/stat");
  if (!text) return 0;
  auto close = text->rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream in(text->substr(close + 1));
  std::string field;
  for (int i = 0; i < 8 && in >> field; i++) {}  // state .. minflt (fields 3-10)
  return std::strtoull(field.c_str(), nullptr, 10);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::optional<uint64_t> read_number(const std::string& path) {
  auto text = proc::try_read_file(path);
  if (!text || text->empty() || !std::isdigit(static_cast<unsigned char>((*text)[0]))) return std::nullopt;
  return std::strtoull(text->c_str(), nullptr, 10);
}

}  // namespace

MemoryBudget::MemoryBudget(uint64_t budget, std::vector<pid_t> job, const Snapshots& snapshots)
    : budget_(budget),
      job_(std::move(job)),
      snapshots_(snapshots),
      interval_(std::min<int64_t>(10000, 1000 + 50 * static_cast<int64_t>(job_.size()))) {
  for (pid_t p : job_) seen_faults_[p] = minor_faults(p);
  watcher_ = std::thread([this] { watch(); });
}

MemoryBudget::~MemoryBudget() { stop_watching(); }

void MemoryBudget::stop_watching() {
  {
    std::lock_guard lock(mu_);
    done_ = true;
  }
  wake_.notify_all();
  if (watcher_.joinable()) watcher_.join();  // it lets a job it stopped go first
}

void MemoryBudget::after_batch(parasite::MemorySnapshot& s, uint64_t start, uint64_t end) {
  if (pending_snap_ && pending_snap_ != &s) flush();
  pending_snap_ = &s;
  if (!pending_.empty() && pending_.back().second == start)
    pending_.back().second = end;
  else
    pending_.emplace_back(start, end);
  pending_bytes_ += end - start;
  if (pending_bytes_ >= kFlushBytes || pending_.size() >= kFlushRanges) flush();
}

void MemoryBudget::flush() {
  if (pending_.empty()) return;
  pending_snap_->discard(pending_);
  pending_.clear();
  pending_bytes_ = 0;
}

void MemoryBudget::watch() {
  std::unique_lock lock(mu_);
  while (!done_) {
    wake_.wait_for(lock, interval_);
    if (done_ || frozen_) continue;
    lock.unlock();
    try {
      check();
    } catch (const std::exception& e) {  // a job gone meanwhile, say: the dump tells
      vlog("memory budget: {}", e.what());
    }
    lock.lock();
  }
  lock.unlock();
  if (!tasks_.empty()) resume_job();
}

void MemoryBudget::check() {
  uint64_t f = faults();
  uint64_t step = (f - faults_last_) * image::kPageSize;  // growth bound over the last interval
  faults_last_ = f;
  uint64_t grown = (f - faults_at_exact_) * image::kPageSize;
  // An exact reading also every 64 MiB of possible growth, for peak().
  // Twice the last interval's growth may come before the next look: the
  // watcher may wake late on a busy machine.
  if (exact_ + grown + 2 * step < budget_ && grown < kPeakResolution) return;
  if (exact_ + grown + 2 * step < budget_) {  // only for peak()
    exact_ = measure();
    checks_++;
    faults_at_exact_ = f;
    // What the job may have copied while smaps_rollup was read counts too.
    uint64_t during = (faults() - f) * image::kPageSize;
    if (exact_ + during + 2 * step < budget_) return;
  }
  // Near the budget: the job is stopped first and measured then, so that
  // it copies nothing more while smaps_rollup is read. If there is room
  // for a few more intervals it goes on (a brief stop), else it stays
  // stopped until the rest is read.
  stop_job();
  exact_ = measure();
  checks_++;
  faults_at_exact_ = faults_last_ = faults();
  if (exact_ + 4 * step < budget_) {
    resume_job();
    brief_stops_++;
    return;
  }
  frozen_ = reached_ = true;
  vlog("memory budget reached ({} MiB held by the snapshots; {} exact checks, {} brief stops "
       "before): job stopped until the rest is read", exact_ >> 20, checks_, brief_stops_);
}

void MemoryBudget::thaw() {
  flush();
  stop_watching();
}

uint64_t MemoryBudget::peak() {
  measure();
  return peak_;
}

uint64_t MemoryBudget::measure() {
  uint64_t sum = 0;
  for (const auto& s : snapshots_)
    if (s) sum += s->private_bytes();
  peak_ = std::max(peak_, sum);
  return sum;
}

void MemoryBudget::resume_job() {
  tasks_.clear();  // detach
  frozen_seconds_ += seconds_since(frozen_at_);
}

void MemoryBudget::stop_job() {
  frozen_at_ = std::chrono::steady_clock::now();
  std::set<pid_t> seized;
  for (pid_t pid : job_) {
    for (bool grew = true; grew;) {  // threads it starts meanwhile too
      grew = false;
      std::vector<pid_t> tids;
      try {
        tids = proc::list_threads(pid);
      } catch (const std::exception&) {
        break;  // it has ended
      }
      std::erase_if(tids, [&](pid_t tid) { return !seized.insert(tid).second; });
      Task::Stopped got = Task::seize_and_stop_all(tids, pid);  // together
      grew = !got.tasks.empty();
      for (auto& t : got.tasks) tasks_.push_back(std::move(t));
      for (auto& [tid, error] : got.failed) {
        try {
          std::rethrow_exception(error);
        } catch (const std::exception& e) {
          vlog("thread {} not stopped again: {}", tid, e.what());
        }
      }
    }
  }
}

uint64_t MemoryBudget::faults() {
  for (pid_t p : job_) {
    uint64_t now = minor_faults(p), &seen = seen_faults_[p];
    if (now > seen) faults_total_ += now - seen, seen = now;
  }
  return faults_total_;
}

std::optional<uint64_t> cgroup_memory_left(pid_t pid) {
  auto text = proc::try_read_file("/proc/" + std::to_string(pid) + "/cgroup");
  if (!text) return std::nullopt;
  std::optional<uint64_t> left;
  std::istringstream in(*text);
  std::string line;
  while (std::getline(in, line)) {
    auto c1 = line.find(':'), c2 = line.find(':', c1 + 1);
    if (c1 == std::string::npos || c2 == std::string::npos) continue;
    std::string id = line.substr(0, c1), ctl = line.substr(c1 + 1, c2 - c1 - 1), path = line.substr(c2 + 1);
    std::string base, limit_file, usage_file;
    if (id == "0" && ctl.empty()) {  // v2: mounted alone, or under unified/ (hybrid)
      base = proc::try_read_file("/sys/fs/cgroup/cgroup.controllers") ? "/sys/fs/cgroup"
                                                                       : "/sys/fs/cgroup/unified";
      limit_file = "memory.max", usage_file = "memory.current";
    } else if (("," + ctl + ",").find(",memory,") != std::string::npos) {
      base = "/sys/fs/cgroup/memory";
      limit_file = "memory.limit_in_bytes", usage_file = "memory.usage_in_bytes";
    } else {
      continue;
    }
    // The cgroup and every one above it: the tightest limit counts.
    for (;;) {
      std::string dir = base + (path == "/" ? "" : path);
      auto limit = read_number(dir + "/" + limit_file), usage = read_number(dir + "/" + usage_file);
      if (limit && usage && *limit < (1ull << 60)) {  // v1 shows "no limit" as a huge number
        uint64_t l = *limit > *usage ? *limit - *usage : 0;
        left = left ? std::min(*left, l) : l;
      }
      if (path.empty() || path == "/") break;
      auto slash = path.rfind('/');
      path = slash == 0 ? "/" : path.substr(0, slash);
    }
  }
  return left;
}

uint64_t default_memory_budget(uint64_t resident_bytes, pid_t job) {
  constexpr uint64_t kFloor = 64ull << 20;
  uint64_t budget = std::max(kFloor, resident_bytes / 20);
  // Half of what the cgroup has left: the job may write more between the
  // check that stops it and the stop (up to a batch's time), and that must
  // not reach the limit either.
  if (auto left = cgroup_memory_left(job)) budget = std::min(budget, *left / 2);
  return budget;
}

}  // namespace snap::job
