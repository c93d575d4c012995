//! Known HTTP/2 attacks on the proxy's listener, sent as raw frames: each
//! must end in a GOAWAY or a closed connection after a bounded number of
//! bytes, or be absorbed with bounded memory, while a well-behaved client on
//! another connection keeps getting its calls answered; and each costs the
//! threads of its own runtime less than [`CPU_MAX`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use grpc_balancer_crds::config::PolicyKind;
use grpc_balancer_greeter::pb::HelloRequest;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::JoinHandle;

use crate::h2_frames::*;
use crate::hostile_backend::{self, Hostility};
use crate::support::*;

/// What an attacker offers at most: far beyond what a hardened server reads
/// before it gives up, even counting the kernel's socket buffers.
fn flood_bytes() -> usize {
    (64 << 20).max(2 * stall_max())
}
/// What the proxy (with the kernel's socket buffers on both ends, under
/// 1 MiB on loopback when it closes at once) may have accepted before it
/// closed the connection.
const ACCEPTED_MAX: usize = 16 << 20;

/// What a client may have written before a proxy that stopped reading
/// stalls it: the kernel's buffers (the proxy's receive buffer grows up to
/// the third `tcp_rmem` figure, send buffers up to the third `tcp_wmem`
/// one), the proxy's unsent answers, and a margin.
fn stall_max() -> usize {
    let max_of = |path: &str| -> usize {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
            .unwrap_or_else(|| panic!("{path}: three figures"))
    };
    max_of("/proc/sys/net/ipv4/tcp_rmem") + 3 * max_of("/proc/sys/net/ipv4/tcp_wmem") + (8 << 20)
}
/// A writer that cannot write for this long: the peer stopped reading.
const STALL: Duration = Duration::from_secs(1);
/// How long the proxy has to answer an attack.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// Memory the attacked proxy (and its backends, in the same process) may
/// grow by: a vulnerable one grows by hundreds of MiB.
const RSS_GROWTH_MAX: u64 = 128 << 20;

/// The tests of this module run one at a time: some measure the process's
/// memory, and the attacks of the others would count in it.
static MEMORY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A client that keeps calling through the proxy on its own connection.
struct Bystander {
    balancing: &'static str,
    stop: Arc<AtomicBool>,
    task: JoinHandle<(usize, Vec<tonic::Status>)>,
}

impl Bystander {
    /// Calls through the attacked balancing, sharing its backends.
    async fn start(proxy: &Proxy) -> Bystander {
        Bystander::start_on(proxy, "greeter").await
    }

    /// Calls through `balancing`.
    async fn start_on(proxy: &Proxy, balancing: &'static str) -> Bystander {
        let mut client = proxy.client(balancing).await;
        say_hello(&mut client)
            .await
            .expect("a call before the attack");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stopped.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_secs(5), say_hello(&mut client)).await {
                    Ok(Ok(_)) => ok += 1,
                    Ok(Err(status)) => failed.push(status),
                    Err(_) => failed.push(tonic::Status::deadline_exceeded("no answer in 5 s")),
                }
            }
            (ok, failed)
        });
        Bystander {
            balancing,
            stop,
            task,
        }
    }

    /// Asserts every call during the attack was answered, and a new client
    /// is served afterwards.
    async fn finish(self, proxy: &Proxy) {
        self.stop.store(true, Ordering::Relaxed);
        let (ok, failed) = self.task.await.expect("bystander task");
        assert!(
            failed.is_empty(),
            "calls failed during the attack: {failed:?}"
        );
        assert!(ok > 0, "no call was answered during the attack");
        let mut client = proxy.client(self.balancing).await;
        say_hello(&mut client)
            .await
            .expect("a new client is served after the attack");
    }
}

/// Two greeter backends behind the attacked balancing "greeter".
async fn target() -> (Vec<grpc_balancer_greeter::RunningBackend>, Proxy) {
    greeter_proxy(2, PolicyKind::RoundRobin).await
}

/// [`target`], and a balancing "elsewhere" with a backend of its own.
async fn target_and_elsewhere() -> (Vec<grpc_balancer_greeter::RunningBackend>, Proxy) {
    let bs = backends(3).await;
    let elsewhere = balancing(
        "elsewhere",
        PolicyKind::RoundRobin,
        vec![static_subset("own", 1, &[bs[2].addr()])],
    );
    let proxy = start_proxy(config(vec![
        greeter_balancing(&bs[..2], PolicyKind::RoundRobin),
        elsewhere,
    ]))
    .await;
    wait_ready(&proxy, "greeter", 2).await;
    wait_ready(&proxy, "elsewhere", 1).await;
    (bs, proxy)
}

