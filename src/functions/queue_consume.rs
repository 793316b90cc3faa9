//! queue_consume: take the messages waiting for a consumer, MicroFaaS's `read_kafka` on an
//! MQTT broker. The consumer is a persistent session named by `consumerID`: the broker keeps
//! what was published on the topic since the consumer first subscribed, and each call takes
//! (and acknowledges) what is waiting, like a Kafka consumer group's fetch.
//!
//! Input `{"consumerID": string, "topic"?: string, "max"?: n (100), "waitMs"?: n (200)}`; the
//! call ends when `max` messages came or none came for `waitMs`. Needs the `queue` service.
//! Output `{"consumer", "topic", "count", "messages": [text, ...]}`.

use std::time::Duration;

use serde_json::{Value, json};

use super::clients::{Ctx, fail, mqtt::Mqtt};
use super::{FunctionError, get_u64, rng::SplitMix64};

pub fn run(input: &Value, ctx: &Ctx<'_>) -> Result<Value, FunctionError> {
    let consumer = super::get_key(input, "consumerID")?;
    let max = get_u64(input, "max", Some(100), 10_000)? as usize;
    let wait = Duration::from_millis(get_u64(input, "waitMs", Some(200), 60_000)?);
    let svc = ctx.service("queue")?;
    let topic = super::queue_produce::topic(input, svc)?;
    let mut q = Mqtt::open(ctx.connect(svc)?, svc, &consumer, true).map_err(|e| fail(svc, e))?;
    let mut got = Vec::new();
    q.subscribe(&topic, &mut got).map_err(|e| fail(svc, e))?;
    q.drain(wait, max, &mut got).map_err(|e| fail(svc, e))?;
    q.disconnect();
    let messages: Vec<String> = got
        .iter()
        .map(|d| String::from_utf8_lossy(&d.payload).into_owned())
        .collect();
    Ok(json!({"consumer": consumer, "topic": topic, "count": messages.len(), "messages": messages}))
}

pub fn input(_rng: &mut SplitMix64) -> Value {
    // The original's one consumer.
    json!({"consumerID": "br1-f2b841dd-1c1a-42b6-9671-0538cd17f138"})
}
