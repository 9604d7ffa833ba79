//! Who is asking, for the routes a customer may read too. A request is
//! authenticated by its bearer token or by a console session cookie
//! (`crate::console::session`), and a token bound to contracts
//! (`contracts = [...]`) sees those contracts only, on every route that
//! answers with a contract's data: the binding lives here, not in the
//! screens.

use axum::http::{HeaderMap, StatusCode};

use super::{token_for, ApiError, Scope};
use crate::service::Service;

/// The caller of a read route.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub name: String,
    /// `None`: every contract.
    pub contracts: Option<Vec<String>>,
}

impl Caller {
    pub fn may_see(&self, contract: &str) -> bool {
        self.contracts
            .as_ref()
            .is_none_or(|cs| cs.iter().any(|c| c == contract))
    }

    /// A record of another contract answers 404, as one that does not
    /// exist, so ids of other customers cannot be probed.
    pub fn check(&self, contract: &str, what: &str, id: &str) -> Result<(), ApiError> {
        if self.may_see(contract) {
            Ok(())
        } else {
            Err(not_found(what, id))
        }
    }
}

pub(crate) fn not_found(what: &str, id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "Not found",
        format!("no {what} {id}"),
    )
}

/// A caller allowed to read: `operate` (or any of `also`), or `customer`
/// (read-only, its contracts only).
pub(crate) fn reader(
    svc: &Service,
    headers: &HeaderMap,
    also: &[Scope],
) -> Result<Caller, ApiError> {
    let mut first_err = None;
    for scope in [Scope::Operate, Scope::Customer].iter().chain(also) {
        match token_for(svc, headers, *scope) {
            Ok(t) => {
                let bound = !t.contracts.is_empty() || *scope == Scope::Customer;
                return Ok(Caller {
                    name: t.name.clone(),
                    contracts: bound.then(|| t.contracts.clone()),
                });
            }
            Err(e) if e.status == StatusCode::UNAUTHORIZED => return Err(e),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "this token may not read",
        )
    }))
}

/// A caller allowed to change things with `scope`: a token bound to
/// contracts may act on those only (checked by the route with
/// [`Caller::check`]); a customer token never acts.
pub(crate) fn actor(svc: &Service, headers: &HeaderMap, scope: Scope) -> Result<Caller, ApiError> {
    let t = token_for(svc, headers, scope)?;
    Ok(Caller {
        name: t.name.clone(),
        contracts: (!t.contracts.is_empty()).then(|| t.contracts.clone()),
    })
}
