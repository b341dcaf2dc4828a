// fenced<T>: one object on a page of its own, which destroy() makes inaccessible, so that a
// later touch of the destroyed object faults at once in any build (a freed heap block may be
// touched silently, or look like a locked mutex and hang the toucher).
#ifndef TENDRIL_TESTS_SUPPORT_FENCED_HPP
#define TENDRIL_TESTS_SUPPORT_FENCED_HPP

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
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

}  // namespace tendril::test

#endif
