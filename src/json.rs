//! A small JSON writer for the answers on the hot path.
//!
//! Written by hand because a ping's answer is a flat object of a handful of
//! fields: appending them to one buffer costs one allocation and no
//! reflection, where a serializer would build a value or walk a derive.
//! Everything else (records, stats, admin answers) uses `serde_json`.

use std::cell::Cell;

use bytes::Bytes;

thread_local! {
    /// Each thread's buffer for the object it is building, kept between
    /// answers: an answer is then one allocation of its exact size (the
    /// `Bytes` it is sent as), not a buffer grown and then shrunk.
    static SPARE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Largest buffer kept for the next answer.
const SPARE_MAX: usize = 4096;

/// Builds one flat JSON object.
pub struct Object {
    buf: Vec<u8>,
    first: bool,
}

impl Object {
    pub fn new() -> Object {
        Object::with_capacity(256)
    }

    pub fn with_capacity(capacity: usize) -> Object {
        let mut buf = SPARE.take();
        buf.clear();
        buf.reserve(capacity);
        buf.push(b'{');
        Object { buf, first: true }
    }

    // The field writers are always inlined: every name is a literal, so
    // at each call site its copy has a constant length and needs no call.
    #[inline(always)]
    fn key(&mut self, name: &str) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        self.buf.push(b'"');
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    /// A string field; the value is escaped.
    #[inline(always)]
    pub fn str(&mut self, name: &str, value: &str) -> &mut Object {
        self.key(name);
        write_str(&mut self.buf, value);
        self
    }

    /// A string field whose value the caller writes (already valid inside
    /// quotes, such as a uuid, a number or a time).
    #[inline(always)]
    pub fn raw_str(&mut self, name: &str, write: impl FnOnce(&mut Vec<u8>)) -> &mut Object {
        self.key(name);
        self.buf.push(b'"');
        write(&mut self.buf);
        self.buf.push(b'"');
        self
    }

    #[inline(always)]
    pub fn uint(&mut self, name: &str, value: u64) -> &mut Object {
        self.key(name);
        self.buf.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self
    }

    /// Thousandths of a dollar as a JSON number of dollars (`1.173`, `12.5`).
    #[inline(always)]
    pub fn money(&mut self, name: &str, milli: u64) -> &mut Object {
        self.key(name);
        write_money(&mut self.buf, milli);
        self
    }

    #[inline(always)]
    pub fn bool(&mut self, name: &str, value: bool) -> &mut Object {
        self.key(name);
        self.buf.extend_from_slice(if value { b"true" } else { b"false" });
        self
    }

    pub fn finish(mut self) -> Bytes {
        self.buf.push(b'}');
        let bytes = Bytes::copy_from_slice(&self.buf);
        if self.buf.capacity() <= SPARE_MAX {
            SPARE.set(self.buf);
        }
        bytes
    }
}

impl Default for Object {
    fn default() -> Object {
        Object::new()
    }
}

/// Appends `milli` thousandths as a decimal number without trailing zeros.
pub fn write_money(out: &mut Vec<u8>, milli: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(milli / 1000).as_bytes());
    let mut frac = milli % 1000;
    if frac == 0 {
        return;
    }
    out.push(b'.');
    let mut digits = 3;
    while frac % 10 == 0 {
        frac /= 10;
        digits -= 1;
    }
    let text = itoa::Buffer::new().format(frac).len();
    for _ in text..digits {
        out.push(b'0');
    }
    out.extend_from_slice(itoa::Buffer::new().format(frac).as_bytes());
}

/// Appends `s` as a JSON string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(milli: u64) -> String {
        let mut out = Vec::new();
        write_money(&mut out, milli);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn money_has_no_trailing_zeros() {
        assert_eq!(money(0), "0");
        assert_eq!(money(1_173), "1.173");
        assert_eq!(money(12_500), "12.5");
        assert_eq!(money(15_000), "15");
        assert_eq!(money(1_050), "1.05");
        assert_eq!(money(1_005), "1.005");
        assert_eq!(money(7), "0.007");
        assert_eq!(money(70), "0.07");
    }

    #[test]
    fn objects_are_valid_json() {
        let mut o = Object::new();
        o.str("s", "a\"b\\c\n\u{1}é").uint("n", 42).money("m", 1_173).bool("b", true);
        o.raw_str("r", |b| b.extend_from_slice(b"x-y"));
        let text = String::from_utf8(o.finish().to_vec()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["s"], "a\"b\\c\n\u{1}é");
        assert_eq!(v["n"], 42);
        assert_eq!(v["m"], 1.173);
        assert_eq!(v["b"], true);
        assert_eq!(v["r"], "x-y");
    }
}
