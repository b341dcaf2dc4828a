// The machine switch on its own: make, jump, ontop, the frame layout and stack alignment.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "context/context.hpp"
#include "context/stack_pool.hpp"
#if TENDRIL_CONTEXT_ASM && defined(__x86_64__)
#include "context/frame_x86_64.hpp"
#elif TENDRIL_CONTEXT_ASM && defined(__aarch64__)
#include "context/frame_arm64.hpp"
#endif

namespace ctx = tendril::detail::context;
namespace pool = tendril::detail::stack_pool;
using tendril::detail::stack;

namespace {

// One made context plus the main side, with a stack from the pool.
struct fixture {
  stack s;
  ctx::handle main_ctx = nullptr;
  ctx::handle co_ctx = nullptr;

  explicit fixture(ctx::entry_fn entry) {
    EXPECT_EQ(pool::allocate(64 * 1024, s), 0);
    co_ctx = ctx::make(s.top(), s.size, entry);
  }
  ~fixture() { pool::release(s); }
};

fixture* g_fx = nullptr;
std::vector<int> g_trace;

void counting_entry(void* data) {
  auto n = reinterpret_cast<std::intptr_t>(data);
  while (true) {
    g_trace.push_back(static_cast<int>(n));
    n = reinterpret_cast<std::intptr_t>(
        ctx::jump(&g_fx->co_ctx, g_fx->main_ctx, reinterpret_cast<void*>(n * 10)));
  }
}

}  // namespace

TEST(context, first_jump_calls_entry_with_the_data) {
  fixture fx(&counting_entry);
  g_fx = &fx;
  g_trace.clear();
  void* back = ctx::jump(&fx.main_ctx, fx.co_ctx, reinterpret_cast<void*>(std::intptr_t{7}));
  EXPECT_EQ(reinterpret_cast<std::intptr_t>(back), 70);
  EXPECT_EQ(g_trace, std::vector<int>({7}));
}

TEST(context, jumps_pass_data_both_ways_and_resume_in_order) {
  fixture fx(&counting_entry);
  g_fx = &fx;
  g_trace.clear();
  for (std::intptr_t i = 1; i <= 1000; ++i) {
    void* back = ctx::jump(&fx.main_ctx, fx.co_ctx, reinterpret_cast<void*>(i));
    ASSERT_EQ(reinterpret_cast<std::intptr_t>(back), i * 10);
  }
  ASSERT_EQ(g_trace.size(), 1000u);
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(g_trace[static_cast<std::size_t>(i)], i + 1);
}

namespace {

// Values live in callee-saved registers across a jump in both directions: the compiler
// must have saved whatever it keeps there (the jump declares them clobbered).
volatile int g_sink;
void register_pressure_entry(void*) {
  double d[12];
  long l[12];
  for (int i = 0; i < 12; ++i) {
    d[i] = i * 1.5;
    l[i] = i * 3;
  }
  while (true) {
    ctx::jump(&g_fx->co_ctx, g_fx->main_ctx, nullptr);
    for (int i = 0; i < 12; ++i) {
      d[i] += 1.0;
      l[i] += 1;
    }
    double ds = 0;
    long ls = 0;
    for (int i = 0; i < 12; ++i) {
      ds += d[i];
      ls += l[i];
    }
    g_sink = static_cast<int>(ds) + static_cast<int>(ls);
  }
}

}  // namespace

TEST(context, values_live_across_a_jump_survive) {
  fixture fx(&register_pressure_entry);
  g_fx = &fx;
  ctx::jump(&fx.main_ctx, fx.co_ctx, nullptr);
  double a = 0.25, b = 1e10, c = -3.5;
  long x = 11, y = 1L << 40, z = -7;
  for (int round = 1; round <= 100; ++round) {
    ctx::jump(&fx.main_ctx, fx.co_ctx, nullptr);
    a += 1;
    b -= 1;
    c *= 1.0;
    x += 2;
    y -= 2;
    z ^= 1;
    // The other side's sums after `round` increments of each of 12 values.
    const double ds = 99.0 + 12.0 * round;
    const long ls = 198 + 12L * round;
    ASSERT_EQ(g_sink, static_cast<int>(ds) + static_cast<int>(ls));
  }
  EXPECT_DOUBLE_EQ(a, 100.25);
  EXPECT_DOUBLE_EQ(b, 1e10 - 100);
  EXPECT_DOUBLE_EQ(c, -3.5);
  EXPECT_EQ(x, 211);
  EXPECT_EQ(y, (1L << 40) - 200);
  EXPECT_EQ(z, -7);
}

