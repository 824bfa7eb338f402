#include "tracer/proc.h"
#include "tracer/vmflags.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <set>

#include <fmt/core.h>

#include "base/error.h"
#include "base/huge_buffer.h"
#include "base/log.h"
#include "base/parallel.h"
#include "base/scoped_fd.h"
#include "tracer/aio_rings.h"
#include "tracer/fd_state.h"
#include "tracer/file_view.h"
#include "tracer/fd_table.h"

namespace snap::proc {

namespace {

std::string pid_path(pid_t pid, const char* what) {
  return "/proc/" + std::to_string(pid) + "/" + what;
}

uint64_t to_u64(std::string_view s, int base = 10) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, base);
  if (ec != std::errc()) throw Error("cannot parse number '" + std::string(s) + "' from /proc");
  return v;
}

std::vector<std::string_view> split_ws(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n')) i++;
    size_t j = i;
    while (j < s.size() && s[j] != ' ' && s[j] != '\t' && s[j] != '\n') j++;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

std::vector<std::string_view> lines(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find('\n', i);
    if (j == std::string_view::npos) j = s.size();
    out.push_back(s.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

// Same, one line at a time (smaps of a process with many mappings has
// hundreds of thousands).
template <typename Fn>
void for_each_line(std::string_view s, Fn&& fn) {
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find('\n', i);
    if (j == std::string_view::npos) j = s.size();
    fn(s.substr(i, j - i));
    i = j + 1;
  }
}

// "7f5f7aebd000-7f5f7aee3000 r-xp 00001000 fe:00 332383    /path", into
// `e`; false for a line of another shape. Fields are cut by hand, without a
// vector per line: /proc/PID/maps of a job may have 100,000 lines, read
// while it is stopped.
bool parse_map_line(std::string_view line, MapEntry& e) {
  size_t i = 0;
  auto field = [&]() {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) i++;
    size_t j = i;
    while (j < line.size() && line[j] != ' ' && line[j] != '\t') j++;
    std::string_view f = line.substr(i, j - i);
    i = j;
    return f;
  };
  auto hex = [](std::string_view f, uint64_t& v) {
    auto [p, ec] = std::from_chars(f.data(), f.data() + f.size(), v, 16);
    return ec == std::errc() && p == f.data() + f.size();
  };
  std::string_view range = field(), perms = field(), offset = field(), dev = field(), inode = field();
  auto dash = range.find('-'), colon = dev.find(':');
  uint64_t major = 0, minor = 0;
  if (inode.empty() || perms.size() != 4 || dash == std::string_view::npos ||
      colon == std::string_view::npos || !hex(range.substr(0, dash), e.start) ||
      !hex(range.substr(dash + 1), e.end) || !hex(offset, e.offset) ||
      !hex(dev.substr(0, colon), major) || !hex(dev.substr(colon + 1), minor))
    return false;
  auto [p, ec] = std::from_chars(inode.data(), inode.data() + inode.size(), e.inode);
  if (ec != std::errc() || p != inode.data() + inode.size()) return false;
  e.dev_major = static_cast<uint32_t>(major);
  e.dev_minor = static_cast<uint32_t>(minor);
  e.r = perms[0] == 'r';
  e.w = perms[1] == 'w';
  e.x = perms[2] == 'x';
  e.shared = perms[3] == 's';
  // The path is the rest of the line after the inode (it may contain spaces).
  while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) i++;
  e.path.assign(line.substr(i));
  return true;
}

}  // namespace