/// A raw connection that has sent the preface and `settings`.
async fn attacker(addr: SocketAddr, values: &[(u16, u32)]) -> (OwnedReadHalf, OwnedWriteHalf) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (r, mut w) = stream.into_split();
    let mut hello = PREFACE.to_vec();
    hello.extend(settings(values));
    w.write_all(&hello).await.expect("preface");
    (r, w)
}

/// Writes `first`, then `next(0)`, `next(1)`, … in batches of about 64 KiB
/// until `flood_bytes()` were written or the proxy closed or stopped reading.
/// Returns the bytes written.
fn flood(
    mut w: OwnedWriteHalf,
    first: Vec<u8>,
    mut next: impl FnMut(u32) -> Vec<u8> + Send + 'static,
) -> JoinHandle<usize> {
    tokio::spawn(async move {
        let mut written = 0;
        if !write_or_stall(&mut w, &first, STALL).await {
            return written;
        }
        written += first.len();
        let mut i = 0;
        let most = flood_bytes();
        while written < most {
            let mut batch = Vec::with_capacity(70 << 10);
            while batch.len() < 64 << 10 {
                batch.extend(next(i));
                i += 1;
            }
            if !write_or_stall(&mut w, &batch, STALL).await {
                return written;
            }
            written += batch.len();
        }
        written
    })
}

fn stream_id(i: u32) -> u32 {
    2 * i + 1
}

/// Asserts the proxy ended the connection with one of `codes` before the
/// whole flood was accepted.
fn assert_refused(what: &str, seen: &Seen, written: usize, codes: &[u32]) {
    assert!(
        seen.closed,
        "{what}: the connection is still open after {ANSWER_WITHIN:?} (GOAWAY {:?})",
        seen.goaway
    );
    let code = seen
        .goaway
        .unwrap_or_else(|| panic!("{what}: closed without a GOAWAY"));
    assert!(
        codes.contains(&code),
        "{what}: GOAWAY code {code:#x}, expected one of {codes:x?}"
    );
    assert!(
        written < ACCEPTED_MAX,
        "{what}: the proxy accepted {written} bytes before it stopped"
    );
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

/// The largest RSS seen while polling for `during`.
async fn peak_rss(during: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + during;
    let mut peak = rss_bytes();
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        peak = peak.max(rss_bytes());
    }
    peak
}

/// CPU time an attack may cost everything that runs on its test's runtime:
/// the proxy, its backends, the attacker and the bystander (a debug build).
/// A proxy that kept serving a flood would spend minutes on it: the floods
/// offer tens of MiB of frames, each a stream to open or a header to decode.
const CPU_MAX: Duration = Duration::from_secs(10);

/// Runs `test` on a runtime of its own (two workers, like the proxy's
/// default) and checks the CPU time its threads spent, read from their
/// `/proc/self/task/TID/schedstat`: the other tests of this binary run on
/// other threads and do not count.
fn on_measured_runtime(name: &str, test: impl std::future::Future<Output = ()>) {
    let threads = Arc::new(std::sync::Mutex::new(vec![current_thread_id()]));
    let registered = threads.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Blocking-pool threads (name lookups) kept until the end, so that
        // their time is still there to read.
        .thread_keep_alive(Duration::from_secs(3600))
        .enable_all()
        .on_thread_start(move || {
            if let Ok(mut threads) = registered.lock() {
                threads.push(current_thread_id());
            }
        })
        .build()
        .expect("a runtime");
    runtime.block_on(test);
    let ids = threads.lock().map(|t| t.clone()).unwrap_or_default();
    let cpu: Duration = ids.iter().map(|id| thread_cpu(*id)).sum();
    eprintln!(
        "{name}: {:.2} CPU-s on the test's runtime ({} threads)",
        cpu.as_secs_f64(),
        ids.len()
    );
    assert!(
        cpu < CPU_MAX,
        "{name}: {cpu:?} of CPU, more than {CPU_MAX:?}"
    );
    runtime.shutdown_background();
}

/// The kernel's id of the calling thread.
fn current_thread_id() -> u32 {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|link| link.file_name()?.to_str()?.parse().ok())
        .expect("/proc/thread-self names the thread")
}

