// The report of `tendril iomodels`: the table for the terminal, the same table in Markdown
// with the machine and the date, and a hand-written SVG chart (two panels: messages per
// second, and the server's CPU per message, against connections on a log axis).
#ifndef TENDRIL_APPS_TENDRIL_IOMODELS_REPORT_HPP
#define TENDRIL_APPS_TENDRIL_IOMODELS_REPORT_HPP

#include <cstddef>
#include <string>
#include <vector>

#include "load/load_generator.hpp"

namespace tendril::app {

// One model at one connection level: measured, or the reason it was not.
struct iomodels_row {
  std::string model;
  std::size_t connections = 0;
  bool measured = false;  // load holds a run (it may still count errors)
  lab::load_result load;
  std::string note;  // why there is no measurement ("cannot serve: ..."), or what went wrong
  bool gap = false;  // not measured for a reason of the model or the machine, not a failure
};

// Where and how the runs were made, for the Markdown report.
struct iomodels_setup {
  std::string cpu;                      // /proc/cpuinfo's model name
  long cpus = 0;                        // online CPUs
  std::string kernel;                   // uname: sysname release machine
  std::string date;                     // UTC, when the runs started
  std::string load_before, load_after;  // /proc/loadavg
  bool pinned = false;                  // server and load generator on CPUs of their own
  int server_cpu = -1, load_cpu = -1;   // which (-1: not pinned)
  int usable_cpus = 0;                  // the CPUs the run was allowed to use (taskset)
  double warmup_s = 0, seconds = 0;
  std::size_t message_size = 0;
  double rate = 0;  // messages per second offered in total; 0: closed loop
};

// iomodels_table() is the rows as a fixed-width text table.
std::string iomodels_table(const std::vector<iomodels_row>& rows);
// iomodels_markdown() is the report: the setup, the table, the chart (svg_name, beside it).
std::string iomodels_markdown(const std::vector<iomodels_row>& rows, const iomodels_setup& s,
                              const std::string& svg_name);
// iomodels_svg() is the chart: one line per model (in the order of models) in each panel,
// and a legend naming them; a model with no measurement keeps its legend entry, marked.
std::string iomodels_svg(const std::vector<iomodels_row>& rows,
                         const std::vector<std::string>& models, const iomodels_setup& s);

}  // namespace tendril::app

#endif
