//! Outgoing webhooks. Events are queued in an outbox table inside the
//! transaction of the event itself, and a background worker delivers them,
//! signed with HMAC-SHA256 over `"<timestamp>.<body>"`, retrying with
//! exponential backoff.
//!
//! Server-side request forgery: the vault resolves the destination itself,
//! refuses loopback, private, link-local (cloud metadata), carrier-grade NAT,
//! unspecified, multicast and reserved addresses unless the operator
//! allowlisted them, and then connects to exactly the address it checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use hmac::{Hmac, Mac as _};
use ipnet::IpNet;
use sha2::Sha256;
use signet_client::api::{CreateWebhook, ErrorCode, WebhookList, WebhookView};
use zeroize::Zeroizing;

use crate::clock::rfc3339;
use crate::dns::Lookups;
use crate::error::{Error, Result, invalid, not_found};
use crate::ids;
use crate::outbox::EVENTS;
use crate::page::{CreatedKey, Page};
use crate::request::Ctx;
use crate::store::{Attempt, Delivery, DeliveryCounts, Read, Tx, Webhook};
use crate::vault::Vault;

/// Header with the Unix time the signature covers.
pub const HEADER_TIMESTAMP: &str = "signet-webhook-timestamp";
/// Header `v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
pub const HEADER_SIGNATURE: &str = "signet-webhook-signature";
/// Header naming the event.
pub const HEADER_EVENT: &str = "signet-webhook-event";
/// Header with the delivery id (stable across retries, for deduplication).
pub const HEADER_DELIVERY: &str = "signet-webhook-delivery";

/// Attempts before a delivery is given up.
pub const MAX_ATTEMPTS: u32 = 8;
/// First retry delay; doubled on each further failure, capped at an hour.
const BACKOFF_BASE: i64 = 30;
const BACKOFF_MAX: i64 = 3600;
/// How long a claimed delivery is hidden from other workers.
const LEASE: i64 = 120;
const BATCH: u32 = 32;
const MIN_SECRET: usize = 16;
const MAX_URL: usize = 2048;

/// The delay before attempt `attempts + 1`, after `attempts` failures.
pub fn backoff(attempts: u32) -> i64 {
    let exponent = attempts.saturating_sub(1).min(20);
    (BACKOFF_BASE << exponent).min(BACKOFF_MAX)
}

/// `v1=<hex>`: the signature a receiver recomputes.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match <Hmac<Sha256>>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn in_net(ip: IpAddr, net: &str) -> bool {
    net.parse::<IpNet>().is_ok_and(|n| n.contains(&ip))
}

/// Why the vault will not call `ip` by default, or `None` when it will.
pub fn refusal(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => refusal_v4(v4),
        IpAddr::V6(v6) => refusal_v6(v6),
    }
}

fn refusal_v4(v4: Ipv4Addr) -> Option<&'static str> {
    let ip = IpAddr::V4(v4);
    if v4.is_loopback() {
        Some("loopback")
    } else if v4.is_private() {
        Some("private")
    } else if v4.is_link_local() {
        Some("link-local (cloud metadata)")
    } else if v4.is_unspecified() || v4.octets()[0] == 0 {
        Some("unspecified")
    } else if v4.is_multicast() || v4.is_broadcast() {
        Some("multicast or broadcast")
    } else if in_net(ip, "100.64.0.0/10") {
        Some("carrier-grade NAT")
    } else if in_net(ip, "192.0.0.0/24") || in_net(ip, "198.18.0.0/15") || in_net(ip, "240.0.0.0/4")
    {
        Some("reserved")
    } else {
        None
    }
}

fn refusal_v6(v6: Ipv6Addr) -> Option<&'static str> {
    let ip = IpAddr::V6(v6);
    if v6.is_loopback() {
        Some("loopback")
    } else if v6.is_unspecified() {
        Some("unspecified")
    } else if v6.is_multicast() {
        Some("multicast")
    } else if in_net(ip, "fc00::/7") {
        Some("unique local (private)")
    } else if in_net(ip, "fe80::/10") {
        Some("link-local")
    } else if in_net(ip, "64:ff9b:1::/48") {
        // Local-use NAT64 (RFC 8215): the network chooses where the IPv4
        // address sits, so which one it reaches cannot be told.
        Some("local-use NAT64")
    } else if in_net(ip, "::/96") {
        Some("IPv4-compatible (deprecated)")
    } else {
        embedded_v4(v6).and_then(|(how, v4s)| {
            v4s.into_iter()
                .any(|v4| refusal_v4(v4).is_some())
                .then_some(how)
        })
    }
}

