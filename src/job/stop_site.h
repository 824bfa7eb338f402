// Where a thread of an image stopped: the mapping holding its saved
// instruction pointer, the instruction there (from the image's pages, or
// from the mapped file where the page was not dumped) decoded with
// Capstone, and the nearest ELF symbol. Used by describe_image().
#pragma once

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
#include <string>
#include <vector>

#include <fmt/core.h>

#include "base/error.h"
#include "base/scoped_fd.h"
#include "image/image_reader.h"
#include "image/manifest.h"
#include "tracer/proc.h"
#include "tracer/symbols.h"

namespace snap::job {

using image::Mapping;

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

  // The vDSO is not a file; its ELF image is the dumped mapping itself, or
  // the image's record of the dump kernel's. In older images without
  // either, snap's own vDSO stands in if the image was made under the kernel
  // running now (same release, same size). Loaded once.
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
    const auto& recorded = img_.checkpoint().vdso;  // the dump kernel's, in newer images
    if (!recorded.empty() && recorded.size() <= bytes.size()) {
      std::copy(recorded.begin(), recorded.end(), bytes.begin());
      return &vdso_.emplace(std::move(bytes));
    }
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

}  // namespace snap::job
