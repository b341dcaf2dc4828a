// tendril crawl [--timeout S] [URL...]: the seed's crawler. With no URL, it crawls pages of a
// local server that answer after a delay (apps/demo/slow_http), so that it runs anywhere.
#include "crawl.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "command.hpp"
#include "slow_http.hpp"
#include "tendril/monkey/monkey.hpp"
#include "tendril/tendril.hpp"

namespace tendril::app {
namespace {

std::size_t count_bytes(char*, std::size_t size, std::size_t n, void* total) {
  *static_cast<std::size_t*>(total) += size * n;
  return size * n;
}

// One fetch with libcurl's blocking easy interface: nothing here knows about greenlets.
crawl_result fetch(const std::string& url, long timeout_ms) {
  crawl_result r;
  r.url = url;
  CURL* c = curl_easy_init();
  if (c == nullptr) {
    r.error = "curl_easy_init failed";
    return r;
  }
  char err[CURL_ERROR_SIZE] = "";
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &count_bytes);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &r.bytes);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, err);
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "tendril-crawl");
  if (timeout_ms > 0) curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
  const CURLcode rc = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
  r.ok = rc == CURLE_OK;
  if (!r.ok) r.error = err[0] ? err : curl_easy_strerror(rc);
  curl_easy_cleanup(c);
  return r;
}

void print_result(const crawl_result& r) {
  if (r.ok) {
    std::printf("%s: %ld, %zu bytes\n", r.url.c_str(), r.status, r.bytes);
  } else {
    std::printf("%s: failed: %s\n", r.url.c_str(), r.error.c_str());
  }
  std::fflush(stdout);
}

}  // namespace

std::vector<crawl_result> crawl(const std::vector<std::string>& urls, long timeout_ms) {
  static std::once_flag curl_once;
  std::call_once(curl_once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
      throw std::runtime_error("curl_global_init failed");
  });
  monkey::patch_all();
  std::vector<task<crawl_result>> tasks;
  tasks.reserve(urls.size());
  for (const auto& url : urls) {
    tasks.push_back(spawn([url, timeout_ms] {
      std::printf("GET: %s\n", url.c_str());
      std::fflush(stdout);
      crawl_result r = fetch(url, timeout_ms);
      print_result(r);
      return r;
    }));
  }
  joinall(tasks);
  std::vector<crawl_result> out;
  out.reserve(tasks.size());
  for (auto& t : tasks) out.push_back(t.get());
  return out;
}

int crawl_command(const args& a) {
  std::vector<std::string> urls;
  long timeout_ms = 30'000;
  static const char* usage = "tendril crawl [--timeout S] [URL...]";
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i] == "--timeout") {
      if (i + 1 >= a.size())
        throw usage_error("--timeout needs a value (" + std::string(usage) + ")");
      char* end = nullptr;
      const double s = std::strtod(a[++i].c_str(), &end);
      if (end == a[i].c_str() || *end != '\0' || !(s > 0) || s > 86400) {
        throw usage_error("--timeout wants seconds, more than 0 and at most 86400: '" + a[i] + "'");
      }
      // At least 1 ms: 0 would mean no limit to libcurl (fetch() sets none).
      timeout_ms = std::max(1L, std::lround(s * 1000));
    } else if (!a[i].empty() && a[i][0] == '-') {
      throw usage_error("unknown option '" + a[i] + "' (" + usage + ")");
    } else {
      urls.push_back(a[i]);
    }
  }
  std::unique_ptr<demo::slow_http_server> local;
  if (urls.empty()) {
    local = std::make_unique<demo::slow_http_server>(std::chrono::milliseconds(1000));
    std::printf("no URL given: crawling a local server whose pages answer after 1 s\n");
    for (const char* p : {"/python", "/yahoo", "/github", "/gevent", "/greenlet"})
      urls.push_back(local->url(p));
  }
  const auto t0 = std::chrono::steady_clock::now();
  const auto results = crawl(urls, timeout_ms);
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::size_t failed = 0;
  for (const auto& r : results) failed += r.ok ? 0 : 1;
  std::printf("%zu URLs in %.2f s (%zu failed)\n", results.size(), elapsed, failed);
  return failed == 0 ? 0 : 1;
}

}  // namespace tendril::app
