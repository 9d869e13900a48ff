//! `--target Kind/name`: a plan restricted to some resources and what they depend on.

use std::collections::{BTreeMap, BTreeSet};

use super::{Action, Change};
use crate::resource::Address;

/// A `--target` that names nothing this plan could change.
#[derive(Debug, thiserror::Error)]
#[error(
    "--target {address}: no such resource in the manifest{}; {}",
    if *.prune { " nor a managed live object to prune" } else { "" },
    hint(.suggestions)
)]
pub struct UnknownTarget {
    pub address: Address,
    /// Planned addresses closest to the one given, closest first.
    pub suggestions: Vec<Address>,
    pub prune: bool,
}

fn hint(suggestions: &[Address]) -> String {
    match suggestions {
        [] => "targets are Kind/name as `ofctl plan` prints them; run it without --target to list them".into(),
        [one] => format!("did you mean {one}?"),
        many => format!(
            "did you mean one of {}?",
            many.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Planned addresses close to `wanted`, closest first: kind and name each within a third of
/// their length in edits (a kind at least one), ignoring case. Typos and case slips are
/// caught; short names are not matched to every other short name.
fn close_to(wanted: &Address, candidates: &[&Address]) -> Vec<Address> {
    let distance = |a: &str, b: &str, minimum: usize| {
        let d = strsim::damerau_levenshtein(&a.to_lowercase(), &b.to_lowercase());
        (d <= (a.chars().count() / 3).max(minimum)).then_some(d)
    };
    let mut scored: Vec<(usize, &Address)> = candidates
        .iter()
        .filter_map(|a| {
            let kind = distance(&wanted.kind, &a.kind, 1)?;
            let name = distance(&wanted.name, &a.name, 0)?;
            Some((kind + name, *a))
        })
        .collect();
    scored.sort();
    scored.into_iter().take(3).map(|(_, a)| a.clone()).collect()
}

/// Keeps the changes of `targets` and, transitively, of everything they depend on. A delete
/// (`--prune`) is kept only when it is targeted itself: pruning never reaches past the targets.
/// `prune` only words the error for a target that names nothing.
pub fn select(
    changes: Vec<Change>,
    targets: &[Address],
    prune: bool,
) -> Result<Vec<Change>, UnknownTarget> {
    let by_address: BTreeMap<&Address, &Change> = changes.iter().map(|c| (&c.address, c)).collect();
    for t in targets {
        if !by_address.contains_key(t) {
            let known: Vec<&Address> = by_address.keys().copied().collect();
            return Err(UnknownTarget {
                address: t.clone(),
                suggestions: close_to(t, &known),
                prune,
            });
        }
    }
    let mut keep: BTreeSet<Address> = BTreeSet::new();
    let mut queue: Vec<&Address> = targets.iter().collect();
    while let Some(address) = queue.pop() {
        let Some(change) = by_address.get(address) else {
            continue;
        };
        let targeted = targets.contains(address);
        if (change.action == Action::Delete && !targeted) || !keep.insert(address.clone()) {
            continue;
        }
        if change.action != Action::Delete {
            queue.extend(change.depends_on.iter());
        }
    }
    Ok(changes
        .into_iter()
        .filter(|c| keep.contains(&c.address))
        .collect())
}

/// The addresses of `changes` that are there as dependencies of the targets, not as targets.
pub fn dependencies<'a>(changes: &'a [Change], targets: &[Address]) -> Vec<&'a Address> {
    changes
        .iter()
        .map(|c| &c.address)
        .filter(|a| !targets.contains(a))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Risk;

    fn change(address: &str, action: Action, depends_on: &[&str]) -> Change {
        Change {
            address: Address::parse(address).unwrap(),
            action,
            risk: Risk::Safe,
            reasons: vec![],
            notes: vec![],
            blocked: None,
            force: false,
            diff: vec![],
            depends_on: depends_on
                .iter()
                .map(|a| Address::parse(a).unwrap())
                .collect(),
            desired_digest: None,
            live_fingerprint: None,
            source: None,
        }
    }

    fn addresses(changes: &[Change]) -> Vec<String> {
        changes.iter().map(|c| c.address.to_string()).collect()
    }

    #[test]
    fn pulls_in_dependencies_transitively_but_never_an_untargeted_delete() {
        let changes = vec![
            change("K/a", Action::Update, &["K/b"]),
            change("K/b", Action::Noop, &["K/c", "K/gone"]),
            change("K/c", Action::Create, &[]),
            change("K/d", Action::Create, &[]),
            change("K/gone", Action::Delete, &[]),
            change("K/old", Action::Delete, &["K/d"]),
        ];
        let picked = select(changes.clone(), &[Address::new("K", "a")], true).unwrap();
        assert_eq!(addresses(&picked), ["K/a", "K/b", "K/c"]);
        let picked = select(changes, &[Address::new("K", "old")], true).unwrap();
        assert_eq!(addresses(&picked), ["K/old"]);
    }

    #[test]
    fn an_unknown_target_names_the_closest_addresses() {
        let changes = vec![
            change("NatsStream/ORDERS", Action::Create, &[]),
            change("NatsStream/EVENTS", Action::Create, &[]),
        ];
        let err = select(
            changes.clone(),
            &[Address::new("NatsStream", "ORDRS")],
            false,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--target NatsStream/ORDRS: no such resource in the manifest; did you mean NatsStream/ORDERS?"
        );
        let err = select(changes, &[Address::new("KafkaTopic", "x")], true).unwrap_err();
        assert!(err.suggestions.is_empty(), "{err}");
        assert!(
            err.to_string()
                .contains("nor a managed live object to prune; targets are Kind/name"),
            "{err}"
        );
    }
}
