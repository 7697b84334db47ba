# The C++ SDK of baseplate-serve, for native apps:
#   find_package(BaseplateServe REQUIRED)   # -DBaseplateServe_DIR=$(baseplate-serve --sdk-dir)
#   baseplate_serve_add_app(myapp myapp.cpp)            # an HTTP app: libmyapp.so
#   target_link_libraries(myapp PRIVATE BaseplateServe::thrift)   # a Thrift app also links libthrift
include(CMakeFindDependencyMacro)
find_dependency(Boost 1.74 CONFIG COMPONENTS headers)
find_dependency(PkgConfig)

if(NOT TARGET BaseplateServe::sdk)
  add_library(BaseplateServe::sdk INTERFACE IMPORTED)
  set_target_properties(BaseplateServe::sdk PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${CMAKE_CURRENT_LIST_DIR}/include"
    INTERFACE_COMPILE_FEATURES cxx_std_17
    INTERFACE_LINK_LIBRARIES Boost::headers)
endif()

if(NOT TARGET BaseplateServe::thrift)
  # The server links libthrift as a shared library; a Thrift app links the same one.
  pkg_check_modules(BASEPLATE_SERVE_THRIFT REQUIRED IMPORTED_TARGET thrift)
  add_library(BaseplateServe::thrift INTERFACE IMPORTED)
  set_target_properties(BaseplateServe::thrift PROPERTIES
    INTERFACE_LINK_LIBRARIES "BaseplateServe::sdk;PkgConfig::BASEPLATE_SERVE_THRIFT")
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
