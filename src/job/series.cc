#include "job/series.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fmt/core.h>

#include "base/error.h"
#include "base/log.h"
#include "image/image_reader.h"
#include "image/image_writer.h"
#include "image/series.h"

namespace snap::job {

namespace fs = std::filesystem;

RunLock::RunLock(const std::string& ckpt_dir) {
  if (::mkdir(ckpt_dir.c_str(), 0700) < 0 && errno != EEXIST)
    throw SysError("mkdir " + ckpt_dir, errno);
  std::string path = ckpt_dir + "/run.lock";
  fd_.reset(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd_) throw SysError("open " + path, errno);
  if (::flock(fd_.get(), LOCK_EX | LOCK_NB) < 0) {
    char buf[32] = {};
    ssize_t n = ::pread(fd_.get(), buf, sizeof buf - 1, 0);
    std::string holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "?";
    while (!holder.empty() && holder.back() == '\n') holder.pop_back();
    throw Error(fmt::format("{} is in use by snap run pid {}", ckpt_dir, holder),
                "one snap run per checkpoint directory; ask it with 'snap checkpoint --dir " +
                    ckpt_dir + "'");
  }
  std::string me = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_.get(), 0) == 0 && ::pwrite(fd_.get(), me.data(), me.size(), 0) < 0)
    warn("could not write {}: {}", path, std::strerror(errno));
}

namespace {

// The next checkpoint of a series (image::ImageWriter::create_in_series).
class SeriesWriterSink : public SeriesSink {
 public:
  SeriesWriterSink(const std::string& dir, unsigned keep)
      : w_(image::ImageWriter::create_in_series(dir, image::SeriesOptions{keep})) {}
  void add_pages(pid_t pid, uint64_t mapping_start, uint64_t addr, const uint8_t* data,
                 size_t npages) override {
    w_.add_pages(pid, mapping_start, addr, data, npages);
  }
  void add_unchanged(pid_t pid, uint64_t mapping_start, uint64_t addr, size_t npages) override {
    w_.add_unchanged(pid, mapping_start, addr, npages, true);
  }
  void add_earlier(pid_t pid, uint64_t mapping_start, uint64_t addr, uint64_t base_addr,
                   size_t npages) override {
    w_.add_earlier(pid, mapping_start, addr, base_addr, npages);
  }
  void forget(pid_t pid, uint64_t mapping_start) override { w_.forget(pid, mapping_start); }
  void forget_pages(pid_t pid, uint64_t mapping_start,
                    const std::vector<ByteRange>& addrs) override {
    w_.forget_pages(pid, mapping_start, addrs);
  }
  void move_pages(pid_t pid, uint64_t from, uint64_t to,
                  const std::vector<ByteRange>& addrs) override {
    w_.move_pages(pid, from, to, addrs);
  }
  std::optional<uint64_t> base_number() const override { return w_.base_number(); }
  const image::Checkpoint* base_checkpoint() const override { return w_.base_checkpoint(); }
  void commit(const image::Checkpoint& c) override { w_.commit(c); }
  image::ImageStats stats() const override { return w_.stats(); }
  void set_jobs(unsigned n) override { w_.set_jobs(n); }
  void set_compression(image::Compression c) override { w_.set_compression(c); }
  int number() const override { return static_cast<int>(w_.series_number()); }

 private:
  image::ImageWriter w_;
};

}  // namespace

std::optional<image::ImageReader> open_latest_good(const std::string& ckpt_dir) {
  auto numbers = image::series_numbers(ckpt_dir);
  if (numbers.empty()) return std::nullopt;
  auto latest = image::series_latest(ckpt_dir);
  std::string why;
  for (auto it = numbers.rbegin(); it != numbers.rend(); ++it) {
    if (latest && *it > *latest) continue;  // never committed
    std::string dir = fmt::format("{}/{}", ckpt_dir, *it);
    try {
      auto img = image::ImageReader::open(dir);
      img.verify_all();
      return img;
    } catch (const Error& e) {
      warn("checkpoint {} is damaged, trying the one before: {}", dir, e.what());
      why = e.what();
    }
  }
  throw Error(fmt::format("no checkpoint in {} is whole (the last problem: {})", ckpt_dir, why),
              "start the job afresh with another --dir, or restore a copy of the directory");
}

std::unique_ptr<SeriesSink> SeriesSink::begin(const std::string& ckpt_dir, unsigned keep) {
  return std::make_unique<SeriesWriterSink>(ckpt_dir, keep);
}

}  // namespace snap::job
