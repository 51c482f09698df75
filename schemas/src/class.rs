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

/// An error and its causes on one line, `a: b: c`, leaving out a cause
/// whose text the previous one already holds: object_store, DataFusion and
/// others print their source inside their own message, and a full disk
/// would otherwise say "No space left on device" four times.
pub fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut previous = String::new();
    let mut cause = Some(error);
    while let Some(error) = cause {
        let text = error.to_string();
        if previous.is_empty() || !previous.contains(text.as_str()) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
            previous = text;
        }
        cause = error.source();
    }
    out
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

#[cfg(test)]
mod tests {
    use super::one_line;

    #[derive(Debug)]
    struct Wraps(&'static str, Option<Box<Wraps>>);
    impl std::fmt::Display for Wraps {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Wraps {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    fn wraps(text: &'static str, source: Option<Wraps>) -> Wraps {
        Wraps(text, source.map(Box::new))
    }

    #[test]
    fn a_cause_already_in_its_parents_text_is_said_once() {
        let disk = wraps("No space left on device (os error 28)", None);
        let store = wraps("Unable to copy data to file: No space left on device (os error 28)", Some(disk));
        let error = wraps("lake storage failed at a.parquet", Some(store));
        assert_eq!(
            one_line(&error),
            "lake storage failed at a.parquet: Unable to copy data to file: No space left on device (os error 28)"
        );
        let plain = wraps("replay failed", Some(wraps("cannot read x", None)));
        assert_eq!(one_line(&plain), "replay failed: cannot read x");
    }
}
