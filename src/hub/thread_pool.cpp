#include "hub/thread_pool.hpp"

#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>

namespace tendril::detail::thread_pool {
namespace {

thread_local bool t_on_worker = false;

struct pool {
  std::mutex mu;
  std::condition_variable work;
  pool_job* head = nullptr;
  pool_job* tail = nullptr;
  std::size_t idle = 0;    // workers waiting for a job
  std::size_t queued = 0;  // jobs in the list, not yet taken by a worker
  std::size_t limit = 10;
  std::atomic<std::size_t> alive{0};

  pool() {
    const char* s = std::getenv("TENDRIL_THREADPOOL_SIZE");
    if (s != nullptr && *s != '\0') limit = parse_size(s);
  }

  void worker() {
    t_on_worker = true;
    pthread_setname_np(pthread_self(), "tendril-pool");
    std::unique_lock lock(mu);
    while (true) {
      ++idle;
      work.wait(lock, [this] { return head != nullptr; });
      --idle;
      pool_job* job = head;
      --queued;
      head = job->next;
      if (head == nullptr) tail = nullptr;
      lock.unlock();
      job->run(job);  // may free job: not touched again
      lock.lock();
    }
  }
};

std::atomic<pool*> g_pool{nullptr};

pool& the_pool() {
  pool* p = g_pool.load(std::memory_order_acquire);
  if (p != nullptr) return *p;  // never destroyed: workers run until the process ends
  auto* fresh = new pool;       // throws for a bad TENDRIL_THREADPOOL_SIZE, and again next time
  if (g_pool.compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) return *fresh;
  delete fresh;  // another thread made it first (no thread was started for ours)
  return *p;
}

}  // namespace

void submit(pool_job& job) {
  pool& p = the_pool();
  std::unique_lock lock(p.mu);
  // One idle worker per queued job: several jobs submitted before an idle worker wakes all
  // see it idle, and each but the first needs another worker (within the limit). The thread
  // starts before the job is linked: if starting throws (std::system_error, or std::bad_alloc
  // from std::thread's own allocation), a job that no thread would ever run is not left behind
  // for the caller to free.
  if (p.queued + 1 > p.idle && p.alive.load() < p.limit) {
    try {
      std::thread([&p] { p.worker(); }).detach();
      p.alive.fetch_add(1);
    } catch (...) {
      if (p.alive.load() == 0) throw;
      // Some threads run: the job waits for one of them.
    }
  }
  job.next = nullptr;
  if (p.tail) {
    p.tail->next = &job;
  } else {
    p.head = &job;
  }
  p.tail = &job;
  ++p.queued;
  lock.unlock();
  p.work.notify_one();
}

std::size_t workers() noexcept {
  pool* p = g_pool.load(std::memory_order_acquire);
  return p != nullptr ? p->alive.load() : 0;
}

bool on_worker() noexcept { return t_on_worker; }

void forget_after_fork() noexcept {
  // The child has none of the parent's threads, and its copy of the pool's lock may be held:
  // it makes a fresh pool on first use (the old one is abandoned).
  g_pool.store(nullptr, std::memory_order_release);
}

std::size_t parse_size(const char* text) {
  // Digits only, at least one thread, no overflow: atol() read "4x" as 4 and "abc" as 0.
  std::size_t n = 0;
  bool ok = *text != '\0';
  for (const char* p = text; ok && *p != '\0'; ++p) {
    ok = *p >= '0' && *p <= '9' && n <= (std::numeric_limits<std::size_t>::max() - 9) / 10;
    n = n * 10 + static_cast<std::size_t>(*p - '0');
  }
  if (!ok || n == 0) {
    throw std::invalid_argument(std::string("tendril: TENDRIL_THREADPOOL_SIZE='") + text +
                                "' is not a number of threads (a whole number from 1)");
  }
  return n;
}

std::size_t size() {
  pool& p = the_pool();
  std::lock_guard lock(p.mu);
  return p.limit;
}

void set_size(std::size_t n) {
  if (n == 0) throw std::invalid_argument("tendril: the thread pool needs at least one thread");
  pool& p = the_pool();
  std::lock_guard lock(p.mu);
  p.limit = n;
}

}  // namespace tendril::detail::thread_pool