namespace {

std::uintptr_t g_sp_mod16 = 1;
void alignment_entry(void*) {
  // A 16-aligned local is where the compiler assumes it is: check the real address.
  alignas(16) char probe[16];
  g_sp_mod16 = reinterpret_cast<std::uintptr_t>(probe) % 16;
  ctx::jump(&g_fx->co_ctx, g_fx->main_ctx, nullptr);
  std::abort();
}

char g_text[128];
double g_scanned = 0;
void printf_entry(void*) {
  // Variadic calls with doubles need a correctly aligned stack (movaps on x86-64).
  std::snprintf(g_text, sizeof g_text, "%.3f %e %g", 3.14159, 2.5e-10, 1.0 / 3.0);
  std::sscanf("6.25e2", "%lf", &g_scanned);
  ctx::jump(&g_fx->co_ctx, g_fx->main_ctx, nullptr);
  std::abort();
}

}  // namespace

TEST(context, entry_runs_on_a_16_byte_aligned_stack) {
  fixture fx(&alignment_entry);
  g_fx = &fx;
  ctx::jump(&fx.main_ctx, fx.co_ctx, nullptr);
  EXPECT_EQ(g_sp_mod16, 0u);
}

TEST(context, doubles_through_snprintf_and_sscanf_on_a_made_stack) {
  fixture fx(&printf_entry);
  g_fx = &fx;
  ctx::jump(&fx.main_ctx, fx.co_ctx, nullptr);
  EXPECT_STREQ(g_text, "3.142 2.500000e-10 0.333333");
  EXPECT_DOUBLE_EQ(g_scanned, 625.0);
}

namespace {

void* g_ontop_stack_probe = nullptr;
void* ontop_fn(void* data) {
  int local = 0;
  g_ontop_stack_probe = &local;
  return reinterpret_cast<void*>(reinterpret_cast<std::intptr_t>(data) + 1);
}

void ontop_target_entry(void* data) {
  // data is the result of ontop_fn when the first jump in was an ontop
  auto v = reinterpret_cast<std::intptr_t>(data);
  while (true) {
    data = ctx::jump(&g_fx->co_ctx, g_fx->main_ctx, reinterpret_cast<void*>(v));
    v = reinterpret_cast<std::intptr_t>(data);
  }
}

}  // namespace

TEST(context, ontop_runs_the_function_on_the_target_stack_and_hands_over_its_result) {
  fixture fx(&ontop_target_entry);
  g_fx = &fx;
  // Into a made context: entry receives fn's result.
  void* back =
      ctx::ontop(&fx.main_ctx, fx.co_ctx, reinterpret_cast<void*>(std::intptr_t{41}), &ontop_fn);
  EXPECT_EQ(reinterpret_cast<std::intptr_t>(back), 42);
  auto* probe = static_cast<std::byte*>(g_ontop_stack_probe);
  EXPECT_TRUE(probe >= fx.s.base && probe < fx.s.top()) << "fn did not run on the target's stack";
  // Into a suspended context: its jump returns fn's result.
  back = ctx::ontop(&fx.main_ctx, fx.co_ctx, reinterpret_cast<void*>(std::intptr_t{99}), &ontop_fn);
  EXPECT_EQ(reinterpret_cast<std::intptr_t>(back), 100);
  probe = static_cast<std::byte*>(g_ontop_stack_probe);
  EXPECT_TRUE(probe >= fx.s.base && probe < fx.s.top());
}

#if TENDRIL_CONTEXT_ASM
extern "C" void tendril_context_trampoline();

TEST(context, made_frame_matches_the_shared_layout) {
  stack s;
  ASSERT_EQ(pool::allocate(32 * 1024, s), 0);
  auto entry = +[](void*) {};
  void* made = ctx::make(s.top() - 8, s.size - 8, entry);  // a misaligned top gets aligned down
  auto* f = static_cast<ctx::made_frame*>(made);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(made) % 16, 0u);
  EXPECT_LE(reinterpret_cast<std::byte*>(f + 1), s.top() - 8);
  EXPECT_EQ(ctx::frame_pointer(f->saved), 0u)
      << "the frame pointer chain must end in a new context";
  EXPECT_EQ(ctx::frame_resume_address(f->saved),
            reinterpret_cast<std::uintptr_t>(&tendril_context_trampoline));
  EXPECT_EQ(f->entry, reinterpret_cast<std::uintptr_t>(entry));
  EXPECT_EQ(f->pad, 0u);
  pool::release(s);
}
#endif
