// Hubs that must end the process, each in a child process: a backend whose wait fails for
// good (here, an epoll descriptor closed behind the hub's back) says so and aborts.
#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "tendril/task/sleep.hpp"

using namespace std::chrono_literals;

namespace {

class hub_death : public testing::Test {
 protected:
  // As greenlet_death: threadsafe re-executes the binary, except under emulation.
#if defined(TENDRIL_TESTS_EMULATED)
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "fast"); }
#else
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
#endif
};

// Closes every epoll descriptor of the process with a raw system call.
void close_epoll_descriptors() {
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    if (std::filesystem::read_symlink(e.path(), ec).string() == "anon_inode:[eventpoll]")
      ::syscall(SYS_close, std::stoi(e.path().filename().string()));
  }
}

}  // namespace

// The loop ignored the error and asked again, for ever: the process spun without a word (a
// forked child that kept its parent's io_uring ring got EEXIST on every wait).
TEST_F(hub_death, a_backend_wait_that_fails_for_good_aborts_naming_the_backend_and_the_error) {
  EXPECT_DEATH(
      {
        ::alarm(30);  // a loop that spins dies of SIGALRM instead, with no message
        ::setenv("TENDRIL_BACKEND", "epoll", 1);
        tendril::sleep(1ms);
        close_epoll_descriptors();
        tendril::sleep(10ms);
      },
      "tendril: the hub's epoll backend cannot wait: Bad file descriptor");
}
