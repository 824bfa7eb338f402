#include "tracer/file_stamp.h"

#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/core.h>
#include <memory>

#include "base/error.h"
#include "base/scoped_fd.h"
#include "tracer/elf_handle.h"

namespace snap {

namespace {

// The NT_GNU_BUILD_ID note of an ELF file, as hex; empty if none.
std::string build_id(int fd) {
  try {
    init_libelf();
  } catch (const Error&) {
    return {};
  }
  ElfPtr elf(elf_begin(fd, ELF_C_READ_MMAP, nullptr));
  if (!elf || elf_kind(elf.get()) != ELF_K_ELF) return {};
  for (Elf_Scn* scn = nullptr; (scn = elf_nextscn(elf.get(), scn));) {
    GElf_Shdr sh;
    if (!gelf_getshdr(scn, &sh) || sh.sh_type != SHT_NOTE) continue;
    Elf_Data* data = elf_getdata(scn, nullptr);
    if (!data) continue;
    GElf_Nhdr nh;
    size_t off = 0, name_off, desc_off;
    while ((off = gelf_getnote(data, off, &nh, &name_off, &desc_off)) > 0) {
      if (nh.n_type != NT_GNU_BUILD_ID || nh.n_namesz != 4 ||
          std::string(static_cast<const char*>(data->d_buf) + name_off, 3) != "GNU")
        continue;
      const auto* d = static_cast<const uint8_t*>(data->d_buf) + desc_off;
      std::string hex;
      for (size_t i = 0; i < nh.n_descsz; i++) hex += fmt::format("{:02x}", d[i]);
      return hex;
    }
  }
  return {};
}

}  // namespace

std::optional<image::FileStamp> stamp_file(const std::string& path) {
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  struct stat st {};
  if (!fd || ::fstat(fd.get(), &st) != 0) return std::nullopt;
  image::FileStamp s;
  s.size = static_cast<uint64_t>(st.st_size);
  s.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  s.dev = st.st_dev;
  s.inode = st.st_ino;
  if (S_ISREG(st.st_mode)) s.build_id = build_id(fd.get());
  return s;
}

std::string stamp_change(const image::FileStamp& saved, const image::FileStamp& now) {
  if (saved.size != now.size) return fmt::format("size {} -> {}", saved.size, now.size);
  if (!saved.build_id.empty() || !now.build_id.empty()) {
    if (saved.build_id != now.build_id)
      return fmt::format("build id {} -> {}", saved.build_id.empty() ? "none" : saved.build_id,
                         now.build_id.empty() ? "none" : now.build_id);
    return {};
  }
  if (saved.mtime_ns != now.mtime_ns) return "modified since (mtime)";
  return {};
}

void record_code_files(image::Checkpoint& ckpt, const FileViews& views) {
  for (const auto& p : ckpt.processes) {
    if (p.zombie) continue;
    auto add = [&](const std::string& path) {
      if (path.empty() || path[0] != '/' || path.ends_with(" (deleted)") ||
          ckpt.code_files.count(path))
        return;
      if (auto s = stamp_file(views.path(p.pid, path))) ckpt.code_files[path] = *s;
    };
    add(p.exe);
    // Private file mappings: code, libraries, and data the job sees as
    // it was (its own changes are in the image). A shared mapping is the
    // file itself, which the job may go on changing.
    for (const auto& m : p.mappings)
      if (m.kind == image::MappingKind::File && !m.shared) add(m.path);
  }
}

}  // namespace snap
