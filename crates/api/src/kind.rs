//! One model of a kind, built-in or custom, as upstream's per-resource strategy: everything
//! the selector, patch, validation, table and server modules ask about a kind is answered
//! here, from the [`BUILTINS`] table for built-in kinds and from the CRD for custom ones.
//!
//! Adding a built-in kind means a [`Builtin`] variant, its row in [`Builtin::info`], and its
//! typed form in the codec (`codec::TypedKind`); nothing else matches on kinds.

use crate::patch::PatchType;

/// The built-in kinds the server serves with a typed model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    Namespace,
    Secret,
    ConfigMap,
    CustomResourceDefinition,
}

/// Every built-in kind, in the order discovery lists them.
pub const BUILTINS: [Builtin; 4] = [
    Builtin::Namespace,
    Builtin::Secret,
    Builtin::ConfigMap,
    Builtin::CustomResourceDefinition,
];

/// How an object's name is checked (upstream's `ValidateObjectMeta` name functions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 label (namespaces).
    Dns1123Label,
    /// RFC 1123 subdomain (most kinds, custom resources).
    Dns1123Subdomain,
}

/// The kind-specific validation upstream's `Validate<Kind>` adds to the metadata checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rules {
    /// Metadata only.
    MetadataOnly,
    /// Secret data keys, size and type; type and data immutable as upstream.
    Secret,
    /// ConfigMap data and binaryData keys and size; immutable data.
    ConfigMap,
    /// A CRD's name is `<plural>.<group>`.
    CustomResourceDefinition,
}

/// One cell of a built-in kind's Table row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    /// The string at a JSON pointer (`""` when absent).
    String(&'static str),
    /// The number of entries of the maps at these pointers, summed.
    Count(&'static [&'static str]),
    /// The object's age, as kubectl prints it (`5m`).
    Age,
    /// `creationTimestamp` as a date.
    CreatedAt,
}

/// A column of a built-in kind's Table (after `Name`, which every table has).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    /// `string` or `date`.
    pub column_type: &'static str,
    pub description: &'static str,
    pub cell: Cell,
}

/// The kind-specific defaulting the server applies before validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defaults {
    /// None besides the common metadata.
    None,
    /// `stringData` merged into `data`, `type` defaulted to `Opaque`.
    Secret,
    /// The `kubernetes.io/metadata.name` label, the `kubernetes` finalizer, phase `Active`.
    Namespace,
    /// Upstream's CRD defaults (conversion strategy, stored versions...).
    CustomResourceDefinition,
}

/// What deleting an object of a kind also removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cascade {
    /// Only the object.
    None,
    /// Everything in the namespace (the namespace is marked Terminating first).
    NamespaceContents,
    /// Every object of the resource the CRD defines.
    CustomResources,
}

/// The facts of one built-in kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinInfo {
    /// API group (`""` for core).
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    /// The storage key segment(s) after the prefix.
    pub key_segment: &'static str,
    /// Stored as JSON whatever `--storage-media-type` says (upstream: CRDs).
    pub always_json: bool,
    /// Top-level fields (strict decoding refuses others); `None`: not checked.
    pub fields: Option<&'static [&'static str]>,
    /// Normalised through the codec's typed model before it is stored.
    pub typed: bool,
    /// Served with a `status` subresource.
    pub status_subresource: bool,
    /// Field selector labels besides `metadata.name` (and `metadata.namespace` for
    /// namespaced kinds).
    pub extra_selectable_fields: &'static [&'static str],
    /// Whether the kind has a field label conversion of its own (its unsupported-label
    /// error is `field label not supported: X`); otherwise upstream's default conversion
    /// answers.
    pub own_field_conversion: bool,
    pub name_rule: NameRule,
    pub rules: Rules,
    pub defaults: Defaults,
    /// Strategic merge patch is accepted (built-in Go types).
    pub strategic_merge: bool,
    pub columns: &'static [Column],
    pub cascade: Cascade,
}

