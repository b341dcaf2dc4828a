// The thread pool behind tendril::offload(): OS threads that run blocking calls so that
// the hub's thread does not have to. One per process, shared by every hub; its threads start
// on demand, up to size() of them (default 10, as gevent's; TENDRIL_THREADPOOL_SIZE sets
// another), and wait for more work once started.
#ifndef TENDRIL_SRC_HUB_THREAD_POOL_HPP
#define TENDRIL_SRC_HUB_THREAD_POOL_HPP

#include <cstddef>

namespace tendril::detail {

// A unit of work. run() is called on a pool thread, once; it must not throw.
struct pool_job {
  void (*run)(pool_job* self) noexcept = nullptr;
  pool_job* next = nullptr;
};

namespace thread_pool {

// submit() queues a job; any thread. If no thread can be started and none is running, throws
// what starting one threw (std::system_error, std::bad_alloc) and the job is not queued.
void submit(pool_job& job);

// forget_after_fork() starts a forked child with an empty pool.
void forget_after_fork() noexcept;

// parse_size() reads TENDRIL_THREADPOOL_SIZE's value: a whole number from 1. Throws
// std::invalid_argument naming the variable and the value otherwise. The pool reads the
// variable when it is first used (by submit() or size()), which then throw that.
std::size_t parse_size(const char* text);

// workers() is the number of pool threads alive; on_worker() whether the caller is one.
std::size_t workers() noexcept;
bool on_worker() noexcept;

// size() / set_size() are the most threads the pool starts.
std::size_t size();
void set_size(std::size_t n);

}  // namespace thread_pool
}  // namespace tendril::detail

#endif
