// The fixture every death test derives from: how gtest runs a statement expected to die.
#ifndef TENDRIL_TESTS_DEATH_DEATH_FIXTURE_HPP
#define TENDRIL_TESTS_DEATH_DEATH_FIXTURE_HPP

#include <gtest/gtest.h>

namespace tendril::test {

class death_fixture : public testing::Test {
 protected:
  // threadsafe re-executes the test binary for each death test; a cross build run under
  // qemu-user can do that only where binfmt_misc knows the target's binaries (containers
  // often lack it), so there the child is forked instead (each statement starts its own
  // threads, so none runs when the child is forked).
#if defined(TENDRIL_TESTS_EMULATED)
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "fast"); }
#else
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
#endif
};

}  // namespace tendril::test

#endif
