//! Phone numbers: normalization to E.164, and the numbers a call can be
//! transferred to.
//!
//! Written by hand rather than with a full numbering-plan library because it
//! runs on every ping and its rules are the contract's own, not a country
//! database's: strip separators; a leading `+` (or the space a form-decoded
//! `+` becomes) means E.164 with 8 to 15 digits; ten digits are North
//! American; eleven digits starting with 1 are North American with the
//! country code.

use std::fmt;
use std::num::NonZeroU64;

/// A number in E.164, stored as its digits (at most 15, so they fit a u64;
/// the first digit is never 0, so the value is never 0).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Phone(NonZeroU64);

/// Why a string is not a phone number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PhoneError {
    Empty,
    BadCharacter,
    /// E.164 needs 8 to 15 digits.
    E164Length,
    /// E.164 never starts with 0.
    LeadingZero,
    /// Without `+`, only 10 digits, or 11 starting with 1, are accepted.
    NotNorthAmerican,
    /// North American area codes start with 2 to 9.
    AreaCode,
}

impl fmt::Display for PhoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PhoneError::Empty => "it has no digits",
            PhoneError::BadCharacter => "it may hold only digits, a leading +, spaces, '-', '.', '(' and ')'",
            PhoneError::E164Length => "an international (+) number needs 8 to 15 digits",
            PhoneError::LeadingZero => "an international (+) number cannot start with 0",
            PhoneError::NotNorthAmerican => {
                "without a leading +, it must be 10 digits, or 11 digits starting with 1"
            }
            PhoneError::AreaCode => "a North American area code starts with 2 to 9",
        })
    }
}

impl Phone {
    /// Normalizes `input` to E.164 following the contract's rules.
    pub fn parse(input: &str) -> Result<Phone, PhoneError> {
        let bytes = input.as_bytes();
        // What nearly every ping sends, digits with or without a `+`, in
        // one tight pass; anything else takes the general loop below.
        let (plus, rest) = match bytes.split_first() {
            Some((b'+', rest)) => (true, rest),
            _ => (false, bytes),
        };
        if let Some(&first) = rest.first()
            && rest.len() <= 15
            && rest.iter().all(u8::is_ascii_digit)
        {
            let value = rest.iter().fold(0u64, |v, &b| v * 10 + u64::from(b - b'0'));
            return Phone::checked(plus, rest.len() as u32, first - b'0', value);
        }
        let international = matches!(bytes.first(), Some(b'+' | b' '));
        let mut value: u64 = 0;
        let mut digits = 0u32;
        let mut first = 0u8;
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'0'..=b'9' => {
                    if digits == 0 {
                        first = b - b'0';
                    }
                    digits += 1;
                    if digits > 15 {
                        // Keep counting to report the right error, but stop
                        // accumulating before the u64 could overflow.
                        continue;
                    }
                    value = value * 10 + u64::from(b - b'0');
                }
                b' ' | b'-' | b'.' | b'(' | b')' => {}
                b'+' if i == 0 => {}
                _ => return Err(PhoneError::BadCharacter),
            }
        }
        if digits == 0 {
            return Err(PhoneError::Empty);
        }
        Phone::checked(international, digits, first, value)
    }

    /// The number of `digits` digits (the first one `first`) read as
    /// `value`, if it is a valid one.
    fn checked(international: bool, digits: u32, first: u8, mut value: u64) -> Result<Phone, PhoneError> {
        if international {
            if !(8..=15).contains(&digits) {
                return Err(PhoneError::E164Length);
            }
            if first == 0 {
                return Err(PhoneError::LeadingZero);
            }
        } else {
            match digits {
                10 => {
                    if first < 2 {
                        return Err(PhoneError::AreaCode);
                    }
                    value += 10_000_000_000; // the +1 country code
                }
                11 if first == 1 => {
                    let area_first = (value / 1_000_000_000) % 10;
                    if area_first < 2 {
                        return Err(PhoneError::AreaCode);
                    }
                }
                _ => return Err(PhoneError::NotNorthAmerican),
            }
        }
        NonZeroU64::new(value).map(Phone).ok_or(PhoneError::LeadingZero)
    }

    /// The digits, without the `+`.
    pub fn digits(self) -> u64 {
        self.0.get()
    }

    /// Rebuilds a number from its digits (as stored in a snapshot).
    pub fn from_digits(digits: u64) -> Option<Phone> {
        if !(10_000_000..=999_999_999_999_999).contains(&digits) {
            return None;
        }
        NonZeroU64::new(digits).map(Phone)
    }

    /// Appends `+digits`.
    pub fn write(self, out: &mut Vec<u8>) {
        out.push(b'+');
        out.extend_from_slice(itoa::Buffer::new().format(self.0.get()).as_bytes());
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}", self.0)
    }
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone(+{})", self.0)
    }
}

