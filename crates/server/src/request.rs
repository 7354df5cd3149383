//! What a request asks for: upstream's RequestInfo, parsed from the path, and the decoded
//! query (read into typed options by `crate::options`).

use std::collections::HashMap;

use crate::status::{ApiError, Reason};

/// A resource request (`/api/v1/...` or `/apis/<group>/<version>/...`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Subresources of a namespace that are not namespaced resources of their own.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `/api`, `/apis`, `/api/v1`, `/apis/<group>`, `/apis/<group>/<version>`.
    Discovery {
        group: Option<String>,
        version: Option<String>,
        legacy: bool,
    },
    Resource(ResourcePath),
    Other,
}

/// Parses the path of an API request.
pub fn parse_path(path: &str) -> Result<Target, ApiError> {
    let parts: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match parts.as_slice() {
        ["api"] => {
            return Ok(Target::Discovery {
                group: None,
                version: None,
                legacy: true,
            })
        }
        ["api", v] => {
            return Ok(Target::Discovery {
                group: None,
                version: Some(v.to_string()),
                legacy: true,
            })
        }
        ["apis"] => {
            return Ok(Target::Discovery {
                group: None,
                version: None,
                legacy: false,
            })
        }
        ["apis", g] => {
            return Ok(Target::Discovery {
                group: Some(g.to_string()),
                version: None,
                legacy: false,
            })
        }
        ["apis", g, v] => {
            return Ok(Target::Discovery {
                group: Some(g.to_string()),
                version: Some(v.to_string()),
                legacy: false,
            })
        }
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        _ => return Ok(Target::Other),
    };
    let mut rest: Vec<String> = rest
        .iter()
        .map(|s| percent_decode(s))
        .collect::<Result<_, _>>()?;
    let mut namespace = None;
    if rest.first().map(String::as_str) == Some("namespaces") && rest.len() > 1 {
        // `/namespaces/<ns>/<resource>...` unless the next part is a namespace subresource.
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2].as_str()) {
            namespace = Some(rest[1].clone());
            rest.drain(..2);
        }
    }
    let mut it = rest.into_iter();
    let resource = it.next().ok_or_else(|| {
        ApiError::new(
            404,
            Reason::NotFound,
            "the server could not find the requested resource",
        )
    })?;
    let name = it.next();
    let subresource = it.next();
    if it.next().is_some() {
        return Err(ApiError::new(
            404,
            Reason::NotFound,
            "the server could not find the requested resource",
        ));
    }
    Ok(Target::Resource(ResourcePath {
        group,
        version,
        namespace,
        resource,
        name,
        subresource,
    }))
}

fn percent_decode(s: &str) -> Result<String, ApiError> {
    if !s.contains('%') {
        return Ok(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None => {
                    return Err(ApiError::bad_request(format!(
                        "invalid percent-encoding in path segment {s:?}"
                    )))
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request("path segment is not UTF-8"))
}

/// Decoded query parameters (first value wins, as Go's `Query().Get`).
#[derive(Debug, Clone, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut map = HashMap::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = form_decode(k)?;
            let v = form_decode(v)?;
            map.entry(k).or_insert(v);
        }
        Ok(Query(map))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(
            self.0.get(key).map(String::as_str),
            Some("true") | Some("1")
        )
    }
}

fn form_decode(s: &str) -> Result<String, ApiError> {
    percent_decode(&s.replace('+', " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(path: &str) -> ResourcePath {
        match parse_path(path).unwrap() {
            Target::Resource(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn paths_like_upstream_request_info() {
        let r = res("/api/v1/namespaces/default/secrets/s1");
        assert_eq!(
            (
                r.namespace.as_deref(),
                r.resource.as_str(),
                r.name.as_deref()
            ),
            (Some("default"), "secrets", Some("s1"))
        );
        let r = res("/api/v1/namespaces/learning");
        assert_eq!(
            (r.namespace, r.resource.as_str(), r.name.as_deref()),
            (None, "namespaces", Some("learning"))
        );
        let r = res("/api/v1/namespaces/learning/finalize");
        assert_eq!(
            (
                r.resource.as_str(),
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            ("namespaces", Some("learning"), Some("finalize"))
        );
        let r = res("/api/v1/secrets");
        assert_eq!(
            (r.namespace, r.resource.as_str(), r.name),
            (None, "secrets", None)
        );
        let r = res("/apis/awesome.bears.example/v1/namespaces/ns/pandas/p1/status");
        assert_eq!(r.group, "awesome.bears.example");
        assert_eq!(r.subresource.as_deref(), Some("status"));
        assert_eq!(
            parse_path("/apis").unwrap(),
            Target::Discovery {
                group: None,
                version: None,
                legacy: false
            }
        );
        assert_eq!(parse_path("/metrics").unwrap(), Target::Other);
    }

    #[test]
    fn query_decoding() {
        let q = Query::parse(Some(
            "labelSelector=app%3Dweb%2Ctier+in+(a)&limit=500&watch=true&limit=1",
        ))
        .unwrap();
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert_eq!(q.get("limit"), Some("500"));
        assert!(q.flag("watch"));
        assert_eq!(Query::parse(Some("limit=")).unwrap().get("limit"), None);
        assert!(Query::parse(Some("a=%zz")).is_err());
    }
}
