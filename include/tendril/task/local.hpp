// tendril::local<T>: one value per greenlet (gevent.local.local).
#ifndef TENDRIL_TASK_LOCAL_HPP
#define TENDRIL_TASK_LOCAL_HPP

#include <cstdint>
#include <utility>

namespace tendril {

namespace detail {
std::uint64_t new_local_key() noexcept;
// local_find() is the current greenlet's value for key, or null.
void* local_find(std::uint64_t key);
// local_insert() stores value (which the greenlet then owns) for key; throws std::bad_alloc.
void local_insert(std::uint64_t key, void* value, void (*destroy)(void*) noexcept);
void local_erase(std::uint64_t key);
}  // namespace detail

// local<T>: each greenlet sees its own T, made (value-initialised) the first time it asks;
// a greenlet's values are destroyed when it ends (the thread's root: when the thread ends).
// Destroying the local<T> itself leaves existing values to their greenlets. Switches: no.
template <class T>
class local {
 public:
  local() : key_(detail::new_local_key()) {}
  local(const local&) = delete;
  local& operator=(const local&) = delete;

  // get() is this greenlet's value, made on first use.
  T& get() {
    if (void* v = detail::local_find(key_)) return *static_cast<T*>(v);
    T* v = new T();
    try {
      detail::local_insert(key_, v, &destroy);
    } catch (...) {
      delete v;
      throw;
    }
    return *v;
  }
  T& operator*() { return get(); }
  T* operator->() { return &get(); }

  // set() replaces this greenlet's value.
  template <class U>
  void set(U&& value) {
    get() = std::forward<U>(value);
  }
  // has_value() is true once this greenlet made its value.
  bool has_value() const { return detail::local_find(key_) != nullptr; }
  // reset() destroys this greenlet's value.
  void reset() { detail::local_erase(key_); }

 private:
  static void destroy(void* p) noexcept { delete static_cast<T*>(p); }
  std::uint64_t key_;
};

}  // namespace tendril

#endif
