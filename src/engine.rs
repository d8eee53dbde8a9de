//! The engine: the state of rtbd and its verbs. `ping`, `confirm`, `claim`
//! and `end` each read top to bottom; `tick` expires what is due.
//!
//! The engine owns the reservation table, the clock and the current routing
//! config. It speaks in typed answers; `http` turns them into JSON.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ahash::AHashMap;
use arc_swap::{ArcSwap, Guard};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use smallvec::SmallVec;

use crate::caps::{Full, Limits, Windows};
use crate::clock::Clock;
use crate::config::{self, Campaign, Key, Routing};
use crate::error::Rejection;
use crate::json;
use crate::metrics::Metrics;
use crate::params::Params;
use crate::phone::{Dial, Phone, PhoneError};
use crate::records::{CallEnd, Flow, Record, Tags};
use crate::route::{self, Routed};
use crate::shield::{self, DedupeScope, Shield};
use crate::snapshot;
use crate::state::{States, TargetState};
use crate::stats::{self, Field, Tally};
use crate::status::{Detailed, Info, Status};
use crate::sym::Sym;
use crate::table::{self, Live, SHARDS, Scope, Shard, Table};
use crate::webhook::{self, Pixel, Verdict};
use crate::zone::Zone;

/// A reservation, as a publisher sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub uuid: u128,
    pub status: Status,
    pub payout_milli: u64,
    pub seconds: u32,
    pub inbound: Option<Phone>,
    pub expires_ms: u64,
    /// True when this repeats a live reservation (the Ping Shield echo).
    pub echo: bool,
}

/// The answer to a ping or a confirmation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A live reservation: `reserved` or `confirmed`.
    Reservation(Reservation),
    /// Nothing held for the caller: `no-target` or `rejected`, with the
    /// detailed status that explains it.
    Nothing { uuid: u128, status: Status, reason: Detailed, info: Info },
    /// The reservation expired before it was confirmed.
    Expired { uuid: u128 },
    /// A ping for this caller is still being routed.
    Processing { uuid: u128 },
    /// The reservation was already turned into a call.
    Claimed { uuid: u128 },
    /// Ping Shield: over a surge limit.
    RateLimited { retry_after_secs: u32 },
    /// Ping Shield: the publisher's claims are too few for its pings.
    ClaimLimited,
}

/// A call that arrived and found its reservation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub uuid: u128,
    pub target: Sym,
    pub transfer: Dial,
    pub payout_milli: u64,
    pub seconds: u32,
}

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ended {
    pub uuid: u128,
    pub converted: bool,
    /// What the publisher earned: the payout when converted, else 0.
    pub payout_milli: u64,
    pub duration_secs: u32,
}

/// Which reservation a confirmation is for.
#[derive(Clone, Copy, Debug)]
pub enum Confirming {
    Uuid(u128),
    /// The caller's live reservation on the key.
    Caller(Phone),
}

/// What a ping asks for next.
pub enum Pinged {
    Done(Answer),
    /// Buyers must be asked first: finish with [`Engine::settle`].
    Bidding(Box<Auction>),
}

/// A ping waiting on its buyers' webhooks. It holds the config it started
/// with, and its in-flight mark is cleared however it ends, even if it is
/// dropped unfinished (the publisher went away).
pub struct Auction {
    routing: Arc<Routing>,
    campaign: usize,
    key: usize,
    inbound: Option<Phone>,
    publisher_index: u32,
    uuid: u128,
    caller: Phone,
    publisher: Box<str>,
    tags: Params<'static>,
    judged: route::Judged,
    requests: Vec<(usize, webhook::Request)>,
    guard: InFlight,
}

impl Auction {
    /// The config the ping started with.
    pub fn routing(&self) -> &Routing {
        &self.routing
    }
}

/// Which earlier reservations the Ping Shield of `key` echoes (and so
/// which the key may confirm).
fn dedupe_scope(campaign: &Campaign, key: &Key) -> Scope {
    match key.shield.dedupe_scope {
        DedupeScope::Key => Scope::Key(key.id),
        DedupeScope::Campaign => Scope::Campaign { campaign: campaign.id, own: key.id },
    }
}

/// After a target's time zone changes (on reload, or in the file while
/// rtbd was down), how long requests still running on the old config are
/// taken to count in the old zone.
const ZONE_CHANGE_MARGIN_MS: u64 = 60_000;

/// Clears a ping's in-flight mark when dropped while still armed.
struct InFlight {
    table: Arc<Table>,
    states: Arc<States>,
    clock: Clock,
    caller: Phone,
    uuid: u128,
    armed: bool,
    /// The buyers asked, and since when: the pixels of those that have not
    /// answered, should the ping end first.
    asked: Vec<Pixel>,
    asked_at: Option<std::time::Instant>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let now = self.clock.now_ms();
        let mut shard = self.table.lock(Table::shard_of_caller(self.caller));
        shard.take_live(self.uuid);
        if let Some(record) = shard.records.get_mut(self.uuid)
            && record.status == Status::Processing
        {
            record.status = Status::Rejected;
            let info = Info::Text(arcstr::literal!(
                "the ping ended before its buyers answered (the publisher went away)"
            ));
            record.push(now, None, Detailed::Rejected, info);
            // Every request sent is in the record: the answers that came,
            // and the ones that did not.
            let latency_ms =
                self.asked_at.map_or(0, |at| at.elapsed().as_millis().min(u128::from(u32::MAX)) as u32);
            let pixels = &mut record.extra_mut().pixels;
            for mut asked in std::mem::take(&mut self.asked) {
                if !pixels.iter().any(|p| p.target == asked.target) {
                    asked.latency_ms = latency_ms;
                    pixels.push(asked);
                }
            }
            // Counted as every ping that ends rejected is, so the stats add up.
            self.states.keys.with(record.key, |k| k.tally.bump(Field::Rejected));
            self.states.publishers.tally(record.publisher).bump(Field::Rejected);
        }
    }
}

