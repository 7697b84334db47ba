// The Thrift echo example. Python code generated with:
//   thrift --gen py -out gen echo.thrift
// (the C++ code of examples/native_thrift is generated at build time)
namespace py echo
namespace cpp echo

exception EchoError {
  1: string message
}

service Echo {
  /// Returns its argument.
  string echo(1: string message),
  /// Raises the declared EchoError.
  void fail_declared(1: string message) throws (1: EchoError err),
  /// Raises an exception the IDL does not declare.
  void fail_undeclared(1: string message),
  /// Oneway: stores the message for recall(); nothing goes back.
  oneway void remember(1: string message),
  /// Returns what remember() stored last.
  string recall(),
  /// Returns the THeader info headers of this request.
  map<string, string> request_headers(),
}
