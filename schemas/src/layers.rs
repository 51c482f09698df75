//! Layered configuration text (STYLE.md "Configuration"): a TOML file's text,
//! then `PREFIX__SECTION__KEY` environment variables, deserialized into one
//! typed tree with every problem reported at once: the file's syntax, wrong
//! types with the file's line, unknown keys with their line or variable and
//! the keys the section does have. No I/O but [`read_small`]: the caller
//! reads the file, with it.
//!
//! The binary's `Config` is one such tree (its sections are defined by the
//! crates that own them); the fuzzer (`fuzz/`) drives this loader with
//! arbitrary text without building those crates.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The most a configuration file or a secret file may hold.
pub const SMALL_FILE_BYTES: u64 = 1 << 20;

/// Reads a file of at most [`SMALL_FILE_BYTES`] as UTF-8 text: a
/// configuration or a mounted secret. A larger one (a device such as
/// `/dev/zero`, a wrong path) is refused after reading one byte past the
/// limit, never read to its end.
pub fn read_small(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(SMALL_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > SMALL_FILE_BYTES {
        return Err(std::io::Error::other(format!("it holds more than {} KiB", SMALL_FILE_BYTES >> 10)));
    }
    String::from_utf8(bytes).map_err(|_| std::io::Error::other("it is not UTF-8 text"))
}

/// What a tree's layers look like beyond plain `[section] key = value`.
#[derive(Clone, Copy, Debug)]
pub struct Spec<'a> {
    /// The prefix of the variables, e.g. `PATCHTRAIL__`.
    pub env_prefix: &'a str,
    /// `(section, key)` pairs whose value is a map of free-form names:
    /// `PREFIX__SECTION__KEY__NAME` sets `NAME`, `_` read as `.`
    /// (`PATCHTRAIL__KAFKA__PROPERTIES__SECURITY_PROTOCOL`).
    pub maps: &'a [(&'a str, &'a str)],
    /// Keys the defaults do not serialize (an optional secret), named in
    /// "keys of" help all the same: `section` or `section.key`.
    pub hidden_keys: &'a [&'a str],
}

