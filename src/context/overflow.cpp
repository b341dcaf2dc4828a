#include "context/overflow.hpp"

#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace tendril::detail::overflow {
namespace {

std::atomic<describe_fn> g_describe{nullptr};
struct sigaction g_prev_segv;
struct sigaction g_prev_bus;

void write_all(const char* s) noexcept {
  std::size_t n = std::strlen(s);
  while (n > 0) {
    ssize_t w = ::write(STDERR_FILENO, s, n);
    if (w <= 0) return;
    s += w;
    n -= static_cast<std::size_t>(w);
  }
}

void restore_default(int sig) noexcept {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, nullptr);
}

// Passes the signal on as if the handler installed before tendril's had received it. `sent`:
// raised by raise(), kill() or sigqueue() rather than by a fault, so returning does not bring
// it back.
void chain(int sig, siginfo_t* info, void* uctx, bool sent) noexcept {
  const struct sigaction& prev = sig == SIGSEGV ? g_prev_segv : g_prev_bus;
  // sa_handler and sa_sigaction share their storage: SIG_DFL and SIG_IGN are what they are
  // whatever SA_SIGINFO says (SIG_IGN with SA_SIGINFO was called, at address 1).
  const bool has_function = prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN;
  if (has_function) {
    // As the kernel runs it: its sa_mask (and the signal itself, unless SA_NODEFER) blocked
    // meanwhile, and the default action back first under SA_RESETHAND, which a crash logger
    // counts on to end the process when the fault comes again.
    sigset_t mask = prev.sa_mask;
    if (!(prev.sa_flags & SA_NODEFER)) sigaddset(&mask, sig);
    sigset_t old;
    pthread_sigmask(SIG_BLOCK, &mask, &old);
    if (prev.sa_flags & SA_RESETHAND) restore_default(sig);
    if (prev.sa_flags & SA_SIGINFO) {
      prev.sa_sigaction(sig, info, uctx);
    } else {
      prev.sa_handler(sig);
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return;
  }
  if (sent && prev.sa_handler == SIG_IGN) return;
  // Default action: restore it. A fault then happens again when the handler returns, and the
  // process ends the way it would have without tendril (core dump included); a sent signal
  // does not, so it is sent again.
  restore_default(sig);
  if (sent) raise(sig);
}

void on_fault(int sig, siginfo_t* info, void* uctx) {
  // si_code <= 0: SI_USER, SI_QUEUE, SI_TKILL...; si_addr is then not an address.
  const bool sent = info->si_code <= 0;
  char name[160];
  describe_fn describe = g_describe.load(std::memory_order_acquire);
  if (!sent && describe && describe(info->si_addr, name, sizeof name)) report_stack_overflow(name);
  chain(sig, info, uctx, sent);
}

struct alt_stack {
  void* mem = nullptr;
  std::size_t size = 0;
  ~alt_stack() {
    if (!mem) return;
    stack_t none{};
    none.ss_flags = SS_DISABLE;
    sigaltstack(&none, nullptr);
    munmap(mem, size);
  }
};

}  // namespace

void report_stack_overflow(const char* greenlet_name) noexcept {
  write_all("tendril: stack overflow in greenlet '");
  write_all(greenlet_name);
  write_all("'\n");
  std::abort();
}

void install(describe_fn describe) noexcept {
  static std::once_flag once;
  std::call_once(once, [describe] {
    g_describe.store(describe, std::memory_order_release);
    struct sigaction sa {};
    sa.sa_sigaction = &on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_prev_segv);
    sigaction(SIGBUS, &sa, &g_prev_bus);
  });
}

void ensure_signal_stack() noexcept {
  thread_local alt_stack mine;
  if (mine.mem) return;
  stack_t current{};
  if (sigaltstack(nullptr, &current) == 0 && !(current.ss_flags & SS_DISABLE)) return;
  long min = sysconf(_SC_SIGSTKSZ);
  std::size_t size = std::max<std::size_t>(min > 0 ? static_cast<std::size_t>(min) : 0, 64 * 1024);
  void* mem = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return;  // no report then, but no harm either
  stack_t ss{};
  ss.ss_sp = mem;
  ss.ss_size = size;
  if (sigaltstack(&ss, nullptr) != 0) {
    munmap(mem, size);
    return;
  }
  mine.mem = mem;
  mine.size = size;
}

}  // namespace tendril::detail::overflow
