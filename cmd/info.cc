// snap info: what an image holds, for people (default) and scripts (--json).
//
// The steps, in order:
//   1. open the image: manifest, file sizes, checksums of the index files
//      (a directory that is not an image, or a damaged one, stops here);
//   2. for each thread, find where it stopped: the mapping that holds its
//      saved instruction pointer, the instruction there (from the image's
//      pages, or from the mapped file where the page was not dumped), and
//      the nearest ELF symbol;
//   3. gather every fact into one JSON document (keys: FORMAT.md,
//      "snap info --json");
//   4. print that document, or render it as text.
// The text is rendered from the document, so both say the same things.
#include <capstone/capstone.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fmt/core.h>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "base/error.h"
#include "base/scoped_fd.h"
#include "cmd/command.h"
#include "cmd/info_tree.h"
#include "image/image_reader.h"
#include "image/manifest.h"
#include "image/manifest_file.h"
#include "image/series.h"
#include "tracer/proc.h"
#include "tracer/registers.h"
#include "tracer/symbols.h"

namespace snap::cmd {

namespace {

using image::Mapping;

cxxopts::Options info_options() {
  cxxopts::Options o("snap info", "Describe a checkpoint image: processes, threads and where "
                                  "they stopped, memory, files, storage.\n");
  o.custom_help("DIR [--json | --manifest]");
  o.positional_help("DIR");
  o.add_options()
      ("dir", "image directory written by snap dump, or a checkpoint series directory "
              "(lists the series, then describes its latest good checkpoint)",
       cxxopts::value<std::string>())
      ("json", "print the facts as one JSON document (keys: FORMAT.md)")
      ("manifest", "print the image's whole manifest as it is stored (manifest.json with "
                   "the checkpoint of checkpoint.json.lz4 in it; FORMAT.md), for debugging")
      ("h,help", "show this help");
  o.parse_positional({"dir"});
  return o;
}

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

std::string signal_name(int signo) {
  if (const char* abbrev = ::sigabbrev_np(signo)) return std::string("SIG") + abbrev;
  return fmt::format("SIG{}", signo);  // real-time signals
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

// ---- step 2: where a thread stopped ----

// One instruction, decoded with Capstone.
class Disassembler {
 public:
  Disassembler() {
    if (cs_open(CS_ARCH_X86, CS_MODE_64, &handle_) != CS_ERR_OK)
      throw Error("capstone: cs_open(x86-64) failed");
  }
  ~Disassembler() { cs_close(&handle_); }
  Disassembler(const Disassembler&) = delete;
  Disassembler& operator=(const Disassembler&) = delete;

  std::optional<std::string> one(const std::vector<uint8_t>& code, uint64_t addr) const {
    cs_insn* insn = nullptr;
    size_t n = cs_disasm(handle_, code.data(), code.size(), addr, 1, &insn);
    if (n == 0) return std::nullopt;
    std::unique_ptr<cs_insn, void (*)(cs_insn*)> owner(insn, [](cs_insn* i) { cs_free(i, 1); });
    std::string s = insn->mnemonic;
    if (insn->op_str[0]) s += std::string(" ") + insn->op_str;
    return s;
  }

 private:
  csh handle_ = 0;
};

constexpr size_t kMaxInsnBytes = 15;

// Names addresses of one process, and reads code at them.
class Locator {
 public:
  Locator(image::ImageReader& img, const image::Process& p)
      : img_(img), p_(p), kernel_release_(img.checkpoint().kernel_release) {}

  const Mapping* mapping_of(uint64_t addr) const {
    for (const auto& m : p_.mappings)
      if (m.start <= addr && addr < m.end) return &m;
    return nullptr;
  }

  // "libc.so.6!__clock_nanosleep+0x5d", or "libc.so.6+0x1234" (file offset)
  // when no symbol covers the address, or nullopt outside any file.
  std::optional<std::string> symbol(uint64_t addr, std::string* why = nullptr) {
    const Mapping* m = mapping_of(addr);
    if (!m) {
      if (why) *why = "not in any mapping";
      return std::nullopt;
    }
    const ElfSymbols* syms = symbols_for(*m, why);
    if (!syms) return std::nullopt;
    const uint64_t off = addr - m->start + m->pgoff;
    if (auto hit = syms->lookup_file_offset(off)) return format_symbol(m->path, *hit);
    if (why) *why = "no symbol covers the address";
    return format_symbol(m->path, {"", off});
  }

  // The bytes at addr (up to one instruction's worth, not beyond the
  // mapping): from the image where its page was dumped, else from the
  // mapped file (for an undumped [vdso], this kernel's). `source` says
  // which were used.
  std::vector<uint8_t> code_at(uint64_t addr, std::string& source) {
    const Mapping* m = mapping_of(addr);
    if (!m) return {};
    const size_t n = std::min<uint64_t>(kMaxInsnBytes, m->end - addr);
    std::vector<uint8_t> buf(n, 0);
    std::vector<bool> have(n, false);
    bool from_image = false, from_file = false, from_kernel = false;
    img_.for_each_run(p_.pid, m->start, [&](const image::PageRun& r) {
      const uint64_t lo = std::max(addr, r.addr);
      const uint64_t hi = std::min<uint64_t>(addr + n, r.addr + r.npages * image::kPageSize);
      for (uint64_t a = lo; a < hi; a++) {
        buf[a - addr] = r.zero() ? 0 : r.data[a - r.addr];
        have[a - addr] = true;
        from_image = true;
      }
    });
    if (m->kind == image::MappingKind::File && !m->path.empty() &&
        std::find(have.begin(), have.end(), false) != have.end()) {
      ScopedFd fd(::open(m->path.c_str(), O_RDONLY | O_CLOEXEC));
      uint8_t file[kMaxInsnBytes];
      ssize_t got = fd ? ::pread(fd.get(), file, n, static_cast<off_t>(addr - m->start + m->pgoff))
                       : -1;
      for (ssize_t i = 0; i < got; i++)
        if (!have[i]) buf[i] = file[i], have[i] = true, from_file = true;
    }
    if (m->kind == image::MappingKind::Vdso && !from_image) {
      if (const auto* vdso = vdso_bytes(*m)) {
        std::copy_n(vdso->begin() + (addr - m->start), n, buf.begin());
        std::fill(have.begin(), have.end(), true);
        from_kernel = true;
      }
    }
    size_t len = 0;
    while (len < n && have[len]) len++;
    buf.resize(len);
    source = from_kernel                ? "kernel"
             : from_image && from_file ? "image+file"
             : from_image              ? "image"
             : from_file               ? "file"
                                       : "";
    return buf;
  }

 private:
  // The symbols of the file (or dumped vDSO) behind a mapping, loaded once.
  const ElfSymbols* symbols_for(const Mapping& m, std::string* why) {
    std::string key = m.kind == image::MappingKind::Vdso ? "[vdso]" : m.path;
    if (m.kind != image::MappingKind::File && m.kind != image::MappingKind::Vdso) {
      if (why) *why = fmt::format("in {} memory", image::name_of(m.kind));
      return nullptr;
    }
    auto it = cache_.find(key);
    if (it == cache_.end()) {
      Loaded l;
      try {
        l.syms = m.kind == image::MappingKind::Vdso ? vdso_symbols(m) : ElfSymbols::open(m.path);
      } catch (const Error& e) {
        l.error = e.what();
      }
      it = cache_.emplace(key, std::move(l)).first;
    }
    if (!it->second.syms && why) *why = it->second.error;
    return it->second.syms ? &*it->second.syms : nullptr;
  }

  // The vDSO is not a file; its ELF image is the dumped mapping itself. When
  // it was not dumped, snap's own vDSO stands in if the image was made under
  // the kernel running now (same release, same size). Loaded once.
  const std::vector<uint8_t>* vdso_bytes(const Mapping& m) {
    if (vdso_tried_) return vdso_ ? &*vdso_ : nullptr;
    vdso_tried_ = true;
    std::vector<uint8_t> bytes(m.end - m.start, 0);
    uint64_t pages = 0;
    img_.for_each_run(p_.pid, m.start, [&](const image::PageRun& r) {
      if (!r.zero())
        std::copy(r.data, r.data + r.npages * image::kPageSize, bytes.begin() + (r.addr - m.start));
      pages += r.npages;
    });
    if (pages * image::kPageSize == bytes.size()) return &vdso_.emplace(std::move(bytes));
    utsname u{};
    ::uname(&u);
    const uint64_t own = ::getauxval(AT_SYSINFO_EHDR);
    if (!own || kernel_release_ != u.release) return nullptr;
    for (const auto& mine : proc::read_mappings(::getpid(), proc::MapDetail::kRangesOnly))
      if (mine.kind == image::MappingKind::Vdso && mine.end - mine.start == bytes.size()) {
        auto* p = reinterpret_cast<const uint8_t*>(own);
        return &vdso_.emplace(p, p + bytes.size());
      }
    return nullptr;
  }

  ElfSymbols vdso_symbols(const Mapping& m) {
    const auto* bytes = vdso_bytes(m);
    if (!bytes) throw Error("[vdso] was not dumped and the image comes from another kernel");
    return ElfSymbols::from_memory(*bytes, "[vdso]");
  }

  struct Loaded {
    std::optional<ElfSymbols> syms;
    std::string error;
  };
  image::ImageReader& img_;
  const image::Process& p_;
  std::string kernel_release_;
  bool vdso_tried_ = false;
  std::optional<std::vector<uint8_t>> vdso_;
  std::map<std::string, Loaded> cache_;
};

// ---- step 3: the document ----

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
  return j;
}

ojson describe_process(const image::Process& p, image::ImageReader& img, const Disassembler& dis) {
  Locator loc(img, p);
  ojson j;
  j["pid"] = p.pid;
  j["ppid"] = p.ppid;
  j["pgid"] = p.pgid;
  j["sid"] = p.sid;
  j["comm"] = p.comm;
  j["exe"] = p.exe;
  j["cwd"] = p.cwd;
  j["root"] = p.root;
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
                             {"pages_dumped", m.pages_dumped}});

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

ojson describe_stats(const image::ImageReader& img) {
  const auto s = img.stats();
  const uint64_t nonzero = s.pages - s.zero_pages;
  ojson j;
  j["pages"] = s.pages;
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

// The checkpoints of a series (image::list_series), oldest first.
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

ojson describe(image::ImageReader& img) {
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
  j["series"] = nullptr;
  j["processes"] = ojson::array();
  for (const auto& p : c.processes) j["processes"].push_back(describe_process(p, img, dis));
  describe_tree_and_sharing(c, j);
  j["stats"] = describe_stats(img);
  return j;
}

// ---- step 4: text ----

std::string size_text(uint64_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes) / 1024;
  size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(units)) v /= 1024, u++;
  return fmt::format("{:.1f} {} ({} bytes)", v, units[u], bytes);
}

