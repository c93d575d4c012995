"""A grpcio greeter server over TLS, for the real-node test of a TLS client
that dials a Service whose name a GrpcBalancing maps to the sidecar: the proxy
must pass such a connection through unbalanced, untouched.

SayHello answers "Hello NAME from BACKEND" with the backend named by
--backend (the pod's name). Prints "listening on ADDRESS" once serving.
"""

import argparse
import sys
import threading
from concurrent import futures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stubs", required=True, help="directory holding greeter_pb2*.py")
    parser.add_argument("--listen", default="0.0.0.0:50051")
    parser.add_argument("--cert", required=True, help="PEM certificate chain")
    parser.add_argument("--key", required=True, help="PEM private key")
    parser.add_argument("--backend", required=True, help="the name replies carry")
    args = parser.parse_args()
    sys.path.insert(0, args.stubs)
    import grpc
    import greeter_pb2 as pb
    import greeter_pb2_grpc as pb_grpc

    with open(args.cert, "rb") as cert, open(args.key, "rb") as key:
        credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])

    class Greeter(pb_grpc.GreeterServicer):
        def SayHello(self, request, context):
            return pb.HelloReply(message=f"Hello {request.name} from {args.backend}",
                                 backend=args.backend)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_GreeterServicer_to_server(Greeter(), server)
    if server.add_secure_port(args.listen, credentials) == 0:
        print(f"cannot listen on {args.listen}", file=sys.stderr)
        return 1
    server.start()
    print(f"listening on {args.listen}", flush=True)
    stop = threading.Event()
    try:
        stop.wait()
    except KeyboardInterrupt:
        server.stop(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
