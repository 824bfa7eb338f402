// Where a job runs: CPU lists as the kernel writes them (base/cpus.h),
// where a restore binds a thread that was bound at the dump
// (restore/scheduling.h), NUMA memory policies as numa_maps writes them
// (tracer/mempolicy.h).
#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <thread>

#include "base/cpus.h"
#include "restore/scheduling.h"
#include "tracer/mempolicy.h"

namespace snap {
namespace {

TEST(CpuList, TextBothWays) {
  EXPECT_EQ(cpu_list_text({0, 1, 2, 3, 8, 10, 11}), "0-3,8,10-11");
  EXPECT_EQ(cpu_list_text({}), "");
  EXPECT_EQ(cpu_list_text({5}), "5");
  EXPECT_EQ(parse_cpu_list("0-3,8,10-11\n"), (CpuList{0, 1, 2, 3, 8, 10, 11}));
  EXPECT_EQ(parse_cpu_list("3,1,1-2"), (CpuList{1, 2, 3}));
  EXPECT_EQ(parse_cpu_list(""), CpuList{});
  EXPECT_FALSE(parse_cpu_list("1-"));
  EXPECT_FALSE(parse_cpu_list("3-1"));
  EXPECT_FALSE(parse_cpu_list("a"));
  EXPECT_FALSE(parse_cpu_list("1,,2"));
}

TEST(CpuList, OwnAffinityReadsBack) {
  const CpuList mine = thread_cpus(0);
  ASSERT_FALSE(mine.empty());
  EXPECT_EQ(mine.size(), usable_cpus());
  EXPECT_EQ(set_thread_cpus(0, mine), 0);
  EXPECT_EQ(thread_cpus(0), mine);
}

TEST(CpusHere, SameCpusAsGiven) {
  EXPECT_EQ(restore::cpus_here({2, 3}, {0, 1, 2, 3}, {0, 1, 2, 3}), (CpuList{2, 3}));
  // No allotment recorded: kept where this restore has those CPUs.
  EXPECT_EQ(restore::cpus_here({1}, {}, {0, 1}), (CpuList{1}));
  EXPECT_FALSE(restore::cpus_here({5}, {}, {0, 1}));
}

TEST(CpusHere, AnotherAllocationOfAsManyKeepsTheRanks) {
  // The 3rd and 4th of 0-3 are the 3rd and 4th of 16-19; of 8,10,12,14
  // too (the allotment need not be contiguous).
  EXPECT_EQ(restore::cpus_here({2, 3}, {0, 1, 2, 3}, {16, 17, 18, 19}), (CpuList{18, 19}));
  EXPECT_EQ(restore::cpus_here({0}, {0, 1, 2, 3}, {8, 10, 12, 14}), (CpuList{8}));
}

TEST(CpusHere, NoPlaceForIt) {
  EXPECT_FALSE(restore::cpus_here({2}, {0, 1, 2, 3}, {0, 1}));         // fewer CPUs
  EXPECT_FALSE(restore::cpus_here({6}, {0, 1, 2, 3}, {4, 5, 6, 7}));   // outside what it had
  EXPECT_FALSE(restore::cpus_here({}, {0, 1}, {0, 1}));                // not bound
}

TEST(MemPolicy, AsNumaMapsWritesIt) {
  auto p = parse_mempolicy("interleave:0-3");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->mode, 3);  // MPOL_INTERLEAVE
  EXPECT_EQ(p->flags, 0);
  EXPECT_EQ(p->nodes, (CpuList{0, 1, 2, 3}));
  p = parse_mempolicy("bind=static:1");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->mode, 2);
  EXPECT_EQ(p->flags, 1 << 15);  // MPOL_F_STATIC_NODES
  EXPECT_EQ(p->nodes, CpuList{1});
  p = parse_mempolicy("prefer (many):0,2");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->mode, 5);
  EXPECT_EQ(p->nodes, (CpuList{0, 2}));
  p = parse_mempolicy("local");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->mode, 4);
  EXPECT_FALSE(parse_mempolicy("bind"));
  EXPECT_FALSE(parse_mempolicy("sideways:0"));
  EXPECT_FALSE(parse_mempolicy("interleave:x"));
}

