// tendril::io: regular files read and written without stalling the hub: on io_uring the
// kernel does the I/O while the greenlet waits; on the other backends the calls run on the
// thread pool (a regular file is always "ready" to a readiness backend, so its reads would
// otherwise block the whole thread on the disk), but for a device that cannot seek and that the
// kernel can wait on (a terminal), waited on for readiness as a socket is (its descriptor is
// then non-blocking).
#ifndef TENDRIL_IO_FILE_HPP
#define TENDRIL_IO_FILE_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

#include "tendril/hub/deadline.hpp"

namespace tendril::io {

enum class open_mode {
  read,        // O_RDONLY
  write,       // O_WRONLY | O_CREAT | O_TRUNC
  append,      // O_WRONLY | O_CREAT | O_APPEND
  read_write,  // O_RDWR | O_CREAT
};

// file: an open regular file (closed on destruction). Every read and write switches;
// failures throw std::system_error naming the path (or fill the error_code twin).
class file {
 public:
  file() noexcept = default;
  // open() refuses a FIFO or a socket (EINVAL): opening a FIFO blocks until its other end
  // opens, and the net API and the hooks are for those.
  static file open(std::string_view path, open_mode mode = open_mode::read, unsigned perms = 0644);
  // The error_code twins of open() give an empty file (is_open() false) on failure.
  static file open(std::string_view path, std::error_code& ec);
  static file open(std::string_view path, open_mode mode, std::error_code& ec);
  static file open(std::string_view path, open_mode mode, unsigned perms, std::error_code& ec);
  file(file&& other) noexcept;
  file& operator=(file&& other) noexcept;
  file(const file&) = delete;
  file& operator=(const file&) = delete;
  ~file();

  // read_at() / write_at() at an offset; read() / write() at the file position (which they
  // move). read returns 0 at the end of the file. Like read(2), a call may move fewer bytes
  // than asked (at most 16 MiB on the thread pool, 0x7ffff000 through io_uring). An offset
  // above INT64_MAX is EINVAL. A device that cannot seek (a terminal) is read and written
  // where it is, whatever the offset, as read(2) and write(2) do.
  std::size_t read_at(void* buf, std::size_t len, std::uint64_t offset);
  std::size_t read_at(void* buf, std::size_t len, std::uint64_t offset, std::error_code& ec);
  std::size_t write_at(const void* buf, std::size_t len, std::uint64_t offset);
  std::size_t write_at(const void* buf, std::size_t len, std::uint64_t offset, std::error_code& ec);
  std::size_t read(void* buf, std::size_t len);
  std::size_t read(void* buf, std::size_t len, std::error_code& ec);
  std::size_t write(const void* buf, std::size_t len);
  std::size_t write(const void* buf, std::size_t len, std::error_code& ec);

  std::uint64_t size() const;
  std::uint64_t size(std::error_code& ec) const;
  bool is_open() const noexcept { return fd_ >= 0; }
  int native_handle() const noexcept { return fd_; }
  // close() closes the file; a read or write that another greenlet of this thread has under
  // way on it ends with EBADF (what it moved before stays moved). Never switches.
  void close() noexcept;

 private:
  file(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  static file adopt(int fd, std::string path, open_mode mode, bool seekable, bool polled);
  int fd_ = -1;
  std::uint32_t gen_ = 0;  // the life of fd_'s record in the thread's descriptor table
  std::uint64_t pos_ = 0;
  bool append_ = false;
  bool seekable_ = true;
  bool polled_ = false;  // non-blocking, waited for through the record (readiness backends)
  std::string path_;
};

// read_file() is the whole contents of path; write_file() replaces it with data.
std::string read_file(std::string_view path);
std::string read_file(std::string_view path, std::error_code& ec);
void write_file(std::string_view path, std::string_view data);
void write_file(std::string_view path, std::string_view data, std::error_code& ec);

// wait_readable() / wait_writable() wait until a descriptor that the caller owns is ready
// (gevent.socket.wait_read): for descriptors that are not tendril sockets, such as a pipe or
// a terminal. _for forms return false if the time ran out. Switches: yes. Throws
// std::system_error (EBADF...), or fills the error_code twin's ec.
void wait_readable(int fd);
void wait_writable(int fd);
void wait_readable(int fd, std::error_code& ec);
void wait_writable(int fd, std::error_code& ec);
template <class Rep, class Period>
bool wait_readable_for(int fd, std::chrono::duration<Rep, Period> d);
template <class Rep, class Period>
bool wait_writable_for(int fd, std::chrono::duration<Rep, Period> d);
template <class Rep, class Period>
bool wait_readable_for(int fd, std::chrono::duration<Rep, Period> d, std::error_code& ec);
template <class Rep, class Period>
bool wait_writable_for(int fd, std::chrono::duration<Rep, Period> d, std::error_code& ec);

namespace detail {
bool wait_ready(int fd, bool for_read, std::int64_t deadline_ns, std::error_code* ec);
}  // namespace detail

template <class Rep, class Period>
bool wait_readable_for(int fd, std::chrono::duration<Rep, Period> d) {
  return detail::wait_ready(fd, true, tendril::detail::deadline_after(d), nullptr);
}
template <class Rep, class Period>
bool wait_writable_for(int fd, std::chrono::duration<Rep, Period> d) {
  return detail::wait_ready(fd, false, tendril::detail::deadline_after(d), nullptr);
}
template <class Rep, class Period>
bool wait_readable_for(int fd, std::chrono::duration<Rep, Period> d, std::error_code& ec) {
  return detail::wait_ready(fd, true, tendril::detail::deadline_after(d), &ec);
}
template <class Rep, class Period>
bool wait_writable_for(int fd, std::chrono::duration<Rep, Period> d, std::error_code& ec) {
  return detail::wait_ready(fd, false, tendril::detail::deadline_after(d), &ec);
}

}  // namespace tendril::io

#endif
