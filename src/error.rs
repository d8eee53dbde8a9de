//! The 4xx answers a request can get.
//!
//! Bad input is answered, never crashed on: every check on a request path
//! returns a [`Rejection`] that the HTTP layer turns into
//! `{"status":"rejected","info":…}` with its status code. The `info` is a
//! sentence for the person who sent the request.

use std::borrow::Cow;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status code (400, 401, 404, 405, 413, 414, …).
    pub http: u16,
    /// The status word of the JSON answer: `rejected`, `expired`, `no-target`.
    pub status: &'static str,
    /// What was wrong, for a person.
    pub info: Cow<'static, str>,
}

impl Rejection {
    pub fn new(http: u16, info: impl Into<Cow<'static, str>>) -> Rejection {
        Rejection { http, status: "rejected", info: info.into() }
    }

    pub fn bad_request(info: impl Into<Cow<'static, str>>) -> Rejection {
        Rejection::new(400, info)
    }

    pub fn not_found(info: impl Into<Cow<'static, str>>) -> Rejection {
        Rejection::new(404, info)
    }

    pub fn unauthorized() -> Rejection {
        Rejection::new(401, "missing or wrong bearer token")
    }

    /// The same rejection with another status word.
    pub fn with_status(mut self, status: &'static str) -> Rejection {
        self.status = status;
        self
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.http, self.status, self.info)
    }
}

impl std::error::Error for Rejection {}
