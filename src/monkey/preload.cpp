// libtendril_preload.so: preloaded (LD_PRELOAD, `tendril run -- PROGRAM`) into a program
// that links libtendril.so, it calls patch_all() before the program's main() runs. It holds
// no copy of tendril: it needs the program's own libtendril.so, so that the hooks, the hub
// and the greenlets are one and the same. Preloaded into a program that does not link
// libtendril.so (a child that inherits LD_PRELOAD), the hooks come after libc's functions:
// patch_all() finds those (real.cpp) and the program runs as without it.
#include "tendril/monkey/monkey.hpp"

namespace {
[[gnu::constructor]] void patch_at_load() { tendril::monkey::patch_all(); }
}  // namespace
