//! A request's query parameters, parsed once into typed options per verb. Nothing past
//! [`RequestOptions::parse`] reads a query parameter by name.

use std::time::Duration;

use atrest_api::table::IncludeObject;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::request::Query;
use crate::status::ApiError;

/// A store revision named by a client (`resourceVersion`): a decimal number in `1..=i64::MAX`.
/// Parsing is checked, so no client value can overflow the arithmetic done with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Revision(i64);

impl Revision {
    /// The revision a store operation takes.
    pub fn get(self) -> i64 {
        self.0
    }

    /// The first revision after this one, for a watch that starts here.
    pub fn next(self) -> Result<i64, ApiError> {
        self.0
            .checked_add(1)
            .ok_or_else(|| ApiError::bad_request("invalid resourceVersion"))
    }
}

/// What a `resourceVersion` query parameter asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VersionParam {
    /// Absent or empty: the most recent state.
    #[default]
    Unset,
    /// `"0"`: any version will do.
    Any,
    /// A specific revision.
    At(Revision),
}

impl VersionParam {
    pub fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        match value {
            None | Some("") => Ok(VersionParam::Unset),
            Some("0") => Ok(VersionParam::Any),
            Some(text) => text
                .parse::<u64>()
                .ok()
                .and_then(|n| i64::try_from(n).ok())
                .filter(|n| *n > 0)
                .map(|n| VersionParam::At(Revision(n)))
                .ok_or_else(|| ApiError::bad_request("invalid resourceVersion")),
        }
    }

    /// The revision, when one was named.
    pub fn revision(self) -> Option<Revision> {
        match self {
            VersionParam::At(r) => Some(r),
            VersionParam::Unset | VersionParam::Any => None,
        }
    }
}

/// `labelSelector` and `fieldSelector` as sent (parsed against the resource's kind by
/// `bodies::Filter`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selectors {
    pub labels: Option<String>,
    pub fields: Option<String>,
}

impl Selectors {
    fn parse(query: &Query) -> Self {
        Selectors {
            labels: query.get("labelSelector").map(str::to_string),
            fields: query.get("fieldSelector").map(str::to_string),
        }
    }
}

/// Where a paginated list resumes: the revision of its first page and the last key returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continue {
    pub revision: i64,
    pub start_after: Vec<u8>,
}

impl Continue {
    /// Continue tokens: base64 of `{"v":"meta.k8s.io/v1","rv":<rev>,"start":"<key>"}`, the
    /// shape upstream uses (opaque to clients).
    pub fn encode(revision: i64, last_key: &[u8]) -> String {
        let token = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": String::from_utf8_lossy(last_key)});
        base64::engine::general_purpose::URL_SAFE.encode(token.to_string())
    }

    pub fn decode(token: &str) -> Result<Self, ApiError> {
        let bad = || ApiError::bad_request("continue key is not valid");
        let raw = base64::engine::general_purpose::URL_SAFE
            .decode(token)
            .map_err(|_| bad())?;
        let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
        let revision = v
            .get("rv")
            .and_then(Value::as_i64)
            .filter(|r| *r >= 0)
            .ok_or_else(bad)?;
        let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
        Ok(Continue {
            revision,
            start_after: start.as_bytes().to_vec(),
        })
    }
}

/// A list (`GET` on a collection without `watch`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    pub selectors: Selectors,
    /// `limit`; 0 is no limit.
    pub limit: usize,
    pub continue_from: Option<Continue>,
    pub resource_version: VersionParam,
    /// `resourceVersionMatch=Exact`: read at exactly `resource_version`.
    pub exact: bool,
    /// `includeObject` of a Table answer.
    pub include_object: IncludeObject,
}

impl ListOptions {
    fn parse(query: &Query) -> Result<Self, ApiError> {
        if query.get("sendInitialEvents").is_some() {
            return Err(invalid_list_options(&[(
                OptionError {
                    field: "sendInitialEvents",
                    reason: FORBIDDEN,
                },
                "Forbidden: sendInitialEvents is forbidden for list".to_string(),
            )]));
        }
        Ok(ListOptions {
            selectors: Selectors::parse(query),
            limit: positive(query, "limit")?.unwrap_or(0),
            continue_from: query.get("continue").map(Continue::decode).transpose()?,
            resource_version: VersionParam::parse(query.get("resourceVersion"))?,
            exact: query.get("resourceVersionMatch") == Some("Exact"),
            include_object: IncludeObject::from_query(query.get("includeObject"))
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
        })
    }

