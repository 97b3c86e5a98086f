//! Which next hops a group of recipients may go to, and what TLS each must have: the MX hosts
//! of a domain in order; DANE (RFC 7672), which takes precedence over MTA-STS (RFC 8461 §2);
//! an MTA-STS enforce policy; REQUIRETLS (RFC 8689); and the route's own demands.

use std::collections::HashMap;

use super::*;
use crate::delivery::dane::HopDane;

/// What a group's hops must satisfy.
pub(super) struct Trust<'a> {
    /// The hops allowed, in order: (target, name for TLS and reports).
    pub hops: Vec<(Target, String)>,
    /// The MTA-STS enforce policy followed, if any (not when DANE applies).
    pub enforce: Option<&'a mta_sts::Policy>,
    /// What DANE asks of each MX host (name, IPv6).
    pub dane: HashMap<(String, bool), HopDane>,
}

impl Trust<'_> {
    /// What DANE asks of the connection to `target` named `name`.
    pub fn dane_of(&self, target: &Target, name: &str) -> HopDane {
        match target {
            Target::Tcp(a) => self
                .dane
                .get(&(name.to_string(), a.is_ipv6()))
                .cloned()
                .unwrap_or_default(),
            Target::Unix(_) => HopDane::None,
        }
    }
}

impl Runner {
    /// The hops of `hops` that mail of `domain` over `route` may go to, and how. `Err` carries
    /// the reply for every recipient when none may (or none may now).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn trust<'a>(
        &self,
        route: &RouteConfig,
        domain: &str,
        hops: Vec<(Target, String)>,
        sts: Option<&'a mta_sts::Policy>,
        requiretls: bool,
        message: &[u8],
        id: &str,
    ) -> Result<Trust<'a>, Reply> {
        let mx = route.kind == RouteKind::Mx;
        let mut dane = HashMap::new();
        if mx && route.dane != PolicyUse::Off {
            let hosts: Vec<(String, bool)> = hops
                .iter()
                .filter_map(|(t, n)| match t {
                    Target::Tcp(a) => Some((n.clone(), a.is_ipv6())),
                    Target::Unix(_) => None,
                })
                .collect();
            dane = self
                .dane
                .hops(domain, &hosts, route.port)
                .await
                .map_err(|e| Reply::new(451, "4.7.5", &format!("DANE: {e}")))?;
        }
        let with_dane = dane.values().any(|d| *d != HopDane::None);
        let authenticated = dane.values().any(|d| matches!(d, HopDane::Authenticate(_)));
        // MTA-STS: an enforce policy allows only its MX hosts, over TLS with a certificate
        // verified for the host; not followed where DANE applies. `TLS-Required: No` asks
        // that it be ignored (RFC 8689 §5), unless the sender also asked for REQUIRETLS.
        // (The header is read only for an enforce policy.)
        let enforce = sts.filter(|p| {
            !with_dane
                && p.mode == mta_sts::Mode::Enforce
                && (requiretls || !mta_sts::tls_required_no(message))
        });
        if requiretls && mx && enforce.is_none() && !authenticated {
            return Err(Reply::new(
                550,
                "5.7.30",
                &format!(
                    "REQUIRETLS support required: the mail exchangers of {domain} cannot be authenticated (no MTA-STS enforce policy, no DNSSEC-validated TLSA records)"
                ),
            ));
        }
        if mx && route.mta_sts == PolicyUse::Required && enforce.is_none() && !authenticated {
            return Err(Reply::new(
                451,
                "4.7.5",
                &format!("{domain} has no MTA-STS enforce policy, which this route requires"),
            ));
        }
        if mx && route.dane == PolicyUse::Required && !authenticated {
            return Err(Reply::new(
                451,
                "4.7.5",
                &format!(
                    "{domain} has no DNSSEC-validated TLSA records for its mail exchangers, which this route requires"
                ),
            ));
        }
        let hops = match mta_sts::allowed_hops(sts, enforce.is_some(), hops, (id, domain)) {
            Ok(hops) => hops,
            Err((reply, unlisted)) => {
                self.report_tls(
                    (route, domain, sts),
                    &HopDane::None,
                    tls_report::Outcome::Failure {
                        result: "validation-failure",
                        mx: unlisted,
                        reason: "MX host not in the MTA-STS policy".to_string(),
                    },
                );
                return Err(reply);
            }
        };
        Ok(Trust {
            hops,
            enforce,
            dane,
        })
    }

    /// Counts what came of the TLS of an attempt to a host of `domain` (whose MTA-STS policy
    /// is `sts`) under `dane`, for TLS reports (MX routes).
    pub(super) fn report_tls(
        &self,
        (route, domain, sts): (&RouteConfig, &str, Option<&mta_sts::Policy>),
        dane: &HopDane,
        outcome: tls_report::Outcome,
    ) {
        let Some(r) = &self.tls_reports else {
            return;
        };
        if route.kind != RouteKind::Mx {
            return;
        }
        let host = match &outcome {
            tls_report::Outcome::Failure { mx, .. } => mx.as_str(),
            tls_report::Outcome::Success => "",
        };
        match dane.reported(host) {
            Some((host, records)) => r.record(
                domain,
                sts,
                tls_report::Under::Tlsa(&host, &records),
                outcome,
            ),
            None => r.record(domain, sts, tls_report::Under::Domain, outcome),
        }
    }

    /// The addresses of the domain's mail exchangers, in the order to try them.
    pub(super) async fn mx_hops(
        &self,
        domain: &str,
        port: u16,
    ) -> Result<Vec<(Target, String)>, MxError> {
        let exchangers = self.mx.exchangers(domain).await?;
        let implicit = exchangers.len() == 1 && exchangers[0].name == domain;
        let mut hops = Vec::new();
        let mut trouble = None;
        for ex in exchangers {
            match self.mx.addresses(&ex.name).await {
                Ok(addrs) => hops.extend(
                    addrs
                        .into_iter()
                        .map(|ip| (Target::Tcp((ip, port).into()), ex.name.clone())),
                ),
                Err(e) => trouble = Some(e),
            }
        }
        match (hops.is_empty(), trouble) {
            (false, _) => Ok(hops),
            (true, Some(e)) => Err(e),
            (true, None) if implicit => Err(MxError::NoMailHost(domain.to_string())),
            (true, None) => Err(MxError::Temporary {
                name: domain.to_string(),
                problem: "no mail exchanger has an address".to_string(),
            }),
        }
    }
}
