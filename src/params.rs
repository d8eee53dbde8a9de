//! Request parameters: the query string, a form body or a flat JSON body,
//! merged into one borrowed set.
//!
//! Hand-written because it runs on every ping: values borrow from the request
//! unless they had to be decoded, names are lower-cased in place, and every
//! limit of the contract (UTF-8, control characters, tag names, 64 tags,
//! 256-byte values, flat JSON) is checked in the same pass. The JSON reader
//! keeps numbers as the text the publisher sent (`"zip": 07030` is not a
//! thing, but `"age": 42` stays `42`), rejects nesting at its first byte and
//! never builds a tree, so there is no depth to exhaust.

use std::borrow::Cow;

use smallvec::SmallVec;

use crate::error::Rejection;

/// At most this many tags (parameters without a meaning of their own).
pub const MAX_TAGS: usize = 64;
/// Longest accepted parameter value, in bytes.
pub const MAX_VALUE_LEN: usize = 256;
/// Longest accepted parameter name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Parameter names with a meaning of their own; every other name is a tag.
pub const RESERVED: [&str; 7] =
    ["key", "publisher_id", "source_id", "caller_number", "inbound_number", "status", "uuid"];

/// Tags rtbd sets itself; a request's own are dropped.
pub const RTBD_TAGS: &str = "retreaver_rtb_";

/// The UTF-8 byte order mark some clients put before a body.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A body without the byte order mark before it, if it has one.
fn without_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(BOM).unwrap_or(body)
}

/// The first byte of a body that is not blank.
fn first_byte(body: &[u8]) -> Option<&u8> {
    body.iter().find(|b| !b.is_ascii_whitespace())
}

/// Checks a body sent as JSON (`content-type: application/json`): the only
/// JSON a request sends is an object of parameters. Anything else (`null`,
/// `[1]`, `"text"`) would otherwise be read as a form.
pub fn check_json_body(body: &[u8]) -> Result<(), Rejection> {
    match first_byte(without_bom(body)) {
        None | Some(b'{') => Ok(()),
        Some(_) => Err(Rejection::bad_request("bad JSON: the body must be an object of parameters, {…}")),
    }
}

fn is_reserved(name: &str) -> bool {
    // A match, not `RESERVED.contains`: compiled to a switch on the length.
    let reserved = matches!(
        name,
        "key" | "publisher_id" | "source_id" | "caller_number" | "inbound_number" | "status" | "uuid"
    );
    debug_assert_eq!(reserved, RESERVED.contains(&name));
    reserved
}

/// The merged parameters of one request. Later sources win: the body over
/// the query string, a later repeat over an earlier one.
#[derive(Debug, Default)]
pub struct Params<'a> {
    fields: SmallVec<[(Cow<'a, str>, Cow<'a, str>); 8]>,
    tags: usize,
}