std::string str_or(const ojson& v, const std::string& dflt) {
  return v.is_string() ? v.get<std::string>() : dflt;
}

// Unread pipe data as a short printable preview.
std::string preview(const std::string& hexdata) {
  std::string s;
  for (size_t i = 0; i + 1 < hexdata.size() && s.size() < 40; i += 2) {
    int c = std::stoi(hexdata.substr(i, 2), nullptr, 16);
    if (c == '\n') s += "\\n";
    else if (c >= 0x20 && c < 0x7f) s += static_cast<char>(c);
    else s += fmt::format("\\x{:02x}", c);
  }
  return s;
}

void print_thread(const ojson& t) {
  std::printf("    tid %d  ip %s  %s  %s\n", t["tid"].get<int>(), t["ip"].get<std::string>().c_str(),
              str_or(t["symbol"], "?").c_str(), str_or(t["instruction"], "(no code)").c_str());
  if (t["symbol"].is_null() || !t["symbol_note"].is_null())
    std::printf("      (%s)\n", str_or(t["symbol_note"], "").c_str());
  if (t["in_syscall"].get<bool>())
    std::printf("      in system call %s (%lld); restore re-issues it\n",
                str_or(t["syscall"]["name"], "?").c_str(),
                static_cast<long long>(t["syscall"]["nr"].get<int64_t>()));
  std::printf("      sp %s  sigmask %s  pending signals %zu (+%zu process-wide)\n",
              t["sp"].get<std::string>().c_str(), t["sigmask"].get<std::string>().c_str(),
              t["pending_signals"].get<size_t>(), t["pending_shared_signals"].get<size_t>());
  if (!t["sigaltstack"].is_null())
    std::printf("      sigaltstack sp %s size %llu flags %llu\n",
                t["sigaltstack"]["sp"].get<std::string>().c_str(),
                static_cast<unsigned long long>(t["sigaltstack"]["size"].get<uint64_t>()),
                static_cast<unsigned long long>(t["sigaltstack"]["flags"].get<uint64_t>()));
  if (!t["rseq"].is_null())
    std::printf("      rseq at %s\n", t["rseq"]["addr"].get<std::string>().c_str());
}

