// tendril load: the lab's load generator (lab/load/) on its own, against any echo server:
// N connections in a closed loop (or paced at a total rate), a warm-up, a measured window,
// then key/value lines.
#include <cstdio>
#include <set>
#include <stdexcept>
#include <string>

#include "command.hpp"
#include "lab_args.hpp"
#include "load/load_generator.hpp"

namespace tendril::app {

int load(const args& a) {
  static const char* usage =
      "tendril load --port P [--host H] [--connections N] [--size B] [--seconds S] [--warmup S] "
      "[--rate MSGS_PER_S] [--server-pid PID] [--as-sent]";
  lab::load_options o;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const std::string& k = a[i];
    if (k == "--as-sent") {
      o.upper_case = false;
      continue;
    }
    static const std::set<std::string> with_value = {"--port", "--host",      "--connections",
                                                     "--size", "--seconds",   "--warmup",
                                                     "--rate", "--server-pid"};
    if (!with_value.contains(k)) throw usage_error("unknown argument '" + k + "' (" + usage + ")");
    if (i + 1 >= a.size()) throw usage_error(k + " needs a value (" + usage + ")");
    const std::string& v = a[++i];
    if (k == "--port") {
      o.port = static_cast<std::uint16_t>(parse_count(k, v, 1, 65535));
    } else if (k == "--host") {
      o.host = v;
    } else if (k == "--connections") {
      o.connections = parse_count(k, v, 1, 1'000'000);
    } else if (k == "--size") {
      o.message_size = parse_count(k, v, 1, 64 << 20);
    } else if (k == "--seconds") {
      o.seconds = parse_seconds(k, v, false);
    } else if (k == "--warmup") {
      o.warmup_s = parse_seconds(k, v, true);
    } else if (k == "--rate") {
      o.rate = parse_rate(k, v);
    } else if (k == "--server-pid") {
      o.server_pid = static_cast<pid_t>(parse_count(k, v, 1, 1 << 30));
    } else {
      throw usage_error("unknown argument '" + k + "' (" + usage + ")");
    }
  }
  if (o.port == 0) throw usage_error(std::string("--port is required (") + usage + ")");

  const lab::load_result r = lab::run_load(o);
  if (!r.error.empty()) {
    std::fprintf(stderr, "tendril load: %s\n", r.error.c_str());
    return 1;
  }
  std::printf("connections %zu\nconnected %zu\nconnect_failures %zu\nmessage_size %zu\n",
              o.connections, r.connected, r.connect_failures, o.message_size);
  std::printf("warmup_s %.3f\nseconds %.3f\n", o.warmup_s, o.seconds);
  if (o.rate > 0) std::printf("offered_msgs_per_s %.1f\n", o.rate);
  std::printf("messages %llu\nmsgs_per_s %.1f\n", static_cast<unsigned long long>(r.messages),
              r.msgs_per_s);
  std::printf("p50_us %.1f\np99_us %.1f\np999_us %.1f\nmean_us %.1f\nmax_us %.1f\n", r.p50_us,
              r.p99_us, r.p999_us, r.mean_us, r.max_us);
  std::printf("client_cpu_pct %.1f\n", r.client_cpu_pct);
  if (o.server_pid > 0) {
    std::printf("server_cpu_s %.3f\nserver_cpu_pct %.1f\nserver_cpu_us_per_msg %.2f\n",
                r.server_cpu_s, r.server_cpu_pct, r.server_cpu_us_per_msg);
    std::printf("server_threads %d\nserver_rss_mib %.1f\n", r.server_threads,
                static_cast<double>(r.server_rss_kib) / 1024.0);
  }
  std::printf("messages_total %llu\nbytes_sent_total %llu\nerrors %llu\n",
              static_cast<unsigned long long>(r.messages_total),
              static_cast<unsigned long long>(r.bytes_sent_total),
              static_cast<unsigned long long>(r.errors));
  return r.errors == 0 && r.connect_failures == 0 && r.messages > 0 ? 0 : 1;
}

}  // namespace tendril::app
