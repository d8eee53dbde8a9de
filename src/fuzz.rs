//! One hook per fuzz target (`fuzz/fuzz_targets/*.rs` call these). Each
//! feeds arbitrary bytes to a parser that faces the outside world and checks
//! what must hold of whatever it returns. Built for `cargo fuzz` (which sets
//! `--cfg fuzzing`) and for the unit tests that replay the seed corpora.

use crate::params::{MAX_TAGS, MAX_VALUE_LEN, Params};
use crate::phone::{Dial, Phone};
use crate::webhook::{self, Path, Verdict};
use crate::{config, snapshot};

/// Query string and body of a ping: the first byte says where to split.
pub fn params(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else { return };
    let at = usize::from(split).min(rest.len());
    let (query, body) = rest.split_at(at);
    let query = std::str::from_utf8(query).ok();
    if let Ok(params) = Params::parse(query, body) {
        assert!(params.tag_count() <= MAX_TAGS);
        for (name, value) in params.tags() {
            assert!(!name.is_empty() && name.len() <= 64, "{name:?}");
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b))
            );
            assert!(value.len() <= MAX_VALUE_LEN);
            assert!(!value.bytes().any(|b| b < 0x20 || b == 0x7f), "{value:?}");
        }
    }
}

/// A phone number in any form: normalizing is idempotent.
pub fn phone(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(phone) = Phone::parse(text) {
        let again = Phone::parse(&phone.to_string());
        assert_eq!(again, Ok(phone), "{text:?}");
        assert_eq!(Phone::from_digits(phone.digits()), Some(phone));
    }
    if let Ok(Dial::Phone(p)) = Dial::parse(text) {
        assert_eq!(Phone::parse(&p.to_string()), Ok(p));
    }
}

/// A config file: it loads or it names its problems, never more.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match config::parse_with_env(text, "fuzz.toml", |_| None) {
        Ok(routing) => {
            for campaign in &routing.campaigns {
                for key in &campaign.keys {
                    assert!(routing.key(&key.key).is_some());
                }
            }
        }
        Err(e) => assert!(!e.problems.is_empty()),
    }
}

/// A buyer's answer, read through a few kinds of path.
pub fn webhook_answer(data: &[u8]) {
    let paths =
        [("bid", "duration", "phone"), ("bidAmount", "bidTerms.0.callMinDuration", "bidTerms.0.number")];
    for (bid, timer, number) in paths {
        let (Ok(bid), Ok(timer), Ok(number)) = (Path::parse(bid), Path::parse(timer), Path::parse(number))
        else {
            return;
        };
        let mut body = data.to_vec();
        if let Verdict::Bid(b) = webhook::read_answer(&mut body, &bid, Some(&timer), Some(&number)) {
            assert!(b.milli > 0);
        }
    }
}

/// A snapshot file. With a first byte of 0 the rest is taken as a payload
/// and given a valid header, so the decoder behind the checksum is reached.
pub fn snapshot(data: &[u8]) {
    match data.split_first() {
        Some((0, payload)) => {
            let mut file = Vec::with_capacity(32 + payload.len());
            file.extend_from_slice(snapshot::MAGIC);
            file.extend_from_slice(&snapshot::VERSION.to_le_bytes());
            file.extend_from_slice(&0u64.to_le_bytes());
            file.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            file.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            file.extend_from_slice(payload);
            let _ = snapshot::decode(&file);
        }
        _ => {
            let _ = snapshot::decode(data);
        }
    }
}

#[cfg(test)]
mod tests {
    /// Replays every checked-in seed and regression input of every target.
    #[test]
    fn the_corpora_replay() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        type Hook = fn(&[u8]);
        let targets: [(&str, Hook); 5] = [
            ("params", super::params),
            ("phone", super::phone),
            ("config", super::config),
            ("webhook_answer", super::webhook_answer),
            ("snapshot", super::snapshot),
        ];
        let mut replayed = 0;
        for (name, hook) in targets {
            for folder in ["corpus", "regressions"] {
                let Ok(entries) = std::fs::read_dir(root.join(folder).join(name)) else { continue };
                for entry in entries.flatten() {
                    hook(&std::fs::read(entry.path()).unwrap());
                    replayed += 1;
                }
            }
        }
        assert!(replayed >= 15, "only {replayed} inputs: are the corpora checked in?");
    }
}