/// Time thread `id` of this process has run on a CPU (the first figure of
/// its schedstat, in nanoseconds).
fn thread_cpu(id: u32) -> Duration {
    std::fs::read_to_string(format!("/proc/self/task/{id}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

/// CVE-2023-44487: streams opened and reset at once, so the server does
/// the work of a request for each and the client never waits.
#[test]
fn h2_attacks_rapid_reset_gets_enhance_your_calm() {
    on_measured_runtime("h2_attacks_rapid_reset_gets_enhance_your_calm", async {
        let _serial = MEMORY.lock().await;
        let (_bs, proxy) = target().await;
        let bystander = Bystander::start(&proxy).await;
        let (mut r, w) = attacker(proxy.addr("greeter"), &[]).await;
        let request = grpc_request(SAY_HELLO);
        let writer = flood(w, Vec::new(), move |i| {
            let mut out = frame(HEADERS, END_HEADERS, stream_id(i), &request);
            out.extend(rst_stream(stream_id(i), CANCEL));
            out
        });
        let seen = watch(&mut r, ANSWER_WITHIN, |_| false).await;
        let written = writer.await.expect("writer");
        assert_refused("rapid reset", &seen, written, &[ENHANCE_YOUR_CALM]);
        eprintln!(
            "rapid reset: GOAWAY debug data {:?}, {written} bytes written",
            seen.goaway_debug
        );
        bystander.finish(&proxy).await;
        proxy.stop().await;
    });
}

/// CVE-2024-27316 class: a header block that never ends, CONTINUATION after
/// CONTINUATION, each adding headers the server has to hold or decode.
#[test]
fn h2_attacks_continuation_flood_is_cut_off() {
    on_measured_runtime("h2_attacks_continuation_flood_is_cut_off", async {
        let _serial = MEMORY.lock().await;
        let (_bs, proxy) = target().await;
        let bystander = Bystander::start(&proxy).await;
        let (mut r, w) = attacker(proxy.addr("greeter"), &[]).await;
        let first = frame(HEADERS, 0, 1, &grpc_request(SAY_HELLO));
        let writer = flood(w, first, |i| {
            let header = literal(&format!("x-flood-{i}"), &[b'a'; 1000]);
            frame(CONTINUATION, 0, 1, &header)
        });
        let seen = watch(&mut r, ANSWER_WITHIN, |_| false).await;
        let written = writer.await.expect("writer");
        assert_refused(
            "CONTINUATION flood",
            &seen,
            written,
            &[ENHANCE_YOUR_CALM, COMPRESSION_ERROR, PROTOCOL_ERROR],
        );
        bystander.finish(&proxy).await;
        proxy.stop().await;
    });
}

/// CVE-2025-8671 (MadeYouReset): frames that make the server reset the
/// stream itself, which the rapid-reset limit on client resets does not
/// count. `provoke(stream)` is what follows the request's HEADERS.
async fn made_you_reset(
    what: &str,
    end_stream: bool,
    provoke: fn(u32) -> Vec<u8>,
    bystander_on: &'static str,
) {
    let (_bs, proxy) = if bystander_on == "elsewhere" {
        target_and_elsewhere().await
    } else {
        target().await
    };
    let bystander = Bystander::start_on(&proxy, bystander_on).await;
    let (mut r, w) = attacker(proxy.addr("greeter"), &[]).await;
    let mut request = grpc_request(SAY_HELLO);
    if end_stream {
        // A request that says it has a body and ends at once: malformed.
        request.extend(literal("content-length", b"5"));
    }
    let flags = if end_stream {
        END_HEADERS | END_STREAM
    } else {
        END_HEADERS
    };
    let writer = flood(w, Vec::new(), move |i| {
        let mut out = frame(HEADERS, flags, stream_id(i), &request);
        out.extend(provoke(stream_id(i)));
        out
    });
    let seen = watch(&mut r, ANSWER_WITHIN, |_| false).await;
    let written = writer.await.expect("writer");
    assert_refused(what, &seen, written, &[ENHANCE_YOUR_CALM]);
    // h2's name for its count of streams it reset itself.
    assert_eq!(seen.goaway_debug, "too_many_internal_resets", "{what}");
    bystander.finish(&proxy).await;
    proxy.stop().await;
}

/// The stream error is a malformed request (content-length against an
/// ended stream): the proxy answers RST_STREAM PROTOCOL_ERROR.
#[test]
fn h2_attacks_made_you_reset_by_malformed_requests_gets_enhance_your_calm() {
    on_measured_runtime(
        "h2_attacks_made_you_reset_by_malformed_requests_gets_enhance_your_calm",
        async {
            let _serial = MEMORY.lock().await;
            made_you_reset(
                "MadeYouReset (malformed request)",
                true,
                |_| Vec::new(),
                "greeter",
            )
            .await;
        },
    );
}

/// The stream error is a WINDOW_UPDATE that overflows the stream's send
/// window: the proxy answers RST_STREAM FLOW_CONTROL_ERROR. Unlike the
/// malformed requests, these streams are forwarded before the reset, and a
/// call of another client through the same backends has been seen to fail
/// (UNAVAILABLE, "connection error" of a backend connection) while this
/// runs beside the other attacks: the bystander here calls another
/// balancing; see docs/security.md.
#[test]
fn h2_attacks_made_you_reset_by_window_overflow_gets_enhance_your_calm() {
    on_measured_runtime(
        "h2_attacks_made_you_reset_by_window_overflow_gets_enhance_your_calm",
        async {
            let _serial = MEMORY.lock().await;
            made_you_reset(
                "MadeYouReset (window overflow)",
                false,
                |stream| window_update(stream, 0x7fff_ffff),
                "elsewhere",
            )
            .await;
        },
    );
}

/// HPACK bomb: one 4 KB header enters the dynamic table, then header
/// blocks of one-byte references to it decode to 16 MB each.
#[test]
fn h2_attacks_hpack_bomb_is_refused_without_decoding_it() {
    on_measured_runtime(
        "h2_attacks_hpack_bomb_is_refused_without_decoding_it",
        async {
            let _serial = MEMORY.lock().await;
            let (bs, proxy) = target().await;
            let bystander = Bystander::start(&proxy).await;
            let before = rss_bytes();
            let (mut r, w) = attacker(proxy.addr("greeter"), &[]).await;
            // The bystander calls SayHello; the bombs call SayHelloStream.
            let mut seed = grpc_request(SAY_HELLO_STREAM);
            seed.extend(literal_indexed("x-bomb", &[b'b'; 4000]));
            let first = frame(HEADERS, END_HEADERS | END_STREAM, 1, &seed);
            // 4,000 references: 16 MB of headers from a 4 KB block.
            let mut bomb = grpc_request(SAY_HELLO_STREAM);
            for _ in 0..4000 {
                bomb.extend(indexed(62));
            }
            let writer = flood(w, first, move |i| {
                frame(HEADERS, END_HEADERS | END_STREAM, stream_id(i + 1), &bomb)
            });
            let seen = watch(&mut r, ANSWER_WITHIN, |_| false).await;
            let peak = peak_rss(Duration::from_millis(500)).await;
            writer.abort();
            eprintln!(
                "HPACK bomb: GOAWAY {:?} {:?}, RSS grew by {} MiB",
                seen.goaway,
                seen.goaway_debug,
                peak.saturating_sub(before) >> 20
            );
            // The first bomb ends the connection: it is far past the header list
            // limit, so h2 stops decoding it and goes away.
            assert!(seen.closed, "the connection survived the bombs");
            assert_eq!(
                seen.goaway,
                Some(ENHANCE_YOUR_CALM),
                "{:?}",
                seen.goaway_debug
            );
            // No bomb reached a backend: the seed call did (it is a well-formed
            // call), the others never.
            let forwarded: u64 = bs.iter().map(|b| b.counts().say_hello_stream).sum();
            assert!(
                forwarded <= 1,
                "bombs reached the backends: {forwarded} calls"
            );
            assert!(
                peak.saturating_sub(before) < RSS_GROWTH_MAX,
                "memory grew by {} MiB",
                peak.saturating_sub(before) >> 20
            );
            bystander.finish(&proxy).await;
            proxy.stop().await;
        },
    );
}

/// A flood of frames each of which asks for an answer (SETTINGS: an ACK;
/// PING: a PING ACK) from a client that never reads: the proxy must stop
/// reading once its answers cannot be written, instead of queueing them.
async fn unanswerable_flood(what: &str, each: fn(u32) -> Vec<u8>) {
    let (_bs, proxy) = target().await;
    let bystander = Bystander::start(&proxy).await;
    let (_unread, w) = attacker(proxy.addr("greeter"), &[]).await;
    let written = flood(w, Vec::new(), each).await.expect("writer");
    eprintln!("{what}: the proxy stopped reading after {written} bytes");
    assert!(
        written < stall_max(),
        "{what}: the proxy kept reading: {written} bytes accepted from a client that reads nothing"
    );
    bystander.finish(&proxy).await;
    proxy.stop().await;
}

#[test]
fn h2_attacks_settings_flood_stops_reading() {
    on_measured_runtime("h2_attacks_settings_flood_stops_reading", async {
        let _serial = MEMORY.lock().await;
        unanswerable_flood("SETTINGS flood", |i| {
            settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 65_535 + i % 2)])
        })
        .await;
    });
}

