#include "tendril/io/file.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <utility>

#include "io/fd_table.hpp"
#include "tendril/task/offload.hpp"

namespace tendril::io {

using tendril::detail::fd_record;
using tendril::detail::fd_table;
using tendril::detail::io_direction;
using tendril::detail::io_op;
using tendril::detail::op_state;

namespace {

std::error_code errno_code(int e) { return {e, std::generic_category()}; }

[[noreturn]] void fail(const char* what, const std::string& path, const std::error_code& ec) {
  throw std::system_error(ec, std::string("tendril::io: ") + what + " " + path);
}

struct read_result {
  std::unique_ptr<char[]> data;
  std::size_t size = 0;
  int err = 0;
};

// The most one call on the thread pool moves (a short count, as the kernel may give too):
// its bytes go through a buffer of the job's own.
// Offsets are off_t: io_uring would take -1 as "the file position".
constexpr std::uint64_t max_offset = static_cast<std::uint64_t>(INT64_MAX);

constexpr std::size_t pool_chunk = std::size_t{16} << 20;

// The descriptor a thread pool job works on: a duplicate of its own, closed when the job ends.
// A greenlet killed (or timed out) while its job waits goes at once and may close its file;
// the job then still runs, and must reach that file, not whatever file reuses the number.
class job_fd {
 public:
  explicit job_fd(int fd) noexcept : fd_(fd) {}
  job_fd(job_fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  job_fd& operator=(job_fd&&) = delete;
  ~job_fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const noexcept { return fd_; }

 private:
  int fd_;
};

// dup_for_job() is a duplicate of fd for a job, or -errno.
int dup_for_job(int fd) noexcept {
  const int d = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  return d < 0 ? -errno : d;
}

// On the thread pool: the data goes through a buffer of the job's own, so that a greenlet
// killed while it waits never leaves a pool thread writing into its frame. The buffer is no
// bigger than what is left of a regular file (not the length asked for), and not zeroed.
// An offset of -1 reads or writes at the file position (a device that cannot seek, append mode).
read_result pool_read(const job_fd& job, std::size_t len, std::int64_t offset) {
  const int fd = job.get();
  read_result r;
  len = std::min(len, pool_chunk);
  struct stat st {};
  if (offset >= 0 && ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
    const auto size = static_cast<std::uint64_t>(st.st_size);
    const auto at = static_cast<std::uint64_t>(offset);
    // What is left, and a page more in case the file grows meanwhile (at least one byte, so
    // that the end of the file is read as such).
    const std::uint64_t left = (at < size ? size - at : 0) + 4096;
    if (left < len) len = static_cast<std::size_t>(left);
  }
  try {
    r.data.reset(new char[len]);
  } catch (const std::bad_alloc&) {
    r.err = ENOMEM;
    return r;
  }
  ssize_t n;
  do {
    n = offset < 0 ? ::read(fd, r.data.get(), len)
                   : ::pread(fd, r.data.get(), len, static_cast<off_t>(offset));
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    r.err = errno;
  } else {
    r.size = static_cast<std::size_t>(n);
  }
  return r;
}

std::int64_t pool_write(const job_fd& job, const std::string& data, std::int64_t offset) {
  const int fd = job.get();
  ssize_t n;
  do {
    n = offset < 0 ? ::write(fd, data.data(), data.size())
                   : ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
  } while (n < 0 && errno == EINTR);
  return n < 0 ? -errno : n;
}

// run_keeping_bytes() runs a native read or write. One that a kill or a timeout interrupted
// after it moved bytes returns their count, and the interrupt comes at the next blocking call:
// a terminal's bytes read are gone from it, and a write that happened must not be retried
// (in append mode it would be written twice).
// Test: file.bytes_a_terminal_read_took_as_its_time_ran_out_are_returned.
// The same holds for one that close() ended (r: the file's record, linked so that close()
// can cancel it) after it moved bytes.
// Test: file.closing_a_terminal_ends_a_read_another_greenlet_waits_in_with_ebadf.
std::int64_t run_keeping_bytes(fd_table& t, fd_record* r, op_state& st) {
  std::int64_t moved = 0;
  try {
    const std::int64_t rc = t.run(
        r, st, tendril::detail::forever_ns,
        [](op_state& s, void* ctx) { *static_cast<std::int64_t*>(ctx) = s.op.result; }, &moved);
    return rc == -EBADF && moved > 0 ? moved : rc;
  } catch (...) {
    if (moved <= 0) throw;
    tendril::detail::keep_interrupt_pending(std::current_exception());
    return moved;
  }
}

// polled_io() reads or writes a device that cannot seek and can be waited on (a terminal) on a
// readiness backend as a socket is: the call on its non-blocking description, and on EAGAIN a
// wait on its record, which close() ends with EBADF. A pool job could not be stopped: it went
// on waiting for input after the close or the caller's timeout, held its pool thread
// meanwhile, and took bytes meant for whoever came next. n >= 0, or -errno.
// Tests: file.closing_a_terminal_ends_a_read_another_greenlet_waits_in_with_ebadf,
// file.a_device_read_that_ran_out_of_time_leaves_the_next_record_to_the_next_read.
std::int64_t polled_io(fd_table& t, int fd, std::uint32_t gen, io_direction d, void* buf,
                       std::size_t len) {
  fd_record* r = t.find(fd, gen);
  if (r == nullptr) r = &t.borrow(fd);  // a file opened in another thread
  const std::uint32_t life = r->gen;
  while (true) {
    const ssize_t n = d == io_direction::read ? ::read(fd, buf, len) : ::write(fd, buf, len);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return -errno;
    if (const int rc = t.wait(*r, d, tendril::detail::forever_ns); rc < 0) return rc;
    // Woken as ready, then closed before this greenlet ran: the number may be another file's.
    if (!r->open || r->gen != life) return -EBADF;
  }
}

// pollable() tells whether the kernel can wait for fd to be ready. epoll refuses (EPERM) a
// file whose driver cannot be waited on; poll(2) would call it always ready, and a read that
// said EAGAIN would be retried for ever.
bool pollable(int fd) noexcept {
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) return false;
  epoll_event ev{};
  const bool ok = ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0;
  ::close(ep);
  return ok;
}

}  // namespace

namespace {

// open_file() is the descriptor of path opened for mode, or -errno (EINVAL for a FIFO or a
// socket, *not_a_file then set). O_NONBLOCK so that opening a FIFO does not block the hub
// until its other end opens; then FIFOs and sockets are refused (the net API and the hooks
// are for them), and the flag is cleared again for the rest (a character device keeps its
// usual blocking reads), but when *polled (a readiness backend: see polled_io()) for a
// character device that cannot seek and that the kernel can wait on (a terminal, the kernel
// log); *polled then tells whether it is one. *seekable tells whether it has offsets.
int open_file(const std::string& p, open_mode mode, unsigned perms, bool* not_a_file,
              bool* seekable, bool* polled) noexcept {
  int flags = O_CLOEXEC | O_NONBLOCK;
  switch (mode) {
    case open_mode::read:
      flags |= O_RDONLY;
      break;
    case open_mode::write:
      flags |= O_WRONLY | O_CREAT | O_TRUNC;
      break;
    case open_mode::append:
      flags |= O_WRONLY | O_CREAT | O_APPEND;
      break;
    case open_mode::read_write:
      flags |= O_RDWR | O_CREAT;
      break;
  }
  const int fd = ::open(p.c_str(), flags, perms);
  struct stat st {};
  if (fd < 0) {
    const int err = errno;
    // What that open does with a FIFO that has no reader yet (for writing) and with a socket.
    if (err == ENXIO && ::stat(p.c_str(), &st) == 0 &&
        (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode))) {
      *not_a_file = true;
      return -EINVAL;
    }
    return -err;
  }
  int err = 0;
  if (::fstat(fd, &st) != 0) {
    err = errno;
  } else if (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) {
    err = EINVAL;
    *not_a_file = true;
  } else {
    *seekable = S_ISREG(st.st_mode) || ::lseek(fd, 0, SEEK_CUR) >= 0;
    *polled = *polled && S_ISCHR(st.st_mode) && !*seekable && pollable(fd);
    if (!*polled && ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0) err = errno;
  }
  if (err != 0) {
    ::close(fd);
    return -err;
  }
  return fd;
}

}  // namespace

