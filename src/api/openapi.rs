//! The OpenAPI document, generated from the handlers' annotations and the
//! schema types below, served at `/openapi.json`.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// `POST /v1/notifications` body.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct NotificationRequest {
    /// Contract id of a loaded dialplan.
    contract: String,
    /// The ticket in the alert pipeline.
    ticket: String,
    severity: String,
    host: String,
    summary: String,
    /// Custom template variables the dialplan declares.
    variables: Option<std::collections::BTreeMap<String, String>>,
    /// Validate and show the contacts without calling.
    dry_run: Option<bool>,
}

/// `202 Accepted` answer.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Accepted {
    id: String,
    state: String,
    /// False when an earlier request (same Idempotency-Key, or the same
    /// active contract + ticket) is returned.
    created: bool,
    location: String,
}

/// `POST /v1/notifications/{id}/cancel` body.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CancelRequest {
    reason: Option<String>,
}

/// `POST /v1/notifications/{id}/acknowledge` body.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AcknowledgeRequest {
    /// Who acknowledged, on the phone (a contact's name, or anyone's).
    by: String,
    reason: Option<String>,
}

/// An RFC 9457 problem document.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Problem {
    #[schema(rename = "type")]
    kind: String,
    title: String,
    status: u16,
    detail: String,
    /// The offending field, for validation errors.
    field: Option<String>,
}

/// A contract's PIN lockout (`GET /v1/contracts/{id}/pin-lock`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PinLockState {
    contract: String,
    /// The contract has a `[pin]`.
    pin: bool,
    /// Actions that need the PIN are refused (the callee hears "locked").
    locked: bool,
    locked_at_ms: Option<i64>,
    locked_until_ms: Option<i64>,
    /// Wrong PINs that count now, across calls and notifications.
    failures: u32,
    max_attempts: Option<u32>,
    lockout_ms: Option<u64>,
    last_failure_ms: Option<i64>,
    /// The same failures by contact.
    contacts: Vec<ContactFailures>,
}

/// Wrong PINs of one contact.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ContactFailures {
    contact: String,
    failures: i64,
    last_ms: i64,
}

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "callout", description = "Telephony escalation gateway: notifications in, calls out, events back to the ticket."),
    paths(
        super::create_notification,
        super::list_notifications,
        super::get_notification,
        super::cancel_notification,
        super::acknowledge::acknowledge_notification,
        super::get_call,
        super::list_contracts,
        super::get_contract,
        super::pin_lock::get_pin_lock,
        super::pin_lock::clear_pin_lock,
        super::reload_dialplans,
        super::actions::run_flow,
        super::actions::get_run,
        super::validate_dialplan,
        super::healthz,
        super::readyz,
        super::metrics,
        super::openapi_json,
    ),
    components(schemas(
        NotificationRequest,
        Accepted,
        CancelRequest,
        AcknowledgeRequest,
        Problem,
        PinLockState,
        ContactFailures,
        crate::service::RunRequest
    )),
    modifiers(&Bearer)
)]
pub struct ApiDoc;
