#include "tendril/task/offload.hpp"

#include <mutex>
#include <new>

#include "hub/hub_impl.hpp"
#include "hub/thread_pool.hpp"
#include "tendril/sync/waiter.hpp"

namespace tendril::detail {

// The state kept in offload_job::impl_: placed there so that the header needs no private
// types.
struct offload_state {
  pool_job node;
  offload_job* job;
  std::mutex mu;
  waiter* w = nullptr;  // null once the waiting side gave up
  bool done = false;
};
static_assert(sizeof(offload_state) <= 128, "offload_state does not fit in offload_job::impl_");

struct offload_access {
  static offload_state* state(offload_job* j) { return reinterpret_cast<offload_state*>(j->impl_); }
};

namespace {

// Runs on a pool thread.
void run_job(pool_job* node) noexcept {
  auto* st = reinterpret_cast<offload_state*>(node);  // node is the first member
  offload_job* job = st->job;
  job->call();
  {
    std::lock_guard lock(st->mu);
    st->done = true;
    if (st->w) st->w->wake();
  }
  job->release();
}

}  // namespace

void offload_job::release() noexcept {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    offload_access::state(this)->~offload_state();
    delete this;
  }
}

void offload_job::run_and_wait(offload_job* job) {
  // On the hub itself the wait is refused: refuse before the call is queued, or it would run
  // after its caller was told it failed.
  if (hub_impl* h = hub_impl::peek(); h != nullptr && h->running_in_hub()) {
    delete job;
    h->refuse_on_hub();
  }
  auto* st = new (job->impl_) offload_state;
  st->job = job;
  st->node.run = &run_job;
  if (thread_pool::on_worker()) {
    // A pool thread that waited for the pool could wait for itself (every thread busy the
    // same way): as gevent does, the call runs here (nested offload(), resolve(), files).
    job->call();
    job->release();  // the pool side's reference
    return;
  }
  auto give_up = [&] {
    st->~offload_state();
    delete job;
  };
  hub_impl* made = nullptr;
  try {
    made = &hub_impl::current();  // may make the hub, which may throw (no backend, memory)
  } catch (...) {
    give_up();
    throw;
  }
  hub_impl& hub = *made;
  waiter w(true);
  st->w = &w;
  try {
    thread_pool::submit(st->node);
  } catch (...) {
    give_up();
    throw;
  }
  hub.add_pool_jobs(1);
  struct account {
    hub_impl& h;
    ~account() { h.add_pool_jobs(-1); }
  } counted{hub};
  try {
    w.wait();
  } catch (...) {
    // Stop waiting; the call finishes on its own and drops the last reference.
    {
      std::lock_guard lock(st->mu);
      st->w = nullptr;
    }
    job->release();
    throw;
  }
  std::lock_guard lock(st->mu);
  st->w = nullptr;
}

}  // namespace tendril::detail
