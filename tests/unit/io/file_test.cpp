// tendril::io: files read and written at the file position and at offsets, append mode,
// read_file / write_file, errors that name the path, and wait_readable / wait_writable on
// descriptors that are not tendril sockets (a pipe).
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "hub/thread_pool.hpp"
#include "tendril/sync/waiter.hpp"
#include "tendril/tendril.hpp"

using namespace std::chrono_literals;
using tendril::spawn;
using tendril::io::file;
using tendril::io::open_mode;

namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// A directory of its own, removed with what it holds.
class temp_dir {
 public:
  temp_dir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base && *base ? base : "/tmp") + "/tendril-file-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr)
      throw std::system_error(errno, std::generic_category(), "mkdtemp");
    path_ = pattern;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::string binary_data(std::size_t n) {
  std::string s(n, '\0');
  std::uint32_t x = 12345;
  for (auto& c : s) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 24);
  }
  return s;
}

// A pipe, both ends closed at the end.
struct pipe_pair {
  int read_end = -1;
  int write_end = -1;
  pipe_pair() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0)
      throw std::system_error(errno, std::generic_category(), "pipe2");
    read_end = fds[0];
    write_end = fds[1];
  }
  ~pipe_pair() {
    if (read_end >= 0) ::close(read_end);
    if (write_end >= 0) ::close(write_end);
  }
  pipe_pair(const pipe_pair&) = delete;
  pipe_pair& operator=(const pipe_pair&) = delete;
};

// A pseudo-terminal in raw mode: the master's descriptor, and the path of its other side,
// which a file opens as the character device it is.
struct pty_pair {
  int master = -1;
  std::string slave;
  pty_pair() {
    master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0)
      throw std::system_error(errno, std::generic_category(), "posix_openpt");
    slave = ::ptsname(master);
    const int s = ::open(slave.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC);
    termios tio{};
    if (s < 0 || ::tcgetattr(s, &tio) != 0) throw std::system_error(errno, std::generic_category());
    ::cfmakeraw(&tio);
    ::tcsetattr(s, TCSANOW, &tio);
    ::close(s);
  }
  ~pty_pair() { ::close(master); }
  pty_pair(const pty_pair&) = delete;
  // fill() writes to the terminal through a descriptor of its own that does not block until
  // it is full, `rounds` times (the kernel moves some of it on between them); the bytes written.
  std::size_t fill(int rounds = 1) const {
    const int filler = ::open(slave.c_str(), O_WRONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    if (filler < 0) throw std::system_error(errno, std::generic_category(), "open " + slave);
    const std::string block(1024, 'f');
    std::size_t filled = 0;
    for (int round = 0; round < rounds; ++round) {
      if (round > 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      for (ssize_t n; (n = ::write(filler, block.data(), block.size())) > 0;)
        filled += static_cast<std::size_t>(n);
    }
    ::close(filler);
    return filled;
  }
  pty_pair& operator=(const pty_pair&) = delete;
  // drain() is what the master can read now (the terminal's output), without blocking.
  std::string drain() const {
    std::string out;
    char buf[4096];
    pollfd p{master, POLLIN, 0};
    while (::poll(&p, 1, 10) > 0 && (p.revents & POLLIN)) {
      const ssize_t n = ::read(master, buf, sizeof buf);
      if (n <= 0) break;
      out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
  }
};

}  // namespace

TEST(file, write_then_read_at_the_file_position) {
  temp_dir dir;
  const std::string path = dir.file("a.txt");
  {
    file f = file::open(path, open_mode::write);
    EXPECT_TRUE(f.is_open());
    EXPECT_EQ(f.write("hello ", 6), 6u);
    EXPECT_EQ(f.write("world", 5), 5u);
    EXPECT_EQ(f.size(), 11u);
  }
  file f = file::open(path);
  char buf[6];
  EXPECT_EQ(f.read(buf, 6), 6u);
  EXPECT_EQ(std::string(buf, 6), "hello ");
  EXPECT_EQ(f.read(buf, 6), 5u);
  EXPECT_EQ(std::string(buf, 5), "world");
  EXPECT_EQ(f.read(buf, 6), 0u);  // the end
}

TEST(file, read_at_and_write_at_use_their_offsets_and_leave_the_position) {
  temp_dir dir;
  const std::string path = dir.file("b.bin");
  file f = file::open(path, open_mode::read_write);
  EXPECT_EQ(f.write_at("0123456789", 10, 0), 10u);
  EXPECT_EQ(f.write_at("ab", 2, 4), 2u);
  char buf[10];
  EXPECT_EQ(f.read_at(buf, 10, 0), 10u);
  EXPECT_EQ(std::string(buf, 10), "0123ab6789");
  EXPECT_EQ(f.read_at(buf, 4, 8), 2u);
  EXPECT_EQ(std::string(buf, 2), "89");
  EXPECT_EQ(f.read_at(buf, 4, 10), 0u);
  EXPECT_EQ(f.read_at(buf, 4, 1000), 0u);
  // The position was never moved: read() starts at the beginning.
  EXPECT_EQ(f.read(buf, 3), 3u);
  EXPECT_EQ(std::string(buf, 3), "012");
  // Writing past the end leaves a hole of zeros.
  EXPECT_EQ(f.write_at("z", 1, 15), 1u);
  EXPECT_EQ(f.size(), 16u);
  EXPECT_EQ(f.read_at(buf, 6, 10), 6u);
  EXPECT_EQ(std::string(buf, 6), std::string(5, '\0') + "z");
}

TEST(file, append_mode_writes_at_the_end_whatever_the_offset) {
  temp_dir dir;
  const std::string path = dir.file("log.txt");
  tendril::io::write_file(path, "first\n");
  {
    file f = file::open(path, open_mode::append);
    EXPECT_EQ(f.write("second\n", 7), 7u);
    EXPECT_EQ(f.write_at("third\n", 6, 0), 6u);  // the offset does not matter
  }
  {
    file f = file::open(path, open_mode::append);
    f.write("fourth\n", 7);
  }
  EXPECT_EQ(tendril::io::read_file(path), "first\nsecond\nthird\nfourth\n");
}

TEST(file, write_mode_truncates_and_read_write_mode_does_not) {
  temp_dir dir;
  const std::string path = dir.file("t.txt");
  tendril::io::write_file(path, "a long first version");
  {
    file f = file::open(path, open_mode::read_write);
    f.write("A", 1);
  }
  EXPECT_EQ(tendril::io::read_file(path), "A long first version");
  {
    file f = file::open(path, open_mode::write);
    f.write("short", 5);
  }
  EXPECT_EQ(tendril::io::read_file(path), "short");
}

TEST(file, read_file_and_write_file_round_trip_binary_data) {
  temp_dir dir;
  const std::string path = dir.file("big.bin");
  const std::string data = binary_data(3 << 20);  // several read chunks
  tendril::io::write_file(path, data);
  EXPECT_EQ(std::filesystem::file_size(path), data.size());
  EXPECT_EQ(tendril::io::read_file(path), data);
  tendril::io::write_file(path, "");
  EXPECT_EQ(tendril::io::read_file(path), "");
}

TEST(file, many_greenlets_use_files_at_once) {
  temp_dir dir;
  std::vector<tendril::task<bool>> all;
  for (int i = 0; i < 8; ++i) {
    all.push_back(spawn([&dir, i] {
      const std::string path = dir.file("f" + std::to_string(i));
      const std::string data = binary_data(100000 + static_cast<std::size_t>(i));
      tendril::io::write_file(path, data);
      return tendril::io::read_file(path) == data;
    }));
  }
  for (auto& t : all) EXPECT_TRUE(t.get());
}

TEST(file, opening_a_missing_file_names_the_path) {
  temp_dir dir;
  const std::string path = dir.file("missing.txt");
  try {
    file::open(path);
    ADD_FAILURE() << "opened";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::no_such_file_or_directory);
    EXPECT_TRUE(contains(e.what(), path)) << e.what();
  }
  try {
    tendril::io::read_file(path);
    ADD_FAILURE() << "read";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::no_such_file_or_directory);
    EXPECT_TRUE(contains(e.what(), path)) << e.what();
  }
  const std::string in_missing_dir = dir.file("no/such/dir/x");
  try {
    tendril::io::write_file(in_missing_dir, "x");
    ADD_FAILURE() << "written";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::no_such_file_or_directory);
    EXPECT_TRUE(contains(e.what(), in_missing_dir)) << e.what();
  }
}

