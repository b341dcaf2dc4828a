// Hubs and tasks that must end the process, each in a child process: a backend whose wait
// fails for good (here, an epoll descriptor closed behind the hub's back) says so and aborts;
// so does pthread_exit() inside a task, and a task that forked ending in the forked child.
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>

#include "death_fixture.hpp"
#include "tendril/task/sleep.hpp"
#include "tendril/task/task.hpp"

using namespace std::chrono_literals;

namespace {

class hub_death : public tendril::test::death_fixture {};

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

// The task's catch (...) swallowed the forced unwind of pthread_exit(): the runtime's "FATAL:
// exception not rethrown", naming nothing. The same in a link callback.
TEST_F(hub_death, pthread_exit_inside_a_task_stops_the_process_naming_it) {
  EXPECT_DEATH(
      {
        std::thread t([] {
          auto task = tendril::spawn([] { pthread_exit(nullptr); });
          task.set_name("leaver");
          task.join();
        });
        t.join();
      },
      "tendril: pthread_exit\\(\\) or thread cancellation inside greenlet 'leaver'");
  EXPECT_DEATH(
      {
        std::thread t([] {
          auto task = tendril::spawn([] {});
          task.set_name("linked");
          task.link([] { pthread_exit(nullptr); });
          task.join();
        });
        t.join();
      },
      "tendril: pthread_exit\\(\\) or thread cancellation inside a link callback of task "
      "'linked'");
}

namespace {

// In the process that forked (pid its child's, or 0 in a child that went on): exits as the
// child ended, 128 + the signal if one ended it (a child that went on exits 0 at once).
[[noreturn]] void exit_as_the_forked_child_did(pid_t pid) {
  if (pid == 0) std::_Exit(0);
  int st = 0;
  ::waitpid(pid, &st, 0);
  std::_Exit(WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st));
}

}  // namespace

// The task that forked returned in the child: it ended into the root, which waited in the
// parent's hub; the root took that for an intruder (a misleading invalid_switch out of its
// join) and ran on in the child. The child stops instead, saying why and what to do.
TEST_F(hub_death, a_task_that_forked_ending_in_the_child_stops_it_naming_the_task) {
  EXPECT_EXIT(
      {
        ::alarm(30);
        pid_t pid = -1;
        auto forker = tendril::spawn([&] {
          tendril::sleep(1ms);
          pid = ::fork();
        });
        forker.set_name("forker");
        forker.join();
        exit_as_the_forked_child_did(pid);
      },
      testing::ExitedWithCode(128 + SIGABRT),
      "tendril: greenlet 'forker' called fork\\(\\) and ended in the child process.*end the "
      "child with _exit\\(\\) or exit\\(\\)");
}

// The same from a task's cleanup at its thread's end: the root, in the drain, switched back
// into the parent's abandoned hub in the child and crashed there (SIGSEGV).
TEST_F(hub_death, a_cleanup_that_forked_at_its_threads_end_ending_in_the_child_stops_it) {
  EXPECT_EXIT(
      {
        ::alarm(30);
        pid_t pid = -1;
        std::thread th([&pid] {
          auto forker = tendril::spawn([&pid] {
            try {
              tendril::sleep(1h);
            } catch (const tendril::greenlet_exit&) {
              pid = ::fork();
              throw;
            }
          });
          forker.set_name("forker");
          tendril::sleep(0s);
        });
        th.join();
        exit_as_the_forked_child_did(pid);
      },
      testing::ExitedWithCode(128 + SIGABRT),
      "tendril: greenlet 'forker' called fork\\(\\) and ended in the child process");
}

namespace {

volatile int g_depth_limit = -1;  // never reached: for the compiler, which sees no end

// Recursion that yields at every level: the guard is first touched by the switch itself.
[[gnu::noinline]] int walk(int depth) {
  if (depth == g_depth_limit) return 0;
  volatile char frame[64];
  frame[0] = static_cast<char>(depth);
  tendril::sleep(0s);
  return walk(depth + 1) + frame[0];
}

}  // namespace

// An overflow at the hub's hand-off (park() jumping straight to the next ready task, in the
// hub's name) was a plain SIGSEGV: the report looked at the hub, not the task being left.
TEST_F(hub_death, stack_overflow_at_the_hubs_hand_off_names_the_task) {
  EXPECT_DEATH(
      {
        auto a = tendril::spawn([] { walk(0); });
        a.set_name("walker");
        auto b = tendril::spawn([] {
          for (;;) tendril::sleep(0s);
        });
        a.join();
      },
      "tendril: stack overflow in greenlet 'walker'");
}
