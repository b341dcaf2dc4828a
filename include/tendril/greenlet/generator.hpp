// tendril::generator<Y, S>: python's generators with yield and send, but stackful: the body
// runs on a greenlet of its own, so a function it calls may yield too (docs/generators.md).
#ifndef TENDRIL_GREENLET_GENERATOR_HPP
#define TENDRIL_GREENLET_GENERATOR_HPP

#include <cstddef>
#include <exception>
#include <iterator>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include "tendril/greenlet/exceptions.hpp"
#include "tendril/greenlet/greenlet.hpp"

namespace tendril {

namespace detail {
// plan_resume() makes the current greenlet the parent of g (when it is not already) and
// plans a switch to g without a value; plan_suspend() plans the switch from g, which must be
// running, back to its parent. complete_bare() finishes either after the jump, rethrowing
// what was raised into the resumed side. See switch_inline() for why these are split.
switch_plan plan_resume(greenlet_record* g);
switch_plan plan_suspend(greenlet_record* g);
void complete_bare(bool jumped);
// mark_generator_body() marks g as a generator's body, which runs for its consumer: a kill
// or timeout of the consumer reaches a blocking call of the body (L3's parked_waiter()).
// unmark_generator_body() undoes it when the generator lets its body go (generator::detach()):
// the body's cleanup then runs for nobody, and a kill or timeout of the greenlet destroying
// the generator (its parent meanwhile) is that greenlet's own.
void mark_generator_body(greenlet_record* g) noexcept;
void unmark_generator_body(greenlet_record* g) noexcept;
// refuse_resume() throws for a next() or send() that may not resume body g: wrong_thread
// from another thread, else generator_running naming *inside, the greenlet inside next().
[[noreturn]] void refuse_resume(greenlet_record* g, greenlet_record* const* inside);
inline bool generator_is_current(greenlet_record* g) noexcept {
  thread_core* t = t_thread_core;
  return t != nullptr && t->current_ == g;
}

inline void switch_bare(switch_plan p) {
  if (p.to == nullptr) return complete_bare(false);
  jump_to(p);
  complete_bare(true);
}

// resume_generator() switches from the running greenlet into generator body g (its parent
// becomes the running greenlet); suspend_generator() switches from g, which is running, back
// to its parent. Neither hands a value (the generator's state does). The fast paths cover
// every item after the first: g is already the running greenlet's child.
#if TENDRIL_SWITCH_INLINE
// switch_bare_fast() is the inline switch without a value, for a target the caller checked.
template <bool Quiet>
[[gnu::always_inline]] inline void switch_bare_fast(thread_core* t, greenlet_record* to) {
  if (jump_to(plan_core<Quiet>(t, to)) != nullptr) [[unlikely]]
    complete_bare(true);
}
#endif

inline void resume_generator(greenlet_record* g) {
#if TENDRIL_SWITCH_INLINE
  thread_core* t = t_thread_core;
  if (can_switch_fast(t, g) && core_of(g)->parent == t->current_) [[likely]]
    return switch_bare_fast<true>(t, g);
#endif
  switch_bare(plan_resume(g));
}

inline void suspend_generator(greenlet_record* g) {
#if TENDRIL_SWITCH_INLINE
  greenlet_record* to = core_of(g)->parent;
  if (core_of(to)->status != greenlet_status::dead) [[likely]]
    return switch_bare_fast<false>(t_thread_core, to);
#endif
  switch_bare(plan_suspend(g));
}

struct no_value {};
}  // namespace detail

// generator<Y, S> runs body(yielder&) on its own greenlet. Each y.yield(v) hands v to the
// consumer and suspends the body until the consumer asks for the next value; with a send
// type S, yield() returns what the consumer sent. Move-only.
template <class Y, class S = void>
class generator {
  static_assert(!std::is_reference_v<Y> && !std::is_void_v<Y>,
                "generator<Y, S>: Y must be a value type");
  static_assert(!std::is_reference_v<S>,
                "generator<Y, S>: S must be a value type (send() moves the value into the body; "
                "send a pointer to share an object)");
  using sent_type = std::conditional_t<std::is_void_v<S>, detail::no_value, S>;