TEST(file, writing_a_file_opened_for_reading_fails_naming_the_path) {
  temp_dir dir;
  const std::string path = dir.file("ro.txt");
  tendril::io::write_file(path, "data");
  file f = file::open(path, open_mode::read);
  try {
    f.write("x", 1);
    ADD_FAILURE() << "written";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::bad_file_descriptor);
    EXPECT_TRUE(contains(e.what(), path)) << e.what();
  }
  std::error_code ec;
  EXPECT_EQ(f.write_at("x", 1, 0, ec), 0u);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor);
}

TEST(file, a_closed_or_empty_file_fails_with_ebadf) {
  temp_dir dir;
  const std::string path = dir.file("c.txt");
  tendril::io::write_file(path, "data");
  file f = file::open(path);
  f.close();
  EXPECT_FALSE(f.is_open());
  f.close();
  char buf[4];
  std::error_code ec;
  EXPECT_EQ(f.read_at(buf, 4, 0, ec), 0u);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor);
  EXPECT_THROW(f.read(buf, 4), std::system_error);
  EXPECT_THROW(f.size(), std::system_error);
  file never;
  EXPECT_EQ(never.read_at(buf, 4, 0, ec), 0u);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor);
}

TEST(file, a_moved_file_keeps_its_position) {
  temp_dir dir;
  const std::string path = dir.file("m.txt");
  tendril::io::write_file(path, "abcdef");
  file f = file::open(path);
  char buf[3];
  f.read(buf, 2);
  file g = std::move(f);
  EXPECT_FALSE(f.is_open());  // NOLINT(bugprone-use-after-move): the moved-from state
  EXPECT_EQ(g.read(buf, 3), 3u);
  EXPECT_EQ(std::string(buf, 3), "cde");
}