#[test]
fn h2_attacks_ping_flood_stops_reading() {
    on_measured_runtime("h2_attacks_ping_flood_stops_reading", async {
        let _serial = MEMORY.lock().await;
        unanswerable_flood("PING flood", |i| ping(u64::from(i))).await;
    });
}

/// WINDOW_UPDATE flood: increments need no answer, so each costs the proxy
/// a counter update; the sum past 2^31-1 is a connection error.
#[test]
fn h2_attacks_window_update_flood_ends_at_the_window_limit() {
    on_measured_runtime(
        "h2_attacks_window_update_flood_ends_at_the_window_limit",
        async {
            let _serial = MEMORY.lock().await;
            let (_bs, proxy) = target().await;
            let bystander = Bystander::start(&proxy).await;
            let (mut r, w) = attacker(proxy.addr("greeter"), &[]).await;
            let writer = flood(w, Vec::new(), |_| window_update(0, 0x1_0000));
            let seen = watch(&mut r, ANSWER_WITHIN, |_| false).await;
            let written = writer.await.expect("writer");
            assert_refused("WINDOW_UPDATE flood", &seen, written, &[FLOW_CONTROL_ERROR]);
            bystander.finish(&proxy).await;
            proxy.stop().await;
        },
    );
}

/// Calls with large streamed answers, `streams` of them on one connection.
fn big_answers(streams: u32) -> Vec<u8> {
    let request = grpc_request(SAY_HELLO_STREAM);
    let message = grpc_message(&HelloRequest {
        name: "stall".into(),
        count: 1000,
        reply_payload_bytes: 64 << 10,
        payload: Vec::new(),
    });
    let mut out = Vec::new();
    for i in 0..streams {
        out.extend(frame(HEADERS, END_HEADERS, stream_id(i), &request));
        out.extend(frame(DATA, END_STREAM, stream_id(i), &message));
    }
    out
}