impl<'a> Params<'a> {
    /// Parses a query string (if any) and then a body (JSON when its first
    /// non-blank byte is `{`, else form-urlencoded).
    pub fn parse(query: Option<&'a str>, body: &'a [u8]) -> Result<Params<'a>, Rejection> {
        let mut params = Params::default();
        if let Some(query) = query {
            params.add_urlencoded(query.as_bytes(), Source::Query)?;
        }
        params.add_body(body)?;
        Ok(params)
    }

    /// Adds a body: JSON if its first non-blank byte is `{`, else a form.
    /// A UTF-8 byte order mark before it is skipped.
    pub fn add_body(&mut self, body: &'a [u8]) -> Result<(), Rejection> {
        let body = without_bom(body);
        match first_byte(body) {
            None => Ok(()),
            Some(b'{') => self.add_json(body),
            Some(_) => self.add_urlencoded(body, Source::Form),
        }
    }

    /// The value of a parameter, by its lower-case name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_ref())
    }

    /// The tags: every parameter whose name has no meaning of its own.
    pub fn tags(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        self.fields.iter().filter(|(n, _)| !is_reserved(n)).map(|(n, v)| (n.as_ref(), v.as_ref()))
    }

    /// How many tags there are.
    pub fn tag_count(&self) -> usize {
        self.tags
    }

    /// An owned copy of the tags (for a ping that outlives its request).
    pub fn owned_tags(&self) -> Params<'static> {
        let fields = self
            .tags()
            .map(|(n, v)| (Cow::Owned(n.to_owned()), Cow::Owned(v.to_owned())))
            .collect::<SmallVec<_>>();
        Params { tags: fields.len(), fields }
    }

    /// Adds a tag rtbd itself made (a buyer's bid): past the limit on tags,
    /// replacing a tag of the same name.
    pub fn put(&mut self, name: String, value: String) {
        match self.fields.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = Cow::Owned(value),
            None => {
                self.tags += 1;
                self.fields.push((Cow::Owned(name), Cow::Owned(value)));
            }
        }
    }

    fn set(&mut self, name: Cow<'a, str>, value: Cow<'a, str>) -> Result<(), Rejection> {
        // One look at the name tells both whether it is lower case and
        // whether it is a valid name once lowered.
        let (valid, upper) =
            name.bytes().fold((!name.is_empty() && name.len() <= MAX_NAME_LEN, false), |(ok, up), b| {
                (ok && name_byte(b.to_ascii_lowercase()), up || b.is_ascii_uppercase())
            });
        let name = if upper { Cow::Owned(name.to_ascii_lowercase()) } else { name };
        if !valid {
            check_name(&name)?;
        }
        self.insert(name, value)
    }

    /// Adds a parameter whose name is valid and lower case.
    fn insert(&mut self, name: Cow<'a, str>, value: Cow<'a, str>) -> Result<(), Rejection> {
        if name.starts_with(RTBD_TAGS) {
            // rtbd writes these itself (a buyer's bid and timer): a
            // publisher's own would price calls as it pleases.
            return Ok(());
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(Rejection::bad_request(format!("value of {name} is over {MAX_VALUE_LEN} bytes")));
        }
        if let Some(slot) = self.fields.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = value;
            return Ok(());
        }
        if !is_reserved(&name) {
            if self.tags == MAX_TAGS {
                return Err(Rejection::bad_request(format!("over {MAX_TAGS} tags")));
            }
            self.tags += 1;
        }
        self.fields.push((name, value));
        Ok(())
    }

    fn add_urlencoded(&mut self, input: &'a [u8], source: Source) -> Result<(), Rejection> {
        // Checked as UTF-8 once, so that plain names and values are cut
        // from it as they are (at `&` and `=`, always character boundaries).
        let text = std::str::from_utf8(input).ok();
        let mut start = 0;
        while start < input.len() {
            let end = find(&input[start..], b'&').map_or(input.len(), |i| start + i);
            let equals = find(&input[start..end], b'=');
            let (pair, name_start) = (&input[start..end], start);
            start = end + 1;
            if pair.is_empty() {
                continue;
            }
            let (raw_name, raw_value) = match equals {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            // Nearly every name is plain lower case and nearly every value
            // plain ASCII: those are borrowed as they are, with nothing to
            // decode or check again.
            let plain_name = !raw_name.is_empty()
                && raw_name.len() <= MAX_NAME_LEN
                && raw_name.iter().all(|&b| NAME_BYTES[usize::from(b)]);
            match text {
                Some(text) if plain_name => {
                    let name = &text[name_start..name_start + raw_name.len()];
                    let value = if is_plain(raw_value) {
                        Cow::Borrowed(&text[end - raw_value.len()..end])
                    } else {
                        percent_decode(raw_value, source, Some(name))?
                    };
                    self.insert(Cow::Borrowed(name), value)?;
                }
                _ => self.add_pair(raw_name, raw_value, source)?,
            }
        }
        Ok(())
    }

    /// Adds one form pair the careful way: decoded, checked, lower-cased.
    fn add_pair(&mut self, raw_name: &'a [u8], raw_value: &'a [u8], source: Source) -> Result<(), Rejection> {
        let name = percent_decode(raw_name, source, None)?;
        if name.is_empty() {
            return Err(Rejection::bad_request(format!("a parameter in the {} has no name", source.noun())));
        }
        let value = percent_decode(raw_value, source, Some(&name))?;
        self.set(name, value)
    }

    fn add_json(&mut self, input: &'a [u8]) -> Result<(), Rejection> {
        let mut reader = JsonReader { input, text: std::str::from_utf8(input).ok(), pos: 0 };
        reader.skip_ws();
        reader.expect(b'{')?;
        reader.skip_ws();
        if reader.peek() == Some(b'}') {
            reader.pos += 1;
        } else {
            loop {
                reader.skip_ws();
                let name = reader.string(None)?;
                reader.skip_ws();
                reader.expect(b':')?;
                reader.skip_ws();
                if let Some(value) = reader.value(&name)? {
                    self.set(name, value)?;
                }
                reader.skip_ws();
                match reader.next() {
                    Some(b',') => continue,
                    Some(b'}') => break,
                    _ => return Err(reader.error("expected ',' or '}'")),
                }
            }
        }
        reader.skip_ws();
        if reader.pos != input.len() {
            return Err(reader.error("expected the end of the body after the object"));
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Source {
    Query,
    Form,
}

impl Source {
    fn noun(self) -> &'static str {
        match self {
            Source::Query => "query string",
            Source::Form => "form body",
        }
    }
}

/// A byte a (lower-cased) parameter name may hold.
const fn name_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
}

/// The bytes a (lower-cased) parameter name may hold, as a table.
static NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = name_byte(b as u8);
        b += 1;
    }
    table
};