/// Where a ping came in: its campaign and key, the inbound number it asked
/// for, and its publisher.
struct Origin<'a> {
    campaign: &'a Campaign,
    key: &'a Key,
    inbound: Option<Phone>,
    publisher: u32,
}

pub struct Engine {
    routing: ArcSwap<Routing>,
    table: Arc<Table>,
    clock: Clock,
    /// Shared with a ping in flight, whose guard counts how it ended.
    states: Arc<States>,
    /// The client every webhook call shares.
    client: reqwest::Client,
    /// Ping Shield limits per (key, publisher).
    shield: Shield,
    /// When the shield was last swept of idle publishers.
    swept_ms: AtomicU64,
    metrics: Metrics,
    /// The config file, for reloads (none for the built-in demo).
    config_path: Option<PathBuf>,
    /// Where snapshots go (none: persistence off).
    data_dir: Option<PathBuf>,
    /// Why the last reload failed, if it did. Held while reloading, so
    /// reloads from the watcher, SIGHUP and the endpoint take turns.
    last_error: parking_lot::Mutex<Option<String>>,
    /// Held while a snapshot is written: one at a time.
    snapshot_lock: parking_lot::Mutex<()>,
}

/// Info of the dead line: a call that matches no reservation.
pub const DEAD_LINE: &str = "no reservation for this caller on this number";

/// The answer to `POST /calls`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallAnswer {
    Claimed(Claim),
    /// The reservation was never counted into caps, and now they are full:
    /// the call cannot go to its target and the reservation is released.
    Capped {
        uuid: u128,
        reason: Detailed,
        info: Info,
    },
}

impl Engine {
    pub fn new(mut routing: Routing, clock: Clock) -> Engine {
        let now = clock.now_ms();
        let states = Arc::new(States::default());
        routing.attach(&states);
        routing.version = 1;
        routing.loaded_at_ms = now;
        let engine = Engine {
            routing: ArcSwap::from_pointee(routing),
            table: Arc::new(Table::new(now)),
            clock,
            states,
            client: webhook::client(),
            shield: Shield::default(),
            swept_ms: AtomicU64::new(now),
            metrics: Metrics::default(),
            config_path: None,
            data_dir: None,
            last_error: parking_lot::Mutex::new(None),
            snapshot_lock: parking_lot::Mutex::new(()),
        };
        engine.note_zones(&engine.routing());
        engine
    }

    /// The routing config now. A ping holds it from start to end.
    #[inline]
    pub fn routing(&self) -> Guard<Arc<Routing>> {
        self.routing.load()
    }

    /// The clock the engine reads.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Counters and tallies by key, target and publisher.
    pub fn states(&self) -> &States {
        &self.states
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Reads the config from `path` on reload.
    pub fn with_config_path(mut self, path: Option<PathBuf>) -> Engine {
        self.config_path = path;
        self
    }

    /// Writes snapshots into `dir` (`None`: no persistence).
    pub fn with_data_dir(mut self, dir: Option<PathBuf>) -> Engine {
        self.data_dir = dir;
        self
    }

    /// Where snapshots go, if anywhere.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.data_dir.as_deref()
    }

    /// Swaps in a new config. Pings in flight finish on the one they
    /// started with; counters, tallies, reservations and records carry
    /// over (they are kept by id, not in the config).
    pub fn install(&self, mut routing: Routing) -> Arc<Routing> {
        routing.attach(&self.states);
        self.note_zones(&routing);
        let current = self.routing();
        routing.version = current.version + 1;
        routing.loaded_at_ms = self.clock.now_ms();
        let (new, old) = (&routing.server, &current.server);
        if new.listen != old.listen
            || new.data_dir != old.data_dir
            || new.max_connections != old.max_connections
            || new.header_read_timeout_ms != old.header_read_timeout_ms
        {
            tracing::warn!(
                "server.listen, server.data_dir, server.max_connections and server.header_read_timeout_ms \
                 take effect at the next start, not on reload"
            );
        }
        let routing = Arc::new(routing);
        self.routing.store(routing.clone());
        routing
    }

    /// Notes each target's time zone in its state, and whether it changed
    /// since the last config that named the target (that one included, if
    /// a reload removed the target and this one brings it back).
    fn note_zones(&self, routing: &Routing) {
        for target in routing.campaigns.iter().flat_map(|c| &c.targets) {
            let before = target.state.zone.lock().replace(target.zone.clone());
            if before.is_some_and(|z| z.name() != target.zone.name()) {
                self.zone_changed(&target.state);
            }
        }
    }

    /// Notes that a target's time zone changed now: what it counted before
    /// is in the old zone's windows. Requests still running on the old
    /// config may count in that zone for a while yet: the margin covers
    /// them.
    pub(crate) fn zone_changed(&self, target: &TargetState) {
        let since = self.clock.now_ms().saturating_add(ZONE_CHANGE_MARGIN_MS);
        target.zone_changed_ms.fetch_max(since, Ordering::Relaxed);
    }

