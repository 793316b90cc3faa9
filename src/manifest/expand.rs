//! WorkerSet expansion: `replicas` identical workers named `SET-0 .. SET-(n-1)`, owned by the set.

use super::resource::{Resource, Spec};
use super::types::Metadata;

/// Label put on every worker a set makes, so selectors and `get -l` can find them.
pub const WORKERSET_LABEL: &str = "microfaas.dev/workerset";

/// The workers a set declares. Invalid replica counts give none (validation reports them).
pub fn expand(set: &Resource) -> Vec<Resource> {
    let Spec::WorkerSet(spec) = &set.spec else {
        return Vec::new();
    };
    let n = usize::try_from(spec.replicas).unwrap_or(0).min(10_000);
    (0..n)
        .map(|i| {
            let mut labels = spec.template.metadata.labels.clone();
            labels.insert(WORKERSET_LABEL.to_string(), set.name().to_string());
            Resource {
                metadata: Metadata {
                    name: format!("{}-{i}", set.name()),
                    labels,
                    annotations: Default::default(),
                },
                spec: Spec::Worker(spec.template.spec.clone()),
                origin: set.origin.clone(),
                node: set.node.clone(),
                owner: Some(set.name().to_string()),
            }
        })
        .collect()
}

/// Appends the workers of every set in `resources`.
pub fn expand_all(resources: &mut Vec<Resource>) {
    let made: Vec<Resource> = resources.iter().flat_map(expand).collect();
    resources.extend(made);
}
