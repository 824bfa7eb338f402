#include "restore/remote_writer.h"

#include <limits.h>

#include <algorithm>

#include "tracer/remote.h"

namespace snap::restore {

namespace {

constexpr size_t kMaxIov = IOV_MAX;

char* end_of(const iovec& v) { return static_cast<char*>(v.iov_base) + v.iov_len; }

}  // namespace

RemoteWriter::RemoteWriter(pid_t pid) : pid_(pid) {
  local_.reserve(kMaxIov);
  remote_.reserve(kMaxIov);
}

void RemoteWriter::add(const void* src, remote_addr dst, size_t n) {
  if (n == 0) return;
  auto s = static_cast<char*>(const_cast<void*>(src));
  auto d = reinterpret_cast<char*>(dst.as_int());
  bool join_local = !local_.empty() && end_of(local_.back()) == s;
  bool join_remote = !remote_.empty() && end_of(remote_.back()) == d;
  if ((!join_local && local_.size() == kMaxIov) || (!join_remote && remote_.size() == kMaxIov)) {
    flush();
    join_local = join_remote = false;
  }
  if (join_local) local_.back().iov_len += n;
  else local_.push_back({s, n});
  if (join_remote) remote_.back().iov_len += n;
  else remote_.push_back({d, n});
  queued_ += n;
}

void RemoteWriter::flush() {
  if (queued_ == 0) return;
  ssize_t r = ::process_vm_writev(pid_, local_.data(), local_.size(), remote_.data(),
                                  remote_.size(), 0);
  size_t done = r > 0 ? static_cast<size_t>(r) : 0;
  if (done < queued_) finish_short_write(done);
  written_ += queued_;
  local_.clear();
  remote_.clear();
  queued_ = 0;
}

// Writes what is queued past the first `done` bytes, piece by piece.
void RemoteWriter::finish_short_write(size_t done) {
  size_t li = 0, ri = 0, lo = 0, ro = 0;  // current iovec and offset in it, each side
  size_t pos = 0;
  while (pos < queued_) {
    size_t n = std::min(local_[li].iov_len - lo, remote_[ri].iov_len - ro);
    size_t skip = pos < done ? std::min(n, done - pos) : 0;
    if (skip < n) {
      auto src = static_cast<const char*>(local_[li].iov_base) + lo + skip;
      uint64_t dst = reinterpret_cast<uint64_t>(remote_[ri].iov_base) + ro + skip;
      write_remote(pid_, remote_addr(dst), src, n - skip);
    }
    pos += n;
    lo += n;
    ro += n;
    if (lo == local_[li].iov_len) ++li, lo = 0;
    if (ro == remote_[ri].iov_len) ++ri, ro = 0;
  }
}

}  // namespace snap::restore