    /// Reloads the config file. A file that does not load changes nothing:
    /// the error is logged, counted, and kept for `/admin/config`.
    pub fn reload(&self) -> Result<Arc<Routing>, String> {
        let Some(path) = &self.config_path else {
            return Err("no config file to reload: rtbd runs the built-in demo config".to_owned());
        };
        let mut last_error = self.last_error.lock();
        match config::load(path) {
            Ok(routing) => {
                let warnings = routing.warnings.clone();
                let routing = self.install(routing);
                *last_error = None;
                self.metrics.reloads_ok.fetch_add(1, Ordering::Relaxed);
                tracing::info!(version = routing.version, source = %routing.source, "config reloaded");
                for warning in warnings {
                    tracing::warn!("{warning}");
                }
                Ok(routing)
            }
            Err(e) => {
                let text = e.to_string();
                tracing::error!("config reload failed, keeping version {}: {text}", self.routing().version);
                self.metrics.reloads_failed.fetch_add(1, Ordering::Relaxed);
                *last_error = Some(text.clone());
                Err(text)
            }
        }
    }

    /// Writes a snapshot into the data folder (one at a time).
    pub fn snapshot(&self) -> std::io::Result<snapshot::Written> {
        let Some(dir) = self.data_dir.as_deref() else {
            return Err(std::io::Error::other("persistence is off: no data folder"));
        };
        let _one_at_a_time = self.snapshot_lock.lock();
        match snapshot::write(self, dir) {
            Ok(written) => {
                let m = &self.metrics;
                m.snapshots_ok.fetch_add(1, Ordering::Relaxed);
                m.snapshot_bytes.store(written.bytes, Ordering::Relaxed);
                m.snapshot_duration_us.store(written.duration.as_micros() as u64, Ordering::Relaxed);
                m.snapshot_last_success_ms.store(self.clock.now_ms(), Ordering::Relaxed);
                tracing::info!(
                    path = %written.path.display(),
                    bytes = written.bytes,
                    ms = written.duration.as_millis() as u64,
                    "snapshot written"
                );
                Ok(written)
            }
            Err(e) => {
                self.metrics.snapshots_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(dir = %dir.display(), "snapshot failed: {e}");
                Err(e)
            }
        }
    }

    /// The Ping Shield's per-publisher state.
    pub fn shield(&self) -> &Shield {
        &self.shield
    }

    /// `GET /admin/config`.
    pub fn config_status(&self) -> serde_json::Value {
        let routing = self.routing();
        serde_json::json!({
            "version": routing.version,
            "loaded_at": crate::clock::rfc3339(routing.loaded_at_ms),
            "source": routing.source,
            "campaigns": routing.campaigns.len(),
            "targets": routing.target_count(),
            "last_error": *self.last_error.lock(),
        })
    }

