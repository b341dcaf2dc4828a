// Forked children in tests: the child reports on a pipe, the parent collects the report and
// the exit status without hanging on a child that never ends.
#ifndef TENDRIL_TESTS_SUPPORT_CHILD_PROCESS_HPP
#define TENDRIL_TESTS_SUPPORT_CHILD_PROCESS_HPP

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <thread>

namespace tendril::test {

// say() writes all of s to fd (a child's report), with whatever write() the process has:
// libc's, or the hooks' when they are on.
inline void say(int fd, std::string_view s) {
  for (std::size_t done = 0; done < s.size();) {
    const ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

struct child_outcome {
  std::string report;
  int status = -1;  // the exit status, 128 + the signal, or -1: killed after 30 s
};

inline void pause_thread() { std::this_thread::sleep_for(std::chrono::milliseconds(2)); }

// wait_for_child() collects what a forked child writes to `from` (the parent's end of a
// pipe) until it exits, and its exit status. Between looks it calls pause(): the default
// blocks the thread; a test whose parent must keep its hub running passes one that sleeps
// cooperatively.
inline child_outcome wait_for_child(pid_t pid, int from, void (*pause)() = pause_thread) {
  child_outcome out;
  char buf[256];
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < give_up) {
    pause();
    pollfd p{from, POLLIN, 0};
    if (::poll(&p, 1, 0) > 0) {
      const ssize_t n = ::read(from, buf, sizeof buf);
      if (n > 0) out.report.append(buf, static_cast<std::size_t>(n));
    }
    int st = 0;
    if (::waitpid(pid, &st, WNOHANG) == pid) {
      out.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      break;
    }
  }
  if (out.status == -1) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  // The child is gone and what it wrote is all there; only what is there is read (a
  // descriptor the child passed on may keep the pipe open).
  for (pollfd p{from, POLLIN, 0}; ::poll(&p, 1, 0) > 0;) {
    const ssize_t n = ::read(from, buf, sizeof buf);
    if (n <= 0) break;
    out.report.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

// collect_child() is the parent's side of a child reporting on the pipe `fds`: it closes
// the write end, waits for the child (wait_for_child()) and closes the read end.
inline child_outcome collect_child(pid_t pid, const int (&fds)[2], void (*pause)() = pause_thread) {
  ::close(fds[1]);
  child_outcome out = wait_for_child(pid, fds[0], pause);
  ::close(fds[0]);
  return out;
}

}  // namespace tendril::test

#endif
