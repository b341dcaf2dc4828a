// tendril iomodels: every I/O model of the lab (lab/iomodels/) at each connection level, as
// its own server process (`tendril serve-model NAME`, pinned to one CPU) measured by the load
// generator (lab/load/, pinned to another); a table, and with --out a Markdown report and an
// SVG chart (iomodels_report.cpp). docs/iomodels.md explains the models and the figures.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "command.hpp"
#include "iomodels/model.hpp"
#include "iomodels_report.hpp"
#include "lab_args.hpp"
#include "load/load_generator.hpp"

namespace tendril::app {
namespace {

constexpr int server_start_timeout_ms = 10'000;

struct settings {
  std::vector<const lab::model*> models;
  std::vector<std::size_t> levels = {1, 10, 100, 1000};
  double seconds = 3;
  double warmup_s = 1;
  std::size_t message_size = 64;
  double rate = 0;  // messages per second offered in total; 0: closed loop (saturation)
  int threads = 0;  // the thread-pool model's pool size (0: its default)
  std::string out_dir;
  bool list = false;
};

std::string model_names() {
  std::string s;
  for (const auto& m : lab::models()) s += (s.empty() ? "" : ", ") + std::string(m.name);
  return s;
}

// check_out_dir() makes the report's folder and makes sure files can be written there, before
// a run of minutes whose report would otherwise be lost at the end.
void check_out_dir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw std::invalid_argument("--out: cannot create " + dir + ": " + ec.message());
  const std::filesystem::path probe = std::filesystem::path(dir) / ".tendril-iomodels-probe";
  {
    std::ofstream f(probe);
    f << "probe\n";
    f.close();
    if (!f) {
      std::filesystem::remove(probe, ec);
      throw std::invalid_argument("--out: cannot write in " + dir);
    }
  }
  std::filesystem::remove(probe, ec);
}

settings parse(const args& a) {
  static const char* usage =
      "tendril iomodels [--quick] [--out DIR] [--models a,b,...] [--connections 1,10,100,1000] "
      "[--seconds S] [--warmup S] [--size B] [--rate MSGS_PER_S] [--threads N] [--list]";
  settings s;
  bool quick = false, seconds_given = false, warmup_given = false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const std::string& k = a[i];
    if (k == "--quick") {
      quick = true;
      continue;
    }
    if (k == "--list") {
      s.list = true;
      continue;
    }
    static const std::set<std::string> with_value = {"--out",     "--models", "--connections",
                                                     "--seconds", "--warmup", "--size",
                                                     "--rate",    "--threads"};
    if (!with_value.contains(k)) throw usage_error("unknown argument '" + k + "' (" + usage + ")");
    if (i + 1 >= a.size()) throw usage_error(k + " needs a value (" + usage + ")");
    const std::string& v = a[++i];
    if (k == "--out") {
      // An empty name would leave the report unwritten, which is what no --out means.
      if (v.empty()) throw usage_error("--out needs a folder name, not an empty one");
      s.out_dir = v;
    } else if (k == "--models") {
      for (const auto& name : split_list(v)) {
        const lab::model* m = lab::find_model(name);
        if (m == nullptr)
          throw usage_error("unknown model '" + name + "' (models: " + model_names() + ")");
        if (std::find(s.models.begin(), s.models.end(), m) != s.models.end())
          throw usage_error("--models: '" + name + "' is named twice");
        s.models.push_back(m);
      }
      if (s.models.empty()) throw usage_error("--models: no model named");
    } else if (k == "--connections") {
      s.levels.clear();
      for (const auto& n : split_list(v)) {
        const std::size_t level = parse_count(k, n, 1, 1'000'000);
        if (std::find(s.levels.begin(), s.levels.end(), level) != s.levels.end())
          throw usage_error("--connections: " + n + " is given twice");
        s.levels.push_back(level);
      }
      if (s.levels.empty()) throw usage_error("--connections: no level given");
    } else if (k == "--seconds") {
      s.seconds = parse_seconds(k, v, false);
      seconds_given = true;
    } else if (k == "--warmup") {
      s.warmup_s = parse_seconds(k, v, true);
      warmup_given = true;
    } else if (k == "--size") {
      s.message_size = parse_count(k, v, 1, 1 << 20);
    } else if (k == "--rate") {
      s.rate = parse_rate(k, v);
    } else if (k == "--threads") {
      s.threads = static_cast<int>(parse_count(k, v, 1, 100'000));
    } else {
      throw usage_error("unknown argument '" + k + "' (" + usage + ")");
    }
  }
  // Quick: every level, short windows (about 0.7 s a row with the server's start, so some
  // 35 s for a dozen models).
  if (quick && !seconds_given) s.seconds = 0.4;
  if (quick && !warmup_given) s.warmup_s = 0.2;
  if (s.models.empty())
    for (const auto& m : lab::models()) s.models.push_back(&m);
  if (s.threads > 0 && std::find(s.models.begin(), s.models.end(),
                                 lab::find_model("thread-pool")) == s.models.end()) {
    throw usage_error("--threads sizes the thread-pool model, which is not in this run");
  }
  if (!s.out_dir.empty()) check_out_dir(s.out_dir);
  return s;
}

int list_models() {
  for (const auto& m : lab::models()) {
    std::printf("%-20s %s (%s)\n", std::string(m.name).c_str(), std::string(m.summary).c_str(),
                std::string(m.source).c_str());
    if (std::size_t max = m.max_connections(lab::serve_options{}); max != 0)
      std::printf("%-20s at most %zu connections\n", "", max);
    if (std::string why = m.unsupported(); !why.empty())
      std::printf("%-20s unsupported here: %s\n", "", why.c_str());
  }
  return 0;
}

// descriptor_limit() raises the soft RLIMIT_NOFILE to the hard one (the servers inherit it)
// and returns it.
std::size_t descriptor_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit raised = rl;
    raised.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) rl = raised;
  }
  return rl.rlim_cur == RLIM_INFINITY ? static_cast<std::size_t>(-1)
                                      : static_cast<std::size_t>(rl.rlim_cur);
}

