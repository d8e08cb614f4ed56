//! The `Ready`, `Progressing` and `Degraded` conditions, computed by a pure
//! function from what one reconcile observed. A condition whose status does
//! not change keeps its `lastTransitionTime`, so watchers can tell how long a
//! state has lasted.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::ComponentStatus;

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// What a reconcile found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The spec is invalid; nothing was applied.
    InvalidSpec { message: String },
    /// The spec is valid but cannot be honoured; nothing was destroyed.
    Unsatisfiable { reason: String, message: String },
    /// Everything was applied; the components report these replicas.
    Applied { components: Vec<ComponentStatus> },
}

fn condition(type_: &str, status: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: None,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    }
}

/// Whether a component has all its replicas ready on the latest template.
pub fn component_ready(c: &ComponentStatus) -> bool {
    c.updated && c.ready_replicas >= c.desired_replicas
}

/// The three conditions for `observation`, keeping the transition times of
/// `previous` conditions whose status is unchanged.
pub fn compute(
    previous: &[Condition],
    observation: &Observation,
    generation: Option<i64>,
    now: Time,
) -> Vec<Condition> {
    let fresh = match observation {
        Observation::InvalidSpec { message } => vec![
            condition(READY, false, "InvalidSpec", message.clone()),
            condition(
                PROGRESSING,
                false,
                "InvalidSpec",
                "waiting for the spec to change".to_owned(),
            ),
            condition(DEGRADED, true, "InvalidSpec", message.clone()),
        ],
        Observation::Unsatisfiable { reason, message } => vec![
            condition(READY, false, reason, message.clone()),
            condition(PROGRESSING, false, reason, "nothing was changed".to_owned()),
            condition(DEGRADED, true, reason, message.clone()),
        ],
        Observation::Applied { components } => {
            let waiting: Vec<&str> = components
                .iter()
                .filter(|c| !component_ready(c))
                .map(|c| c.name.as_str())
                .collect();
            if waiting.is_empty() {
                vec![
                    condition(
                        READY,
                        true,
                        "AllComponentsReady",
                        format!("{} components ready", components.len()),
                    ),
                    condition(
                        PROGRESSING,
                        false,
                        "RolloutComplete",
                        "every component runs the desired spec".to_owned(),
                    ),
                    condition(DEGRADED, false, "AsExpected", "no problem found".to_owned()),
                ]
            } else {
                let message = format!("waiting for {}", waiting.join(", "));
                vec![
                    condition(READY, false, "ComponentsNotReady", message.clone()),
                    condition(PROGRESSING, true, "RollingOut", message),
                    condition(DEGRADED, false, "AsExpected", "no problem found".to_owned()),
                ]
            }
        }
    };
    fresh
        .into_iter()
        .map(|mut c| {
            c.observed_generation = generation;
            c.last_transition_time = previous
                .iter()
                .find(|p| p.type_ == c.type_ && p.status == c.status)
                .map_or_else(|| now.clone(), |p| p.last_transition_time.clone());
            c
        })
        .collect()
}

/// The status of condition `type_`, if present.
pub fn status_of<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a str> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("valid"))
    }

    fn component(name: &str, desired: i32, ready: i32) -> ComponentStatus {
        ComponentStatus {
            name: name.to_owned(),
            kind: "Deployment".to_owned(),
            desired_replicas: desired,
            ready_replicas: ready,
            updated: true,
        }
    }

    fn get<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
        conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("present")
    }

    #[test]
    fn all_ready_is_ready_and_not_progressing() {
        let obs = Observation::Applied {
            components: vec![component("gateway", 2, 2)],
        };
        let c = compute(&[], &obs, Some(3), at(10));
        assert_eq!(get(&c, READY).status, "True");
        assert_eq!(get(&c, PROGRESSING).status, "False");
        assert_eq!(get(&c, DEGRADED).status, "False");
        assert!(c.iter().all(|c| c.observed_generation == Some(3)));
        assert!(c.iter().all(|c| c.last_transition_time == at(10)));
    }

    #[test]
    fn waiting_components_are_named() {
        let obs = Observation::Applied {
            components: vec![component("gateway", 1, 1), component("auth", 2, 1)],
        };
        let c = compute(&[], &obs, None, at(10));
        assert_eq!(get(&c, READY).status, "False");
        assert_eq!(get(&c, PROGRESSING).status, "True");
        assert_eq!(get(&c, PROGRESSING).message, "waiting for auth");
    }

    #[test]
    fn not_updated_component_is_not_ready() {
        let mut stale = component("auth", 1, 1);
        stale.updated = false;
        assert!(!component_ready(&stale));
    }

    #[test]
    fn transition_time_is_kept_while_status_is_unchanged() {
        let waiting = Observation::Applied {
            components: vec![component("auth", 1, 0)],
        };
        let first = compute(&[], &waiting, Some(1), at(10));
        let again = compute(&first, &waiting, Some(1), at(20));
        assert_eq!(get(&again, READY).last_transition_time, at(10));

        let ready = Observation::Applied {
            components: vec![component("auth", 1, 1)],
        };
        let after = compute(&again, &ready, Some(1), at(30));
        assert_eq!(get(&after, READY).last_transition_time, at(30));
        assert_eq!(get(&after, PROGRESSING).last_transition_time, at(30));
        // Degraded stayed False throughout.
        assert_eq!(get(&after, DEGRADED).last_transition_time, at(10));
    }

    #[test]
    fn invalid_and_unsatisfiable_specs_are_degraded() {
        let invalid = Observation::InvalidSpec {
            message: "bad".into(),
        };
        let c = compute(&[], &invalid, Some(2), at(1));
        assert_eq!(get(&c, DEGRADED).status, "True");
        assert_eq!(get(&c, DEGRADED).reason, "InvalidSpec");
        assert_eq!(get(&c, READY).status, "False");

        let missing = Observation::Unsatisfiable {
            reason: "SecretMissing".into(),
            message: "secret x does not exist".into(),
        };
        let c = compute(&c, &missing, Some(2), at(5));
        assert_eq!(get(&c, DEGRADED).reason, "SecretMissing");
        // Still Degraded=True: the transition time is the first one.
        assert_eq!(get(&c, DEGRADED).last_transition_time, at(1));
    }
}
