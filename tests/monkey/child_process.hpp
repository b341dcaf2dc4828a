// Child processes for the real-library tests: the servers they start (postgres, redis-server)
// and the programs they run (the preload helper, `tendril run`). Blocking calls (waitpid,
// plain file reads): call these from the test body, not from greenlets that must overlap.
#ifndef TENDRIL_TESTS_LIBS_CHILD_PROCESS_HPP
#define TENDRIL_TESTS_LIBS_CHILD_PROCESS_HPP

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

extern char** environ;

namespace tendril::test {

// child is a started program: its pid and the file its stdout and stderr go to.
struct child {
  pid_t pid = -1;
  std::string log;
};

// read_file() is the whole content of path ("" if it cannot be read).
inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// start_program() starts argv[0] (looked up in PATH) with stdout and stderr appended to log,
// the environment being this process's with `env` ("NAME=value") put over it, in directory
// cwd if not empty. pid -1 if it could not be started (errno set).
inline child start_program(const std::vector<std::string>& argv, const std::string& log,
                           const std::vector<std::string>& env = {}, const std::string& cwd = {}) {
  child c;
  c.log = log;
  std::vector<std::string> vars;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string var = *e;
    bool replaced = false;
    for (const auto& x : env) {
      const auto eq = x.find('=');
      if (var.compare(0, eq + 1, x, 0, eq + 1) == 0) replaced = true;
    }
    if (!replaced) vars.push_back(var);
  }
  for (const auto& x : env) vars.push_back(x);
  std::vector<char*> envp;
  for (auto& v : vars) envp.push_back(v.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = argv;
  std::vector<char*> argp;
  for (auto& a : args) argp.push_back(a.data());
  argp.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  if (!cwd.empty()) posix_spawn_file_actions_addchdir_np(&fa, cwd.c_str());
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, argp[0], &fa, nullptr, argp.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    errno = rc;
    return c;
  }
  c.pid = pid;
  return c;
}

// wait_program() waits for c to end: its exit status, 128 + the signal that ended it, or -1.
inline int wait_program(child& c) {
  if (c.pid <= 0) return -1;
  int st = 0;
  pid_t r;
  do {
    r = ::waitpid(c.pid, &st, 0);
  } while (r < 0 && errno == EINTR);
  c.pid = -1;
  if (r < 0) return -1;
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return -1;
}

// stop_program() ends c with sig and waits for it.
inline void stop_program(child& c, int sig = SIGTERM) {
  if (c.pid <= 0) return;
  ::kill(c.pid, sig);
  wait_program(c);
}

// run_result is what run_program() saw: the exit status (as wait_program) and the output.
struct run_result {
  int status = -1;
  std::string output;
};

// run_program() runs argv to its end, its output going through a temporary file.
inline run_result run_program(const std::vector<std::string>& argv,
                              const std::vector<std::string>& env = {},
                              const std::string& cwd = {}) {
  char path[] = "/tmp/tendril-run-XXXXXX";
  const int fd = ::mkstemp(path);
  if (fd < 0) return {-1, std::string("mkstemp: ") + std::strerror(errno)};
  ::close(fd);
  child c = start_program(argv, path, env, cwd);
  run_result r;
  if (c.pid < 0) {
    r.output = "cannot start " + argv[0] + ": " + std::strerror(errno);
  } else {
    r.status = wait_program(c);
    r.output = read_file(path);
  }
  ::unlink(path);
  return r;
}

// free_port() is a loopback TCP port nobody listened on a moment ago (the kernel's choice for
// port 0). Someone else may take it meanwhile: callers retry with another.
inline std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  std::uint16_t port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

}  // namespace tendril::test

#endif
