"""Checks, with Python grpcio, that greeter calls made through a gRPC proxy (or
straight to a backend) get the answers, metadata and status codes a grpcio
application expects.

Prints one JSON object on stdout; exits 0 when every check passed, 1 when one
failed and 2 on bad arguments. The stubs are generated from
tests/greeter/proto/greeter.proto by scripts/install-interop-clients into the
directory named by --stubs.
"""

import argparse
import json
import os
import sys
import time


MAX_MESSAGE_BYTES = 64 << 20
LARGE_BYTES = 5 << 20


class CheckFailed(Exception):
    pass


def expect(condition, message):
    if not condition:
        raise CheckFailed(message)


def check_reply(reply, name):
    want = f"Hello {name} from {reply.backend}"
    expect(reply.backend and reply.message == want,
           f"reply {reply.message!r} from backend {reply.backend!r}, want {want!r}")


def unary_spread(stub, pb, calls, backends, deadline):
    for i in range(calls):
        name = f"py-{i}"
        reply = stub.SayHello(pb.HelloRequest(name=name), timeout=deadline())
        check_reply(reply, name)
        backends[reply.backend] = backends.get(reply.backend, 0) + 1


def metadata_round_trip(stub, pb, deadline):
    blob = bytes([0, 1, 2, 254, 255])
    reply, call = stub.SayHello.with_call(
        pb.HelloRequest(name="meta"),
        metadata=(("x-interop-id", "py-42"), ("x-interop-blob-bin", blob)),
        timeout=deadline(),
    )
    check_reply(reply, "meta")
    headers = dict(call.initial_metadata())
    trailers = dict(call.trailing_metadata())
    for where, got, key, value in (
        ("header", headers, "x-interop-id", "py-42"),
        ("header", headers, "x-interop-blob-bin", blob),
        ("trailer", trailers, "trailer-x-interop-id", "py-42"),
        ("trailer", trailers, "trailer-x-interop-blob-bin", blob),
    ):
        expect(got.get(key) == value, f"{where} {key} = {got.get(key)!r}, want {value!r}")


def server_streaming(stub, pb, deadline):
    replies = list(stub.SayHelloStream(pb.HelloRequest(name="stream", count=5), timeout=deadline()))
    expect([r.sequence for r in replies] == [0, 1, 2, 3, 4],
           f"sequences {[r.sequence for r in replies]}, want 0..4")
    expect(len({r.backend for r in replies}) == 1,
           f"one stream answered by {sorted({r.backend for r in replies})}")
    for reply in replies:
        check_reply(reply, "stream")


def client_streaming(stub, pb, deadline):
    names = ["a", "b", "c"]
    requests = (pb.HelloRequest(name=n, payload=b"xyz") for n in names)
    reply = stub.CollectHellos(requests, timeout=deadline())
    expect(reply.requests_received == 3 and reply.payload_bytes_received == 9,
           f"backend saw {reply.requests_received} requests, "
           f"{reply.payload_bytes_received} payload bytes; want 3, 9")
    check_reply(reply, ", ".join(names))


def bidi_streaming(stub, pb, deadline):
    import queue

    outgoing = queue.Queue()

    def requests():
        while True:
            item = outgoing.get()
            if item is None:
                return
            yield item

    replies = stub.Chat(requests(), timeout=deadline())
    backends = set()
    # Lock-step: each reply must arrive before the next request is sent, which
    # only works when the proxy forwards messages as they come.
    for i in range(10):
        outgoing.put(pb.HelloRequest(name="chat"))
        reply = next(replies)
        expect(reply.sequence == i and reply.requests_received == i + 1,
               f"reply {i} has sequence {reply.sequence}")
        check_reply(reply, "chat")
        backends.add(reply.backend)
    outgoing.put(None)
    rest = list(replies)
    expect(not rest, f"{len(rest)} replies after the requests ended")
    expect(len(backends) == 1, f"one stream answered by {sorted(backends)}")


def expect_code(stub, pb, grpc, want, metadata=(), message=None, timeout=None, deadline=None):
    try:
        stub.SayHello(pb.HelloRequest(name="status"), metadata=metadata,
                      timeout=timeout if timeout is not None else deadline())
    except grpc.RpcError as error:
        expect(error.code() == want, f"status {error.code()} ({error.details()}), want {want}")
        if message is not None:
            expect(error.details() == message, f"message {error.details()!r}, want {message!r}")
        return
    raise CheckFailed(f"the call succeeded, want {want}")