// adopt() is the file of a descriptor open_file() gave, with a fresh life of its record in the
// thread's table: close() ends, through it, what other greenlets have under way on the file.
// Throws std::bad_alloc (and then closes fd).
file file::adopt(int fd, std::string path, open_mode mode, bool seekable, bool polled) {
  file f(fd, std::move(path));
  f.append_ = mode == open_mode::append;
  f.seekable_ = seekable;
  f.polled_ = polled;
  f.gen_ = fd_table::current().open(fd).gen;
  return f;
}

file file::open(std::string_view path, open_mode mode, unsigned perms) {
  std::string p(path);
  bool not_a_file = false;
  bool seekable = true;
  bool polled = !fd_table::current().native();
  const int fd = open_file(p, mode, perms, &not_a_file, &seekable, &polled);
  if (fd < 0) {
    if (not_a_file) {
      throw std::system_error(errno_code(-fd), "tendril::io: open " + p +
                                                   ": a FIFO or socket, not a file (use "
                                                   "tendril::net or the hooks for it)");
    }
    fail("open", p, errno_code(-fd));
  }
  return adopt(fd, std::move(p), mode, seekable, polled);
}

file file::open(std::string_view path, std::error_code& ec) {
  return open(path, open_mode::read, 0644, ec);
}

file file::open(std::string_view path, open_mode mode, std::error_code& ec) {
  return open(path, mode, 0644, ec);
}

