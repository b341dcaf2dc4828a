// Processes that must die, each in a child process: a stack overflow in a greenlet ends the
// process with a message naming the greenlet, whatever stack it ran on (fresh, trimmed,
// reused, on another thread, beside other greenlets, at a switch); greenlets used after their
// thread's state was torn down.
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "death_fixture.hpp"
#include "greenlet/greenlet_record.hpp"
#include "tendril/greenlet/generator.hpp"
#include "tendril/greenlet/greenlet.hpp"
#include "tendril/greenlet/stack.hpp"

using tendril::greenlet;

namespace {

// Never reached: keeps the recursion from being provably infinite to the compiler.
volatile int g_depth_limit = 1 << 30;

// Recurses until the stack runs out, with frames well below the guard's size so that one of
// them lands in the guard rather than jumping over it.
[[gnu::noinline]] int recurse(int depth) {
  volatile char frame[256];
  frame[0] = static_cast<char>(depth);
  if (depth == g_depth_limit) return frame[0];
  return recurse(depth + 1) + frame[0];
}

[[gnu::noinline]] int recurse_bounded(int depth) {
  volatile char frame[256];
  frame[0] = static_cast<char>(depth);
  if (depth == 0) return frame[0];
  return recurse_bounded(depth - 1) + frame[0];
}

constexpr tendril::stack_size small_stack{tendril::min_stack_size};

const void* stack_base(const greenlet& g) { return g.record()->stk.base; }

// The child ends with a message that the death tests below do not expect.
[[noreturn]] void fail_in_child(const char* why) {
  std::fprintf(stderr, "precondition failed: %s\n", why);
  std::_Exit(3);
}

void overflow_named(const char* name, tendril::stack_size stack = small_stack) {
  greenlet g([] { recurse(0); }, stack);
  g.set_name(name);
  g.switch_to();
}

class greenlet_death : public tendril::test::death_fixture {};

}  // namespace

TEST_F(greenlet_death, stack_overflow_in_a_named_greenlet_reports_its_name) {
  EXPECT_DEATH(overflow_named("deep-one"), "tendril: stack overflow in greenlet 'deep-one'");
}

TEST_F(greenlet_death, stack_overflow_on_the_default_stack_reports_the_greenlet_id) {
  EXPECT_DEATH(
      {
        greenlet g([] { recurse(0); });
        g.switch_to();
      },
      "tendril: stack overflow in greenlet 'greenlet-[0-9]+'");
}

// A task's greenlet is named by a prefix and its number ("Greenlet-N", made up when asked):
// the report names it so, as task::name() does.
TEST_F(greenlet_death, stack_overflow_in_a_task_reports_the_tasks_name) {
  EXPECT_DEATH(
      {
        greenlet g([] { recurse(0); }, small_stack);
        g.record()->name_prefix = "Greenlet-";
        g.record()->name_number = 42;
        g.switch_to();
      },
      "tendril: stack overflow in greenlet 'Greenlet-42'");
}

TEST_F(greenlet_death, stack_overflow_after_trim_stack_cache_is_still_caught) {
  EXPECT_DEATH(
      {
        {
          std::vector<greenlet> warm;
          for (int i = 0; i < 4; ++i) {
            warm.emplace_back([] { return recurse_bounded(20); }, small_stack);
            warm.back().switch_to();
          }
        }
        if (tendril::trim_stack_cache() < 1) fail_in_child("nothing was trimmed");
        overflow_named("deep-one");
      },
      "tendril: stack overflow in greenlet 'deep-one'");
}

TEST_F(greenlet_death, stack_overflow_on_a_reused_stack_is_still_caught) {
  EXPECT_DEATH(
      {
        const void* first = nullptr;
        {
          greenlet warm([] { return recurse_bounded(30); }, small_stack);
          first = stack_base(warm);
          warm.switch_to();
        }
        greenlet g([] { recurse(0); }, small_stack);
        if (stack_base(g) != first) fail_in_child("the stack was not reused");
        g.set_name("deep-one");
        g.switch_to();
      },
      "tendril: stack overflow in greenlet 'deep-one'");
}

TEST_F(greenlet_death, stack_overflow_in_a_second_greenlet_names_that_one) {
  EXPECT_DEATH(
      {
        greenlet first([] { greenlet::current().parent().switch_to(); }, small_stack);
        first.set_name("first");
        first.switch_to();
        overflow_named("deep-one");
      },
      "tendril: stack overflow in greenlet 'deep-one'");
}

TEST_F(greenlet_death, stack_overflow_in_a_greenlet_of_another_thread_names_it) {
  EXPECT_DEATH(
      {
        std::thread t([] { overflow_named("deep-one"); });
        t.join();
      },
      "tendril: stack overflow in greenlet 'deep-one'");
}

TEST_F(greenlet_death, stack_overflow_in_a_generator_body_is_caught) {
  EXPECT_DEATH(
      {
        tendril::generator<int> gen(
            [](auto& y) {
              y.yield(1);
              recurse(0);
            },
            small_stack);
        gen.next();
        gen.next();
      },
      "tendril: stack overflow in greenlet 'greenlet-[0-9]+'");
}

