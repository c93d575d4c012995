"""A grpcio (gRPC C-core) greeter server with C-core's default settings, for
the proxy's keepalive test (proxy/tests/it/keepalive.rs).

SayHello answers with the caller's peer address (so a test sees whether a
connection was re-dialled); SayHelloStream sends one reply, then stays quiet
until the caller cancels. Only the minimum interval between pings without
data can be scaled down (--min-ping-interval-ms; C-core's default is 5
minutes); pings on a connection without calls stay forbidden, as by default.

Prints "listening on HOST:PORT" once serving.
"""

import argparse
import sys
import threading
import time
from concurrent import futures


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--stubs", required=True)
    parser.add_argument("--min-ping-interval-ms", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, args.stubs)
    import grpc
    import greeter_pb2 as pb
    import greeter_pb2_grpc as pb_grpc

    class Greeter(pb_grpc.GreeterServicer):
        def SayHello(self, request, context):
            return pb.HelloReply(message=context.peer(), backend="python")

        def SayHelloStream(self, request, context):
            yield pb.HelloReply(message="first", backend="python")
            done = threading.Event()
            context.add_callback(done.set)
            while not done.wait(0.2):
                pass

    options = []
    if args.min_ping_interval_ms > 0:
        options.append(("grpc.http2.min_ping_interval_without_data_ms",
                        args.min_ping_interval_ms))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=options)
    pb_grpc.add_GreeterServicer_to_server(Greeter(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop(0)


if __name__ == "__main__":
    main()
