"""Calls the echo example with each kind of client: python client.py PORT"""
import sys

sys.path.insert(0, "gen")

from echo import Echo  # noqa: E402
from thrift.protocol import TBinaryProtocol, TCompactProtocol, THeaderProtocol  # noqa: E402
from thrift.transport import TSocket, TTransport  # noqa: E402


def main(port):
    kinds = {
        "header": lambda s: THeaderProtocol.THeaderProtocol(s, allowed_client_types=[0]),
        "framed binary": lambda s: TBinaryProtocol.TBinaryProtocol(TTransport.TFramedTransport(s)),
        "buffered binary": lambda s: TBinaryProtocol.TBinaryProtocol(TTransport.TBufferedTransport(s)),
        "framed compact": lambda s: TCompactProtocol.TCompactProtocol(TTransport.TFramedTransport(s)),
    }
    for name, make in kinds.items():
        sock = TSocket.TSocket("127.0.0.1", port)
        prot = make(sock)
        prot.trans.open()
        print(name, Echo.Client(prot).echo("hello"))
        prot.trans.close()


if __name__ == "__main__":
    main(int(sys.argv[1]))