    /// `POST /rtbs.json`: finds a buyer for a caller and reserves it.
    pub fn ping(&self, routing: &Arc<Routing>, params: &Params) -> Result<Pinged, Rejection> {
        let key = required(params, "key")?;

        // A confirmation: by uuid, or the caller's live reservation.
        if let Some(status) = params.get("status").filter(|s| !s.is_empty()) {
            if status != "confirmed" {
                return Err(Rejection::bad_request(format!(
                    "status {status:?} is not understood: only status=confirmed is"
                )));
            }
            let which = match params.get("uuid").filter(|u| !u.is_empty()) {
                Some(text) => Confirming::Uuid(parse_uuid(text)?),
                None => Confirming::Caller(number_param(params, "caller_number")?),
            };
            return self.confirm(routing, key, which).map(Pinged::Done);
        }

        // Who is asking, for whom.
        let publisher = params
            .get("publisher_id")
            .filter(|p| !is_blank(p))
            .or_else(|| params.get("source_id").filter(|p| !is_blank(p)))
            .ok_or_else(|| Rejection::bad_request("FAILED must include publisher_id (string)"))?;
        let caller = number_param(params, "caller_number")?;
        self.table.prefetch(caller);
        let (campaign, rtb_key) = routing.key(key).ok_or_else(|| Rejection::not_found("unknown key"))?;

        let inbound = match params.get("inbound_number").filter(|n| !n.is_empty()) {
            Some(text) => {
                let number = Phone::parse(text)
                    .map_err(|e| Rejection::bad_request(format!("invalid inbound_number {text:?}: {e}")))?;
                if !campaign.is_tracking_number(number) {
                    return Err(Rejection::bad_request(format!(
                        "inbound_number {number} is not a tracking number of this campaign"
                    )));
                }
                Some(number)
            }
            None => rtb_key.inbound_number,
        };

        let publisher_index = self.states.publishers.index(publisher);
        let publisher_tally = self.states.publishers.tally(publisher_index);
        let bump = |field| {
            rtb_key.state.tally.bump(field);
            publisher_tally.bump(field);
        };
        bump(Field::Pings);
        let now = self.clock.now_ms();

        // Ping Shield, part 1: surges are turned away before anything else.
        let shield = &rtb_key.shield;
        let mut claim_limited = false;
        if shield.limits() {
            match self.shield.screen(shield, rtb_key.id, &rtb_key.state.limiter, publisher_index, now) {
                shield::Verdict::Pass => {}
                shield::Verdict::ClaimLimited => claim_limited = true,
                shield::Verdict::RateLimited { retry_after_secs } => {
                    bump(Field::RateLimited);
                    return Ok(Pinged::Done(Answer::RateLimited { retry_after_secs }));
                }
            }
        }

        // The record, made before the lock is taken: less time holding it,
        // and more for the index line asked for above to arrive. (A ping
        // echoed or turned away below drops it unused: cheaper than the
        // wait it saves every other ping.)
        let mut record = Record::new(now, caller, rtb_key.id, campaign.id, publisher_index);
        record.tags = Tags::new(params.tags());
        if publisher_index == 0 {
            // Past the publishers tracked one by one: keep the id itself.
            record.extra_mut().publisher = Some(publisher.into());
        }

        let shard_index = Table::shard_of_caller(caller);
        let mut shard = self.table.lock(shard_index);

        // Ping Shield, part 2: a live reservation for this caller is echoed,
        // and the buyers are not asked again; a ping still waiting on buyers
        // is already being processed.
        let scope = dedupe_scope(campaign, rtb_key);
        if let Some(live) = shard.find_live(caller, scope, now) {
            return Ok(Pinged::Done(match live.status {
                Status::Processing => {
                    bump(Field::AlreadyProcessing);
                    Answer::Processing { uuid: live.uuid }
                }
                _ => {
                    bump(Field::AlreadyReserved);
                    Answer::Reservation(reservation(&live, true))
                }
            }));
        }

        // Ping Shield, part 3: a publisher sending too few calls for its
        // pings has only some of them routed.
        if claim_limited {
            bump(Field::ClaimLimited);
            return Ok(Pinged::Done(Answer::ClaimLimited));
        }

        // Judge the targets.
        let uuid = shard.new_uuid(shard_index);
        let mut flow = Flow::new();
        let ping = route::Ping {
            publisher,
            caller,
            params,
            now_ms: now,
            history: shard.history(caller),
            count_caps: rtb_key.add_to_caps_on_reserved,
        };
        let judged = route::judge(campaign, &ping, &mut flow);
        let origin = Origin { campaign, key: rtb_key, inbound, publisher: publisher_index };
        let routed = match judged {
            Err(verdict) => verdict,
            // Buyers to ask: the ping goes on without the lock (see `settle`).
            Ok(judged) if !judged.asks.is_empty() => {
                let requests = judged
                    .asks
                    .iter()
                    .filter_map(|&t| webhook_request(campaign, rtb_key, t, &ping).map(|r| (t, r)))
                    .collect();
                let tags = params.owned_tags();
                record.status = Status::Processing;
                record.flow = flow;
                let asking = format!("asking {} buyer(s) for a bid", judged.asks.len());
                record.push(now, None, Detailed::ConsideringTargetsSingle, asking.into());
                shard.add_record(uuid, record, true);
                let (c, k) = routing.key_position(key).unwrap_or_default();
                return Ok(Pinged::Bidding(Box::new(Auction {
                    routing: routing.clone(),
                    campaign: c,
                    key: k,
                    inbound,
                    publisher_index,
                    uuid,
                    caller,
                    publisher: publisher.into(),
                    tags,
                    judged,
                    requests,
                    guard: InFlight {
                        table: self.table.clone(),
                        states: self.states.clone(),
                        clock: self.clock.clone(),
                        caller,
                        uuid,
                        armed: true,
                        asked: Vec::new(),
                        asked_at: None,
                    },
                })));
            }
            Ok(judged) => judged.choose(campaign, &ping, &mut flow, None),
        };
        record.flow = flow;
        let (answer, reserved) = self.conclude(&mut record, uuid, now, routed, &origin);
        shard.add_record(uuid, record, reserved);
        shard.evict(now, routing.server.record_retention_ms, records_per_shard(routing), false);
        Ok(Pinged::Done(answer))
    }

    /// Finishes a ping that asked buyers: asks them all at once, each within
    /// its deadline (never past the key's `timeout_ms`), then picks among
    /// the bids and the static targets, and answers as soon as the last
    /// buyer answered or its deadline passed.
    pub async fn settle(&self, auction: Box<Auction>) -> Answer {
        let Auction {
            routing,
            campaign,
            key,
            inbound,
            publisher_index,
            uuid,
            caller,
            publisher,
            mut tags,
            judged,
            requests,
            mut guard,
        } = *auction;
        let (Some(campaign), Some(rtb_key)) =
            (routing.campaigns.get(campaign), routing.campaigns.get(campaign).and_then(|c| c.keys.get(key)))
        else {
            return Answer::Expired { uuid };
        };
        guard.asked = requests.iter().map(|(_, request)| Pixel::cancelled(request)).collect();
        guard.asked_at = Some(std::time::Instant::now());
        let mut asks: FuturesUnordered<_> = requests
            .into_iter()
            .filter_map(|(target, request)| {
                let hook = campaign.targets.get(target)?.webhook.as_deref()?;
                Some(async move { (target, webhook::ask(&self.client, hook, request).await) })
            })
            .collect();
        let mut answers = Vec::new();
        while let Some(answer) = asks.next().await {
            // The record shows each answer as it comes, and keeps it should
            // the ping end before the last buyer answers.
            if let Some(record) = self.table.lock(Table::shard_of_caller(caller)).records.get_mut(uuid) {
                record.extra_mut().pixels.push(answer.1.1.clone());
            }
            answers.push(answer);
        }
        for (target, (_, pixel)) in &answers {
            if let Some(t) = campaign.targets.get(*target) {
                t.state
                    .webhook
                    .latency
                    .observe(std::time::Duration::from_millis(u64::from(pixel.latency_ms)));
                if let Some(kind) = pixel.failure {
                    t.state.webhook.failed(kind);
                }
            }
        }
        answers.sort_by_key(|(target, _)| *target);

        // What the buyers said becomes tags, so criteria can price a bid.
        for (target, (verdict, _)) in &answers {
            if let (Verdict::Bid(bid), Some(t)) = (verdict, campaign.targets.get(*target)) {
                let mut text = Vec::new();
                json::write_money(&mut text, bid.milli);
                // Tag names are lower case, and so are the criteria's.
                let name = |what: &str| format!("retreaver_rtb_{}_{what}", t.id).to_ascii_lowercase();
                tags.put(name("bid"), String::from_utf8_lossy(&text).into_owned());
                if let Some(timer) = bid.timer {
                    tags.put(name("timer"), timer.to_string());
                }
            }
        }

        let now = self.clock.now_ms();
        let mut shard = self.table.lock(Table::shard_of_caller(caller));
        shard.take_live(uuid);
        let mut judged = judged;
        let mut flow = Flow::new();
        let ping = route::Ping {
            publisher: &publisher,
            caller,
            params: &tags,
            now_ms: now,
            history: shard.history(caller),
            count_caps: rtb_key.add_to_caps_on_reserved,
        };
        for (target, (verdict, _)) in &answers {
            judged.bid(campaign, &ping, *target, verdict, &mut flow);
        }
        // The config may have been reloaded while the buyers were asked.
        let current = self.routing();
        let current = (!Arc::ptr_eq(&current, &routing)).then_some(&**current);
        let routed = judged.choose(campaign, &ping, &mut flow, current);
        let origin = Origin { campaign, key: rtb_key, inbound, publisher: publisher_index };
        // A ping in flight is pinned in the records, so its record is there.
        let Some(record) = shard.records.get_mut(uuid) else { return Answer::Expired { uuid } };
        record.flow.extend(flow);
        record.extra_mut().pixels = answers.into_iter().map(|(_, (_, pixel))| pixel).collect();
        record.tags = Tags::new(tags.tags());
        let (answer, reserved) = self.conclude(record, uuid, now, routed, &origin);
        if reserved {
            shard.add_live(uuid);
        }
        // Only now: had anything above panicked, the guard (dropped after
        // the shard's lock) would have ended the record rather than leave
        // it in flight for good.
        guard.armed = false;
        answer
    }

