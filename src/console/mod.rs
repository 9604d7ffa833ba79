//! The operator console and the customers' portal, served under
//! `/console` by the API's own listener: HTML pages written here, one
//! small script and one style sheet built into the binary
//! (`assets/`), plots drawn as SVG by the server (`svg.rs`). The pages
//! read the same JSON API as any client, authenticated by the session
//! cookie (`session.rs`), so the API's contract binding and scopes hold
//! on the screens too.

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::broadcast;

mod analytics_page;
pub mod audio;
pub mod i18n;
mod live;
mod monthly_page;
mod pages;
pub mod reach;
pub mod session;
pub mod svg;

/// The console's state inside the service.
#[derive(Debug)]
pub struct Console {
    pub sessions: session::Sessions,
    pub live: Live,
}

impl Default for Console {
    fn default() -> Self {
        Console {
            sessions: session::Sessions::default(),
            live: Live::new(),
        }
    }
}

/// The runner's events as they happen, for the board's Server-Sent
/// Events. A slow browser misses events (it then reloads the board),
/// it never holds a call back.
#[derive(Debug)]
pub struct Live {
    tx: broadcast::Sender<Arc<Value>>,
}

impl Live {
    fn new() -> Live {
        Live {
            tx: broadcast::channel(1024).0,
        }
    }

    /// One runner event of a notification.
    pub fn publish(&self, notification: &str, event: &Value) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let mut v = event.clone();
        v["notification"] = json!(notification);
        v["ts_ms"] = json!(crate::runner::now_ms());
        let _ = self.tx.send(Arc::new(v));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Value>> {
        self.tx.subscribe()
    }
}

type Shared = axum::extract::State<Arc<crate::service::Service>>;

/// The console's routes (merged into the API router).
pub fn routes() -> Router<Arc<crate::service::Service>> {
    Router::new()
        .route("/console", get(pages::board))
        .route("/console/", get(pages::board))
        .route("/console/login", get(pages::login))
        .route(
            "/console/session",
            post(pages::sign_in).delete(pages::sign_out),
        )
        .route("/console/logout", post(pages::sign_out))
        .route("/console/incidents/{id}", get(pages::incident))
        .route("/console/notifications/{id}", get(pages::notification))
        .route("/console/contracts", get(pages::contracts))
        .route("/console/analytics", get(pages::analytics))
        .route("/console/quality", get(pages::quality))
        .route("/console/reports/monthly", get(monthly_page::monthly))
        .route("/console/api/board", get(live::board))
        .route("/console/events", get(live::events))
        .route("/console/assets/console.js", get(pages::script))
        .route("/console/assets/console.css", get(pages::style))
}