// Form pairs are scanned eight bytes at a time, as words: every ping's query
// string goes through here, and its pairs are too short for a SIMD search
// to pay for its setup. A short tail is padded to a word with a byte that
// matches nothing.
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The eight bytes of `raw` from `at` as a word, padded with `pad` past
/// its end.
#[inline]
fn word_at(raw: &[u8], at: usize, pad: u8) -> u64 {
    let word = |w: &[u8]| u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
    match raw.get(at..at + 8) {
        Some(w) => word(w),
        // The last eight bytes, shifted down past the `short` already read.
        None if raw.len() >= 8 => {
            let short = at + 8 - raw.len();
            word(&raw[raw.len() - 8..]) >> (8 * short) | (ONES * u64::from(pad)) << (8 * (8 - short))
        }
        None => {
            let tail = raw.get(at..).unwrap_or_default();
            let word = tail.iter().rev().fold(0u64, |w, &b| w << 8 | u64::from(b));
            word | (ONES * u64::from(pad)) << (8 * tail.len())
        }
    }
}

/// The high bit of each byte of `word` that is zero (exact for the lowest
/// such byte, which is all a search needs).
#[inline]
fn zero_bytes(word: u64) -> u64 {
    word.wrapping_sub(ONES) & !word & HIGHS
}