file file::open(std::string_view path, open_mode mode, unsigned perms, std::error_code& ec) {
  ec.clear();
  std::string p(path);
  bool not_a_file = false;
  bool seekable = true;
  bool polled = !fd_table::current().native();
  const int fd = open_file(p, mode, perms, &not_a_file, &seekable, &polled);
  if (fd < 0) {
    ec = errno_code(-fd);
    return file();
  }
  try {
    return adopt(fd, std::move(p), mode, seekable, polled);
  } catch (const std::bad_alloc&) {
    ec = errno_code(ENOMEM);
    return file();
  }
}

file::file(file&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      gen_(other.gen_),
      pos_(other.pos_),
      append_(other.append_),
      seekable_(other.seekable_),
      polled_(other.polled_),
      path_(std::move(other.path_)) {}

file& file::operator=(file&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = std::exchange(other.fd_, -1);
    gen_ = other.gen_;
    pos_ = other.pos_;
    append_ = other.append_;
    seekable_ = other.seekable_;
    polled_ = other.polled_;
    path_ = std::move(other.path_);
  }
  return *this;
}

file::~file() { close(); }

void file::close() noexcept {
  if (fd_ < 0) return;
  if (fd_table* t = fd_table::peek()) {
    if (fd_record* r = t->find(fd_, gen_)) t->close(*r);
  }
  ::close(fd_);
  fd_ = -1;
}

std::size_t file::read_at(void* buf, std::size_t len, std::uint64_t offset, std::error_code& ec) {
  ec.clear();
  if (fd_ < 0) {
    ec = errno_code(EBADF);
    return 0;
  }
  // A device that cannot seek (a terminal) is read where it is, as read(2) does: pread(2)
  // would fail with ESPIPE.
  const std::int64_t at = seekable_ ? static_cast<std::int64_t>(offset) : -1;
  if (seekable_ && offset > max_offset) {
    ec = errno_code(EINVAL);  // as pread(2) says for a negative offset
    return 0;
  }
  if (len == 0) return 0;
  fd_table& t = fd_table::current();
  if (polled_ || t.native()) {
    std::int64_t rc;
    if (polled_) {
      rc = polled_io(t, fd_, gen_, io_direction::read, buf, len);
    } else {
      op_state st;
      st.op.op = io_op::code::read;
      st.op.fd = fd_;
      st.op.buf = buf;
      st.op.len = len;
      st.op.offset = static_cast<std::uint64_t>(at);  // -1: the file position
      rc = run_keeping_bytes(t, t.find(fd_, gen_), st);
    }
    if (rc < 0) {
      ec = errno_code(static_cast<int>(-rc));
      return 0;
    }
    return static_cast<std::size_t>(rc);
  }
  const int d = dup_for_job(fd_);
  if (d < 0) {
    ec = errno_code(-d);
    return 0;
  }
  read_result r = offload(pool_read, job_fd(d), len, at);
  if (r.err) {
    ec = errno_code(r.err);
    return 0;
  }
  std::memcpy(buf, r.data.get(), r.size);
  return r.size;
}

