//! 2xx responses from forks we do not keep (RFC 3261 13.2.2.4): a proxy
//! that rings several devices may see more than one answer. The first 2xx
//! makes the call; each other one is ACKed on its own dialog (its To tag)
//! and then ended with a BYE, so no phone is left off-hook in silence.

use std::net::SocketAddr;
use std::time::Instant;

use super::transaction::{NonInviteClient, TxOutput};
use super::Transmit;

/// One extra answered fork being torn down.
#[derive(Debug)]
pub struct ForkedDialog {
    pub remote_tag: String,
    /// Our ACK for its 2xx, sent again for each retransmission.
    pub ack: Vec<u8>,
    pub dest: SocketAddr,
    pub bye: NonInviteClient,
    pub bye_branch: String,
}

impl ForkedDialog {
    /// Queue the BYE's (re)transmissions; true once it is answered or gave up.
    pub fn drain(&mut self, out: &mut std::collections::VecDeque<Transmit>) -> bool {
        while let Some(bytes) = self.bye.poll_transmit() {
            out.push_back(Transmit {
                dest: self.dest,
                bytes,
            });
        }
        let mut done = false;
        while let Some(o) = self.bye.poll_output() {
            done |= matches!(o, TxOutput::Timeout)
                || matches!(o, TxOutput::Response(r) if r.code >= 200);
        }
        done || self.bye.is_terminated()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.bye.poll_timeout()
    }
}