    /// Writes how a ping ended into its record; true if it made a
    /// reservation (to add to the live index).
    fn conclude(
        &self,
        record: &mut Record,
        uuid: u128,
        now: u64,
        routed: Routed,
        origin: &Origin<'_>,
    ) -> (Answer, bool) {
        // The rotation moves only for a reservation.
        let inbound = |origin: &Origin<'_>| origin.inbound.or_else(|| origin.campaign.next_tracking_number());
        let routed = match routed {
            Routed::Winner(winner) => match inbound(origin) {
                Some(inbound) => Ok((winner, inbound)),
                // Validation requires tracking numbers; kept for safety.
                None => Err((
                    Status::NoTarget,
                    Detailed::NoTarget,
                    Info::Text(arcstr::literal!("the campaign has no tracking number")),
                )),
            },
            Routed::Nobody { status, reason, info } => Err((status, reason, info)),
        };
        match routed {
            Ok((winner, inbound)) => {
                let target = &origin.campaign.targets[winner.target];
                record.status = Status::Reserved;
                record.expires_ms = now + origin.key.ttl_ms;
                record.target = Some(target.id);
                record.set_transfer(winner.transfer);
                record.inbound = Some(inbound);
                record.payout_milli = winner.price.payout_milli;
                record.seconds = winner.price.seconds;
                record.set_counted_ms(winner.counted_ms);
                record.push(now, Some(target.id), Detailed::Reserved, Info::None);
                origin.key.state.tally.bump(Field::Reserved);
                self.states.publishers.tally(origin.publisher).bump(Field::Reserved);
                target.state.tally.bump(Field::Reserved);
                (Answer::Reservation(reservation(&Live::of(uuid, record), false)), true)
            }
            Err((status, reason, info)) => {
                (self.nothing(record, uuid, now, origin, status, reason, info), false)
            }
        }
    }

    /// Writes a ping that reserved nothing into its record, and counts it.
    #[allow(clippy::too_many_arguments)]
    fn nothing(
        &self,
        record: &mut Record,
        uuid: u128,
        now: u64,
        origin: &Origin<'_>,
        status: Status,
        reason: Detailed,
        info: Info,
    ) -> Answer {
        let field = if status == Status::Rejected { Field::Rejected } else { Field::NoTarget };
        origin.key.state.tally.bump(field);
        self.states.publishers.tally(origin.publisher).bump(field);
        record.status = status;
        record.push(now, None, reason, info.clone());
        Answer::Nothing { uuid, status, reason, info }
    }

