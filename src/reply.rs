//! The JSON answers: engine answers and rejections turned into HTTP
//! responses.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};

use crate::clock::write_rfc3339;
use crate::engine::{Answer, CallAnswer, Ended, Reservation};
use crate::error::Rejection;
use crate::json::Object;

pub type Body = Full<Bytes>;

const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A response with a JSON body.
pub fn json(status: u16, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // Room for the one header (a map sized by default takes 656 bytes).
    let mut headers = HeaderMap::with_capacity(2);
    headers.insert(CONTENT_TYPE, JSON);
    *response.headers_mut() = headers;
    response
}

/// A response with a `serde_json` value.
pub fn value(status: u16, value: &serde_json::Value) -> Response<Body> {
    json(status, Bytes::from(serde_json::to_vec(value).unwrap_or_default()))
}

/// `{"status":…,"info":…}` with the rejection's code.
pub fn rejection(r: &Rejection) -> Response<Body> {
    let mut o = Object::with_capacity(64 + r.info.len());
    o.str("status", r.status).str("info", &r.info);
    json(r.http, o.finish())
}

fn uuid(out: &mut Vec<u8>, id: u128) {
    let mut buf = uuid::Uuid::encode_buffer();
    out.extend_from_slice(uuid::Uuid::from_u128(id).hyphenated().encode_lower(&mut buf).as_bytes());
}

/// The answer to a ping or a confirmation.
pub fn answer(answer: &Answer, sip_domain: Option<&str>) -> Response<Body> {
    let mut o = Object::new();
    match answer {
        Answer::Reservation(terms) => reservation(&mut o, terms, sip_domain),
        Answer::Nothing { uuid: id, status, reason, info } => {
            o.raw_str("uuid", |b| uuid(b, *id))
                .str("status", status.as_str())
                .str("reason", reason.as_str())
                .str("info", info.as_str());
        }
        Answer::Expired { uuid: id } => {
            o.raw_str("uuid", |b| uuid(b, *id)).str("status", "expired");
        }
        Answer::Processing { uuid: id } => {
            o.raw_str("uuid", |b| uuid(b, *id))
                .str("status", "ping_shield_postback_key_caller_number_already_processing")
                .bool("retreaver_ping_shield", true);
        }
        Answer::Claimed { uuid: id } => {
            o.raw_str("uuid", |b| uuid(b, *id)).str("status", "claimed");
        }
        Answer::ClaimLimited => {
            o.str("status", "ping_shield_postback_key_claim_based_limited")
                .bool("retreaver_ping_shield", true);
        }
        Answer::RateLimited { retry_after_secs } => {
            o.str("status", "ping_shield_postback_key_rate_limited")
                .uint("retry_after", u64::from(*retry_after_secs));
            let mut response = json(429, o.finish());
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            return response;
        }
    }
    json(200, o.finish())
}

fn reservation(o: &mut Object, t: &Reservation, sip_domain: Option<&str>) {
    o.raw_str("uuid", |b| uuid(b, t.uuid))
        .str("status", t.status.as_str())
        .money("retreaver_payout", t.payout_milli)
        .uint("retreaver_seconds", u64::from(t.seconds));
    if let Some(inbound) = t.inbound {
        o.raw_str("inbound_number", |b| inbound.write(b));
    }
    o.raw_str("expires_at", |b| write_rfc3339(t.expires_ms, b));
    if let Some(domain) = sip_domain {
        // Domains are checked at load time: no quote or control character.
        o.raw_str("sip_address", |b| {
            uuid(b, t.uuid);
            b.push(b'@');
            b.extend_from_slice(domain.as_bytes());
        });
    }
    if t.echo {
        o.bool("retreaver_ping_shield", true);
    }
}

/// The answer to `POST /calls`: the call's target, or 409 when caps filled
/// before the reservation was counted.
pub fn call(answer: &CallAnswer) -> Response<Body> {
    let c = match answer {
        CallAnswer::Claimed(c) => c,
        CallAnswer::Capped { uuid: id, reason, info } => {
            let mut o = Object::new();
            o.raw_str("uuid", |b| uuid(b, *id))
                .str("status", "no-target")
                .str("reason", reason.as_str())
                .str("info", info.as_str());
            return json(409, o.finish());
        }
    };
    let mut o = Object::new();
    o.raw_str("uuid", |b| uuid(b, c.uuid))
        .str("status", "claimed")
        .str("target_id", c.target.as_str())
        .str("transfer_number", &c.transfer.to_string())
        .money("retreaver_payout", c.payout_milli)
        .uint("retreaver_seconds", u64::from(c.seconds));
    json(200, o.finish())
}

/// The answer to `POST /calls/{uuid}/end`.
pub fn ended(e: &Ended) -> Response<Body> {
    let mut o = Object::new();
    o.raw_str("uuid", |b| uuid(b, e.uuid))
        .str("status", "claimed")
        .bool("converted", e.converted)
        .money("payout", e.payout_milli)
        .uint("duration_secs", u64::from(e.duration_secs));
    json(200, o.finish())
}