/// Where the first byte `flags` marks is in `hay`, `pad` filling the last
/// word. `flags` gives the high bit of the bytes it marks, exact for the
/// lowest one.
#[inline]
fn first_flagged(hay: &[u8], pad: u8, flags: impl Fn(u64) -> u64) -> Option<usize> {
    let mut at = 0;
    while at < hay.len() {
        let found = flags(word_at(hay, at, pad));
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    None
}

/// The `%` and `+` bytes of a word: bytes to decode.
#[inline]
fn escapes(w: u64) -> u64 {
    zero_bytes(w ^ (ONES * u64::from(b'%'))) | zero_bytes(w ^ (ONES * u64::from(b'+')))
}

/// Where `needle` first is in `hay`.
fn find(hay: &[u8], needle: u8) -> Option<usize> {
    let pattern = ONES * u64::from(needle);
    first_flagged(hay, !needle, |w| zero_bytes(w ^ pattern))
}

/// Where the first `%` or `+` is in `hay`.
fn find_escape(hay: &[u8]) -> Option<usize> {
    first_flagged(hay, b'a', escapes)
}

/// Whether a form value needs nothing done: no `%` or `+` to decode, no
/// control character to refuse, no non-ASCII byte to check as UTF-8.
fn is_plain(raw: &[u8]) -> bool {
    // Below 0x20: the byte minus 0x20 borrows; 0x7f and up: the high bit
    // is set, or is once 1 is added (a carry out of a byte only comes from
    // 0xff, itself caught).
    let special = |w: u64| {
        let control = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
        let high = (w | w.wrapping_add(ONES)) & HIGHS;
        control | high | escapes(w)
    };
    first_flagged(raw, b'a', special).is_none()
}

/// Checks a (lower-cased) parameter name.
pub fn check_name(name: &str) -> Result<(), Rejection> {
    let ok = !name.is_empty() && name.len() <= MAX_NAME_LEN && name.bytes().all(name_byte);
    if ok {
        Ok(())
    } else {
        Err(Rejection::bad_request(format!(
            "bad tag name {:?}: use 1 to {MAX_NAME_LEN} of a-z, 0-9, '_', '-' and '.'",
            truncate(name, 80)
        )))
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn check_controls(value: &str, field: Option<&str>) -> Result<(), Rejection> {
    if value.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(Rejection::bad_request(match field {
            Some(name) => format!("value of {name} holds a control character"),
            None => "a parameter name holds a control character".to_owned(),
        }));
    }
    Ok(())
}

fn describe(field: Option<&str>) -> String {
    match field {
        Some(name) => format!("value of {name}"),
        None => "a parameter name".to_owned(),
    }
}

/// Decodes `+` and `%XX`, checks UTF-8 and control characters.
fn percent_decode<'a>(raw: &'a [u8], source: Source, field: Option<&str>) -> Result<Cow<'a, str>, Rejection> {
    let not_utf8 = || Rejection::bad_request(format!("{} is not valid UTF-8", describe(field)));
    let Some(first) = find_escape(raw) else {
        let text = std::str::from_utf8(raw).map_err(|_| not_utf8())?;
        check_controls(text, field)?;
        return Ok(Cow::Borrowed(text));
    };
    // The plain runs between escapes are copied whole.
    let mut out = Vec::with_capacity(raw.len());
    let (mut at, mut escape) = (0, Some(first));
    while let Some(i) = escape {
        out.extend_from_slice(&raw[at..i]);
        if raw[i] == b'+' {
            out.push(b' ');
            at = i + 1;
        } else {
            let hi = raw.get(i + 1).and_then(|&b| hex(b));
            let lo = raw.get(i + 2).and_then(|&b| hex(b));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                let end = (i + 3).min(raw.len());
                return Err(Rejection::bad_request(format!(
                    "bad percent-encoding {:?} in the {}",
                    String::from_utf8_lossy(&raw[i..end]),
                    source.noun()
                )));
            };
            out.push(hi << 4 | lo);
            at = i + 3;
        }
        escape = find_escape(&raw[at..]).map(|j| at + j);
    }
    out.extend_from_slice(&raw[at..]);
    let text = String::from_utf8(out).map_err(|_| not_utf8())?;
    check_controls(&text, field)?;
    Ok(Cow::Owned(text))
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A reader for one flat JSON object.
struct JsonReader<'a> {
    input: &'a [u8],
    /// The input, if it is all valid UTF-8 (checked once); strings are cut
    /// from it at their quotes, always character boundaries.
    text: Option<&'a str>,
    pos: usize,
}

