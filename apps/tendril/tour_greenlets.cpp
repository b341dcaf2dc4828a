// The tour's first part: the seed's generator and greenlet examples.
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "tendril/tendril.hpp"
#include "tour.hpp"

namespace tendril::app {
namespace {

using clock_type = std::chrono::steady_clock;

double since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// The seed's producer and consumer: the consumer is a generator that receives each item
// with send() and answers through its next yield. `pause` is the consumer's blocking work.
void produce_and_consume(const tour_options& o, double pause_s) {
  generator<std::string, int> consumer([&o, pause_s](generator<std::string, int>::yielder& y) {
    int n = y.yield("");
    while (n != 0) {
      std::printf("[consumer] consuming %d\n", n);
      if (pause_s > 0) std::this_thread::sleep_for(o.seconds(pause_s));  // blocks the thread
      n = y.yield("200 OK");
    }
  });
  auto t0 = clock_type::now();
  consumer.next();  // run the consumer to its first yield
  for (int n = 1; n <= 3; ++n) {
    std::printf("[producer] producing %d\n", n);
    std::optional<std::string> r = consumer.send(n);
    std::printf("[producer] consumer returned: %s\n", r ? r->c_str() : "(ended)");
  }
  consumer.send(0);  // tells the consumer to end
  std::printf("time taken: %.3f s\n", since(t0));
}

}  // namespace

void tour_generators(const tour_options& o) {
  heading("1. generators: two functions taking turns with yield");
  generator<int> a([](generator<int>::yielder& y) {
    std::printf("1\n");
    y.yield(1);
    std::printf("3\n");
    y.yield(3);
  });
  generator<int> b([](generator<int>::yielder& y) {
    std::printf("2\n");
    y.yield(2);
    std::printf("4\n");
    y.yield(4);
  });
  while (a.next() && b.next()) {
  }

  heading("2. generators: producer and consumer with send()");
  produce_and_consume(o, 0);

  heading("3. the same, with a 2 s blocking sleep in the consumer");
  std::printf("(switching between generators does not overlap blocking I/O: the sleeps add up)\n");
  produce_and_consume(o, 2.0);
}

void tour_greenlets(const tour_options&) {
  heading("4. greenlets: explicit switching");
  greenlet gr1;
  greenlet gr2;
  gr1 = greenlet([&] {
    std::printf("1\n");
    gr2.switch_to();
    std::printf("3\n");
    gr2.switch_to();
  });
  gr2 = greenlet([&] {
    std::printf("2\n");
    gr1.switch_to();
    std::printf("4\n");
  });
  gr1.switch_to();
}

}  // namespace tendril::app