const AGE: Column = Column {
    name: "Age",
    column_type: "string",
    description: crate::table::CREATION_TIMESTAMP_DESCRIPTION,
    cell: Cell::Age,
};

impl Builtin {
    /// The kind's row of the table.
    pub fn info(self) -> &'static BuiltinInfo {
        match self {
            Builtin::Namespace => &BuiltinInfo {
                group: "",
                version: "v1",
                kind: "Namespace",
                plural: "namespaces",
                singular: "namespace",
                short_names: &["ns"],
                namespaced: false,
                key_segment: "namespaces",
                always_json: false,
                fields: Some(&["apiVersion", "kind", "metadata", "spec", "status"]),
                typed: true,
                status_subresource: true,
                extra_selectable_fields: &["status.phase"],
                own_field_conversion: true,
                name_rule: NameRule::Dns1123Label,
                rules: Rules::MetadataOnly,
                defaults: Defaults::Namespace,
                strategic_merge: true,
                columns: &[
                    Column {
                        name: "Status",
                        column_type: "string",
                        description: crate::table::NAMESPACE_STATUS_DESCRIPTION,
                        cell: Cell::String("/status/phase"),
                    },
                    AGE,
                ],
                cascade: Cascade::NamespaceContents,
            },
            Builtin::Secret => &BuiltinInfo {
                group: "",
                version: "v1",
                kind: "Secret",
                plural: "secrets",
                singular: "secret",
                short_names: &[],
                namespaced: true,
                key_segment: "secrets",
                always_json: false,
                fields: Some(&[
                    "apiVersion",
                    "kind",
                    "metadata",
                    "data",
                    "stringData",
                    "type",
                    "immutable",
                ]),
                typed: true,
                status_subresource: false,
                extra_selectable_fields: &["type"],
                own_field_conversion: true,
                name_rule: NameRule::Dns1123Subdomain,
                rules: Rules::Secret,
                defaults: Defaults::Secret,
                strategic_merge: true,
                columns: &[
                    Column {
                        name: "Type",
                        column_type: "string",
                        description: crate::table::SECRET_TYPE_DESCRIPTION,
                        cell: Cell::String("/type"),
                    },
                    Column {
                        name: "Data",
                        column_type: "string",
                        description: crate::table::SECRET_DATA_DESCRIPTION,
                        cell: Cell::Count(&["/data"]),
                    },
                    AGE,
                ],
                cascade: Cascade::None,
            },
            Builtin::ConfigMap => &BuiltinInfo {
                group: "",
                version: "v1",
                kind: "ConfigMap",
                plural: "configmaps",
                singular: "configmap",
                short_names: &["cm"],
                namespaced: true,
                key_segment: "configmaps",
                always_json: false,
                fields: Some(&[
                    "apiVersion",
                    "kind",
                    "metadata",
                    "data",
                    "binaryData",
                    "immutable",
                ]),
                typed: true,
                status_subresource: false,
                extra_selectable_fields: &[],
                own_field_conversion: false,
                name_rule: NameRule::Dns1123Subdomain,
                rules: Rules::ConfigMap,
                defaults: Defaults::None,
                strategic_merge: true,
                columns: &[
                    Column {
                        name: "Data",
                        column_type: "string",
                        description: crate::table::CONFIG_MAP_DATA_DESCRIPTION,
                        cell: Cell::Count(&["/data", "/binaryData"]),
                    },
                    AGE,
                ],
                cascade: Cascade::None,
            },
            Builtin::CustomResourceDefinition => &BuiltinInfo {
                group: "apiextensions.k8s.io",
                version: "v1",
                kind: "CustomResourceDefinition",
                plural: "customresourcedefinitions",
                singular: "customresourcedefinition",
                short_names: &["crd", "crds"],
                namespaced: false,
                key_segment: "apiextensions.k8s.io/customresourcedefinitions",
                // Upstream stores CRD objects as JSON whatever the media type.
                always_json: true,
                fields: None,
                typed: false,
                status_subresource: false,
                // Upstream's default conversion, which also accepts metadata.namespace.
                extra_selectable_fields: &["metadata.namespace"],
                own_field_conversion: false,
                name_rule: NameRule::Dns1123Subdomain,
                rules: Rules::CustomResourceDefinition,
                defaults: Defaults::CustomResourceDefinition,
                strategic_merge: true,
                columns: &[Column {
                    name: "Created At",
                    column_type: "date",
                    description: crate::table::CREATION_TIMESTAMP_DESCRIPTION,
                    cell: Cell::CreatedAt,
                }],
                cascade: Cascade::CustomResources,
            },
        }
    }

    /// The built-in kind of a `kind` name, if any.
    pub fn from_kind_name(kind: &str) -> Option<Builtin> {
        BUILTINS.into_iter().find(|b| b.info().kind == kind)
    }
}