void print_process(const ojson& p) {
  std::printf("\nprocess %d (%s)  ppid %d  pgid %d  sid %d\n", p["pid"].get<int>(),
              p["comm"].get<std::string>().c_str(), p["ppid"].get<int>(), p["pgid"].get<int>(),
              p["sid"].get<int>());
  if (p["zombie"].get<bool>()) {
    std::printf("  zombie (%s): exited, not yet reaped by its parent\n",
                p["exit_text"].get<std::string>().c_str());
    return;
  }
  std::printf("  exe  %s\n  cwd  %s\n", p["exe"].get<std::string>().c_str(),
              p["cwd"].get<std::string>().c_str());
  std::printf("  threads: %zu, where each stopped:\n", p["threads"].size());
  for (const auto& t : p["threads"]) print_thread(t);

  size_t nondefault = 0;
  for (const auto& a : p["sigactions"]) nondefault += a["disposition"] != "default";
  if (nondefault) {
    std::printf("  signal dispositions (other than default):\n");
    for (const auto& a : p["sigactions"]) {
      if (a["disposition"] == "default") continue;
      std::string what = a["disposition"] == "ignore"
                             ? "ignored"
                             : str_or(a["handler_symbol"], "?") + " (" +
                                   a["handler"].get<std::string>() + ")";
      std::printf("    %-10s %s  flags %s  mask %s\n", a["name"].get<std::string>().c_str(),
                  what.c_str(), a["flags_text"].get<std::string>().c_str(),
                  a["mask"].get<std::string>().c_str());
    }
  } else if (p["sigactions"].empty()) {
    std::printf("  signal dispositions: not collected\n");
  }

  auto ms = [](const ojson& v) { return static_cast<double>(v.get<int64_t>()) / 1e6; };
  if (!p["itimers"].is_null())
    for (const auto& [name, v] : p["itimers"].items())
      if (v["interval_ns"].get<int64_t>() || v["value_ns"].get<int64_t>())
        std::printf("  itimer %-8s next in %.3f ms, every %.3f ms\n", name.c_str(), ms(v["value_ns"]),
                    ms(v["interval_ns"]));
  for (const auto& t : p["posix_timers"])
    std::printf("  POSIX timer %d  clock %d  %s  %s  next in %.3f ms, every %.3f ms, overrun %d\n",
                t["id"].get<int>(), t["clock_id"].get<int>(), t["signal"].get<std::string>().c_str(),
                t["notify"].get<std::string>().c_str(), ms(t["value"]["value_ns"]),
                ms(t["value"]["interval_ns"]), t["overrun"].get<int>());
  if (!p["pdeathsig"].is_null() && p["pdeathsig"].get<int>())
    std::printf("  parent-death signal %s\n", signal_name(p["pdeathsig"].get<int>()).c_str());

  std::printf("  mappings: %zu\n", p["mappings"].size());
  std::printf("    %-37s %-5s %-11s %7s %7s  %s\n", "address", "perms", "kind", "pages", "dumped",
              "path");
  for (const auto& m : p["mappings"])
    std::printf("    %18s-%-18s %-5s %-11s %7llu %7llu  %s\n",
                m["start"].get<std::string>().c_str(), m["end"].get<std::string>().c_str(),
                m["perms"].get<std::string>().c_str(), m["kind"].get<std::string>().c_str(),
                static_cast<unsigned long long>(m["pages"].get<uint64_t>()),
                static_cast<unsigned long long>(m["pages_dumped"].get<uint64_t>()),
                m["path"].get<std::string>().c_str());

  std::printf("  fds: %zu\n", p["fds"].size());
  std::printf("    %4s %-9s %-28s %10s  %s\n", "fd", "type", "flags", "pos", "path");
  for (const auto& f : p["fds"]) {
    std::printf("    %4d %-9s %-28s %10llu  %s\n", f["fd"].get<int>(),
                f["type"].get<std::string>().c_str(), f["flags_text"].get<std::string>().c_str(),
                static_cast<unsigned long long>(f["pos"].get<uint64_t>()),
                f["path"].get<std::string>().c_str());
    if (f["pipe_data_bytes"].get<size_t>() > 0)
      std::printf("         unread pipe data: %zu bytes \"%s\"\n", f["pipe_data_bytes"].get<size_t>(),
                  preview(f["pipe_data"].get<std::string>()).c_str());
    if (const auto& u = f["unix_socket"]; !u.is_null()) {
      std::string peer = u["peer_inode"].is_null() ? "none" : std::to_string(u["peer_inode"].get<uint64_t>());
      std::string name = u["name"].get<std::string>();
      std::printf("         unix %s, %s, peer inode %s%s, %zu message(s) / %llu bytes queued\n",
                  u["type"].get<std::string>().c_str(), u["state"].get<std::string>().c_str(),
                  peer.c_str(), name.empty() ? "" : (", bound to " + name).c_str(),
                  u["queued_messages"].get<size_t>(),
                  static_cast<unsigned long long>(u["queued_bytes"].get<uint64_t>()));
    }
  }
}

