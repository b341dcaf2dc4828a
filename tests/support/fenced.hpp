// fenced<T>: one object on a page of its own, which destroy() makes inaccessible, so that a
// later touch of the destroyed object faults at once in any build (a freed heap block may be
// touched silently, or look like a locked mutex and hang the toucher). refilled<T>: the heap
// block a T just freed, taken again and filled, so that a later write to it shows.
#ifndef TENDRIL_TESTS_SUPPORT_FENCED_HPP
#define TENDRIL_TESTS_SUPPORT_FENCED_HPP

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <new>
#include <utility>

namespace tendril::test {

template <class T>
class fenced {
 public:
  template <class... Args>
  explicit fenced(Args&&... args) {
    void* p = ::mmap(nullptr, size(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    page_ = p;
    obj_ = new (p) T(std::forward<Args>(args)...);
  }
  fenced(const fenced&) = delete;
  fenced& operator=(const fenced&) = delete;
  ~fenced() {
    if (obj_ != nullptr) obj_->~T();
    ::munmap(page_, size());
  }

  T* operator->() const noexcept { return obj_; }
  T& operator*() const noexcept { return *obj_; }

  // destroy() runs T's destructor, then forbids every access to the page. Any thread.
  void destroy() {
    obj_->~T();
    obj_ = nullptr;
    ::mprotect(page_, size(), PROT_NONE);
  }

 private:
  static std::size_t size() noexcept {
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    return (sizeof(T) + page - 1) / page * page;
  }
  void* page_ = nullptr;
  T* obj_ = nullptr;
};

// refilled<T> takes a block of sizeof(T) from the heap and fills it: made right after a T was
// deleted, it is that T's block (the allocator hands a just-freed block out again first), and
// untouched() says whether anything wrote to the freed T since.
template <class T>
class refilled {
 public:
  refilled() : block_(static_cast<unsigned char*>(::operator new(sizeof(T)))) {
    std::memset(block_, fill, sizeof(T));
  }
  refilled(const refilled&) = delete;
  refilled& operator=(const refilled&) = delete;
  ~refilled() { ::operator delete(block_); }

  bool untouched() const noexcept {
    return std::all_of(block_, block_ + sizeof(T), [](unsigned char b) { return b == fill; });
  }

 private:
  static constexpr unsigned char fill = 0xAB;
  unsigned char* block_;
};

}  // namespace tendril::test

#endif
