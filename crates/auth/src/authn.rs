//! Authentication: static bearer tokens (`--token-auth-file`) and client certificates.
//!
//! The [`Authenticator`] follows kube-apiserver's union authenticator: a client certificate
//! that the TLS layer verified against atrest's CA wins (user = its CN, groups = its O's);
//! otherwise an `Authorization: Bearer <token>` header is looked up in the token file, and a
//! token that matches nothing is [`AuthOutcome::Rejected`] (401). A request with neither
//! (or with another scheme, or an empty bearer token) is [`AuthOutcome::Anonymous`]; the
//! server answers those with 401 except on [`is_public_path`]. Authenticated users also get
//! the group `system:authenticated`, as upstream adds it.
//!
//! # Token file
//!
//! Upstream's format (`k8s.io/apiserver/.../token/tokenfile`): a CSV file read with Go's
//! `encoding/csv` (quoted fields, `""` escapes, CRLF, blank lines skipped, no comment
//! syntax), one record per token: `token,user,uid[,"group1,group2"]`. A record with fewer
//! than 3 columns fails the load (the error names the line, never the token); a record with
//! an empty token is skipped with a warning; a duplicate token replaces the earlier one with
//! a warning. Warnings are returned by [`TokenFile::warnings`] for the caller to log.
//!
//! Tokens are secrets: only their SHA-256 digests are kept, a presented token is hashed and
//! compared to every entry in constant time, and no error, warning or `Debug` output shows
//! one.
//!
//! # The admin credential
//!
//! `<data-dir>/admin.kubeconfig` authenticates with the admin client certificate
//! (`CN=atrest-admin, O=system:masters`), so atrest needs no token of its own and makes
//! none by default. For clients that cannot present a certificate, [`ensure_admin_token`]
//! makes (once) `<data-dir>/admin.token` (0600, 32 bytes from the OS CSPRNG, base64url
//! without padding) for the same user; the server adds it to the authenticator with
//! [`TokenFile::insert`] only when asked to.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::digest;
use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

use crate::tls::{ADMIN_GROUP, ADMIN_USER};

/// Group every authenticated user has.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// File name of the optional admin bearer token in the data dir.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// What [`Authenticator::authenticate`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    Authenticated(UserInfo),
    /// No credentials: allowed only on [`is_public_path`], else 401.
    Anonymous,
    /// Credentials that do not authenticate: 401. The reason never holds a secret.
    Rejected(String),
}

/// Errors loading a token file. None holds a token.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("token file '{path}' line {line}: {reason}")]
    Parse {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{0}")]
    Random(String),
    #[error(transparent)]
    File(#[from] atrest_files::FileError),
}

#[derive(Clone)]
struct TokenEntry {
    digest: [u8; 32],
    user: UserInfo,
}

/// A loaded static token file: token digests and their users.
#[derive(Clone, Default)]
pub struct TokenFile {
    entries: Vec<TokenEntry>,
    warnings: Vec<String>,
}

impl fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenFile")
            .field("tokens", &self.entries.len())
            .field("warnings", &self.warnings)
            .finish()
    }
}

