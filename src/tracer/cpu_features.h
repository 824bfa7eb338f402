// What a job's code sees of the CPU it runs on (CPUID and XGETBV), and a
// thread's extended register state moved to another CPU's XSAVE layout.
//
// A program picks its code for the CPU it starts on, once: glibc's memcpy
// and strlen, OpenBLAS's kernels, numpy's loops, a compiler's
// -march=native. Restored on a CPU without an instruction it chose, it
// stops on SIGILL, minutes or hours later. The dump records what the CPU
// offered; a restore compares before anything runs.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "image/checkpoint.h"

namespace snap::tracer {

// This machine's CPU: vendor, model name, the instruction-set features user
// code can detect (named as /proc/cpuinfo names them), the state components
// the kernel enabled (XCR0) and where each sits in the standard XSAVE format.
// Read once.
const image::CpuInfo& this_cpu();

// What `saved` offered that `here` lacks: feature names, then state
// components ("XSAVE state avx512_opmask"). Empty: the job's code can run here.
std::vector<std::string> cpu_lacks(const image::CpuInfo& saved, const image::CpuInfo& here);

// The name of XSAVE state component `id` ("avx", "avx512_hi16_zmm").
std::string xsave_component_name(uint32_t id);

// A thread's NT_X86_XSTATE area (standard format) as `from`'s CPU laid it
// out, rewritten for `to`'s layout and the kernel's size here (`size`: what
// PTRACE_SETREGSET takes, no more and no less). The legacy x87/SSE area and
// each component both CPUs have are copied; a component `to` lacks is
// dropped, and named in *dropped when the thread had it in use. Returns
// `area` unchanged where the layouts and sizes agree.
std::vector<uint8_t> refit_xsave(std::span<const uint8_t> area, const image::CpuInfo& from,
                                 const image::CpuInfo& to, size_t size,
                                 std::vector<std::string>* dropped);

}  // namespace snap::tracer
