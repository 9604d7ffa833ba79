//! One dialog (early or confirmed) an outgoing INVITE created: the far
//! end's tag, remote target and route set (RFC 3261 12.1.2). A forking
//! proxy makes several from one INVITE, told apart by their To tags.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use super::header::{NameAddrRef, SipUriRef};
use super::message::Response;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    pub remote_tag: String,
    /// The response's Contact; `None` when it had none.
    pub target: Option<String>,
    /// Record-Route reversed: the order our requests take.
    pub route_set: Vec<String>,
}

/// The To tag of a response, if any.
pub fn to_tag(resp: &Response) -> Option<String> {
    resp.headers
        .get("To")
        .and_then(|t| NameAddrRef::parse(t).ok())
        .and_then(|a| a.tag().map(Cow::into_owned))
}

impl Leg {
    /// The dialog a 1xx (with a tag) or 2xx sets up; `None` without a To tag.
    pub fn from_response(resp: &Response) -> Option<Leg> {
        let remote_tag = to_tag(resp)?;
        let target = resp
            .headers
            .get("Contact")
            .and_then(|c| NameAddrRef::parse(c).ok())
            .map(|a| a.uri.to_string());
        let mut route_set: Vec<String> = resp
            .headers
            .all("Record-Route")
            .map(str::to_string)
            .collect();
        route_set.reverse();
        Some(Leg {
            remote_tag,
            target,
            route_set,
        })
    }

    /// Where this dialog's requests go: the first route, else the remote
    /// target; `fallback` (where the INVITE went) when that is a name we
    /// cannot resolve here.
    pub fn destination(&self, fallback: SocketAddr) -> SocketAddr {
        destination(&self.route_set, self.target.as_deref(), fallback)
    }
}

/// See [`Leg::destination`]. Read from borrowed views: it runs for each
/// ACK and BYE.
pub fn destination(route_set: &[String], target: Option<&str>, fallback: SocketAddr) -> SocketAddr {
    let uri = match route_set.first() {
        Some(r) => NameAddrRef::parse(r).ok().map(|a| a.uri),
        None => target,
    };
    uri.and_then(|u| SipUriRef::parse(u).ok())
        .and_then(|u| {
            let (host, port) = u.target();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            host.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, port))
        })
        .unwrap_or(fallback)
}