/// `T`'s defaults, then `file` (`(name, text)`, `name` in messages), then
/// the variables of `env` that carry the prefix; `check` adds the tree's own
/// problems (values out of range) to the others, so all are reported at once.
pub fn load<T>(
    file: Option<(&str, &str)>,
    env: impl IntoIterator<Item = (String, String)>,
    spec: &Spec<'_>,
    check: impl FnOnce(&T) -> Vec<String>,
) -> Result<T, Vec<String>>
where
    T: DeserializeOwned + Serialize + Default,
{
    let mut problems = Vec::new();
    let mut table = toml::Table::new();
    let (name, text) = file.unwrap_or_default();
    if file.is_some() {
        match text.parse::<toml::Table>() {
            Ok(parsed) => table = parsed,
            Err(e) => return Err(vec![format!("{name}: {}", one_line(&e.to_string()))]),
        }
        // Type errors, with the file's line and column.
        if let Err(e) = toml::from_str::<T>(text) {
            let key = e.span().and_then(|span| key_at(text, span.start));
            let message = match &key {
                // toml's message quotes the value.
                Some(key) if is_secret(key, spec.hidden_keys) => {
                    let line = e.span().map_or(0, |span| text[..span.start].matches('\n').count() + 1);
                    format!("line {line}: `{key}` has a value of the wrong type (not shown: it holds a secret)")
                }
                Some(key) => format!("{} (key `{key}`)", one_line(&e.to_string())),
                None => one_line(&e.to_string()),
            };
            problems.push(format!("{name}: {message}"));
        }
    }
    let prefix = spec.env_prefix;
    let mut from_env: BTreeMap<String, String> = BTreeMap::new();
    for (variable, value) in env {
        let Some(rest) = variable.strip_prefix(prefix) else { continue };
        let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        match parts.as_slice() {
            [section, map, name] if spec.maps.iter().any(|(s, m)| s == section && m == map) => {
                let key = name.replace('_', ".");
                let section = section_table(&mut table, section);
                section_table(section, map).insert(key, toml::Value::String(value));
            }
            [section, key] if !section.is_empty() && !key.is_empty() => {
                // A secret is text whatever it looks like: an all-digit token is no number.
                let secret = spec.hidden_keys.iter().any(|hidden| *hidden == format!("{section}.{key}"));
                let value = if secret { toml::Value::String(value) } else { env_value(&value) };
                section_table(&mut table, section).insert(key.clone(), value);
                from_env.insert(format!("{section}.{key}"), variable.clone());
            }
            _ => {
                let maps: Vec<String> = spec
                    .maps
                    .iter()
                    .map(|(s, m)| format!("{prefix}{}__{}__NAME", s.to_uppercase(), m.to_uppercase()))
                    .collect();
                let or = if maps.is_empty() { String::new() } else { format!(" (or {})", maps.join(", ")) };
                problems.push(format!("environment variable {variable}: expected {prefix}SECTION__KEY{or}"));
            }
        }
    }
    let mut unknown = Vec::new();
    let tree: Result<T, _> =
        serde_ignored::deserialize(toml::Value::Table(table), |path| unknown.push(path.to_string()));
    if !unknown.is_empty() {
        let defaults = toml::Value::try_from(T::default()).unwrap_or(toml::Value::Table(toml::Table::new()));
        for path in unknown {
            let known = known_keys(&defaults, spec.hidden_keys, &path);
            let origin = match from_env.get(&path) {
                Some(variable) => format!("environment variable {variable}"),
                None => match line_of(text, &path) {
                    Some(line) => format!("{name}:{line}"),
                    None => name.to_owned(),
                },
            };
            problems.push(format!("{origin}: unknown key `{path}`{known}"));
        }
    }
    match tree {
        Ok(tree) => {
            problems.extend(check(&tree));
            if problems.is_empty() { Ok(tree) } else { Err(problems) }
        }
        Err(e) => {
            if !from_env.is_empty() || problems.is_empty() {
                problems.push(format!("environment: {}", one_line(&e.to_string())));
            }
            Err(problems)
        }
    }
}

/// The line (from 1) of `path` (`section.key`) in a TOML text: a `key =` line
/// under its `[section]` header, or a `[path]` header, or a dotted key.
pub fn line_of(text: &str, path: &str) -> Option<usize> {
    let (section, key) = path.rsplit_once('.').unwrap_or(("", path));
    let mut current = String::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            current = header.trim().to_owned();
            if current == path {
                return Some(number + 1);
            }
            continue;
        }
        let Some((name, _)) = line.split_once('=') else { continue };
        let name = name.trim().trim_matches('"');
        let full = if current.is_empty() { name.to_owned() } else { format!("{current}.{name}") };
        if (current == section && name == key) || full == path {
            return Some(number + 1);
        }
    }
    None
}

/// Whether a client property or setting named `key` holds a secret: a
/// password, secret, token, credential or key (not a key's file location),
/// or a SASL mechanism's inline `sasl.*.config`.
pub fn names_a_secret(key: &str) -> bool {
    let inline = key.starts_with("sasl.") && key.ends_with(".config");
    let named = ["password", "secret", "token", "credential"].iter().any(|word| key.contains(word));
    named || inline || key.contains("key") && !key.ends_with("location")
}

/// Whether the setting `path` (`section.key`) holds a secret: one of
/// `hidden` (or in a section that is), or named like one.
fn is_secret(path: &str, hidden: &[&str]) -> bool {
    let name = path.rsplit_once('.').map_or(path, |(_, name)| name);
    hidden.iter().any(|h| path == *h || path.starts_with(&format!("{h}."))) || names_a_secret(name)
}