impl<'a> JsonReader<'a> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn error(&self, what: &str) -> Rejection {
        Rejection::bad_request(format!("bad JSON at byte {}: {what}", self.pos))
    }

    fn expect(&mut self, byte: u8) -> Result<(), Rejection> {
        if self.next() == Some(byte) {
            Ok(())
        } else {
            self.pos = self.pos.saturating_sub(1);
            Err(self.error(&format!("expected '{}'", byte as char)))
        }
    }

    /// A value: `Some(text)`, or `None` for `null`.
    fn value(&mut self, name: &str) -> Result<Option<Cow<'a, str>>, Rejection> {
        match self.peek() {
            Some(b'"') => self.string(Some(name)).map(Some),
            Some(b'{' | b'[') => Err(Rejection::bad_request(format!(
                "nested JSON in {name}: the body must be a flat object of strings, numbers and booleans"
            ))),
            Some(b't') => self.word("true").map(Some),
            Some(b'f') => self.word("false").map(Some),
            Some(b'n') => self.word("null").map(|_| None),
            Some(b'-' | b'0'..=b'9') => self.number().map(Some),
            _ => Err(self.error("expected a value")),
        }
    }

    fn word(&mut self, word: &'static str) -> Result<Cow<'a, str>, Rejection> {
        if self.input[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(Cow::Borrowed(word))
        } else {
            Err(self.error("expected a value"))
        }
    }

    fn number(&mut self) -> Result<Cow<'a, str>, Rejection> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("bad number")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("bad number"));
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("bad number"));
            }
            self.digits();
        }
        // The grammar above admits only ASCII.
        let text = std::str::from_utf8(&self.input[start..self.pos]).map_err(|_| self.error("bad number"))?;
        Ok(Cow::Borrowed(text))
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }

    /// A string, borrowed when it has no escapes.
    fn string(&mut self, field: Option<&str>) -> Result<Cow<'a, str>, Rejection> {
        if self.peek() != Some(b'"') {
            return Err(self.error("expected a string"));
        }
        self.pos += 1;
        let start = self.pos;
        // Fast scan: most strings have no escapes and no control
        // characters, and are cut from the body, checked as UTF-8 once.
        let mut controls = false;
        while let Some(b) = self.peek() {
            match b {
                b'"' => {
                    let end = self.pos;
                    self.pos += 1;
                    let text = match self.text {
                        Some(body) => &body[start..end],
                        None => std::str::from_utf8(&self.input[start..end]).map_err(|_| {
                            Rejection::bad_request(format!("{} is not valid UTF-8", describe(field)))
                        })?,
                    };
                    if controls {
                        check_controls(text, field)?;
                    }
                    return Ok(Cow::Borrowed(text));
                }
                b'\\' => break,
                _ => {
                    controls |= b < 0x20 || b == 0x7f;
                    self.pos += 1;
                }
            }
        }
        let mut out: Vec<u8> = self.input[start..self.pos].to_vec();
        loop {
            match self.next() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => break,
                Some(b'\\') => match self.next() {
                    Some(b'"') => out.push(b'"'),
                    Some(b'\\') => out.push(b'\\'),
                    Some(b'/') => out.push(b'/'),
                    Some(b'b') => out.push(0x08),
                    Some(b'f') => out.push(0x0c),
                    Some(b'n') => out.push(b'\n'),
                    Some(b'r') => out.push(b'\r'),
                    Some(b't') => out.push(b'\t'),
                    Some(b'u') => {
                        let c = self.unicode_escape()?;
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                    _ => return Err(self.error("bad escape")),
                },
                Some(b) => out.push(b),
            }
        }
        let text = String::from_utf8(out)
            .map_err(|_| Rejection::bad_request(format!("{} is not valid UTF-8", describe(field))))?;
        check_controls(&text, field)?;
        Ok(Cow::Owned(text))
    }

    fn hex4(&mut self) -> Result<u32, Rejection> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = self.next().and_then(hex).ok_or_else(|| self.error("bad \\u escape"))?;
            v = v << 4 | u32::from(d);
        }
        Ok(v)
    }

    fn unicode_escape(&mut self) -> Result<char, Rejection> {
        let first = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&first) {
            if self.next() != Some(b'\\') || self.next() != Some(b'u') {
                return Err(self.error("unpaired surrogate in \\u escape"));
            }
            let second = self.hex4()?;
            if !(0xDC00..0xE000).contains(&second) {
                return Err(self.error("unpaired surrogate in \\u escape"));
            }
            0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
        } else {
            first
        };
        char::from_u32(code).ok_or_else(|| self.error("unpaired surrogate in \\u escape"))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse(query: &str, body: &str) -> Result<Vec<(String, String)>, String> {
        Params::parse(Some(query), body.as_bytes())
            .map(|p| p.fields.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect())
            .map_err(|r| r.info.into_owned())
    }

    #[test]
    fn query_form_and_json_merge_with_body_winning() {
        let got = parse("key=k&Caller_Zip=10001&a=1", "a=2&b=%2B1+2").unwrap();
        assert_eq!(
            got,
            vec![
                ("key".into(), "k".into()),
                ("caller_zip".into(), "10001".into()),
                ("a".into(), "2".into()),
                ("b".into(), "+1 2".into()),
            ]
        );
        let got =
            parse("a=1", r#" {"a": "x", "n": -1.5e3, "t": true, "z": null, "u": "\u00e9\ud83d\ude00"} "#)
                .unwrap();
        assert_eq!(
            got,
            vec![
                ("a".into(), "x".into()),
                ("n".into(), "-1.5e3".into()),
                ("t".into(), "true".into()),
                ("u".into(), "é😀".into()),
            ]
        );
    }

    #[test]
    fn tags_rtbd_sets_itself_are_dropped() {
        let got = parse("retreaver_rtb_b_bid=999&Retreaver_RTB_b_timer=1&zip=1", "").unwrap();
        assert_eq!(got, vec![("zip".into(), "1".into())]);
    }

    #[test]
    fn plus_in_a_form_becomes_a_space() {
        let p = Params::parse(Some("caller_number=+18005550100"), b"").unwrap();
        assert_eq!(p.get("caller_number"), Some(" 18005550100"));
    }

    #[test]
    fn reserved_names_are_not_tags() {
        let p = Params::parse(Some("key=k&publisher_id=p&caller_number=1&zip=1&state=NY"), b"").unwrap();
        assert_eq!(p.tag_count(), 2);
        assert_eq!(p.tags().collect::<Vec<_>>(), vec![("zip", "1"), ("state", "NY")]);
    }

    #[test]
    fn precise_errors() {
        let err = |q: &str, b: &str| parse(q, b).unwrap_err();
        assert!(err("a=%zz", "").contains("bad percent-encoding \"%zz\" in the query string"));
        assert!(err("a=%4", "").contains("bad percent-encoding"));
        assert!(err("a=%ff", "").contains("value of a is not valid UTF-8"));
        assert!(err("a=%00", "").contains("value of a holds a control character"));
        assert!(err("=1", "").contains("has no name"));
        assert!(err("bad name=1", "").contains("bad tag name \"bad name\""));
        assert!(err("", r#"{"a":{"b":1}}"#).contains("nested JSON in a"));
        assert!(err("", r#"{"a":[1]}"#).contains("nested JSON in a"));
        assert!(err("", r#"{"a":1"#).contains("bad JSON at byte 6"));
        assert!(err("", r#"{"a":01}"#).contains("bad JSON"));
        assert!(err("", r#"{"a":"\ud800"}"#).contains("surrogate"));
        assert!(err("", r#"{"a":"x\u0000"}"#).contains("control character"));
        assert!(err("", "{\"a\":\"x\ty\"}").contains("control character"));
        assert!(err("", r#"{"a":1} x"#).contains("end of the body"));
        let long = format!("a={}", "x".repeat(257));
        assert!(err(&long, "").contains("value of a is over 256 bytes"));
        let many: Vec<String> = (0..65).map(|i| format!("t{i}=1")).collect();
        assert!(err(&many.join("&"), "").contains("over 64 tags"));
        // Exactly 64 tags are fine, and repeats do not count twice.
        let ok: Vec<String> = (0..64).map(|i| format!("t{i}=1")).collect();
        assert!(parse(&ok.join("&"), "t0=2").is_ok());
    }

    #[test]
    fn invalid_utf8_in_a_form_body() {
        let e = Params::parse(None, b"a=\xff").unwrap_err();
        assert_eq!(e.http, 400);
        assert!(e.info.contains("not valid UTF-8"));
        let e = Params::parse(None, b"{\"a\":\"\xff\"}").unwrap_err();
        assert!(e.info.contains("not valid UTF-8"));
    }

    /// The query string taken pair by pair the careful way only.
    /// Percent-decoding one byte at a time, with the errors' messages.
    fn reference_decode(raw: &[u8]) -> Result<String, String> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < raw.len() {
            match raw[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let digit = |k: usize| raw.get(k).and_then(|&b| (b as char).to_digit(16));
                    let (Some(hi), Some(lo)) = (digit(i + 1), digit(i + 2)) else {
                        let bad = String::from_utf8_lossy(&raw[i..(i + 3).min(raw.len())]).into_owned();
                        return Err(format!("bad percent-encoding {bad:?} in the query string"));
                    };
                    out.push((hi * 16 + lo) as u8);
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        let text = String::from_utf8(out).map_err(|_| "value of v is not valid UTF-8".to_owned())?;
        if text.chars().any(|c| c < ' ' || c == '\u{7f}') {
            return Err("value of v holds a control character".to_owned());
        }
        Ok(text)
    }

    fn careful(input: &str) -> Result<Vec<(String, String)>, String> {
        let mut params = Params::default();
        for pair in input.as_bytes().split(|&b| b == b'&').filter(|p| !p.is_empty()) {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            params.add_pair(name, value, Source::Query).map_err(|r| r.info.into_owned())?;
        }
        Ok(params.fields.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect())
    }

    proptest! {
        /// The one-pass shortcut for plain pairs gives what the careful
        /// path gives, errors included.
        #[test]
        fn plain_pairs_parse_as_the_careful_path_does(
            input in proptest::collection::vec(
                prop_oneof![
                    Just("&"), Just("="), Just("%"), Just("+"), Just("%2B"), Just("%zz"), Just("A"),
                    Just("a"), Just("z"), Just("0"), Just("_"), Just("-"), Just("."), Just(" "),
                    Just("\u{1}"), Just("\u{7f}"), Just("é"), Just("key"), Just("retreaver_rtb_"),
                    Just("caller_number"), Just(":"), Just("~"),
                ],
                0..40,
            ).prop_map(|parts| parts.concat())
        ) {
            prop_assert_eq!(parse(&input, ""), careful(&input));
        }

        /// Decoding agrees with a byte-by-byte decoder, errors included.
        #[test]
        fn decoding_agrees_with_a_byte_by_byte_decoder(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("%"), Just("+"), Just("%2B"), Just("%2b"), Just("%zz"), Just("%4"), Just("%ff"),
                    Just("%00"), Just("%C3%A9"), Just("é"), Just("a"), Just("0"), Just(" "), Just("\u{1}"),
                    Just("\u{7f}"), Just("abcdefgh"),
                ],
                0..12,
            )
        ) {
            let raw = parts.concat();
            let ours = percent_decode(raw.as_bytes(), Source::Query, Some("v"))
                .map(|t| t.into_owned())
                .map_err(|r| r.info.into_owned());
            prop_assert_eq!(ours, reference_decode(raw.as_bytes()), "{:?}", raw);
        }

        /// The word-at-a-time scans agree with a byte-by-byte look, on
        /// every length and at every offset.
        #[test]
        fn word_scans_agree_with_bytes(
            bytes in proptest::collection::vec(
                prop_oneof![Just(b'&'), Just(b'='), Just(b'%'), Just(b'+'), Just(0x1f), Just(0x20),
                    Just(0x7e), Just(0x7f), Just(0x80), Just(0xff), Just(b'a'), Just(0u8), any::<u8>()],
                0..40,
            ),
            needle in prop_oneof![Just(b'&'), Just(b'='), any::<u8>()],
        ) {
            for from in 0..=bytes.len() {
                let hay = &bytes[from..];
                prop_assert_eq!(find(hay, needle), hay.iter().position(|&b| b == needle));
                prop_assert_eq!(find_escape(hay), hay.iter().position(|&b| b == b'%' || b == b'+'));
                let plain = hay.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'%' && b != b'+');
                prop_assert_eq!(is_plain(hay), plain, "{:?}", hay);
            }
        }
    }

    #[test]
    fn a_long_plain_name_is_refused() {
        let name = "a".repeat(MAX_NAME_LEN + 1);
        assert!(parse(&format!("{name}=1"), "").unwrap_err().contains("bad tag name"));
        assert!(parse(&format!("{}=1", &name[1..]), "").is_ok());
    }
}