    /// The revision the first page is read at: the continue token's, or with
    /// `resourceVersionMatch=Exact` the one named; otherwise the current one (`None`). A
    /// resourceVersion on a first page means "not older than" upstream, which the current
    /// revision satisfies.
    pub fn read_revision(&self) -> Option<i64> {
        match &self.continue_from {
            Some(c) => Some(c.revision),
            None if self.exact => self.resource_version.revision().map(Revision::get),
            None => None,
        }
    }
}

/// A watch (`GET` on a collection with `watch=true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    pub selectors: Selectors,
    pub resource_version: VersionParam,
    /// `timeoutSeconds`, or upstream's default of 30 minutes.
    pub timeout: Duration,
    /// `allowWatchBookmarks=true`: periodic BOOKMARK events carrying the resourceVersion
    /// the watch has reached.
    pub allow_bookmarks: bool,
    /// `sendInitialEvents` (with `resourceVersionMatch=NotOlderThan`, the only match a
    /// watch takes): `Some(true)` is a watch-list, the state as ADDED events then a
    /// BOOKMARK annotated `k8s.io/initial-events-end`; `Some(false)` starts at the
    /// resourceVersion (or now) without the state. `None`: the legacy semantics.
    pub send_initial_events: Option<bool>,
}

/// One field error of a `ListOptions` that upstream's validation refuses.
#[derive(Debug, Clone, Copy)]
struct OptionError {
    field: &'static str,
    /// `FieldValueForbidden` or `FieldValueNotSupported`.
    reason: &'static str,
}

/// Upstream's 422 for `ListOptions` that fail validation: `ListOptions.meta.k8s.io "" is
/// invalid: <field>: <message>` (several errors in brackets), a cause per error.
fn invalid_list_options(errors: &[(OptionError, String)]) -> ApiError {
    let texts: Vec<String> = errors
        .iter()
        .map(|(e, message)| format!("{}: {message}", e.field))
        .collect();
    let joined = match texts.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    let mut error = ApiError::new(
        422,
        crate::status::Reason::Invalid,
        format!("ListOptions.meta.k8s.io \"\" is invalid: {joined}"),
    );
    let causes: Vec<Value> = errors
        .iter()
        .map(|(e, message)| json!({"reason": e.reason, "message": message, "field": e.field}))
        .collect();
    error.details = Some(json!({"group": "meta.k8s.io", "kind": "ListOptions", "causes": causes}));
    error
}

const FORBIDDEN: &str = "FieldValueForbidden";
const NOT_SUPPORTED: &str = "FieldValueNotSupported";

/// A boolean query parameter as Go's `strconv.ParseBool` reads it; absent or empty is `None`.
fn boolean(query: &Query, key: &str) -> Result<Option<bool>, ApiError> {
    match query.get(key) {
        None => Ok(None),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(Some(true)),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(Some(false)),
        Some(other) => Err(ApiError::bad_request(format!(
            "invalid {key}: {other:?}: not a boolean"
        ))),
    }
}

impl WatchOptions {
    /// Upstream's default watch timeout when the client names none.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