// The two CPUs to pin to (server, load generator), or {-1, -1} with one CPU.
std::pair<int, int> choose_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return {-1, -1};
  int found[2] = {-1, -1}, n = 0;
  for (int cpu = 0; cpu < CPU_SETSIZE && n < 2; ++cpu)
    if (CPU_ISSET(cpu, &set)) found[n++] = cpu;
  if (n < 2) return {-1, -1};
  return {found[0], found[1]};
}

// usable_cpus() is how many CPUs this process may run on (taskset narrows it).
int usable_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return 1;
  return CPU_COUNT(&set);
}

bool pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return ::sched_setaffinity(0, sizeof set, &set) == 0;
}

std::string describe_status(int status) {
  if (WIFSIGNALED(status)) return std::string("killed by signal ") + ::strsignal(WTERMSIG(status));
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  return "status " + std::to_string(status);
}

// A model's server: `/proc/self/exe serve-model NAME --port 0` in a child process.
class server_process {
 public:
  server_process() = default;
  server_process(const server_process&) = delete;
  server_process& operator=(const server_process&) = delete;
  ~server_process() { stop(); }

  // start() runs the server pinned to cpu (none when -1) and reads its port from the first
  // line of its standard output; false with error() set when it did not come.
  bool start(const std::string& model, int threads, int cpu);
  // stop() ends it (SIGKILL) and reaps it; the text is how it had ended before, if it had.
  std::string stop();
  pid_t pid() const { return pid_; }
  std::uint16_t port() const { return port_; }
  const std::string& error() const { return error_; }

 private:
  std::string stderr_text();

  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
  int out_ = -1;  // its standard output, kept open so that it never writes into a closed pipe
  int err_ = -1;  // its standard error: a memory file, read when it fails
  std::string error_;
};

bool server_process::start(const std::string& model, int threads, int cpu) {
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) {
    error_ = std::string("pipe: ") + std::strerror(errno);
    return false;
  }
  out_ = out[0];
  err_ = ::memfd_create("serve-model-stderr", MFD_CLOEXEC);
  const std::string pool = std::to_string(threads);
  const char* argv[] = {"tendril",    "serve-model", model.c_str(),
                        "--port",     "0",           threads > 0 ? "--threads" : nullptr,
                        pool.c_str(), nullptr};
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ == 0) {
    // The child: async-signal-safe calls only until exec. It dies with the run (a killed
    // `tendril iomodels` must not leave a busy server behind).
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    if (cpu >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpu, &set);
      ::sched_setaffinity(0, sizeof set, &set);
    }
    ::dup2(out[1], STDOUT_FILENO);
    if (err_ >= 0) ::dup2(err_, STDERR_FILENO);
    int null = ::open("/dev/null", O_RDONLY);
    if (null >= 0) ::dup2(null, STDIN_FILENO);
    // Nothing but 0, 1 and 2: the models that count their descriptors (select's 1,020
    // connections) must find every other number free, whatever the caller left open.
    ::close_range(3, ~0U, 0);
    ::execv("/proc/self/exe", const_cast<char* const*>(argv));
    ::_exit(127);
  }
  ::close(out[1]);
  if (pid_ < 0) {
    error_ = std::string("fork: ") + std::strerror(errno);
    return false;
  }
  std::string line;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(server_start_timeout_ms);
  while (line.find('\n') == std::string::npos) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{out_, POLLIN, 0};
    int n = left.count() > 0 ? ::poll(&p, 1, static_cast<int>(left.count())) : 0;
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      error_ =
          "server printed no port within " + std::to_string(server_start_timeout_ms / 1000) + " s";
      break;
    }
    char buf[256];
    ssize_t got = ::read(out_, buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      error_ = "server did not start";
      break;
    }
    line.append(buf, static_cast<std::size_t>(got));
  }
  if (error_.empty()) {
    // The port is the last number on the line ("12345", "port 12345", "127.0.0.1:12345").
    line.erase(line.find('\n'));
    std::size_t end = line.find_last_of("0123456789");
    if (end != std::string::npos) {
      std::size_t begin = line.find_last_not_of("0123456789", end);
      begin = begin == std::string::npos ? 0 : begin + 1;
      unsigned long p = std::stoul(line.substr(begin, end - begin + 1));
      if (p > 0 && p <= 65535) port_ = static_cast<std::uint16_t>(p);
    }
    if (port_ == 0) error_ = "server's first line holds no port: '" + line + "'";
  }
  if (!error_.empty()) {
    std::string said = stderr_text();
    std::string how = stop();
    if (!said.empty()) {
      error_ += ": " + said;
    } else if (!how.empty()) {
      error_ += " (" + how + ")";
    }
    return false;
  }
  return true;
}

