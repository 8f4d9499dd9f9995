//! State schemas: what state an operator declares, stored with its checkpoints so a restore can
//! refuse state that no longer matches.
//!
//! An operator derived with `#[operator]` describes every state field ([`StateSchema`]): the
//! Rust field, the name its state is registered under, the kind (value, list, map, ...; operator
//! list, union list, broadcast), whether it has a TTL (a TTL changes how values are stored), and
//! the **serialized layout** of what it stores. The layout is not the type's name: it is the
//! structure serde sees, traced with `serde-reflection` (field names and order, enum variants,
//! primitive widths), so adding a field to a struct held in `ValueState<Reading>` is a change even
//! though the type is still called `Reading`, while renaming a type alias is not. Types the
//! tracer cannot follow (self-describing formats such as `deserialize_any`) fall back to their
//! type name.
//!
//! The schema is stored in every checkpoint and savepoint as the operator's broadcast list state
//! [`SCHEMA_STATE`]. On restore, [`StateSchema::check_restore`] compares the stored schema with
//! the operator's current one before any state is read, and names the field and the change, so
//! a changed field is an error at start, never a garbled value later.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The operator list state under which an operator's [`StateSchema`] is stored.
pub const SCHEMA_STATE: &str = "_schema";

/// What kind of state a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum StateFieldKind {
    /// Keyed [`ValueState`](super::ValueState).
    Value,
    /// Keyed [`ListState`](super::ListState).
    List,
    /// Keyed [`MapState`](super::MapState).
    Map,
    /// Keyed [`ReducingState`](super::ReducingState).
    Reducing,
    /// Keyed [`AggregatingState`](super::AggregatingState).
    Aggregating,
    /// Operator list state, split evenly on rescaling ([`OperatorList`](super::OperatorList)).
    OperatorList,
    /// Operator union list state ([`UnionList`](super::UnionList)).
    UnionList,
    /// Broadcast map state ([`MapStateDescriptor`](crate::api::MapStateDescriptor)).
    Broadcast,
}

impl StateFieldKind {
    /// Whether the state is keyed (scoped to the current key).
    pub fn is_keyed(self) -> bool {
        matches!(
            self,
            Self::Value | Self::List | Self::Map | Self::Reducing | Self::Aggregating
        )
    }
}

impl std::fmt::Display for StateFieldKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Self::Value => "keyed value state",
            Self::List => "keyed list state",
            Self::Map => "keyed map state",
            Self::Reducing => "keyed reducing state",
            Self::Aggregating => "keyed aggregating state",
            Self::OperatorList => "operator list state",
            Self::UnionList => "operator union list state",
            Self::Broadcast => "broadcast state",
        };
        f.write_str(name)
    }
}

/// One state field of an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFieldSchema {
    /// The Rust field.
    pub field: String,
    /// The name the state is registered (and checkpointed) under.
    pub state: String,
    /// Its kind.
    pub kind: StateFieldKind,
    /// The field's type as written in the source (for messages; not compared).
    pub type_text: String,
    /// Whether values carry a TTL timestamp.
    pub ttl: bool,
    /// The serialized layout of what the state stores (compared).
    pub layout: String,
}

/// The state fields of an operator, in declaration order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSchema {
    /// The fields.
    pub fields: Vec<StateFieldSchema>,
}

/// A state handle type that `#[operator]` fields may have: it knows its kind and the layout of
/// what it stores.
pub trait StateField {
    /// The kind of state.
    const KIND: StateFieldKind;
    /// The registered name.
    fn state_name(&self) -> &str;
    /// Whether the state has a TTL.
    fn has_ttl(&self) -> bool {
        false
    }
    /// The serialized layout of the stored values (see [`layout_of`]).
    fn layout() -> String;
}

impl StateSchema {
    /// No state fields.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Adds field `field` (its type written `type_text`) holding `handle`.
    #[must_use]
    pub fn with<H: StateField>(mut self, field: &str, type_text: &str, handle: &H) -> Self {
        self.fields.push(StateFieldSchema {
            field: field.to_string(),
            state: handle.state_name().to_string(),
            kind: H::KIND,
            type_text: type_text.to_string(),
            ttl: handle.has_ttl(),
            layout: H::layout(),
        });
        self
    }

    /// Whether any field is keyed state.
    pub fn has_keyed_state(&self) -> bool {
        self.fields.iter().any(|f| f.kind.is_keyed())
    }

