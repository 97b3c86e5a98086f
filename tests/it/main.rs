//! Sluice's integration tests: one binary, one module per capability.
#![allow(clippy::unwrap_used)]

mod authentication;
mod authoring;
mod bounce_template;
mod cache;
mod capabilities;
mod client;
mod console;
mod crash;
mod decision_log;
mod delivery;
mod fleet;
mod hardening;
mod hooks;
mod hostile;
mod inbound;
mod languages;
mod learning;
mod lifecycle;
mod loading;
mod message_view;
mod milter;
mod operations;
mod package;
mod peers;
mod queue_cli;
mod recipients;
mod replay_cli;
mod routes;
mod scheduling;
mod score_actions;
mod serve_cli;
mod signing;
mod smtp;
mod spam_score;
mod webhook;
