// The lab's load generator (L6): one thread, epoll, N connections in a closed loop (each
// sends a message of fixed size, waits for its whole echo, checks it, sends the next), a
// warm-up, then a measured window: messages per second, round-trip latency percentiles, and
// the server's CPU time per message read from /proc. With a rate, the connections are paced:
// the load is offered at that many messages per second in total, not as fast as the server
// answers, which is how a server's cost when it is not saturated is measured. `tendril load` runs
// it on its own; `tendril iomodels` runs it against each model.
#ifndef TENDRIL_LAB_LOAD_LOAD_GENERATOR_HPP
#define TENDRIL_LAB_LOAD_LOAD_GENERATOR_HPP

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace tendril::lab {

struct load_options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::size_t connections = 1;
  std::size_t message_size = 64;
  double warmup_s = 1.0;
  double seconds = 5.0;
  pid_t server_pid = 0;    // when set, its CPU time over the window is measured (/proc/PID/stat)
  bool upper_case = true;  // the echo comes back upper-cased (the lab's service); false: as sent
  // Messages per second offered over all connections. Each connection sends its next
  // message when it is due (one every connections / rate seconds, the connections spread
  // evenly over that interval) and never before its echo is back; one that falls more than
  // a catch-up window behind its schedule restarts it from now instead of sending a burst.
  // 0: closed loop, the next message as soon as the echo is back (the server saturated).
  double rate = 0;
};

struct load_result {
  std::size_t connected = 0;           // connections that were established
  std::size_t connect_failures = 0;    // connections that could not be (after the first)
  std::uint64_t messages = 0;          // completed in the measured window
  std::uint64_t messages_total = 0;    // completed over the whole run, warm-up included
  std::uint64_t bytes_sent_total = 0;  // every byte written, warm-up included
  double msgs_per_s = 0;
  double p50_us = 0, p99_us = 0, p999_us = 0, mean_us = 0, max_us = 0;
  double client_cpu_pct = 0;  // this thread's CPU over the window
  double server_cpu_s = 0;    // the server's CPU (all its threads) over the window
  double server_cpu_pct = 0;  // server_cpu_s over the window's length, in % of one CPU
  double server_cpu_us_per_msg = 0;
  // The server's threads and resident memory, read from /proc/PID/status at the end of the
  // window while every connection is still open (0 without server_pid).
  int server_threads = 0;
  std::uint64_t server_rss_kib = 0;
  std::uint64_t errors = 0;  // connections lost or echoes that did not match
  std::string error;         // non-empty: the run could not be made (why)
};

// run_load() makes one run. It never throws for the server's misbehaviour (that is counted
// in errors, or reported in error); it throws std::invalid_argument for bad options.
load_result run_load(const load_options& o);

}  // namespace tendril::lab

#endif