    /// Confirms a reservation: `PUT /rtbs/{uuid}.json`, or a ping with
    /// `status=confirmed`. Confirming counts the reservation into its
    /// target's caps, atomically; if they are full the reservation is
    /// released.
    pub fn confirm(&self, routing: &Routing, key: &str, which: Confirming) -> Result<Answer, Rejection> {
        let (campaign, rtb_key) = routing.key(key).ok_or_else(|| Rejection::not_found("unknown key"))?;
        let now = self.clock.now_ms();
        // A key confirms what its Ping Shield echoes: its own reservations,
        // or with `dedupe_scope = "campaign"` those of any key of its
        // campaign (a publisher echoed a reservation can confirm it).
        let scope = dedupe_scope(campaign, rtb_key);
        let (mut shard, uuid) = match which {
            Confirming::Uuid(uuid) => (self.table.lock(Table::shard_of_uuid(uuid)), uuid),
            Confirming::Caller(caller) => {
                let shard = self.table.lock(Table::shard_of_caller(caller));
                let uuid = shard
                    .find_live(caller, scope, now)
                    .map(|live| live.uuid)
                    .ok_or_else(|| Rejection::not_found("no live reservation for this caller on this key"))?;
                (shard, uuid)
            }
        };
        let unknown = || Rejection::not_found("no reservation with this uuid on this key");
        let record = shard.records.get(uuid).ok_or_else(unknown)?;
        let owner = record.key;
        if !table::in_scope(record, scope) {
            return Err(unknown());
        }
        let shard = &mut *shard;
        let state = shard.live(uuid).map(|l| (l.status, l.is_live(now), l.counted_ms, l.target));
        match state {
            Some((Status::Processing, ..)) => return Ok(Answer::Processing { uuid }),
            Some((status, true, counted, target)) => {
                if status == Status::Reserved {
                    if counted.is_none()
                        && let Some(target) = target
                        && let Err(full) = self.count(routing, target, now)
                    {
                        self.release(shard, uuid, now, target, full);
                        return Ok(Answer::Nothing {
                            uuid,
                            status: Status::NoTarget,
                            reason: full.status(),
                            info: full.info().into(),
                        });
                    }
                    if let Some(record) = shard.records.get_mut(uuid) {
                        if record.counted.is_none() {
                            record.set_counted_ms(Some(now));
                        }
                        record.status = Status::Confirmed;
                        record.push(now, record.target, Detailed::Confirmed, Info::None);
                        self.states.publishers.tally(record.publisher).bump(Field::Confirmed);
                    }
                    // Counted for the key that made the reservation.
                    self.states.keys.with(owner, |k| k.tally.bump(Field::Confirmed));
                    if let Some(target) = target {
                        self.states.targets.with(target, |t| t.tally.bump(Field::Confirmed));
                    }
                }
                if let Some(live) = shard.live(uuid) {
                    return Ok(Answer::Reservation(reservation(&live, false)));
                }
            }
            Some((_, false, ..)) => self.expire(routing, shard, uuid),
            None => {}
        }
        let record = shard.records.get(uuid).ok_or_else(unknown)?;
        Ok(match record.status_at(now) {
            Status::Claimed => Answer::Claimed { uuid },
            Status::NoTarget | Status::Rejected => {
                let (reason, info) = record.verdict().unwrap_or((Detailed::NoTarget, &Info::None));
                Answer::Nothing { uuid, status: record.status, reason, info: info.clone() }
            }
            // Anything else no longer holds a live entry: it has expired.
            _ => Answer::Expired { uuid },
        })
    }

    /// `POST /calls`: a call from `caller` to the tracking number `inbound`
    /// arrived. Its live reservation becomes a claimed call, counted into
    /// its target's caps if it was not yet, and holding one concurrency slot
    /// until it ends.
    pub fn claim(&self, caller: Phone, inbound: Phone) -> Result<CallAnswer, Rejection> {
        let routing = self.routing();
        let now = self.clock.now_ms();
        let mut shard = self.table.lock(Table::shard_of_caller(caller));
        let shard = &mut *shard;
        let expired =
            || Rejection::not_found("the reservation expired before the call arrived").with_status("expired");
        let dead_line = || Rejection::not_found(DEAD_LINE).with_status("no-target");
        let Some(live) = shard.find_for_call(caller, inbound, now) else {
            // No live reservation: say `expired` if the newest one on this
            // number expired, else this is the dead line.
            let last = shard.last_reservation(caller, inbound).and_then(|uuid| shard.records.get(uuid));
            return match last.map(|record| record.status_at(now)) {
                Some(Status::Expired) => Err(expired()),
                _ => Err(dead_line()),
            };
        };
        let (uuid, counted, target) = (live.uuid, live.counted_ms, live.target);
        if !live.is_live(now) {
            self.expire(&routing, shard, uuid);
            return Err(expired());
        }
        let Some(target) = target else { return Err(dead_line()) };
        // All that can turn the call away is read before anything is
        // counted or taken.
        let Some(transfer) = shard.records.get(uuid).and_then(|r| r.transfer()) else {
            return Err(dead_line());
        };
        if counted.is_none()
            && let Err(full) = self.count(&routing, target, now)
        {
            self.release(shard, uuid, now, target, full);
            return Ok(CallAnswer::Capped { uuid, reason: full.status(), info: full.info().into() });
        }
        let live = shard.take_live(uuid).ok_or_else(dead_line)?;
        let record = shard.records.get_mut(uuid).ok_or_else(dead_line)?;
        record.status = Status::Claimed;
        record.push(now, Some(target), Detailed::Claimed, Info::None);
        let key = record.key;
        shard.reached(caller, target, now, routing.max_dedupe_ms);
        if let Some((_, rtb_key)) = routing.key(key.as_str()) {
            self.shield.claimed(&rtb_key.shield, key, live.publisher, now);
        }
        self.states.targets.with(target, |t| {
            t.counters.call_started();
            t.tally.bump(Field::Claimed);
        });
        self.states.keys.with(key, |k| k.tally.bump(Field::Claimed));
        self.states.publishers.tally(live.publisher).bump(Field::Claimed);
        Ok(CallAnswer::Claimed(Claim {
            uuid,
            target,
            transfer,
            payout_milli: live.payout_milli,
            seconds: live.seconds,
        }))
    }