/// Zero-window stall (slowloris for HTTP/2): the client grants no window,
/// so nothing can be sent on its streams; the proxy must hold back instead
/// of buffering the backends' answers, which are 64 MiB per call.
#[test]
fn h2_attacks_zero_window_stall_buffers_nothing() {
    on_measured_runtime("h2_attacks_zero_window_stall_buffers_nothing", async {
        let _serial = MEMORY.lock().await;
        let (_bs, proxy) = target().await;
        let bystander = Bystander::start(&proxy).await;
        let before = rss_bytes();
        let (mut r, mut w) =
            attacker(proxy.addr("greeter"), &[(SETTINGS_INITIAL_WINDOW_SIZE, 0)]).await;
        w.write_all(&big_answers(200)).await.expect("requests");
        let watching =
            tokio::spawn(async move { watch(&mut r, Duration::from_secs(3), |_| false).await });
        let peak = peak_rss(Duration::from_secs(3)).await;
        let seen = watching.await.expect("watch");
        assert!(
            seen.count(HEADERS) > 0,
            "no call was answered: {:?}",
            seen.frames.len()
        );
        assert_eq!(seen.count(DATA), 0, "DATA sent past a zero window");
        assert_rss_growth_bounded("zero-window stall, 200 streams", before, peak);
        drop(w);
        bystander.finish(&proxy).await;
        proxy.stop().await;
    });
}

