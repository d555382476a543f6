#include "common/malloc_tuning.h"

#include <malloc.h>
#include <stdlib.h>

#include <cstring>

#include "gtest/gtest.h"

namespace distill {
namespace {

constexpr size_t kBlock = size_t{48} << 20;

// A user's own allocator settings win: nothing is tuned and the reason names
// the variable.
TEST(MallocTuningTest, LeavesTheAllocatorToAUsersSetting) {
  ASSERT_EQ(setenv("MALLOC_ARENA_MAX", "2", 1), 0);
  EXPECT_EQ(TuneMallocForTensors(), "MALLOC_ARENA_MAX is set");
  unsetenv("MALLOC_ARENA_MAX");
  ASSERT_EQ(setenv("DISTILL_KEEP_MALLOC", "1", 1), 0);
  EXPECT_EQ(TuneMallocForTensors(), "DISTILL_KEEP_MALLOC is set");
  unsetenv("DISTILL_KEEP_MALLOC");
}

// Untuned, glibc serves a 48 MiB block with mmap (it shows in hblkhd) and
// unmaps it on free. Tuned, the block comes from the heap and stays there,
// free for the next one.
TEST(MallocTuningTest, LargeBlocksComeFromAndReturnToTheHeap) {
  ASSERT_EQ(TuneMallocForTensors(), "");
  const size_t mapped_before = mallinfo2().hblkhd;
  void* block = malloc(kBlock);
  ASSERT_NE(block, nullptr);
  std::memset(block, 1, kBlock);
  EXPECT_EQ(mallinfo2().hblkhd, mapped_before)
      << "the block was mapped, not taken from the heap";
  free(block);
  EXPECT_GE(mallinfo2().fordblks, kBlock)
      << "the heap gave the freed block back to the system";
}

}  // namespace
}  // namespace distill