impl serde::Serialize for Phone {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.digits())
    }
}

impl<'de> serde::Deserialize<'de> for Phone {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Phone, D::Error> {
        let digits = u64::deserialize(d)?;
        Phone::from_digits(digits)
            .ok_or_else(|| serde::de::Error::custom(format!("{digits} is not an E.164 number")))
    }
}

/// Where a call is transferred: a phone number or a SIP address.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub enum Dial {
    Phone(Phone),
    Sip(Box<str>),
}

impl Dial {
    /// Parses a transfer number: E.164 by the rules above, or `sip:user@host`.
    pub fn parse(input: &str) -> Result<Dial, PhoneError> {
        let trimmed = input.trim();
        if let Some(rest) = trimmed.strip_prefix("sip:") {
            let (user, host) = rest.split_once('@').ok_or(PhoneError::BadCharacter)?;
            let valid = |s: &str| {
                !s.is_empty()
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/%:[]".contains(&b))
            };
            if valid(user) && valid(host) && !host.contains('@') {
                return Ok(Dial::Sip(trimmed.into()));
            }
            return Err(PhoneError::BadCharacter);
        }
        Phone::parse(trimmed).map(Dial::Phone)
    }
}

impl fmt::Display for Dial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dial::Phone(p) => p.fmt(f),
            Dial::Sip(s) => f.write_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e164(s: &str) -> String {
        Phone::parse(s).map(|p| p.to_string()).unwrap_or_else(|e| format!("error: {e:?}"))
    }

    #[test]
    fn accepted_forms_normalize_alike() {
        for form in [
            "+18005550100",
            " 18005550100",
            "18005550100",
            "8005550100",
            "(800) 555-0100",
            "800.555.0100",
            "1-800-555-0100",
            "+1 (800) 555-0100",
        ] {
            assert_eq!(e164(form), "+18005550100", "{form:?}");
        }
        assert_eq!(e164("+44 20 7946 0958"), "+442079460958");
        assert_eq!(e164("+12345678"), "+12345678");
    }

    #[test]
    fn rejects() {
        assert_eq!(Phone::parse(""), Err(PhoneError::Empty));
        assert_eq!(Phone::parse("--"), Err(PhoneError::Empty));
        assert_eq!(Phone::parse("800555010x"), Err(PhoneError::BadCharacter));
        assert_eq!(Phone::parse("1+8005550100"), Err(PhoneError::BadCharacter));
        assert_eq!(Phone::parse("+1234567"), Err(PhoneError::E164Length));
        assert_eq!(Phone::parse("+1234567890123456"), Err(PhoneError::E164Length));
        assert_eq!(Phone::parse("+0800555010"), Err(PhoneError::LeadingZero));
        assert_eq!(Phone::parse("1800555010"), Err(PhoneError::AreaCode));
        assert_eq!(Phone::parse("11005550100"), Err(PhoneError::AreaCode));
        assert_eq!(Phone::parse("28005550100"), Err(PhoneError::NotNorthAmerican));
        assert_eq!(Phone::parse("800555010"), Err(PhoneError::NotNorthAmerican));
        assert_eq!(Phone::parse("99999999999999999999999"), Err(PhoneError::NotNorthAmerican));
        assert_eq!(Phone::parse("+99999999999999999999999"), Err(PhoneError::E164Length));
    }

    #[test]
    fn digits_round_trip() {
        let p = Phone::parse("+442079460958").unwrap();
        assert_eq!(Phone::from_digits(p.digits()), Some(p));
        let mut out = Vec::new();
        p.write(&mut out);
        assert_eq!(out, b"+442079460958");
    }

    use proptest::prelude::*;

    /// A North American number written the ways people write them.
    fn nanp() -> impl Strategy<Value = (u64, String)> {
        (2u64..10, 0u64..100, 2u64..10, 0u64..100, 0u64..10_000, 0usize..6).prop_map(
            |(a, b, c, d, line, style)| {
                let area = a * 100 + b;
                let exchange = c * 100 + d;
                let digits = area * 10_000_000 + exchange * 10_000 + line;
                let text = match style {
                    0 => format!("{area}{exchange:03}{line:04}"),
                    1 => format!("({area}) {exchange:03}-{line:04}"),
                    2 => format!("1-{area}-{exchange:03}-{line:04}"),
                    3 => format!("+1 {area} {exchange:03} {line:04}"),
                    4 => format!("{area}.{exchange:03}.{line:04}"),
                    _ => format!(" 1{area}{exchange:03}{line:04}"),
                };
                (digits, text)
            },
        )
    }

    proptest! {
        /// Normalizing a normalized number changes nothing.
        #[test]
        fn normalizing_is_idempotent(text in "[ +]?[0-9 ().-]{0,20}") {
            if let Ok(p) = Phone::parse(&text) {
                prop_assert_eq!(Phone::parse(&p.to_string()), Ok(p));
            }
        }

        /// Bare digits, with or without a `+`, read as they do with a
        /// separator in them (which takes the general path), errors
        /// included.
        #[test]
        fn plain_digits_read_as_the_general_path_does(plus in any::<bool>(), digits in "[0-9]{0,18}") {
            let sign = if plus { "+" } else { "" };
            let plain = format!("{sign}{digits}");
            let separated = format!("{sign}({digits})");
            prop_assert_eq!(Phone::parse(&plain), Phone::parse(&separated), "{}", plain);
        }

        /// On North American numbers, rtbd agrees with the phonenumber
        /// crate (Google's libphonenumber rules): whatever it deems valid,
        /// rtbd normalizes to the same E.164.
        #[test]
        fn agrees_with_phonenumber_on_north_american_numbers((digits, text) in nanp()) {
            let ours = Phone::parse(&text).map(|p| p.to_string());
            prop_assert_eq!(&ours, &Ok(format!("+1{digits}")), "{}", text);
            if let Ok(theirs) = phonenumber::parse(Some(phonenumber::country::Id::US), &text) {
                if phonenumber::is_valid(&theirs) {
                    let e164 = theirs.format().mode(phonenumber::Mode::E164).to_string();
                    prop_assert_eq!(ours.as_deref(), Ok(e164.as_str()), "{}", text);
                }
            }
        }
    }

    #[test]
    fn the_oracle_judges_real_numbers_valid() {
        // The property above only compares where the oracle says valid:
        // make sure it does for ordinary numbers.
        for text in ["(650) 253-0000", "212-736-5000", "+1 415 555 2671", "18004444444"] {
            let theirs = phonenumber::parse(Some(phonenumber::country::Id::US), text).unwrap();
            assert!(phonenumber::is_valid(&theirs), "{text}");
            let e164 = theirs.format().mode(phonenumber::Mode::E164).to_string();
            assert_eq!(Phone::parse(text).unwrap().to_string(), e164);
        }
    }

    #[test]
    fn dial_numbers_and_sip() {
        assert_eq!(
            Dial::parse("sip:buyer@sip.example.com"),
            Ok(Dial::Sip("sip:buyer@sip.example.com".into()))
        );
        assert!(Dial::parse("sip:@host").is_err());
        assert!(Dial::parse("sip:user").is_err());
        assert!(Dial::parse("sip:us er@host").is_err());
        assert_eq!(Dial::parse("+18005550100").unwrap().to_string(), "+18005550100");
    }
}