/// The IPv4 addresses a packet to `v6` ends up at, for the prefixes that
/// carry one: the well-known NAT64 prefix (RFC 6052) and 6to4 (RFC 3056)
/// route to the embedded address, Teredo (RFC 4380) to its server and to
/// its client (stored inverted).
fn embedded_v4(v6: Ipv6Addr) -> Option<(&'static str, Vec<Ipv4Addr>)> {
    let ip = IpAddr::V6(v6);
    let o = v6.octets();
    let v4 = |at: usize| Ipv4Addr::new(o[at], o[at + 1], o[at + 2], o[at + 3]);
    if in_net(ip, "64:ff9b::/96") {
        Some(("NAT64 of a refused IPv4 address", vec![v4(12)]))
    } else if in_net(ip, "2002::/16") {
        Some(("6to4 of a refused IPv4 address", vec![v4(2)]))
    } else if in_net(ip, "2001::/32") {
        let client = Ipv4Addr::from(!u32::from(v4(12)));
        Some(("Teredo of a refused IPv4 address", vec![v4(4), client]))
    } else {
        None
    }
}

/// Checks every resolved address; the allowlist overrides the defaults.
pub fn check_addresses(addresses: &[IpAddr], allow: &[IpNet]) -> Result<()> {
    if addresses.is_empty() {
        return Err(Error::denied(
            ErrorCode::DestinationNotAllowed,
            "the webhook host does not resolve to any address",
        ));
    }
    for ip in addresses {
        let ip = ip.to_canonical();
        if allow.iter().any(|net| net.contains(&ip)) {
            continue;
        }
        if let Some(why) = refusal(ip) {
            return Err(Error::denied(
                ErrorCode::DestinationNotAllowed,
                format!(
                    "webhook destination {ip} is {why}; allowlist it with --webhook-allow-cidr to permit it"
                ),
            ));
        }
    }
    Ok(())
}

/// A parsed destination: host as written, port, and scheme.
#[derive(Clone, Debug)]
pub struct Destination {
    pub url: reqwest::Url,
    pub host: String,
    pub port: u16,
}

