# berth_library(NAME SOURCES ... DEPS ...)
# One library target per component, named berth_<NAME>; headers are included as
# "<component>/<file>.h" from src/. A component links only the targets it is allowed to use,
# so reaching into another component's implementation fails to compile.
function(berth_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(berth_${name} STATIC ${ARG_SOURCES})
  target_include_directories(berth_${name} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(berth_${name} PUBLIC ${ARG_DEPS})
  # BERTH_UNITY (CMakeLists.txt): libraries of one source gain nothing from it and stay as they are.
  list(LENGTH ARG_SOURCES source_count)
  if(BERTH_UNITY AND source_count GREATER 1)
    set_target_properties(berth_${name} PROPERTIES UNITY_BUILD ON UNITY_BUILD_BATCH_SIZE ${BERTH_UNITY_BATCH_SIZE})
  endif()
endfunction()
