//! rtbd: a real-time-bidding engine for pay-per-call.
//!
//! A publisher with a caller on the line pings a campaign
//! (`POST /rtbs.json`); rtbd judges every buyer (target) of the campaign,
//! picks one, and answers with a reservation: the tracking number to
//! transfer the caller to, the payout, and the seconds the call must last.
//! The reservation is then confirmed, claimed when the call arrives, and
//! ended, or it expires.
//!
//! The modules, in the order a ping meets them:
//!
//! | module     | one job |
//! | ---------- | ------- |
//! | `server`   | start and stop a whole rtbd: listener, engine, background tasks |
//! | `http`     | accept loop, request limits, dispatch by method and path |
//! | `idle`     | closes connections whose client is too slow to send a request |
//! | `params`   | query, form and JSON body → one borrowed parameter set |
//! | `phone`    | E.164 normalization, transfer numbers |
//! | `engine`   | the state and its verbs: `ping`, `confirm`, `claim`, `end`, `tick` |
//! | `route`    | judge the targets of one ping and pick the winner |
//! | `filter`   | tag filters of a target |
//! | `hours`    | business hours as a bitmap of the week's minutes |
//! | `caps`     | cap counters and their calendar windows |
//! | `pricing`  | conversion criteria: payout and seconds |
//! | `webhook`  | bidding webhooks: templates, the shared client, JSON paths |
//! | `shield`   | Ping Shield limits: surge rates and claim ratios |
//! | `table`    | the sharded reservation table, indexed by caller and uuid |
//! | `index`    | the live index of a shard: callers to records, a cache line per probe |
//! | `wheel`    | the hierarchical timing wheel that expires reservations |
//! | `records`  | the record of each ping, kept for retention |
//! | `ids`      | the uuids rtbd issues: shard and record place inside |
//! | `reply`    | engine answers → JSON responses |
//! | `json`     | the hand-written JSON writer of the hot path |
//! | `snapshot` | the state on disk: encode, write crash-safe, read, restore |
//! | `config`   | the TOML schema, validation, the compiled `Routing` |
//! | `status`   | the statuses and detailed statuses of the contract |
//! | `metrics`  | histograms and the Prometheus text of `/metrics` |
//! | `stats`    | striped tallies per key, publisher and target |
//! | `state`    | what outlives a reload: counters and tallies by name |
//! | `zone`     | time zones and the local calendar |
//! | `clock`    | the injectable clock, RFC 3339 formatting |
//! | `sym`      | interned names of keys, campaigns and targets |
//! | `error`    | the 4xx answers a request can get |

// Nothing on a request path may panic: no unwrap or expect outside tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod caps;
pub mod clock;
pub mod config;
pub mod engine;
pub mod error;
pub mod filter;
#[cfg(any(fuzzing, test))]
pub mod fuzz;
pub mod hours;
pub mod http;
pub mod idle;
pub mod ids;
pub mod index;
pub mod json;
pub mod metrics;
pub mod params;
pub mod phone;
pub mod pricing;
pub mod records;
pub mod reply;
pub mod route;
pub mod server;
pub mod shield;
pub mod snapshot;
pub mod state;
pub mod stats;
pub mod status;
pub mod sym;
pub mod table;
pub mod webhook;
pub mod wheel;
pub mod zone;
