//! WorkerSet expansion: `replicas` identical workers named `SET-0 .. SET-(n-1)`, owned by the set
//! (a tap VM's `address` counts up with the replica: validation checks they fit).

use super::resource::{Resource, Spec};
use super::tapaddr::TapAddress;
use super::types::{Metadata, WorkerSpec};

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
                spec: Spec::Worker(replica_spec(&spec.template.spec, i)),
                origin: set.origin.clone(),
                node: set.node.clone(),
                owner: Some(set.name().to_string()),
            }
        })
        .collect()
}

/// The template's spec for replica `i`: the same, but for a tap VM's address, which must be
/// its own on the shared bridge. A replica whose address would not be a host of the network
/// gets none (validation reports the template); one that does not parse is left for
/// validation to report.
fn replica_spec(template: &WorkerSpec, i: usize) -> WorkerSpec {
    let mut spec = template.clone();
    if let Some(vm) = spec.vm.as_mut()
        && let Some(Ok(addr)) = vm.network.address.as_deref().map(TapAddress::parse)
    {
        vm.network.address = u32::try_from(i)
            .ok()
            .and_then(|i| addr.offset(i))
            .map(|a| a.to_string());
    }
    spec
}

/// Appends the workers of every set in `resources`.
pub fn expand_all(resources: &mut Vec<Resource>) {
    let made: Vec<Resource> = resources.iter().flat_map(expand).collect();
    resources.extend(made);
}