/// The key (`section.key`) of the `key = value` line holding byte
/// `offset` of a TOML text: an error's message names its value, not its
/// key, and the line itself is not quoted.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset)?;
    let number = before.matches('\n').count();
    let mut section = String::new();
    for line in text.lines().take(number + 1) {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            section = header.trim().trim_matches(['[', ']']).trim().to_owned();
        }
    }
    let line = text.lines().nth(number)?;
    let (name, _) = line.split_once('=')?;
    let name = name.trim().trim_matches('"');
    let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    plain.then(|| if section.is_empty() { name.to_owned() } else { format!("{section}.{name}") })
}

/// A TOML error on one line, without the excerpt of the file it quotes
/// (`2 | token = "…`): the line number says where, and the line may hold a secret.
fn one_line(message: &str) -> String {
    let excerpt = |l: &str| l.split_once('|').is_some_and(|(number, _)| number.trim().parse::<u64>().is_ok());
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|') && !l.starts_with('^') && !excerpt(l))
        .collect();
    lines.join(": ").replace("TOML parse error at ", "")
}

fn section_table<'a>(table: &'a mut toml::Table, key: &str) -> &'a mut toml::Table {
    let entry = table.entry(key.to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !entry.is_table() {
        *entry = toml::Value::Table(toml::Table::new());
    }
    entry.as_table_mut().expect("a table")
}

/// An environment value as TOML: a number or boolean when it reads as one,
/// otherwise the string.
fn env_value(value: &str) -> toml::Value {
    if let Ok(integer) = value.parse::<i64>() {
        toml::Value::Integer(integer)
    } else if let Ok(float) = value.parse::<f64>() {
        toml::Value::Float(float)
    } else if let Ok(boolean) = value.parse::<bool>() {
        toml::Value::Boolean(boolean)
    } else {
        toml::Value::String(value.to_owned())
    }
}

