// Tests of ELF symbol lookup (src/tracer/symbols.h) on real binaries: this
// test program itself, the libc it runs with, its own vDSO, and the
// `counter` test program (path in SNAP_COUNTER, set by tests/unit/meson.build);
// and of the vDSO's call frame information (src/tracer/vdso_frames.h).
#include "tracer/symbols.h"

#include <gtest/gtest.h>
#include <sys/auxv.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "base/error.h"
#include "tracer/proc.h"
#include "tracer/registers.h"
#include "tracer/vdso.h"
#include "tracer/vdso_frames.h"

// A function with a known name and body to look up in this very binary.
extern "C" __attribute__((noinline, used)) int snap_symbols_test_target(int x) {
  asm volatile("" ::: "memory");
  return x * 3 + 1;
}

namespace snap {
namespace {

// The mapping of this process that holds `addr`.
image::Mapping mapping_of(uint64_t addr) {
  for (const auto& m : proc::read_mappings(::getpid()))
    if (m.start <= addr && addr < m.end) return m;
  ADD_FAILURE() << "no mapping holds " << std::hex << addr;
  return {};
}

uint64_t addr_of(const void* p) { return reinterpret_cast<uint64_t>(p); }

TEST(Symbols, FindsAFunctionOfThisBinaryFromARuntimeAddress) {
  const uint64_t addr = addr_of(reinterpret_cast<const void*>(&snap_symbols_test_target)) + 2;
  auto m = mapping_of(addr);
  ASSERT_FALSE(m.path.empty());
  auto syms = ElfSymbols::open(m.path);
  EXPECT_EQ(syms.table(), ".symtab");  // test binaries are not stripped
  auto hit = syms.lookup_file_offset(addr - m.start + m.pgoff);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->name, "snap_symbols_test_target");
  EXPECT_EQ(hit->offset, 2u);
  // The runtime address and the ELF address differ by the load bias only.
  auto value = syms.find("snap_symbols_test_target");
  ASSERT_TRUE(value);
  EXPECT_EQ(syms.vaddr_of_file_offset(addr - m.start + m.pgoff), *value + 2);
}

TEST(Symbols, FindsNanosleepInLibc) {
  for (auto* fn : {reinterpret_cast<const void*>(&::nanosleep),
                   reinterpret_cast<const void*>(&::clock_nanosleep)}) {
    const uint64_t addr = addr_of(fn);
    auto m = mapping_of(addr);
    ASSERT_NE(m.path.find("libc"), std::string::npos) << m.path;
    auto syms = ElfSymbols::open(m.path);
    auto hit = syms.lookup_file_offset(addr - m.start + m.pgoff);
    ASSERT_TRUE(hit) << m.path;
    EXPECT_NE(hit->name.find("nanosleep"), std::string::npos) << hit->name;
    EXPECT_EQ(hit->offset, 0u);
    auto hit2 = syms.lookup_file_offset(addr - m.start + m.pgoff + 3);
    ASSERT_TRUE(hit2);
    EXPECT_EQ(hit2->name, hit->name);
    EXPECT_EQ(hit2->offset, 3u);
  }
}

TEST(Symbols, FindsMainInCounter) {
  const char* counter = std::getenv("SNAP_COUNTER");
  if (!counter) GTEST_SKIP() << "SNAP_COUNTER not set (run through meson test)";
  auto syms = ElfSymbols::open(counter);
  auto main_addr = syms.find("main");
  ASSERT_TRUE(main_addr);
  auto hit = syms.lookup(*main_addr + 0x10);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->name, "main");
  EXPECT_EQ(hit->offset, 0x10u);
  EXPECT_EQ(format_symbol(counter, *hit), "counter!main+0x10");
}

TEST(Symbols, AddressesOutsideAnySymbol) {
  auto m = mapping_of(addr_of(reinterpret_cast<const void*>(&snap_symbols_test_target)));
  auto syms = ElfSymbols::open(m.path);
  EXPECT_FALSE(syms.lookup(0));                      // below every symbol
  EXPECT_FALSE(syms.lookup(0xffff'ffff'ffff'0000));  // above every sized symbol's end
  EXPECT_FALSE(syms.vaddr_of_file_offset(1ull << 50));
  EXPECT_FALSE(syms.lookup_file_offset(1ull << 50));
  EXPECT_FALSE(syms.find("no_such_symbol_in_this_binary"));
}

TEST(Symbols, ReadsTheVdsoFromMemory) {
  const uint64_t base = getauxval(AT_SYSINFO_EHDR);
  if (!base) GTEST_SKIP() << "no vDSO";
  auto m = mapping_of(base);
  auto syms = ElfSymbols::from_memory(
      {reinterpret_cast<const uint8_t*>(base), m.end - m.start}, "[vdso]");
  EXPECT_EQ(syms.name(), "[vdso]");
  auto value = syms.find("__vdso_clock_gettime");
  ASSERT_TRUE(value);
  auto hit = syms.lookup(*value + 1);
  ASSERT_TRUE(hit);
  EXPECT_NE(hit->name.find("clock_gettime"), std::string::npos) << hit->name;
}

// At the first instruction of every function the vDSO exports, the return
// address is where the call put it: at the stack pointer. Outside the
// image there is no rule. (Read from this process's own vDSO, mapped where
// it is: the CFI's link addresses are mapped to it.)
TEST(VdsoFrames, ReturnAddressAtTheStackPointerOnEntry) {
  const OwnVdso& own = own_vdso();
  const VdsoFrames frames(own.image(), own.base);
  const auto functions = vdso_functions(own.image());
  ASSERT_FALSE(functions.empty());
  for (const auto& f : functions) {
    user_regs_struct r{};
    r.rip = own.base + f.offset;
    r.rsp = 0x7ffd'1234'5670;
    r.rbp = 0x1000;  // no frame set up yet: unused
    const auto slot = frames.return_slot(Registers(r));
    ASSERT_TRUE(slot.has_value()) << f.name;
    EXPECT_EQ(slot->as_int(), r.rsp) << f.name;
  }
  user_regs_struct r{};
  r.rip = own.base + own.size;  // just past it
  r.rsp = 0x7ffd'1234'5670;
  EXPECT_FALSE(frames.return_slot(Registers(r)).has_value());
  const VdsoFrames not_elf(std::vector<uint8_t>(4096, 0x90), own.base);
  r.rip = own.base + 16;
  EXPECT_FALSE(not_elf.return_slot(Registers(r)).has_value());
}

TEST(Symbols, ErrorsNameTheFile) {
  try {
    ElfSymbols::open("/nonexistent/snap-symbols-test");
    FAIL() << "opening a missing file succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/snap-symbols-test"), std::string::npos);
  }
  char tmpl[] = "/tmp/snap-symbols-test-XXXXXX";
  int fd = ::mkstemp(tmpl);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, "not an ELF file\n", 16), 16);
  ::close(fd);
  try {
    ElfSymbols::open(tmpl);
    ADD_FAILURE() << "a text file loaded as ELF";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(tmpl), std::string::npos) << e.what();
  }
  ::unlink(tmpl);
}

TEST(Symbols, FormatsWithBaseNameAndHexOffset) {
  EXPECT_EQ(format_symbol("/usr/lib/x86_64-linux-gnu/libc.so.6", {"__clock_nanosleep", 0x5d}),
            "libc.so.6!__clock_nanosleep+0x5d");
  EXPECT_EQ(format_symbol("counter", {"main", 0}), "counter!main");
  EXPECT_EQ(format_symbol("/lib/libm.so.6", {"", 0x1234}), "libm.so.6+0x1234");
}

}  // namespace
}  // namespace snap
