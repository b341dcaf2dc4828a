// The cost of the hooks (issue 5), each beside libc's own call in the same run:
//   read      a hooked read() of one byte from a socket that already has data, inside a
//             greenlet, against libc's read() found with dlsym(RTLD_NEXT) on the same socket;
//   outside   a hooked read() made on a thread without a hub (the hook is a pass-through);
//   curl      N concurrent libcurl GETs of pages that answer after 1 s, under the hooks,
//             and a few of them one after the other without the hooks (each takes 1 s; the
//             unpatched time for N is N times that).
// Prints "key value" lines; rounds interleave the variants and the figures are medians.
//   monkey_bench [ROUNDS=7] [CURL_N=100]
#include <curl/curl.h>
#include <dlfcn.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "slow_http.hpp"
#include "tendril/monkey/monkey.hpp"
#include "tendril/tendril.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
using read_fn = ssize_t (*)(int, void*, size_t);

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Times `reads` one-byte reads with f from a socket refilled before each batch (the refill
// is not timed). ns per read.
double time_reads(read_fn f, int rd, int wr, std::size_t reads) {
  constexpr std::size_t batch = 16384;
  static char fill[batch];
  double total_ns = 0;
  for (std::size_t done = 0; done < reads; done += batch) {
    if (::send(wr, fill, batch, 0) != static_cast<ssize_t>(batch)) std::abort();
    char c;
    const auto t0 = clock_type::now();
    for (std::size_t i = 0; i < batch; ++i) {
      if (f(rd, &c, 1) != 1) std::abort();
    }
    total_ns += std::chrono::duration<double, std::nano>(clock_type::now() - t0).count();
  }
  return total_ns / static_cast<double>(reads);
}

std::size_t discard(char*, std::size_t size, std::size_t n, void*) { return size * n; }

void get(const std::string& url) {
  CURL* c = curl_easy_init();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &discard);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  if (curl_easy_perform(c) != CURLE_OK) std::abort();
  curl_easy_cleanup(c);
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 7;
  const int curl_n = argc > 2 ? std::atoi(argv[2]) : 100;
  const auto libc_read = reinterpret_cast<read_fn>(dlsym(RTLD_NEXT, "read"));
  if (libc_read == nullptr) return 1;
  curl_global_init(CURL_GLOBAL_DEFAULT);

  // Unpatched curl first: patch_all() cannot be undone.
  tendril::demo::slow_http_server server(std::chrono::milliseconds(1000));
  const int serial = 3;
  const auto u0 = clock_type::now();
  for (int i = 0; i < serial; ++i) get(server.url("/unpatched/" + std::to_string(i)));
  const double unpatched_each =
      std::chrono::duration<double>(clock_type::now() - u0).count() / serial;

  tendril::monkey::patch_all();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return 1;
  int big = 1 << 20;
  setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
  setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  constexpr std::size_t reads = 16384 * 32;
  std::vector<double> libc_ns, hooked_ns, outside_ns, outside_libc_ns, ratio_in, ratio_out;
  for (int r = 0; r < rounds; ++r) {
    double l = 0, h = 0;
    tendril::spawn([&] {
      l = time_reads(libc_read, sv[0], sv[1], reads);
      h = time_reads(&::read, sv[0], sv[1], reads);
    }).join();
    double ol = 0, oh = 0;
    std::thread([&] {  // no hub on this thread: the hook passes through
      ol = time_reads(libc_read, sv[0], sv[1], reads);
      oh = time_reads(&::read, sv[0], sv[1], reads);
    })
        .join();
    libc_ns.push_back(l);
    hooked_ns.push_back(h);
    outside_libc_ns.push_back(ol);
    outside_ns.push_back(oh);
    ratio_in.push_back(h / l);
    ratio_out.push_back(oh / ol);
  }
  std::printf("read_libc_ns %.1f\nread_hooked_ns %.1f\nread_hooked_ratio %.3f\n", median(libc_ns),
              median(hooked_ns), median(ratio_in));
  std::printf("outside_libc_ns %.1f\noutside_hooked_ns %.1f\noutside_hooked_ratio %.3f\n",
              median(outside_libc_ns), median(outside_ns), median(ratio_out));

  std::vector<double> walls;
  for (int r = 0; r < std::max(1, rounds / 2); ++r) {
    std::vector<tendril::task<void>> ts;
    const auto t0 = clock_type::now();
    for (int i = 0; i < curl_n; ++i) {
      ts.push_back(tendril::spawn([&, i] { get(server.url("/patched/" + std::to_string(i))); }));
    }
    tendril::joinall(ts);
    walls.push_back(std::chrono::duration<double>(clock_type::now() - t0).count());
  }
  std::printf(
      "curl_n %d\ncurl_patched_wall_s %.3f\ncurl_unpatched_each_s %.3f\ncurl_unpatched_wall_s_est "
      "%.1f\n",
      curl_n, median(walls), unpatched_each, unpatched_each * curl_n);
}
