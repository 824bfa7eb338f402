#include "image/staged_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include <fmt/core.h>

#include "base/error.h"
#include "base/huge_buffer.h"
#include "base/log.h"

namespace snap::image {

namespace {

constexpr size_t kChunk = 4 << 20;  // bytes per write
constexpr size_t kBuffers = 16;     // at most this many chunks exist (64 MiB)
// What is written is made durable (fdatasync, on a thread of its own) every
// this many bytes while more is being written: a device with a volatile
// write cache (or a virtual disk in front of its host's page cache) then
// writes it out while the rest is produced, instead of all of it in the
// final fsync. Measured on this project's virtual disk, a 1 GiB dump took
// 1.07-1.22 s without and 0.87-0.94 s with it (every 32-128 MiB alike).
constexpr uint64_t kSyncEvery = StagedFile::kSyncEvery;
// O_DIRECT wants buffer, offset and length aligned to the device's logical
// block; 4096 covers every device snap meets (a stricter one fails with
// EINVAL, and the writes go through the page cache instead).
constexpr size_t kAlign = 4096;

struct Chunk {
  uint8_t* buf = nullptr;
  size_t len = 0;  // bytes to write (the last chunk: padded to kAlign)
  uint64_t off = 0;
};

}  // namespace

using Pressure = StagedFile::Pressure;

class StagedFile::Impl {
 public:
  Impl(int fd, std::string path, unsigned io_threads) : fd_(fd), path_(std::move(path)) {
    int fl = ::fcntl(fd_, F_GETFL);
    direct_ = fl >= 0 && ::fcntl(fd_, F_SETFL, fl | O_DIRECT) == 0;
    if (io_threads == 0) io_threads = 1;
    for (unsigned i = 0; i < io_threads; i++) threads_.emplace_back([this] { loop(); });
    syncer_ = std::thread([this] { sync_loop(); });
  }

  ~Impl() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    work_cv_.notify_all();
    done_cv_.notify_all();
    for (auto& t : threads_) t.join();
    if (syncer_.joinable()) syncer_.join();
  }

  void append(const uint8_t* p, size_t n) {
    while (n) {
      if (!cur_.buf) take_buffer();
      size_t k = std::min(n, kChunk - cur_.len);
      std::memcpy(cur_.buf + cur_.len, p, k);
      cur_.len += k;
      p += k;
      n -= k;
      if (cur_.len == kChunk) submit();
    }
  }

  void finish(uint64_t size) {
    if (cur_.buf && cur_.len) {
      size_t padded = (cur_.len + kAlign - 1) / kAlign * kAlign;
      std::memset(cur_.buf + cur_.len, 0, padded - cur_.len);
      cur_.len = padded;
      submit();
    }
    std::unique_lock lock(mu_);
    done_cv_.wait(lock, [&] { return error_ || (queue_.empty() && writing_ == 0 && !syncing_); });
    if (error_) std::rethrow_exception(error_);
    finished_ = true;
    done_cv_.notify_all();
    lock.unlock();
    if (::ftruncate(fd_, static_cast<off_t>(size)) < 0)
      throw SysError(fmt::format("ftruncate({})", path_), errno);
    vlog("{}: {} writes, {:.3f} s in them (all threads), {:.3f} s waiting for a buffer, {} syncs",
         path_, writes_, write_seconds_, wait_seconds_, syncs_);
  }

  bool direct() const {
    std::lock_guard lock(mu_);
    return direct_;
  }

  StagedFile::Pressure pressure() {
    std::lock_guard lock(mu_);
    Pressure p;
    p.waited = wait_seconds_ - waited_reported_;
    waited_reported_ = wait_seconds_;
    p.unsynced = (cur_off_submitted_ > synced_ ? cur_off_submitted_ - synced_ : 0);
    return p;
  }

 private:
  // A free buffer for cur_, waiting while all are in flight.
  void take_buffer() {
    std::unique_lock lock(mu_);
    auto t0 = std::chrono::steady_clock::now();
    done_cv_.wait(lock, [&] { return error_ || !free_.empty() || all_.size() < kBuffers; });
    wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (error_) std::rethrow_exception(error_);
    uint64_t off = cur_.off;
    if (!free_.empty()) {
      cur_.buf = free_.back();
      free_.pop_back();
    } else {
      // Slices of one huge-page buffer (base/huge_buffer.h: O_DIRECT writes
      // from huge pages go out in far larger requests).
      if (!arena_) arena_ = HugeBuffer(kBuffers * kChunk);
      cur_.buf = arena_.data() + all_.size() * kChunk;
      all_.push_back(cur_.buf);
    }
    cur_.len = 0;
    cur_.off = off;
  }