// A write killed while its job waited for the thread pool ran later on the bare descriptor
// number: the file had closed as the greenlet unwound, and the file that reused the number
// got the bytes. The job has a descriptor of its own now.
TEST(file, a_killed_write_never_lands_in_a_file_that_reuses_the_descriptor) {
  temp_dir dir;
  const std::string path_a = dir.file("a.txt");
  const std::string path_b = dir.file("b.txt");
  // Every pool thread busy, and no new one started: the write's job has to queue.
  struct pool_size_guard {
    std::size_t saved = tendril::detail::thread_pool::size();
    ~pool_size_guard() { tendril::detail::thread_pool::set_size(saved); }
  } guard;
  const std::size_t threads = std::max<std::size_t>(1, tendril::detail::thread_pool::workers());
  tendril::detail::thread_pool::set_size(threads);
  std::atomic<bool> go{false};
  std::atomic<std::size_t> busy{0};
  std::vector<tendril::task<void>> blockers;
  for (std::size_t i = 0; i < threads; ++i) {
    blockers.push_back(spawn([&] {
      tendril::offload([&] {
        ++busy;
        while (!go) std::this_thread::sleep_for(1ms);
      });
    }));
  }
  tendril::timeout limit(30s);
  while (busy < threads) tendril::sleep(1ms);
  int fd_a = -1;
  auto writer = spawn([&] {
    file a = file::open(path_a, open_mode::write);
    fd_a = a.native_handle();
    a.write("meant for a", 11);
  });
  while (fd_a < 0) tendril::sleep(1ms);
  writer.kill();  // a closes as the writer unwinds
  file b = file::open(path_b, open_mode::write);
  ASSERT_EQ(b.native_handle(), fd_a);
  go = true;
  for (auto& t : blockers) t.join();
  // The pool's write has run once either file holds something (io_uring cancelled it, or
  // wrote it before the kill ended: then there is no job).
  if (std::string(tendril::hub::current().backend_name()) != "io_uring") {
    while (std::filesystem::file_size(path_a) + std::filesystem::file_size(path_b) == 0)
      tendril::sleep(1ms);
    EXPECT_EQ(tendril::io::read_file(path_a), "meant for a");
  }
  EXPECT_EQ(tendril::io::read_file(path_b), "");
}

// File I/O on the hub (in the error handler it runs for a greenlet that is not a task): on
// io_uring the operation was submitted before the wait refused the hub, and the cancellation
// then had nothing to wait with: std::terminate. It throws blocking_switch_out, as elsewhere.
TEST(file, file_io_on_the_hub_itself_throws_blocking_switch_out) {
  temp_dir dir;
  const std::string path = dir.file("log.txt");
  tendril::io::write_file(path, "old");
  file log = file::open(path, open_mode::read_write);
  tendril::greenlet hub_greenlet;
  spawn([&] { hub_greenlet = tendril::greenlet::current().parent(); }).join();
  ASSERT_FALSE(hub_greenlet.empty());
  std::vector<std::string> refused;
  tendril::hub::current().set_error_handler([&](const std::string&, std::exception_ptr) {
    char buf[3];
    try {
      log.write_at("new", 3, 0);
    } catch (const tendril::blocking_switch_out& e) {
      refused.push_back(e.what());
    }
    try {
      log.read_at(buf, 3, 0);
    } catch (const tendril::blocking_switch_out& e) {
      refused.push_back(e.what());
    }
  });
  tendril::greenlet thrower([] { throw std::runtime_error("boom"); }, hub_greenlet);
  {
    tendril::detail::waiter come_back;  // the hub resumes us once it handled the error
    come_back.wake();
    thrower.switch_to();
  }
  tendril::hub::current().set_error_handler({});
  ASSERT_EQ(refused.size(), 2u);
  EXPECT_TRUE(contains(refused[0], "blocking call on the hub")) << refused[0];
  EXPECT_EQ(tendril::io::read_file(path), "old");
  // The hub goes on working, and so does the file.
  EXPECT_EQ(log.write_at("new", 3, 0), 3u);
  EXPECT_EQ(tendril::io::read_file(path), "new");
}

// A terminal reads and writes on every backend: the thread pool used pread and pwrite, which
// a device that cannot seek refuses (ESPIPE), where io_uring worked.
TEST(file, a_terminal_is_read_and_written_where_it_is_on_every_backend) {
  pty_pair pty;
  file f = file::open(pty.slave, open_mode::read_write);
  EXPECT_EQ(f.write("hi\n", 3), 3u);
  EXPECT_EQ(f.write_at("there", 5, 1000), 5u);  // an offset means nothing to it
  EXPECT_EQ(pty.drain(), "hi\nthere");
  ASSERT_EQ(::write(pty.master, "abc", 3), 3);
  char buf[16];
  tendril::timeout guard(30s);
  EXPECT_EQ(f.read(buf, sizeof buf), 3u);
  EXPECT_EQ(std::string(buf, 3), "abc");
  ASSERT_EQ(::write(pty.master, "de", 2), 2);
  EXPECT_EQ(f.read_at(buf, sizeof buf, 12345), 2u);
  EXPECT_EQ(std::string(buf, 2), "de");
  // And in append mode.
  file log = file::open(pty.slave, open_mode::append);
  EXPECT_EQ(log.write("more", 4), 4u);
  EXPECT_EQ(pty.drain(), "more");
}