    /// Checks that state stored under `stored` can be restored into an operator declaring
    /// `self`. `operator` names the operator in messages. A field only in `stored` is an error
    /// unless `allow_removed` (`allow_non_restored_state`); a field only in `self` starts empty.
    ///
    /// # Errors
    ///
    /// One message naming every incompatible field and what changed.
    pub fn check_restore(
        &self,
        stored: &Self,
        operator: &str,
        allow_removed: bool,
    ) -> Result<(), String> {
        let mut problems = Vec::new();
        for old in &stored.fields {
            let Some(new) = self.fields.iter().find(|f| f.state == old.state) else {
                if !allow_removed {
                    problems.push(format!(
                        "state field `{}` (state \"{}\", {}) is in the checkpoint but the \
                         operator no longer declares it; restore with \
                         allow_non_restored_state to drop it",
                        old.field, old.state, old.kind
                    ));
                }
                continue;
            };
            let field = if new.field == old.field {
                format!("state field `{}` (state \"{}\")", new.field, new.state)
            } else {
                format!(
                    "state field `{}` (state \"{}\", field `{}` in the checkpoint)",
                    new.field, new.state, old.field
                )
            };
            if new.kind != old.kind {
                problems.push(format!(
                    "{field} changed kind: it was {} ({}) and is {} ({}) now",
                    old.kind, old.type_text, new.kind, new.type_text
                ));
            } else if new.ttl != old.ttl {
                let (was, is) = if old.ttl {
                    ("had a TTL", "has none")
                } else {
                    ("had no TTL", "has one")
                };
                problems.push(format!(
                    "{field} {was} in the checkpoint and {is} now, which changes how its \
                     values are stored"
                ));
            } else if new.layout != old.layout {
                let types = if new.type_text == old.type_text {
                    format!("`{}` is still its type, but", new.type_text)
                } else {
                    format!(
                        "its type changed from `{}` to `{}`, and",
                        old.type_text, new.type_text
                    )
                };
                problems.push(format!(
                    "{field}: {types} the stored layout changed from {} to {}; the stored \
                     values cannot be read as the new type (keep the old layout, or rename the \
                     state with #[state(name = \"...\")] and restore with \
                     allow_non_restored_state)",
                    old.layout, new.layout
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "cannot restore operator '{operator}': {}",
                problems.join("; ")
            ))
        }
    }
}

/// The serialized layout of `T`: its serde structure traced with `serde-reflection`, written as
/// text, or `type <name>` when the tracer cannot follow the type.
pub fn layout_of<T: DeserializeOwned + 'static>() -> String {
    // Tracing takes a while (many passes); a type's layout never changes within a process.
    static CACHE: std::sync::OnceLock<
        std::sync::Mutex<std::collections::BTreeMap<std::any::TypeId, String>>,
    > = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let id = std::any::TypeId::of::<T>();
    if let Some(layout) = cache.lock().ok().and_then(|c| c.get(&id).cloned()) {
        return layout;
    }
    let layout = trace_layout::<T>();
    if let Ok(mut cache) = cache.lock() {
        cache.insert(id, layout.clone());
    }
    layout
}

fn trace_layout<T: DeserializeOwned>() -> String {
    use serde_reflection::{ContainerFormat, Format, Registry, Samples, Tracer, TracerConfig};
    // The tracer visits one variant of an enum per pass until told the enum may go on; nested
    // enums are only known by name after a pass, so each round re-traces with the enum names
    // the previous round found, until no new enum appears.
    fn round<T: DeserializeOwned>(enums: &[String]) -> Option<(Format, Registry)> {
        let mut tracer = Tracer::new(TracerConfig::default());
        let samples = Samples::new();
        let mut top = None;
        for _ in 0..PASSES {
            top = Some(tracer.trace_type_once::<T>(&samples).ok()?.0);
            for name in enums {
                tracer.check_incomplete_enum(name);
            }
        }
        Some((top?, tracer.registry_unchecked()))
    }
    const PASSES: usize = 32;
    let enum_names = |registry: &Registry| -> Vec<String> {
        registry
            .iter()
            .filter(|(_, format)| matches!(format, ContainerFormat::Enum(_)))
            .map(|(name, _)| name.clone())
            .collect()
    };
    let mut enums = Vec::new();
    let mut traced = None;
    for _ in 0..4 {
        let Some((format, registry)) = round::<T>(&enums) else {
            break;
        };
        let found = enum_names(&registry);
        traced = Some((format, registry));
        if found == enums {
            break;
        }
        enums = found;
    }
    match traced {
        None => format!("type {}", std::any::type_name::<T>()),
        Some((format, registry)) => {
            if registry.is_empty() {
                format!("{format:?}")
            } else {
                let types: Vec<String> = registry
                    .iter()
                    .map(|(name, container)| format!("{name}: {container:?}"))
                    .collect();
                format!("{format:?} where {}", types.join(", "))
            }
        }
    }
}

/// `StateField` for a keyed state handle: `[generics] Handle<..>, Kind, stored type`.
macro_rules! keyed_state_field {
    ([$($generics:tt)*] $handle:ty, $kind:ident, $stored:ty) => {
        impl<$($generics)*> StateField for $handle {
            const KIND: StateFieldKind = StateFieldKind::$kind;
            fn state_name(&self) -> &str {
                self.name()
            }
            fn has_ttl(&self) -> bool {
                self.ttl().is_some()
            }
            fn layout() -> String {
                layout_of::<$stored>()
            }
        }
    };
}

