// `tendril run -- PROGRAM`: a program that links libtendril.so and never calls patch_all()
// (tests/monkey/preload_helper.cpp) gets the hooks from the preloaded libtendril_preload.so.
// Run directly, its two greenlets' plain usleep(300 ms) calls take turns (0.6 s); under
// `tendril run` they overlap (0.3 s). A program that does not link libtendril.so, and a child
// that a hooked program starts (it inherits the preload), run as they would without it. And
// the command's own failures: a program that is not there (127, as a shell says), no program
// at all (2, usage).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "child_process.hpp"

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool asan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool asan = true;
#else
constexpr bool asan = false;
#endif
#else
constexpr bool asan = false;
#endif

// The environment the programs run with: no preloads from outside, the build tree's preload
// library. Under ASan, libtendril_preload.so comes before the ASan runtime in the list of
// libraries, which is harmless here (it defines no allocator) but which ASan checks for.
std::vector<std::string> environment() {
  std::vector<std::string> env = {"LD_PRELOAD=", "TENDRIL_PRELOAD="};
  if (asan) {
    const char* old = std::getenv("ASAN_OPTIONS");
    env.push_back(std::string("ASAN_OPTIONS=") + (old && *old ? std::string(old) + ":" : "") +
                  "verify_asan_link_order=0");
  }
  return env;
}

struct helper_report {
  int patched = -1;
  double elapsed = -1;
  std::string args;
};

// What the helper printed (its first line that starts with "patched=").
helper_report parse(const std::string& out) {
  helper_report r;
  const auto at = out.find("patched=");
  if (at == std::string::npos) return r;
  char args[256] = {};
  if (std::sscanf(out.c_str() + at, "patched=%d elapsed=%lf args=%255[^\n]", &r.patched, &r.elapsed,
                  args) >= 2)
    r.args = args;
  return r;
}

class preload : public ::testing::Test {
 protected:
  void SetUp() override {
#if !defined(TENDRIL_COMMAND) || !defined(TENDRIL_PRELOAD_HELPER)
    GTEST_SKIP() << "built without the tendril command (TENDRIL_BUILD_APPS=OFF)";
#endif
  }
#if defined(TENDRIL_COMMAND) && defined(TENDRIL_PRELOAD_HELPER)
  const std::string command_ = TENDRIL_COMMAND;
  const std::string helper_ = TENDRIL_PRELOAD_HELPER;
#else
  const std::string command_, helper_;
#endif
};

}  // namespace

TEST_F(preload, without_tendril_run_the_sleeps_take_turns) {
  const auto r = tendril::test::run_program({helper_, "one", "two words"}, environment());
  ASSERT_EQ(r.status, 0) << r.output;
  const auto rep = parse(r.output);
  EXPECT_EQ(rep.patched, 0) << r.output;
  EXPECT_GE(rep.elapsed, 0.6) << r.output;
  EXPECT_EQ(rep.args, "one|two words");
}

TEST_F(preload, under_tendril_run_the_hooks_are_on_and_the_sleeps_overlap) {
  const auto r = tendril::test::run_program({command_, "run", "--", helper_, "one", "two words"},
                                            environment());
  ASSERT_EQ(r.status, 0) << r.output;
  const auto rep = parse(r.output);
  EXPECT_EQ(rep.patched, 1) << r.output;
  EXPECT_GE(rep.elapsed, 0.29) << r.output;
  EXPECT_LT(rep.elapsed, 0.55) << r.output;
  EXPECT_EQ(rep.args, "one|two words");
}

// The preloaded libtendril.so comes after libc in the lookup order of a program that does not
// link it, so dlsym(RTLD_NEXT) found no libc function and the preload aborted the program
// (status 134) before its main.
TEST_F(preload, tendril_run_of_a_program_that_does_not_link_tendril_runs_it_unchanged) {
  const auto r = tendril::test::run_program(
      {command_, "run", "--", "/bin/sh", "-c", "sleep 0.1; /bin/echo child ok; echo done"},
      environment());
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(r.output, "child ok\ndone\n");
}

// The same, for the /bin/sh that std::system() starts from a hooked program: it inherits
// LD_PRELOAD, and died.
TEST_F(preload, under_tendril_run_a_child_started_with_system_runs_unchanged) {
  const auto r = tendril::test::run_program(
      {command_, "run", "--", helper_, "system", "/bin/echo child ok"}, environment());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(parse(r.output).patched, 1) << r.output;
  EXPECT_NE(r.output.find("child ok\n"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("system=0\n"), std::string::npos) << r.output;
}

TEST_F(preload, tendril_run_of_a_missing_program_exits_127_with_a_message) {
  const auto r = tendril::test::run_program({command_, "run", "--", "/nonexistent"}, environment());
  EXPECT_EQ(r.status, 127) << r.output;
  EXPECT_NE(r.output.find("/nonexistent"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("No such file"), std::string::npos) << r.output;
}

TEST_F(preload, tendril_run_without_a_program_exits_2_with_its_usage) {
  for (const auto& argv : {std::vector<std::string>{command_, "run"},
                           std::vector<std::string>{command_, "run", "--"}}) {
    const auto r = tendril::test::run_program(argv, environment());
    EXPECT_EQ(r.status, 2) << r.output;
    EXPECT_NE(r.output.find("usage"), std::string::npos) << r.output;
  }
}
