//! DNS records as a plugin receives them through `sluice:filter/dns`: an address, a TXT
//! record's strings joined, a host name without its final dot. Shared by the `dns` capability
//! and the capture's tape, which keeps answers in this form.

use hickory_resolver::proto::rr::RData;

use super::super::bindings::v0_1::sluice::filter::dns;

/// What a lookup found: the records of the type asked for, or why there are none.
pub type Lookup = Result<Vec<RData>, dns::LookupError>;

/// The address of an A or AAAA record.
pub(crate) fn address(r: &RData) -> Option<String> {
    match r {
        RData::A(a) => Some(a.0.to_string()),
        RData::AAAA(a) => Some(a.0.to_string()),
        _ => None,
    }
}

/// The text of a TXT record, its strings joined.
pub(crate) fn text(r: &RData) -> Option<String> {
    match r {
        RData::TXT(t) => Some(
            t.txt_data
                .iter()
                .map(|p| String::from_utf8_lossy(p))
                .collect(),
        ),
        _ => None,
    }
}

/// A host name as plugins get it: without its final dot (the root stays `.`).
pub(crate) fn host_name(name: &hickory_resolver::proto::rr::Name) -> String {
    let text = name.to_ascii();
    let trimmed = text.trim_end_matches('.');
    if trimmed.is_empty() {
        ".".to_string()
    } else {
        trimmed.to_string()
    }
}