std::string server_process::stop() {
  std::string how;
  if (pid_ > 0) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      how = describe_status(status);
      // It ended on its own: what it said on the way out is the reason.
      if (std::string said = stderr_text(); !said.empty()) how += ": " + said;
    } else {
      ::kill(pid_, SIGKILL);
      while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
    }
    pid_ = -1;
  }
  if (out_ >= 0) ::close(out_);
  out_ = -1;
  if (err_ >= 0) ::close(err_);
  err_ = -1;
  return how;
}

// The last line the server wrote on its standard error, without the command's prefix.
std::string server_process::stderr_text() {
  if (err_ < 0) return {};
  std::string text;
  char buf[4096];
  ::lseek(err_, 0, SEEK_SET);
  for (ssize_t n; (n = ::read(err_, buf, sizeof buf)) > 0;)
    text.append(buf, static_cast<std::size_t>(n));
  ::close(err_);
  err_ = -1;
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  if (auto nl = text.rfind('\n'); nl != std::string::npos) text.erase(0, nl + 1);
  if (text.rfind("tendril serve-model: ", 0) == 0) text.erase(0, 21);
  return text;
}

std::string first_line_of(const char* path, const std::string& key) {
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    if (key.empty()) return line;
    if (line.rfind(key, 0) == 0) {
      auto colon = line.find(':');
      if (colon == std::string::npos) return line;
      const std::size_t value = line.find_first_not_of(" \t", colon + 1);
      return value == std::string::npos ? std::string() : line.substr(value);
    }
  }
  return {};
}

std::string load_average() {
  std::string l = first_line_of("/proc/loadavg", "");
  // "0.52 0.58 0.59 1/123 4567": the three averages.
  std::size_t cut = 0;
  for (int i = 0; i < 3 && cut != std::string::npos; ++i) cut = l.find(' ', cut + (i ? 1 : 0));
  return cut == std::string::npos ? l : l.substr(0, cut);
}

iomodels_setup describe_machine(const settings& s, bool pinned) {
  iomodels_setup m;
  m.cpu = first_line_of("/proc/cpuinfo", "model name");
  if (m.cpu.empty()) m.cpu = "unknown CPU";
  m.cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  utsname u{};
  if (::uname(&u) == 0) m.kernel = std::string(u.sysname) + " " + u.release + " " + u.machine;
  char date[64];
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", &tm);
  m.date = date;
  m.load_before = load_average();
  m.pinned = pinned;
  m.warmup_s = s.warmup_s;
  m.seconds = s.seconds;
  m.message_size = s.message_size;
  m.rate = s.rate;
  return m;
}

