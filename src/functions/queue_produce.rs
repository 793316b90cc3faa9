//! queue_produce: put a message on a queue, MicroFaaS's `upload_kafka` on an MQTT broker
//! (PUBLISH at QoS 1, done when the broker acknowledged it).
//!
//! Input `{"message": string, "topic"?: string}` (original: a "Hello World" message, topic
//! `SampleTopic`); the topic defaults to the service's `topic`, else `SampleTopic`. Needs the
//! `queue` service. Output `{"topic", "bytes"}`.

use serde_json::{Value, json};

use super::clients::{Ctx, fail, mqtt::Mqtt, random_bytes};
use super::{FunctionError, hex, rng::SplitMix64};

/// The original's topic.
pub const DEFAULT_TOPIC: &str = "SampleTopic";

pub fn run(input: &Value, ctx: &Ctx<'_>) -> Result<Value, FunctionError> {
    let message = super::get_str(input, "message")?
        .ok_or_else(|| FunctionError::BadInput("\"message\" is required".into()))?;
    let svc = ctx.service("queue")?;
    let topic = topic(input, svc)?;
    let id = format!("microfaas-{}", hex(&random_bytes(6)));
    let mut q = Mqtt::open(ctx.connect(svc)?, svc, &id, false).map_err(|e| fail(svc, e))?;
    q.publish(&topic, message.as_bytes())
        .map_err(|e| fail(svc, e))?;
    q.disconnect();
    Ok(json!({"topic": topic, "bytes": message.len()}))
}

/// The input's `topic`, else the service's, else the original's.
pub(crate) fn topic(
    input: &Value,
    svc: &crate::protocol::ServiceBinding,
) -> Result<String, FunctionError> {
    let t = super::get_str(input, "topic")?
        .or(svc.target.as_deref())
        .unwrap_or(DEFAULT_TOPIC);
    if t.is_empty() || t.contains(['+', '#']) || t.len() > 1024 {
        return Err(FunctionError::BadInput(format!(
            "topic {t:?} must be a non-empty name without wildcards"
        )));
    }
    Ok(t.to_string())
}

pub fn input(rng: &mut SplitMix64) -> Value {
    // As the original: "Hello World " joined between ten random digits.
    let digits: Vec<String> = (0..10).map(|_| rng.below(10).to_string()).collect();
    json!({"message": digits.join("Hello World ")})
}