    fn parse(query: &Query) -> Result<Self, ApiError> {
        let send_initial_events = boolean(query, "sendInitialEvents")?;
        let version_match = query.get("resourceVersionMatch");
        // Upstream's validateWatchOptions, in its order.
        let mut errors = Vec::new();
        if send_initial_events.is_some() && version_match != Some("NotOlderThan") {
            errors.push((
                OptionError {
                    field: "resourceVersionMatch",
                    reason: FORBIDDEN,
                },
                "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
                    .to_string(),
            ));
        }
        if let Some(m) = version_match {
            if send_initial_events.is_none() {
                errors.push((
                    OptionError {
                        field: "resourceVersionMatch",
                        reason: FORBIDDEN,
                    },
                    "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"
                        .to_string(),
                ));
            }
            if m != "NotOlderThan" {
                errors.push((
                    OptionError {
                        field: "resourceVersionMatch",
                        reason: NOT_SUPPORTED,
                    },
                    format!("Unsupported value: {m:?}: supported values: \"NotOlderThan\""),
                ));
            }
            if query.get("continue").is_some() {
                errors.push((
                    OptionError {
                        field: "resourceVersionMatch",
                        reason: FORBIDDEN,
                    },
                    "Forbidden: resourceVersionMatch is forbidden when continue is provided"
                        .to_string(),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(invalid_list_options(&errors));
        }
        Ok(WatchOptions {
            selectors: Selectors::parse(query),
            resource_version: VersionParam::parse(query.get("resourceVersion"))?,
            timeout: positive(query, "timeoutSeconds")?
                .map(|s| Duration::from_secs(s as u64))
                .unwrap_or(Self::DEFAULT_TIMEOUT),
            allow_bookmarks: boolean(query, "allowWatchBookmarks")? == Some(true),
            send_initial_events,
        })
    }
}

/// `fieldValidation`: what to do with fields a built-in kind does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// `Strict` (kubectl's default): unknown fields are a 400.
    Strict,
    /// `Warn`, `Ignore` or absent: unknown fields are dropped when the object is normalised.
    #[default]
    Lenient,
}

/// A create, update or patch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: everything but the write.
    pub dry_run: bool,
    pub field_validation: FieldValidation,
    /// `fieldManager`: who owns the fields this write sets (absent: derived from the
    /// User-Agent, except for apply patches, which need one).
    pub field_manager: Option<String>,
    /// `force=true`: an apply patch takes the fields other managers own.
    pub force: bool,
}

/// Upstream's limit on a field manager's length (`FieldManagerMaxLength`).
pub const FIELD_MANAGER_MAX_LENGTH: usize = 128;

impl WriteOptions {
    pub fn parse(query: &Query) -> Result<Self, ApiError> {
        Ok(WriteOptions {
            dry_run: dry_run(query.get("dryRun"))?,
            field_validation: match query.get("fieldValidation") {
                Some("Strict") => FieldValidation::Strict,
                None | Some("" | "Warn" | "Ignore") => FieldValidation::Lenient,
                // Upstream validates the options: anything else is refused, not ignored.
                Some(other) => {
                    return Err(ApiError::new(
                        422,
                        crate::status::Reason::Invalid,
                        format!(
                            "CreateOptions.meta.k8s.io \"\" is invalid: fieldValidation: \
                             Unsupported value: {other:?}: supported values: \"\", \"Ignore\", \
                             \"Strict\", \"Warn\""
                        ),
                    ))
                }
            },
            field_manager: match query.get("fieldManager") {
                None | Some("") => None,
                Some(m) if m.len() > FIELD_MANAGER_MAX_LENGTH => {
                    return Err(invalid_option(
                        "fieldManager",
                        &format!("Too long: may not be more than {FIELD_MANAGER_MAX_LENGTH} bytes"),
                    ))
                }
                Some(m) if m.chars().any(char::is_control) => {
                    return Err(invalid_option(
                        "fieldManager",
                        &format!("Invalid value: {m:?}: must be printable"),
                    ))
                }
                Some(m) => Some(m.to_string()),
            },
            force: match query.get("force") {
                None | Some("" | "false") => false,
                Some("true") => true,
                Some(other) => {
                    return Err(ApiError::bad_request(format!(
                        "force: invalid boolean value {other:?}: use true or false"
                    )))
                }
            },
        })
    }
}

/// Upstream's 422 for a bad `PatchOptions` value: `detail` is the cause's message
/// (`Required value: ...`, `Too long: ...`, `Invalid value: ...`), whose first words pick
/// the cause's reason.
pub fn invalid_option(field: &str, detail: &str) -> ApiError {
    let reason = if detail.starts_with("Required value") {
        "FieldValueRequired"
    } else if detail.starts_with("Too long") {
        "FieldValueTooLong"
    } else {
        "FieldValueInvalid"
    };
    let mut e = ApiError::new(
        422,
        crate::status::Reason::Invalid,
        format!("PatchOptions.meta.k8s.io \"\" is invalid: {field}: {detail}"),
    );
    e.details = Some(json!({
        "group": "meta.k8s.io",
        "kind": "PatchOptions",
        "causes": [{"reason": reason, "message": detail, "field": field}],
    }));
    e
}

/// A delete: the query's `dryRun` and the `DeleteOptions` body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeleteOptions {
    pub dry_run: bool,
    /// `preconditions.resourceVersion`, as sent.
    pub precondition_resource_version: Option<String>,
    /// `preconditions.uid`.
    pub precondition_uid: Option<String>,
    /// KEP-3926: remove an object that cannot be decrypted or decoded.
    pub ignore_store_read_error: bool,
}

