// Pieces of a dump's orchestration (src/job) that stand alone.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>
#include <vector>

#include "base/heap.h"
#include "base/huge_buffer.h"
#include "image/checkpoint.h"
#include "job/held_pages.h"

using namespace snap;

namespace {

constexpr size_t kPage = image::kPageSize;

// Pages whose bytes say which page of which run they are.
std::vector<uint8_t> pages(size_t n, uint8_t tag) {
  std::vector<uint8_t> out(n * kPage);
  for (size_t i = 0; i < n; i++) std::memset(out.data() + i * kPage, tag + i, kPage);
  return out;
}

struct Got {
  pid_t pid;
  uint64_t mapping_start, addr;
  std::vector<uint8_t> bytes;
};

PageSink recorder(std::vector<Got>& into, std::mutex* mu = nullptr) {
  return [&into, mu](pid_t pid, uint64_t mapping_start, uint64_t addr, const uint8_t* data,
                     size_t npages) {
    std::unique_lock<std::mutex> lock;
    if (mu) lock = std::unique_lock(*mu);
    into.push_back({pid, mapping_start, addr, {data, data + npages * kPage}});
  };
}

TEST(HeldPages, HoldsUpToTheBoundThenPassesOn) {
  // The bound is rounded up to 2 MiB: 512 pages.
  job::HeldPages held(2 << 20, 2 << 20);  // all of it faulted in before
  std::vector<Got> at_once, later;
  PageSink sink = held.sink(7, recorder(at_once));
  auto a = pages(300, 1), b = pages(200, 50), c = pages(100, 90), d = pages(12, 200);
  sink(1234, 0x10000, 0x10000, a.data(), 300);   // held
  sink(1234, 0x10000, 0x200000, b.data(), 200);  // held (500 pages)
  sink(1234, 0x800000, 0x800000, c.data(), 100);  // would not fit: on at once
  sink(1234, 0x900000, 0x901000, d.data(), 12);   // fits (512 pages)
  ASSERT_EQ(at_once.size(), 1u);
  EXPECT_EQ(at_once[0].pid, 1234);  // passed on as it came
  EXPECT_EQ(at_once[0].addr, 0x800000u);
  EXPECT_EQ(at_once[0].bytes, c);
  EXPECT_EQ(held.bytes_held(), 512 * kPage);
  EXPECT_EQ(held.bytes_passed_on(), 100 * kPage);

  // The sources' buffers are reused by then: what was held is a copy.
  std::memset(a.data(), 0, a.size());
  a = pages(300, 1);
  held.store_all(recorder(later));
  ASSERT_EQ(later.size(), 3u);
  EXPECT_EQ(later[0].pid, 7);  // as the owner's
  EXPECT_EQ(later[0].mapping_start, 0x10000u);
  EXPECT_EQ(later[0].addr, 0x10000u);
  EXPECT_EQ(later[0].bytes, a);
  EXPECT_EQ(later[1].addr, 0x200000u);
  EXPECT_EQ(later[1].bytes, b);
  EXPECT_EQ(later[2].mapping_start, 0x900000u);
  EXPECT_EQ(later[2].addr, 0x901000u);
  EXPECT_EQ(later[2].bytes, d);
  EXPECT_EQ(held.bytes_held(), 0u);
  later.clear();
  held.store_all(recorder(later));
  EXPECT_TRUE(later.empty()) << "stored twice";
}

TEST(HeldPages, ReadersAddAtOnce) {
  job::HeldPages held(4 << 20, 0);  // 1024 pages
  std::vector<Got> at_once, later;
  std::mutex mu;
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; t++)
    readers.emplace_back([&, t] {
      PageSink sink = held.sink(100 + t, recorder(at_once, &mu));
      for (int i = 0; i < 100; i++) {
        auto p = pages(3, static_cast<uint8_t>(t * 64 + i));
        const uint64_t addr = 0x100000000ull * (t + 1) + i * 3 * kPage;
        sink(100 + t, addr, addr, p.data(), 3);
      }
    });
  for (auto& r : readers) r.join();
  held.store_all(recorder(later));
  // 1200 pages offered, 1024 room: 341 runs held, the rest passed on, each
  // run once and intact.
  EXPECT_EQ(later.size(), 341u);
  EXPECT_EQ(later.size() + at_once.size(), 400u);
  std::map<std::tuple<pid_t, uint64_t>, int> seen;
  for (const auto* v : {&later, &at_once})
    for (const Got& g : *v) {
      const int t = g.pid - 100;
      const int i = static_cast<int>((g.addr - 0x100000000ull * (t + 1)) / (3 * kPage));
      EXPECT_EQ(g.bytes, pages(3, static_cast<uint8_t>(t * 64 + i))) << t << " " << i;
      seen[{g.pid, g.addr}]++;
    }
  EXPECT_EQ(seen.size(), 400u);
}

}  // namespace

// snap's heap (base/heap.h): after advise_heap_huge_pages(), as restore
// calls it, a block of some MiB lies in heap advised to transparent huge
// pages. Checked in a child, whose malloc settings are its own.
TEST(Heap, LargeBlocksComeFromHeapAdvisedToHugePages) {
  if (!huge_pages_available())
    GTEST_SKIP() << "transparent huge pages are off here (THP \"never\"): nothing is advised";
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    keep_freed_heap_mapped();
    advise_heap_huge_pages();
    auto* p = static_cast<char*>(std::malloc(8 << 20));
    if (!p) _exit(3);
    p[0] = 1;
    const auto at = reinterpret_cast<uintptr_t>(p) + (4 << 20);
    std::ifstream smaps("/proc/self/smaps");
    std::string line;
    bool inside = false;
    while (std::getline(smaps, line)) {
      uintptr_t lo = 0, hi = 0;
      char dash = 0;
      std::istringstream range(line);
      if (range >> std::hex >> lo >> dash >> hi && dash == '-') {
        inside = lo <= at && at < hi;
        continue;
      }
      if (inside && line.rfind("VmFlags:", 0) == 0) _exit(line.find(" hg") != std::string::npos ? 0 : 1);
    }
    _exit(2);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: the block's mapping is not advised (no hg), "
                                       "2: no mapping holds it, 3: malloc failed";
}
