//! A CIDR-to-segment file (`--segments`): one `CIDR SEGMENT` per line
//! (a comma or white space between them), `#` comments; the longest
//! prefix that contains an address names its segment. Add `0.0.0.0/0
//! internet` (and `::/0 internet`) to name everything else.

use std::net::IpAddr;

/// The segments of address ranges, longest prefix first.
#[derive(Clone, Debug, Default)]
pub struct Segments {
    ranges: Vec<Range>,
}

#[derive(Clone, Debug)]
struct Range {
    v6: bool,
    network: u128,
    prefix: u32,
    segment: String,
}

fn bits(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(v4) => (false, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (false, u128::from(u32::from(v4))),
            None => (true, u128::from(v6)),
        },
    }
}

fn mask(v6: bool, prefix: u32) -> u128 {
    let width = if v6 { 128 } else { 32 };
    if prefix == 0 { 0 } else { (u128::MAX << (width - prefix)) & if v6 { u128::MAX } else { u128::from(u32::MAX) } }
}

impl Segments {
    /// Parses the file's text; the error names the line.
    pub fn parse(text: &str) -> Result<Segments, String> {
        let mut ranges = Vec::new();
        for (idx, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut parts = line.split(|c: char| c == ',' || c.is_whitespace()).filter(|p| !p.is_empty());
            let (Some(cidr), Some(segment), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("line {}: expected `CIDR SEGMENT`, got {line:?}", idx + 1));
            };
            let (address, prefix) = cidr.split_once('/').unwrap_or((cidr, ""));
            let Ok(ip) = address.parse::<IpAddr>() else {
                return Err(format!("line {}: {address:?} is not an IP address", idx + 1));
            };
            let (v6, network) = bits(ip);
            let width = if v6 { 128 } else { 32 };
            let prefix = if prefix.is_empty() { Ok(width) } else { prefix.parse::<u32>() };
            let Some(prefix) = prefix.ok().filter(|p| *p <= width) else {
                return Err(format!("line {}: {cidr:?} has no valid prefix length (0–{width})", idx + 1));
            };
            ranges.push(Range { v6, network: network & mask(v6, prefix), prefix, segment: segment.to_owned() });
        }
        ranges.sort_by_key(|range| std::cmp::Reverse(range.prefix));
        Ok(Segments { ranges })
    }

    /// The segment of an address, if a range holds it.
    pub fn lookup(&self, address: &str) -> Option<&str> {
        let (v6, value) = bits(address.parse::<IpAddr>().ok()?);
        self.ranges
            .iter()
            .find(|range| range.v6 == v6 && value & mask(v6, range.prefix) == range.network)
            .map(|range| range.segment.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let segments =
            Segments::parse("# ranges\n10.0.0.0/8 corp\n10.1.0.0/16, payments\n0.0.0.0/0 internet\nfd00::/8 v6\n")
                .expect("parses");
        assert_eq!(segments.lookup("10.1.2.3"), Some("payments"));
        assert_eq!(segments.lookup("10.2.2.3"), Some("corp"));
        assert_eq!(segments.lookup("8.8.8.8"), Some("internet"));
        assert_eq!(segments.lookup("fd12::1"), Some("v6"));
        assert_eq!(segments.lookup("2001:db8::1"), None);
        assert_eq!(segments.lookup("-"), None);
        assert!(Segments::parse("10.0.0.0/33 x").expect_err("refused").contains("line 1"));
        assert!(Segments::parse("10.0.0.0/8").expect_err("refused").contains("CIDR SEGMENT"));
    }
}