def deadline_exceeded(stub, pb, grpc):
    # The backend waits 3 s; the 300 ms deadline must end the call long before.
    # grpcio ends it with DEADLINE_EXCEEDED, unless the answer of a tonic
    # server, which ends an expired grpc-timeout with CANCELLED "Timeout
    # expired", arrives first: both show the deadline travelled.
    started = time.monotonic()
    try:
        stub.SayHello(pb.HelloRequest(name="late"), metadata=(("x-greeter-delay-ms", "3000"),),
                      timeout=0.3)
    except grpc.RpcError as error:
        elapsed = time.monotonic() - started
        tonic_expiry = (error.code() == grpc.StatusCode.CANCELLED
                        and error.details() == "Timeout expired")
        expect(error.code() == grpc.StatusCode.DEADLINE_EXCEEDED or tonic_expiry,
               f"status {error.code()} ({error.details()}), want DEADLINE_EXCEEDED")
        expect(elapsed < 2.0, f"the call ended after {elapsed:.2f} s, past its 0.3 s deadline")
        return
    raise CheckFailed("the call succeeded past its deadline")


def large_messages(stub, pb, deadline):
    reply = stub.SayHello(
        pb.HelloRequest(name="large", payload=b"\x07" * LARGE_BYTES,
                        reply_payload_bytes=LARGE_BYTES + 1),
        timeout=deadline(),
    )
    expect(reply.payload_bytes_received == LARGE_BYTES and len(reply.payload) == LARGE_BYTES + 1,
           f"backend got {reply.payload_bytes_received} bytes, reply has {len(reply.payload)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="host:port of the proxy or backend")
    parser.add_argument("--stubs", required=True, help="directory holding greeter_pb2*.py")
    parser.add_argument("--suite", choices=("full", "unary", "unavailable"), default="full",
                        help="full: every check; unary: the unary spread only; "
                             "unavailable: one call that must fail UNAVAILABLE")
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds for the whole run")
    parser.add_argument("--tls-ca", help="PEM file of the CA to trust: dial with TLS (default: plaintext)")
    args = parser.parse_args()
    if args.calls < 1:
        parser.error("--calls must be at least 1")

    sys.path.insert(0, args.stubs)
    import grpc
    import greeter_pb2 as pb
    import greeter_pb2_grpc as pb_grpc

    run_deadline = time.monotonic() + args.timeout

    def deadline():
        return max(0.1, run_deadline - time.monotonic())

    options = [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ]
    if args.tls_ca:
        with open(args.tls_ca, "rb") as ca:
            credentials = grpc.ssl_channel_credentials(root_certificates=ca.read())
        channel = grpc.secure_channel(args.target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(args.target, options=options)
    stub = pb_grpc.GreeterStub(channel)
    report = {"client": "grpcio", "grpc_version": grpc.__version__, "suite": args.suite,
              "tls": bool(args.tls_ca), "resolver": os.environ.get("GRPC_DNS_RESOLVER", "default"),
              "checks": [], "unary_backends": {}}

    def run(name, fn, *fn_args, **fn_kwargs):
        try:
            fn(*fn_args, **fn_kwargs)
            report["checks"].append({"name": name, "ok": True})
        except (CheckFailed, grpc.RpcError, StopIteration) as error:
            detail = str(error)
            if isinstance(error, grpc.RpcError):
                detail = f"{error.code()}: {error.details()}"
            report["checks"].append({"name": name, "ok": False, "detail": detail})

    code = grpc.StatusCode
    if args.suite == "full":
        run("unary_spread", unary_spread, stub, pb, args.calls, report["unary_backends"], deadline)
        run("metadata_round_trip", metadata_round_trip, stub, pb, deadline)
        run("server_streaming", server_streaming, stub, pb, deadline)
        run("client_streaming", client_streaming, stub, pb, deadline)
        run("bidi_streaming", bidi_streaming, stub, pb, deadline)
        run("status_not_found", expect_code, stub, pb, grpc, code.NOT_FOUND,
            metadata=(("x-greeter-fail-code", "5"), ("x-greeter-fail-message", "no such greeting")),
            message="no such greeting", deadline=deadline)
        run("deadline_exceeded", deadline_exceeded, stub, pb, grpc)
        run("large_messages", large_messages, stub, pb, deadline)
    elif args.suite == "unary":
        run("unary_spread", unary_spread, stub, pb, args.calls, report["unary_backends"], deadline)
    else:
        run("status_unavailable", expect_code, stub, pb, grpc, code.UNAVAILABLE, deadline=deadline)
    channel.close()

    print(json.dumps(report))
    return 0 if all(check["ok"] for check in report["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
