//! The statuses of the contract: what a record is now, and the detailed
//! statuses that explain each step of a ping (`reason`, `call_flow`).

use arcstr::{ArcStr, literal};

/// What a ping's record is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Status {
    /// Waiting on buyers' webhooks.
    Processing,
    Reserved,
    Confirmed,
    /// The call arrived; it stays `claimed` after it ends.
    Claimed,
    Expired,
    NoTarget,
    Rejected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Processing => "considering_targets.single",
            Status::Reserved => "reserved",
            Status::Confirmed => "confirmed",
            Status::Claimed => "claimed",
            Status::Expired => "expired",
            Status::NoTarget => "no-target",
            Status::Rejected => "rejected",
        }
    }

    /// A live reservation: holds a target for its caller until it expires.
    pub fn is_reservation(self) -> bool {
        matches!(self, Status::Reserved | Status::Confirmed)
    }
}

/// A detailed status: why a target was passed over, or a lifecycle step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Detailed {
    TargetsPaused,
    TargetsClosed,
    TargetDisqualified,
    TargetDisqualifiedByCap,
    TargetSimulcapped,
    TargetsDuplicateDeprioritized,
    UndialableExpression,
    Rejected,
    ConsideringTargetsSingle,
    Reserved,
    Confirmed,
    Claimed,
    Expired,
    Ended,
    NoTarget,
}

impl Detailed {
    pub fn as_str(self) -> &'static str {
        match self {
            Detailed::TargetsPaused => "targets_paused",
            Detailed::TargetsClosed => "targets_closed",
            Detailed::TargetDisqualified => "target_disqualified",
            Detailed::TargetDisqualifiedByCap => "target_disqualified_by_cap",
            Detailed::TargetSimulcapped => "target_simulcapped",
            Detailed::TargetsDuplicateDeprioritized => "targets_duplicate_deprioritized",
            Detailed::UndialableExpression => "undialable_expression",
            Detailed::Rejected => "rejected",
            Detailed::ConsideringTargetsSingle => "considering_targets.single",
            Detailed::Reserved => "reserved",
            Detailed::Confirmed => "confirmed",
            Detailed::Claimed => "claimed",
            Detailed::Expired => "expired",
            Detailed::Ended => "ended",
            Detailed::NoTarget => "no-target",
        }
    }

    /// The sentence a publisher reads when every target was passed over for
    /// this reason.
    pub fn summary(self) -> ArcStr {
        match self {
            Detailed::TargetsPaused => literal!("every target is paused"),
            Detailed::TargetsClosed => literal!("every target is outside its business hours"),
            Detailed::TargetDisqualified => literal!("no target accepts this caller"),
            Detailed::TargetDisqualifiedByCap => literal!("every target has reached a cap"),
            Detailed::TargetSimulcapped => literal!("every target is at its concurrency cap"),
            Detailed::TargetsDuplicateDeprioritized => literal!("this caller already reached every target"),
            Detailed::UndialableExpression => literal!("no target has a number that can be dialled"),
            Detailed::Rejected => UNPRICEABLE,
            Detailed::NoTarget => literal!("the campaign has no targets"),
            _ => literal!("no target is available"),
        }
    }
}

/// The info of a ping no criteria can price.
pub const UNPRICEABLE: ArcStr = literal!("Unable to determine payout until the call converts");

/// A sentence for a person, usually fixed. Eight bytes (a thin pointer),
/// so a ping's first steps fit inline in its record: a fixed sentence is a
/// static `ArcStr` (no allocation, no reference count touched). A sentence
/// made for one ping (a closed target's local time, a filter's reason) is
/// formatted, then copied once into its shared string.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Info {
    #[default]
    None,
    Text(ArcStr),
}

impl Info {
    pub fn as_str(&self) -> &str {
        match self {
            Info::None => "",
            Info::Text(s) => s,
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self, Info::None)
    }
}

/// In snapshots an info is its text.
impl serde::Serialize for Info {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Info {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Info, D::Error> {
        let text = String::deserialize(d)?;
        Ok(if text.is_empty() { Info::None } else { text.into() })
    }
}

impl From<ArcStr> for Info {
    fn from(s: ArcStr) -> Info {
        Info::Text(s)
    }
}

impl From<String> for Info {
    fn from(s: String) -> Info {
        Info::Text(s.into())
    }
}