/// A kind: a built-in one, or a custom resource (defined by a CRD, or schema-less like
/// StorageVersionMigration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Builtin(Builtin),
    Custom {
        /// The CRD's scope is `Namespaced`.
        namespaced: bool,
    },
}

impl Kind {
    pub const SECRET: Kind = Kind::Builtin(Builtin::Secret);
    pub const CONFIG_MAP: Kind = Kind::Builtin(Builtin::ConfigMap);
    pub const NAMESPACE: Kind = Kind::Builtin(Builtin::Namespace);
    pub const CUSTOM_RESOURCE_DEFINITION: Kind = Kind::Builtin(Builtin::CustomResourceDefinition);
    pub const NAMESPACED_CUSTOM: Kind = Kind::Custom { namespaced: true };
    pub const CLUSTER_CUSTOM: Kind = Kind::Custom { namespaced: false };

    /// The built-in kind's facts, `None` for custom resources.
    pub fn builtin(self) -> Option<&'static BuiltinInfo> {
        match self {
            Kind::Builtin(b) => Some(b.info()),
            Kind::Custom { .. } => None,
        }
    }

    pub fn namespaced(self) -> bool {
        match self {
            Kind::Builtin(b) => b.info().namespaced,
            Kind::Custom { namespaced } => namespaced,
        }
    }

    /// Whether a field selector may name `field` (upstream's field label conversion:
    /// `metadata.name` always, `metadata.namespace` for namespaced kinds, plus the kind's own).
    pub fn selects_field(self, field: &str) -> bool {
        field == "metadata.name"
            || (self.namespaced() && field == "metadata.namespace")
            || self
                .builtin()
                .is_some_and(|b| b.extra_selectable_fields.contains(&field))
    }

    /// Upstream's error for a field selector label the kind does not support.
    pub fn unsupported_field_message(self, field: &str) -> String {
        match self.builtin() {
            // Kinds with no conversion function of their own fall back to
            // runtime.DefaultMetaV1FieldSelectorConversion.
            Some(b) if !b.own_field_conversion => format!(
                "{field:?} is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
            ),
            Some(_) | None => format!("field label not supported: {field}"),
        }
    }

    pub fn name_rule(self) -> NameRule {
        self.builtin()
            .map_or(NameRule::Dns1123Subdomain, |b| b.name_rule)
    }

    pub fn rules(self) -> Rules {
        self.builtin().map_or(Rules::MetadataOnly, |b| b.rules)
    }

    /// The patch types upstream lists as accepted for this kind, in the order of its 415
    /// message. Apply patches are served through `managed::apply` rather than
    /// `patch::apply_patch`.
    pub fn patch_types(self) -> &'static [PatchType] {
        if self.builtin().is_some_and(|b| b.strategic_merge) {
            &PatchType::ALL
        } else {
            &[
                PatchType::JsonPatch,
                PatchType::MergePatch,
                PatchType::ApplyPatch,
            ]
        }
    }

    /// Top-level fields of the kind, for strict decoding; `None`: any.
    pub fn fields(self) -> Option<&'static [&'static str]> {
        self.builtin().and_then(|b| b.fields)
    }

    /// Whether objects go through the codec's typed model before they are stored.
    pub fn typed(self) -> bool {
        self.builtin().is_some_and(|b| b.typed)
    }

    /// Whether the kind has a `status` subresource (custom resources do).
    pub fn status_subresource(self) -> bool {
        self.builtin().is_none_or(|b| b.status_subresource)
    }

    pub fn defaults(self) -> Defaults {
        self.builtin().map_or(Defaults::None, |b| b.defaults)
    }

    pub fn cascade(self) -> Cascade {
        self.builtin().map_or(Cascade::None, |b| b.cascade)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_consistent() {
        for b in BUILTINS {
            let info = b.info();
            assert_eq!(Builtin::from_kind_name(info.kind), Some(b));
            assert_eq!(Kind::Builtin(b).namespaced(), info.namespaced);
            if info.group.is_empty() {
                assert_eq!(info.key_segment, info.plural);
            } else {
                assert_eq!(info.key_segment, format!("{}/{}", info.group, info.plural));
            }
        }
        assert_eq!(Builtin::from_kind_name("Pod"), None);
    }

    #[test]
    fn selectable_fields() {
        assert!(Kind::SECRET.selects_field("type"));
        assert!(Kind::SECRET.selects_field("metadata.namespace"));
        assert!(!Kind::CONFIG_MAP.selects_field("type"));
        assert!(Kind::NAMESPACE.selects_field("status.phase"));
        assert!(!Kind::NAMESPACE.selects_field("metadata.namespace"));
        assert!(Kind::NAMESPACED_CUSTOM.selects_field("metadata.namespace"));
        // Upstream's crConverter: a cluster-scoped custom resource has no namespace label.
        assert!(Kind::CLUSTER_CUSTOM.selects_field("metadata.name"));
        assert!(!Kind::CLUSTER_CUSTOM.selects_field("metadata.namespace"));
        assert_eq!(
            Kind::CONFIG_MAP.unsupported_field_message("type"),
            "\"type\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        );
        assert_eq!(
            Kind::CLUSTER_CUSTOM.unsupported_field_message("metadata.namespace"),
            "field label not supported: metadata.namespace"
        );
    }

    #[test]
    fn strategy_answers() {
        assert_eq!(Kind::NAMESPACE.name_rule(), NameRule::Dns1123Label);
        assert_eq!(Kind::CLUSTER_CUSTOM.name_rule(), NameRule::Dns1123Subdomain);
        assert_eq!(Kind::SECRET.rules(), Rules::Secret);
        assert_eq!(Kind::NAMESPACED_CUSTOM.rules(), Rules::MetadataOnly);
        assert!(Kind::SECRET
            .patch_types()
            .contains(&PatchType::StrategicMergePatch));
        assert!(!Kind::NAMESPACED_CUSTOM
            .patch_types()
            .contains(&PatchType::StrategicMergePatch));
        assert!(Kind::CONFIG_MAP.typed());
        assert!(!Kind::CUSTOM_RESOURCE_DEFINITION.typed());
        assert!(Kind::NAMESPACE.status_subresource());
        assert!(Kind::CLUSTER_CUSTOM.status_subresource());
        assert!(!Kind::SECRET.status_subresource());
        assert_eq!(Kind::NAMESPACE.cascade(), Cascade::NamespaceContents);
        assert_eq!(Kind::SECRET.defaults(), Defaults::Secret);
        assert_eq!(Kind::NAMESPACED_CUSTOM.defaults(), Defaults::None);
        assert_eq!(
            Kind::SECRET.fields().map(|f| f.contains(&"stringData")),
            Some(true)
        );
        assert_eq!(Kind::NAMESPACED_CUSTOM.fields(), None);
    }
}
