//! Whose problem an error is. Every library crate's error says which class
//! it falls in, and callers act on the class, never on the message: the
//! binary exits 2 on [`ErrorClass::Input`] and retries only
//! [`ErrorClass::Transient`]; the HTTP API answers 400, 413/422, 503 or 500.

/// The class of an error (STYLE.md "Errors").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Bad input or configuration: the user's to fix; retrying changes nothing.
    Input,
    /// A configured limit was reached (memory, time, size, concurrency): the
    /// request is valid but too large for the limits the operator set.
    Limit,
    /// An external system failed (broker, object store) and may heal: retry
    /// with backoff.
    Transient,
    /// A bug or corrupt state: report it, do not retry.
    Internal,
}

impl ErrorClass {
    /// Whether waiting and trying again can help.
    pub fn is_retryable(self) -> bool {
        self == ErrorClass::Transient
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorClass::Input => "input",
            ErrorClass::Limit => "limit",
            ErrorClass::Transient => "transient",
            ErrorClass::Internal => "internal",
        })
    }
}

/// Every problem of a configuration section, collected at once (each is the
/// user's to fix: [`ErrorClass::Input`]).
#[derive(Debug, Default)]
pub struct Problems(pub Vec<String>);

impl Problems {
    /// Records the problem `message` says unless `ok`.
    pub fn check(&mut self, ok: bool, message: impl FnOnce() -> String) {
        if !ok {
            self.0.push(message());
        }
    }
}
