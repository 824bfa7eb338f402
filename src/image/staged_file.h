// A file written front to back in large writes, on threads of its own, so
// that the disk is busy while the next bytes are being produced.
//
// Bytes appended are gathered into 4 MiB buffers (16 at most); each full buffer is written
// (pwrite at its offset) by one of a few I/O threads while the producer fills
// the next, several writes in flight. Where the file system allows it the
// writes are O_DIRECT: they go from these buffers to the device, without a
// copy into the page cache (and without filling the page cache, and the
// memory cgroup of the job snap runs beside, with an image that is not read
// again soon). Where it does not (EINVAL), the same writes go through the page
// cache, each followed by sync_file_range() so that writeback starts at once.
// Every 64 MiB written, a thread of its own fdatasyncs the file while the
// writes go on, so that the device writes out its cache during the dump
// rather than all in the final fsync. Nothing is certainly durable before
// finish() and an fsync.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

namespace snap::image {

class StagedFile {
 public:
  // `fd` is open for writing at offset 0 of an empty file and stays owned
  // by the caller (it must outlive this object). `path` names it in errors.
  StagedFile(int fd, std::string path, unsigned io_threads = 3);
  ~StagedFile();  // waits for writes in flight (after an error: drops the rest)
  StagedFile(const StagedFile&) = delete;
  StagedFile& operator=(const StagedFile&) = delete;

  // Appends n bytes (copied before it returns). One producer thread at a
  // time. Blocks while every buffer is in flight. Throws the error of a
  // failed write (SysError naming the file).
  void append(const void* data, size_t n);

  // Writes what is left, waits for every write, and sets the file's size to
  // the bytes appended. Does not fsync. Throws the first write error.
  void finish();

  uint64_t size() const { return size_; }
  // Whether the writes went around the page cache (O_DIRECT) so far.
  bool direct() const;

  // Whether the disk keeps up: how long append() waited for a free buffer
  // since the last call, and how many bytes handed to write are not yet
  // known durable (written and fdatasynced). A disk that keeps up makes
  // append() never wait and its syncs follow the writes closely.
  struct Pressure {
    double waited = 0;
    uint64_t unsynced = 0;
  };
  Pressure pressure();
  static constexpr uint64_t kSyncEvery = 64 << 20;  // see staged_file.cc

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
  uint64_t size_ = 0;
};

}  // namespace snap::image