std::size_t file::write_at(const void* buf, std::size_t len, std::uint64_t offset,
                           std::error_code& ec) {
  ec.clear();
  if (fd_ < 0) {
    ec = errno_code(EBADF);
    return 0;
  }
  // At the file position, which an O_APPEND file keeps at its end, and where a device that
  // cannot seek writes anyway.
  const bool positional = seekable_ && !append_;
  const std::int64_t at = positional ? static_cast<std::int64_t>(offset) : -1;
  if (positional && offset > max_offset) {
    ec = errno_code(EINVAL);
    return 0;
  }
  if (len == 0) return 0;
  fd_table& t = fd_table::current();
  std::int64_t rc;
  if (polled_) {
    rc = polled_io(t, fd_, gen_, io_direction::write, const_cast<void*>(buf), len);
  } else if (t.native()) {
    op_state st;
    st.op.op = io_op::code::write;
    st.op.fd = fd_;
    st.op.buf = const_cast<void*>(buf);
    st.op.len = len;
    st.op.offset = static_cast<std::uint64_t>(at);
    rc = run_keeping_bytes(t, t.find(fd_, gen_), st);
  } else if (const int d = dup_for_job(fd_); d < 0) {
    rc = d;
  } else {
    rc = offload(pool_write, job_fd(d),
                 std::string(static_cast<const char*>(buf), std::min(len, pool_chunk)), at);
  }
  if (rc < 0) {
    ec = errno_code(static_cast<int>(-rc));
    return 0;
  }
  return static_cast<std::size_t>(rc);
}

std::size_t file::read_at(void* buf, std::size_t len, std::uint64_t offset) {
  std::error_code ec;
  std::size_t n = read_at(buf, len, offset, ec);
  if (ec) fail("read", path_, ec);
  return n;
}

std::size_t file::write_at(const void* buf, std::size_t len, std::uint64_t offset) {
  std::error_code ec;
  std::size_t n = write_at(buf, len, offset, ec);
  if (ec) fail("write", path_, ec);
  return n;
}

std::size_t file::read(void* buf, std::size_t len) {
  std::size_t n = read_at(buf, len, pos_);
  pos_ += n;
  return n;
}

std::size_t file::write(const void* buf, std::size_t len) {
  std::size_t n = write_at(buf, len, pos_);
  pos_ += n;
  return n;
}

std::size_t file::read(void* buf, std::size_t len, std::error_code& ec) {
  std::size_t n = read_at(buf, len, pos_, ec);
  pos_ += n;
  return n;
}

std::size_t file::write(const void* buf, std::size_t len, std::error_code& ec) {
  std::size_t n = write_at(buf, len, pos_, ec);
  pos_ += n;
  return n;
}

std::uint64_t file::size(std::error_code& ec) const {
  ec.clear();
  struct stat st {};
  if (fd_ < 0 || ::fstat(fd_, &st) != 0) {
    ec = errno_code(fd_ < 0 ? EBADF : errno);
    return 0;
  }
  return static_cast<std::uint64_t>(st.st_size);
}

std::uint64_t file::size() const {
  std::error_code ec;
  std::uint64_t n = size(ec);
  if (ec) fail("fstat", path_, ec);
  return n;
}

std::string read_file(std::string_view path, std::error_code& ec) {
  file f = file::open(path, open_mode::read, ec);
  if (ec) return {};
  std::string out;
  std::uint64_t off = 0;
  std::size_t chunk = 64 * 1024;
  while (true) {
    out.resize(off + chunk);
    std::size_t n = f.read_at(out.data() + off, chunk, off, ec);
    if (ec) return {};
    off += n;
    if (n == 0) break;
    if (chunk < (1u << 20)) chunk *= 2;
  }
  out.resize(off);
  return out;
}

std::string read_file(std::string_view path) {
  std::error_code ec;
  std::string out = read_file(path, ec);
  if (ec) fail("read", std::string(path), ec);
  return out;
}

