// libtendril_preload.so: preloaded (LD_PRELOAD, `tendril run -- PROGRAM`) into a program
// that links libtendril.so, it calls patch_all() before the program's main() runs. It holds
// no copy of tendril: it needs the program's own libtendril.so, so that the hooks, the hub
// and the greenlets are one and the same.
#include "tendril/monkey/monkey.hpp"

namespace {
[[gnu::constructor]] void patch_at_load() { tendril::monkey::patch_all(); }
}  // namespace
