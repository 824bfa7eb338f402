// Tests of the feature probes behind `snap check`. They run the real probes
// on this machine, so the expectations are the facts in
// shared/notes/machine.md: all needed features present, soft-dirty off.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <set>

#include "tracer/probe.h"

namespace snap::probe {
namespace {

// Any child a probe left behind would show up here.
void expect_no_children_left() {
  int st;
  errno = 0;
  EXPECT_EQ(::waitpid(-1, &st, WNOHANG | __WALL), -1) << "a probe left a child behind";
  EXPECT_EQ(errno, ECHILD);
}

TEST(Probe, PtraceWorksOnOwnChild) {
  Result r = probe_ptrace();
  EXPECT_EQ(r.id, "ptrace");
  EXPECT_EQ(r.need, Need::kRequired);
  EXPECT_TRUE(r.ok) << r.message;
  EXPECT_NE(r.message.find("XSAVE"), std::string::npos) << r.message;
  expect_no_children_left();
}

TEST(Probe, MemoryAccessWorks) {
  Result vm = probe_process_vm_readv();
  EXPECT_TRUE(vm.ok) << vm.message;
  Result pm = probe_pagemap();
  EXPECT_TRUE(pm.ok) << pm.message;
  expect_no_children_left();
}

TEST(Probe, PrctlMmMapWorksWithoutCapSysResource) {
  Result r = probe_prctl_mm_map();
  EXPECT_TRUE(r.ok) << r.message;
  expect_no_children_left();
}

TEST(Probe, SetTidNeedsPrivilege) {
  Result r = probe_set_tid();
  EXPECT_EQ(r.need, Need::kPidChoice);
  bool privileged = false;
  for (const auto& c : probe_capabilities())
    if ((c.id == "cap_sys_admin" || c.id == "cap_checkpoint_restore") && c.ok) privileged = true;
  EXPECT_EQ(r.ok, privileged) << r.message;
  if (!r.ok) {
    EXPECT_NE(r.message.find("namespace"), std::string::npos) << r.message;
  }
  expect_no_children_left();
}

TEST(Probe, UserAndPidNamespacesGiveChosenPids) {
  Result r = probe_userns_pidns();
  EXPECT_TRUE(r.ok) << r.message;
  expect_no_children_left();
}

TEST(Probe, SoftDirtyIsOffOnThisKernel) {
  Result r = probe_soft_dirty();
  EXPECT_EQ(r.need, Need::kOptional);
  EXPECT_FALSE(r.ok) << "machine.md says CONFIG_MEM_SOFT_DIRTY is off: " << r.message;
  expect_no_children_left();
}

TEST(Probe, AllHaveNamesAndMessagesAndFinishQuickly) {
  auto start = std::chrono::steady_clock::now();
  auto results = probe_all();
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_LT(took, std::chrono::seconds(10));
  std::set<std::string> ids;
  for (const auto& r : results) {
    EXPECT_FALSE(r.id.empty());
    EXPECT_FALSE(r.title.empty()) << r.id;
    EXPECT_FALSE(r.message.empty()) << r.id;
    EXPECT_TRUE(ids.insert(r.id).second) << "duplicate id " << r.id;
  }
  for (const char* id : {"ptrace", "process_vm_readv", "pagemap", "set_tid", "prctl_mm_map",
                         "userns_pidns", "userfaultfd", "pagemap_scan", "proc_children",
                         "soft_dirty", "write_tracking", "cap_sys_ptrace"})
    EXPECT_TRUE(ids.count(id)) << "no probe " << id;
  EXPECT_TRUE(judge(results).can_dump_restore) << judge(results).reason;
  expect_no_children_left();
}

Result fake(const char* id, Need need, bool ok) { return Result{id, id, need, ok, "m"}; }

TEST(Judge, NeedsAllRequiredAndOnePidChoice) {
  std::vector<Result> rs = {fake("ptrace", Need::kRequired, true),
                            fake("set_tid", Need::kPidChoice, false),
                            fake("userns", Need::kPidChoice, true),
                            fake("uffd", Need::kOptional, false)};
  Verdict v = judge(rs);
  EXPECT_TRUE(v.can_dump_restore);
  EXPECT_TRUE(v.reason.empty());

  rs[2].ok = false;
  v = judge(rs);
  EXPECT_FALSE(v.can_dump_restore);
  EXPECT_NE(v.reason.find("pids"), std::string::npos) << v.reason;

  rs[2].ok = true;
  rs[0].ok = false;
  v = judge(rs);
  EXPECT_FALSE(v.can_dump_restore);
  EXPECT_NE(v.reason.find("ptrace"), std::string::npos) << v.reason;
}

}  // namespace
}  // namespace snap::probe