/// Parses and shapes a webhook URL.
pub fn destination(url: &str) -> Result<Destination> {
    if url.len() > MAX_URL {
        return Err(invalid("webhook url is too long"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(format!("webhook url: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("webhook url must be http:// or https://"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid("webhook url must not carry credentials"));
    }
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid("webhook url has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| invalid("webhook url has no port"))?;
    Ok(Destination {
        url: parsed,
        host,
        port,
    })
}

/// Resolves a destination's host (an address literal resolves to itself)
/// with the vault's bounded lookups.
pub async fn resolve(dest: &Destination, lookups: &Lookups) -> Result<Vec<IpAddr>, String> {
    if let Ok(ip) = dest.host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    lookups.resolve(&dest.host, dest.port).await
}

fn secret_aad(id: &str) -> Vec<u8> {
    format!("signet-webhook-secret:{id}").into_bytes()
}

/// `POST /v1/webhooks`. `resolved` is the destination's addresses, looked
/// up before the transaction so DNS never holds the store's lock.
pub fn create(
    ctx: &mut Ctx<'_>,
    tx: &mut dyn Tx,
    resolved: Result<Vec<IpAddr>, String>,
) -> Result<WebhookView> {
    let body: CreateWebhook = ctx.json()?;
    let dest = destination(&body.url)?;
    ctx.audit.target = format!("webhook:{}", dest.host);
    if body.events.is_empty() {
        return Err(invalid(format!(
            "events: name at least one of {}",
            EVENTS.join(", ")
        )));
    }
    if let Some(unknown) = body.events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
        return Err(invalid(format!(
            "unknown event {unknown:?}; known: {}",
            EVENTS.join(", ")
        )));
    }
    if body.secret.len() < MIN_SECRET || body.secret.len() > 512 {
        return Err(invalid(format!(
            "secret must be {MIN_SECRET} to 512 characters"
        )));
    }
    let addresses = resolved.map_err(|e| Error::denied(ErrorCode::DestinationNotAllowed, e))?;
    check_addresses(&addresses, &ctx.settings.webhook_allow)?;
    let id = ids::new(ids::WEBHOOK);
    let sealed_secret = ctx
        .root
        .key()
        .seal(body.secret.as_bytes(), &secret_aad(&id))?;
    let mut events = body.events.clone();
    events.sort();
    events.dedup();
    let hook = Webhook {
        id,
        url: dest.url.to_string(),
        events,
        sealed_secret,
        created_at: ctx.now,
        created_by: ctx.caller.id(),
    };
    tx.insert_webhook(&hook)?;
    ctx.audit.target = format!("webhook:{} {}", hook.id, dest.host);
    view(tx, &hook)
}

fn view(tx: &mut dyn Tx, hook: &Webhook) -> Result<WebhookView> {
    Ok(view_with(hook, tx.delivery_counts(&hook.id)?))
}

fn view_with(hook: &Webhook, counts: DeliveryCounts) -> WebhookView {
    WebhookView {
        id: hook.id.clone(),
        url: hook.url.clone(),
        events: hook.events.clone(),
        created_at: rfc3339(hook.created_at),
        pending: counts.pending,
        delivered: counts.delivered,
        failed: counts.failed,
    }
}

/// `GET /v1/webhooks`: one page, oldest first, with the delivery counts
/// of the whole page read in one query.
pub fn list(r: &mut dyn Read, page: &Page<CreatedKey>) -> Result<WebhookList> {
    let (hooks, next_cursor) =
        page.finish(r.webhooks_page(page)?, |h| (h.created_at, h.id.clone()));
    let ids: Vec<&str> = hooks.iter().map(|h| h.id.as_str()).collect();
    let counts: std::collections::HashMap<String, DeliveryCounts> =
        r.delivery_counts_of(&ids)?.into_iter().collect();
    Ok(WebhookList {
        webhooks: hooks
            .iter()
            .map(|h| view_with(h, counts.get(&h.id).copied().unwrap_or_default()))
            .collect(),
        next_cursor,
    })
}

/// `DELETE /v1/webhooks/{id}` (its queued deliveries go with it).
pub fn delete(ctx: &mut Ctx<'_>, tx: &mut dyn Tx, id: &str) -> Result<()> {
    ctx.audit.target = format!("webhook:{id}");
    if !tx.delete_webhook(id)? {
        return Err(not_found(format!("webhook {id}")));
    }
    Ok(())
}

/// What one delivery pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    pub delivered: u32,
    pub retrying: u32,
    pub failed: u32,
}

/// Where one delivery stands after its attempt.
enum Outcome {
    Delivered,
    Retrying,
    Failed,
}

/// Why one attempt did not deliver; `permanent` ones are not retried.
struct AttemptError {
    message: String,
    permanent: bool,
}

impl Vault {
    /// Delivers every due webhook event once, at most
    /// [`Settings::webhook_concurrency`](crate::settings::Settings) at a
    /// time (the background worker calls this every few seconds; tests call
    /// it directly).
    pub async fn deliver_webhooks(self: &Arc<Self>) -> Result<DeliveryReport> {
        let vault = Arc::clone(self);
        let batch = tokio::task::spawn_blocking(move || {
            vault.with_tx(|tx, now| {
                let mut batch = Vec::new();
                for delivery in tx.claim_deliveries(now, now + LEASE, BATCH)? {
                    let Some(hook) = tx.webhook(&delivery.webhook_id)? else {
                        continue;
                    };
                    let secret = vault
                        .root
                        .key()
                        .open(&hook.sealed_secret, &secret_aad(&hook.id))?;
                    batch.push((delivery, hook.url, secret));
                }
                Ok(batch)
            })
        })
        .await??;
        // Attempts run side by side, a few at a time, so one slow receiver
        // does not hold up the others for its whole timeout.
        let permits = Arc::new(tokio::sync::Semaphore::new(
            self.settings.webhook_concurrency.max(1),
        ));
        let mut running = tokio::task::JoinSet::new();
        for (delivery, url, secret) in batch {
            let (vault, permits) = (Arc::clone(self), Arc::clone(&permits));
            running.spawn(async move {
                let _permit = permits.acquire_owned().await;
                vault.deliver(delivery, &url, &secret).await
            });
        }
        let mut report = DeliveryReport::default();
        let mut failure = None;
        while let Some(joined) = running.join_next().await {
            match joined {
                Ok(Ok(Outcome::Delivered)) => report.delivered += 1,
                Ok(Ok(Outcome::Retrying)) => report.retrying += 1,
                Ok(Ok(Outcome::Failed)) => report.failed += 1,
                Ok(Err(error)) => failure = failure.or(Some(error)),
                Err(error) => failure = failure.or(Some(error.into())),
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(report),
        }
    }

    /// One attempt of one delivery, and its outcome recorded.
    async fn deliver(
        self: Arc<Self>,
        delivery: Delivery,
        url: &str,
        secret: &Zeroizing<Vec<u8>>,
    ) -> Result<Outcome> {
        let outcome = self.attempt(&delivery, url, secret).await;
        let now = self.now();
        let attempts = delivery.attempts + 1;
        let (attempt, counted) = match outcome {
            Ok(()) => (Attempt::Delivered, Outcome::Delivered),
            Err(e) if e.permanent || attempts >= MAX_ATTEMPTS => {
                tracing::warn!(webhook = %delivery.webhook_id, delivery = delivery.id, error = %e.message, "webhook delivery given up");
                (Attempt::Failed { error: e.message }, Outcome::Failed)
            }
            Err(e) => {
                tracing::info!(webhook = %delivery.webhook_id, delivery = delivery.id, attempts, error = %e.message, "webhook delivery failed; will retry");
                (
                    Attempt::Retry {
                        next_attempt_at: now + backoff(attempts),
                        error: e.message,
                    },
                    Outcome::Retrying,
                )
            }
        };
        let vault = Arc::clone(&self);
        tokio::task::spawn_blocking(move || {
            vault.with_tx(|tx, now| Ok(tx.finish_delivery(delivery.id, &attempt, now)?))
        })
        .await??;
        Ok(counted)
    }

    async fn attempt(
        &self,
        delivery: &Delivery,
        url: &str,
        secret: &Zeroizing<Vec<u8>>,
    ) -> Result<(), AttemptError> {
        let permanent = |message: String| AttemptError {
            message,
            permanent: true,
        };
        let transient = |message: String| AttemptError {
            message,
            permanent: false,
        };
        let dest = destination(url).map_err(|e| permanent(e.public_message()))?;
        let addresses = resolve(&dest, &self.settings.lookups)
            .await
            .map_err(transient)?;
        // Checked again at delivery: DNS may now answer differently than it
        // did when the webhook was created.
        check_addresses(&addresses, &self.settings.webhook_allow)
            .map_err(|e| permanent(e.public_message()))?;
        let Some(ip) = addresses.first().copied() else {
            return Err(transient("no address".into()));
        };
        // Pin the connection to the address that was checked, so a second
        // DNS answer cannot redirect it; never follow redirects, never use a
        // proxy from the environment.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(self.settings.webhook_timeout)
            .resolve(&dest.host, SocketAddr::new(ip, dest.port))
            .user_agent(concat!("signet-vault/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| transient(format!("http client: {e}")))?;
        let timestamp = self.now();
        let response = client
            .post(dest.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(HEADER_TIMESTAMP, timestamp.to_string())
            .header(
                HEADER_SIGNATURE,
                signature(secret, timestamp, delivery.body.as_bytes()),
            )
            .header(HEADER_EVENT, &delivery.event)
            .header(HEADER_DELIVERY, delivery.id.to_string())
            .body(delivery.body.clone())
            .send()
            .await
            .map_err(|e| transient(format!("request failed: {}", e.without_url())))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(transient(format!(
                "receiver answered {}",
                response.status()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn internal_addresses_are_refused() {
        for text in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.1.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert!(refusal(ip).is_some(), "{text} should be refused");
            assert!(check_addresses(&[ip], &[]).is_err());
        }
        for text in ["93.184.216.34", "2606:4700::1111"] {
            assert!(
                refusal(text.parse().unwrap()).is_none(),
                "{text} should be allowed"
            );
        }
    }

    /// Every IPv6 form that carries an IPv4 address, around `v4`.
    fn embeddings(v4: Ipv4Addr) -> Vec<(&'static str, Ipv6Addr)> {
        let [a, b, c, d] = v4.octets();
        let inverted = (!u32::from(v4)).to_be_bytes();
        let public = [192, 0, 2, 1_u8].map(|x| !x);
        let v6 = |bytes: [u8; 16]| Ipv6Addr::from(bytes);
        vec![
            (
                "nat64",
                v6([0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0, a, b, c, d]),
            ),
            (
                "6to4",
                v6([0x20, 0x02, a, b, c, d, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            ),
            (
                "teredo server",
                v6([
                    0x20, 0x01, 0, 0, a, b, c, d, 0, 0, 0xf2, 0x27, public[0], public[1],
                    public[2], public[3],
                ]),
            ),
            (
                "teredo client",
                v6([
                    0x20,
                    0x01,
                    0,
                    0,
                    8,
                    8,
                    8,
                    8,
                    0,
                    0,
                    0xf2,
                    0x27,
                    inverted[0],
                    inverted[1],
                    inverted[2],
                    inverted[3],
                ]),
            ),
            (
                "ipv4-compatible",
                v6([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, a, b, c, d]),
            ),
        ]
    }

    #[test]
    fn ipv6_forms_of_internal_ipv4_addresses_are_refused() {
        for text in [
            "64:ff9b::127.0.0.1",
            "64:ff9b::10.0.0.1",
            "64:ff9b::169.254.169.254",
            "64:ff9b:1::a9fe:a9fe",
            "64:ff9b:1:ffff::8.8.8.8",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "2001:0:a00:1::1",
            "2001:0:808:808:0:f227:5601:fefe",
            "::127.0.0.1",
            "::169.254.169.254",
            "::8.8.8.8",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert!(refusal(ip).is_some(), "{text} should be refused");
            assert!(check_addresses(&[ip], &[]).is_err(), "{text}");
        }
        // The same forms of a public address reach that public address.
        for text in [
            "64:ff9b::93.184.216.34",
            "2002:5db8:d822::1",
            "2001:0:5db8:d822::a2fe:fefe",
        ] {
            assert!(
                refusal(text.parse().unwrap()).is_none(),
                "{text} should be allowed"
            );
        }
    }

    /// For random IPv4 addresses: each IPv6 form of an address is refused
    /// whenever the address itself is (IPv4-compatible forms always are).
    #[test]
    fn an_embedded_address_is_refused_like_the_address_itself() {
        use rand::Rng as _;
        let mut rng = rand::thread_rng();
        let samples = [
            "127.0.0.1",
            "10.1.2.3",
            "172.31.0.1",
            "192.168.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.1.2.3",
            "224.1.1.1",
            "255.255.255.255",
            "198.18.0.1",
            "240.0.0.1",
            "8.8.8.8",
        ]
        .map(|t| t.parse::<Ipv4Addr>().unwrap());
        let random = (0..20_000).map(|_| Ipv4Addr::from(rng.r#gen::<u32>()));
        for v4 in samples.into_iter().chain(random) {
            let refused = refusal_v4(v4).is_some();
            for (form, v6) in embeddings(v4) {
                let expected = refused || form == "ipv4-compatible";
                assert_eq!(
                    refusal(IpAddr::V6(v6)).is_some(),
                    expected,
                    "{form} {v6} of {v4}"
                );
            }
        }
    }

    #[test]
    fn allowlist_overrides_and_any_bad_address_refuses() {
        let allow = vec!["127.0.0.0/8".parse::<IpNet>().unwrap()];
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let metadata: IpAddr = "169.254.169.254".parse().unwrap();
        assert!(check_addresses(&[local], &allow).is_ok());
        assert!(check_addresses(&[local, metadata], &allow).is_err());
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), 30);
        assert_eq!(backoff(2), 60);
        assert_eq!(backoff(3), 120);
        assert_eq!(backoff(30), 3600);
    }

    #[test]
    fn urls_are_shaped() {
        assert!(destination("ftp://example.com/").is_err());
        assert!(destination("http://user:pw@example.com/").is_err());
        let d = destination("https://[::1]:8443/hook").unwrap();
        assert_eq!((d.host.as_str(), d.port), ("::1", 8443));
    }
}
