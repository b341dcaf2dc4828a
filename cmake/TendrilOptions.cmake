# Build options, warnings and sanitizers for every tendril target.

option(TENDRIL_BUILD_TESTS "Build the test suite" ON)
option(TENDRIL_BUILD_BENCH "Build the benchmarks (needs Google Benchmark)" OFF)
option(TENDRIL_BUILD_APPS "Build the tendril command" ON)
option(TENDRIL_BUILD_EXAMPLES "Build the examples and the documentation snippets" ON)
option(TENDRIL_CHECK_HEADERS "Compile every public header on its own (tendril_checkheaders)" ON)
option(TENDRIL_WERROR "Treat warnings as errors" OFF)
option(TENDRIL_ASAN "Build with AddressSanitizer" OFF)
option(TENDRIL_UBSAN "Build with UndefinedBehaviorSanitizer" OFF)
option(TENDRIL_TSAN "Build with ThreadSanitizer" OFF)

# The machine switch: hand-written assembly, or glibc's ucontext (slower, but understood by
# valgrind and available on targets without an assembly port).
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  set(_tendril_arch x86_64)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64|ARM64)$")
  set(_tendril_arch arm64)
else()
  set(_tendril_arch unknown)
endif()
set(TENDRIL_ARCH ${_tendril_arch} CACHE STRING "Target architecture of the context switch" FORCE)
if(TENDRIL_ARCH STREQUAL "unknown")
  set(_tendril_default_context ucontext)
else()
  set(_tendril_default_context asm)
endif()
set(TENDRIL_CONTEXT ${_tendril_default_context} CACHE STRING "Context switch: asm or ucontext")
set_property(CACHE TENDRIL_CONTEXT PROPERTY STRINGS asm ucontext)
if(NOT TENDRIL_CONTEXT MATCHES "^(asm|ucontext)$")
  message(FATAL_ERROR "TENDRIL_CONTEXT must be asm or ucontext, not '${TENDRIL_CONTEXT}'")
endif()
if(TENDRIL_CONTEXT STREQUAL "asm" AND TENDRIL_ARCH STREQUAL "unknown")
  message(FATAL_ERROR "no assembly context switch for ${CMAKE_SYSTEM_PROCESSOR}; use -DTENDRIL_CONTEXT=ucontext")
endif()

# Stack guards as page-table markers (MADV_GUARD_INSTALL, Linux 6.13+) where the kernel has
# them. Off: mprotect'ed guard pages everywhere. The aarch64 preset turns it off because
# qemu-user cannot see markers (it keeps its own page flags), so an overflow under emulation
# would not reach tendril's handler.
option(TENDRIL_GUARD_MARKERS "Use MADV_GUARD_INSTALL guard markers where the kernel has them" ON)

# io_uring through liburing (Debian's liburing-dev), when it is there.
find_path(LIBURING_INCLUDE_DIR liburing.h)
find_library(LIBURING_LIBRARY NAMES uring)
if(LIBURING_INCLUDE_DIR AND LIBURING_LIBRARY)
  set(_tendril_uring_default ON)
else()
  set(_tendril_uring_default OFF)
endif()
option(TENDRIL_WITH_IO_URING "Build the io_uring backend (needs liburing)" ${_tendril_uring_default})
if(TENDRIL_WITH_IO_URING AND NOT (LIBURING_INCLUDE_DIR AND LIBURING_LIBRARY))
  message(FATAL_ERROR "TENDRIL_WITH_IO_URING is on but liburing was not found (apt-get install liburing-dev)")
endif()

# TLS (tendril::net::tls_stream) through OpenSSL 3 (Debian's libssl-dev). On by default; a
# build without it (the aarch64 cross build, which has no arm64 OpenSSL) leaves tls.cpp out.
option(TENDRIL_WITH_TLS "Build tendril::net::tls_stream (needs OpenSSL 3, libssl-dev)" ON)
if(TENDRIL_WITH_TLS)
  find_package(OpenSSL 3.0 REQUIRED)
  set(TENDRIL_HAS_TLS 1)
else()
  set(TENDRIL_HAS_TLS 0)
endif()

if(TENDRIL_TSAN AND (TENDRIL_ASAN OR TENDRIL_UBSAN))
  message(FATAL_ERROR "TENDRIL_TSAN cannot be combined with TENDRIL_ASAN or TENDRIL_UBSAN")
endif()

# tendril_warnings: an interface target every tendril target links.
add_library(tendril_warnings INTERFACE)
target_compile_options(tendril_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
    -Wold-style-cast -Wcast-align -Woverloaded-virtual -Wnull-dereference -Wformat=2>
  $<$<COMPILE_LANGUAGE:C>:-Wall -Wextra>)
# GCC 12 reports impossible overlaps in std::string concatenation at -O3 (GCC bug 105651).
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  target_compile_options(tendril_warnings INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-Wno-restrict>)
endif()
if(TENDRIL_WERROR)
  target_compile_options(tendril_warnings INTERFACE $<$<COMPILE_LANGUAGE:CXX,C>:-Werror>)
endif()

set(_tendril_san_flags "")
if(TENDRIL_ASAN)
  list(APPEND _tendril_san_flags -fsanitize=address)
endif()
if(TENDRIL_UBSAN)
  list(APPEND _tendril_san_flags -fsanitize=undefined -fno-sanitize-recover=undefined)
endif()
if(TENDRIL_TSAN)
  list(APPEND _tendril_san_flags -fsanitize=thread)
endif()
if(_tendril_san_flags)
  # Sanitizers apply to everything built here, googletest included, so that ASan sees every
  # allocation and TSan every synchronisation.
  add_compile_options(${_tendril_san_flags} -fno-omit-frame-pointer)
  add_link_options(${_tendril_san_flags})
endif()

if(TENDRIL_CONTEXT STREQUAL "asm")
  set(TENDRIL_CONTEXT_ASM 1)
else()
  set(TENDRIL_CONTEXT_ASM 0)
endif()
configure_file(${PROJECT_SOURCE_DIR}/include/tendril/config.hpp.in
  ${PROJECT_BINARY_DIR}/include/tendril/config.hpp @ONLY)