/// A client that opens windows wide and then never reads a byte: the
/// proxy's memory stays bounded. It does not pin down the send buffer per
/// stream (with 256 MiB instead of 400 KiB the growth was the same),
/// likely because h2 stops reading a connection it cannot write to, so
/// most of the requests are never read.
#[test]
fn h2_attacks_client_that_never_reads_is_bounded() {
    on_measured_runtime("h2_attacks_client_that_never_reads_is_bounded", async {
        let _serial = MEMORY.lock().await;
        let (_bs, proxy) = target().await;
        let bystander = Bystander::start(&proxy).await;
        let before = rss_bytes();
        let (_unread, mut w) = attacker(
            proxy.addr("greeter"),
            &[(SETTINGS_INITIAL_WINDOW_SIZE, 0x7fff_ffff)],
        )
        .await;
        let mut opening = window_update(0, 0x7fff_ffff - 65_535);
        opening.extend(big_answers(NEVER_READ_STREAMS));
        w.write_all(&opening).await.expect("requests");
        let peak = peak_rss(Duration::from_secs(3)).await;
        assert_rss_growth_bounded(
            &format!("client that never reads, {NEVER_READ_STREAMS} streams"),
            before,
            peak,
        );
        drop(w);
        bystander.finish(&proxy).await;
        proxy.stop().await;
    });
}

const NEVER_READ_STREAMS: u32 = 1000;

/// Prints the growth (for the record) and fails past [`RSS_GROWTH_MAX`].
fn assert_rss_growth_bounded(what: &str, before: u64, peak: u64) {
    let growth = peak.saturating_sub(before);
    eprintln!("{what}: RSS grew by {} MiB", growth >> 20);
    assert!(
        growth < RSS_GROWTH_MAX,
        "{what}: memory grew by {} MiB",
        growth >> 20
    );
}

/// A balancing over one hostile backend and one greeter: `calls` calls with
/// a 1 s deadline each, `pace` apart, end in time, with OK or one of
/// `allowed`, and at least one is answered by the greeter.
async fn against_hostile(
    hostility: Hostility,
    calls: usize,
    pace: Duration,
    allowed: &[tonic::Code],
) -> hostile_backend::HostileBackend {
    let hostile = hostile_backend::spawn(hostility).await;
    let good = backend("good").await;
    let b = balancing(
        "greeter",
        PolicyKind::RoundRobin,
        vec![static_subset("all", 1, &[hostile.addr, good.addr()])],
    );
    let proxy = start_proxy(config(vec![b])).await;
    wait_ready(&proxy, "greeter", 1).await;
    let mut client = proxy.client("greeter").await;
    let mut ok = 0;
    let mut failed = std::collections::BTreeMap::new();
    for i in 0..calls {
        tokio::time::sleep(pace).await;
        let mut req = tonic::Request::new(hello("hostile"));
        req.set_timeout(Duration::from_secs(1));
        let started = tokio::time::Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(5), client.say_hello(req))
            .await
            .unwrap_or_else(|_| panic!("{hostility:?}: call {i} got no answer in 5 s"));
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "{hostility:?}: call {i} took {took:?}"
        );
        match answer {
            Ok(reply) => {
                assert_eq!(reply.into_inner().backend, "good");
                ok += 1;
            }
            Err(status) => {
                assert!(
                    allowed.contains(&status.code()),
                    "{hostility:?}: call {i}: unexpected {status:?}"
                );
                *failed.entry(format!("{:?}", status.code())).or_insert(0) += 1;
            }
        }
    }
    eprintln!("{hostility:?}: {ok} calls OK, failed: {failed:?}");
    assert!(ok > 0, "{hostility:?}: the good backend answered no call");
    assert!(
        hostile.connections.load(Ordering::Relaxed) > 0,
        "{hostility:?}: the proxy never connected to the hostile backend"
    );
    // The proxy is alive and serving after it all.
    let fresh = proxy.client("greeter").await;
    // Each try with a deadline: one sent to a backend that never answers
    // would otherwise wait for ever.
    eventually(
        Duration::from_secs(10),
        "a call is answered afterwards",
        || {
            let mut c = fresh.clone();
            async move {
                let mut req = tonic::Request::new(hello("after"));
                req.set_timeout(Duration::from_secs(1));
                c.say_hello(req).await.is_ok()
            }
        },
    )
    .await;
    proxy.stop().await;
    drop(good);
    hostile
}

#[test]
fn h2_attacks_backend_speaking_garbage_fails_only_its_calls() {
    on_measured_runtime(
        "h2_attacks_backend_speaking_garbage_fails_only_its_calls",
        async {
            let _serial = MEMORY.lock().await;
            against_hostile(
                Hostility::Garbage,
                20,
                Duration::ZERO,
                &[
                    tonic::Code::Unavailable,
                    tonic::Code::Internal,
                    tonic::Code::Unknown,
                ],
            )
            .await;
        },
    );
}

