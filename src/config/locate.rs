//! Where in the file a field is: turns a field path such as
//! `campaigns[0].targets[2].number` into a line and column, so every
//! validation message points at the line to fix.

use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A field path from the top of the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Path(Vec<Seg>);

impl Path {
    pub fn root() -> Path {
        Path(Vec::new())
    }

    pub fn key(&self, name: &str) -> Path {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(name.to_owned()));
        Path(segs)
    }

    pub fn index(&self, i: usize) -> Path {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(i));
        Path(segs)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// The byte range of the deepest part of `path` that exists in `text`:
/// the field itself, or the table that lacks it.
pub fn span_of(text: &str, path: &Path) -> Option<Range<usize>> {
    let doc = DeTable::parse(text).ok()?;
    let mut span = doc.span();
    let mut table: Option<&DeTable> = Some(doc.get_ref());
    let mut array: Option<&[Spanned<DeValue>]> = None;
    for seg in &path.0 {
        let next: &Spanned<DeValue> = match (seg, table, array) {
            (Seg::Key(name), Some(t), _) => {
                match t.iter().find(|(k, _)| k.get_ref().as_ref() == name.as_str()) {
                    Some((k, v)) => {
                        // A value's own span can be empty for a table built
                        // from headers; the key then marks the place.
                        span = if v.span().is_empty() { k.span() } else { v.span() };
                        v
                    }
                    None => break,
                }
            }
            (Seg::Index(i), _, Some(items)) => match items.get(*i) {
                Some(v) => {
                    span = v.span();
                    v
                }
                None => break,
            },
            _ => break,
        };
        table = None;
        array = None;
        match next.get_ref() {
            DeValue::Table(t) => table = Some(t),
            DeValue::Array(a) => array = Some(&a[..]),
            _ => {}
        }
    }
    Some(span)
}

/// The path of the field at byte `offset` of `text` (where the TOML reader
/// says a value has the wrong type), the other way from [`span_of`].
pub fn path_at(text: &str, offset: usize) -> Option<Path> {
    let doc = DeTable::parse(text).ok()?;
    in_table(doc.get_ref(), offset, &Path::root())
}

fn in_table(table: &DeTable, offset: usize, path: &Path) -> Option<Path> {
    table.iter().find_map(|(k, v)| {
        let path = path.key(k.get_ref());
        in_value(v, offset, &path).or_else(|| k.span().contains(&offset).then_some(path))
    })
}

/// The deepest field of `value` at `offset`. Tables made from headers have
/// no span of their own, so every part is looked into, not only the one
/// whose span holds the offset.
fn in_value(value: &Spanned<DeValue>, offset: usize, path: &Path) -> Option<Path> {
    let deeper = match value.get_ref() {
        DeValue::Table(t) => in_table(t, offset, path),
        DeValue::Array(items) => {
            items.iter().enumerate().find_map(|(i, item)| in_value(item, offset, &path.index(i)))
        }
        _ => None,
    };
    deeper.or_else(|| value.span().contains(&offset).then(|| path.clone()))
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let col = text.get(line_start..offset).map_or(1, |s| s.chars().count() + 1);
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[server]\nlisten = \"x\"\n\n[[campaigns]]\nid = \"a\"\n\n[[campaigns]]\nid = \"b\"\n\n[[campaigns.targets]]\nid = \"t\"\nnumber = \"bad\"\n";

    fn line_of(path: &Path) -> usize {
        let span = span_of(TEXT, path).unwrap();
        line_col(TEXT, span.start).0
    }

    #[test]
    fn finds_fields_in_arrays_of_tables() {
        assert_eq!(line_of(&Path::root().key("server").key("listen")), 2);
        assert_eq!(line_of(&Path::root().key("campaigns").index(1).key("id")), 8);
        let target = Path::root().key("campaigns").index(1).key("targets").index(0);
        assert_eq!(line_of(&target.key("number")), 12);
        assert_eq!(target.key("number").to_string(), "campaigns[1].targets[0].number");
    }

    #[test]
    fn a_missing_field_points_at_its_table() {
        let missing = Path::root().key("campaigns").index(1).key("targets").index(0).key("weight");
        let line = line_of(&missing);
        assert!((10..=12).contains(&line), "line {line}");
    }
}
