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

// Interim layout until the shared page store lands: CKPT/N are plain
// images, CKPT/latest -> N.
std::optional<int> latest_number(const std::string& dir) {
  std::error_code ec;
  auto target = fs::read_symlink(fs::path(dir) / "latest", ec);
  if (ec) return std::nullopt;
  return std::stoi(target.string());
}

class PlainSeriesSink : public SeriesSink {
 public:
  PlainSeriesSink(std::string dir, int n)
      : dir_(std::move(dir)), n_(n),
        w_(image::ImageWriter::create(fmt::format("{}/{}", dir_, n), true)) {}
  void add_pages(pid_t pid, uint64_t mapping_start, uint64_t addr, const uint8_t* data,
                 size_t npages) override {
    w_.add_pages(pid, mapping_start, addr, data, npages);
  }
  void commit(const image::Checkpoint& c) override {
    w_.commit(c);
    std::string tmp = fmt::format("{}/latest.tmp-{}", dir_, ::getpid());
    ::unlink(tmp.c_str());
    if (::symlink(std::to_string(n_).c_str(), tmp.c_str()) < 0) throw SysError("symlink " + tmp, errno);
    if (::rename(tmp.c_str(), (dir_ + "/latest").c_str()) < 0) throw SysError("rename " + tmp, errno);
  }
  image::ImageStats stats() const override { return w_.stats(); }
  int number() const override { return n_; }

 private:
  std::string dir_;
  int n_;
  image::ImageWriter w_;
};

}  // namespace

std::optional<std::string> latest_checkpoint(const std::string& ckpt_dir) {
  auto n = latest_number(ckpt_dir);
  if (!n) return std::nullopt;
  return fmt::format("{}/{}", ckpt_dir, *n);
}

std::unique_ptr<SeriesSink> SeriesSink::begin(const std::string& ckpt_dir, unsigned) {
  return std::make_unique<PlainSeriesSink>(ckpt_dir, latest_number(ckpt_dir).value_or(0) + 1);
}

}  // namespace snap::job