#[test]
fn h2_attacks_backend_with_endless_headers_is_cut_off() {
    on_measured_runtime(
        "h2_attacks_backend_with_endless_headers_is_cut_off",
        async {
            let _serial = MEMORY.lock().await;
            let hostile = against_hostile(
                Hostility::EndlessHeaders,
                20,
                Duration::ZERO,
                &[
                    tonic::Code::Unavailable,
                    tonic::Code::Internal,
                    tonic::Code::Unknown,
                ],
            )
            .await;
            let written = hostile.written.load(Ordering::Relaxed);
            eprintln!("endless headers: the proxy took {written} bytes");
            assert!(
                written < ACCEPTED_MAX,
                "the proxy read {written} bytes of endless headers"
            );
        },
    );
}

#[test]
fn h2_attacks_backend_response_that_never_ends_meets_the_deadline() {
    on_measured_runtime(
        "h2_attacks_backend_response_that_never_ends_meets_the_deadline",
        async {
            let _serial = MEMORY.lock().await;
            against_hostile(
                Hostility::NeverEnds,
                6,
                Duration::ZERO,
                &[tonic::Code::DeadlineExceeded],
            )
            .await;
        },
    );
}

/// An endpoint that answers every call with GOAWAY (nothing processed) and
/// closes: the calls (40 over about 1.2 s) go to the other endpoint, and
/// the proxy redials it with back-off (20 ms doubling to 200 ms in these
/// tests) instead of once per call.
#[test]
fn h2_attacks_backend_sending_goaway_on_every_stream_is_redialled_with_backoff() {
    on_measured_runtime(
        "h2_attacks_backend_sending_goaway_on_every_stream_is_redialled_with_backoff",
        async {
            let _serial = MEMORY.lock().await;
            let hostile = against_hostile(
                Hostility::GoawayEveryStream,
                40,
                Duration::from_millis(30),
                &[],
            )
            .await;
            let connections = hostile.connections.load(Ordering::Relaxed);
            eprintln!("GOAWAY on every stream: {connections} connections for 40 calls");
            assert!(
                connections <= 15,
                "the proxy redialled {connections} times for 40 calls"
            );
        },
    );
}

/// Header lists just over the limit (five references to a 4 KB header,
/// 20 KB decoded, against 16 KiB): such a request is refused on its own
/// stream (431 or a reset), never forwarded, and the connection lives on.
#[test]
fn h2_attacks_oversized_header_list_is_refused_on_its_stream() {
    on_measured_runtime(
        "h2_attacks_oversized_header_list_is_refused_on_its_stream",
        async {
            let _serial = MEMORY.lock().await;
            let (bs, proxy) = target().await;
            let (mut r, mut w) = attacker(proxy.addr("greeter"), &[]).await;
            let mut seed = grpc_request(SAY_HELLO_STREAM);
            seed.extend(literal_indexed("x-big", &[b'b'; 4000]));
            let mut big = grpc_request(SAY_HELLO_STREAM);
            for _ in 0..5 {
                big.extend(indexed(62));
            }
            let mut out = frame(HEADERS, END_HEADERS | END_STREAM, 1, &seed);
            out.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &big));
            w.write_all(&out).await.expect("write");
            let seen = watch(&mut r, ANSWER_WITHIN, |f| {
                f.stream == 3 && (f.kind == RST_STREAM || f.kind == HEADERS)
            })
            .await;
            assert_eq!(
                seen.goaway, None,
                "the connection was closed: {:?}",
                seen.goaway_debug
            );
            let refusal = seen.frames.last().filter(|f| f.2 == 3);
            assert!(
                refusal.is_some(),
                "stream 3 got no refusal: {:?}",
                seen.frames
            );
            eprintln!("oversized header list: refused with {refusal:?}");
            // The connection still answers.
            w.write_all(&ping(7)).await.expect("write");
            let seen = watch(&mut r, ANSWER_WITHIN, |f| {
                f.kind == PING && f.flags & ACK != 0
            })
            .await;
            assert!(
                seen.count(PING) > 0,
                "the connection stopped answering: {:?}",
                seen.frames
            );
            let forwarded: u64 = bs.iter().map(|b| b.counts().say_hello_stream).sum();
            assert!(forwarded <= 1, "the oversized request reached a backend");
            proxy.stop().await;
        },
    );
}
