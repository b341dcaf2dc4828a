// tendril::monkey: blocking libc calls made cooperative (gevent.monkey).
#ifndef TENDRIL_MONKEY_MONKEY_HPP
#define TENDRIL_MONKEY_MONKEY_HPP

namespace tendril::monkey {

// patch_all() turns on the hooks: from then on, a blocking libc call made on a thread that
// has a hub (in any greenlet of it, its root included, but not in the hub's own loop) parks
// the calling greenlet instead of blocking the thread: the sleep family, read/write and the
// recv*/send* families, accept/connect, poll/select/epoll_wait, getaddrinfo and friends. What
// the caller sees stays libc's: the same results and errno, its own O_NONBLOCK,
// SO_RCVTIMEO/SO_SNDTIMEO, no other time limit. Calls on threads without a hub, and calls
// before patch_all(), are libc's own. docs/monkey.md has the table, function by function.
// Idempotent; any thread. Switches: no.
//
// Linking: the hooks are in libtendril.a and libtendril.so; calling patch_all() makes sure a
// static link keeps all of them. Until it is called, a hook is libc's call.
void patch_all();

// is_patched() is true once patch_all() ran.
bool is_patched() noexcept;

}  // namespace tendril::monkey

#endif