// One model at one level; failures become the row's note, never an exception.
iomodels_row run_one(const lab::model& m, std::size_t level, const settings& s, int server_cpu,
                     std::size_t fd_limit) {
  iomodels_row row;
  row.model = std::string(m.name);
  row.connections = level;
  if (std::string why = m.unsupported(); !why.empty()) {
    row.note = "unsupported: " + why;
    row.gap = true;
    return row;
  }
  lab::serve_options so;
  so.threads = s.threads;
  if (std::size_t max = m.max_connections(so); max != 0 && level > max) {
    row.note =
        "cannot serve: " + row.model + " is limited to " + std::to_string(max) + " connections";
    row.gap = true;
    return row;
  }
  // Each side needs a descriptor per connection, and a few more.
  if (level + 32 > fd_limit) {
    row.note = "cannot run: " + std::to_string(level) +
               " connections need more descriptors than RLIMIT_NOFILE allows (" +
               std::to_string(fd_limit) + ")";
    row.gap = true;
    return row;
  }
  server_process server;
  if (!server.start(row.model, s.threads, server_cpu)) {
    row.note = server.error();
    return row;
  }
  lab::load_options o;
  o.port = server.port();
  o.connections = level;
  o.message_size = s.message_size;
  o.warmup_s = s.warmup_s;
  o.seconds = s.seconds;
  o.rate = s.rate;
  o.server_pid = server.pid();
  try {
    row.load = lab::run_load(o);
  } catch (const std::invalid_argument& e) {
    if (std::string died = server.stop(); !died.empty()) {
      row.note = "server " + died;  // that, not the options, is what went wrong
      return row;
    }
    row.note = std::string("cannot run: ") + e.what();
    row.gap = true;
    return row;
  } catch (const std::exception& e) {
    row.note = std::string("load generator failed: ") + e.what();
    return row;
  }
  const std::string died = server.stop();
  if (!died.empty()) {
    // The server ended before it was stopped: whatever was measured is not the model's.
    row.note = "server " + died;
    if (!row.load.error.empty()) row.note += " (load generator: " + row.load.error + ")";
    return row;
  }
  if (!row.load.error.empty()) {
    row.note = row.load.error;
    return row;
  }
  row.measured = true;
  std::string sep;
  if (row.load.connect_failures != 0) {
    row.note = std::to_string(row.load.connect_failures) + " connections failed to open";
    sep = "; ";
  }
  if (row.load.errors != 0) {
    row.note +=
        sep + std::to_string(row.load.errors) + " errors (connections lost or wrong echoes)";
  }
  return row;
}

bool write_file(const std::filesystem::path& p, const std::string& text) {
  std::ofstream f(p);
  f << text;
  f.close();
  if (!f) std::fprintf(stderr, "tendril iomodels: cannot write %s\n", p.c_str());
  return static_cast<bool>(f);
}

}  // namespace

int iomodels(const args& a) {
  const settings s = parse(a);
  if (s.list) return list_models();
  const std::size_t fd_limit = descriptor_limit();
  auto [server_cpu, load_cpu] = choose_cpus();
  bool pinned = server_cpu >= 0 && pin_to(load_cpu);
  if (!pinned) {
    server_cpu = -1;
    std::fprintf(stderr,
                 "tendril iomodels: only one CPU available: the servers and the load generator "
                 "share it (no pinning), so the figures measure both together\n");
  } else {
    std::fprintf(stderr, "tendril iomodels: servers on CPU %d, load generator on CPU %d\n",
                 server_cpu, load_cpu);
  }
  iomodels_setup setup = describe_machine(s, pinned);
  setup.server_cpu = server_cpu;
  setup.load_cpu = pinned ? load_cpu : -1;
  setup.usable_cpus = usable_cpus();

  std::vector<iomodels_row> rows;
  const std::size_t total = s.models.size() * s.levels.size();
  bool failed = false;
  for (const lab::model* m : s.models) {
    for (std::size_t level : s.levels) {
      std::fprintf(stderr, "[%zu/%zu] %s @ %zu connection%s... ", rows.size() + 1, total,
                   std::string(m->name).c_str(), level, level == 1 ? "" : "s");
      std::fflush(stderr);
      iomodels_row row = run_one(*m, level, s, server_cpu, fd_limit);
      if (row.measured) {
        std::fprintf(stderr, "%.0f msgs/s, %.2f µs/msg, server CPU %.0f%%%s%s\n",
                     row.load.msgs_per_s, row.load.server_cpu_us_per_msg, row.load.server_cpu_pct,
                     row.note.empty() ? "" : "; ", row.note.c_str());
      } else {
        std::fprintf(stderr, "%s\n", row.note.c_str());
      }
      if ((row.measured && !row.note.empty()) || (!row.measured && !row.gap)) failed = true;
      rows.push_back(std::move(row));
    }
  }
  setup.load_after = load_average();

  std::printf("%s", iomodels_table(rows).c_str());
  std::fflush(stdout);
  if (!s.out_dir.empty()) {
    const std::filesystem::path dir(s.out_dir);
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);  // checked before the run; gone since?
    if (ec) throw std::runtime_error("cannot create " + s.out_dir + ": " + ec.message());
    std::vector<std::string> names;
    for (const lab::model* m : s.models) names.emplace_back(m->name);
    bool ok = write_file(dir / "iomodels.md", iomodels_markdown(rows, setup, "iomodels.svg"));
    ok = write_file(dir / "iomodels.svg", iomodels_svg(rows, names, setup)) && ok;
    if (!ok) return 1;
    std::printf("wrote %s and %s\n", (dir / "iomodels.md").c_str(), (dir / "iomodels.svg").c_str());
  }
  return failed ? 1 : 0;
}

}  // namespace tendril::app