namespace {

tendril::greenlet g_consumer;

// Switches at every level, with frames smaller than what a switch pushes: the guard is first
// touched by a switch, when the running greenlet is already the one switched to.
[[gnu::noinline]] int walk_switching(int depth) {
  volatile char frame[64];
  frame[0] = static_cast<char>(depth);
  g_consumer.switch_to(depth);
  if (depth == g_depth_limit) return frame[0];
  return walk_switching(depth + 1) + frame[0];
}

[[gnu::noinline]] int walk_yielding(tendril::generator<int>::yielder& y, int depth) {
  volatile char frame[64];
  frame[0] = static_cast<char>(depth);
  y.yield(depth);
  if (depth == g_depth_limit) return frame[0];
  return walk_yielding(y, depth + 1) + frame[0];
}

}  // namespace

// The report looked only at the running greenlet's guard; at a switch that is already the
// target, while the jump pushes onto the stack being left: no report, a plain SIGSEGV.
TEST_F(greenlet_death, stack_overflow_at_a_switch_names_the_greenlet_switching_away) {
  EXPECT_DEATH(
      {
        greenlet walker([] { walk_switching(0); }, small_stack);
        walker.set_name("walker");
        g_consumer = greenlet([&] {
          for (;;) walker.switch_to();
        });
        walker.switch_to();
      },
      "tendril: stack overflow in greenlet 'walker'");
}

TEST_F(greenlet_death, stack_overflow_at_a_yield_names_the_generator_body) {
  EXPECT_DEATH(
      {
        tendril::generator<int> gen([](auto& y) { walk_yielding(y, 0); }, small_stack);
        while (gen.next()) {
        }
      },
      "tendril: stack overflow in greenlet 'greenlet-[0-9]+'");
}

// --- faults that are not tendril's -----------------------------------------------------------

namespace {

std::atomic<int> g_logger_calls{0};

// A crash logger of the usual kind: it notes the fault and returns, counting on SA_RESETHAND
// for the fault, executed again, to end the process.
void crash_logger(int, siginfo_t*, void*) {
  if (g_logger_calls.fetch_add(1) > 0) {
    constexpr char again[] = "logger called again: the fault loops\n";
    static_cast<void>(::write(STDERR_FILENO, again, sizeof again - 1));
    ::_exit(42);
  }
  constexpr char note[] = "logger: SIGSEGV\n";
  static_cast<void>(::write(STDERR_FILENO, note, sizeof note - 1));
}

void start_tendril() {
  greenlet g([] {});
  g.switch_to();
}

// A page nobody may touch: a fault on it is a plain SIGSEGV, with no sanitizer report first
// (UBSan stops a store through a null pointer before it faults).
int* fault_address() {
  void* p = ::mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : static_cast<int*>(p);
}

}  // namespace

// tendril chained to the logger without resetting it first, so the fault came back to
// tendril's handler, then the logger's, for ever.
TEST_F(greenlet_death, a_fault_chained_to_a_handler_installed_with_sa_resethand_ends_the_process) {
  EXPECT_EXIT(
      {
        struct sigaction sa {};
        sa.sa_sigaction = &crash_logger;
        sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, nullptr);
        start_tendril();
        int* volatile bad = fault_address();
        *bad = 1;
      },
      // Once (a second call exits with 42); qemu-user prints a line of its own after it.
      testing::KilledBySignal(SIGSEGV), "logger: SIGSEGV\n");
}

// A sent SIGSEGV does not happen again when the handler returns: tendril restored the default
// action and returned, so the process went on (without tendril's handler).
TEST_F(greenlet_death, a_sigsegv_sent_by_raise_ends_the_process_as_without_tendril) {
  EXPECT_EXIT(
      {
        std::signal(SIGSEGV, SIG_DFL);  // without tendril: the default action (not ASan's)
        start_tendril();
        std::raise(SIGSEGV);
        std::fputs("still running after raise(SIGSEGV)\n", stderr);
        std::_Exit(0);
      },
      testing::KilledBySignal(SIGSEGV), "");
}

// SIG_IGN set with SA_SIGINFO (sa_sigaction and sa_handler share their storage) was called,
// at address 1. A sent SIGSEGV is then ignored, as without tendril.
TEST_F(greenlet_death, an_ignored_sigsegv_set_with_sa_siginfo_stays_ignored) {
  EXPECT_EXIT(
      {
        struct sigaction sa {};
        sa.sa_handler = SIG_IGN;
        sa.sa_flags = SA_SIGINFO;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, nullptr);
        start_tendril();
        std::raise(SIGSEGV);
        std::fputs("still running after raise(SIGSEGV)\n", stderr);
        std::_Exit(0);
      },
      testing::ExitedWithCode(0), "still running after raise\\(SIGSEGV\\)");
}

// The forced unwind of pthread_exit() was swallowed by the greenlet's catch (...): the
// runtime's "FATAL: exception not rethrown", naming nothing.
TEST_F(greenlet_death, pthread_exit_inside_a_greenlet_stops_the_process_naming_it) {
  EXPECT_DEATH(
      {
        std::thread t([] {
          greenlet g([] { pthread_exit(nullptr); });
          g.set_name("leaver");
          g.switch_to();
        });
        t.join();
      },
      "tendril: pthread_exit\\(\\) or thread cancellation inside greenlet 'leaver'");
}

namespace {
// A thread_local made before tendril's own state in its thread, hence destroyed after it.
struct uses_greenlets_at_thread_exit {
  ~uses_greenlets_at_thread_exit() { (void)greenlet::current(); }
};
}  // namespace

TEST_F(greenlet_death, greenlets_used_after_their_threads_state_was_torn_down_abort) {
  EXPECT_DEATH(
      {
        std::thread t([] {
          thread_local uses_greenlets_at_thread_exit late;
          (void)&late;
          (void)greenlet::current();
        });
        t.join();
      },
      "tendril: greenlets used after their thread's state was torn down");
}
