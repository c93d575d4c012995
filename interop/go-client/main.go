// Command greeter-interop-go checks, with grpc-go, that greeter calls made
// through a gRPC proxy (or straight to a backend) get the answers, metadata and
// status codes a grpc-go application expects.
//
// It prints one JSON object on stdout and exits 0 when every check passed,
// 1 when one failed and 2 on bad arguments.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/grpc-balancer/grpc-balancer/interop/go-client/greeterpb"
)

const (
	maxMessageBytes = 64 << 20
	largeBytes      = 5 << 20
)

type check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

type report struct {
	Client        string           `json:"client"`
	Suite         string           `json:"suite"`
	Checks        []check          `json:"checks"`
	UnaryBackends map[string]int64 `json:"unary_backends"`
}

func main() {
	target := flag.String("target", "", "host:port of the proxy or backend")
	suite := flag.String("suite", "full", "full: every check; unavailable: one call that must fail with UNAVAILABLE")
	calls := flag.Int("calls", 30, "unary calls of the spread check, over one connection")
	timeout := flag.Duration("timeout", 20*time.Second, "deadline of the whole run")
	flag.Parse()
	if *target == "" || (*suite != "full" && *suite != "unavailable") || *calls < 1 {
		fmt.Fprintln(os.Stderr, "usage: greeter-interop-go --target HOST:PORT [--suite full|unavailable] [--calls N]")
		os.Exit(2)
	}

	conn, err := grpc.NewClient(*target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(maxMessageBytes),
			grpc.MaxCallSendMsgSize(maxMessageBytes)))
	if err != nil {
		fmt.Fprintf(os.Stderr, "greeter-interop-go: %v\n", err)
		os.Exit(2)
	}
	defer conn.Close()
	client := pb.NewGreeterClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	r := report{Client: "grpc-go", Suite: *suite, UnaryBackends: map[string]int64{}}
	switch *suite {
	case "full":
		r.add("unary_spread", unarySpread(ctx, client, *calls, r.UnaryBackends))
		r.add("metadata_round_trip", metadataRoundTrip(ctx, client))
		r.add("server_streaming", serverStreaming(ctx, client))
		r.add("client_streaming", clientStreaming(ctx, client))
		r.add("bidi_streaming", bidiStreaming(ctx, client))
		r.add("status_not_found", expectCode(ctx, client, codes.NotFound,
			metadata.Pairs("x-greeter-fail-code", "5", "x-greeter-fail-message", "no such greeting"),
			"no such greeting"))
		r.add("deadline_exceeded", deadlineExceeded(ctx, client))
		r.add("large_messages", largeMessages(ctx, client))
	case "unavailable":
		r.add("status_unavailable", expectCode(ctx, client, codes.Unavailable, metadata.MD{}, ""))
	}

	out, err := json.Marshal(r)
	if err != nil {
		fmt.Fprintf(os.Stderr, "greeter-interop-go: %v\n", err)
		os.Exit(2)
	}
	fmt.Println(string(out))
	for _, c := range r.Checks {
		if !c.OK {
			os.Exit(1)
		}
	}
}

func (r *report) add(name string, err error) {
	c := check{Name: name, OK: err == nil}
	if err != nil {
		c.Detail = err.Error()
	}
	r.Checks = append(r.Checks, c)
}

func checkReply(reply *pb.HelloReply, name string) error {
	want := "Hello " + name + " from " + reply.GetBackend()
	if reply.GetBackend() == "" || reply.GetMessage() != want {
		return fmt.Errorf("reply %q from backend %q, want %q", reply.GetMessage(), reply.GetBackend(), want)
	}
	return nil
}

func unarySpread(ctx context.Context, client pb.GreeterClient, calls int, backends map[string]int64) error {
	for i := 0; i < calls; i++ {
		name := fmt.Sprintf("go-%d", i)
		reply, err := client.SayHello(ctx, &pb.HelloRequest{Name: name})
		if err != nil {
			return fmt.Errorf("call %d: %w", i, err)
		}
		if err := checkReply(reply, name); err != nil {
			return err
		}
		backends[reply.GetBackend()]++
	}
	return nil
}

func metadataRoundTrip(ctx context.Context, client pb.GreeterClient) error {
	blob := string([]byte{0, 1, 2, 254, 255})
	md := metadata.Pairs("x-interop-id", "go-42", "x-interop-blob-bin", blob)
	var header, trailer metadata.MD
	reply, err := client.SayHello(metadata.NewOutgoingContext(ctx, md),
		&pb.HelloRequest{Name: "meta"}, grpc.Header(&header), grpc.Trailer(&trailer))
	if err != nil {
		return err
	}
	if err := checkReply(reply, "meta"); err != nil {
		return err
	}
	for _, want := range []struct {
		md    metadata.MD
		where string
		key   string
		value string
	}{
		{header, "header", "x-interop-id", "go-42"},
		{header, "header", "x-interop-blob-bin", blob},
		{trailer, "trailer", "trailer-x-interop-id", "go-42"},
		{trailer, "trailer", "trailer-x-interop-blob-bin", blob},
	} {
		got := want.md.Get(want.key)
		if len(got) != 1 || got[0] != want.value {
			return fmt.Errorf("%s %s = %q, want %q", want.where, want.key, got, want.value)
		}
	}
	return nil
}

