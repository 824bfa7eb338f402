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
                         "soft_dirty", "write_tracking", "shared_wp", "cap_sys_ptrace"})
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

namespace snap::probe {
namespace {

std::vector<Result> all_ok() {
  std::vector<Result> rs;
  for (const char* id : {"ptrace", "process_vm_readv", "pagemap", "prctl_mm_map"})
    rs.push_back({id, id, Need::kRequired, true, "works"});
  rs.push_back({"set_tid", "clone3 set_tid", Need::kPidChoice, true, "works"});
  rs.push_back({"userns_pidns", "user+pid namespaces", Need::kPidChoice, true, "works"});
  return rs;
}

const Summary& get(const std::vector<Summary>& s, const std::string& id) {
  for (const auto& x : s)
    if (x.id == id) return x;
  throw std::runtime_error("no summary " + id);
}

TEST(Summarize, OrdinaryUserWithoutSetTid) {
  auto rs = all_ok();
  rs[4].ok = false;
  rs[4].message = "needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN";
  auto s = summarize(rs, -1, false);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_TRUE(get(s, "dump").ok);
  EXPECT_NE(get(s, "dump").why.find("no Yama"), std::string::npos) << get(s, "dump").why;
  EXPECT_FALSE(get(s, "restore").ok);
  EXPECT_NE(get(s, "restore").why.find("set_tid"), std::string::npos);
  EXPECT_TRUE(get(s, "restore_userns").ok);
}

TEST(Summarize, YamaScopes) {
  auto s1 = summarize(all_ok(), 1, false);
  EXPECT_TRUE(get(s1, "dump").ok);
  EXPECT_NE(get(s1, "dump").why.find("snap run"), std::string::npos) << get(s1, "dump").why;
  EXPECT_NE(get(s1, "dump").why.find("ptrace_scope=1"), std::string::npos);
  EXPECT_EQ(get(summarize(all_ok(), 1, true), "dump").why.find("snap run"), std::string::npos);
  EXPECT_FALSE(get(summarize(all_ok(), 2, false), "dump").ok);
  EXPECT_TRUE(get(summarize(all_ok(), 2, true), "dump").ok);
  EXPECT_FALSE(get(summarize(all_ok(), 3, true), "dump").ok);
}

TEST(Summarize, NamespacesRefusedSaysWhy) {
  auto rs = all_ok();
  rs[5].ok = false;
  rs[5].message = "unshare(CLONE_NEWUSER|CLONE_NEWPID): EPERM; kernel.unprivileged_userns_clone=0 ...";
  auto s = summarize(rs, 0, false);
  EXPECT_FALSE(get(s, "restore_userns").ok);
  EXPECT_NE(get(s, "restore_userns").why.find("unprivileged_userns_clone"), std::string::npos);
  rs[0].ok = false;
  EXPECT_FALSE(get(summarize(rs, 0, false), "dump").ok);
}

}  // namespace
}  // namespace snap::probe