void write_file(std::string_view path, std::string_view data, std::error_code& ec) {
  file f = file::open(path, open_mode::write, ec);
  if (ec) return;
  std::uint64_t off = 0;
  while (off < data.size()) {
    const std::size_t n = f.write_at(data.data() + off, data.size() - off, off, ec);
    if (ec) return;
    if (n == 0) {  // a regular file that takes nothing: do not loop for ever
      ec = errno_code(EIO);
      return;
    }
    off += n;
  }
}

void write_file(std::string_view path, std::string_view data) {
  std::error_code ec;
  write_file(path, data, ec);
  if (ec) fail("write", std::string(path), ec);
}

namespace detail {

bool wait_ready(int fd, bool for_read, std::int64_t deadline_ns, std::error_code* ec) {
  if (ec) ec->clear();
  auto fail_with = [&](int err) {
    if (ec) {
      *ec = errno_code(err);
      return;
    }
    throw std::system_error(errno_code(err), "tendril::io::wait_" +
                                                 std::string(for_read ? "readable" : "writable") +
                                                 " (fd " + std::to_string(fd) + ")");
  };
  // Look first: a descriptor that is ready now needs no wait (and a time limit of zero must
  // still see it), and a closed one is EBADF on every backend (io_uring's poll would report
  // it as ready). Tests: wait_ready.a_closed_descriptor_fails_with_ebadf,
  // wait_ready.a_zero_time_limit_still_sees_a_ready_descriptor.
  if (fd < 0) {  // poll() would skip it, and wait forever
    fail_with(EBADF);
    return false;
  }
  // look() is 1 if fd is ready, 0 if not, or -errno (EBADF for a closed one).
  auto look = [&] {
    pollfd now{fd, static_cast<short>(for_read ? POLLIN : POLLOUT), 0};
    int n;
    do {
      n = ::poll(&now, 1, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    return n > 0 && (now.revents & POLLNVAL) ? -EBADF : n;
  };
  if (const int n = look(); n != 0) {
    if (n < 0) fail_with(-n);
    return n > 0;
  }
  fd_table& t = fd_table::current();
  fd_record* r = t.lookup(fd);
  if (!(r && r->open)) {
    r = &t.open(fd);
    // Marked as the hooks' own: a hooked close() of fd then ends this wait with EBADF (it
    // waited on until its time limit, and on io_uring the poll kept the file open).
    r->borrowed = true;
    r->opened_for_ready_wait = true;
  }
  // The record is let go when the last of these waits ends, so that a number closed and
  // reused behind our back starts afresh (the backend may still watch the old file); never
  // while another greenlet (a second wait, a hooked read) waits on it.
  // Test: wait_ready.one_waiter_running_out_of_time_leaves_the_others_waiting.
  ++r->ready_waits;
  struct release {
    fd_table& t;
    fd_record* r;
    std::uint32_t gen;
    ~release() {
      if (r->gen != gen) return;  // a new life after a close: not ours
      if (--r->ready_waits == 0 && r->opened_for_ready_wait && r->open && r->readers.empty() &&
          r->writers.empty() && r->ops == nullptr && r->observers.empty())
        t.close(*r);
    }
  } done{t, r, r->gen};
  int rc = t.wait(
      *r, for_read ? tendril::detail::io_direction::read : tendril::detail::io_direction::write,
      deadline_ns);
  if (rc == -ETIMEDOUT) return false;
  // The poll backend reports a descriptor closed behind our back (a plain close) as ready,
  // where it finds the number gone: look again. (The others keep waiting on their watch.)
  // Test: wait_ready.a_descriptor_closed_during_the_wait_is_never_reported_ready.
  if (rc == 0 && !t.io().persistent()) {
    if (const int n = look(); n < 0) rc = n;
  }
  if (rc < 0) {
    fail_with(-rc);
    return false;
  }
  return true;
}

}  // namespace detail

void wait_readable(int fd) { detail::wait_ready(fd, true, tendril::detail::forever_ns, nullptr); }
void wait_writable(int fd) { detail::wait_ready(fd, false, tendril::detail::forever_ns, nullptr); }
void wait_readable(int fd, std::error_code& ec) {
  detail::wait_ready(fd, true, tendril::detail::forever_ns, &ec);
}
void wait_writable(int fd, std::error_code& ec) {
  detail::wait_ready(fd, false, tendril::detail::forever_ns, &ec);
}

}  // namespace tendril::io
