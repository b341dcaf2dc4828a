#include "tendril/task/local.hpp"

#include <atomic>
#include <vector>

#include "greenlet/greenlet_record.hpp"
#include "greenlet/thread_state.hpp"

namespace tendril::detail {
namespace {

struct local_entry {
  std::uint64_t key;
  void* value;
  void (*destroy)(void*) noexcept;
};
using local_table = std::vector<local_entry>;

std::atomic<std::uint64_t> g_next_key{1};

void cleanup(greenlet_record* r) noexcept {
  // In reverse order of creation, one at a time, with the table still in place: a destructor
  // may use a value made earlier (still alive, and found), or make a new one (destroyed next).
  while (auto* table = static_cast<local_table*>(r->locals)) {
    if (table->empty()) {
      r->locals = nullptr;
      delete table;
      return;
    }
    const local_entry e = table->back();
    table->pop_back();
    e.destroy(e.value);
  }
}

local_table& table_of_current() {
  static const bool hooked = (set_locals_cleanup(&cleanup), true);
  (void)hooked;
  greenlet_record* r = thread_state::get().current();
  if (!r->locals) r->locals = new local_table();
  return *static_cast<local_table*>(r->locals);
}

}  // namespace

std::uint64_t new_local_key() noexcept {
  return g_next_key.fetch_add(1, std::memory_order_relaxed);
}

void* local_find(std::uint64_t key) {
  greenlet_record* r = thread_state::get().current();
  if (!r->locals) return nullptr;
  for (auto& e : *static_cast<local_table*>(r->locals)) {
    if (e.key == key) return e.value;
  }
  return nullptr;
}

void local_insert(std::uint64_t key, void* value, void (*destroy)(void*) noexcept) {
  table_of_current().push_back(local_entry{key, value, destroy});
}

void local_erase(std::uint64_t key) {
  greenlet_record* r = thread_state::get().current();
  if (!r->locals) return;
  auto& t = *static_cast<local_table*>(r->locals);
  for (auto it = t.begin(); it != t.end(); ++it) {
    if (it->key == key) {
      local_entry e = *it;
      t.erase(it);
      e.destroy(e.value);
      return;
    }
  }
}

}  // namespace tendril::detail