// A terminal read whose timeout scope ran out in the hub pass that brought its data: on
// io_uring the read had completed, and its bytes went with the timeout_error. They are
// returned, and the timeout comes at the next blocking call. (On epoll and poll the read waits
// for readiness first, and a timeout there takes no bytes.)
TEST(file, bytes_a_terminal_read_took_as_its_time_ran_out_are_returned) {
  pty_pair pty;
  file f = file::open(pty.slave, open_mode::read_write);
  std::string got;
  std::size_t written = 0;
  for (int i = 0; i < 5; ++i) {
    std::size_t returned = 0;
    bool timed_out_later = false;
    auto reader = spawn([&] {
      char buf[64];
      tendril::timeout t(2ms);
      returned = f.read(buf, sizeof buf);
      got.append(buf, returned);
      try {
        tendril::sleep(0s);  // the timeout kept pending fires here
      } catch (const tendril::timeout_error&) {
        timed_out_later = true;
      }
    });
    tendril::sleep(0s);                                    // the reader is parked in its read
    std::this_thread::sleep_for(10ms);                     // the whole thread: the time runs out
    ASSERT_EQ(::write(pty.master, "0123456789", 10), 10);  // and the data comes
    std::this_thread::sleep_for(1ms);
    written += 10;
    try {
      reader.get();
    } catch (const tendril::timeout_error&) {
      // Nothing read: the bytes must still be in the terminal.
    }
    if (returned > 0) {
      EXPECT_TRUE(timed_out_later);
    }
    char rest[64];
    pollfd p{f.native_handle(), POLLIN, 0};
    while (::poll(&p, 1, 10) > 0) {
      const ssize_t n = ::read(f.native_handle(), rest, sizeof rest);
      if (n <= 0) break;
      got.append(rest, static_cast<std::size_t>(n));
    }
  }
  EXPECT_EQ(got.size(), written);
  EXPECT_EQ(got.substr(0, 10), "0123456789");
}

// A terminal write whose timeout scope ran out in the hub pass that let it finish: on io_uring
// it was reported as interrupted although its bytes were written (a caller that retried wrote
// them twice). Its count is returned, and the timeout comes at the next blocking call.
TEST(file, a_terminal_write_that_finished_as_its_time_ran_out_returns_its_count) {
  if (std::string(tendril::hub::current().backend_name()) != "io_uring")
    GTEST_SKIP() << "io_uring's race: elsewhere the write waits for room, which the time ends";
  pty_pair pty;
  file f = file::open(pty.slave, open_mode::write);
  const std::size_t filled = pty.fill();
  std::size_t reported = 0;
  bool interrupted = false;
  bool timed_out_later = false;
  auto writer = spawn([&] {
    tendril::timeout t(2ms);
    try {
      reported = f.write("0123456789", 10);
    } catch (const tendril::timeout_error&) {
      interrupted = true;
      return;
    }
    try {
      tendril::sleep(0s);
    } catch (const tendril::timeout_error&) {
      timed_out_later = true;
    }
  });
  tendril::sleep(0s);                 // the writer is parked in its write
  std::this_thread::sleep_for(10ms);  // the whole thread: the time runs out
  std::string out = pty.drain();      // and room is made
  writer.join();
  out += pty.drain();
  ASSERT_TRUE(out.size() == filled || out.size() == filled + 10) << out.size() << " " << filled;
  if (out.size() > filled) {
    // The bytes went out: the call must say so.
    EXPECT_FALSE(interrupted);
    EXPECT_EQ(reported, 10u);
    EXPECT_TRUE(timed_out_later);
    EXPECT_EQ(out.substr(filled), "0123456789");
  }
  EXPECT_GT(out.size(), filled) << "the race did not happen: the write was cancelled";
}

// Closing a terminal file while another greenlet read it left that greenlet parked until
// input came (io_uring still held the read and its buffer; epoll and poll a pool job's read),
// and the read then took bytes meant for whatever came next.
TEST(file, closing_a_terminal_ends_a_read_another_greenlet_waits_in_with_ebadf) {
  pty_pair pty;
  file f = file::open(pty.slave, open_mode::read_write);
  const int fd = f.native_handle();
  std::error_code ec;
  bool thrown = false;
  std::size_t n = 99;
  auto reader = spawn([&] {
    char buf[16];
    try {
      n = f.read(buf, sizeof buf);
    } catch (const std::system_error& e) {
      thrown = true;
      ec = e.code();
    }
  });
  tendril::sleep(20ms);  // the reader is parked in its read
  ASSERT_FALSE(reader.ready());
  f.close();
  const bool ended = reader.join_for(10s);
  if (!ended) {
    ASSERT_EQ(::write(pty.master, "!", 1), 1);  // let it go before the frame does
    reader.join();
  }
  ASSERT_TRUE(ended) << "the read outlived close()";
  EXPECT_TRUE(thrown) << n;
  EXPECT_EQ(ec, std::errc::bad_file_descriptor);
  // The next file takes the number: it sees no stale completion or readiness, and gets every
  // byte that comes after the close.
  file g = file::open(pty.slave, open_mode::read_write);
  ASSERT_EQ(g.native_handle(), fd);
  ASSERT_EQ(::write(pty.master, "after", 5), 5);
  tendril::timeout guard(30s);
  std::string got;
  char buf[16];
  while (got.size() < 5) got.append(buf, g.read(buf, sizeof buf));
  EXPECT_EQ(got, "after");
}

// The same for a write blocked on a full terminal: it waited until someone read the other
// side, and then wrote its bytes after close() had returned.
TEST(file, closing_a_terminal_ends_a_write_another_greenlet_waits_in_with_ebadf) {
  pty_pair pty;
  file f = file::open(pty.slave, open_mode::write);
  const std::size_t filled = pty.fill(3);
  std::error_code ec;
  auto writer = spawn([&] { f.write("0123456789", 10, ec); });
  tendril::sleep(20ms);  // the writer is parked in its write
  ASSERT_FALSE(writer.ready());
  f.close();
  const bool ended = writer.join_for(10s);
  std::string out = pty.drain();
  if (!ended) writer.join();  // the drain made room
  ASSERT_TRUE(ended) << "the write outlived close()";
  EXPECT_EQ(ec, std::errc::bad_file_descriptor);
  tendril::sleep(50ms);
  out += pty.drain();
  EXPECT_EQ(out.size(), filled) << "bytes were written after close()";
}