namespace {

// The whole file (`name` in directory `dirfd`, or AT_FDCWD), or the errno
// that stopped reading it. With `one_piece` (a /proc file the kernel makes
// whole before the first read returns), a short first read is the end.
std::string read_all(int dirfd, const char* name, int* err, bool one_piece = false) {
  *err = 0;
  ScopedFd fd(::openat(dirfd, name, O_RDONLY | O_CLOEXEC));
  if (!fd) {
    *err = errno;
    return {};
  }
  // Most files here are small (fdinfo, stat, status: one per fd or thread,
  // thousands of them per dump): a first read onto the stack, and a string
  // of just that size. A larger one is read straight into the string, in
  // large reads: /proc/PID/maps of a process with many mappings is MiBs,
  // and each read(2) of a seq_file fills as much of the buffer as it can.
  char first[4096];
  ssize_t n0;
  do n0 = ::read(fd.get(), first, sizeof first);
  while (n0 < 0 && errno == EINTR);
  if (n0 < 0) {
    *err = errno;
    return {};
  }
  std::string out(first, static_cast<size_t>(n0));
  if (n0 == 0 || (one_piece && n0 < static_cast<ssize_t>(sizeof first))) return out;
  size_t len = out.size();
  const bool small = n0 < static_cast<ssize_t>(sizeof first);  // likely all of it
  const size_t min_room = small ? 256 : 16 << 10;
  out.resize(small ? len + 512 : 64 << 10);
  for (;;) {
    if (out.size() - len < min_room) out.resize(std::max<size_t>(out.size() * 2, 64 << 10));
    ssize_t n = ::read(fd.get(), out.data() + len, out.size() - len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *err = errno;
      return {};
    }
    if (n == 0) {
      out.resize(len);
      return out;
    }
    len += static_cast<size_t>(n);
  }
}

}  // namespace

std::string read_file_at(int dirfd, const char* name, int* err) {
  return read_all(dirfd, name, err, /*one_piece=*/true);
}

std::optional<std::string> try_read_file(const std::string& path) {
  int err;
  std::string text = read_all(AT_FDCWD, path.c_str(), &err);
  if (err) return std::nullopt;
  return text;
}

void write_file(const std::string& path, const std::string& text) {
  ScopedFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) throw SysError("open " + path, errno);
  const ssize_t n = ::write(fd.get(), text.data(), text.size());
  if (n != static_cast<ssize_t>(text.size())) throw SysError("write " + path, n < 0 ? errno : EIO);
}

std::string read_file(const std::string& path) {
  int err;
  std::string text = read_all(AT_FDCWD, path.c_str(), &err);
  if (err) throw SysError("read " + path, err);
  return text;
}

std::string read_link(const std::string& path) {
  char buf[4096];
  ssize_t n = ::readlink(path.c_str(), buf, sizeof buf - 1);
  if (n < 0) throw SysError("readlink " + path, errno);
  return std::string(buf, static_cast<size_t>(n));
}

std::vector<MapEntry> parse_maps(std::string_view text) {
  std::vector<MapEntry> out;
  out.reserve(text.size() / 64 + 16);  // about 70-150 bytes a line
  for_each_line(text, [&](std::string_view l) {
    if (!parse_map_line(l, out.emplace_back())) out.pop_back();
  });
  return out;
}

std::vector<MapEntry> parse_smaps(std::string_view text, std::string* maps_text) {
  std::vector<MapEntry> out;
  out.reserve(text.size() / 512 + 16);  // about 700-1000 bytes a mapping
  if (maps_text) {
    maps_text->clear();
    maps_text->reserve(text.size() / 8);
  }
  for_each_line(text, [&](std::string_view l) {
    if (l.starts_with("VmFlags:")) {
      if (out.empty()) throw Error("smaps: VmFlags before any mapping");
      auto v = l.substr(8);
      while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
      while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
      out.back().vmflags = std::string(v);
      return;
    }
    // Mapping header lines start with a hex range; field lines with "Name:".
    auto first = l.substr(0, l.find(' '));
    if (first.empty() || first.back() == ':') return;
    if (first.find('-') == std::string_view::npos || first.find(':') != std::string_view::npos)
      return;
    if (maps_text) {
      maps_text->append(l);
      maps_text->push_back('\n');
    }
    if (!parse_map_line(l, out.emplace_back())) out.pop_back();
  });
  return out;
}

