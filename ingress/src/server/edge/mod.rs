//! The ingress's edge: the accept loop of every listener (plain, self-signed TLS, ACME),
//! limits on connections per client address, header and idle timeouts per connection,
//! and the request-body middleware (size, read timeout, draining before early answers).
//! Settings: `[gateway]` `header_read_timeout`, `body_read_timeout`, `idle_timeout`,
//! `max_connections_per_address`, `max_body_bytes`.

pub mod body;
mod conn;
mod listener;
mod per_address;

use std::sync::Arc;
use std::time::Duration;

use dayshift_config::settings::GatewayConfig;

use super::state::SharedState;

pub use listener::{Tls, serve};

/// The connection-level settings of a listener.
#[derive(Debug, Clone, Copy)]
pub struct EdgeSettings {
    /// Time for the TLS handshake, for a new connection's first request head (from the
    /// end of the handshake), and for a later HTTP/1 request head from its first byte.
    pub header_read: Duration,
    /// Time a connection may stay open with no request in progress.
    pub idle: Duration,
    /// Open connections allowed from one client IP address.
    pub max_per_address: usize,
    /// Time in-flight requests get to finish once shutdown starts.
    pub grace: Duration,
}

impl EdgeSettings {
    /// The settings of `[gateway]`.
    pub fn from_config(g: &GatewayConfig) -> EdgeSettings {
        EdgeSettings {
            header_read: Duration::from_secs(g.header_read_timeout_secs),
            idle: Duration::from_secs(g.idle_timeout_secs),
            max_per_address: usize::try_from(g.max_connections_per_address).unwrap_or(usize::MAX),
            grace: Duration::from_secs(30),
        }
    }
}

/// What the edge tells the metrics.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    /// A connection refused at accept, with the reason.
    Refused(&'static str),
    /// A connection closed by the edge, with the reason.
    Closed(&'static str),
    /// A connection opened.
    Opened,
    /// A connection ended.
    Ended,
}

/// Where a listener reports its [`Event`]s.
pub type Report = Arc<dyn Fn(Event) + Send + Sync>;

/// Reports to the server's Prometheus metrics.
pub fn report_to(state: SharedState) -> Report {
    Arc::new(move |e| match e {
        Event::Refused(r) => state.metrics.connection_refused(r),
        Event::Closed(r) => state.metrics.connection_closed(r),
        Event::Opened => state.metrics.connections_open(1),
        Event::Ended => state.metrics.connections_open(-1),
    })
}