impl DeleteOptions {
    /// The options of a delete whose query said `dry_run` and whose body is `body`.
    pub fn parse(dry_run_query: bool, body: &[u8]) -> Result<Self, ApiError> {
        let options: Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
        };
        let mut dry = dry_run_query;
        if let Some(list) = options.get("dryRun").and_then(Value::as_array) {
            for v in list {
                dry |= dry_run(v.as_str())?;
            }
        }
        let text = |pointer: &str| {
            options
                .pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Ok(DeleteOptions {
            dry_run: dry,
            precondition_resource_version: text("/preconditions/resourceVersion"),
            precondition_uid: text("/preconditions/uid"),
            ignore_store_read_error: options
                .get("ignoreStoreReadErrorWithClusterBreakingPotential")
                .and_then(Value::as_bool)
                == Some(true),
        })
    }
}

/// A request's options, by verb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOptions {
    Get,
    List(ListOptions),
    Watch(WatchOptions),
    /// Create, update, patch and status updates.
    Write(WriteOptions),
    /// Delete of one object (the body adds [`DeleteOptions`]).
    Delete {
        dry_run: bool,
    },
    /// Delete of every object a selector matches.
    DeleteCollection {
        selectors: Selectors,
        dry_run: bool,
    },
}

/// The verb a method and path name, before options are parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

impl Verb {
    /// Upstream's verb for `method` on a named object (`named`) or a collection; `None` for
    /// a method that is no verb. (A create names no object and an update or patch one; the
    /// handlers refuse the other shapes.)
    pub fn of(method: &http::Method, named: bool, query: &Query) -> Option<Verb> {
        Some(match (method.as_str(), named) {
            ("GET", true) => Verb::Get,
            ("GET", false) if query.flag("watch") => Verb::Watch,
            ("GET", false) => Verb::List,
            ("POST", _) => Verb::Create,
            ("PUT", _) => Verb::Update,
            ("PATCH", _) => Verb::Patch,
            ("DELETE", true) => Verb::Delete,
            ("DELETE", false) => Verb::DeleteCollection,
            _ => return None,
        })
    }

    /// The verb's name as authorization sees it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }
}

impl RequestOptions {
    /// Parses the query parameters `verb` reads. `dryRun` is checked on every verb, as
    /// before any other parameter.
    pub fn parse(verb: Verb, query: &Query) -> Result<Self, ApiError> {
        let dry = dry_run(query.get("dryRun"))?;
        Ok(match verb {
            Verb::Get => RequestOptions::Get,
            Verb::List => RequestOptions::List(ListOptions::parse(query)?),
            Verb::Watch => RequestOptions::Watch(WatchOptions::parse(query)?),
            Verb::Create | Verb::Update | Verb::Patch => {
                RequestOptions::Write(WriteOptions::parse(query)?)
            }
            Verb::Delete => RequestOptions::Delete { dry_run: dry },
            Verb::DeleteCollection => RequestOptions::DeleteCollection {
                selectors: Selectors::parse(query),
                dry_run: dry,
            },
        })
    }
}

/// `dryRun=All` (the only value upstream accepts); absent means a real write.
fn dry_run(value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        None => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
        ))),
    }
}

