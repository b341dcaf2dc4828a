// The seed's crawler: URLs fetched concurrently, one greenlet each, with libcurl's plain
// blocking easy interface made cooperative by the hooks.
#ifndef TENDRIL_APPS_TENDRIL_CRAWL_HPP
#define TENDRIL_APPS_TENDRIL_CRAWL_HPP

#include <string>
#include <vector>

namespace tendril::app {

struct crawl_result {
  std::string url;
  bool ok = false;
  long status = 0;
  std::size_t bytes = 0;
  std::string error;  // curl's message when !ok
};

// crawl() patches the hooks in, fetches every URL on a greenlet of its own (each printing
// "GET: url" when it starts and "url: status, N bytes" when done, as the seed's crawler
// does) and returns the results in the order given. timeout_ms limits each fetch (0: none).
std::vector<crawl_result> crawl(const std::vector<std::string>& urls, long timeout_ms);

}  // namespace tendril::app

#endif