  void submit() {
    std::lock_guard lock(mu_);
    if (error_) std::rethrow_exception(error_);
    queue_.push_back(cur_);
    cur_.off += cur_.len;
    cur_off_submitted_ = cur_.off;
    cur_.buf = nullptr;
    cur_.len = 0;
    work_cv_.notify_one();
  }

  void loop() {
    for (;;) {
      Chunk c;
      bool direct;
      {
        std::unique_lock lock(mu_);
        work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;
        c = queue_.front();
        queue_.pop_front();
        writing_++;
        direct = direct_;
      }
      std::exception_ptr err;
      auto t0 = std::chrono::steady_clock::now();
      try {
        write_chunk(c, direct);
      } catch (...) {
        err = std::current_exception();
      }
      double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::lock_guard lock(mu_);
      write_seconds_ += dt;
      writes_++;
      written_ += c.len;
      finished(c, err);
    }
  }

  // Makes what is written durable while more is being written, once there
  // is kSyncEvery of it (one fdatasync at a time; the I/O threads go on).
  void sync_loop() {
    std::unique_lock lock(mu_);
    uint64_t synced = 0;
    for (;;) {
      done_cv_.wait(lock, [&] { return stopping_ || finished_ || error_ || written_ >= synced + kSyncEvery; });
      if (stopping_ || finished_ || error_) return;
      uint64_t mark = written_;
      syncing_ = true;
      lock.unlock();
      int rc = ::fdatasync(fd_);
      int err = errno;
      lock.lock();
      syncing_ = false;
      syncs_++;
      if (rc < 0 && !error_) error_ = std::make_exception_ptr(SysError(fmt::format("fdatasync({})", path_), err));
      synced = synced_ = mark;
      done_cv_.notify_all();
    }
  }

  // A chunk's write is over (with mu_ held).
  void finished(const Chunk& c, const std::exception_ptr& err) {
    writing_--;
    if (err && !error_) error_ = err;
    free_.push_back(c.buf);
    done_cv_.notify_all();
  }

  void write_chunk(const Chunk& c, bool direct) {
    size_t done = 0;
    while (done < c.len) {
      ssize_t n = ::pwrite(fd_, c.buf + done, c.len - done, static_cast<off_t>(c.off + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EINVAL && direct) {
        // The file system takes O_DIRECT but not these writes (alignment):
        // through the page cache from here on.
        direct = false;
        std::lock_guard lock(mu_);
        if (direct_) {
          int fl = ::fcntl(fd_, F_GETFL);
          if (fl >= 0) ::fcntl(fd_, F_SETFL, fl & ~O_DIRECT);
          direct_ = false;
        }
        continue;
      }
      if (n < 0) throw SysError(fmt::format("write({})", path_), errno);
      if (n == 0) throw SysError(fmt::format("write({})", path_), ENOSPC);
      done += static_cast<size_t>(n);
    }
    // Through the page cache: start writing it back now, so that the final
    // fsync finds little left to do and the disk is busy all along.
    if (!direct)
      ::sync_file_range(fd_, static_cast<off64_t>(c.off), static_cast<off64_t>(c.len),
                        SYNC_FILE_RANGE_WRITE);
  }

  const int fd_;
  const std::string path_;
  mutable std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  std::deque<Chunk> queue_;
  HugeBuffer arena_;                  // kBuffers chunks, made at the first byte
  std::vector<uint8_t*> free_, all_;  // all_: the chunks handed out so far
  size_t writing_ = 0, writes_ = 0, syncs_ = 0;
  uint64_t written_ = 0;  // bytes whose write is over
  bool syncing_ = false, finished_ = false;
  std::thread syncer_;
  double write_seconds_ = 0, wait_seconds_ = 0, waited_reported_ = 0;
  uint64_t synced_ = 0, cur_off_submitted_ = 0;
  bool direct_ = false, stopping_ = false;
  std::exception_ptr error_;
  std::vector<std::thread> threads_;
  Chunk cur_;  // the producer's
};

StagedFile::StagedFile(int fd, std::string path, unsigned io_threads)
    : impl_(std::make_unique<Impl>(fd, std::move(path), io_threads)) {}
StagedFile::~StagedFile() = default;

void StagedFile::append(const void* data, size_t n) {
  impl_->append(static_cast<const uint8_t*>(data), n);
  size_ += n;
}

void StagedFile::finish() { impl_->finish(size_); }

bool StagedFile::direct() const { return impl_->direct(); }
StagedFile::Pressure StagedFile::pressure() { return impl_->pressure(); }

}  // namespace snap::image
