//! The delivery-time hooks: `on-delivery` after each attempt and `render-bounce` for a
//! bounce's text, each plugin in a fresh instance of its own on the plugin thread. Their
//! failures are logged and never change a delivery.

use std::sync::Arc;
use std::time::Instant;

use crate::envelope::Decision;
use crate::plugin::bindings::types::{BounceRequest, BounceText, DeliveryReport};
use crate::plugin::{Hook, LoadedPlugin, executor};

use super::Pipeline;
use super::calls::{CallRecord, record};
use super::run::instance;

impl Pipeline {
    /// Calls `on-delivery` of every plugin that wants it, each in a fresh instance, on the
    /// plugin thread. Failures are logged and never affect delivery.
    pub async fn on_delivery(&self, report: &DeliveryReport) -> Vec<CallRecord> {
        if !self.plugins.iter().any(|p| p.wants(Hook::OnDelivery)) {
            return Vec::new();
        }
        let (plugins, report) = (self.plugins.clone(), report.clone());
        executor::run(async move { on_delivery(&plugins, &report).await }).await
    }

    /// Asks the `render-bounce` plugins, in order, for a bounce text; the first that gives one
    /// wins. `None` means the host's default text. The plugins run on the plugin thread.
    pub async fn render_bounce(
        &self,
        request: &BounceRequest,
    ) -> (Option<BounceText>, Vec<CallRecord>) {
        if !self.plugins.iter().any(|p| p.wants(Hook::RenderBounce)) {
            return (None, Vec::new());
        }
        let (plugins, request) = (self.plugins.clone(), request.clone());
        executor::run(async move { render_bounce(&plugins, &request).await }).await
    }
}

/// [`Pipeline::on_delivery`], on the plugin thread.
async fn on_delivery(plugins: &[Arc<LoadedPlugin>], report: &DeliveryReport) -> Vec<CallRecord> {
    let mut calls = Vec::new();
    for p in plugins
        .iter()
        .filter(|p| p.wants(Hook::OnDelivery) && p.scope.recipient(&report.recipient))
    {
        let started = Instant::now();
        let mut slot = None;
        let r = match instance(&mut slot, p, None, &None, None).await {
            Ok(i) => i.on_delivery(report).await,
            Err(f) => Err(f),
        };
        let failure = r.err();
        calls.push(record(
            Hook::OnDelivery,
            p,
            &mut slot,
            Decision::Continue,
            failure,
            started,
            (&report.queue_id, None),
        ));
    }
    calls
}

/// [`Pipeline::render_bounce`], on the plugin thread.
async fn render_bounce(
    plugins: &[Arc<LoadedPlugin>],
    request: &BounceRequest,
) -> (Option<BounceText>, Vec<CallRecord>) {
    let mut calls = Vec::new();
    for p in plugins.iter().filter(|p| {
        p.wants(Hook::RenderBounce)
            && p.scope
                .any_recipient(request.failures.iter().map(|f| f.address.as_str()))
    }) {
        let started = Instant::now();
        let mut slot = None;
        let r = match instance(&mut slot, p, None, &None, None).await {
            Ok(i) => i.render_bounce(request).await,
            Err(f) => Err(f),
        };
        match r {
            Ok(text) => {
                calls.push(record(
                    Hook::RenderBounce,
                    p,
                    &mut slot,
                    Decision::Continue,
                    None,
                    started,
                    (&request.queue_id, None),
                ));
                if text.is_some() {
                    return (text, calls);
                }
            }
            Err(f) => calls.push(record(
                Hook::RenderBounce,
                p,
                &mut slot,
                Decision::Continue,
                Some(f),
                started,
                (&request.queue_id, None),
            )),
        }
    }
    (None, calls)
}
