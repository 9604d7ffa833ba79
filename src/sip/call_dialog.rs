//! The dialog half of [`Call`]: requests on one dialog or early dialog
//! (PRACK, a fork's ACK and BYE, our session refresh) and the far end's
//! re-INVITE and UPDATE (offer/answer, session timer). A child module of
//! `call` so it shares the call's state without widening it.

use std::time::Instant;

use super::{Call, CallEvent, EndReason, Phase, ALLOW, SUPPORTED};
use crate::sip::fork::ForkedDialog;
use crate::sip::header::{CSeq, NameAddr};
use crate::sip::leg::Leg;
use crate::sip::message::{Method, Request, Response};
use crate::sip::offer_answer::LocalSdp;
use crate::sip::prack;
use crate::sip::transaction::NonInviteClient;
use crate::sip::Transmit;

impl Call {
    /// A request on one dialog (or early dialog) of this INVITE: a PRACK,
    /// or the ACK and BYE for a fork we do not keep.
    pub(super) fn leg_request(&mut self, method: Method, leg: &Leg, seq: u32) -> (Request, String) {
        let branch = self.next_branch();
        let target = leg
            .target
            .clone()
            .unwrap_or_else(|| self.cfg.target.clone());
        let mut req = Request::new(method.clone(), target);
        self.push_via(&mut req.headers, &branch);
        req.headers.push("Max-Forwards", "70");
        for r in &leg.route_set {
            req.headers.push("Route", r);
        }
        self.push_from(&mut req.headers);
        req.headers.push(
            "To",
            format!("<{}>;tag={}", self.cfg.target, leg.remote_tag),
        );
        req.headers.push("Call-ID", &self.call_id);
        req.headers.push_fmt("CSeq", format_args!("{seq} {method}"));
        (req, branch)
    }

    /// The confirmed dialog, as a [`Leg`] for building requests on it.
    pub(super) fn confirmed_leg(&self) -> Option<Leg> {
        Some(Leg {
            remote_tag: self.remote_tag.clone()?,
            target: self.remote_target.clone(),
            route_set: self.route_set.clone(),
        })
    }

    /// Refresh the session (RFC 4028 7.4) with an UPDATE without SDP: it
    /// changes no media and needs no ACK.
    pub(super) fn send_refresh(&mut self, now: Instant) {
        let (Some(leg), Some(timer)) = (self.confirmed_leg(), &self.session_timer) else {
            return;
        };
        let se = timer.our_refresh_header();
        self.cseq += 1;
        let (mut req, branch) = self.leg_request(Method::Update, &leg, self.cseq);
        self.push_contact(&mut req.headers);
        req.headers.push("Session-Expires", se);
        req.headers.push("Supported", SUPPORTED);
        let dest = self.dialog_destination();
        self.refresh_tx = Some((
            NonInviteClient::new(now, &req, self.cfg.timers),
            dest,
            branch,
        ));
        self.drain_nict(now);
    }

    /// PRACK a reliable provisional response on its early dialog.
    pub(super) fn send_prack(&mut self, now: Instant, resp: &Response, rack: String) {
        let Some(leg) = Leg::from_response(resp) else {
            return;
        };
        self.cseq += 1;
        let (mut req, branch) = self.leg_request(Method::Prack, &leg, self.cseq);
        req.headers.push("RAck", rack);
        let dest = leg.destination(self.cfg.destination);
        let tx = NonInviteClient::new(now, &req, self.cfg.timers);
        self.prack_txs.push((tx, dest, branch));
        self.drain_nict(now);
    }