fn sha256(token: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Compares two digests without data-dependent branches.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

impl TokenFile {
    /// Loads `--token-auth-file`.
    pub fn load(path: &Path) -> Result<Self, AuthnError> {
        let bytes = Zeroizing::new(fs::read(path).map_err(|source| AuthnError::Io {
            path: path.to_path_buf(),
            source,
        })?);
        Self::parse(&bytes, path)
    }

    /// Parses token file contents; `path` is only used in messages.
    pub fn parse(contents: &[u8], path: &Path) -> Result<Self, AuthnError> {
        let err = |line: usize, reason: String| AuthnError::Parse {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let text = std::str::from_utf8(contents)
            .map_err(|e| err(line_of(contents, e.valid_up_to()), "not valid UTF-8".into()))?;
        let mut out = TokenFile::default();
        let mut record_num = 0usize;
        for record in CsvRecords::new(text) {
            let (line, fields) = record.map_err(|(line, reason)| err(line, reason.into()))?;
            if fields.len() < 3 {
                return Err(err(
                    line,
                    format!(
                        "must have at least 3 columns (token, user name, user uid), found {}",
                        fields.len()
                    ),
                ));
            }
            record_num += 1;
            if fields[0].is_empty() {
                out.warnings.push(format!(
                    "empty token has been found in token file '{}', record number '{record_num}' (line {line})",
                    path.display()
                ));
                continue;
            }
            let groups = fields
                .get(3)
                .map(|g| {
                    g.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            let user = UserInfo {
                name: fields[1].to_string(),
                uid: fields[2].to_string(),
                groups,
            };
            if out.insert_entry(sha256(fields[0].as_bytes()), user) {
                out.warnings.push(format!(
                    "duplicate token has been found in token file '{}', record number '{record_num}' (line {line})",
                    path.display()
                ));
            }
        }
        Ok(out)
    }

    /// Adds (or replaces) a token; returns true if it replaced one.
    pub fn insert(&mut self, token: &[u8], user: UserInfo) -> bool {
        self.insert_entry(sha256(token), user)
    }

    fn insert_entry(&mut self, digest: [u8; 32], user: UserInfo) -> bool {
        if let Some(existing) = self.entries.iter_mut().find(|e| ct_eq(&e.digest, &digest)) {
            existing.user = user;
            true
        } else {
            self.entries.push(TokenEntry { digest, user });
            false
        }
    }

    /// The user of `token`. Every entry is compared, in constant time.
    pub fn lookup(&self, token: &[u8]) -> Option<&UserInfo> {
        let digest = sha256(token);
        let mut found = None;
        for e in &self.entries {
            if ct_eq(&e.digest, &digest) {
                found = Some(&e.user);
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Warnings from loading (empty or duplicate tokens), for the log. No tokens in them.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

fn line_of(bytes: &[u8], offset: usize) -> usize {
    1 + bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// Records of a CSV text as Go's `encoding/csv` reads them (`FieldsPerRecord = -1`, no
/// comments, no lazy quotes): yields `(line of the record's start, fields)`.
struct CsvRecords<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
}

impl<'a> CsvRecords<'a> {
    fn new(text: &'a str) -> Self {
        CsvRecords {
            text,
            pos: 0,
            line: 1,
        }
    }
}

impl Iterator for CsvRecords<'_> {
    type Item = Result<(usize, Vec<String>), (usize, &'static str)>;

    fn next(&mut self) -> Option<Self::Item> {
        let bytes = self.text.as_bytes();
        // Skip empty lines.
        loop {
            if self.pos >= bytes.len() {
                return None;
            }
            if bytes[self.pos] == b'\n' {
                self.pos += 1;
                self.line += 1;
            } else if bytes[self.pos] == b'\r' && bytes.get(self.pos + 1) == Some(&b'\n') {
                self.pos += 2;
                self.line += 1;
            } else {
                break;
            }
        }
        let start_line = self.line;
        let mut fields = Vec::new();
        loop {
            // One field, starting at self.pos.
            let mut field = String::new();
            if bytes.get(self.pos) == Some(&b'"') {
                self.pos += 1;
                loop {
                    let Some(&b) = bytes.get(self.pos) else {
                        self.pos = bytes.len();
                        return Some(Err((
                            start_line,
                            "extraneous or missing \" in quoted-field",
                        )));
                    };
                    if b == b'"' {
                        if bytes.get(self.pos + 1) == Some(&b'"') {
                            field.push('"');
                            self.pos += 2;
                            continue;
                        }
                        self.pos += 1;
                        break;
                    }
                    // Push the whole UTF-8 character.
                    let ch_len = self.text[self.pos..]
                        .chars()
                        .next()
                        .map_or(1, char::len_utf8);
                    let ch = &self.text[self.pos..self.pos + ch_len];
                    if ch == "\n" {
                        self.line += 1;
                    }
                    if ch == "\r" && bytes.get(self.pos + 1) == Some(&b'\n') {
                        // Go turns \r\n inside a quoted field into \n.
                        self.pos += 1;
                        continue;
                    }
                    field.push_str(ch);
                    self.pos += ch_len;
                }
                // After the closing quote: a comma, the end of the line or of the text.
                match bytes.get(self.pos) {
                    None => {}
                    Some(b',') | Some(b'\n') => {}
                    Some(b'\r') if bytes.get(self.pos + 1) == Some(&b'\n') => {}
                    Some(_) => {
                        self.skip_line();
                        return Some(Err((
                            start_line,
                            "extraneous or missing \" in quoted-field",
                        )));
                    }
                }
            } else {
                let end = bytes[self.pos..]
                    .iter()
                    .position(|&b| b == b',' || b == b'\n')
                    .map_or(bytes.len(), |i| self.pos + i);
                let mut raw = &self.text[self.pos..end];
                if bytes.get(end) != Some(&b',') {
                    // The last field of a record: "\r\n" ends the line like "\n".
                    raw = raw.strip_suffix('\r').unwrap_or(raw);
                }
                if raw.contains('"') {
                    self.pos = end;
                    self.skip_line();
                    return Some(Err((start_line, "bare \" in non-quoted-field")));
                }
                field.push_str(raw);
                self.pos = end;
            }
            fields.push(field);
            match bytes.get(self.pos) {
                Some(b',') => {
                    self.pos += 1;
                }
                Some(b'\r') => {
                    // "\r\n" after a quoted field.
                    self.pos += 2;
                    self.line += 1;
                    return Some(Ok((start_line, fields)));
                }
                Some(b'\n') => {
                    self.pos += 1;
                    self.line += 1;
                    return Some(Ok((start_line, fields)));
                }
                _ => {
                    self.pos = bytes.len();
                    return Some(Ok((start_line, fields)));
                }
            }
        }
    }
}

impl CsvRecords<'_> {
    fn skip_line(&mut self) {
        let bytes = self.text.as_bytes();
        match bytes[self.pos.min(bytes.len())..]
            .iter()
            .position(|&b| b == b'\n')
        {
            Some(i) => {
                self.pos += i + 1;
                self.line += 1;
            }
            None => self.pos = bytes.len(),
        }
    }
}

/// Decides who made a request.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    tokens: Option<TokenFile>,
}

impl Authenticator {
    /// `tokens`: the loaded `--token-auth-file` (plus any token added with
    /// [`TokenFile::insert`]); `None` disables bearer tokens.
    pub fn new(tokens: Option<TokenFile>) -> Self {
        Authenticator { tokens }
    }

    /// `authorization`: the raw `Authorization` header value, if any. `peer_certs`: the
    /// client's certificate chain (leaf first) **as verified by the TLS layer** (rustls'
    /// `ServerConnection::peer_certificates()` with the verifier of
    /// [`crate::tls::server_config`]); never pass certificates that were not verified.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        peer_certs: Option<&[CertificateDer<'_>]>,
    ) -> AuthOutcome {
        let mut cert_error = None;
        if let Some(leaf) = peer_certs.and_then(|c| c.first()) {
            match user_from_cert(leaf) {
                Ok(user) => return AuthOutcome::Authenticated(user),
                Err(reason) => cert_error = Some(reason),
            }
        }
        match bearer_token(authorization) {
            Some(token) => match self.tokens.as_ref().and_then(|t| t.lookup(token)) {
                Some(user) => AuthOutcome::Authenticated(with_authenticated_group(user.clone())),
                None => AuthOutcome::Rejected("invalid bearer token".into()),
            },
            None => match cert_error {
                Some(reason) => AuthOutcome::Rejected(reason),
                None => AuthOutcome::Anonymous,
            },
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header, as upstream reads it: the
/// scheme is case-insensitive, and anything else (another scheme, an empty token) is no
/// token at all.
fn bearer_token(header: Option<&[u8]>) -> Option<&[u8]> {
    let header = header?;
    let header = header.trim_ascii();
    let mut parts = header.splitn(3, |&b| b == b' ');
    let scheme = parts.next()?;
    let token = parts.next()?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || token.is_empty() {
        return None;
    }
    Some(token)
}

/// User from a verified client certificate: name = CN, groups = O's (upstream's
/// `CommonNameUserConversion`).
pub fn user_from_cert(leaf: &CertificateDer<'_>) -> Result<UserInfo, String> {
    let (_, cert) = X509Certificate::from_der(leaf)
        .map_err(|_| "client certificate is not valid X.509".to_string())?;
    let name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        return Err("common name of the client certificate is empty".into());
    }
    let groups = cert
        .subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_string)
        .collect();
    Ok(with_authenticated_group(UserInfo {
        name,
        uid: String::new(),
        groups,
    }))
}

fn with_authenticated_group(mut user: UserInfo) -> UserInfo {
    if !user.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
        user.groups.push(AUTHENTICATED_GROUP.to_string());
    }
    user
}

/// Paths anonymous requests may use: `/healthz`, `/livez`, `/readyz` (and their sub-paths
/// such as `/readyz/etcd`) and `/version` (also `/version/`).
pub fn is_public_path(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    if path == "/version" || path == "/version/" {
        return true;
    }
    ["/healthz", "/livez", "/readyz"].iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// The admin bearer token (see the module docs): loads `<data-dir>/admin.token`, or makes
/// it (0600) from 32 bytes of the OS CSPRNG. Returns the token and its user
/// (`atrest-admin`, groups `system:masters`), for [`TokenFile::insert`].
pub fn ensure_admin_token(
    data_dir: &Path,
) -> Result<(crate::tls::SecretBytes, UserInfo), AuthnError> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    let io = |source| AuthnError::Io {
        path: path.clone(),
        source,
    };
    let user = UserInfo {
        name: ADMIN_USER.to_string(),
        uid: ADMIN_USER.to_string(),
        groups: vec![ADMIN_GROUP.to_string()],
    };
    if path.exists() {
        let mut bytes = Zeroizing::new(fs::read(&path).map_err(io)?);
        while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
            bytes.pop();
        }
        if bytes.is_empty() {
            return Err(AuthnError::Parse {
                path: path.clone(),
                line: 1,
                reason: "empty admin token".into(),
            });
        }
        return Ok((crate::tls::SecretBytes::new(bytes.to_vec()), user));
    }
    let mut raw = Zeroizing::new([0u8; 32]);
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), raw.as_mut())
        .map_err(|_| AuthnError::Random("the OS random source failed".into()))?;
    let token = Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(*raw));
    let mut contents = Zeroizing::new(token.as_bytes().to_vec());
    contents.push(b'\n');
    atrest_files::write_private(&path, &contents, atrest_files::Existing::Replace)?;
    Ok((
        crate::tls::SecretBytes::new(token.as_bytes().to_vec()),
        user,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<TokenFile, AuthnError> {
        TokenFile::parse(s.as_bytes(), Path::new("tokens.csv"))
    }

    #[test]
    fn parses_upstream_format() {
        let f = parse(
            "tok1,alice,uid1,\"group1,group2\"\r\n\ntok2,bob,uid2\n\"tok,3\",\"carol \"\"c\"\"\",uid3,g3\n",
        )
        .unwrap();
        assert_eq!(f.len(), 3);
        let a = f.lookup(b"tok1").unwrap();
        assert_eq!(a.name, "alice");
        assert_eq!(a.uid, "uid1");
        assert_eq!(a.groups, ["group1", "group2"]);
        assert_eq!(f.lookup(b"tok2").unwrap().groups, Vec::<String>::new());
        let c = f.lookup(b"tok,3").unwrap();
        assert_eq!(c.name, "carol \"c\"");
        assert_eq!(c.groups, ["g3"]);
        assert!(f.lookup(b"tok").is_none());
        assert!(f.warnings().is_empty());
    }

    #[test]
    fn too_few_columns_names_the_line_not_the_token() {
        let e = parse("good,u,1\n\nsecret-token-xyz,user\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains("at least 3 columns"), "{msg}");
        assert!(msg.contains("found 2"), "{msg}");
        assert!(!msg.contains("secret-token-xyz"), "{msg}");
    }

    #[test]
    fn bad_quotes_are_errors_without_the_token() {
        let e = parse("a,b,c\nsec\"ret,u,1\n").unwrap_err().to_string();
        assert!(e.contains("line 2") && !e.contains("sec"), "{e}");
        let e = parse("\"secret\"x,u,1\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && !e.contains("secret\""), "{e}");
        let e = parse("a,b,c\n\"unterminated,u,1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn duplicates_and_empty_tokens_warn() {
        let f = parse("t,a,1\n,b,2\nt,c,3\n").unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f.lookup(b"t").unwrap().name, "c");
        assert_eq!(f.warnings().len(), 2);
        assert!(f.warnings().iter().all(|w| !w.contains("t,")));
        assert!(!format!("{f:?}").contains("\"t\""));
    }

    #[test]
    fn multiline_quoted_field_counts_lines() {
        let e = parse("a,b,\"c\nd\"\nx\n").unwrap_err().to_string();
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn bearer_tokens() {
        let mut tf = TokenFile::default();
        tf.insert(
            b"s3cret",
            UserInfo {
                name: "u".into(),
                uid: "1".into(),
                groups: vec!["g".into()],
            },
        );
        let a = Authenticator::new(Some(tf));
        match a.authenticate(Some(b"Bearer s3cret"), None) {
            AuthOutcome::Authenticated(u) => {
                assert_eq!(u.name, "u");
                assert_eq!(u.groups, ["g", AUTHENTICATED_GROUP]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            a.authenticate(Some(b"bearer s3cret"), None),
            AuthOutcome::Authenticated(_)
        ));
        match a.authenticate(Some(b"Bearer wrong"), None) {
            AuthOutcome::Rejected(r) => assert!(!r.contains("wrong")),
            other => panic!("{other:?}"),
        }
        assert_eq!(a.authenticate(None, None), AuthOutcome::Anonymous);
        assert_eq!(
            a.authenticate(Some(b"Basic dTpw"), None),
            AuthOutcome::Anonymous
        );
        assert_eq!(
            a.authenticate(Some(b"Bearer "), None),
            AuthOutcome::Anonymous
        );
        assert!(matches!(
            Authenticator::new(None).authenticate(Some(b"Bearer s3cret"), None),
            AuthOutcome::Rejected(_)
        ));
    }

    #[test]
    fn public_paths() {
        for p in [
            "/healthz",
            "/livez",
            "/readyz",
            "/readyz/etcd",
            "/healthz/ping",
            "/version",
            "/livez?verbose",
        ] {
            assert!(is_public_path(p), "{p}");
        }
        for p in [
            "/",
            "/api",
            "/healthzx",
            "/readyzz/etcd",
            "/versions",
            "/version/x",
            "/apis/v1",
        ] {
            assert!(!is_public_path(p), "{p}");
        }
    }

    #[test]
    fn admin_token_is_made_once() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (t1, u) = ensure_admin_token(dir.path()).unwrap();
        assert_eq!(t1.expose_secret().len(), 43);
        assert_eq!(u.groups, [ADMIN_GROUP]);
        let mode = fs::metadata(dir.path().join(ADMIN_TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (t2, _) = ensure_admin_token(dir.path()).unwrap();
        assert_eq!(t1.expose_secret(), t2.expose_secret());
    }
}