std::string ratio_text(const ojson& r) {
  return r.is_null() ? "n/a" : fmt::format("{:.2f}", r.get<double>());
}

std::string short_size(uint64_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  if (bytes < (1 << 20)) return fmt::format("{:.1f} KiB", static_cast<double>(bytes) / 1024);
  if (bytes < (1ull << 30)) return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1 << 20));
  return fmt::format("{:.2f} GiB", static_cast<double>(bytes) / (1ull << 30));
}

void print_series(const ojson& series) {
  std::printf("checkpoint series: %zu checkpoint(s)\n", series.size());
  std::printf("  %6s %-20s %10s %10s %10s %8s  %-12s %s\n", "number", "created", "memory",
              "new", "referenced", "shared", "changes by", "state");
  for (const auto& e : series) {
    std::string state = e["complete"].get<bool>() ? "complete" : "DAMAGED";
    if (e["latest"].get<bool>()) state += ", latest";
    std::printf("  %6llu %-20s %10s %10s %10s %8llu  %-12s %s\n",
                static_cast<unsigned long long>(e["number"].get<uint64_t>()),
                e["created"].get<std::string>().c_str(),
                short_size(e["pages"].get<uint64_t>() * image::kPageSize).c_str(),
                short_size(e["new_bytes"].get<uint64_t>()).c_str(),
                short_size(e["referenced_bytes"].get<uint64_t>()).c_str(),
                static_cast<unsigned long long>(e["earlier_pages"].get<uint64_t>()),
                e["changed_pages_by"].is_null() ? "-"
                                                : e["changed_pages_by"].get<std::string>().c_str(),
                state.c_str());
    if (!e["problem"].is_null())
      std::printf("         %s\n", e["problem"].get<std::string>().c_str());
  }
  std::printf("  (shared: pages of the checkpoint stored by earlier ones)\n\n");
}

