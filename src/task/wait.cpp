#include "tendril/task/wait.hpp"

#include <algorithm>

namespace tendril {
namespace detail {

ready_collector::ready_collector(const std::vector<waitable_ref>& objects)
    : objects_(objects), watches_(new watch[objects.size()]) {
  ready_.reserve(objects_.size());
  for (std::size_t i = 0; i < objects_.size(); ++i) {
    watches_[i].obs.notify = &on_ready;
    watches_[i].owner = this;
    watches_[i].index = i;
  }
  // Observe after everything is in place: an object that is ready already notifies at once.
  // An object that refuses (a task or queue of another thread: wrong_thread) leaves none
  // watched: the destructor will not run, and an event set later would notify freed memory.
  std::size_t i = 0;
  try {
    for (; i < objects_.size(); ++i) objects_[i].observe(watches_[i].obs);
  } catch (...) {
    while (i > 0) {
      --i;
      unobserve(i);
    }
    throw;
  }
}

ready_collector::~ready_collector() {
  for (std::size_t i = 0; i < objects_.size(); ++i) unobserve(i);
}

void ready_collector::unobserve(std::size_t i) noexcept {
  // An object that notified may be gone already (set, then destroyed by the setter's
  // thread). The others are still watched, and alive until the wait returns by contract.
  if (let_go(watches_[i].obs)) return;
  objects_[i].unobserve(watches_[i].obs);
  // A set() of another thread that notified it meanwhile (before that lock was ours) still
  // writes it once unlocked: the watch may be freed only after.
  (void)let_go(watches_[i].obs);
}

void ready_collector::on_ready(observer* o) noexcept {
  auto* w = reinterpret_cast<watch*>(o);  // obs is the first member
  ready_collector* c = w->owner;
  std::lock_guard lock(c->mu_);
  c->ready_.push_back(w->index);  // never reallocates: reserved for every object
  if (c->sleeper_) {
    c->sleeper_->wake();
    c->sleeper_ = nullptr;
  }
}

waitable_ref ready_collector::hand_out(std::size_t i) noexcept {
  // The set() of another thread that notified it may still be inside, holding its lock; once
  // it is out, the caller may destroy the object. Not under mu_: that set() may be notifying
  // another watch of this collector (the same object passed twice).
  (void)let_go(watches_[i].obs);
  return objects_[i];
}

std::optional<waitable_ref> ready_collector::next_ready(std::int64_t deadline_ns) {
  while (true) {
    std::size_t index = objects_.size();  // none
    {
      std::lock_guard lock(mu_);
      if (handed_out_ < ready_.size()) {
        index = ready_[handed_out_++];
      } else if (handed_out_ == objects_.size()) {
        return std::nullopt;
      }
    }
    if (index != objects_.size()) return hand_out(index);
    waiter w(true);
    {
      std::lock_guard lock(mu_);
      if (handed_out_ < ready_.size()) continue;
      sleeper_ = &w;
    }
    bool woken = false;
    try {
      woken = w.wait(deadline_ns);
    } catch (...) {
      std::lock_guard lock(mu_);
      sleeper_ = nullptr;
      throw;
    }
    if (!woken) {
      {
        std::lock_guard lock(mu_);
        sleeper_ = nullptr;
        if (handed_out_ == ready_.size()) return std::nullopt;
        index = ready_[handed_out_++];
      }
      return hand_out(index);
    }
  }
}

}  // namespace detail

std::vector<waitable_ref> wait_deadline(const std::vector<waitable_ref>& objects, std::size_t count,
                                        std::int64_t deadline_ns) {
  count = std::min(count, objects.size());
  std::vector<waitable_ref> done;
  detail::ready_collector c(objects);
  while (done.size() < count) {
    std::optional<waitable_ref> r = c.next_ready(deadline_ns);
    if (!r) break;
    done.push_back(*r);
  }
  return done;
}

std::vector<waitable_ref> wait(const std::vector<waitable_ref>& objects, std::size_t count) {
  return wait_deadline(objects, count, detail::forever_ns);
}

}  // namespace tendril