  struct state {
    std::optional<Y> out;
    std::optional<sent_type> in;
    // The greenlet inside next() or send() while the body runs for it (also while the body
    // is parked in the hub), else null. Here, not in the generator: it follows a move.
    detail::greenlet_record* inside = nullptr;
    // Where a greenlet_exit that ended the body goes for the consumer: the generator's exit_
    // (null once the generator let the body go: yield() refuses from then on). Not here: the
    // state is destroyed with the body's callable when the body ends, before next() looks.
    std::exception_ptr* exit = nullptr;
  };

 public:
  // yielder is what the body receives: its one operation hands a value out.
  class yielder {
   public:
    // yield() hands `value` to the consumer and suspends the body until the next next() or
    // send(); returns the value sent (S), or nothing when S is void. Must be called from the
    // body's own greenlet (directly or from a function it calls): elsewhere it throws
    // std::logic_error. Switches: yes. If the generator is destroyed meanwhile, greenlet_exit
    // is raised here; a yield() after that (the body caught it) throws std::logic_error.
    decltype(auto) yield(Y value) {
      if (!detail::generator_is_current(gen_)) {
        throw std::logic_error("tendril::generator: yield() called outside the generator's body");
      }
      if (st_->exit == nullptr) [[unlikely]] {
        // Nothing would ever resume the body: its destructors would never run, its stack
        // would leak (python's "generator ignored GeneratorExit").
        throw std::logic_error(
            "tendril::generator: yield() in a generator being destroyed (its body caught "
            "greenlet_exit and yielded instead of ending)");
      }
      st_->out.emplace(std::move(value));
      detail::suspend_generator(gen_);
      if constexpr (!std::is_void_v<S>) {
        sent_type v = std::move(*st_->in);
        st_->in.reset();
        return v;
      }
    }

   private:
    friend class generator;
    yielder(state* st, detail::greenlet_record* g) : st_(st), gen_(g) {}
    state* st_;
    detail::greenlet_record* gen_;
  };

  // generator(body, stack) makes a generator; the body runs from the first next() or
  // range-for step. body is callable as body(yielder&). Throws as greenlet's constructor.
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, generator>>>
  explicit generator(F&& body, stack_size stack = {}) {
    // The state lives beside the body, in the greenlet's record (off its stack).
    struct run {
      std::decay_t<F> body;
      state st;
      void operator()() {
        yielder y(&st, greenlet::current().record());
        try {
          body(y);
        } catch (const greenlet_exit&) {
          // Raised at a blocking call of the body by a kill of the consumer, which is inside
          // next() (the body runs for it): it goes on to the consumer, as it would if the
          // body ran on the consumer's own stack. At the generator's destruction it is just
          // the end: no next() is waiting for it.
          if (st.exit) *st.exit = std::current_exception();
        }
      }
    };
    g_ = greenlet(run{std::forward<F>(body), state{}}, stack);
    st_ = &state_of<run>(g_);
    st_->exit = &exit_;
    detail::mark_generator_body(g_.record());
  }

  generator(generator&& other) noexcept
      : exit_(std::move(other.exit_)),
        g_(std::move(other.g_)),
        st_(std::exchange(other.st_, nullptr)) {
    if (!done()) st_->exit = &exit_;
  }
  generator& operator=(generator&& other) noexcept {
    if (this != &other) {
      detach();  // the old body, unwound here, has no consumer left
      g_ = std::move(other.g_);
      st_ = std::exchange(other.st_, nullptr);
      exit_ = std::move(other.exit_);
      if (!done()) st_->exit = &exit_;
    }
    return *this;
  }
  generator(const generator&) = delete;
  generator& operator=(const generator&) = delete;
  // ~generator() unwinds an unfinished body (greenlet_exit is raised at its yield).
  ~generator() { detach(); }

  // next() resumes the body until it yields (returning the value) or ends (returning an
  // empty optional, also on every later call). An exception thrown by the body comes out
  // here. With a send type, the pending yield() returns S{}. Switches: yes.
  std::optional<Y> next() {
    std::optional<Y> v;
    next_into(v);
    return v;
  }

  // send() resumes the body with `value` as the result of its pending yield() and returns
  // the next value, or an empty optional once the body ended. The first resumption must be
  // next(): a body that has not started has no yield to receive a value (std::logic_error),
  // nor has an empty generator, one moved from (std::logic_error).
  template <class T = S, class = std::enable_if_t<!std::is_void_v<T>>>
  std::optional<Y> send(T value) {
    if (g_.empty()) {
      throw std::logic_error(
          "tendril::generator: send() on an empty generator (one moved from has no body)");
    }
    if (!g_.started()) {
      throw std::logic_error(
          "tendril::generator: send() before the body started; call next() first");
    }
    return resume_with(std::move(value));
  }