    /// `POST /calls/{uuid}/end`: the call ended after `duration_secs`.
    /// Ending twice answers the same and changes nothing.
    pub fn end(&self, uuid: u128, duration_secs: u32) -> Result<Ended, Rejection> {
        let now = self.clock.now_ms();
        let mut shard = self.table.lock(Table::shard_of_uuid(uuid));
        let record =
            shard.records.get_mut(uuid).ok_or_else(|| Rejection::not_found("no call with this uuid"))?;
        if record.status != Status::Claimed {
            return Err(Rejection::new(
                409,
                format!("this reservation is {}, not a claimed call", record.status_at(now).as_str()),
            ));
        }
        let end = match record.end() {
            Some(end) => end,
            None => {
                let end = CallEnd { at_ms: now, duration_secs, converted: duration_secs >= record.seconds };
                record.extra_mut().end = Some(end);
                let info = match end.converted {
                    true => arcstr::literal!("converted"),
                    false => arcstr::literal!("not converted: the call was too short"),
                };
                record.push(now, record.target, Detailed::Ended, Info::Text(info));
                let payout = if end.converted { record.payout_milli } else { 0 };
                let bump = |tally: &Tally| {
                    if end.converted {
                        tally.bump(Field::Converted);
                        tally.add(Field::PayoutMilli, payout);
                    }
                };
                if let Some(target) = record.target {
                    self.states.targets.with(target, |t| {
                        t.counters.call_ended();
                        bump(&t.tally);
                    });
                }
                self.states.keys.with(record.key, |k| bump(&k.tally));
                bump(self.states.publishers.tally(record.publisher));
                end
            }
        };
        Ok(Ended {
            uuid,
            converted: end.converted,
            payout_milli: if end.converted { record.payout_milli } else { 0 },
            duration_secs: end.duration_secs,
        })
    }

    /// The record of a ping, as JSON.
    pub fn record(&self, uuid: u128) -> Option<serde_json::Value> {
        let now = self.clock.now_ms();
        let shard = self.table.lock(Table::shard_of_uuid(uuid));
        let record = shard.records.get(uuid)?;
        let publisher = match record.extra.as_ref().and_then(|e| e.publisher.as_deref()) {
            Some(id) => id.into(),
            None => self.states.publishers.name(record.publisher),
        };
        Some(record.to_json(uuid, now, &publisher))
    }

    /// `GET /stats`.
    pub fn stats(&self) -> serde_json::Value {
        stats::report(&self.routing(), &self.states, self.clock.now_ms())
    }

    /// Expires every reservation whose time has come and drops records past
    /// retention. Runs every few milliseconds; tests call it after moving a
    /// manual clock.
    pub fn tick(&self) {
        let now = self.clock.now_ms();
        let routing = self.routing();
        let retention = routing.server.record_retention_ms;
        let per_shard = records_per_shard(&routing);
        let mut expired = Vec::new();
        let mut expiries = Expiries::default();
        for shard in self.table.shards() {
            let mut shard = shard.lock();
            expired.clear();
            shard.expire(now, &mut expired);
            for live in &expired {
                if let (Some(target), Some(counted)) = (live.target, live.counted_ms) {
                    self.give_back(&routing, target, counted);
                }
                expiries.add(live);
            }
            shard.evict(now, retention, per_shard, true);
        }
        expiries.apply(&self.states);
        // Publishers idle for a whole claim window are forgotten.
        let swept = self.swept_ms.load(Ordering::Relaxed);
        if now >= swept + 1_000
            && self.swept_ms.compare_exchange(swept, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            self.shield.sweep(now, routing.max_claim_window_ms.max(60_000));
        }
    }

    /// Counts a reservation for `target` into its caps at `now`.
    fn count(&self, routing: &Routing, target: Sym, now: u64) -> Result<(), Full> {
        match routing.target(target) {
            Some((_, t)) => t.state.counters.try_count(&t.limits, Windows::at(&t.zone, now)),
            // A target gone from the config keeps its counters, in the
            // windows of the zone it last had, but no caps.
            None => self
                .states
                .targets
                .with(target, |t| t.counters.try_count(&Limits::default(), Windows::at(&last_zone(t), now)))
                .unwrap_or(Ok(())),
        }
    }

    /// Gives back the counts of a reservation counted at `counted_ms`. If
    /// the target's time zone changed since, the windows it was counted in
    /// are not known (the new zone's would be wrong, and taking back a
    /// count the window never had would let it pass its cap): only its
    /// hard count and concurrency slot are given back.
    fn give_back(&self, routing: &Routing, target: Sym, counted_ms: u64) {
        let configured = routing.target(target).map(|(_, t)| Windows::at(&t.zone, counted_ms));
        self.states.targets.with(target, |t| {
            let windows = configured.unwrap_or_else(|| Windows::at(&last_zone(t), counted_ms));
            if counted_ms < t.zone_changed_ms.load(Ordering::Relaxed) {
                t.counters.give_back_without_windows();
            } else {
                t.counters.give_back(windows);
            }
        });
    }

    /// Ends a live reservation whose time has passed (the shard is locked):
    /// gives back its counts, and its record says `expired`.
    fn expire(&self, routing: &Routing, shard: &mut Shard, uuid: u128) {
        if let Some(live) = shard.take_expired(uuid) {
            self.expired(routing, &live);
        }
    }

    /// Gives back what an expired reservation held, and counts it.
    pub(crate) fn expired(&self, routing: &Routing, live: &Live) {
        if let (Some(target), Some(counted)) = (live.target, live.counted_ms) {
            self.give_back(routing, target, counted);
        }
        if let Some(target) = live.target {
            self.states.targets.with(target, |t| t.tally.bump(Field::Expired));
        }
        self.states.keys.with(live.key, |k| k.tally.bump(Field::Expired));
        self.states.publishers.tally(live.publisher).bump(Field::Expired);
    }