/// The keys the section of `path` has, for "did you mean" help.
fn known_keys(defaults: &toml::Value, hidden: &[&str], path: &str) -> String {
    let mut parts: Vec<&str> = path.split('.').collect();
    parts.pop();
    let mut at = defaults;
    for part in &parts {
        match at.get(part) {
            Some(next) => at = next,
            None => return String::new(),
        }
    }
    let Some(table) = at.as_table() else { return String::new() };
    let mut keys: Vec<&str> = table.keys().map(String::as_str).collect();
    let section = parts.join(".");
    for key in hidden {
        let (parent, name) = key.rsplit_once('.').unwrap_or(("", key));
        if parent == section {
            keys.push(name);
        }
    }
    keys.sort_unstable();
    keys.dedup();
    if parts.is_empty() {
        format!(" (sections: {})", keys.join(", "))
    } else {
        format!(" (keys of [{section}]: {})", keys.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default)]
    struct Tree {
        server: Server,
        kafka: Kafka,
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default)]
    struct Server {
        listen: String,
        max_rows: u64,
        token: Option<String>,
    }

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default)]
    struct Kafka {
        properties: BTreeMap<String, String>,
    }

    const SPEC: Spec<'static> =
        Spec { env_prefix: "APP__", maps: &[("kafka", "properties")], hidden_keys: &["server.token"] };

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn the_environment_wins_over_the_file_and_maps_take_free_names() {
        let text = "[server]\nlisten = \"a\"\nmax_rows = 5\n";
        let vars =
            env(&[("APP__SERVER__MAX_ROWS", "9"), ("APP__KAFKA__PROPERTIES__SASL_MECHANISM", "PLAIN"), ("X", "y")]);
        let tree: Tree = load(Some(("f.toml", text)), vars, &SPEC, |_: &Tree| Vec::new()).expect("loads");
        assert_eq!(tree.server.listen, "a");
        assert_eq!(tree.server.max_rows, 9);
        assert_eq!(tree.kafka.properties["sasl.mechanism"], "PLAIN");
    }

    #[test]
    fn every_unknown_key_is_reported_with_its_origin_and_the_known_keys() {
        let text = "[server]\nlisen = 1\n[serve]\nx = 1\n";
        let vars = env(&[("APP__SERVER__MAX_ROW", "9"), ("APP__NOPE", "1")]);
        let problems = load::<Tree>(Some(("f.toml", text)), vars, &SPEC, |_| Vec::new()).expect_err("problems");
        let all = problems.join("\n");
        assert!(
            all.contains("f.toml:2: unknown key `server.lisen` (keys of [server]: listen, max_rows, token)"),
            "{all}"
        );
        assert!(all.contains("f.toml:3: unknown key `serve` (sections: kafka, server)"), "{all}");
        assert!(all.contains("environment variable APP__SERVER__MAX_ROW: unknown key `server.max_row`"), "{all}");
        assert!(all.contains("APP__NOPE: expected APP__SECTION__KEY (or APP__KAFKA__PROPERTIES__NAME)"), "{all}");
        assert_eq!(problems.len(), 4, "{all}");
    }

    #[test]
    fn range_problems_come_with_unknown_keys() {
        let text = "[server]\nlisen = 1\nmax_rows = 0\n";
        let check = |tree: &Tree| {
            if tree.server.max_rows == 0 { vec!["server.max_rows must be positive".to_owned()] } else { Vec::new() }
        };
        let problems = load::<Tree>(Some(("f.toml", text)), [], &SPEC, check).expect_err("problems");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[1].contains("server.max_rows must be positive"), "{problems:?}");
    }

    #[test]
    fn syntax_and_type_errors_name_the_line() {
        let problems = load::<Tree>(Some(("f.toml", "[server]\nmax_rows = \"many\"\n")), [], &SPEC, |_| Vec::new())
            .expect_err("type");
        assert!(problems[0].starts_with("f.toml: line 2"), "{problems:?}");
        let problems = load::<Tree>(Some(("f.toml", "[server\n")), [], &SPEC, |_| Vec::new()).expect_err("syntax");
        assert!(problems[0].starts_with("f.toml: line 1"), "{problems:?}");
    }

    #[test]
    fn a_secret_from_the_environment_is_text_whatever_it_looks_like() {
        for token in ["12345", "true", "inf", "1e5"] {
            let tree: Tree = load(None, env(&[("APP__SERVER__TOKEN", token)]), &SPEC, |_: &Tree| Vec::new())
                .unwrap_or_else(|problems| panic!("{token}: {problems:?}"));
            assert_eq!(tree.server.token.as_deref(), Some(token));
        }
    }

    #[test]
    fn a_syntax_error_does_not_quote_the_line_it_is_on() {
        let text = "[server]\ntoken = \"hunter2\n";
        let problems = load::<Tree>(Some(("f.toml", text)), [], &SPEC, |_| Vec::new()).expect_err("syntax");
        assert!(problems[0].starts_with("f.toml: line 2"), "{problems:?}");
        assert!(!problems[0].contains("hunter2"), "{problems:?}");
    }

    #[test]
    fn a_type_error_names_its_key_and_quotes_no_secret() {
        let text = "[server]\nlisten = 9\ntoken = 424242\n";
        let problems = load::<Tree>(Some(("f.toml", text)), [], &SPEC, |_| Vec::new()).expect_err("types");
        assert!(problems[0].starts_with("f.toml: line 2"), "{problems:?}");
        assert!(problems[0].ends_with(" (key `server.listen`)"), "{problems:?}");
        let text = "[server]\ntoken = 424242\n";
        let problems = load::<Tree>(Some(("f.toml", text)), [], &SPEC, |_| Vec::new()).expect_err("types");
        let want = "f.toml: line 2: `server.token` has a value of the wrong type (not shown: it holds a secret)";
        assert_eq!(problems[0], want, "{problems:?}");
        assert!(!problems.iter().any(|p| p.contains("424242")), "{problems:?}");
    }
}