// The kernel's log (/dev/kmsg): a character device that is not a terminal and cannot seek,
// whose reads wait for the next record. Opened at its end, so that only records written from
// now on are read; skipped where the test may not read or write it (not root).
class kernel_log {
 public:
  kernel_log() {
    std::error_code ec;
    reader = file::open("/dev/kmsg", open_mode::read, ec);
    writer_ = ::open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
    if (ec || writer_ < 0) return;
    usable = ::lseek(reader.native_handle(), 0, SEEK_END) >= 0;
  }
  ~kernel_log() {
    // A read still blocked on a pool thread (before the fix) gets its record and ends.
    if (writer_ >= 0) {
      say("release");
      ::close(writer_);
    }
  }
  kernel_log(const kernel_log&) = delete;
  kernel_log& operator=(const kernel_log&) = delete;
  // say() writes a record that next() recognises, as "tendril-file-test <pid> <text>".
  void say(const std::string& text) const {
    const std::string line = tag() + text + "\n";
    if (::write(writer_, line.data(), line.size()) != static_cast<ssize_t>(line.size()))
      throw std::system_error(errno, std::generic_category(), "write /dev/kmsg");
  }
  // next() is the text of the next of this test's records that f reads (others are skipped).
  std::string next(file& f) const {
    char buf[8192];  // a read must hold a whole record
    while (true) {
      const std::string record(buf, f.read(buf, sizeof buf));
      const std::size_t at = record.find(tag());
      if (at == std::string::npos) continue;
      std::string text = record.substr(at + tag().size());
      while (!text.empty() && text.back() == '\n') text.pop_back();
      return text;
    }
  }
  file reader;
  bool usable = false;

 private:
  static std::string tag() { return "tendril-file-test " + std::to_string(::getpid()) + " "; }
  int writer_ = -1;
};

// A device that is not a terminal went to the thread pool on epoll and poll, where close()
// could not stop its read: the reader stayed parked until the device had data.
TEST(file, closing_a_device_ends_a_read_another_greenlet_waits_in_with_ebadf) {
  kernel_log log;
  if (!log.usable) GTEST_SKIP() << "/dev/kmsg cannot be read and written here";
  std::error_code ec;
  bool thrown = false;
  auto reader = spawn([&] {
    try {
      log.next(log.reader);
    } catch (const std::system_error& e) {
      thrown = true;
      ec = e.code();
    }
  });
  tendril::sleep(20ms);  // the reader is parked in its read
  ASSERT_FALSE(reader.ready());
  log.reader.close();
  const bool ended = reader.join_for(10s);
  if (!ended) {
    log.say("let the reader go");
    reader.join();
  }
  ASSERT_TRUE(ended) << "the read outlived close()";
  EXPECT_TRUE(thrown);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor);
}

// A device read that ran out of time left its pool job blocked in read(2) on the same open
// file: the job took the next record, which the next read never saw, and held a pool thread
// until then.
TEST(file, a_device_read_that_ran_out_of_time_leaves_the_next_record_to_the_next_read) {
  kernel_log log;
  if (!log.usable) GTEST_SKIP() << "/dev/kmsg cannot be read and written here";
  struct pool_size_guard {
    std::size_t saved = tendril::detail::thread_pool::size();
    ~pool_size_guard() { tendril::detail::thread_pool::set_size(saved); }
  } guard;
  tendril::detail::thread_pool::set_size(1);
  bool timed_out = false;
  auto reader = spawn([&] {
    tendril::timeout t(20ms);
    try {
      log.next(log.reader);
    } catch (const tendril::timeout_error&) {
      timed_out = true;
    }
  });
  reader.join();
  ASSERT_TRUE(timed_out);
  // The one pool thread is free for other work,
  {
    tendril::timeout limit(10s);
    EXPECT_EQ(tendril::offload([] { return 7; }), 7);
  }
  // and records written after the time ran out go to the next read, in order.
  log.say("first");
  log.say("second");
  tendril::timeout limit(10s);
  EXPECT_EQ(log.next(log.reader), "first");
  EXPECT_EQ(log.next(log.reader), "second");
}

// A killed device read ends at once, and a read started later waits for its data and gets it.
TEST(file, a_killed_device_read_ends_and_the_next_read_gets_data_written_later) {
  kernel_log log;
  if (!log.usable) GTEST_SKIP() << "/dev/kmsg cannot be read and written here";
  auto reader = spawn([&] { log.next(log.reader); });
  tendril::sleep(20ms);  // the reader is parked in its read
  ASSERT_FALSE(reader.ready());
  reader.kill();
  EXPECT_TRUE(reader.ready());
  std::string got;
  auto next = spawn([&] { got = log.next(log.reader); });
  tendril::sleep(20ms);
  ASSERT_FALSE(next.ready());  // nothing to read yet
  log.say("later");
  ASSERT_TRUE(next.join_for(10s));
  EXPECT_EQ(got, "later");
}

// --- wait_readable / wait_writable -----------------------------------------------------------

TEST(wait_ready, a_zero_time_limit_still_sees_a_ready_descriptor) {
  pipe_pair p;
  EXPECT_TRUE(tendril::io::wait_writable_for(p.write_end, 0s));
  EXPECT_FALSE(tendril::io::wait_readable_for(p.read_end, 0s));
  ASSERT_EQ(::write(p.write_end, "x", 1), 1);
  EXPECT_TRUE(tendril::io::wait_readable_for(p.read_end, 0s));
  EXPECT_TRUE(tendril::io::wait_readable_for(p.read_end, -1s));  // negative acts as zero
}