  // done() is true once the body has ended (returned, thrown, or never will run again).
  bool done() const noexcept { return g_.empty() || g_.dead(); }

  class iterator {
   public:
    using value_type = Y;
    using difference_type = std::ptrdiff_t;
    using reference = Y&;
    using iterator_concept = std::input_iterator_tag;
    iterator() = default;
    Y& operator*() const { return *gen_->current_; }
    Y* operator->() const { return &*gen_->current_; }
    iterator& operator++() {
      gen_->next_into(gen_->current_);
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return it.at_end(); }

   private:
    friend class generator;
    explicit iterator(generator* g) : gen_(g) {}
    bool at_end() const { return !gen_->current_.has_value(); }
    generator* gen_ = nullptr;
  };

  // begin() runs the body to its first yield; range-for then drains it.
  iterator begin() {
    next_into(current_);
    return iterator(this);
  }
  std::default_sentinel_t end() const noexcept { return {}; }

 private:
  template <class Run>
  static state& state_of(const greenlet& g);

  // next_into() is next() with the value (or nothing) put in `out`, which the iterator keeps
  // engaged from one item to the next: the value is then moved in alone. (Returning a fresh
  // optional and assigning it made the consumer store its engaged flag as one byte and reload
  // it in a wider word, which the store buffer cannot forward.)
  void next_into(std::optional<Y>& out) {
    if constexpr (std::is_void_v<S>) {
      resume_into(out);
    } else {
      static_assert(std::is_default_constructible_v<S>,
                    "generator<Y, S>::next() sends S{}, so S must be default constructible");
      resume_with_into(S{}, out);
    }
  }

  void resume_into(std::optional<Y>& out) {
    if (done()) {
      out.reset();
      return;
    }
    detail::greenlet_record* const g = g_.record();
    detail::thread_core* const t = detail::t_thread_core;
    // A second consumer must not take over a body that runs for the first: switched into
    // while parked in the hub, it died, and the first waited for ever (generator_test:
    // next_while_another_greenlet_is_inside_next_is_generator_running).
    if (t == nullptr || detail::core_of(g)->owner != t || st_->inside != nullptr) [[unlikely]]
      detail::refuse_resume(g, &st_->inside);
    st_->inside = t->current_;
    // Cleared however next() is left, unless the body ended: its state went with it. (A try
    // rather than a guard object, which measured 4% slower per item.)
    try {
      detail::resume_generator(g);
    } catch (...) {
      if (!g_.dead()) st_->inside = nullptr;
      throw;
    }
    if (g_.dead()) {
      if (exit_) std::rethrow_exception(std::exchange(exit_, nullptr));
      out.reset();
      return;
    }
    st_->inside = nullptr;
    // Field by field: the body stored the value and the flag apart, and a copy of the whole
    // optional would reload them as one word, which the store buffer cannot forward.
    if (!st_->out.has_value()) [[unlikely]] {
      out.reset();
    } else if constexpr (std::is_move_assignable_v<Y>) {
      if (out.has_value()) {
        *out = std::move(*st_->out);
      } else {
        out.emplace(std::move(*st_->out));
      }
    } else {
      out.emplace(std::move(*st_->out));
    }
    st_->out.reset();
  }
  void resume_with_into(sent_type value, std::optional<Y>& out) {
    if (done()) {
      out.reset();
      return;
    }
    if (g_.started()) st_->in.emplace(std::move(value));
    resume_into(out);
  }
  std::optional<Y> resume_with(sent_type value) {
    std::optional<Y> v;
    resume_with_into(std::move(value), v);
    return v;
  }

  void detach() noexcept {
    if (done()) return;
    st_->exit = nullptr;
    detail::unmark_generator_body(g_.record());
  }

  std::exception_ptr exit_;  // before g_: a body unwound by g_'s destruction may write it
  greenlet g_;
  state* st_ = nullptr;
  std::optional<Y> current_;
};

namespace detail {
// generator_callable() is where greenlet_create() put the callable of g.
void* greenlet_callable(greenlet_record* g) noexcept;
}  // namespace detail

template <class Y, class S>
template <class Run>
typename generator<Y, S>::state& generator<Y, S>::state_of(const greenlet& g) {
  return static_cast<Run*>(detail::greenlet_callable(g.record()))->st;
}

}  // namespace tendril

#endif