Stat parse_stat(std::string_view text) {
  Stat s;
  auto open = text.find('(');
  auto close = text.rfind(')');
  if (open == std::string_view::npos || close == std::string_view::npos || close < open)
    throw Error("malformed /proc/PID/stat");
  s.pid = static_cast<pid_t>(to_u64(text.substr(0, open - 1)));
  s.comm = std::string(text.substr(open + 1, close - open - 1));
  auto f = split_ws(text.substr(close + 1));
  // f[0] is field 3 (state) of proc(5); field N is f[N - 3].
  auto field = [&](size_t n) -> std::string_view {
    if (n - 3 >= f.size()) throw Error("/proc/PID/stat has too few fields");
    return f[n - 3];
  };
  s.state = field(3)[0];
  s.ppid = static_cast<pid_t>(to_u64(field(4)));
  s.pgrp = static_cast<pid_t>(to_u64(field(5)));
  s.session = static_cast<pid_t>(to_u64(field(6)));
  s.flags = to_u64(field(9));
  s.start_code = to_u64(field(26));
  s.end_code = to_u64(field(27));
  s.start_stack = to_u64(field(28));
  s.exit_signal = static_cast<int>(to_u64(field(38)));
  if (f.size() >= 51 - 2) {
    s.start_data = to_u64(field(45));
    s.end_data = to_u64(field(46));
    s.start_brk = to_u64(field(47));
    s.arg_start = to_u64(field(48));
    s.arg_end = to_u64(field(49));
    s.env_start = to_u64(field(50));
    s.env_end = to_u64(field(51));
  }
  if (f.size() >= 52 - 2) s.exit_code = static_cast<int>(to_u64(field(52)));
  return s;
}

namespace {

// Calls fn(key, values) for each "Key:  value value..." line with values.
template <typename Fn>
void for_each_keyed_line(std::string_view text, Fn fn) {
  for (auto l : lines(text)) {
    auto colon = l.find(':');
    if (colon == std::string_view::npos) continue;
    auto f = split_ws(l.substr(colon + 1));
    if (!f.empty()) fn(l.substr(0, colon), f);
  }
}

}  // namespace

Status parse_status(std::string_view text) {
  Status s;
  image::Capabilities caps;
  int cap_sets = 0;
  for_each_keyed_line(text, [&](std::string_view key, const std::vector<std::string_view>& f) {
    if (key.starts_with("Cap")) {
      uint64_t* set = key == "CapInh"   ? &caps.inheritable
                      : key == "CapPrm" ? &caps.permitted
                      : key == "CapEff" ? &caps.effective
                      : key == "CapBnd" ? &caps.bounding
                      : key == "CapAmb" ? &caps.ambient
                                        : nullptr;
      if (set) {
        *set = to_u64(f[0], 16);
        cap_sets++;
      }
      return;
    }
    if (key == "Name") s.name = std::string(f[0]);
    else if (key == "State") s.state = f[0][0];
    else if (key == "Umask") s.umask = static_cast<uint32_t>(to_u64(f[0], 8));
    else if (key == "Tgid") s.tgid = static_cast<pid_t>(to_u64(f[0]));
    else if (key == "PPid") s.ppid = static_cast<pid_t>(to_u64(f[0]));
    else if (key == "TracerPid") s.tracer_pid = static_cast<pid_t>(to_u64(f[0]));
    else if (key == "THP_enabled") s.thp_enabled = f[0] != "0";
    else if (key == "NoNewPrivs") s.no_new_privs = f[0] != "0";
    else if (key == "Seccomp") s.seccomp = static_cast<int>(to_u64(f[0]));
    else if (key == "Seccomp_filters") s.seccomp_filters = static_cast<int>(to_u64(f[0]));
    else if (key == "VmRSS") s.rss_bytes = to_u64(f[0]) << 10;  // "VmRSS:  1234 kB"
    else if (key == "VmSwap") s.swap_bytes = to_u64(f[0]) << 10;
    else if (key == "VmLck") s.locked_bytes = to_u64(f[0]) << 10;
    else if (key == "Threads") s.threads = static_cast<int>(to_u64(f[0]));
    else if (key == "SigBlk") s.sig_blocked = to_u64(f[0], 16);
    else if (key == "SigIgn") s.sig_ignored = to_u64(f[0], 16);
    else if (key == "x86_Thread_features") s.x86_thread_features.assign(f.begin(), f.end());
    else if (key == "Groups") {
      for (auto g : f) s.groups.push_back(static_cast<uint32_t>(to_u64(g)));
    } else if ((key == "Uid" || key == "Gid") && f.size() >= 4) {
      auto& dst = key == "Uid" ? s.uids : s.gids;
      for (size_t i = 0; i < 4; i++) dst[i] = static_cast<uint32_t>(to_u64(f[i]));
    }
  });
  if (cap_sets == 5) s.caps = caps;
  return s;
}

