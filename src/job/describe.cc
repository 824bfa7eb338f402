// snap info's document (FORMAT.md, "snap info --json"): every fact of an
// image gathered into one JSON object, which cmd/info.cc prints or renders
// as text.
#include "job/describe.h"

#include <sys/utsname.h>

#include <capstone/capstone.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "base/cpus.h"
#include "base/error.h"
#include "image/manifest.h"
#include "image/manifest_names.h"
#include "image/series.h"
#include "job/describe_tree.h"
#include "job/stop_site.h"
#include "tracer/registers.h"
#include "tracer/scheduling.h"
#include "tracer/seccomp.h"
#include "tracer/temp_files.h"

namespace snap::job {

namespace {

std::string hex(uint64_t v) { return fmt::format("{:#x}", v); }

// ---- names ----

const char* syscall_name(int64_t nr) {
  static const std::map<int64_t, const char*> kNames = {
      {0, "read"},          {1, "write"},          {7, "poll"},
      {16, "ioctl"},        {17, "pread64"},       {18, "pwrite64"},
      {19, "readv"},        {20, "writev"},        {23, "select"},
      {34, "pause"},        {35, "nanosleep"},     {42, "connect"},
      {43, "accept"},       {44, "sendto"},        {45, "recvfrom"},
      {46, "sendmsg"},      {47, "recvmsg"},       {61, "wait4"},
      {72, "fcntl"},        {73, "flock"},         {128, "rt_sigtimedwait"},
      {130, "rt_sigsuspend"}, {202, "futex"},      {230, "clock_nanosleep"},
      {232, "epoll_wait"},  {247, "waitid"},       {270, "pselect6"},
      {271, "ppoll"},       {281, "epoll_pwait"},  {288, "accept4"},
      {299, "recvmmsg"},    {307, "sendmmsg"},     {441, "epoll_pwait2"},
  };
  auto it = kNames.find(nr);
  return it == kNames.end() ? nullptr : it->second;
}


std::string perms(const Mapping& m) {
  std::string s = "---p";
  if (m.prot & PROT_READ) s[0] = 'r';
  if (m.prot & PROT_WRITE) s[1] = 'w';
  if (m.prot & PROT_EXEC) s[2] = 'x';
  if (m.shared) s[3] = 's';
  return s;
}

std::string open_flags(int flags) {
  std::string s = (flags & O_ACCMODE) == O_WRONLY ? "O_WRONLY"
                  : (flags & O_ACCMODE) == O_RDWR ? "O_RDWR"
                                                  : "O_RDONLY";
  static constexpr std::pair<int, const char*> kBits[] = {
      {O_APPEND, "O_APPEND"}, {O_NONBLOCK, "O_NONBLOCK"}, {O_DIRECT, "O_DIRECT"},
      {O_SYNC, "O_SYNC"},     {O_CLOEXEC, "O_CLOEXEC"},   {O_PATH, "O_PATH"}};
  for (auto [bit, name] : kBits)
    if ((flags & bit) == bit) s += std::string("|") + name;
  return s;
}

std::string sa_flags(uint64_t flags) {
  static constexpr std::pair<uint64_t, const char*> kBits[] = {
      {SA_SIGINFO, "SA_SIGINFO"},     {SA_ONSTACK, "SA_ONSTACK"},     {SA_RESTART, "SA_RESTART"},
      {SA_NODEFER, "SA_NODEFER"},     {SA_RESETHAND, "SA_RESETHAND"}, {SA_NOCLDSTOP, "SA_NOCLDSTOP"},
      {SA_NOCLDWAIT, "SA_NOCLDWAIT"}, {0x04000000, "SA_RESTORER"}};
  std::string s;
  for (auto [bit, name] : kBits)
    if (flags & bit) s += (s.empty() ? "" : "|") + std::string(name);
  return s.empty() ? "0" : s;
}

std::string hex_bytes(const std::vector<uint8_t>& b) {
  std::string s;
  for (uint8_t c : b) s += fmt::format("{:02x}", c);
  return s;
}

ojson describe_thread(const image::ThreadState& t, Locator& loc, const Disassembler& dis) {
  ojson j;
  j["tid"] = t.tid;
  Registers regs = Registers::from_bytes(t.gpregs);
  const uint64_t ip = regs.ip().as_int();
  j["ip"] = hex(ip);
  j["sp"] = hex(regs.sp().as_int());
  const Mapping* m = loc.mapping_of(ip);
  j["module"] = m && !m->path.empty() ? ojson(m->path) : ojson(nullptr);
  std::string why;
  auto sym = loc.symbol(ip, &why);
  j["symbol"] = sym ? ojson(*sym) : ojson(nullptr);
  j["symbol_note"] = why.empty() ? ojson(nullptr) : ojson(why);
  std::string source;
  auto code = loc.code_at(ip, source);
  auto insn = dis.one(code, ip);
  j["instruction"] = insn ? ojson(*insn) : ojson(nullptr);
  j["code"] = hex_bytes(code);
  j["code_source"] = source.empty() ? ojson(nullptr) : ojson(source);
  j["in_syscall"] = t.in_syscall;
  if (t.in_syscall) {
    const char* name = syscall_name(t.syscall_nr);
    j["syscall"] = {{"nr", t.syscall_nr}, {"name", name ? ojson(name) : ojson(nullptr)}};
  } else {
    j["syscall"] = nullptr;
  }
  j["sigmask"] = hex(t.sigmask);
  j["pending_signals"] = t.pending.size();
  j["pending_shared_signals"] = t.pending_shared.size();
  if (t.sigaltstack)
    j["sigaltstack"] = {{"sp", hex((*t.sigaltstack)[0])},
                        {"flags", (*t.sigaltstack)[1]},
                        {"size", (*t.sigaltstack)[2]}};
  else
    j["sigaltstack"] = nullptr;
  j["rseq"] = t.rseq ? ojson{{"addr", hex((*t.rseq)[0])},
                             {"len", (*t.rseq)[1]},
                             {"sig", hex((*t.rseq)[2])}}
                     : ojson(nullptr);
  j["clear_child_tid"] = t.clear_child_tid ? ojson(hex(*t.clear_child_tid)) : ojson(nullptr);
  // Absent from the image: the default (SCHED_OTHER, nice 0).
  j["scheduling"] = t.sched ? ojson(describe_scheduling(*t.sched)) : ojson(nullptr);
  // Absent: not bound beyond what the job was given.
  j["cpus"] = t.cpus.empty() ? ojson(nullptr) : ojson(cpu_list_text(t.cpus));
  j["mempolicy"] = t.mempolicy.empty() ? ojson(nullptr) : ojson(t.mempolicy);
  j["seccomp"] = t.seccomp ? ojson(describe_seccomp(*t.seccomp)) : ojson(nullptr);
  return j;
}

ojson describe_process(const image::Process& p, image::ImageReader& img, const Disassembler& dis) {
  Locator loc(img, p);
  ojson j;
  j["pid"] = p.pid;
  j["ppid"] = p.ppid;
  j["mempolicy"] = p.mempolicy.empty() ? ojson(nullptr) : ojson(p.mempolicy);
  j["pgid"] = p.pgid;
  j["sid"] = p.sid;
  j["comm"] = p.comm;
  j["exe"] = p.exe;
  j["cwd"] = p.cwd;
  j["root"] = p.root;
  if (p.caps)
    j["caps"] = {{"inheritable", hex(p.caps->inheritable)}, {"permitted", hex(p.caps->permitted)},
                 {"effective", hex(p.caps->effective)}, {"bounding", hex(p.caps->bounding)},
                 {"ambient", hex(p.caps->ambient)}};
  describe_tree_fields(p, j);
  j["threads"] = ojson::array();
  for (const auto& t : p.threads) j["threads"].push_back(describe_thread(t, loc, dis));

  j["sigactions"] = ojson::array();
  for (const auto& a : p.sigactions) {
    std::string disposition = a.handler == reinterpret_cast<uint64_t>(SIG_DFL)   ? "default"
                              : a.handler == reinterpret_cast<uint64_t>(SIG_IGN) ? "ignore"
                                                                                 : "handler";
    auto sym = disposition == "handler" ? loc.symbol(a.handler) : std::nullopt;
    j["sigactions"].push_back({{"signo", a.signo},
                               {"name", signal_name(a.signo)},
                               {"disposition", disposition},
                               {"handler", hex(a.handler)},
                               {"handler_symbol", sym ? ojson(*sym) : ojson(nullptr)},
                               {"flags", hex(a.flags)},
                               {"flags_text", sa_flags(a.flags)},
                               {"mask", hex(a.mask)}});
  }

  auto timer_json = [](const image::TimerValue& v) {
    return ojson{{"interval_ns", v.interval_ns}, {"value_ns", v.value_ns}};
  };
  j["itimers"] = nullptr;
  if (p.itimers) {
    const char* names[] = {"real", "virtual", "prof"};
    j["itimers"] = ojson::object();
    for (size_t i = 0; i < 3; i++) j["itimers"][names[i]] = timer_json((*p.itimers)[i]);
  }
  j["posix_timers"] = ojson::array();
  for (const auto& t : p.posix_timers)
    j["posix_timers"].push_back({{"id", t.id},
                                 {"clock_id", t.clock_id},
                                 {"signo", t.signo},
                                 {"signal", signal_name(t.signo)},
                                 {"notify", t.notify},
                                 {"value", timer_json(t.value)},
                                 {"overrun", t.overrun}});
  j["pdeathsig"] = p.pdeathsig ? ojson(*p.pdeathsig) : ojson(nullptr);
  j["dumpable"] = p.dumpable ? ojson(*p.dumpable) : ojson(nullptr);

  j["mappings"] = ojson::array();
  for (const auto& m : p.mappings)
    j["mappings"].push_back({{"start", hex(m.start)},
                             {"end", hex(m.end)},
                             {"perms", perms(m)},
                             {"kind", image::name_of(m.kind)},
                             {"pgoff", hex(m.pgoff)},
                             {"path", m.path},
                             {"pages", (m.end - m.start) / image::kPageSize},
                             {"pages_dumped", m.pages_dumped},
                             {"mempolicy", m.mempolicy.empty() ? ojson(nullptr) : ojson(m.mempolicy)},
                             {"hugetlb_page", m.hugetlb_page},
                             {"saved_file", m.saved_file.has_value()}});

  j["fds"] = ojson::array();
  for (const auto& f : p.fds)
    j["fds"].push_back({{"fd", f.fd},
                        {"type", image::name_of(f.type)},
                        {"flags", fmt::format("{:#o}", f.flags)},
                        {"flags_text", open_flags(f.flags)},
                        {"pos", f.pos},
                        {"path", f.path},
                        {"pipe_data_bytes", f.pipe_data.size()},
                        {"pipe_data", hex_bytes(f.pipe_data)}});
  for (size_t i = 0; i < p.fds.size(); i++) describe_fd_sharing(p.fds[i], j["fds"][i]);
  return j;
}

uint64_t image_bytes_on_disk(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  uint64_t total = 0;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code ec2;
    if (it->is_regular_file(ec2)) total += it->file_size(ec2);
  }
  if (ec) throw SysError("listing " + dir, ec.value());
  return total;
}

ojson ratio(uint64_t num, uint64_t den) {
  if (den == 0) return nullptr;
  return static_cast<double>(num) / static_cast<double>(den);
}

// The job's files in temporary directories (Checkpoint::temp_files), or
// its deleted files and memfds (Checkpoint::ghost_files).
ojson describe_files(const std::vector<image::GhostFile>& list) {
  ojson out = ojson::array();
  for (const auto& t : list) {
    uint64_t saved = 0;
    for (const auto& e : t.data) saved += e.data.size();
    out.push_back({{"kind", image::kGhostKindNames[static_cast<size_t>(t.kind)]},
                   {"path", t.path},
                   {"mode", fmt::format("{:04o}", t.mode & 07777)},
                   {"size", t.size},
                   {"links", t.nlink},
                   {"saved_bytes", saved},
                   {"data_in_pages", t.data_in_pages},
                   {"put_back", t.put_back}});
    if (t.ctime_ns) out.back()["ctime_ns"] = t.ctime_ns;
  }
  return out;
}

// The files a restore opens at their paths, the image holding none of
// their contents: regular files the job holds open and files it maps
// shared and writable, by path (the programs and libraries it maps, and
// other private or read-only file maps, are only counted).
// "temp": in a directory of the job's temporary directories (one
// Checkpoint::temp_files lists), which another node or a cleanup loses.
ojson describe_needed_files(const image::Checkpoint& c) {
  std::set<std::string> carried, temp_dirs;
  for (const auto& t : c.temp_files) {
    if (t.kind == image::GhostFile::Kind::Directory) temp_dirs.insert(t.path);
    else carried.insert(t.path);
  }
  std::map<std::string, ojson> files;
  std::set<std::string> code;
  auto need = [&](const std::string& path, uint64_t size, std::string by) {
    if (path.empty() || path[0] != '/' || path.ends_with(" (deleted)") || carried.count(path)) return;
    auto it = files.try_emplace(path, ojson{{"path", path},
                                            {"size", size},
                                            {"temp", temp_dirs.count(parent_of(path)) != 0},
                                            {"used_by", ojson::array()}}).first;
    it->second["used_by"].push_back(std::move(by));
  };
  for (const auto& p : c.processes) {
    if (p.zombie) continue;
    for (const auto& f : p.fds)
      if (f.type == image::FdType::Regular && !f.ghost)
        need(f.path, f.size, fmt::format("pid {} fd {}", p.pid, f.fd));
    for (const auto& m : p.mappings) {
      if (m.saved_file) {  // the mapped part is in the image, written back into it
        need(m.path, m.saved_file->size,
             fmt::format("pid {} maps it shared (what it maps is in the image)", p.pid));
        continue;
      }
      if (m.kind != image::MappingKind::File || image::is_shm_object(m) || carried.count(m.path))
        continue;
      // A data file the job writes (or may write) through a shared mapping;
      // read-only shared maps (locale caches and the like) are counted with
      // the code.
      if (image::may_write_file(m)) need(m.path, 0, fmt::format("pid {} maps it shared", p.pid));
      else code.insert(m.path);
    }
  }
  ojson out;
  out["files"] = ojson::array();
  for (auto& [path, f] : files) {
    code.erase(path);
    out["files"].push_back(std::move(f));
  }
  out["mapped_files"] = code.size();  // programs, libraries, private or read-only file maps
  return out;
}

ojson describe_stats(const image::ImageReader& img) {
  const auto s = img.stats();
  const uint64_t nonzero = s.pages - s.zero_pages;
  ojson j;
  j["pages"] = s.pages;
  j["file_pages"] = s.file_pages;
  j["zero_pages"] = s.zero_pages;
  j["unique_pages"] = s.unique_pages;
  j["duplicate_pages"] = s.duplicate_pages;
  j["blocks"] = s.blocks;
  j["raw_blocks"] = s.raw_blocks;
  j["raw_bytes"] = s.raw_bytes;
  j["stored_bytes"] = s.stored_bytes;
  j["image_bytes"] = image_bytes_on_disk(img.dir());
  j["dedup_ratio"] = ratio(nonzero, s.unique_pages);
  j["compression_ratio"] = ratio(s.unique_pages * image::kPageSize, s.stored_bytes);
  j["earlier_pages"] = s.earlier_pages;
  j["unchanged_pages"] = s.unchanged_pages;
  j["new_stored_bytes"] = s.new_stored_bytes;
  return j;
}

}  // namespace

