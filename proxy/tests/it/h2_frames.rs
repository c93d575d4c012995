//! Raw HTTP/2 for the attack tests: frames written byte by byte (9-byte
//! header + payload, RFC 9113 §4.1) and HPACK literals without Huffman
//! (RFC 7541 §6.2), so a test can send what no well-behaved library would.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

pub const NO_ERROR: u32 = 0x0;
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const FLOW_CONTROL_ERROR: u32 = 0x3;
pub const CANCEL: u32 = 0x8;
pub const COMPRESSION_ERROR: u32 = 0x9;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame: header and payload, ready to write.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("payload fits a frame length");
    assert!(len < 1 << 24, "frame length is 24 bits");
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

pub fn settings(values: &[(u16, u32)]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (id, value) in values {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &payload)
}

pub fn settings_ack() -> Vec<u8> {
    frame(SETTINGS, ACK, 0, &[])
}

pub fn ping(data: u64) -> Vec<u8> {
    frame(PING, 0, 0, &data.to_be_bytes())
}

pub fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

pub fn goaway(last_stream: u32, code: u32) -> Vec<u8> {
    let mut payload = last_stream.to_be_bytes().to_vec();
    payload.extend_from_slice(&code.to_be_bytes());
    frame(GOAWAY, 0, 0, &payload)
}

/// An HPACK integer with an `n`-bit prefix, the other bits of the first
/// byte set to `first`.
pub fn hpack_int(first: u8, n: u32, value: usize) -> Vec<u8> {
    let max = (1usize << n) - 1;
    if value < max {
        return vec![first | value as u8];
    }
    let mut out = vec![first | max as u8];
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
    out
}

fn hpack_string(s: &[u8]) -> Vec<u8> {
    let mut out = hpack_int(0, 7, s.len());
    out.extend_from_slice(s);
    out
}

/// A literal header field without indexing, new name.
pub fn literal(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x00];
    out.extend(hpack_string(name.as_bytes()));
    out.extend(hpack_string(value));
    out
}

/// A literal header field with incremental indexing (enters the dynamic
/// table at index 62), new name.
pub fn literal_indexed(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x40];
    out.extend(hpack_string(name.as_bytes()));
    out.extend(hpack_string(value));
    out
}

/// An indexed header field: one byte for an index below 127.
pub fn indexed(index: usize) -> Vec<u8> {
    hpack_int(0x80, 7, index)
}

/// The header block of a gRPC call to `path`.
pub fn grpc_request(path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(literal(":method", b"POST"));
    out.extend(literal(":scheme", b"http"));
    out.extend(literal(":path", path.as_bytes()));
    out.extend(literal(":authority", b"attack"));
    out.extend(literal("content-type", b"application/grpc"));
    out.extend(literal("te", b"trailers"));
    out
}

pub const SAY_HELLO: &str = "/greeter.Greeter/SayHello";
pub const SAY_HELLO_STREAM: &str = "/greeter.Greeter/SayHelloStream";

/// One gRPC message (uncompressed) as a DATA payload.
pub fn grpc_message(message: &impl prost::Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut out = vec![0];
    out.extend_from_slice(&u32::try_from(body.len()).expect("small").to_be_bytes());
    out.extend(body);
    out
}

/// A frame as read from the peer.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a GOAWAY or RST_STREAM.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            GOAWAY => 4,
            RST_STREAM => 0,
            _ => return None,
        };
        let bytes = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?))
    }
}

/// Reads one frame; `None` at a clean end of the connection. Refuses
/// frames over 16 MiB (the protocol's ceiling) before reading them.
pub async fn read_frame(r: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Option<Frame>> {
    let mut head = [0u8; 9];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0; len];
    r.read_exact(&mut payload).await?;
    Ok(Some(Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
    }))
}

/// What a peer sent until it closed the connection or `within` passed.
#[derive(Debug, Default)]
pub struct Seen {
    pub frames: Vec<(u8, u8, u32, Option<u32>)>,
    /// The first GOAWAY's error code.
    pub goaway: Option<u32>,
    /// Its debug data.
    pub goaway_debug: String,
    /// The connection ended (EOF or reset) before the deadline.
    pub closed: bool,
}

impl Seen {
    pub fn count(&self, kind: u8) -> usize {
        self.frames.iter().filter(|f| f.0 == kind).count()
    }
}

/// Reads frames until the peer closes, `within` passes, or `stop` says the
/// frame seen is the last one wanted. Frame payloads are not kept.
pub async fn watch(
    r: &mut (impl AsyncRead + Unpin),
    within: Duration,
    mut stop: impl FnMut(&Frame) -> bool,
) -> Seen {
    let mut seen = Seen::default();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, read_frame(r)).await {
            Err(_) => return seen,
            Ok(Ok(None)) | Ok(Err(_)) => {
                seen.closed = true;
                return seen;
            }
            Ok(Ok(Some(f))) => {
                if f.kind == GOAWAY && seen.goaway.is_none() {
                    seen.goaway = f.error_code();
                    seen.goaway_debug =
                        String::from_utf8_lossy(f.payload.get(8..).unwrap_or_default())
                            .into_owned();
                }
                seen.frames
                    .push((f.kind, f.flags, f.stream, f.error_code()));
                if stop(&f) {
                    return seen;
                }
            }
        }
    }
}

/// Writes `bytes`; false when the peer closed or stopped reading for `stall`.
pub async fn write_or_stall(
    w: &mut (impl AsyncWrite + Unpin),
    bytes: &[u8],
    stall: Duration,
) -> bool {
    matches!(
        tokio::time::timeout(stall, w.write_all(bytes)).await,
        Ok(Ok(()))
    )
}