void warm_locks_read() { (void)try_read_file("/proc/locks"); }

std::vector<uint64_t> parse_locked_inodes(std::string_view text) {
  std::vector<uint64_t> out;
  for (std::string_view line : lines(text)) {
    // "1: POSIX  ADVISORY  WRITE 1234 08:02:131090 0 EOF": maj:min:inode.
    for (std::string_view word : split_ws(line)) {
      size_t c1 = word.find(':'), c2 = word.rfind(':');
      if (c1 == std::string_view::npos || c2 == c1) continue;
      uint64_t ino = 0;
      auto [end, ec] = std::from_chars(word.data() + c2 + 1, word.data() + word.size(), ino);
      if (ec == std::errc() && end == word.data() + word.size()) out.push_back(ino);
      break;
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

FdInfo parse_fdinfo(std::string_view text) {
  FdInfo fi;
  for_each_keyed_line(text, [&](std::string_view key, const std::vector<std::string_view>& f) {
    if (key == "pos") fi.pos = to_u64(f[0]);
    else if (key == "flags") fi.flags = static_cast<int>(to_u64(f[0], 8));
    else if (key == "mnt_id") fi.mnt_id = to_u64(f[0]);
    else if (key == "ino") fi.ino = to_u64(f[0]);
    else if (key == "eventfd-count") fi.eventfd_count = to_u64(f[0], 16);
    else if (key == "eventfd-semaphore") fi.eventfd_semaphore = f[0] != "0";
    else if (key == "tfd") {
      // "tfd:        5 events:       19 data: ffffffffffffffff  pos:0 ino:3 sdev:d"
      if (f.size() < 5 || f[1] != "events:" || f[3] != "data:")
        throw Error("fdinfo: malformed epoll line 'tfd: " + std::string(f[0]) + " ...'");
      image::EpollTarget t;
      t.fd = static_cast<int>(to_u64(f[0]));
      t.events = static_cast<uint32_t>(to_u64(f[2], 16));
      t.data = to_u64(f[4], 16);
      uint64_t ino = 0;
      for (auto v : f)
        if (v.starts_with("ino:")) ino = to_u64(v.substr(4), 16);
      fi.epoll_targets.emplace_back(t, ino);
    } else {
      parse_fd_state_line(key, f, fi);
    }
  });
  return fi;
}

std::vector<image::Rlimit> parse_limits(std::string_view text) {
  // "Max cpu time              unlimited            unlimited            seconds":
  // the name is 26 columns, soft and hard 21 each; one line per resource,
  // in RLIMIT_* order, after the header.
  std::vector<image::Rlimit> out;
  auto value = [](std::string_view v) -> uint64_t {
    while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
    return v == "unlimited" ? RLIM_INFINITY : to_u64(v);
  };
  int r = 0;
  for (auto l : lines(text)) {
    if (l.starts_with("Limit") || l.size() < 68) continue;
    out.push_back({r++, value(l.substr(26, 21)), value(l.substr(47, 21))});
  }
  if (out.size() < RLIM_NLIMITS) throw Error("/proc/PID/limits: expected " + std::to_string(RLIM_NLIMITS) + " limits");
  return out;
}

std::vector<pid_t> parse_pid_list(std::string_view text) {
  std::vector<pid_t> out;
  for (auto f : split_ws(text)) out.push_back(static_cast<pid_t>(to_u64(f)));
  return out;
}

std::vector<pid_t> list_threads(pid_t pid) {
  std::string path = pid_path(pid, "task");
  DIR* d = ::opendir(path.c_str());
  if (!d) throw SysError("opendir " + path, errno);
  std::vector<pid_t> out;
  while (auto* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    out.push_back(static_cast<pid_t>(std::atoi(e->d_name)));
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  // The thread-group leader (tid == pid) goes first.
  auto it = std::find(out.begin(), out.end(), pid);
  if (it != out.end()) std::rotate(out.begin(), it, it + 1);
  return out;
}

std::vector<pid_t> list_children(pid_t pid) { return list_children(pid, list_threads(pid)); }

std::vector<pid_t> list_children(pid_t pid, const std::vector<pid_t>& tids) {
  // A file per thread, read while the job is stopped (257 of them for the
  // bench's 256-thread job): opened from the task directory, most read in
  // one call; a process with many threads has them read by two threads of
  // snap's (the job's are stopped, so a CPU is free: ~1 ms less of a
  // 256-thread job's freeze).
  const std::string task = pid_path(pid, "task");
  ScopedFd dir(::open(task.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) throw SysError("open " + task, errno);
  std::vector<std::vector<pid_t>> each(tids.size());
  parallel_for(tids.size(), tids.size() >= 64 ? 2 : 1, [&](size_t i) {
    const std::string name = std::to_string(tids[i]) + "/children";
    int err;
    std::string text = read_all(dir.get(), name.c_str(), &err, /*one_piece=*/true);
    // A first read ends early only where the next pid would not fit in
    // the kernel's page: one that nearly fills it may not be all.
    if (!err && text.size() > 4000) text = read_all(dir.get(), name.c_str(), &err);
    if (!err) each[i] = parse_pid_list(text);  // else the thread exited meanwhile
  });
  std::set<pid_t> kids;
  for (const auto& some : each) kids.insert(some.begin(), some.end());
  return {kids.begin(), kids.end()};
}

std::vector<pid_t> list_tree(pid_t root) {
  std::vector<pid_t> out{root};
  for (size_t i = 0; i < out.size(); i++) {
    try {
      for (pid_t c : list_children(out[i])) out.push_back(c);
    } catch (const std::exception&) {
    }
  }
  return out;
}

namespace {

// All of /proc file `path`, for the large ones (smaps, maps of a process
// with many mappings: MiBs): read into huge pages, one page fault per
// 2 MiB, where a growing string would fault every 4 KiB and copy as it grows.
struct HugeText {
  HugeBuffer buf;
  size_t len = 0;
  std::string_view view() const { return {reinterpret_cast<const char*>(buf.data()), len}; }
};

HugeText read_huge(const std::string& path) {
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw SysError("read " + path, errno);
  HugeText t{HugeBuffer(size_t{4} << 20), 0};
  for (;;) {
    if (t.buf.size() - t.len < (64 << 10)) {
      HugeBuffer bigger(t.buf.size() * 2);
      std::memcpy(bigger.data(), t.buf.data(), t.len);
      t.buf = std::move(bigger);
    }
    ssize_t n = ::read(fd.get(), t.buf.data() + t.len, t.buf.size() - t.len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw SysError("read " + path, errno);
    if (n == 0) break;
    t.len += static_cast<size_t>(n);
  }
  return t;
}

}  // namespace

std::vector<MapEntry> read_smaps(pid_t pid, std::string* maps_text) {
  // Tens of MiB for a process with many mappings.
  return parse_smaps(read_huge(pid_path(pid, "smaps")).view(), maps_text);
}
Stat read_stat(pid_t pid) { return parse_stat(read_file(pid_path(pid, "stat"))); }

bool has_ended(pid_t pid) {
  auto text = try_read_file(pid_path(pid, "stat"));
  if (!text) return true;
  try {
    const char state = parse_stat(*text).state;
    return state == 'Z' || state == 'X';
  } catch (const std::exception&) {
    return false;
  }
}
Status read_status(pid_t pid) { return parse_status(read_file(pid_path(pid, "status"))); }

std::vector<uint64_t> read_auxv(pid_t pid) {
  std::string raw = read_file(pid_path(pid, "auxv"));
  std::vector<uint64_t> out(raw.size() / sizeof(uint64_t));
  std::memcpy(out.data(), raw.data(), out.size() * sizeof(uint64_t));
  return out;
}

namespace {

image::MappingKind classify(const MapEntry& e) {
  using K = image::MappingKind;
  const std::string& p = e.path;
  if (p == "[heap]") return K::Heap;
  if (p == "[stack]") return K::Stack;
  if (p == "[vdso]") return K::Vdso;
  if (p == "[vvar]") return K::Vvar;
  if (p == "[vvar_vclock]") return K::VvarVclock;
  if (p == "[vsyscall]") return K::Vsyscall;
  if (p == "/[aio] (deleted)" && e.shared) return K::Aio;
  // "/anon_hugepage (deleted)": MAP_ANONYMOUS with MAP_HUGETLB.
  bool anon_like = p.empty() || p.starts_with("[anon:") || p.starts_with("/dev/zero") ||
                   p.starts_with("/SYSV") || p.starts_with("/memfd:") ||
                   p.starts_with("/anon_hugepage");
  if (anon_like) return e.shared ? K::SharedAnon : K::Anonymous;
  if (e.inode == 0) return e.shared ? K::SharedAnon : K::Anonymous;  // other [special] areas
  return K::File;
}

}  // namespace

namespace {

image::Mapping to_mapping(MapEntry&& e) {
  image::Mapping m;
  m.start = e.start;
  m.end = e.end;
  m.prot = (e.r ? 1 : 0) | (e.w ? 2 : 0) | (e.x ? 4 : 0);  // PROT_READ/WRITE/EXEC
  m.shared = e.shared;
  m.kind = classify(e);
  m.pgoff = e.offset;
  m.path = std::move(e.path);
  m.dev = makedev(e.dev_major, e.dev_minor);
  m.inode = e.inode;
  m.vmflags = std::move(e.vmflags);
  return m;
}

}  // namespace

std::vector<image::Mapping> read_executable_mappings(pid_t pid) {
  std::vector<image::Mapping> out;
  for_each_line(read_file(pid_path(pid, "maps")), [&](std::string_view l) {
    // "start-end perms ...": only lines whose perms have x are parsed.
    size_t sp = l.find(' ');
    if (sp == std::string_view::npos || sp + 3 >= l.size() || l[sp + 3] != 'x') return;
    MapEntry e;
    if (parse_map_line(l, e)) out.push_back(to_mapping(std::move(e)));
  });
  return out;
}

std::vector<std::pair<pid_t, std::vector<image::Mapping>>> read_ranges_of(
    const std::vector<pid_t>& pids) {
  std::vector<std::pair<pid_t, std::vector<image::Mapping>>> out;
  for (pid_t pid : pids) try {
      out.emplace_back(pid, read_mappings(pid, MapDetail::kRangesOnly));
    } catch (const std::exception&) {
      // gone
    }
  return out;
}

std::vector<image::Mapping> read_mappings(pid_t pid, MapDetail detail) {
  std::vector<image::Mapping> out;
  auto entries = detail == MapDetail::kWithVmFlags ? read_smaps(pid)
                                                   : parse_maps(read_file(pid_path(pid, "maps")));
  out.reserve(entries.size());
  for (auto& e : entries) out.push_back(to_mapping(std::move(e)));
  return out;
}

namespace {

// The mappings of stopped process `pid`, their flags from `hints` where
// they fit (tracer/vmflags.h). Most often /proc/PID/maps is the hints'
// text line for line: then their entries are taken whole, nothing parsed
// or matched while the job is stopped.
std::vector<image::Mapping> mappings_with_hints(pid_t pid, VmFlagsHints& hints,
                                                uint64_t locked_bytes) {
  // MiBs for tens of thousands of mappings: then into huge pages.
  std::string small;
  HugeText big;
  std::string_view maps;
  if (hints.maps_text_size(pid) >= (size_t{1} << 20)) {
    big = read_huge(pid_path(pid, "maps"));
    maps = big.view();
  } else {
    small = read_file(pid_path(pid, "maps"));
    maps = small;
  }
  auto entries = hints.take_if_same(pid, maps, locked_bytes);
  const bool same = entries.has_value();
  if (!same) entries = parse_maps(maps);
  std::vector<image::Mapping> out;
  out.reserve(entries->size());
  for (auto& e : *entries) out.push_back(to_mapping(std::move(e)));
  if (same) return out;
  const bool matched = hints.apply(pid, out, locked_bytes);
  if (!matched) out = read_mappings(pid);
  vlog("pid {}: mappings changed since the hints: {}", pid,
       matched ? "flags matched one by one" : "smaps read while stopped");
  return out;
}

}  // namespace

image::Process read_process(pid_t pid, VmFlagsHints* hints, FdHints* fd_hints) {
  image::Process p;
  auto st = read_stat(pid);
  auto status = read_status(pid);
  p.pid = pid;
  p.ppid = st.ppid;
  p.pgid = st.pgrp;
  p.sid = st.session;
  p.comm = st.comm;
  p.exe = read_link(pid_path(pid, "exe"));
  p.cwd = read_link(pid_path(pid, "cwd"));
  p.root = read_link(pid_path(pid, "root"));
  p.umask = status.umask;
  p.uids = status.uids;
  p.gids = status.gids;
  p.groups = status.groups;
  if (status.thp_enabled) p.thp_disabled = !*status.thp_enabled;
  p.no_new_privs = status.no_new_privs;
  // Capabilities count in the process's own user namespace: recorded only
  // where that is snap's, whose restore gives them back in the same sense.
  if (shares_namespace(pid, "user")) p.caps = status.caps;
  if (auto uid = try_read_file(pid_path(pid, "loginuid")))
    p.loginuid = static_cast<uint32_t>(std::strtoul(uid->c_str(), nullptr, 10));
  if (auto adj = try_read_file(pid_path(pid, "oom_score_adj")))
    p.oom_score_adj = static_cast<int32_t>(std::stol(*adj));
  if (auto pers = try_read_file(pid_path(pid, "personality")))
    p.personality = static_cast<uint32_t>(to_u64(std::string_view(*pers).substr(0, pers->find('\n')), 16));
  for (int r = 0; r < RLIM_NLIMITS; r++) {
    struct rlimit64 lim {};
    if (::prlimit64(pid, static_cast<__rlimit_resource>(r), nullptr, &lim) == 0) {
      p.rlimits.push_back({r, lim.rlim_cur, lim.rlim_max});
      continue;
    }
    // Reading another user's limits with prlimit needs CAP_SYS_RESOURCE
    // (root may lack it); /proc/PID/limits shows them to whoever may trace.
    if (errno != EPERM)
      throw SysError("prlimit(pid " + std::to_string(pid) + ", resource " + std::to_string(r) + ")",
                     errno);
    p.rlimits = parse_limits(read_file(pid_path(pid, "limits")));
    break;
  }
  p.mm.start_code = st.start_code;
  p.mm.end_code = st.end_code;
  p.mm.start_data = st.start_data;
  p.mm.end_data = st.end_data;
  p.mm.start_brk = st.start_brk;
  p.mm.start_stack = st.start_stack;
  p.mm.arg_start = st.arg_start;
  p.mm.arg_end = st.arg_end;
  p.mm.env_start = st.env_start;
  p.mm.env_end = st.env_end;
  p.mm.auxv = read_auxv(pid);
  p.mappings = hints ? mappings_with_hints(pid, *hints, status.locked_bytes) : read_mappings(pid);
  read_aio_rings(pid, p.mappings);
  // The kernel keeps brk exactly; /proc shows the [heap] end, which is brk
  // rounded up to a page. That is as good for restoring it.
  p.mm.brk = p.mm.start_brk;
  for (const auto& m : p.mappings)
    if (m.kind == image::MappingKind::Heap) p.mm.brk = m.end;
  p.fds = read_fds(pid, fd_hints);
  return p;
}

}  // namespace snap::proc