ojson describe_series(const std::string& ckpt) {
  ojson list = ojson::array();
  for (const auto& e : image::list_series(ckpt))
    list.push_back({{"number", e.number},
                    {"dir", e.dir},
                    {"latest", e.latest},
                    {"complete", e.complete},
                    {"problem", e.problem.empty() ? ojson(nullptr) : ojson(e.problem)},
                    {"created", e.created},
                    {"changed_pages_by",
                     e.changed_pages_by.empty() ? ojson(nullptr) : ojson(e.changed_pages_by)},
                    {"pages", e.pages},
                    {"new_bytes", e.new_bytes},
                    {"referenced_bytes", e.referenced_bytes},
                    {"checkpoint_bytes", e.checkpoint_bytes},
                    {"earlier_pages", e.earlier_pages}});
  return list;
}

ojson describe_image(image::ImageReader& img) {
  const auto& c = img.checkpoint();
  Disassembler dis;
  ojson j;
  j["dir"] = img.dir();
  j["format_version"] = c.format_version;
  j["snap_version"] = c.snap_version;
  j["created"] = c.created;
  j["hostname"] = c.hostname;
  j["kernel_release"] = c.kernel_release;
  j["series_number"] = c.series_number ? ojson(*c.series_number) : ojson(nullptr);
  j["changed_pages_by"] = c.changed_pages_by.empty() ? ojson(nullptr) : ojson(c.changed_pages_by);
  j["pid_namespace"] = c.pid_namespace.empty() ? ojson(nullptr) : ojson(c.pid_namespace);
  j["job_cpus"] = c.job_cpus.empty() ? ojson(nullptr) : ojson(cpu_list_text(c.job_cpus));
  j["cpu"] = c.cpu ? ojson{{"vendor", c.cpu->vendor}, {"model", c.cpu->model},
                           {"features", c.cpu->features}}
                   : ojson(nullptr);
  j["series"] = nullptr;
  j["processes"] = ojson::array();
  for (const auto& p : c.processes) j["processes"].push_back(describe_process(p, img, dis));
  describe_tree_and_sharing(c, j);
  j["temp_files"] = describe_files(c.temp_files);
  j["ghost_files"] = describe_files(c.ghost_files);
  j["needed_files"] = describe_needed_files(c);
  j["stats"] = describe_stats(img);
  return j;
}

std::string signal_name(int signo) {
  if (const char* abbrev = ::sigabbrev_np(signo)) return std::string("SIG") + abbrev;
  return fmt::format("SIG{}", signo);  // real-time signals
}

}  // namespace snap::job
