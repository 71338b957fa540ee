# shmkit_warnings(target): warnings on, and errors for shmkit's own code.
function(shmkit_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
                                           -Wold-style-cast -Wcast-align)
  if(SHMKIT_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()

# shmkit_module(NAME DEPS...): library shmkit_NAME, alias shmkit::NAME, from NAME/src/*.cpp with
# public headers in NAME/include (included as <shmkit/NAME/...>).
function(shmkit_module name)
  file(GLOB _srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/src/*.cpp)
  if(NOT _srcs)  # a module still being written: keep the target so dependents configure
    set(_srcs ${CMAKE_CURRENT_BINARY_DIR}/shmkit_${name}_empty.cpp)
    file(WRITE ${_srcs} "// ${name}: no sources yet\n")
  endif()
  add_library(shmkit_${name} ${_srcs})
  add_library(shmkit::${name} ALIAS shmkit_${name})
  # Before 1.0 the ABI (and the layout in shared memory) may change with each minor version, so
  # the soname carries major.minor, as the package's version check does (SameMinorVersion).
  set_target_properties(shmkit_${name} PROPERTIES EXPORT_NAME ${name} OUTPUT_NAME shmkit_${name}
                        VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR})
  target_include_directories(shmkit_${name} PUBLIC
    $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  target_compile_features(shmkit_${name} PUBLIC cxx_std_20)
  target_link_libraries(shmkit_${name} PUBLIC ${ARGN})
  shmkit_warnings(shmkit_${name})
  install(TARGETS shmkit_${name} EXPORT shmkitTargets ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
          LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}/include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
endfunction()