keyed_state_field!([T: DeserializeOwned + 'static] super::ValueState<T>, Value, T);
keyed_state_field!([T: DeserializeOwned + 'static] super::ListState<T>, List, T);
keyed_state_field!(
    [UK: DeserializeOwned + 'static, UV: DeserializeOwned + 'static]
    super::MapState<UK, UV>,
    Map,
    (UK, UV)
);
keyed_state_field!([T: DeserializeOwned + 'static] super::ReducingState<T>, Reducing, T);
keyed_state_field!(
    [IN, ACC: DeserializeOwned + 'static, OUT] super::AggregatingState<IN, ACC, OUT>,
    Aggregating,
    ACC
);

impl<K: DeserializeOwned + 'static, V: DeserializeOwned + 'static> StateField
    for crate::api::MapStateDescriptor<K, V>
{
    const KIND: StateFieldKind = StateFieldKind::Broadcast;
    fn state_name(&self) -> &str {
        self.name()
    }
    fn layout() -> String {
        layout_of::<(K, V)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{ListState, MapState, ValueState};

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct ReadingV1 {
        id: String,
        temperature: f64,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct ReadingV2 {
        id: String,
        temperature: f64,
        unit: char,
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    enum Level {
        Low,
        High(u8),
        Custom { at: i64, inner: Option<Level2> },
    }

    #[derive(Deserialize)]
    #[allow(dead_code)]
    enum Level2 {
        A,
        B,
    }

    #[test]
    fn layouts_see_structure_not_names() {
        assert_eq!(layout_of::<f64>(), "F64");
        assert_ne!(layout_of::<f64>(), layout_of::<f32>());
        assert_ne!(layout_of::<ReadingV1>(), layout_of::<ReadingV2>());
        let enum_layout = layout_of::<Level>();
        for variant in ["Low", "High", "Custom", "Level2", "\"A\"", "\"B\""] {
            assert!(enum_layout.contains(variant), "{variant} in {enum_layout}");
        }
        assert_eq!(enum_layout, layout_of::<Level>(), "deterministic");
    }

    fn schema_with_last(handle: &ValueState<f64>) -> StateSchema {
        StateSchema::empty()
            .with("last", "ValueState<f64>", handle)
            .with("seen", "ListState<u32>", &ListState::<u32>::new("seen"))
    }

    #[test]
    fn the_same_schema_restores() {
        let schema = schema_with_last(&ValueState::new("last"));
        assert_eq!(schema.check_restore(&schema, "op", false), Ok(()));
        assert!(schema.has_keyed_state());
    }

    #[test]
    fn a_changed_type_is_refused_with_the_field_named() {
        let old = schema_with_last(&ValueState::new("last"));
        let new = StateSchema::empty()
            .with(
                "last",
                "ValueState<String>",
                &ValueState::<String>::new("last"),
            )
            .with("seen", "ListState<u32>", &ListState::<u32>::new("seen"));
        let error = new.check_restore(&old, "Alert", false).unwrap_err();
        assert!(error.contains("operator 'Alert'"), "{error}");
        assert!(error.contains("state field `last`"), "{error}");
        assert!(
            error.contains("`ValueState<f64>` to `ValueState<String>`"),
            "{error}"
        );
        assert!(!error.contains("`seen`"), "{error}");
    }

    #[test]
    fn kind_and_ttl_changes_are_refused() {
        let old = schema_with_last(&ValueState::new("last"));
        let kind = StateSchema::empty()
            .with(
                "last",
                "MapState<u8, f64>",
                &MapState::<u8, f64>::new("last"),
            )
            .with("seen", "ListState<u32>", &ListState::<u32>::new("seen"));
        let error = kind.check_restore(&old, "op", false).unwrap_err();
        assert!(error.contains("changed kind"), "{error}");
        let ttl = schema_with_last(
            &ValueState::new("last").with_ttl(crate::state::StateTtlConfig::new(10)),
        );
        let error = ttl.check_restore(&old, "op", false).unwrap_err();
        assert!(error.contains("had no TTL"), "{error}");
    }

    #[test]
    fn removed_fields_need_permission_and_added_fields_start_empty() {
        let old = schema_with_last(&ValueState::new("last"));
        let fewer =
            StateSchema::empty().with("last", "ValueState<f64>", &ValueState::<f64>::new("last"));
        let error = fewer.check_restore(&old, "op", false).unwrap_err();
        assert!(error.contains("`seen`") && error.contains("no longer declares"));
        assert_eq!(fewer.check_restore(&old, "op", true), Ok(()));
        assert_eq!(old.check_restore(&fewer, "op", false), Ok(()));
    }

    #[test]
    fn a_renamed_field_keeps_its_state_by_name() {
        let old = schema_with_last(&ValueState::new("last"));
        let renamed = StateSchema::empty()
            .with(
                "previous",
                "ValueState<f64>",
                &ValueState::<f64>::new("last"),
            )
            .with("seen", "ListState<u32>", &ListState::<u32>::new("seen"));
        assert_eq!(renamed.check_restore(&old, "op", false), Ok(()));
    }
}
