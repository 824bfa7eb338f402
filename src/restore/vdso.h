// The kernel's vDSO in a restored process.
//
// Under the dump's kernel (the same vDSO image) the skeleton's [vvar],
// [vvar_vclock] and [vdso] are moved where the job had them. Under another
// kernel (a node updated between a checkpoint and its restore) the
// functions sit at other offsets, while the job holds pointers into the
// old image (glibc looks them up once, at start: every clock_gettime goes
// through one): this kernel's vDSO is kept at a free address, and where the
// job had its vDSO goes a copy of the dump's image (its ELF headers and
// symbols as they were) whose every exported function jumps to this
// kernel's function of the same name.
#pragma once

#include <cstdint>
#include <vector>

#include "image/checkpoint.h"
#include "tracer/remote.h"

namespace snap::restore {

struct VdsoPlan {
  struct Jump {
    uint64_t from = 0, to = 0;  // offsets: in the dump's image, in this kernel's
  };
  // Empty: the job's vDSO is this kernel's (or the image predates the
  // record, or the job had none): moved into place. Else the dump's image,
  // to be mapped where the job had its vDSO, a jump written at each
  // function in `jumps`.
  std::vector<uint8_t> proxy;
  std::vector<Jump> jumps;
  bool proxied() const { return !proxy.empty(); }
};

// Decided before anything is created. Throws snap::Error when the job
// cannot go on under this kernel's vDSO: a function of the dump's that this
// one lacks, or a thread saved inside the dump's (its next instruction is
// in code this kernel does not have; a dump runs such a thread out first,
// tracer/vdso.h, so only older images or one it could not run out have it).
VdsoPlan plan_vdso(const image::Checkpoint& ckpt);

// The skeleton's kernel mappings (`now`) placed for the job (`saved`) as
// `plan` says. rs's system call site follows the vDSO.
void place_vdso(RemoteSyscalls& rs, const std::vector<image::Mapping>& now,
                const std::vector<image::Mapping>& saved, const VdsoPlan& plan);

// Last, once the job's code is back: a job that had unmapped its vDSO gets
// none; its system calls then go through a `syscall` in its own code.
void drop_vdso(RemoteSyscalls& rs, const std::vector<image::Mapping>& saved);

}  // namespace snap::restore
