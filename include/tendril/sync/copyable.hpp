// Whether a result can be handed out as a copy, for the get() of task<R> and async_result<T>:
// those copy a result that can be copied and move out one that cannot. Nothing here is API.
#ifndef TENDRIL_SYNC_COPYABLE_HPP
#define TENDRIL_SYNC_COPYABLE_HPP

#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>

namespace tendril::detail {

// std::is_copy_constructible answers yes for a standard container of move-only elements
// (std::vector<std::unique_ptr<int>>): the containers' copy constructors are not
// constrained, and only instantiating one fails. copyable<T> also asks the elements of the
// allocator-aware containers (the standard library's, and those made like them), down
// through nested ones, optionals, variants, pairs and tuples. Other types (a struct with a
// vector<unique_ptr> member) are taken at std::is_copy_constructible's word.
template <class T, class = void>
struct copyable : std::is_copy_constructible<T> {};

// An allocator-aware container: copyable if it says so and its elements are. (A view or an
// iterator, which has a value_type but no allocator, copies without copying its elements.)
template <class T>
struct copyable<T, std::void_t<typename T::value_type, typename T::allocator_type>>
    : std::conjunction<std::is_copy_constructible<T>,
                       std::disjunction<std::is_same<std::remove_cv_t<typename T::value_type>,
                                                     std::remove_cv_t<T>>,
                                        copyable<std::remove_cv_t<typename T::value_type>>>> {};

template <class T>
struct copyable<std::optional<T>> : copyable<T> {};

template <class... Ts>
struct copyable<std::variant<Ts...>> : std::conjunction<copyable<Ts>...> {};

template <class A, class B>
struct copyable<std::pair<A, B>> : std::conjunction<copyable<A>, copyable<B>> {};

template <class... Ts>
struct copyable<std::tuple<Ts...>> : std::conjunction<copyable<Ts>...> {};

template <class T>
inline constexpr bool copyable_v = copyable<T>::value;

}  // namespace tendril::detail

#endif
