//! A body cut into DATA frames where the fuzzer says: the input's first
//! byte (its low four bits are the number of cuts; the other four are the
//! caller's), a big-endian u16 per cut (an offset into the body, modulo its
//! length plus one), then the body.

use std::collections::BTreeSet;

use bytes::Bytes;

/// The input's first byte, the body's chunks in order, and the body.
pub fn cut(input: &[u8]) -> (u8, Vec<Bytes>, Bytes) {
    let Some((&head, rest)) = input.split_first() else {
        return (0, Vec::new(), Bytes::new());
    };
    let (offsets, body) = rest.split_at((usize::from(head & 0x0f) * 2).min(rest.len()));
    let body = Bytes::copy_from_slice(body);
    let mut ends: BTreeSet<usize> = offsets
        .chunks_exact(2)
        .map(|o| usize::from(u16::from_be_bytes([o[0], o[1]])) % (body.len() + 1))
        .collect();
    ends.insert(body.len());
    let mut chunks = Vec::new();
    let mut start = 0;
    for end in ends {
        if end > start {
            chunks.push(body.slice(start..end));
            start = end;
        }
    }
    (head, chunks, body)
}

/// The input of [`cut`] for `body` cut at `offsets`, with `flags` in the
/// first byte's high four bits.
pub fn uncut(flags: u8, offsets: &[u16], body: &[u8]) -> Vec<u8> {
    let count = u8::try_from(offsets.len().min(15)).unwrap_or(15);
    let mut input = vec![(flags << 4) | count];
    for offset in &offsets[..usize::from(count)] {
        input.extend_from_slice(&offset.to_be_bytes());
    }
    input.extend_from_slice(body);
    input
}
