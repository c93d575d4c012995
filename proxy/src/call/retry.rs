//! Whether a failed attempt may be sent again: the decision alone, apart
//! from the sending (the call module) and the buffer it replays
//! (`transport::replay`).

/// How an attempt failed, as far as a retry is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptFailure {
    /// The endpoint answered trailers-only UNAVAILABLE: it turned the call
    /// away without processing it.
    TurnedAway,
    /// REFUSED_STREAM, or a GOAWAY whose last-stream-id excluded the stream:
    /// the endpoint guarantees it did not act on the call.
    NeverReached,
    /// The endpoint reset the stream, or the connection was lost, before
    /// any answer: it may have acted on the call.
    LostBeforeAnswer,
    /// Anything else, such as a reset the proxy made itself because the
    /// caller's body failed.
    Other,
}

impl AttemptFailure {
    /// Classifies a failed dispatch by the HTTP/2 error inside it.
    pub fn of(error: &h2::Error) -> Self {
        Self::of_h2(Some(error))
    }

    fn of_h2(error: Option<&h2::Error>) -> Self {
        let Some(e) = error else {
            // No HTTP/2 cause: the connection itself went away.
            return AttemptFailure::LostBeforeAnswer;
        };
        if e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote()) {
            AttemptFailure::NeverReached
        } else if e.is_io() || e.is_go_away() || (e.is_reset() && e.is_remote()) {
            AttemptFailure::LostBeforeAnswer
        } else {
            AttemptFailure::Other
        }
    }

    /// Whether the call may go to an endpoint again (attempts, the replay
    /// buffer and the budget permitting): one that never reached a backend
    /// always; one a backend may have seen only for a method listed as
    /// idempotent.
    pub fn retryable(self, idempotent: bool) -> bool {
        match self {
            AttemptFailure::NeverReached => true,
            AttemptFailure::TurnedAway | AttemptFailure::LostBeforeAnswer => idempotent,
            AttemptFailure::Other => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified_by_their_http2_cause() {
        let refused = h2::Error::from(h2::Reason::REFUSED_STREAM);
        assert_eq!(
            AttemptFailure::of_h2(Some(&refused)),
            AttemptFailure::NeverReached
        );
        assert_eq!(
            AttemptFailure::of_h2(None),
            AttemptFailure::LostBeforeAnswer
        );
        // A reset the proxy made itself is no loss at the endpoint.
        let own_cancel = h2::Error::from(h2::Reason::CANCEL);
        assert_eq!(
            AttemptFailure::of_h2(Some(&own_cancel)),
            AttemptFailure::Other
        );
    }

    #[test]
    fn only_idempotent_methods_retry_what_a_backend_may_have_seen() {
        use AttemptFailure::*;
        for (failure, plain, idempotent) in [
            (NeverReached, true, true),
            (TurnedAway, false, true),
            (LostBeforeAnswer, false, true),
            (Other, false, false),
        ] {
            assert_eq!(failure.retryable(false), plain, "{failure:?}");
            assert_eq!(failure.retryable(true), idempotent, "{failure:?}");
        }
    }
}
