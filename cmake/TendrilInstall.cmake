# install(): the library, its headers, the tendril command, a CMake package
# (find_package(tendril) -> tendril::tendril) and a pkg-config file.
include(CMakePackageConfigHelpers)

install(TARGETS tendril EXPORT tendrilTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/tendril DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  FILES_MATCHING PATTERN "*.hpp")
install(FILES ${PROJECT_BINARY_DIR}/include/tendril/config.hpp DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/tendril)
# With a shared libtendril, the preload library too (`tendril run`): it needs libtendril.so.
if(BUILD_SHARED_LIBS)
  install(TARGETS tendril_preload LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
endif()
if(TARGET tendril_command)
  install(TARGETS tendril_command RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()

set(_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/tendril)
install(EXPORT tendrilTargets NAMESPACE tendril:: DESTINATION ${_cmake_dir})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/tendrilConfig.cmake.in
  ${PROJECT_BINARY_DIR}/tendrilConfig.cmake INSTALL_DESTINATION ${_cmake_dir})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/tendrilConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/tendrilConfig.cmake ${PROJECT_BINARY_DIR}/tendrilConfigVersion.cmake
  DESTINATION ${_cmake_dir})

# The .pc file finds the prefix relative to itself, so an installed tree can be moved.
file(RELATIVE_PATH TENDRIL_PC_TO_PREFIX "/p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/p")
if(TENDRIL_WITH_TLS)
  set(TENDRIL_PC_TLS_LIBS "-lssl -lcrypto ")
else()
  set(TENDRIL_PC_TLS_LIBS "")
endif()
if(TENDRIL_WITH_IO_URING)
  set(TENDRIL_PC_URING_LIBS "-luring ")
else()
  set(TENDRIL_PC_URING_LIBS "")
endif()
configure_file(${PROJECT_SOURCE_DIR}/cmake/tendril.pc.in ${PROJECT_BINARY_DIR}/tendril.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/tendril.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
