// Synchronisation objects that must end the process, each in a child process: one destroyed
// while greenlets wait in it says so, naming its type and how many wait, and aborts.
#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
#include <string>
#include <thread>

#include "death_fixture.hpp"
#include "tendril/sync/async_result.hpp"
#include "tendril/sync/event.hpp"
#include "tendril/sync/mutex.hpp"
#include "tendril/sync/queue.hpp"
#include "tendril/sync/semaphore.hpp"
#include "tendril/task/sleep.hpp"
#include "tendril/task/task.hpp"
#include "tendril/task/wait.hpp"

using namespace std::chrono_literals;

namespace {

class sync_death : public tendril::test::death_fixture {};

// Spawns f, lets it block, then destroys *obj.
template <class T, class F>
void destroy_while_waited(T* obj, F f, int waiters = 1) {
  for (int i = 0; i < waiters; ++i) tendril::spawn([obj, f] { f(*obj); });
  tendril::sleep(1ms);
  delete obj;
}

}  // namespace

// The destructors were defaulted: the waiters, once their time ran out, unlinked themselves
// from the freed object (a heap-use-after-free), or waited for ever without a word.
TEST_F(sync_death, an_event_destroyed_while_greenlets_wait_in_it_stops_the_process_naming_it) {
  EXPECT_DEATH(destroy_while_waited(
                   new tendril::event, [](tendril::event& e) { e.wait_for(100ms); }, 2),
               "tendril: a tendril::event destroyed while 2 greenlets wait in it");
  EXPECT_DEATH(
      destroy_while_waited(new tendril::event, [](tendril::event& e) { tendril::wait({e}, 1); }),
      "tendril: a tendril::event destroyed while 1 greenlet waits in it");
}

TEST_F(sync_death, every_sync_object_destroyed_while_a_greenlet_waits_in_it_stops_the_process) {
  EXPECT_DEATH(
      destroy_while_waited(new tendril::semaphore(0), [](tendril::semaphore& s) { s.acquire(); }),
      "tendril: a tendril::semaphore destroyed while 1 greenlet waits in it");
  EXPECT_DEATH(destroy_while_waited(new tendril::bounded_semaphore(0),
                                    [](tendril::bounded_semaphore& s) { s.acquire(); }),
               "tendril: a tendril::bounded_semaphore destroyed while 1 greenlet waits in it");
  EXPECT_DEATH(
      {
        auto* m = new tendril::mutex;
        m->lock();
        destroy_while_waited(m, [](tendril::mutex& mu) { mu.lock(); });
      },
      "tendril: a tendril::mutex destroyed while 1 greenlet waits in it");
  EXPECT_DEATH(
      {
        tendril::mutex m;
        destroy_while_waited(new tendril::condition_variable,
                             [&m](tendril::condition_variable& cv) {
                               std::unique_lock lock(m);
                               cv.wait(lock);
                             });
      },
      "tendril: a tendril::condition_variable destroyed while 1 greenlet waits in it");
  EXPECT_DEATH(destroy_while_waited(new tendril::async_result<int>,
                                    [](tendril::async_result<int>& r) { r.get(); }),
               "tendril: a tendril::async_result destroyed while 1 greenlet waits in it");
  EXPECT_DEATH(
      destroy_while_waited(new tendril::queue<int>, [](tendril::queue<int>& q) { q.get(); }),
      "tendril: a tendril::queue destroyed while 1 greenlet waits in it");
  EXPECT_DEATH(
      destroy_while_waited(new tendril::channel<int>, [](tendril::channel<int>& c) { c.put(1); }),
      "tendril: a tendril::channel destroyed while 1 greenlet waits in it");
  EXPECT_DEATH(
      {
        auto* q = new tendril::joinable_queue<int>;
        q->put(1);
        destroy_while_waited(q, [](tendril::joinable_queue<int>& jq) { jq.join(); });
      },
      "tendril: a tendril::joinable_queue destroyed while 1 greenlet waits in it");
}

// The getters that set() woke read the value from the result when they resumed: one
// destroyed before they ran (by the greenlet that set it, or by another thread that set it
// while theirs was held up) was read after it was freed.
TEST_F(sync_death, an_async_result_destroyed_before_the_getters_it_woke_took_its_value_stops) {
  EXPECT_DEATH(
      {
        auto* r = new tendril::async_result<std::string>;
        for (int i = 0; i < 2; ++i) tendril::spawn([r] { r->get(); });
        tendril::spawn([r] { r->wait(); });  // not a getter: not counted
        tendril::sleep(1ms);
        r->set("gone");
        delete r;
      },
      "tendril: a tendril::async_result destroyed while 2 greenlets it woke have yet to take "
      "its value");
  EXPECT_DEATH(
      {
        auto* r = new tendril::async_result<void>;
        tendril::spawn([r] { r->get_for(1h); });
        tendril::sleep(1ms);
        std::thread setter([r] {
          r->set();
          delete r;
        });
        setter.join();  // blocks this thread: the getter has not run
      },
      "tendril: a tendril::async_result destroyed while 1 greenlet it woke has yet to take its "
      "value");
}

// A mutex destroyed while held was freed under its holder, whose unlock() (or the resumption
// of the waiter that unlock() handed it to) then wrote to freed memory; the destructor saw no
// waiter and said nothing.
TEST_F(sync_death, a_mutex_destroyed_while_held_stops_the_process_naming_its_holder) {
  EXPECT_DEATH(
      {
        auto* m = new tendril::mutex;
        m->lock();
        delete m;
      },
      "tendril: greenlet 'main' destroyed a tendril::mutex that it holds");
  EXPECT_DEATH(
      {
        auto* m = new tendril::mutex;
        tendril::spawn([m] {
          std::lock_guard lock(*m);
          tendril::sleep(1h);
        });
        tendril::sleep(1ms);
        delete m;
      },
      "tendril: a tendril::mutex destroyed while greenlet [0-9]+ \\(this_greenlet::get_id\\(\\)\\) "
      "holds it");
  EXPECT_DEATH(
      {
        auto* m = new tendril::mutex;
        m->lock();
        tendril::spawn([m] {
          m->lock();
          m->unlock();
        });
        tendril::sleep(1ms);
        m->unlock();  // handed to the waiter, which has yet to run
        delete m;
      },
      "tendril: a tendril::mutex destroyed while greenlet [0-9]+ \\(this_greenlet::get_id\\(\\)\\) "
      "holds it");
}
