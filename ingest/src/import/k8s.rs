//! Kubernetes objects as `kubectl get -o json|yaml` and controllers write
//! them: one object, a JSON array, a `List` (`items`), or a YAML stream of
//! documents separated by `---`.

use serde::Deserialize;
use serde_json::Value;

/// The objects of a document, each with its position (`document 2`,
/// `document 1 item 3`).
pub fn objects(bytes: &[u8]) -> Result<Vec<(String, Value)>, String> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let documents: Vec<Value> = if matches!(first, Some(b'{' | b'[')) {
        let mut documents = Vec::new();
        for document in serde_json::Deserializer::from_slice(bytes).into_iter::<Value>() {
            documents.push(document.map_err(|error| format!("not JSON: {error}"))?);
        }
        documents
    } else {
        let depth = flow_depth(bytes);
        if depth > MAX_YAML_DEPTH {
            return Err(format!("not read: the YAML nests {depth} levels deep, over the limit of {MAX_YAML_DEPTH}"));
        }
        let mut documents = Vec::new();
        for document in yaml_serde::Deserializer::from_slice(bytes) {
            let value = Value::deserialize(document).map_err(|error| format!("not YAML: {error}"))?;
            if !value.is_null() {
                documents.push(value);
            }
        }
        documents
    };
    let mut out = Vec::new();
    for (idx, document) in documents.into_iter().enumerate() {
        let position = format!("document {}", idx + 1);
        match document {
            Value::Array(items) => {
                out.extend(items.into_iter().enumerate().map(|(i, item)| (format!("{position} item {}", i + 1), item)));
            }
            Value::Object(mut object)
                if object.get("kind").and_then(Value::as_str).is_some_and(|kind| kind.ends_with("List")) =>
            {
                if let Some(Value::Array(items)) = object.remove("items") {
                    out.extend(
                        items.into_iter().enumerate().map(|(i, item)| (format!("{position} item {}", i + 1), item)),
                    );
                }
            }
            other => out.push((position, other)),
        }
    }
    Ok(out)
}

/// The deepest nesting of flow collections (`[`, `{`) a YAML input may
/// have: the parser recurses per level and takes its time to refuse (200 kB
/// of `[` took it 40 s), so deeper inputs are refused before it starts.
const MAX_YAML_DEPTH: usize = 128;

/// How deep the flow collections of a YAML text nest (brackets in quoted
/// scalars and comments do not count).
fn flow_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut quote: Option<u8> = None;
    let mut comment = false;
    let mut previous = b'\n';
    let mut escaped = false;
    for &byte in bytes {
        match quote {
            Some(b'"') if escaped => escaped = false,
            Some(b'"') if byte == b'\\' => escaped = true,
            Some(open) if byte == open => quote = None,
            Some(_) => {}
            None if comment => comment = byte != b'\n',
            None => {
                let starts_scalar = previous.is_ascii_whitespace() || b"[{,:".contains(&previous);
                match byte {
                    b'#' if previous.is_ascii_whitespace() => comment = true,
                    b'"' | b'\'' if starts_scalar => quote = Some(byte),
                    b'[' | b'{' => {
                        depth += 1;
                        deepest = deepest.max(depth);
                    }
                    b']' | b'}' => depth = depth.saturating_sub(1),
                    _ => {}
                }
            }
        }
        previous = byte;
    }
    deepest
}

/// A string at a JSON pointer.
pub fn text<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str).filter(|text| !text.is_empty())
}

/// Where a mapping flag looks: an annotation or a label of the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaField {
    /// `metadata.annotations.<key>`.
    Annotation(String),
    /// `metadata.labels.<key>`.
    Label(String),
}

impl MetaField {
    /// `annotation:KEY` or `label:KEY`.
    pub fn parse(text: &str) -> Option<MetaField> {
        let (kind, key) = text.split_once(':')?;
        if key.is_empty() {
            return None;
        }
        match kind {
            "annotation" => Some(MetaField::Annotation(key.to_owned())),
            "label" => Some(MetaField::Label(key.to_owned())),
            _ => None,
        }
    }

    /// Its value on an object.
    pub fn get<'a>(&self, object: &'a Value) -> Option<&'a str> {
        let (map, key) = match self {
            MetaField::Annotation(key) => ("annotations", key),
            MetaField::Label(key) => ("labels", key),
        };
        object.get("metadata")?.get(map)?.get(key)?.as_str().filter(|text| !text.is_empty())
    }
}

impl std::fmt::Display for MetaField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetaField::Annotation(key) => write!(f, "annotation {key}"),
            MetaField::Label(key) => write!(f, "label {key}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_nested_too_deep_is_refused_before_it_is_parsed() {
        let deep = format!("spec: {}", "[".repeat(200_000));
        let started = std::time::Instant::now();
        let error = objects(deep.as_bytes()).expect_err("too deep");
        assert_eq!(error, "not read: the YAML nests 200000 levels deep, over the limit of 128");
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
        // Brackets in quoted scalars and comments are text.
        let text = format!("a: \"{0}\"\nb: '{0}'\n# {0}\nc: [1, [2, {{d: 3}}]]\n", "[".repeat(500));
        assert_eq!(flow_depth(text.as_bytes()), 3);
        assert_eq!(objects(text.as_bytes()).expect("read").len(), 1);
    }

    #[test]
    fn every_container_shape() {
        let yaml = b"kind: A\n---\nkind: B\n---\n";
        let names =
            |bytes: &[u8]| -> Vec<String> { objects(bytes).expect("parses").into_iter().map(|(p, _)| p).collect() };
        assert_eq!(names(yaml), ["document 1", "document 2"]);
        assert_eq!(names(br#"[{"kind":"A"},{"kind":"B"}]"#), ["document 1 item 1", "document 1 item 2"]);
        assert_eq!(names(b"kind: List\nitems:\n- kind: A\n"), ["document 1 item 1"]);
        assert_eq!(names(b"{\"kind\":\"A\"}\n{\"kind\":\"B\"}\n"), ["document 1", "document 2"]);
        assert!(objects(b"kind: [unclosed").is_err());
    }
}