void print_text(const ojson& j) {
  if (!j["series"].is_null()) print_series(j["series"]);
  std::printf("snap image %s\n", j["dir"].get<std::string>().c_str());
  if (!j["series_number"].is_null())
    std::printf("  checkpoint %llu of a series, changed pages found by %s\n",
                static_cast<unsigned long long>(j["series_number"].get<uint64_t>()),
                j["changed_pages_by"].is_null()
                    ? "(not said)"
                    : j["changed_pages_by"].get<std::string>().c_str());
  std::printf("  format version %u, written by snap %s at %s\n",
              j["format_version"].get<unsigned>(), j["snap_version"].get<std::string>().c_str(),
              j["created"].get<std::string>().c_str());
  std::printf("  host %s, kernel %s\n", j["hostname"].get<std::string>().c_str(),
              j["kernel_release"].get<std::string>().c_str());
  if (!j["pid_namespace"].is_null())
    std::printf("  pids as the job saw them, %s\n",
                j["pid_namespace"] == "own" ? "in its own pid namespace"
                                            : "in the dumper's pid namespace");
  for (const auto& p : j["processes"]) print_process(p);
  print_tree_and_sharing(j);

  const auto& s = j["stats"];
  auto u = [&](const char* k) { return s[k].get<uint64_t>(); };
  std::printf("\nmemory and storage\n");
  std::printf("  memory covered  %s: %llu pages (%llu zero, %llu unique, %llu duplicate)\n",
              size_text(u("raw_bytes")).c_str(), static_cast<unsigned long long>(u("pages")),
              static_cast<unsigned long long>(u("zero_pages")),
              static_cast<unsigned long long>(u("unique_pages")),
              static_cast<unsigned long long>(u("duplicate_pages")));
  std::printf("  pages stored    %s in %llu blocks (%llu stored uncompressed)\n",
              size_text(u("stored_bytes")).c_str(), static_cast<unsigned long long>(u("blocks")),
              static_cast<unsigned long long>(u("raw_blocks")));
  std::printf("  dedup ratio       %s (non-zero pages per unique page)\n",
              ratio_text(s["dedup_ratio"]).c_str());
  std::printf("  compression ratio %s (unique page bytes per byte stored)\n",
              ratio_text(s["compression_ratio"]).c_str());
  std::printf("  image size      %s on disk\n", size_text(u("image_bytes")).c_str());
  if (!j["series_number"].is_null())
    std::printf("  series          %llu pages from earlier checkpoints (%llu reported unchanged), "
                "%s stored new\n",
                static_cast<unsigned long long>(u("earlier_pages")),
                static_cast<unsigned long long>(u("unchanged_pages")),
                size_text(u("new_stored_bytes")).c_str());
}

int run_info(const cxxopts::ParseResult& args) {
  if (!args.count("dir")) throw UsageError("missing image directory");
  const std::string path = args["dir"].as<std::string>();
  auto img = image::ImageReader::open(path);  // 1 (a series: its latest good checkpoint)
  if (args.count("manifest")) {
    std::fputs(image::to_json(image::read_manifest(img.dir())).c_str(), stdout);
    return kExitOk;
  }
  ojson doc = describe(img);                  // 2, 3
  if (img.in_series() && image::is_series_dir(path) &&
      !std::filesystem::exists(std::filesystem::path(path) / "manifest.json"))
    doc["series"] = describe_series(path);
  if (args.count("json"))                                               // 4
    std::printf("%s\n", doc.dump(1, ' ', false, ojson::error_handler_t::replace).c_str());
  else
    print_text(doc);
  return kExitOk;
}

}  // namespace

const Command kInfo = {"info", "describe a checkpoint image (--json for scripts)", info_options,
                       run_info};

}  // namespace snap::cmd
