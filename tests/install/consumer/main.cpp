// Uses the installed headers and library: a greenlet and a generator.
#include <tendril/tendril.hpp>

#include <cstdio>

int main() {
  int sum = 0;
  tendril::generator<int> numbers([](tendril::generator<int>::yielder& y) {
    for (int i = 1; i <= 4; ++i) y.yield(i);
  });
  for (int n : numbers) sum += n;
  tendril::greenlet g([&sum] { sum *= 10; });
  g.switch_to();
  std::printf("consumer: %d %s\n", sum, g.dead() ? "dead" : "alive");
  return sum == 100 && g.dead() ? 0 : 1;
}