func serverStreaming(ctx context.Context, client pb.GreeterClient) error {
	stream, err := client.SayHelloStream(ctx, &pb.HelloRequest{Name: "stream", Count: 5})
	if err != nil {
		return err
	}
	backend := ""
	for sequence := uint32(0); ; sequence++ {
		reply, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if sequence != 5 {
				return fmt.Errorf("got %d replies, want 5", sequence)
			}
			return nil
		}
		if err != nil {
			return err
		}
		if reply.GetSequence() != sequence {
			return fmt.Errorf("reply sequence %d, want %d", reply.GetSequence(), sequence)
		}
		if backend != "" && reply.GetBackend() != backend {
			return fmt.Errorf("stream moved from %s to %s", backend, reply.GetBackend())
		}
		backend = reply.GetBackend()
	}
}

func clientStreaming(ctx context.Context, client pb.GreeterClient) error {
	stream, err := client.CollectHellos(ctx)
	if err != nil {
		return err
	}
	names := []string{"a", "b", "c"}
	for _, name := range names {
		if err := stream.Send(&pb.HelloRequest{Name: name, Payload: []byte("xyz")}); err != nil {
			return err
		}
	}
	reply, err := stream.CloseAndRecv()
	if err != nil {
		return err
	}
	if reply.GetRequestsReceived() != 3 || reply.GetPayloadBytesReceived() != 9 {
		return fmt.Errorf("backend saw %d requests, %d payload bytes; want 3, 9",
			reply.GetRequestsReceived(), reply.GetPayloadBytesReceived())
	}
	return checkReply(reply, strings.Join(names, ", "))
}

func bidiStreaming(ctx context.Context, client pb.GreeterClient) error {
	stream, err := client.Chat(ctx)
	if err != nil {
		return err
	}
	backend := ""
	// Lock-step: each reply must arrive before the next request is sent, which
	// only works when the proxy forwards messages as they come.
	for i := uint32(0); i < 10; i++ {
		if err := stream.Send(&pb.HelloRequest{Name: "chat"}); err != nil {
			return err
		}
		reply, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("reply %d: %w", i, err)
		}
		if reply.GetSequence() != i || reply.GetRequestsReceived() != i+1 {
			return fmt.Errorf("reply %d has sequence %d", i, reply.GetSequence())
		}
		if backend != "" && reply.GetBackend() != backend {
			return fmt.Errorf("stream moved from %s to %s", backend, reply.GetBackend())
		}
		backend = reply.GetBackend()
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("after close: %v, want end of stream", err)
	}
	return nil
}

func expectCode(ctx context.Context, client pb.GreeterClient, want codes.Code, md metadata.MD, message string) error {
	ctx = metadata.NewOutgoingContext(ctx, md)
	_, err := client.SayHello(ctx, &pb.HelloRequest{Name: "status"})
	got := status.Code(err)
	if got != want {
		return fmt.Errorf("status %s (%v), want %s", got, err, want)
	}
	if message != "" && status.Convert(err).Message() != message {
		return fmt.Errorf("message %q, want %q", status.Convert(err).Message(), message)
	}
	return nil
}

// deadlineExceeded: the backend waits 3 s; the 300 ms deadline must end the
// call long before. grpc-go ends it with DEADLINE_EXCEEDED, unless the answer of
// a tonic server, which ends an expired grpc-timeout with CANCELLED "Timeout
// expired", arrives first: both show the deadline travelled.
func deadlineExceeded(ctx context.Context, client pb.GreeterClient) error {
	ctx = metadata.NewOutgoingContext(ctx, metadata.Pairs("x-greeter-delay-ms", "3000"))
	ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	started := time.Now()
	_, err := client.SayHello(ctx, &pb.HelloRequest{Name: "late"})
	elapsed := time.Since(started)
	s := status.Convert(err)
	tonicExpiry := s.Code() == codes.Canceled && s.Message() == "Timeout expired"
	if err == nil || (s.Code() != codes.DeadlineExceeded && !tonicExpiry) {
		return fmt.Errorf("status %s (%v), want DEADLINE_EXCEEDED", s.Code(), err)
	}
	if elapsed > 2*time.Second {
		return fmt.Errorf("the call ended after %s, past its 300ms deadline", elapsed)
	}
	return nil
}

func largeMessages(ctx context.Context, client pb.GreeterClient) error {
	payload := bytes.Repeat([]byte{7}, largeBytes)
	reply, err := client.SayHello(ctx, &pb.HelloRequest{Name: "large", Payload: payload, ReplyPayloadBytes: largeBytes + 1})
	if err != nil {
		return err
	}
	if reply.GetPayloadBytesReceived() != largeBytes || len(reply.GetPayload()) != largeBytes+1 {
		return fmt.Errorf("backend got %d bytes, reply has %d; want %d and %d",
			reply.GetPayloadBytesReceived(), len(reply.GetPayload()), largeBytes, largeBytes+1)
	}
	return nil
}
