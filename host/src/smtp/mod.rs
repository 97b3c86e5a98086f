//! The SMTP front end: the dialogue as a pure state machine ([`session`]: bytes in, replies and
//! steps out), its replies as data ([`reply`]), and the driver that runs a session over a
//! socket and performs its steps ([`connection`]); the PROXY protocol header a load balancer
//! sends before the dialogue ([`proxy`]).
//!
//! May use: the shared vocabulary, the configuration, TLS streams, SMTP AUTH, the inbound
//! core (every decision about a transaction is made there), and the admin reports. The
//! session itself does no I/O and uses none of the runtime.

pub mod connection;
pub mod proxy;
pub mod reply;
pub mod session;