TEST(wait_ready, wait_readable_on_a_pipe_returns_once_data_arrives) {
  pipe_pair p;
  bool wrote = false;
  auto writer = spawn([&] {
    tendril::sleep(20ms);
    wrote = true;
    ASSERT_EQ(::write(p.write_end, "x", 1), 1);
  });
  tendril::io::wait_readable(p.read_end);
  EXPECT_TRUE(wrote);
  char c = 0;
  EXPECT_EQ(::read(p.read_end, &c, 1), 1);
  EXPECT_EQ(c, 'x');
  writer.get();
}

TEST(wait_ready, wait_readable_returns_at_once_when_data_is_there) {
  pipe_pair p;
  ASSERT_EQ(::write(p.write_end, "y", 1), 1);
  tendril::timeout guard(10s);
  tendril::io::wait_readable(p.read_end);
  EXPECT_TRUE(tendril::io::wait_readable_for(p.read_end, 1s));
}

TEST(wait_ready, wait_readable_for_returns_false_when_the_time_runs_out) {
  pipe_pair p;
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(tendril::io::wait_readable_for(p.read_end, 30ms));
  EXPECT_GE(std::chrono::steady_clock::now() - start, 25ms);
  // A negative time limit only looks.
  EXPECT_FALSE(tendril::io::wait_readable_for(p.read_end, -1s));
}

TEST(wait_ready, wait_readable_wakes_when_the_writer_closes) {
  pipe_pair p;
  auto closer = spawn([&] {
    tendril::sleep(20ms);
    ::close(p.write_end);
    p.write_end = -1;
  });
  tendril::io::wait_readable(p.read_end);
  char c;
  EXPECT_EQ(::read(p.read_end, &c, 1), 0);  // the end
  closer.get();
}

TEST(wait_ready, wait_writable_on_an_empty_pipe_returns_at_once) {
  pipe_pair p;
  tendril::timeout guard(10s);
  tendril::io::wait_writable(p.write_end);
  EXPECT_TRUE(tendril::io::wait_writable_for(p.write_end, 1s));
}

TEST(wait_ready, wait_writable_on_a_full_pipe_returns_once_it_is_drained) {
  pipe_pair p;
  char block[4096] = {};
  while (::write(p.write_end, block, sizeof block) > 0) {
  }
  EXPECT_FALSE(tendril::io::wait_writable_for(p.write_end, 20ms));
  auto drainer = spawn([&] {
    tendril::sleep(20ms);
    while (::read(p.read_end, block, sizeof block) > 0) {
    }
  });
  tendril::io::wait_writable(p.write_end);
  EXPECT_GT(::write(p.write_end, "z", 1), 0);
  drainer.get();
}

// io_uring polls POLLRDHUP whatever the mask: once the peer shut its side, a poll for room
// alone completed at once, every pass, and the hub spun until the time limit. The wait costs
// no CPU, and room made later still ends it.
TEST(wait_ready, waiting_for_room_on_a_socket_whose_peer_shut_its_side_costs_no_cpu) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
  char block[4096] = {};
  while (::send(sv[0], block, sizeof block, MSG_DONTWAIT) > 0) {
  }
  ASSERT_EQ(::shutdown(sv[1], SHUT_WR), 0);
  timespec t0{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
  const auto wall0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(tendril::io::wait_writable_for(sv[0], 500ms));
  const std::chrono::duration<double> wall = std::chrono::steady_clock::now() - wall0;
  timespec t1{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
  const double cpu = static_cast<double>(t1.tv_sec - t0.tv_sec) +
                     static_cast<double>(t1.tv_nsec - t0.tv_nsec) / 1e9;
  EXPECT_GE(wall.count(), 0.45);
  EXPECT_LT(cpu, wall.count() / 10) << "cpu " << cpu << " s in a wait of " << wall.count() << " s";
  // Room made while the wait is parked ends it; then the same descriptor waits for reading.
  auto drainer = spawn([&] {
    tendril::sleep(20ms);
    while (::recv(sv[1], block, sizeof block, MSG_DONTWAIT) > 0) {
    }
  });
  tendril::timeout guard(10s);
  tendril::io::wait_writable(sv[0]);
  drainer.get();
  EXPECT_TRUE(tendril::io::wait_readable_for(sv[0], 1s));  // end of stream
  EXPECT_EQ(::recv(sv[0], block, sizeof block, MSG_DONTWAIT), 0);
  ::close(sv[0]);
  ::close(sv[1]);
}

TEST(wait_ready, the_same_descriptor_can_be_waited_on_again_and_again) {
  pipe_pair p;
  for (int i = 0; i < 20; ++i) {
    auto writer = spawn([&] { ASSERT_EQ(::write(p.write_end, "x", 1), 1); });
    tendril::io::wait_readable(p.read_end);
    char c;
    EXPECT_EQ(::read(p.read_end, &c, 1), 1);
    writer.get();
  }
}

// Two greenlets wait on one pipe: the first one's time ran out, and its end closed the record
// the second one still waited on, which then failed with EBADF.
TEST(wait_ready, one_waiter_running_out_of_time_leaves_the_others_waiting) {
  pipe_pair p;
  bool first = true;
  std::error_code ec_second = std::make_error_code(std::errc::interrupted);
  std::error_code ec_third = std::make_error_code(std::errc::interrupted);
  auto a = spawn([&] { first = tendril::io::wait_readable_for(p.read_end, 10ms); });
  auto b = spawn([&] { tendril::io::wait_readable(p.read_end, ec_second); });
  auto c = spawn([&] { EXPECT_TRUE(tendril::io::wait_readable_for(p.read_end, 60s, ec_third)); });
  a.join();
  EXPECT_FALSE(first);
  EXPECT_FALSE(b.ready());
  EXPECT_FALSE(c.ready());
  ASSERT_EQ(::write(p.write_end, "x", 1), 1);
  tendril::timeout guard(30s);
  b.join();
  c.join();
  EXPECT_FALSE(ec_second) << ec_second.message();
  EXPECT_FALSE(ec_third) << ec_third.message();
}

// A descriptor closed behind the wait's back (a plain close) was reported ready by the poll
// backend (its POLLNVAL passed on as an error); the other backends wait on to the limit.
TEST(wait_ready, a_descriptor_closed_during_the_wait_is_never_reported_ready) {
  pipe_pair p;
  EXPECT_TRUE(tendril::io::wait_writable_for(p.write_end, 1s));  // the hub first
  std::error_code ec;
  bool ready = true;
  auto waiting = spawn([&] { ready = tendril::io::wait_readable_for(p.read_end, 300ms, ec); });
  tendril::sleep(10ms);
  ASSERT_FALSE(waiting.ready());
  ::close(p.read_end);
  p.read_end = -1;
  waiting.join();
  EXPECT_FALSE(ready);
  if (ec) {
    EXPECT_EQ(ec, std::errc::bad_file_descriptor) << ec.message();
  }
}

TEST(wait_ready, a_closed_descriptor_fails_with_ebadf) {
  pipe_pair p;
  // The hub first: its own descriptors must not take the number about to be closed.
  EXPECT_TRUE(tendril::io::wait_writable_for(p.write_end, 1s));
  const int fd = p.read_end;
  ::close(fd);
  p.read_end = -1;
  try {
    tendril::io::wait_readable(fd);
    ADD_FAILURE() << "wait_readable returned";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::bad_file_descriptor);
    EXPECT_TRUE(contains(e.what(), std::to_string(fd))) << e.what();
  }
  EXPECT_THROW(tendril::io::wait_writable(fd), std::system_error);
}