    /// Releases a reservation whose caps filled before it was counted: it
    /// holds its target no more, and its record says why.
    fn release(&self, shard: &mut Shard, uuid: u128, now: u64, target: Sym, full: Full) {
        shard.take_live(uuid);
        if let Some(record) = shard.records.get_mut(uuid) {
            record.status = Status::NoTarget;
            record.push(now, Some(target), full.status(), full.info().into());
        }
    }
}

/// The request to buyer `target` for this ping: templates filled from its
/// tags, within the buyer's deadline (never past the key's).
fn webhook_request(
    campaign: &Campaign,
    key: &Key,
    target: usize,
    ping: &route::Ping<'_, '_>,
) -> Option<webhook::Request> {
    let t = campaign.targets.get(target)?;
    let hook = t.webhook.as_deref()?;
    let lookup = |name: &str| ping.tag(name);
    let timeout_ms = hook.timeout_ms.map_or(key.timeout_ms, |ms| ms.min(key.timeout_ms));
    Some(webhook::Request {
        target: t.id,
        method: hook.method,
        url: hook.url.render(lookup, webhook::Escape::Url),
        body: hook.body.as_ref().map(|b| b.render(lookup, webhook::Escape::Json)),
        timeout: std::time::Duration::from_millis(timeout_ms),
    })
}

/// The zone a target's windows are in when no config has it (UTC if none
/// ever did: counters restored for a target long gone).
fn last_zone(target: &TargetState) -> Arc<Zone> {
    target.zone.lock().clone().unwrap_or_else(|| Arc::new(Zone::utc()))
}

/// Expiries of one tick, counted into the tallies at its end: one registry
/// lookup per key and target rather than one per reservation.
#[derive(Default)]
struct Expiries {
    targets: Counts<Sym>,
    keys: Counts<Sym>,
    publishers: Counts<u32>,
}

/// How many of each: the first few kept in a list (a tick usually sees a
/// handful of keys and targets), the rest in a map, so a tick expiring a
/// million reservations of ten thousand publishers stays linear.
struct Counts<K> {
    few: SmallVec<[(K, u64); 8]>,
    more: AHashMap<K, u64>,
}

impl<K> Default for Counts<K> {
    fn default() -> Self {
        Counts { few: SmallVec::new(), more: AHashMap::new() }
    }
}

impl<K: Eq + std::hash::Hash + Copy> Counts<K> {
    fn add(&mut self, key: K) {
        if let Some((_, n)) = self.few.iter_mut().find(|(k, _)| *k == key) {
            *n += 1;
        } else if self.few.len() < self.few.inline_size() {
            self.few.push((key, 1));
        } else {
            *self.more.entry(key).or_default() += 1;
        }
    }

    fn into_iter(self) -> impl Iterator<Item = (K, u64)> {
        self.few.into_iter().chain(self.more)
    }
}

impl Expiries {
    fn add(&mut self, live: &Live) {
        if let Some(target) = live.target {
            self.targets.add(target);
        }
        self.keys.add(live.key);
        self.publishers.add(live.publisher);
    }

    fn apply(self, states: &States) {
        for (target, n) in self.targets.into_iter() {
            states.targets.with(target, |t| t.tally.add(Field::Expired, n));
        }
        for (key, n) in self.keys.into_iter() {
            states.keys.with(key, |k| k.tally.add(Field::Expired, n));
        }
        for (publisher, n) in self.publishers.into_iter() {
            states.publishers.tally(publisher).add(Field::Expired, n);
        }
    }
}

/// Each shard keeps its share of `max_records`.
fn records_per_shard(routing: &Routing) -> usize {
    routing.server.max_records.div_ceil(SHARDS).max(1)
}

fn reservation(live: &Live, echo: bool) -> Reservation {
    Reservation {
        uuid: live.uuid,
        status: live.status,
        payout_milli: live.payout_milli,
        seconds: live.seconds,
        inbound: live.inbound,
        expires_ms: live.expires_ms,
        echo,
    }
}

fn required<'p>(params: &'p Params, name: &'static str) -> Result<&'p str, Rejection> {
    params
        .get(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Rejection::bad_request(format!("FAILED must include {name} (string)")))
}

/// True for a parameter that says nothing: empty, or only white space.
fn is_blank(text: &str) -> bool {
    text.trim().is_empty()
}

/// A phone-number parameter by name, normalized.
pub fn number_param(params: &Params, name: &'static str) -> Result<Phone, Rejection> {
    let text = required(params, name)?;
    Phone::parse(text).map_err(|e| invalid_number(name, text, e))
}

fn invalid_number(name: &str, text: &str, e: PhoneError) -> Rejection {
    Rejection::bad_request(format!("invalid {name} {text:?}: {e}"))
}

/// Parses a uuid from a path or parameter.
pub fn parse_uuid(text: &str) -> Result<u128, Rejection> {
    uuid::Uuid::try_parse(text)
        .map(|u| u.as_u128())
        .map_err(|_| Rejection::bad_request(format!("{text:?} is not a uuid")))
}

#[cfg(test)]
mod tests {
    use super::Counts;

    #[test]
    fn counts_past_the_first_few_keys_are_kept_too() {
        let mut counts = Counts::default();
        for round in 0..3u32 {
            for key in 0..1_000u32 {
                counts.add(key);
                if key % 2 == 0 && round == 0 {
                    counts.add(key);
                }
            }
        }
        let mut all: Vec<(u32, u64)> = counts.into_iter().collect();
        all.sort_unstable();
        assert_eq!(all.len(), 1_000);
        assert!(all.iter().all(|&(key, n)| n == if key % 2 == 0 { 4 } else { 3 }));
    }
}
