// libcurl's easy interface under the hooks: unmodified blocking fetches in greenlets run
// concurrently (50 fetches of pages that answer after 1 s take about the time of one),
// CURLOPT_TIMEOUT_MS is honoured, a reset is reported as curl's error, and a fetch in a
// thread without a hub is libcurl's own blocking call.
#include <curl/curl.h>
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "slow_http.hpp"
#include "tendril/monkey/monkey.hpp"
#include "tendril/tendril.hpp"

using namespace std::chrono_literals;
using tendril::spawn;

namespace {

struct fetch_result {
  CURLcode code = CURLE_OK;
  long status = 0;
  std::string body;
};

std::size_t append(char* p, std::size_t size, std::size_t n, void* out) {
  static_cast<std::string*>(out)->append(p, size * n);
  return size * n;
}

fetch_result fetch(const std::string& url, long timeout_ms = 0) {
  fetch_result r;
  CURL* c = curl_easy_init();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &append);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  if (timeout_ms > 0) curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
  r.code = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  curl_easy_cleanup(c);
  return r;
}

class curl_hooked : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    tendril::monkey::patch_all();
  }
};

}  // namespace

TEST_F(curl_hooked, fifty_fetches_of_one_second_pages_take_about_one_second) {
  tendril::demo::slow_http_server server(1000ms);
  constexpr int n = 50;
  std::vector<fetch_result> results(n);
  std::vector<tendril::task<void>> tasks;
  int ticks = 0;
  bool done = false;
  auto ticker = spawn([&] {
    while (!done) {
      ++ticks;
      tendril::sleep(50ms);
    }
  });
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) {
    tasks.push_back(
        spawn([&, i] { results[i] = fetch(server.url("/page/" + std::to_string(i))); }));
  }
  tendril::joinall(tasks);
  const auto took = std::chrono::steady_clock::now() - start;
  done = true;
  ticker.join();
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(results[i].code, CURLE_OK) << curl_easy_strerror(results[i].code);
    EXPECT_EQ(results[i].status, 200);
    EXPECT_NE(results[i].body.find("/page/" + std::to_string(i)), std::string::npos);
  }
  EXPECT_GE(took, 1s);
  EXPECT_LT(took, 10s);  // one after the other would take 50 s
  EXPECT_GE(ticks, 5);   // the hub kept running other greenlets meanwhile
  EXPECT_EQ(server.requests(), static_cast<std::uint64_t>(n));
}

TEST_F(curl_hooked, the_transfer_time_limit_is_honoured) {
  tendril::demo::slow_http_server server(0ms);
  fetch_result r;
  auto t = spawn([&] { r = fetch(server.url("/delay/30000/slow"), 300); });
  const auto start = std::chrono::steady_clock::now();
  t.join();
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(r.code, CURLE_OPERATION_TIMEDOUT) << curl_easy_strerror(r.code);
  EXPECT_GE(took, 250ms);
  EXPECT_LT(took, 20s);
}

TEST_F(curl_hooked, a_reset_is_reported_as_an_error) {
  tendril::demo::slow_http_server server(0ms);
  fetch_result r;
  auto t = spawn([&] { r = fetch(server.url("/reset")); });
  t.join();
  EXPECT_TRUE(r.code == CURLE_RECV_ERROR || r.code == CURLE_GOT_NOTHING)
      << curl_easy_strerror(r.code);
}

TEST_F(curl_hooked, a_refused_connection_is_reported_as_couldnt_connect) {
  std::uint16_t port;
  {
    tendril::demo::slow_http_server gone(0ms);
    port = gone.port();
  }
  fetch_result r;
  auto t = spawn([&] { r = fetch("http://127.0.0.1:" + std::to_string(port) + "/"); });
  t.join();
  EXPECT_EQ(r.code, CURLE_COULDNT_CONNECT) << curl_easy_strerror(r.code);
}

TEST_F(curl_hooked, a_thread_without_a_hub_fetches_with_plain_libcurl) {
  tendril::demo::slow_http_server server(0ms);
  fetch_result r;
  std::thread th([&] { r = fetch(server.url("/size/100000")); });
  th.join();
  EXPECT_EQ(r.code, CURLE_OK);
  EXPECT_EQ(r.body.size(), 100000u);
}

TEST_F(curl_hooked, large_bodies_arrive_whole) {
  tendril::demo::slow_http_server server(0ms);
  std::vector<fetch_result> rs(4);
  std::vector<tendril::task<void>> ts;
  for (int i = 0; i < 4; ++i)
    ts.push_back(spawn([&, i] { rs[i] = fetch(server.url("/size/4000000")); }));
  tendril::joinall(ts);
  for (auto& r : rs) {
    EXPECT_EQ(r.code, CURLE_OK);
    EXPECT_EQ(r.body.size(), 4000000u);
  }
}
