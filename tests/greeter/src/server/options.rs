//! What a backend is and how it misbehaves.

use std::time::Duration;

use tonic::Code;

/// Default limit for messages in either direction: well above the 4 MiB
/// messages the large-payload tests send.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How a backend is started.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// Name put in every reply (`HelloReply.backend`).
    pub name: String,
    /// Version label put in every reply (`HelloReply.version`).
    pub version: String,
    /// Faults applied to every call until changed with
    /// [`RunningBackend::set_faults`](super::RunningBackend::set_faults).
    pub faults: Faults,
    /// Copy the request's `x-*` metadata into the response headers, and into the
    /// trailers under the name prefixed with [`crate::ECHO_TRAILER_PREFIX`].
    pub echo_metadata: bool,
    /// Send GOAWAY on every connection once it is this old (the connection then
    /// finishes its calls and closes; the backend keeps serving new ones).
    pub max_connection_age: Option<Duration>,
    /// Largest message accepted or sent.
    pub max_message_bytes: usize,
}

impl BackendOptions {
    /// A well-behaved backend with this name and version `v1`.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: "v1".to_owned(),
            faults: Faults::default(),
            echo_metadata: true,
            max_connection_age: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    /// The same backend with another version label.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// The same backend with these faults.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }
}

/// Faults a backend injects into calls. Request metadata
/// ([`crate::fault_headers`]) overrides them for a single call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Answer every call with this status instead of a reply.
    pub fail_with: Option<(Code, String)>,
    /// Wait this long before the first reply.
    pub delay: Option<Duration>,
    /// Wait this long between stream replies.
    pub reply_interval: Option<Duration>,
    /// Close the TCP connection after this many replies of a call (0: before
    /// answering), without any HTTP/2 goodbye: a backend crashing mid-stream.
    pub close_connection_after: Option<u32>,
}

impl Faults {
    /// Every call answers with this status.
    pub fn fail(code: Code, message: impl Into<String>) -> Self {
        Self {
            fail_with: Some((code, message.into())),
            ..Self::default()
        }
    }
}