    /// A 2xx from a fork other than the one we kept: ACK it on its own
    /// dialog, then BYE it. Its retransmissions get the same ACK again.
    pub(super) fn on_other_fork_2xx(&mut self, now: Instant, resp: &Response, tag: String) {
        if let Some(f) = self.forks.iter().find(|f| f.remote_tag == tag) {
            self.transmit.push_back(Transmit {
                dest: f.dest,
                bytes: f.ack.clone(),
            });
            return;
        }
        let Some(leg) = Leg::from_response(resp) else {
            return;
        };
        let seq = resp
            .headers
            .get("CSeq")
            .and_then(|c| CSeq::parse(c).ok())
            .map_or(self.cseq, |c| c.seq);
        let dest = leg.destination(self.cfg.destination);
        let (ack, _) = self.leg_request(Method::Ack, &leg, seq);
        let ack = ack.to_bytes();
        self.transmit.push_back(Transmit {
            dest,
            bytes: ack.clone(),
        });
        // The fork's own CSeq space starts at the INVITE's.
        let (mut bye, bye_branch) = self.leg_request(Method::Bye, &leg, seq + 1);
        bye.headers
            .push("Reason", "SIP;cause=200;text=\"Call completed elsewhere\"");
        tracing::info!(call_id = %self.call_id, fork_tag = %tag, "second 2xx from a forked INVITE: ACK and BYE");
        let mut fork = ForkedDialog {
            remote_tag: tag,
            ack,
            dest,
            bye: NonInviteClient::new(now, &bye, self.cfg.timers),
            bye_branch,
        };
        fork.drain(&mut self.transmit);
        self.forks.push(fork);
    }

    /// A re-INVITE or UPDATE from the far end (RFC 3261 14.2, RFC 3311):
    /// a new offer is answered and media follows it; a re-INVITE without
    /// one gets our offer (answered in the ACK); an UPDATE without one is
    /// a session refresh. An offer we cannot take is 488 and changes
    /// nothing.
    pub(super) fn on_session_request(&mut self, now: Instant, req: &Request) -> Response {
        let mut r = self.answer_session_request(req);
        // A 2xx to it is a session refresh (RFC 4028 9).
        if r.code < 300 {
            if let Some(t) = &mut self.session_timer {
                r.headers
                    .push("Session-Expires", t.refreshed_by_them(now, &req.headers));
                if prack::lists(&req.headers, "Supported", "timer") {
                    r.headers.push("Require", "timer");
                }
            }
        }
        r
    }

    /// The final outcome of our own refresh (`None`: no answer at all).
    pub(super) fn on_refresh_result(&mut self, now: Instant, result: Option<Response>) {
        match result {
            Some(r) if (200..300).contains(&r.code) => {
                if let Some(t) = &mut self.session_timer {
                    t.refreshed_by_us(now, &r.headers);
                }
            }
            // RFC 4028 10: the dialog is gone or unreachable.
            Some(r) if r.code == 408 || r.code == 481 => self.expire(now),
            _ => {
                if let Some(t) = &mut self.session_timer {
                    t.refresh_failed();
                }
            }
        }
    }

    pub(super) fn expire(&mut self, now: Instant) {
        self.session_timer = None;
        if self.phase == Phase::Confirmed {
            tracing::info!(call_id = %self.call_id, "session timer expired: BYE");
            self.bye_reason = Some(EndReason::SessionExpired);
            self.send_bye(now);
        }
    }

    /// The offer/answer part of [`Call::on_session_request`].
    pub(super) fn answer_session_request(&mut self, req: &Request) -> Response {
        if let Some(uri) = req
            .headers
            .get("Contact")
            .and_then(|c| NameAddr::parse(c).ok())
            .map(|a| a.uri)
        {
            // Both are target refresh requests (RFC 3261 12.2.2).
            self.remote_target = Some(uri);
        }
        let mut r = Response::for_request(req, 200, None);
        self.push_contact(&mut r.headers);
        r.headers.push("Allow", ALLOW);
        r.headers.push("Supported", SUPPORTED);
        let offer = &self.cfg.sdp_offer;
        let local = self
            .local_sdp
            .get_or_insert_with(|| LocalSdp::from_offer(offer));
        let Some(local) = local.as_mut() else {
            return Response::for_request(req, 488, None);
        };
        if req.body.is_empty() {
            if req.method == Method::Invite {
                r.headers.push("Content-Type", "application/sdp");
                r.body = local.reoffer();
                self.awaiting_ack_answer = true;
            }
            return r;
        }
        match local.answer_offer(&req.body) {
            Ok((answer, media)) => {
                r.headers.push("Content-Type", "application/sdp");
                r.body = answer;
                self.events.push_back(CallEvent::MediaUpdated(media));
                r
            }
            Err(e) => {
                tracing::info!(call_id = %self.call_id, error = %e, "new offer refused");
                let mut r = Response::for_request(req, 488, None);
                r.headers
                    .push_fmt("Warning", format_args!("304 callout \"{e}\""));
                r
            }
        }
    }
}