/// A count parameter (`limit`, `timeoutSeconds`): a decimal integer; zero or negative is
/// absent, as upstream treats them.
fn positive(query: &Query, key: &str) -> Result<Option<usize>, ApiError> {
    match query.get(key) {
        None => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .map(|n| usize::try_from(n).ok().filter(|n| *n > 0))
            .map_err(|_| ApiError::bad_request(format!("invalid {key}: {v:?}"))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::status::Reason;

    fn query(q: &str) -> Query {
        Query::parse(Some(q)).unwrap()
    }

    fn list(q: &str) -> Result<ListOptions, ApiError> {
        match RequestOptions::parse(Verb::List, &query(q))? {
            RequestOptions::List(l) => Ok(l),
            other => panic!("{other:?}"),
        }
    }

    fn watch(q: &str) -> Result<WatchOptions, ApiError> {
        match RequestOptions::parse(Verb::Watch, &query(q))? {
            RequestOptions::Watch(w) => Ok(w),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn resource_versions_are_checked() {
        assert_eq!(VersionParam::parse(None).unwrap(), VersionParam::Unset);
        assert_eq!(VersionParam::parse(Some("")).unwrap(), VersionParam::Unset);
        assert_eq!(VersionParam::parse(Some("0")).unwrap(), VersionParam::Any);
        assert_eq!(
            VersionParam::parse(Some("42")).unwrap(),
            VersionParam::At(Revision(42))
        );
        let max = i64::MAX.to_string();
        assert_eq!(
            VersionParam::parse(Some(&max)).unwrap().revision(),
            Some(Revision(i64::MAX))
        );
        for bad in [
            "-1",
            "abc",
            "1.5",
            "9223372036854775808",
            "18446744073709551616",
        ] {
            let e = VersionParam::parse(Some(bad)).unwrap_err();
            assert_eq!((e.code, e.reason), (400, Reason::BadRequest), "{bad}");
            assert_eq!(e.message, "invalid resourceVersion");
        }
    }

    #[test]
    fn a_watch_from_the_last_revision_is_refused_not_overflowed() {
        let w = watch(&format!("watch=true&resourceVersion={}", i64::MAX)).unwrap();
        let rv = w.resource_version.revision().unwrap();
        assert_eq!(rv.get(), i64::MAX);
        assert_eq!(rv.next().unwrap_err().reason, Reason::BadRequest);
        let w = watch("watch=true&resourceVersion=7").unwrap();
        assert_eq!(w.resource_version.revision().unwrap().next().unwrap(), 8);
    }

    #[test]
    fn list_options() {
        let l = list("labelSelector=app%3Dweb&fieldSelector=metadata.name%3Da&limit=5&resourceVersion=9&resourceVersionMatch=Exact&includeObject=Object").unwrap();
        assert_eq!(l.selectors.labels.as_deref(), Some("app=web"));
        assert_eq!(l.selectors.fields.as_deref(), Some("metadata.name=a"));
        assert_eq!(l.limit, 5);
        assert_eq!(l.read_revision(), Some(9));
        assert_eq!(l.include_object, IncludeObject::Object);
        // Without Exact, a resourceVersion does not pin the read.
        assert_eq!(list("resourceVersion=9").unwrap().read_revision(), None);
        assert_eq!(list("limit=-3").unwrap().limit, 0);
        assert!(list("limit=abc").is_err());
        assert!(list("includeObject=All").is_err());
        assert!(list("continue=!!").is_err());
        let token = Continue::encode(12, b"/registry/secrets/ns/a");
        let l = list(&format!(
            "continue={token}&resourceVersion=3&resourceVersionMatch=Exact"
        ))
        .unwrap();
        assert_eq!(l.read_revision(), Some(12));
        assert_eq!(
            l.continue_from.unwrap().start_after,
            b"/registry/secrets/ns/a".to_vec()
        );
    }

    #[test]
    fn continue_tokens_round_trip() {
        let t = Continue::encode(42, b"/registry/secrets/ns/a");
        assert_eq!(
            Continue::decode(&t).unwrap(),
            Continue {
                revision: 42,
                start_after: b"/registry/secrets/ns/a".to_vec()
            }
        );
        assert!(Continue::decode("!!").is_err());
        let negative = base64::engine::general_purpose::URL_SAFE
            .encode(r#"{"v":"meta.k8s.io/v1","rv":-1,"start":"a"}"#);
        assert!(Continue::decode(&negative).is_err());
    }

    #[test]
    fn watch_timeout() {
        assert_eq!(
            watch("watch=1").unwrap().timeout,
            WatchOptions::DEFAULT_TIMEOUT
        );
        assert_eq!(
            watch("watch=1&timeoutSeconds=5").unwrap().timeout,
            Duration::from_secs(5)
        );
        assert!(watch("watch=1&timeoutSeconds=x").is_err());
    }

    #[test]
    fn watch_list_options_are_validated_as_upstream() {
        let w = watch("watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true").unwrap();
        assert_eq!(w.send_initial_events, Some(true));
        assert!(w.allow_bookmarks);
        let w = watch("watch=1&sendInitialEvents=false&resourceVersionMatch=NotOlderThan").unwrap();
        assert_eq!(w.send_initial_events, Some(false));
        assert!(!w.allow_bookmarks);
        // kube-apiserver 1.36's messages, byte for byte.
        let e = watch("watch=1&sendInitialEvents=true").unwrap_err();
        assert_eq!((e.code, e.reason), (422, Reason::Invalid));
        assert_eq!(e.message, "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan");
        assert_eq!(
            e.details.as_ref().unwrap()["causes"][0]["reason"],
            "FieldValueForbidden"
        );
        let e = watch("watch=1&resourceVersionMatch=NotOlderThan").unwrap_err();
        assert_eq!(e.message, "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided");
        let e = watch("watch=1&sendInitialEvents=false&resourceVersionMatch=Exact").unwrap_err();
        assert_eq!(e.message, "ListOptions.meta.k8s.io \"\" is invalid: [resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan, resourceVersionMatch: Unsupported value: \"Exact\": supported values: \"NotOlderThan\"]");
        assert_eq!(
            e.details.as_ref().unwrap()["causes"][1]["reason"],
            "FieldValueNotSupported"
        );
        let e = list("sendInitialEvents=true").unwrap_err();
        assert_eq!(e.message, "ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list");
        assert_eq!(
            watch("watch=1&sendInitialEvents=maybe&resourceVersionMatch=NotOlderThan")
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn write_and_delete_options() {
        let w = RequestOptions::parse(Verb::Create, &query("dryRun=All&fieldValidation=Strict"))
            .unwrap();
        assert_eq!(
            w,
            RequestOptions::Write(WriteOptions {
                dry_run: true,
                field_validation: FieldValidation::Strict,
                field_manager: None,
                force: false,
            })
        );
        let w = RequestOptions::parse(
            Verb::Patch,
            &query("fieldManager=kubectl&force=true&fieldValidation=Strict"),
        )
        .unwrap();
        let RequestOptions::Write(w) = w else {
            panic!("not a write: {w:?}")
        };
        assert_eq!(w.field_manager.as_deref(), Some("kubectl"));
        assert!(w.force);
        let long = format!("fieldManager={}", "x".repeat(129));
        let e = RequestOptions::parse(Verb::Patch, &query(&long)).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(RequestOptions::parse(Verb::Patch, &query("force=maybe")).is_err());
        let w = RequestOptions::parse(Verb::Patch, &query("fieldValidation=Warn")).unwrap();
        assert_eq!(w, RequestOptions::Write(WriteOptions::default()));
        let e = RequestOptions::parse(Verb::Get, &query("dryRun=Yes")).unwrap_err();
        assert_eq!(
            e.message,
            "dryRun: Unsupported value: \"Yes\": supported values: \"All\""
        );
        let d = DeleteOptions::parse(
            false,
            br#"{"dryRun":["All"],"preconditions":{"resourceVersion":"5","uid":"u"},"ignoreStoreReadErrorWithClusterBreakingPotential":true}"#,
        )
        .unwrap();
        assert_eq!(
            d,
            DeleteOptions {
                dry_run: true,
                precondition_resource_version: Some("5".into()),
                precondition_uid: Some("u".into()),
                ignore_store_read_error: true,
            }
        );
        assert_eq!(
            DeleteOptions::parse(false, b"  ").unwrap(),
            DeleteOptions::default()
        );
        assert!(DeleteOptions::parse(false, b"{").is_err());
        assert!(DeleteOptions::parse(false, br#"{"dryRun":["Some"]}"#).is_err());
    }

    #[test]
    fn verbs() {
        let q = query("watch=true");
        let get = http::Method::GET;
        assert_eq!(Verb::of(&get, true, &q), Some(Verb::Get));
        assert_eq!(Verb::of(&get, false, &q), Some(Verb::Watch));
        assert_eq!(Verb::of(&get, false, &query("")), Some(Verb::List));
        assert_eq!(
            Verb::of(&http::Method::DELETE, false, &q),
            Some(Verb::DeleteCollection)
        );
        assert_eq!(Verb::of(&http::Method::POST, true, &q), Some(Verb::Create));
        assert_eq!(Verb::of(&http::Method::HEAD, false, &q), None);
    }
}
