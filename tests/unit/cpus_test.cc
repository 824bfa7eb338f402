// Where a job runs: CPU lists as the kernel writes them (base/cpus.h),
// where a restore binds a thread that was bound at the dump
// (restore/scheduling.h), NUMA memory policies as numa_maps writes them
// (tracer/mempolicy.h).
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace snap
