# The C++ SDK of baseplate-serve, for native apps:
#   find_package(BaseplateServe REQUIRED)   # -DBaseplateServe_DIR=$(baseplate-serve --sdk-dir)
#   baseplate_serve_add_app(myapp myapp.cpp)            # an HTTP app: libmyapp.so
#   target_link_libraries(myapp PRIVATE BaseplateServe::thrift)   # a Thrift app also links libthrift
include(CMakeFindDependencyMacro)
find_dependency(Boost 1.74 CONFIG COMPONENTS headers)

if(NOT TARGET BaseplateServe::sdk)
  add_library(BaseplateServe::sdk INTERFACE IMPORTED)
  set_target_properties(BaseplateServe::sdk PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${CMAKE_CURRENT_LIST_DIR}/include"
    INTERFACE_COMPILE_FEATURES cxx_std_17
    INTERFACE_LINK_LIBRARIES Boost::headers)
endif()

if(NOT TARGET BaseplateServe::thrift)
  # A Thrift app links the libthrift the server loads, so that the process
  # holds one copy (one set of globals, one TOutput, one type_info per
  # exception). A manylinux wheel bundles it beside the package (auditwheel
  # gives it a unique soname, baseplate_serve.libs/libthrift-0-HASH...so) and
  # ships its headers in include/thrift; a build from source links the
  # system's, found with pkg-config.
  file(GLOB _bps_bundled_thrift "${CMAKE_CURRENT_LIST_DIR}/../../baseplate_serve.libs/libthrift-[0-9]*.so*")
  add_library(BaseplateServe::thrift INTERFACE IMPORTED)
  if(_bps_bundled_thrift AND EXISTS "${CMAKE_CURRENT_LIST_DIR}/include/thrift/Thrift.h")
    list(GET _bps_bundled_thrift 0 _bps_bundled_thrift)
    get_filename_component(_bps_bundled_thrift "${_bps_bundled_thrift}" REALPATH)
    set_target_properties(BaseplateServe::thrift PROPERTIES
      INTERFACE_LINK_LIBRARIES "BaseplateServe::sdk;${_bps_bundled_thrift}")
    set(BaseplateServe_THRIFT_LIBRARY "${_bps_bundled_thrift}")
  else()
    find_dependency(PkgConfig)
    pkg_check_modules(BASEPLATE_SERVE_THRIFT REQUIRED IMPORTED_TARGET thrift)
    set_target_properties(BaseplateServe::thrift PROPERTIES
      INTERFACE_LINK_LIBRARIES "BaseplateServe::sdk;PkgConfig::BASEPLATE_SERVE_THRIFT")
    set(BaseplateServe_THRIFT_LIBRARY "${BASEPLATE_SERVE_THRIFT_LINK_LIBRARIES}")
  endif()
  unset(_bps_bundled_thrift)
endif()

# baseplate_serve_add_app(NAME SOURCES...): a native app as a loadable module
# libNAME.so, exporting only what BASEPLATE_APP_FACTORY declares.
function(baseplate_serve_add_app name)
  add_library(${name} MODULE ${ARGN})
  target_link_libraries(${name} PRIVATE BaseplateServe::sdk)
  set_target_properties(${name} PROPERTIES
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    PREFIX "lib")
endfunction()