// A thread's policy as get_mempolicy gives it, written as numa_maps writes
// policies, and read back.
TEST(MemPolicy, FromGetMempolicyToTextAndBack) {
  uint64_t mask[8] = {0b1011, 0, 0, 0, 0, 0, 0, 1};  // nodes 0, 1, 3 and 448
  MemPolicy p = mempolicy_of(3 | (1 << 15), mask, 8);  // MPOL_INTERLEAVE | MPOL_F_STATIC_NODES
  EXPECT_EQ(p.mode, 3);
  EXPECT_EQ(p.flags, 1 << 15);
  EXPECT_EQ(p.nodes, (CpuList{0, 1, 3, 448}));
  EXPECT_EQ(mempolicy_text(p), "interleave=static:0-1,3,448");
  EXPECT_EQ(parse_mempolicy(mempolicy_text(p)), p);
  uint64_t none[8] = {};
  EXPECT_EQ(mempolicy_text(mempolicy_of(0, none, 8)), "default");
  EXPECT_EQ(parse_mempolicy("default"), mempolicy_of(0, none, 8));
  EXPECT_FALSE(parse_mempolicy("default:0"));
  uint64_t one[8] = {2};
  p = mempolicy_of(2 | (1 << 14) | (1 << 13), one, 8);  // bind, relative, NUMA balancing
  EXPECT_EQ(mempolicy_text(p), "bind=relative|balancing:1");
  EXPECT_EQ(parse_mempolicy("bind=relative|balancing:1"), p);
  EXPECT_EQ(mempolicy_text(mempolicy_of(5, one, 8)), "prefer (many):1");
  EXPECT_FALSE(parse_mempolicy(mempolicy_text(mempolicy_of(9, one, 8))));  // unknown mode
}

// Restore fills a process's memory from snap's threads under the process's
// policy: the scope gives it to the calling thread and to threads created
// meanwhile (the fill's readers), then the thread's own back.
TEST(MemPolicy, ThreadScopeGivesItAndTakesItBack) {
  const CpuList allowed = allowed_memory_nodes();
  if (allowed.empty()) GTEST_SKIP() << "this kernel has no NUMA policies";
  auto mode_of_this_thread = [] {
    int mode = -1;
    unsigned long mask[1024 / 64] = {};
    if (::syscall(SYS_get_mempolicy, &mode, mask, 1024, nullptr, 0) != 0) return -1;
    return mode;
  };
  const int before = mode_of_this_thread();
  ASSERT_NE(before, 3) << "the test runs under an interleave policy already";
  MemPolicy interleave{3, 0, allowed};  // MPOL_INTERLEAVE over what this process may use
  {
    restore::ThreadMempolicyScope scope(interleave);
    EXPECT_EQ(mode_of_this_thread(), 3);
    int in_thread = -1;
    std::thread([&] { in_thread = mode_of_this_thread(); }).join();
    EXPECT_EQ(in_thread, 3) << "a thread created in the scope inherits it";
  }
  EXPECT_EQ(mode_of_this_thread(), before);
  {
    restore::ThreadMempolicyScope none(std::nullopt);
    EXPECT_EQ(mode_of_this_thread(), before);
  }
}

// Each mapping's policy from numa_maps; a mapping of no policy of its own
// shows the task's, so only those that differ from it are recorded.
TEST(MemPolicy, MappingsPoliciesFromNumaMaps) {
  const std::string text =
      "55d0c0a00000 interleave:0 file=/usr/bin/job mapped=2 N0=2 kernelpagesize_kB=4\n"
      "7f0000000000 bind:0-1 anon=16 dirty=16 N0=8 N1=8 kernelpagesize_kB=4\n"
      "7f0000100000 prefer (many):0,2 anon=1 dirty=1 N0=1 kernelpagesize_kB=4\n"
      "7f0000200000 default\n"
      "7ffd00000000 interleave:0 stack anon=3 dirty=3 N0=3 kernelpagesize_kB=4\n";
  auto policies = numa_maps_policies(text);
  ASSERT_EQ(policies.size(), 5u);
  EXPECT_EQ(policies.at(0x7f0000000000), "bind:0-1");
  EXPECT_EQ(policies.at(0x7f0000100000), "prefer (many):0,2");
  EXPECT_EQ(policies.at(0x7f0000200000), "");
  std::vector<image::Mapping> ms(5);
  const uint64_t starts[] = {0x55d0c0a00000, 0x7f0000000000, 0x7f0000100000, 0x7f0000200000,
                             0x7f0000300000};
  for (size_t i = 0; i < ms.size(); i++) ms[i].start = starts[i];
  ms[4].mempolicy = "bind:1";  // not in this numa_maps (kept out of a snapshot): kept
  record_mapping_mempolicies(policies, "interleave:0", ms);
  EXPECT_EQ(ms[0].mempolicy, "");  // the task's
  EXPECT_EQ(ms[1].mempolicy, "bind:0-1");
  EXPECT_EQ(ms[2].mempolicy, "prefer (many):0,2");
  EXPECT_EQ(ms[3].mempolicy, "");  // default: nothing of its own
  EXPECT_EQ(ms[4].mempolicy, "bind:1");
}

}  // namespace
}  // namespace snap