// A length beyond 32 bits is a short count, never a false end of file: io_uring's request
// length is 32 bits (4 GiB became 0, 4 GiB + 5 became 5), and the thread pool allocated and
// zeroed the whole length (bad_alloc for 1 TiB). The buffer is address space only.
TEST(file, a_read_longer_than_4_gib_reads_what_the_file_has) {
  temp_dir dir;
  const std::string path = dir.file("short.txt");
  tendril::io::write_file(path, "twenty bytes of text");
  const std::size_t huge = (std::size_t{1} << 40) + 5;  // 1 TiB + 5, never touched
  void* mem = ::mmap(nullptr, huge, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  auto* buf = static_cast<char*>(mem);
  file f = file::open(path);
  for (std::size_t len : {std::size_t{1} << 32, (std::size_t{1} << 32) + 5, huge}) {
    EXPECT_EQ(f.read_at(buf, len, 0), 20u) << len;
    EXPECT_EQ(std::string(buf, 20), "twenty bytes of text");
    EXPECT_EQ(f.read_at(buf, len, 20), 0u) << len;  // the real end of the file
  }
  ::munmap(mem, huge);
}

// Offsets are off_t: one above INT64_MAX is EINVAL on every backend (io_uring took -1 as
// "the file position" and moved it).
TEST(file, an_offset_beyond_int64_max_is_einval) {
  temp_dir dir;
  const std::string path = dir.file("o.txt");
  tendril::io::write_file(path, "abc");
  file f = file::open(path, open_mode::read_write);
  char c;
  std::error_code ec;
  EXPECT_EQ(f.read_at(&c, 1, UINT64_MAX, ec), 0u);
  EXPECT_EQ(ec, std::errc::invalid_argument);
  EXPECT_EQ(f.write_at("x", 1, std::uint64_t{1} << 63, ec), 0u);
  EXPECT_EQ(ec, std::errc::invalid_argument);
  EXPECT_EQ(f.read(&c, 1), 1u);  // the position did not move
  EXPECT_EQ(c, 'a');
  EXPECT_EQ(tendril::io::read_file(path), "abc");
}

// A FIFO is refused at once (opening it blocked the whole thread until a writer came).
TEST(file, opening_a_fifo_is_refused_without_blocking) {
  temp_dir dir;
  const std::string path = dir.file("fifo");
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  try {
    file::open(path);
    ADD_FAILURE() << "open of a FIFO returned";
  } catch (const std::system_error& e) {
    EXPECT_EQ(e.code(), std::errc::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("FIFO"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  // A character device still opens, and reads as usual.
  file zero = file::open("/dev/zero");
  char buf[4] = {1, 1, 1, 1};
  EXPECT_EQ(zero.read(buf, sizeof buf), 4u);
  EXPECT_EQ(buf[3], 0);
}

// A FIFO opened for writing (with no reader) or a Unix socket's path failed with ENXIO, from
// the open that does not block, before the check that refuses them with EINVAL.
TEST(file, a_fifo_opened_for_writing_and_a_socket_are_refused_with_einval) {
  temp_dir dir;
  const std::string fifo = dir.file("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string sock_path = dir.file("sock");
  const int sock = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(sock, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  ASSERT_LT(sock_path.size(), sizeof addr.sun_path);
  std::memcpy(addr.sun_path, sock_path.c_str(), sock_path.size() + 1);
  ASSERT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  for (const std::string& path : {fifo, sock_path}) {
    for (open_mode mode :
         {open_mode::read, open_mode::write, open_mode::append, open_mode::read_write}) {
      SCOPED_TRACE(path + " mode " + std::to_string(static_cast<int>(mode)));
      try {
        file::open(path, mode);
        ADD_FAILURE() << "opened";
      } catch (const std::system_error& e) {
        EXPECT_EQ(e.code(), std::errc::invalid_argument) << e.what();
        EXPECT_TRUE(contains(e.what(), "FIFO or socket")) << e.what();
        EXPECT_TRUE(contains(e.what(), path)) << e.what();
      }
      std::error_code ec;
      EXPECT_FALSE(file::open(path, mode, ec).is_open());
      EXPECT_EQ(ec, std::errc::invalid_argument);
    }
  }
  ::close(sock);
}

// Every throwing call has an error_code twin that reports the failure there instead.
TEST(file, error_code_twins_report_failures_without_throwing) {
  temp_dir dir;
  const std::string missing = dir.file("missing.txt");
  std::error_code ec;
  file f = file::open(missing, ec);
  EXPECT_EQ(ec, std::errc::no_such_file_or_directory);
  EXPECT_FALSE(f.is_open());
  f = file::open(dir.file("nodir/x.txt"), open_mode::write, ec);
  EXPECT_EQ(ec, std::errc::no_such_file_or_directory);
  char c;
  EXPECT_EQ(f.read(&c, 1, ec), 0u);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor);
  EXPECT_EQ(f.write("x", 1, ec), 0u);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor);
  EXPECT_EQ(f.size(ec), 0u);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor);
  EXPECT_EQ(tendril::io::read_file(missing, ec), "");
  EXPECT_EQ(ec, std::errc::no_such_file_or_directory);
  tendril::io::write_file(dir.file("nodir/y.txt"), "data", ec);
  EXPECT_EQ(ec, std::errc::no_such_file_or_directory);
  const std::string fifo = dir.file("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  f = file::open(fifo, open_mode::read, ec);
  EXPECT_EQ(ec, std::errc::invalid_argument);
  tendril::io::wait_readable(-1, ec);
  EXPECT_EQ(ec, std::errc::bad_file_descriptor);
  EXPECT_FALSE(tendril::io::wait_writable_for(-1, 1s, ec));
  EXPECT_EQ(ec, std::errc::bad_file_descriptor);

  // And on success they clear ec and do what the throwing forms do.
  const std::string path = dir.file("ok.txt");
  tendril::io::write_file(path, "hello", ec);
  EXPECT_FALSE(ec);
  EXPECT_EQ(tendril::io::read_file(path, ec), "hello");
  EXPECT_FALSE(ec);
  f = file::open(path, open_mode::read_write, ec);
  ASSERT_FALSE(ec);
  EXPECT_EQ(f.size(ec), 5u);
  EXPECT_EQ(f.read(&c, 1, ec), 1u);
  EXPECT_EQ(c, 'h');
  EXPECT_EQ(f.write("E", 1, ec), 1u);
  EXPECT_FALSE(ec);
  EXPECT_EQ(tendril::io::read_file(path), "hEllo");
}

// io_uring keeps a kernel worker for good once it punted an operation (large buffered writes
// here), and that worker is a thread of the process: counted as one that might set the event,
// it left a wait nobody can end hanging for ever instead of getting loop_exit. In a child, so
// that no thread of another test counts; exit 0: loop_exit (1: a worker was seen too).
TEST(file, a_wait_nobody_can_end_gets_loop_exit_after_file_io) {
  temp_dir dir;
  const std::string path = dir.file("big");
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    int code = 3;
    try {
      std::vector<char> block(1 << 20, 'x');
      {
        file f = file::open(path, open_mode::write);
        for (int i = 0; i < 32; ++i) f.write(block.data(), block.size());
      }
      file f = file::open(path);
      while (f.read(block.data(), block.size()) > 0) {
      }
      bool worker = false;
      for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) {
        char comm[5] = {};
        if (FILE* c = std::fopen((e.path() / "comm").c_str(), "r")) {
          worker |= std::fread(comm, 1, 4, c) == 4 && std::strcmp(comm, "iou-") == 0;
          std::fclose(c);
        }
      }
      tendril::event never_set;
      try {
        never_set.wait();
        code = 4;
      } catch (const tendril::loop_exit&) {
        code = worker ? 1 : 0;
      }
    } catch (...) {
      code = 5;
    }
    ::_exit(code);
  }
  int status = 0;
  const auto give_up = std::chrono::steady_clock::now() + 60s;
  pid_t done = 0;
  while ((done = ::waitpid(child, &status, WNOHANG)) == 0 &&
         std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(10ms);
  }
  if (done == 0) {
    ::kill(child, SIGKILL);
    ::waitpid(child, &status, 0);
    FAIL() << "the wait in the child hung for 60 s instead of getting loop_exit";
  }
  ASSERT_TRUE(WIFEXITED(status));
  const int code = WEXITSTATUS(status);
  EXPECT_TRUE(code == 0 || code == 1) << "child exit code " << code;
  RecordProperty("io_uring_worker_seen", code == 1 ? "yes" : "no");
}
